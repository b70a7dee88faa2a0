//! The control thread: loads configs and applies them.
//!
//! Start-up and every reload (`POST /reload`, SIGHUP, a message on the Redis
//! reload channel) go through [`Control::apply`]: validate, refuse what needs
//! a restart, bring the backends in line (`writer::Backends::apply`), then
//! publish a new generation that requests starting from then on use. A config
//! that cannot be applied changes nothing: the running one keeps serving.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::auth::Users;
use crate::config::source::{ConfigSource, LoadError, Loaded};
use crate::config::Config;
use crate::generation::{Current, Generation};
use crate::route::Router;
use crate::shutdown::Shutdown;
use crate::writer::{Backends, StartError};

/// What asked for a reload, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Http,
    Signal,
    PubSub,
}

/// The outcome of an applied reload.
#[derive(Debug, Clone)]
pub struct Applied {
    pub generation: u64,
    /// False when the config read equals the running one (nothing was done).
    pub changed: bool,
}

#[derive(Debug)]
pub enum ReloadError {
    /// The source could not be read, or its config is invalid.
    Load(LoadError),
    /// A section that only a restart can change was changed.
    NeedsRestart(&'static str),
    /// A backend could not be started (its spool, a thread).
    Start(StartError),
    /// The process is shutting down.
    Stopping,
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Load(e) => e.fmt(f),
            ReloadError::NeedsRestart(section) => write!(
                f,
                "[{section}] cannot change while running: restart fluxgate to apply it"
            ),
            ReloadError::Start(e) => e.fmt(f),
            ReloadError::Stopping => f.write_str("fluxgate is shutting down"),
        }
    }
}

impl std::error::Error for ReloadError {}

type Reply = Sender<Result<Applied, Arc<ReloadError>>>;

/// How often the control thread looks after retired backends between reloads.
const HOUSEKEEPING: std::time::Duration = std::time::Duration::from_secs(1);

struct ReloadRequest {
    origin: Origin,
    reply: Option<Reply>,
}

/// The sending side of the control thread's queue, cloned to whoever may ask
/// for a reload.
#[derive(Clone)]
pub struct ReloadRequests(Sender<ReloadRequest>);

impl ReloadRequests {
    /// Asks for a reload; the receiver gets its outcome.
    pub fn request(&self, origin: Origin) -> Receiver<Result<Applied, Arc<ReloadError>>> {
        let (reply, outcome) = crossbeam_channel::bounded(1);
        let request = ReloadRequest {
            origin,
            reply: Some(reply.clone()),
        };
        if self.0.send(request).is_err() {
            let _ = reply.send(Err(Arc::new(ReloadError::Stopping)));
        }
        outcome
    }

    /// Asks for a reload nobody waits for (signals, pub/sub).
    pub fn notify(&self, origin: Origin) {
        let _ = self.0.send(ReloadRequest {
            origin,
            reply: None,
        });
    }
}

pub struct Control {
    source: ConfigSource,
    shutdown: Arc<Shutdown>,
    backends: Backends,
    current: Option<Arc<Current>>,
    /// The generation last applied.
    running: Option<Arc<Generation>>,
    /// Warnings already logged, so a reload repeats none of them.
    warned: HashSet<String>,
}

impl Control {
    pub fn new(source: ConfigSource, shutdown: Arc<Shutdown>) -> Control {
        Control {
            source,
            backends: Backends::new(shutdown.clone()),
            shutdown,
            current: None,
            running: None,
            warned: HashSet::new(),
        }
    }

    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// Applies the config read at start-up and returns where its generation
    /// is published.
    ///
    /// # Errors
    /// A backend that cannot be started.
    pub fn start(&mut self, loaded: Loaded) -> Result<Arc<Current>, ReloadError> {
        let generation = self
            .apply(loaded)?
            .expect("nothing runs yet, so it changes");
        let current = Arc::new(Current::new(generation));
        self.current = Some(current.clone());
        Ok(current)
    }

    /// Reads the source again and applies it.
    ///
    /// # Errors
    /// Why the new config was refused; the running one stays.
    pub fn reload(&mut self) -> Result<Applied, ReloadError> {
        // Workers may be gone already: a new generation would serve nobody,
        // and new backends would start while the old ones drain.
        if self.shutdown.is_requested() {
            return Err(ReloadError::Stopping);
        }
        let loaded = self.source.load().map_err(ReloadError::Load)?;
        let generation = self.apply(loaded)?;
        let changed = generation.is_some();
        if let (Some(generation), Some(current)) = (generation, &self.current) {
            current.publish(generation);
        }
        Ok(Applied {
            generation: self.running.as_ref().map_or(0, |g| g.id),
            changed,
        })
    }

    /// The one path from a loaded config to a running generation: None when
    /// it equals the running config.
    fn apply(&mut self, loaded: Loaded) -> Result<Option<Arc<Generation>>, ReloadError> {
        for warning in loaded.warnings {
            if self.warned.insert(warning.clone()) {
                tracing::warn!(source = %self.source.describe(), "{warning}");
            }
        }
        let config = loaded.config;
        if let Some(running) = &self.running {
            if running.config == config {
                return Ok(None);
            }
            refuse_restart_only_changes(&running.config, &config)?;
        }
        let backends = self.backends.apply(&config).map_err(ReloadError::Start)?;
        if config.spool.is_none() {
            tracing::warn!("no [spool]: while a backend is down its batches are retried in memory and clients are pushed back (503) once its queue is full");
        }
        if config.users.is_empty() {
            for backend in config.backends.iter().filter(|b| b.username.is_some()) {
                tracing::warn!(backend = %backend.name, "backend has its own credentials but fluxgate has no [[users]]: every client, without credentials, acts with this backend's");
            }
        }
        let users = match &self.running {
            Some(running) if running.config.users == config.users => running.users.clone(),
            _ => Arc::new(Users::new(&config.users).expect("validated config")),
        };
        let generation = Arc::new(Generation {
            id: self.running.as_ref().map_or(1, |g| g.id + 1),
            users,
            router: Arc::new(Router::new(&config)),
            source: self.source.describe(),
            applied_at: SystemTime::now(),
            backends,
            config,
        });
        self.running = Some(generation.clone());
        Ok(Some(generation))
    }

    /// Runs the control thread: applies reloads as they are asked for, until
    /// every [`ReloadRequests`] is gone. Returns the control for shutdown.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn spawn(mut self) -> std::io::Result<(ReloadRequests, JoinHandle<Control>)> {
        let (sender, requests) = crossbeam_channel::unbounded::<ReloadRequest>();
        let thread = std::thread::Builder::new()
            .name("fluxgate-control".into())
            .spawn(move || {
                loop {
                    // Between reloads, once a second: retired backends that are
                    // done are joined, and /status learns which are still at work.
                    let first = match requests.recv_timeout(HOUSEKEEPING) {
                        Ok(first) => first,
                        Err(RecvTimeoutError::Timeout) => {
                            self.housekeeping();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    // Requests that arrived meanwhile share one reload.
                    let mut batch = vec![first];
                    batch.extend(requests.try_iter());
                    let outcome = self.reload().map_err(Arc::new);
                    let origins: Vec<Origin> = batch.iter().map(|r| r.origin).collect();
                    match &outcome {
                        Ok(applied) if applied.changed => tracing::info!(
                            generation = applied.generation,
                            source = %self.source.describe(),
                            ?origins,
                            "reload applied",
                        ),
                        // Pub/sub also reloads after (re)subscribing, in case a
                        // message was missed: usually there was none.
                        Ok(applied) if origins.iter().all(|o| *o == Origin::PubSub) => {
                            tracing::debug!(
                                generation = applied.generation,
                                "reload: config unchanged"
                            );
                        }
                        Ok(applied) => tracing::info!(
                            generation = applied.generation,
                            ?origins,
                            "reload: config unchanged",
                        ),
                        Err(e) => tracing::error!(
                            ?origins,
                            reason = %e,
                            "reload refused; the running config stays",
                        ),
                    }
                    for request in batch {
                        if let Some(reply) = request.reply {
                            let _ = reply.send(outcome.clone());
                        }
                    }
                    self.housekeeping();
                }
                self
            })?;
        Ok((ReloadRequests(sender), thread))
    }

    fn housekeeping(&mut self) {
        self.backends.reap();
        if let Some(current) = &self.current {
            current.set_retiring(self.backends.retiring());
        }
    }

    /// Stops every backend once the workers are gone; returns the points that
    /// could not be delivered before the grace period ended.
    pub fn finish(mut self) -> u64 {
        // Drop every generation, so the writer queues close once drained.
        self.current = None;
        self.running = None;
        self.backends.join()
    }
}

/// `[server]` (sockets, workers) and `[spool]` (open files) are set up once.
fn refuse_restart_only_changes(running: &Config, next: &Config) -> Result<(), ReloadError> {
    if running.server != next.server {
        return Err(ReloadError::NeedsRestart("server"));
    }
    if running.spool != next.spool {
        return Err(ReloadError::NeedsRestart("spool"));
    }
    Ok(())
}
