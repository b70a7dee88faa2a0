//! Config generations: a config and everything derived from it that requests
//! read (routes, backend queues, users). A generation never changes once
//! published; a reload publishes a new one, and each worker moves to it at the
//! start of its next request (`Worker::follow_reloads`), so a request sees one
//! generation from start to end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use crate::auth::Users;
use crate::config::Config;
use crate::route::{BackendId, Router};
use crate::stats::BackendStats;
use crate::writer::{BackendHandle, Queue};

pub struct Generation {
    /// 1 for the config read at start-up, then one more per applied reload.
    pub id: u64,
    pub config: Config,
    /// Where the config came from, for `/status` ("file fluxgate.toml").
    pub source: String,
    pub applied_at: SystemTime,
    /// Shared with the pieces of bodies lent to other workers (`api::lend`).
    pub router: Arc<Router>,
    /// Per backend, indexed like `config.backends`.
    pub backends: Vec<BackendHandle>,
    /// Proxy users; shared with the next generation while `[[users]]` is
    /// unchanged, so a reload keeps their verified-credentials cache.
    pub users: Arc<Users>,
}

impl Generation {
    pub fn backend_name(&self, backend: BackendId) -> &str {
        &self.config.backends[backend].name
    }

    /// The writer queues, indexed like the backends.
    pub fn queues(&self) -> Vec<Queue> {
        self.backends.iter().map(|b| b.queue.clone()).collect()
    }
}

/// A backend a reload removed that still finishes its queue or replays its
/// spool, for `/status`.
#[derive(Clone)]
pub struct Retiring {
    pub url: String,
    pub stats: Arc<BackendStats>,
}

/// The latest published generation.
pub struct Current {
    /// The id of `generation`: one atomic load tells a worker whether it is
    /// up to date, without touching the lock.
    id: AtomicU64,
    generation: Mutex<Arc<Generation>>,
    /// Kept up to date by the control thread.
    retiring: Mutex<Vec<Retiring>>,
}

impl Current {
    pub fn new(generation: Arc<Generation>) -> Current {
        Current {
            id: AtomicU64::new(generation.id),
            generation: Mutex::new(generation),
            retiring: Mutex::new(Vec::new()),
        }
    }

    pub fn id(&self) -> u64 {
        self.id.load(Ordering::Acquire)
    }

    pub fn load(&self) -> Arc<Generation> {
        self.generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn retiring(&self) -> Vec<Retiring> {
        self.retiring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_retiring(&self, retiring: Vec<Retiring>) {
        *self.retiring.lock().unwrap_or_else(PoisonError::into_inner) = retiring;
    }

    /// Makes `generation` the one new requests start with.
    pub fn publish(&self, generation: Arc<Generation>) {
        let id = generation.id;
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = generation;
        self.id.store(id, Ordering::Release);
    }
}
