//! A client that keeps writing through a config change, and what it wrote.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{eventually, http, Influxd};

const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);

/// A client writing `per_request` numbered points (`mv v=<n> <n>`) per
/// request, one request after the other, until stopped. Remembers the
/// points of every request answered 204.
pub struct SteadyWriter {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    requests: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl SteadyWriter {
    pub fn start(url: String, per_request: u64) -> SteadyWriter {
        Self::start_at(url, per_request, 1)
    }

    /// As `start`, numbering points from `first`.
    pub fn start_at(url: String, per_request: u64, first: u64) -> SteadyWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, acked, requests) = (stop.clone(), acked.clone(), requests.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut next = first;
                while !stop.load(Ordering::Relaxed) {
                    let points: Vec<u64> = (next..next + per_request).collect();
                    let body: String = points.iter().map(|n| format!("mv v={n} {n}\n")).collect();
                    let reply = http::post(&url, &[], body.as_bytes());
                    if reply.status == 204 {
                        acked.lock().unwrap().extend(points);
                    } else {
                        failures.push(format!("{}: {}", reply.status, reply.body));
                    }
                    next += per_request;
                    requests.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        };
        SteadyWriter {
            stop,
            acked,
            requests,
            thread: Some(thread),
        }
    }

    /// Waits until `more` further requests were answered.
    pub fn wait_for_requests(&self, more: u64) {
        let target = self.requests.load(Ordering::Relaxed) + more;
        eventually(PROGRESS_TIMEOUT, "the writer to make progress", || {
            (self.requests.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    /// Stops the writer; returns the points acknowledged, after asserting
    /// that every request was.
    pub fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.thread.take().unwrap().join().unwrap();
        assert!(failures.is_empty(), "requests refused: {failures:?}");
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

impl Drop for SteadyWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The values (`v`, the point's number) of every `mv` point on `server`.
pub fn stored_values(server: &Influxd, db: &str) -> Vec<u64> {
    server
        .points(db, "mv")
        .into_iter()
        .map(|(_, v)| v as u64)
        .collect()
}
