//! The query path: just enough InfluxQL to route each statement to a healthy
//! backend that holds its measurements, or to fan it out and merge.
//!
//! - [`influxql`]: split a query into statements, classify them, find the measurements they read.
//! - [`plan`]: statement -> one backend set, a fan-out over sets, every backend, or a refusal.
//! - [`backend`]: the async HTTP client that asks a backend's `/query` (on the worker's runtime).
//! - [`merge`]: merge fanned-out answers as InfluxDB would answer; CSV rendering.
//! - [`timeshift`]: `AS "shift_1d"` aliases: query an earlier window, shift the answer forward.

pub mod backend;
pub mod influxql;
pub mod merge;
pub mod plan;
pub mod timeshift;
