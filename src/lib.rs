//! fluxgate: a fast, replicating proxy in front of InfluxDB 1.x.
//!
//! # Layout
//!
//! The modules follow a point's way through the proxy (see ARCHITECTURE.md):
//! - [`server`]: worker threads (monoio, SO_REUSEPORT), connections, request heads and bodies.
//! - [`api`]: the HTTP endpoints; `api::write` runs decode -> scan -> route -> batch.
//! - [`lp`]: line protocol on byte slices: gunzip, line scanning, validation, precision.
//! - [`route`]: measurement -> backend set.
//! - [`batch`]: per-worker batches, frozen and shared by replicas; [`batch_body`]:
//!   their bodies, in memory writers lend to the kernel and reuse when it is done.
//! - [`dispatch`]: frozen batches -> each backend's bounded writer queue.
//! - [`writer`]: writer threads posting batches to backends, with retries.
//! - [`stats`]: per-thread counters and latency histograms, merged when read.
//! - [`config`], [`error`], [`shutdown`], [`chunked`], [`urlencoded`]: the parts they share.

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(
    clippy::module_name_repetitions,
    clippy::missing_errors_doc,
    clippy::missing_panics_doc,
    clippy::must_use_candidate,
    clippy::cast_possible_truncation,
    clippy::doc_markdown,
    clippy::too_many_lines
)]

pub mod api;
pub mod auth;
pub mod batch;
pub mod batch_body;
pub mod chunked;
pub mod config;
pub mod control;
pub mod dispatch;
pub mod doorbell;
pub mod error;
pub mod generation;
pub mod log_limit;
pub mod lp;
pub mod mapping;
pub mod query;
pub mod resolve;
pub mod route;
pub mod server;
pub mod settle;
pub mod shutdown;
pub mod spool;
pub mod stats;
pub mod status;
pub mod urlencoded;
pub mod writer;
