//! The process-wide stop signal shared by workers and writers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Set once by the signal handler thread; read by everything that loops.
#[derive(Debug, Default)]
pub struct Shutdown {
    requested: AtomicBool,
    /// When queued batches stop being retried: the grace period after the request.
    deadline: OnceLock<Instant>,
}

impl Shutdown {
    pub const fn new() -> Shutdown {
        Shutdown {
            requested: AtomicBool::new(false),
            deadline: OnceLock::new(),
        }
    }

    /// Starts the shutdown; `grace` bounds how long queued work is still delivered.
    pub fn request(&self, grace: Duration) {
        let _ = self.deadline.set(Instant::now() + grace);
        self.requested.store(true, Ordering::Release);
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// The end of the grace period, once shutdown was requested.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }

    pub fn is_past_deadline(&self) -> bool {
        self.deadline()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }
}
