//! The recovery thread of one backend: health checks while it is down, and
//! replay of its spool, in order, once it answers again.
//!
//! While the backend is marked down, its `/ping` is probed every
//! `check_interval`; a 2xx marks it up. While it is up and idle, it is pinged
//! at the same interval, so an outage is noticed without a failed write. While it is up and its spool holds
//! records, the oldest record is sent and removed only after the backend
//! answered 2xx (or a 4xx, which no retry can fix: counted and logged). A
//! failed replay leaves the record in place and marks the backend down again.
//! With `spool.sync = "interval"`, this thread also syncs the spool.
//!
//! Replay of one spool is one thread's at a time (the slot's replay lock):
//! after a reload, a retired incarnation's thread hands it on to the live
//! one, or replays what is left itself and ends (`backends::retirement_done`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{post_batch, BackendShared, Outcome};
use crate::batch::Batch;
use crate::config::SpoolSync;
use crate::writer::client::BackendClient;

/// How often an idle recovery thread looks for spooled records.
const IDLE_POLL: Duration = Duration::from_millis(20);

pub struct Recovery {
    backend: Arc<BackendShared>,
    client: BackendClient,
}

impl Recovery {
    pub fn new(backend: Arc<BackendShared>) -> Recovery {
        let client = BackendClient::new(
            backend.url.clone(),
            backend.config.timeout,
            backend.config.authorization(),
        );
        Recovery { backend, client }
    }

    pub fn run(mut self) {
        let backend = self.backend.clone();
        // The spool's previous replayer (an incarnation a reload replaced)
        // finishes its current record first, then leaves replay to this one.
        let _replayer = match &backend.spool {
            Some(slot) => match self.wait_for_replay_turn(slot) {
                Some(guard) => Some(guard),
                None => return,
            },
            None => None,
        };
        let mut last_sync = Instant::now();
        let mut last_ping = Instant::now();
        while !self.backend.shutdown.is_requested() {
            if self.backend.retired.load(Ordering::SeqCst)
                && super::backends::retirement_done(&self.backend)
            {
                return;
            }
            if self.backend.sync == SpoolSync::Interval
                && last_sync.elapsed() >= self.backend.sync_interval
            {
                self.sync();
                last_sync = Instant::now();
            }
            if !self.backend.is_up() {
                self.check_health();
                continue;
            }
            if self.replay_one() {
                continue;
            }
            // Idle and up: ping now and then, so an outage is noticed (and
            // queries avoid the backend) even when no write fails.
            if last_ping.elapsed() >= self.backend.config.check_interval {
                last_ping = Instant::now();
                if let Err(reason) = self.ping() {
                    self.backend.mark_down(&reason);
                    continue;
                }
            }
            std::thread::sleep(IDLE_POLL);
        }
        if self.backend.sync != SpoolSync::None {
            self.sync();
        }
    }

    /// The spool's replay lock, or None once this incarnation has nothing to
    /// replay (retired, with a live incarnation replaying instead) or the
    /// process shuts down while waiting for it.
    fn wait_for_replay_turn<'a>(
        &self,
        slot: &'a super::SpoolSlot,
    ) -> Option<std::sync::MutexGuard<'a, ()>> {
        loop {
            if let Some(guard) = slot.try_replay() {
                return Some(guard);
            }
            let replaced =
                self.backend.retired.load(Ordering::SeqCst) && slot.live.load(Ordering::SeqCst) > 0;
            if replaced || self.backend.shutdown.is_requested() {
                return None;
            }
            std::thread::sleep(IDLE_POLL);
        }
    }

    fn check_health(&mut self) {
        match self.ping() {
            Ok(()) => self.backend.mark_up(),
            Err(_) => std::thread::sleep(self.backend.config.check_interval),
        }
    }

    /// `/ping`: a 2xx is healthy.
    fn ping(&mut self) -> Result<(), String> {
        match self.client.ping() {
            Ok(response) if (200..300).contains(&response.status) => Ok(()),
            Ok(response) => Err(format!("ping answered HTTP {}", response.status)),
            Err(e) => Err(format!("ping: {e}")),
        }
    }

    /// Sends the oldest spooled record; true if there was one.
    fn replay_one(&mut self) -> bool {
        let backend = self.backend.clone();
        let Some(mut spool) = backend.lock_spool() else {
            return false;
        };
        let record = match spool.peek() {
            Ok(Some(record)) => record,
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(backend = %backend.config.name, error = %e, "cannot read the spool; replay paused");
                drop(spool);
                std::thread::sleep(backend.config.check_interval);
                return false;
            }
        };
        // Not held while the backend is busy: writers may append meanwhile.
        drop(spool);
        let position = record.position;
        let batch = Batch::new(Arc::new(record.key), record.body.into(), record.lines);
        match post_batch(&mut self.client, &backend, &batch) {
            Outcome::Written => {
                backend.count_written(batch.lines, batch.body.len());
                backend
                    .stats()
                    .points_replayed
                    .fetch_add(batch.lines as u64, Ordering::Relaxed);
            }
            // Nobody waits for a replayed batch: the refusal is counted and logged.
            Outcome::Refused(response) => {
                backend.count_refused(batch.lines, &batch.key.db, &response);
            }
            Outcome::Failed(reason) => {
                backend.mark_down(&reason);
                return true;
            }
        }
        let mut spool = backend.lock_spool().expect("spool mode");
        if let Err(e) = spool.ack(position) {
            tracing::error!(backend = %backend.config.name, error = %e, "cannot remove a replayed record from the spool");
        }
        // Persist the read position so a restart does not replay it again
        // (it would be harmless, only wasted work).
        if backend.sync != SpoolSync::None {
            if let Err(e) = spool.sync() {
                tracing::warn!(backend = %backend.config.name, error = %e, "spool sync failed after replay");
            }
        }
        backend.publish_spool_stats(&spool);
        true
    }

    fn sync(&self) {
        if let Some(mut spool) = self.backend.lock_spool() {
            if let Err(e) = spool.sync() {
                tracing::error!(backend = %self.backend.config.name, error = %e, "spool sync failed");
            }
        }
    }
}
