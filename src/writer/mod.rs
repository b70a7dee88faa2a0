//! Writer threads: drain a backend's queue, POST each batch, sort the answer.
//!
//! One or more threads per backend (`backends.writers`), each with its own
//! keep-alive connection, plus one recovery thread per backend (`recovery.rs`).
//! The backend's answer decides what happens to a batch:
//! - 2xx: written.
//! - 4xx: the backend refused the points (bad data, missing database, auth);
//!   retrying cannot help, so it is counted and logged with the backend's message.
//! - 5xx, timeout, connection error: the backend is marked down and the batch
//!   goes to the backend's spool, which the recovery thread replays once the
//!   backend answers `/ping` again. Without a `[spool]`, the writer retries the
//!   batch in memory with exponential back-off instead.
//!
//! Order: while a backend's spool holds records, new batches for it are
//! spooled behind them rather than sent, so memory never overtakes disk and a
//! backend receives its spooled points before newer ones. Delivery is
//! at-least-once: a batch whose 2xx was lost in a crash or a timeout is sent
//! again, and InfluxDB stores an identical point once.
//!
//! Back-pressure: a writer that cannot place a batch (spool full, or no spool
//! and the backend down) holds it, its queue fills, and the workers answer new
//! writes 503 (see `dispatch`). Nothing is dropped.
//!
//! On shutdown the writers keep delivering until their queues are empty or the
//! grace period ends; whatever is still undelivered then is logged as lost.

pub mod backends;
pub mod client;
pub mod recovery;
pub mod splice;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

pub use backends::{BackendHandle, Backends, StartError};

use crate::batch::{Batch, Refusal};
use crate::config::{BackendConfig, BackendUrl, SpoolConfig, SpoolSync};
use crate::shutdown::Shutdown;
use crate::spool::{Encoded, Encoder, Spool, SpoolError, SpoolOptions};
use crate::stats::BackendStats;
use client::{BackendClient, Response};

/// First wait before retrying a failed batch; doubles up to `write.max_retry_backoff`.
const INITIAL_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Batches appended to the spool before one sync covers them all (group commit).
const MAX_SPOOL_GROUP: usize = 64;

/// The sending side of a backend's writer queue.
pub type Queue = Sender<Arc<Batch>>;

/// A backend's spool, shared by its writers and its recovery thread, and
/// handed on to the next incarnation of the backend when a reload changes its
/// settings (the file is locked: only one `Spool` may have it open).
pub struct SpoolSlot {
    spool: Mutex<Spool>,
    pub path: PathBuf,
    /// Whether the spool deflates: what its writers' encoders are made with.
    pub compress: bool,
    /// Held by the one recovery thread that replays this spool, so a backend
    /// replaced by a reload never has two replayers acknowledging records.
    replayer: Mutex<()>,
    /// Incarnations using this spool that are not retired and whose reload
    /// committed. While one is, it replays the spool; retired ones leave it.
    pub live: AtomicUsize,
    /// Incarnations started by a reload that has not committed yet: they may
    /// still be undone, so a retired replayer keeps replaying, but must not
    /// delete the file.
    pub pending: AtomicUsize,
    /// Writer threads of every incarnation still running: any of them may
    /// yet append a batch.
    pub writers: AtomicUsize,
    /// Set (under the spool lock) when the file was deleted, drained or by
    /// the operator: a backend added again then opens a new one.
    pub removed: AtomicBool,
}

impl SpoolSlot {
    pub fn new(spool: Spool, path: PathBuf) -> SpoolSlot {
        SpoolSlot {
            compress: spool.compresses(),
            spool: Mutex::new(spool),
            path,
            replayer: Mutex::new(()),
            live: AtomicUsize::new(0),
            pending: AtomicUsize::new(1),
            writers: AtomicUsize::new(0),
            removed: AtomicBool::new(false),
        }
    }

    /// The spool, locked (see [`BackendShared::lock_spool`]).
    pub fn lock(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The replay lock, if no other recovery thread holds it.
    pub fn try_replay(&self) -> Option<MutexGuard<'_, ()>> {
        match self.replayer.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// What every thread of one backend shares.
pub struct BackendShared {
    pub config: BackendConfig,
    pub url: BackendUrl,
    pub stats: Arc<BackendStats>,
    /// The backend's spool, when `[spool]` is configured.
    pub spool: Option<Arc<SpoolSlot>>,
    pub sync: SpoolSync,
    pub sync_interval: Duration,
    pub shutdown: Arc<Shutdown>,
    pub max_backoff: Duration,
    /// Set when a reload removed or replaced this backend: its writers finish
    /// the queue; its recovery thread replays what is left of the spool
    /// unless a live incarnation of the same name does, then ends.
    pub retired: AtomicBool,
    /// This incarnation's writer threads still running.
    pub writers_running: AtomicUsize,
}

impl BackendShared {
    pub fn stats(&self) -> &BackendStats {
        &self.stats
    }

    pub fn is_up(&self) -> bool {
        self.stats().up.load(Ordering::Relaxed)
    }

    pub fn mark_down(&self, reason: &str) {
        self.stats().mark_down(reason);
    }

    pub fn mark_up(&self) {
        self.stats().mark_up();
    }

    /// The spool, locked. A panic while holding it cannot leave the ring in a
    /// state that recovery would not also accept, so poisoning is ignored.
    pub fn lock_spool(&self) -> Option<MutexGuard<'_, Spool>> {
        self.spool.as_ref().map(|slot| slot.lock())
    }
    /// True while the spool holds records not yet replayed.
    pub fn spool_has_records(&self) -> bool {
        self.lock_spool().is_some_and(|spool| !spool.is_empty())
    }

    /// Publishes the spool's size and age in the backend's stats.
    pub fn publish_spool_stats(&self, spool: &Spool) {
        let stats = self.stats();
        stats
            .spool_bytes
            .store(spool.used_bytes(), Ordering::Relaxed);
        stats
            .spool_records
            .store(spool.records(), Ordering::Relaxed);
        stats.spool_oldest_ms.store(
            spool.oldest_appended_at_ms().unwrap_or(0),
            Ordering::Relaxed,
        );
    }

    /// Counts a failed attempt and remembers why, for `/status`.
    fn failed(&self, reason: String) -> Outcome {
        let stats = self.stats();
        stats.retries.fetch_add(1, Ordering::Relaxed);
        stats.set_last_error(&reason);
        Outcome::Failed(reason)
    }

    /// Counts a batch as written.
    pub fn count_written(&self, lines: usize, bytes: usize) {
        let stats = self.stats();
        // Before the points: whoever sees them written finds the batch's size.
        stats.batch_points.record(lines);
        stats
            .points_written
            .fetch_add(lines as u64, Ordering::Relaxed);
        stats.batches_written.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts and logs a backend's refusal; returns it for waiting clients.
    pub fn count_refused(&self, lines: usize, db: &str, response: &Response) -> Refusal {
        self.stats()
            .points_rejected
            .fetch_add(lines as u64, Ordering::Relaxed);
        let message = response.body_text();
        self.stats()
            .set_last_error(&format!("HTTP {}: {message}", response.status));
        if let Some(suppressed) = self.stats().refusal_log.allow() {
            tracing::warn!(
                backend = %self.config.name,
                status = response.status,
                points = lines,
                %db,
                %message,
                suppressed,
                "backend refused a batch; not retried",
            );
        }
        Refusal {
            backend: self.config.name.clone(),
            status: response.status,
            message,
        }
    }
}

/// Opens `<dir>/<backend>.spool`. A file that is not a spool at all is moved
/// aside (never overwritten) and a new spool is started, so a damaged disk
/// file cannot keep the proxy from serving.
fn open_spool(
    config: &SpoolConfig,
    backend: &str,
    stats: &BackendStats,
) -> Result<SpoolSlot, StartError> {
    let path = config.dir.join(format!("{backend}.spool"));
    let spool_error = |error| StartError::Spool {
        path: path.clone(),
        error,
    };
    // Spooled records hold clients' credentials: a directory fluxgate makes is
    // for its user only (one made before is left as it is).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.dir)
        .map_err(|e| spool_error(SpoolError::Io(e)))?;
    let options = SpoolOptions {
        capacity: config.capacity.0,
        compress: config.compress,
    };
    let (spool, report) = match Spool::open(&path, options) {
        Err(SpoolError::Corrupt(reason)) => {
            let aside = moved_aside_path(&path);
            std::fs::rename(&path, &aside).map_err(|e| spool_error(SpoolError::Io(e)))?;
            tracing::error!(
                %backend,
                path = %path.display(),
                moved_to = %aside.display(),
                %reason,
                "spool file is unreadable; moved aside and starting an empty spool (its data was not replayed)",
            );
            Spool::open(&path, options).map_err(spool_error)?
        }
        result => result.map_err(spool_error)?,
    };
    stats
        .spool_skipped_bytes
        .store(report.skipped_bytes, Ordering::Relaxed);
    stats
        .spool_skipped_records
        .store(report.skipped_records_or_regions, Ordering::Relaxed);
    if report.skipped_bytes > 0 || !report.problems.is_empty() {
        tracing::error!(
            %backend,
            path = %path.display(),
            records = report.records,
            skipped_bytes = report.skipped_bytes,
            problems = %report.problems.join("; "),
            "spool recovered with damage: the skipped bytes are lost",
        );
    } else {
        tracing::info!(
            %backend,
            path = %path.display(),
            records = report.records,
            bytes = report.bytes,
            "spool opened",
        );
    }
    Ok(SpoolSlot::new(spool, path))
}

fn moved_aside_path(path: &Path) -> std::path::PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{stamp}"));
    name.into()
}

struct Writer {
    backend: Arc<BackendShared>,
    client: BackendClient,
    queue: Receiver<Arc<Batch>>,
    /// Compresses batches for the spool before its lock is taken.
    encoder: Encoder,
}

/// Starts one writer thread of `backend` on `queue`.
fn spawn_writer(
    backend: &Arc<BackendShared>,
    queue: Receiver<Arc<Batch>>,
    n: usize,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let writer = Writer {
        client: BackendClient::new(
            backend.url.clone(),
            backend.config.timeout,
            backend.config.authorization(),
        ),
        queue,
        backend: backend.clone(),
        encoder: Encoder::new(backend.spool.as_ref().is_some_and(|slot| slot.compress)),
    };
    let running = WriterRunning::new(backend.clone());
    std::thread::Builder::new()
        .name(format!("fluxgate-writer-{}-{n}", backend.config.name))
        .spawn(move || {
            let _running = running;
            yield_to_workers();
            writer.run();
        })
}

/// Makes the calling writer (or recovery) thread give way to the workers
/// when they compete for a core: a worker holds a client waiting for its
/// answer, a writer only a batch already accepted. Its nice value goes
/// [`WRITER_NICE`] above the one it started with, the workers' (at most 19).
pub(super) fn yield_to_workers() {
    let tid = thread_id();
    // SAFETY: getpriority and setpriority with PRIO_PROCESS and a thread id
    // read and change that thread's nice value only.
    let result = unsafe {
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (nice + WRITER_NICE).min(19))
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "writer keeps its priority");
    }
}

/// How much lower than the workers' a writer's priority is, in nice steps.
const WRITER_NICE: libc::c_int = 10;

/// The calling thread's kernel id, which `setpriority` takes for one thread.
fn thread_id() -> libc::id_t {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::id_t }
}

/// Counts a writer thread as running until dropped (also by a panic, or
/// when its thread could not be spawned), per incarnation and per spool.
struct WriterRunning(Arc<BackendShared>);

impl WriterRunning {
    fn new(backend: Arc<BackendShared>) -> WriterRunning {
        backend.writers_running.fetch_add(1, Ordering::SeqCst);
        if let Some(slot) = &backend.spool {
            slot.writers.fetch_add(1, Ordering::SeqCst);
        }
        WriterRunning(backend)
    }
}

impl Drop for WriterRunning {
    fn drop(&mut self) {
        self.0.writers_running.fetch_sub(1, Ordering::SeqCst);
        if let Some(slot) = &self.0.spool {
            slot.writers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

enum Outcome {
    Written,
    Refused(Response),
    Failed(String),
}

impl Writer {
    fn run(mut self) {
        // recv fails only once every worker has dropped its sender and the queue is empty.
        while let Ok(batch) = self.queue.recv() {
            if self.backend.spool.is_some() {
                self.deliver_or_spool(batch);
            } else {
                self.deliver_with_retries(&batch);
            }
        }
    }

    /// Spool mode: send directly while the backend is up and nothing older
    /// waits in the spool; spool otherwise.
    fn deliver_or_spool(&mut self, batch: Arc<Batch>) {
        let backend = self.backend.clone();
        if backend.is_up() && !backend.spool_has_records() {
            match self.attempt(&batch) {
                Outcome::Written => return self.written(&batch),
                Outcome::Refused(response) => return self.refused(&batch, &response),
                Outcome::Failed(reason) => backend.mark_down(&reason),
            }
        }
        self.spool_group(batch);
    }

    /// Appends `first` and every batch already waiting in the queue to the
    /// spool, syncs once for all of them, then settles them.
    fn spool_group(&mut self, first: Arc<Batch>) {
        let mut group = vec![first];
        while group.len() < MAX_SPOOL_GROUP {
            match self.queue.try_recv() {
                Ok(batch) => group.push(batch),
                Err(_) => break,
            }
        }
        let mut spooled = Vec::with_capacity(group.len());
        for batch in group {
            if self.append_to_spool(&batch) {
                spooled.push(batch);
            }
        }
        let backend = &self.backend;
        let mut refusal = None;
        if backend.sync == SpoolSync::Batch && !spooled.is_empty() {
            if let Some(mut spool) = backend.lock_spool() {
                if let Err(e) = spool.sync() {
                    tracing::error!(backend = %backend.config.name, error = %e, "spool sync failed: spooled points may not survive a power cut");
                    refusal = Some(Refusal {
                        backend: backend.config.name.clone(),
                        status: 503,
                        message: format!("spool sync failed: {e}"),
                    });
                }
            }
        }
        for batch in spooled {
            batch.settle(refusal.clone());
        }
    }

    /// Appends one batch, waiting (with back-off) while the spool is full.
    /// Returns false when the batch was settled another way instead.
    fn append_to_spool(&mut self, batch: &Batch) -> bool {
        // Compressed once, before the lock: see "Compression" in `spool`.
        let mut encoder = std::mem::take(&mut self.encoder);
        let appended = self.append_encoded(batch, &encoder.encode(&batch.body));
        self.encoder = encoder;
        appended
    }

    fn append_encoded(&mut self, batch: &Batch, encoded: &Encoded<'_>) -> bool {
        let backend = self.backend.clone();
        let mut backoff = INITIAL_RETRY_BACKOFF;
        let mut reported_full = false;
        loop {
            let result = backend
                .lock_spool()
                .map(|mut spool| {
                    let result = spool.try_append_encoded(&batch.key, batch.lines, encoded);
                    backend.publish_spool_stats(&spool);
                    result
                })
                .expect("spool mode");
            match result {
                Ok(_) => {
                    backend
                        .stats()
                        .points_spooled
                        .fetch_add(batch.lines as u64, Ordering::Relaxed);
                    return true;
                }
                Err(SpoolError::Full { needed, free }) => {
                    if !reported_full {
                        backend.stats().spool_full.fetch_add(1, Ordering::Relaxed);
                        if let Some(suppressed) = backend.stats().spool_full_log.allow() {
                            tracing::error!(
                                backend = %backend.config.name,
                                needed,
                                free,
                                suppressed,
                                "spool full: holding writes (clients get 503) until replay makes room; \
                                 raise spool.capacity or bring the backend back",
                            );
                        }
                        reported_full = true;
                    }
                    if backend.shutdown.is_past_deadline() {
                        self.give_up(batch, "spool full at the end of the shutdown grace period");
                        return false;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(backend.max_backoff);
                }
                Err(e) => {
                    tracing::error!(
                        backend = %backend.config.name,
                        error = %e,
                        "cannot spool a batch; retrying it in memory instead",
                    );
                    self.deliver_with_retries(batch);
                    return false;
                }
            }
        }
    }

    /// No-spool mode (and the spool's last resort): retry in memory until the
    /// backend takes the batch or the shutdown grace period ends.
    fn deliver_with_retries(&mut self, batch: &Batch) {
        let mut backoff = INITIAL_RETRY_BACKOFF;
        loop {
            // Past the grace period, a backend known to be down gets no more
            // attempts: each could take a whole connect timeout.
            if self.backend.shutdown.is_past_deadline() && !self.backend.is_up() {
                self.give_up(
                    batch,
                    "backend down at the end of the shutdown grace period",
                );
                return;
            }
            let started = Instant::now();
            match self.attempt(batch) {
                Outcome::Written => return self.written(batch),
                Outcome::Refused(response) => return self.refused(batch, &response),
                Outcome::Failed(reason) => {
                    self.backend.mark_down(&reason);
                    let wake = started + backoff;
                    if self
                        .backend
                        .shutdown
                        .deadline()
                        .is_some_and(|deadline| wake >= deadline)
                    {
                        self.give_up(batch, &reason);
                        return;
                    }
                    std::thread::sleep(wake.saturating_duration_since(Instant::now()));
                    backoff = (backoff * 2).min(self.backend.max_backoff);
                }
            }
        }
    }

    fn written(&self, batch: &Batch) {
        self.backend.count_written(batch.lines, batch.body.len());
        self.backend.mark_up();
        batch.settle(None);
    }

    fn refused(&self, batch: &Batch, response: &Response) {
        let refusal = self
            .backend
            .count_refused(batch.lines, &batch.key.db, response);
        batch.settle(Some(refusal));
    }

    fn give_up(&self, batch: &Batch, reason: &str) {
        let backend = &self.backend;
        backend
            .stats()
            .points_lost
            .fetch_add(batch.lines as u64, Ordering::Relaxed);
        tracing::error!(
            backend = %backend.config.name,
            points = batch.lines,
            db = %batch.key.db,
            %reason,
            "shutdown grace period over; batch not delivered",
        );
        batch.settle(Some(Refusal {
            backend: backend.config.name.clone(),
            status: 503,
            message: format!("not delivered before shutdown: {reason}"),
        }));
    }

    fn attempt(&mut self, batch: &Batch) -> Outcome {
        post_batch(&mut self.client, &self.backend, batch)
    }
}

/// POSTs a batch to the backend (gzip once per batch if the backend wants it)
/// and sorts the answer, or the failure to get one, into an outcome.
fn post_batch(client: &mut BackendClient, backend: &BackendShared, batch: &Batch) -> Outcome {
    let started = Instant::now();
    let result = client.post_batch(batch, backend.config.gzip);
    if result.is_ok() {
        backend.stats().flush_latency.record(started.elapsed());
    }
    match result {
        Ok(response) if (200..300).contains(&response.status) => Outcome::Written,
        Ok(response) if (400..500).contains(&response.status) => Outcome::Refused(response),
        Ok(response) => backend.failed(format!(
            "HTTP {}: {}",
            response.status,
            response.body_text()
        )),
        Err(e) => backend.failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_directory_fluxgate_makes_is_for_its_user_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("fluxgate-spool-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("spool");
        let config = crate::config::Config::from_toml(&format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[spool]\ndir = {:?}\ncapacity = \"16MiB\"\n[routes]\n_default_ = [\"a\"]\n",
            dir.display().to_string()
        ))
        .unwrap();
        let spool = config.spool.as_ref().expect("a spool");
        let opened = open_spool(spool, "a", &BackendStats::new("a"));
        let mode = std::fs::metadata(&dir).map(|m| m.permissions().mode() & 0o777);
        let _ = std::fs::remove_dir_all(&root);
        assert!(opened.is_ok());
        assert_eq!(mode.unwrap(), 0o700);
    }

    #[test]
    fn a_writer_thread_gives_way_to_the_workers() {
        // SAFETY: getpriority reads a thread's nice value (a -1 answer is a
        // nice value here: the thread ids are this process's own).
        let nice_of = |tid| unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
        let before = nice_of(thread_id());
        let writer = std::thread::spawn(move || {
            yield_to_workers();
            nice_of(thread_id())
        })
        .join()
        .unwrap();
        assert_eq!(writer, (before + WRITER_NICE).min(19));
        assert_eq!(nice_of(thread_id()), before, "only the writer's own");
    }
}
