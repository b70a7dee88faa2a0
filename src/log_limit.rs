//! Rate limits for log lines that outside events can repeat at will (a
//! flapping backend, a client sending batches a backend refuses, accept
//! errors under fd exhaustion), so they cannot fill a disk. Lock-free: the
//! limited paths run on workers and writers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// At most `burst` lines per `window`; the rest are counted, and the next
/// line let through reports how many were suppressed.
#[derive(Debug)]
pub struct LogLimit {
    burst: u64,
    window_ms: u64,
    /// The current window's number (high 32 bits) and the lines counted in
    /// it (low 32 bits), in one word so threads agree on both.
    window: AtomicU64,
    suppressed: AtomicU64,
}

/// What a limited log line carries: how many lines like it were dropped
/// since the last one that was written.
pub type Suppressed = u64;

impl LogLimit {
    pub const fn new(burst: u64, window: Duration) -> LogLimit {
        LogLimit {
            burst,
            window_ms: window.as_millis() as u64,
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// The default for per-backend events: 10 lines a minute.
    pub const fn per_minute(burst: u64) -> LogLimit {
        LogLimit::new(burst, Duration::from_secs(60))
    }

    /// Some(suppressed) when this line may be written.
    pub fn allow(&self) -> Option<Suppressed> {
        self.allow_at(now_ms())
    }

    fn allow_at(&self, now_ms: u64) -> Option<Suppressed> {
        let this_window = (now_ms / self.window_ms.max(1)) & 0xffff_ffff;
        let counted = self
            .window
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let (window, count) = (word >> 32, word & 0xffff_ffff);
                Some(if window == this_window {
                    (window << 32) | (count + 1).min(0xffff_ffff)
                } else {
                    (this_window << 32) | 1
                })
            })
            .map_or(1, |previous| {
                if previous >> 32 == this_window {
                    (previous & 0xffff_ffff) + 1
                } else {
                    1
                }
            });
        if counted <= self.burst {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Milliseconds since the first call, from a monotonic clock.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_burst_through_per_window_then_reports_what_it_suppressed() {
        let limit = LogLimit::new(3, Duration::from_secs(60));
        let t0 = 1_200_000;
        assert_eq!(limit.allow_at(t0), Some(0));
        assert_eq!(limit.allow_at(t0 + 1), Some(0));
        assert_eq!(limit.allow_at(t0 + 2), Some(0));
        for i in 0..1000 {
            assert_eq!(limit.allow_at(t0 + 3 + i), None);
        }
        // The next window: the first line says how many were dropped.
        assert_eq!(limit.allow_at(t0 + 60_000), Some(1000));
        assert_eq!(limit.allow_at(t0 + 60_001), Some(0));
    }

    #[test]
    fn threads_share_one_budget() {
        let limit = std::sync::Arc::new(LogLimit::per_minute(10));
        let allowed: usize = (0..4)
            .map(|_| {
                let limit = limit.clone();
                std::thread::spawn(move || (0..1000).filter(|_| limit.allow().is_some()).count())
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(allowed, 10);
    }
}
