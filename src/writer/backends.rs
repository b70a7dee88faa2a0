//! Every backend's threads, live and retiring, and how a new config changes
//! them. Start-up and every reload go through [`Backends::apply`].
//!
//! A backend is known by its name. Applying a config:
//! - keeps a backend whose settings did not change (same queue, same threads);
//! - starts a new incarnation of a backend whose settings changed, handing it
//!   the old one's counters and spool (the file is locked, so it is never open
//!   twice); the old incarnation finishes its queue against its old settings
//!   and leaves replay to the new one;
//! - starts a backend that is new, opening (or recovering) its spool;
//! - retires a backend that is gone: its writers finish its queue, and its
//!   recovery thread keeps replaying its spool until it is empty (then the
//!   empty file is removed) or the operator deletes the file.
//!
//! Everything that can fail (opening spools, starting threads) happens before
//! anything running is changed, so a config that cannot be applied leaves the
//! running one as it was: a new incarnation that took over a spool only
//! counted itself as pending there, and retires again.
//!
//! Who replays a spool shared by incarnations (`SpoolSlot`): a live one (its
//! reload committed) when there is one; otherwise the retired one holding the
//! replay lock, which deletes the drained file only once no incarnation is
//! pending and every incarnation's writers have ended.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::recovery::Recovery;
use super::{open_spool, spawn_writer, yield_to_workers, BackendShared, Queue};
use crate::config::{BackendUrl, Config, SpoolSync};
use crate::shutdown::Shutdown;
use crate::spool::SpoolError;
use crate::stats::BackendStats;

/// What a config generation holds of one backend: enough for workers to queue
/// batches to it and for readers to show its state.
#[derive(Clone)]
pub struct BackendHandle {
    pub stats: Arc<BackendStats>,
    pub queue: Queue,
}

/// Why a backend could not be started.
#[derive(Debug)]
pub enum StartError {
    Spool {
        path: std::path::PathBuf,
        error: SpoolError,
    },
    Thread(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Spool { path, error } => write!(f, "spool {}: {error}", path.display()),
            StartError::Thread(e) => write!(f, "cannot start a writer thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// One incarnation of a backend and its threads.
struct Running {
    shared: Arc<BackendShared>,
    /// Counted in its spool's `live` (its reload committed), not `pending`.
    active: bool,
    /// The registry's sending side; retiring drops it, so the queue closes
    /// once the last config generation holding it is gone.
    queue: Option<Queue>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    fn handle(&self) -> Option<BackendHandle> {
        Some(BackendHandle {
            stats: self.shared.stats.clone(),
            queue: self.queue.clone()?,
        })
    }

    /// Counts it among its spool's live incarnations: its reload committed.
    fn activate(&mut self) {
        if !self.active {
            self.active = true;
            if let Some(slot) = &self.shared.spool {
                slot.live.fetch_add(1, Ordering::SeqCst);
                slot.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn retire(&mut self) {
        if !self.shared.retired.swap(true, Ordering::SeqCst) {
            if let Some(slot) = &self.shared.spool {
                let count = if self.active {
                    &slot.live
                } else {
                    &slot.pending
                };
                count.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.queue = None;
    }

    fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    fn join(&mut self) {
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!(backend = %self.shared.config.name, "a writer thread panicked");
            }
        }
    }
}

/// The running backends, indexed like the backends of the config last applied.
pub struct Backends {
    shutdown: Arc<Shutdown>,
    live: Vec<Running>,
    retiring: Vec<Running>,
}

impl Backends {
    pub fn new(shutdown: Arc<Shutdown>) -> Backends {
        Backends {
            shutdown,
            live: Vec::new(),
            retiring: Vec::new(),
        }
    }

    /// Brings the running backends in line with `config` (validated) and
    /// returns a handle per backend, indexed like `config.backends`.
    ///
    /// # Errors
    /// A spool that cannot be opened or a thread that cannot start; nothing
    /// running has changed then.
    pub fn apply(&mut self, config: &Config) -> Result<Vec<BackendHandle>, StartError> {
        self.reap();
        let mut next: Vec<Option<Running>> = Vec::with_capacity(config.backends.len());
        let mut started = Vec::new();
        for backend in &config.backends {
            let kept = self
                .live
                .iter()
                .position(|r| r.shared.config == *backend && r.queue.is_some());
            if let Some(i) = kept {
                next.push(None);
                started.push(Some(i));
                continue;
            }
            match self.start(config, backend) {
                Ok(running) => {
                    next.push(Some(running));
                    started.push(None);
                }
                Err(e) => {
                    // Undo: the new incarnations retire before taking a batch;
                    // one that took over a spool replays it until it is empty.
                    for mut running in next.into_iter().flatten() {
                        running.retire();
                        self.retiring.push(running);
                    }
                    return Err(e);
                }
            }
        }
        // Commit. Old incarnations not kept retire; where a new incarnation
        // of the same name shares their spool, it replays it from now on.
        let mut old: Vec<Option<Running>> = std::mem::take(&mut self.live)
            .into_iter()
            .map(Some)
            .collect();
        let mut live = Vec::with_capacity(next.len());
        for (new, kept) in next.into_iter().zip(started) {
            match (new, kept) {
                (None, Some(i)) => live.push(old[i].take().expect("kept once")),
                (Some(new), None) => live.push(new),
                _ => unreachable!("each backend is kept or started"),
            }
        }
        for mut gone in old.into_iter().flatten() {
            gone.retire();
            let name = &gone.shared.config.name;
            if live.iter().any(|r| &r.shared.config.name == name) {
                tracing::info!(backend = %name, "backend settings changed: new connections take over; queued batches finish on the old ones");
            } else {
                tracing::info!(backend = %name, "backend removed: finishing its queue and spool");
            }
            self.retiring.push(gone);
        }
        for running in &mut live {
            running.activate();
        }
        self.live = live;
        // Indexed like `config.backends`: every live incarnation has a queue.
        Ok(self
            .live
            .iter()
            .map(|r| r.handle().expect("a live backend has its queue"))
            .collect())
    }

    /// Starts a new incarnation of `backend`, taking over the counters and
    /// spool of an earlier incarnation of the same name, if one is running.
    fn start(
        &mut self,
        config: &Config,
        backend: &crate::config::BackendConfig,
    ) -> Result<Running, StartError> {
        let predecessor = self
            .live
            .iter()
            .chain(self.retiring.iter().rev())
            .find(|r| r.shared.config.name == backend.name)
            .map(|r| &r.shared);
        let stats = predecessor.map_or_else(
            || Arc::new(BackendStats::new(&backend.name)),
            |p| p.stats.clone(),
        );
        let adopted = predecessor.and_then(|p| p.spool.as_ref()).and_then(|slot| {
            // Under the spool lock: a retired predecessor deletes a drained
            // file under it too, so the file is either gone or kept for us.
            let _spool = slot.lock();
            (!slot.removed.load(Ordering::SeqCst)).then(|| {
                slot.pending.fetch_add(1, Ordering::SeqCst);
                slot.clone()
            })
        });
        let spool = match (&config.spool, adopted) {
            (_, Some(slot)) => Some(slot),
            (Some(spool_config), None) => {
                Some(Arc::new(open_spool(spool_config, &backend.name, &stats)?))
            }
            (None, None) => None,
        };
        let shared = Arc::new(BackendShared {
            config: backend.clone(),
            url: BackendUrl::parse(&backend.url).expect("validated config"),
            stats,
            spool,
            sync: config.spool.as_ref().map_or(SpoolSync::None, |s| s.sync),
            sync_interval: config
                .spool
                .as_ref()
                .map_or(Duration::from_secs(1), |s| s.sync_interval),
            shutdown: self.shutdown.clone(),
            max_backoff: config.write.max_retry_backoff,
            retired: AtomicBool::new(false),
            writers_running: AtomicUsize::new(0),
        });
        if let Some(spool) = shared.lock_spool() {
            shared.publish_spool_stats(&spool);
        }
        let (sender, receiver) = crossbeam_channel::bounded(config.write.queue_batches);
        let mut running = Running {
            shared: shared.clone(),
            active: false,
            queue: Some(sender),
            threads: Vec::new(),
        };
        for n in 0..backend.writers {
            match spawn_writer(&shared, receiver.clone(), n) {
                Ok(thread) => running.threads.push(thread),
                Err(e) => return Err(self.abandon(running, e)),
            }
        }
        let recovery = Recovery::new(shared.clone());
        match std::thread::Builder::new()
            .name(format!("fluxgate-recovery-{}", backend.name))
            .spawn(move || {
                // Replay, like a first attempt, carries points already accepted.
                yield_to_workers();
                recovery.run()
            }) {
            Ok(thread) => running.threads.push(thread),
            Err(e) => return Err(self.abandon(running, e)),
        }
        Ok(running)
    }

    /// A half-started incarnation: it retires (its writers end with its
    /// queue) and is kept with the retiring ones, so shutdown joins it. Its
    /// spool has no replayer of its own until a restart if it had none.
    fn abandon(&mut self, mut running: Running, e: std::io::Error) -> StartError {
        running.retire();
        tracing::error!(backend = %running.shared.config.name, error = %e, "cannot start a backend thread; restart fluxgate to replay its spool");
        self.retiring.push(running);
        StartError::Thread(e)
    }

    /// Backends retired and still at work whose name no live backend has
    /// (a replaced backend's work shows under its live name).
    pub fn retiring(&self) -> Vec<crate::generation::Retiring> {
        let mut retiring: Vec<crate::generation::Retiring> = Vec::new();
        for running in self.retiring.iter().filter(|r| !r.is_finished()) {
            let name = &running.shared.config.name;
            let live = self.live.iter().any(|r| &r.shared.config.name == name);
            if !live && !retiring.iter().any(|r| &r.stats.name == name) {
                retiring.push(crate::generation::Retiring {
                    url: running.shared.config.url.clone(),
                    stats: running.shared.stats.clone(),
                });
            }
        }
        retiring
    }

    /// Joins retired incarnations whose threads have all ended.
    pub fn reap(&mut self) {
        let (finished, retiring) = std::mem::take(&mut self.retiring)
            .into_iter()
            .partition(Running::is_finished);
        self.retiring = retiring;
        for mut running in finished {
            running.join();
        }
    }

    /// Points given up at shutdown, over every incarnation of every backend.
    pub fn points_lost(&self) -> u64 {
        let mut seen: Vec<*const BackendStats> = Vec::new();
        let mut lost = 0;
        for running in self.live.iter().chain(&self.retiring) {
            let stats = Arc::as_ptr(&running.shared.stats);
            if !seen.contains(&stats) {
                seen.push(stats);
                lost += running.shared.stats.points_lost.load(Ordering::Relaxed);
            }
        }
        lost
    }

    /// Retires every backend and waits for all threads to end; returns the
    /// points given up. Call once shutdown was requested and the workers and
    /// every config generation are gone.
    pub fn join(mut self) -> u64 {
        for running in &mut self.live {
            running.retire();
        }
        for running in self.live.iter_mut().chain(&mut self.retiring) {
            running.join();
        }
        self.points_lost()
    }
}

/// Whether a retired incarnation's recovery thread has nothing left to do:
/// a live incarnation replays its spool now, or every writer that could still
/// append to the spool is gone and it is empty (then the file is deleted) or
/// was deleted by the operator. Without a spool: its own writers are gone.
pub(super) fn retirement_done(backend: &BackendShared) -> bool {
    let Some(slot) = &backend.spool else {
        return backend.writers_running.load(Ordering::SeqCst) == 0;
    };
    let spool = slot.lock();
    // Already deleted (by an earlier incarnation): a backend added again
    // since has a file of its own at the same path.
    if slot.removed.load(Ordering::SeqCst) || slot.live.load(Ordering::SeqCst) > 0 {
        return true;
    }
    if slot.pending.load(Ordering::SeqCst) > 0 || slot.writers.load(Ordering::SeqCst) > 0 {
        return false;
    }
    if !slot.path.exists() {
        slot.removed.store(true, Ordering::SeqCst);
        tracing::warn!(backend = %backend.config.name, path = %slot.path.display(), "spool file of a removed backend was deleted; its remaining points are dropped");
        return true;
    }
    if !spool.is_empty() {
        return false;
    }
    match std::fs::remove_file(&slot.path) {
        Ok(()) => {
            tracing::info!(backend = %backend.config.name, "removed backend drained; its empty spool file is deleted")
        }
        Err(e) => {
            tracing::warn!(backend = %backend.config.name, error = %e, "removed backend drained; cannot delete its empty spool file")
        }
    }
    slot.removed.store(true, Ordering::SeqCst);
    true
}
