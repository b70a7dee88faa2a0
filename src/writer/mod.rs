//! Writer threads: drain a backend's queue, POST each batch, sort the answer.
//!
//! One or more threads per backend (`backends.writers`), each with its own
//! keep-alive connection. The backend's answer decides what happens to a batch:
//! - 2xx: written.
//! - 4xx: the backend refused the points (bad data, missing database, auth);
//!   retrying cannot help, so it is counted and logged with the backend's message.
//! - 5xx, timeout, connection error: retried with exponential back-off. The
//!   writer holds the batch while it retries, so its queue fills and the workers
//!   push back on clients (see `dispatch`): memory stays bounded and nothing is
//!   dropped. The spool will take over from this in-memory retry.
//!
//! On shutdown the writers keep delivering until their queues are empty or the
//! grace period ends; whatever is still undelivered then is logged as lost.

pub mod client;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::batch::{Batch, Refusal};
use crate::config::{BackendConfig, BackendUrl, Config};
use crate::shutdown::Shutdown;
use crate::stats::BackendStats;
use client::{BackendClient, Response};

/// First wait before retrying a failed batch; doubles up to `write.max_retry_backoff`.
const INITIAL_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// The writer threads of every backend.
pub struct Writers {
    threads: Vec<JoinHandle<()>>,
    pub stats: Arc<[BackendStats]>,
    /// A receiving end of each backend's queue, for its depth only: holding it
    /// does not keep the queue open once the senders are gone.
    pub queues: Vec<Receiver<Arc<Batch>>>,
}

impl Writers {
    /// Creates one bounded queue per backend and starts its writer threads.
    /// Returns the writers and the queues' sending sides, indexed by backend id.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn start(
        config: &Config,
        shutdown: Arc<Shutdown>,
    ) -> std::io::Result<(Writers, Vec<Sender<Arc<Batch>>>)> {
        let stats: Arc<[BackendStats]> = config
            .backends
            .iter()
            .map(|b| BackendStats::new(&b.name))
            .collect();
        let mut threads = Vec::new();
        let mut queues = Vec::new();
        let mut receivers = Vec::new();
        for (id, backend) in config.backends.iter().enumerate() {
            let (sender, receiver) = crossbeam_channel::bounded(config.write.queue_batches);
            queues.push(sender);
            receivers.push(receiver.clone());
            for n in 0..backend.writers {
                let writer = Writer {
                    id,
                    config: backend.clone(),
                    client: BackendClient::new(
                        BackendUrl::parse(&backend.url).expect("validated config"),
                        backend.timeout,
                    ),
                    queue: receiver.clone(),
                    stats: stats.clone(),
                    shutdown: shutdown.clone(),
                    max_backoff: config.write.max_retry_backoff,
                };
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("fluxgate-writer-{}-{n}", backend.name))
                        .spawn(move || writer.run())?,
                );
            }
        }
        Ok((
            Writers {
                threads,
                stats,
                queues: receivers,
            },
            queues,
        ))
    }

    /// Waits for every writer to finish. Call after every sender is dropped.
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a writer thread panicked");
            }
        }
    }
}

struct Writer {
    id: usize,
    config: BackendConfig,
    client: BackendClient,
    queue: Receiver<Arc<Batch>>,
    stats: Arc<[BackendStats]>,
    shutdown: Arc<Shutdown>,
    max_backoff: Duration,
}

enum Outcome {
    Written,
    Rejected(Response),
    Failed(String),
}

impl Writer {
    fn run(mut self) {
        // recv fails only once every worker has dropped its sender and the queue is empty.
        while let Ok(batch) = self.queue.recv() {
            self.deliver(&batch);
        }
    }

    fn stats(&self) -> &BackendStats {
        &self.stats[self.id]
    }

    fn deliver(&mut self, batch: &Batch) {
        let mut backoff = INITIAL_RETRY_BACKOFF;
        loop {
            // Past the grace period, a backend known to be down gets no more
            // attempts: each could take a whole connect timeout.
            if self.shutdown.is_past_deadline() && !self.stats().up.load(Ordering::Relaxed) {
                self.give_up(
                    batch,
                    "backend down at the end of the shutdown grace period",
                );
                return;
            }
            let started = Instant::now();
            match self.attempt(batch) {
                Outcome::Written => {
                    batch.settle(None);
                    let stats = self.stats();
                    stats
                        .points_written
                        .fetch_add(batch.lines as u64, Ordering::Relaxed);
                    stats.batches_written.fetch_add(1, Ordering::Relaxed);
                    stats
                        .bytes_written
                        .fetch_add(batch.body.len() as u64, Ordering::Relaxed);
                    if !stats.up.swap(true, Ordering::Relaxed) {
                        tracing::info!(backend = %self.config.name, "backend is up again");
                    }
                    return;
                }
                Outcome::Rejected(response) => {
                    batch.settle(Some(Refusal {
                        backend: self.config.name.clone(),
                        status: response.status,
                        message: response.body_text(),
                    }));
                    self.stats()
                        .points_rejected
                        .fetch_add(batch.lines as u64, Ordering::Relaxed);
                    tracing::warn!(
                        backend = %self.config.name,
                        status = response.status,
                        points = batch.lines,
                        db = %batch.key.db,
                        message = %response.body_text(),
                        "backend refused a batch; not retried",
                    );
                    return;
                }
                Outcome::Failed(reason) => {
                    let stats = self.stats();
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    if stats.up.swap(false, Ordering::Relaxed) {
                        tracing::warn!(backend = %self.config.name, %reason, "backend is down; retrying in memory");
                    }
                    let wake = started + backoff;
                    if self
                        .shutdown
                        .deadline()
                        .is_some_and(|deadline| wake >= deadline)
                    {
                        self.give_up(batch, &reason);
                        return;
                    }
                    std::thread::sleep(wake.saturating_duration_since(Instant::now()));
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    fn give_up(&self, batch: &Batch, reason: &str) {
        batch.settle(Some(Refusal {
            backend: self.config.name.clone(),
            status: 503,
            message: format!("not delivered before shutdown: {reason}"),
        }));
        self.stats()
            .points_lost
            .fetch_add(batch.lines as u64, Ordering::Relaxed);
        tracing::error!(
            backend = %self.config.name,
            points = batch.lines,
            db = %batch.key.db,
            %reason,
            "shutdown grace period over; batch not delivered",
        );
    }

    fn attempt(&mut self, batch: &Batch) -> Outcome {
        let body = if self.config.gzip {
            batch.gzipped()
        } else {
            &batch.body
        };
        let started = Instant::now();
        let result = self.client.post_write(&batch.key, body, self.config.gzip);
        if result.is_ok() {
            self.stats().flush_latency.record(started.elapsed());
        }
        match result {
            Ok(response) if (200..300).contains(&response.status) => Outcome::Written,
            Ok(response) if (400..500).contains(&response.status) => Outcome::Rejected(response),
            Ok(response) => Outcome::Failed(format!(
                "HTTP {}: {}",
                response.status,
                response.body_text()
            )),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}
