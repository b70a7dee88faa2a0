//! Integration tests: one binary (one link step), a module per feature. Every
//! test runs real processes: `influxd` servers and the `fluxgate` binary.

mod harness;

/// Proxy users: credentials in every form, admin-only endpoints, backend credentials.
mod auth;

/// `ack = "durable"`: answers only once backends hold the points.
mod durable;
/// A fleet sharing its config in Redis: both layouts, pub/sub reloads, import/export.
mod fleet;
/// Process-level behaviour: config errors at start-up, shutdown draining.
mod lifecycle;
/// `/metrics` and `/debug/latency`.
mod observability;
/// `/query`: routing, fan-out and merge, formats, failover, timeshift, real clients.
mod query;
/// Config from Redis: both key layouts, passwords, reloads over pub/sub (real redis-server).
mod redis_source;
/// Hot reload: POST /reload and SIGHUP, refused configs, retired backends.
mod reload;
/// The spool: outages, crashes, a full spool, damaged files.
mod spool;
/// `/write`: routing, replication, precision, framing, bad input.
mod write;
