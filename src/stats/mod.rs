//! Counters and latency histograms, owned per thread and merged only when read
//! (`/metrics`, `/debug/latency`, `/health`).
//!
//! Workers count per request, writers per batch, never per point. Each worker
//! has its own [`WorkerStats`]; its atomics and histogram locks are touched by
//! that worker alone, except for the moment a reader merges them.

pub mod latency;
pub mod metrics;
pub mod sizes;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::log_limit::LogLimit;
use latency::LatencyHistogram;
use sizes::BatchSizes;

/// Log lines a backend's events may write per minute (transitions, refusals,
/// a full spool); beyond, they are counted and reported with the next one.
const BACKEND_LOG_LINES_PER_MINUTE: u64 = 20;

/// The endpoints requests are counted and timed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Write,
    Query,
    Ping,
    Health,
    Metrics,
    Debug,
    Other,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Write,
        Endpoint::Query,
        Endpoint::Ping,
        Endpoint::Health,
        Endpoint::Metrics,
        Endpoint::Debug,
        Endpoint::Other,
    ];

    pub fn from_path(path: &str) -> Endpoint {
        match path {
            "/write" => Endpoint::Write,
            "/query" => Endpoint::Query,
            "/ping" => Endpoint::Ping,
            "/health" => Endpoint::Health,
            "/metrics" => Endpoint::Metrics,
            p if p.starts_with("/debug/") => Endpoint::Debug,
            _ => Endpoint::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Write => "write",
            Endpoint::Query => "query",
            Endpoint::Ping => "ping",
            Endpoint::Health => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::Debug => "debug",
            Endpoint::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The statuses fluxgate answers with, for per-status request counters; any
/// other status is counted under the last slot.
const STATUSES: [u16; 15] = [
    200, 204, 400, 401, 404, 405, 408, 413, 415, 431, 500, 501, 502, 503, 0,
];

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUSES.len() - 1)
}

/// One worker's counters.
#[derive(Debug)]
pub struct WorkerStats {
    requests: [[AtomicU64; STATUSES.len()]; Endpoint::ALL.len()],
    latency: [LatencyHistogram; Endpoint::ALL.len()],
    /// Lines (points) in write bodies, valid or not.
    pub lines_received: AtomicU64,
    /// Lines refused: malformed or without a route.
    pub lines_invalid: AtomicU64,
    /// Lines taken (validated, and batched if valid) while the rest of their
    /// body was still arriving.
    pub lines_ingested_early: AtomicU64,
    /// Write body bytes as received (compressed if sent gzip).
    pub bytes_received: AtomicU64,
    /// Writes waiting for room in full writer queues (a gauge).
    pub writes_waiting: AtomicU64,
    /// Open client connections, those handed to this worker included from
    /// the moment they are handed (a gauge).
    pub connections: AtomicU64,
    /// Connections this worker accepted and handed to another.
    pub connections_handed_over: AtomicU64,
    /// Points of this worker's bodies ingested by another worker
    /// (`api::share`).
    pub lines_shared: AtomicU64,
    /// Admitted writes whose bodies this worker is reading or ingesting (a
    /// gauge): while there are any, no other worker shares a piece of a
    /// body with it (`api::share`).
    pub write_bodies: AtomicU64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| LatencyHistogram::new()),
            lines_received: AtomicU64::new(0),
            lines_invalid: AtomicU64::new(0),
            lines_ingested_early: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            writes_waiting: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_handed_over: AtomicU64::new(0),
            lines_shared: AtomicU64::new(0),
            write_bodies: AtomicU64::new(0),
        }
    }
}

impl WorkerStats {
    /// Counts one answered request and its latency (complete head to answer
    /// ready; to the end of the answer for one streamed from a backend).
    pub fn record_request(&self, endpoint: Endpoint, status: u16, elapsed: Duration) {
        self.count_request(endpoint, status);
        self.latency[endpoint.index()].record(elapsed);
    }

    /// Counts one answered request without a latency: one refused before its
    /// head was complete has none.
    pub fn count_request(&self, endpoint: Endpoint, status: u16) {
        self.requests[endpoint.index()][status_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn latency(&self, endpoint: Endpoint) -> &LatencyHistogram {
        &self.latency[endpoint.index()]
    }

    /// (status, count) pairs with a non-zero count; status 0 stands for "other".
    pub fn requests(&self, endpoint: Endpoint) -> impl Iterator<Item = (u16, u64)> + '_ {
        STATUSES
            .iter()
            .zip(&self.requests[endpoint.index()])
            .map(|(&status, count)| (status, count.load(Ordering::Relaxed)))
            .filter(|&(_, count)| count > 0)
    }
}

/// Counters of one backend, updated per batch by its writers, read by anyone.
#[derive(Debug)]
pub struct BackendStats {
    pub name: String,
    pub points_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Points per batch written (live or replayed).
    pub batch_points: BatchSizes,
    /// Points the backend refused with a 4xx.
    pub points_rejected: AtomicU64,
    /// Points given up at shutdown because the backend stayed unreachable.
    pub points_lost: AtomicU64,
    pub retries: AtomicU64,
    /// False from the first failed attempt until the next success.
    pub up: AtomicBool,
    /// Round trip of each POST that got an answer.
    pub flush_latency: LatencyHistogram,
    /// Points appended to the spool.
    pub points_spooled: AtomicU64,
    /// Points written to the backend from the spool.
    pub points_replayed: AtomicU64,
    /// Bytes and records in the spool now, and the append time (unix ms) of
    /// the oldest record (0 when empty).
    pub spool_bytes: AtomicU64,
    pub spool_records: AtomicU64,
    pub spool_oldest_ms: AtomicU64,
    /// Bytes recovery had to skip as torn or corrupt when the spool was opened.
    pub spool_skipped_bytes: AtomicU64,
    /// Records (or damaged regions) skipped when the spool was opened.
    pub spool_skipped_records: AtomicU64,
    /// Times a writer found the spool full (and started pushing back).
    pub spool_full: AtomicU64,
    /// The last failure or refusal and when (unix seconds), for `/status`.
    last_error: Mutex<Option<(u64, String)>>,
    /// Budgets for this backend's log lines that a flapping backend or a
    /// client can repeat at will, one per kind so one cannot hide another.
    pub transition_log: LogLimit,
    pub refusal_log: LogLimit,
    pub spool_full_log: LogLimit,
}

impl BackendStats {
    /// Marks the backend down (logged once per outage); recovery pings it.
    pub fn mark_down(&self, reason: &str) {
        self.set_last_error(reason);
        if self.up.swap(false, Ordering::Relaxed) {
            if let Some(suppressed) = self.transition_log.allow() {
                tracing::warn!(backend = %self.name, %reason, suppressed, "backend is down");
            }
        }
    }

    /// Marks the backend up (logged once per recovery).
    pub fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            if let Some(suppressed) = self.transition_log.allow() {
                tracing::info!(backend = %self.name, suppressed, "backend is up again");
            }
        }
    }

    /// Remembers an error (per failed batch, never per point).
    pub fn set_last_error(&self, message: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((now, message.to_owned()));
    }

    /// The last error and its unix time.
    pub fn last_error(&self) -> Option<(u64, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn new(name: &str) -> BackendStats {
        BackendStats {
            name: name.to_owned(),
            points_written: AtomicU64::new(0),
            batches_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            batch_points: BatchSizes::default(),
            points_rejected: AtomicU64::new(0),
            points_lost: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            up: AtomicBool::new(true),
            flush_latency: LatencyHistogram::new(),
            points_spooled: AtomicU64::new(0),
            points_replayed: AtomicU64::new(0),
            spool_bytes: AtomicU64::new(0),
            spool_records: AtomicU64::new(0),
            spool_oldest_ms: AtomicU64::new(0),
            spool_skipped_bytes: AtomicU64::new(0),
            spool_skipped_records: AtomicU64::new(0),
            spool_full: AtomicU64::new(0),
            last_error: Mutex::new(None),
            transition_log: LogLimit::per_minute(BACKEND_LOG_LINES_PER_MINUTE),
            refusal_log: LogLimit::per_minute(BACKEND_LOG_LINES_PER_MINUTE),
            spool_full_log: LogLimit::per_minute(BACKEND_LOG_LINES_PER_MINUTE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_endpoint_and_status() {
        let stats = WorkerStats::default();
        stats.record_request(Endpoint::Write, 204, Duration::from_micros(100));
        stats.record_request(Endpoint::Write, 204, Duration::from_micros(300));
        stats.record_request(Endpoint::Write, 418, Duration::from_micros(5));
        stats.record_request(Endpoint::from_path("/debug/latency"), 200, Duration::ZERO);
        assert_eq!(
            stats.requests(Endpoint::Write).collect::<Vec<_>>(),
            vec![(204, 2), (0, 1)]
        );
        assert_eq!(
            stats.requests(Endpoint::Debug).collect::<Vec<_>>(),
            vec![(200, 1)]
        );
        assert_eq!(stats.latency(Endpoint::Write).snapshot().len(), 3);
        assert_eq!(Endpoint::from_path("/nope"), Endpoint::Other);
    }
}
