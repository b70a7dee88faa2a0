//! One worker thread: its monoio runtime, its listener, its buffers and batches.
//!
//! Everything here is owned by the worker's thread (`Rc`, `RefCell`, `Cell`):
//! workers share nothing hot. The write path borrows `WorkerState` only in
//! synchronous sections, never across an `.await`, so connection tasks of the
//! same worker cannot observe each other half-way.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use crate::batch::{Batch, Batcher};
use crate::control::ReloadRequests;
use crate::dispatch::Dispatcher;
use crate::generation::{Current, Generation};
use crate::log_limit::LogLimit;
use crate::lp::gzip::Gunzip;
use crate::server::admission::AdmissionLine;
use crate::server::handoff::Handoffs;
use crate::settle::SettleNotices;
use crate::shutdown::Shutdown;
use crate::stats::WorkerStats;

/// How often a worker checks for aged batches, overflow and shutdown. A tenth of
/// the default flush interval: batches leave at most this much later than due.
const TICK: Duration = Duration::from_millis(10);

/// Wait after a failed accept (EMFILE and friends) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What every worker shares with the others and the control thread.
pub struct Shared {
    /// The config generation new requests start with.
    pub current: Arc<Current>,
    /// Per worker, indexed by worker id.
    pub workers: Vec<Arc<WorkerStats>>,
    pub shutdown: Arc<Shutdown>,
    pub started: Instant,
    /// Where `POST /reload` asks for a reload.
    pub reloads: ReloadRequests,
    /// Connections handed from one worker to another.
    pub handoffs: Handoffs,
}

/// Buffers and batches of one worker, borrowed by one request at a time.
pub struct WorkerState {
    /// The generation this worker's batches and queues belong to.
    pub generation: Arc<Generation>,
    pub batcher: Batcher,
    pub dispatcher: Dispatcher,
    /// Dispatchers of earlier generations still holding overflow, each with
    /// its generation (whose queues it feeds).
    retiring: Vec<(Arc<Generation>, Dispatcher)>,
    pub gunzip: Gunzip,
    /// Gunzipped request bodies; capacity kept between requests, bounded by
    /// `server.max_decompressed_bytes`.
    pub decompressed: Vec<u8>,
    /// Unescaped measurement names for routing.
    pub measurement: Vec<u8>,
}

pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub stats: Arc<WorkerStats>,
    pub state: RefCell<WorkerState>,
    /// Fired once when the process starts shutting down.
    pub stopping: LocalSignal,
    /// Kept-alive connections to backends for `/query`.
    pub query_connections: crate::query::backend::ConnectionPool,
    /// Pokes from writers settling batches durable writes wait on. Shared
    /// with the task reading them, which must not hold the worker itself (its
    /// queues would outlive shutdown).
    pub settle: Rc<SettleNotices>,
    /// Writes waiting for room in the writer queues, in arrival order.
    pub admission: AdmissionLine,
}

impl WorkerState {
    /// Moves what it can from overflow into the writer queues, for this and
    /// earlier generations. Returns true when this generation's overflow is
    /// empty: writes are admitted then. Earlier generations' overflow gets no
    /// new batches and drains in the background, so a backend removed while
    /// its queue was full does not hold back writes that no longer go to it.
    pub fn drain_overflow(&mut self) -> bool {
        self.retiring
            .retain_mut(|(_, dispatcher)| !dispatcher.drain_overflow());
        self.dispatcher.drain_overflow()
    }

    /// As [`WorkerState::drain_overflow`], true only when every generation's
    /// overflow is empty (shutdown waits for that).
    pub fn drain_all_overflow(&mut self) -> bool {
        self.drain_overflow() && self.retiring.is_empty()
    }

    /// Names of the backends whose full queues hold this generation's writes back.
    pub fn blocked_backends(&self) -> Vec<&str> {
        self.dispatcher
            .blocked_backends()
            .map(|id| self.generation.backend_name(id))
            .collect()
    }
}

fn batcher_for(generation: &Generation) -> Batcher {
    Batcher::new(
        generation.router.set_count(),
        generation.config.write.max_batch_bytes.as_usize(),
    )
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Worker {
        let generation = shared.current.load();
        let state = WorkerState {
            batcher: batcher_for(&generation),
            dispatcher: Dispatcher::new(generation.queues()),
            generation,
            retiring: Vec::new(),
            gunzip: Gunzip::new(),
            decompressed: Vec::new(),
            measurement: Vec::new(),
        };
        let stats = shared.workers[id].clone();
        Worker {
            id,
            admission: AdmissionLine::new(stats.clone()),
            stats,
            shared,
            state: RefCell::new(state),
            stopping: LocalSignal::default(),
            query_connections: crate::query::backend::ConnectionPool::default(),
            settle: Rc::default(),
        }
    }

    /// The generation this worker serves with now.
    pub fn generation(&self) -> Arc<Generation> {
        self.state.borrow().generation.clone()
    }

    /// Moves this worker to the latest config generation, if a reload
    /// published one since. Open batches leave first, routed and queued by
    /// the generation they were written under; overflow for its queues keeps
    /// draining in the background.
    pub fn follow_reloads(&self) {
        let current = &self.shared.current;
        if current.id() == self.state.borrow().generation.id {
            return;
        }
        let next = current.load();
        let state = &mut *self.state.borrow_mut();
        state.batcher.flush_all();
        for (set, batch) in state.batcher.take_ready() {
            state
                .dispatcher
                .dispatch(&state.generation.router, set, &batch);
        }
        let mut dispatcher =
            std::mem::replace(&mut state.dispatcher, Dispatcher::new(next.queues()));
        state.batcher = batcher_for(&next);
        let previous = std::mem::replace(&mut state.generation, next);
        // Backends the reload kept take their waiting batches along, newest
        // generation first so that the oldest end up in front.
        state.dispatcher.adopt_overflow(&mut dispatcher);
        for (_, older) in state.retiring.iter_mut().rev() {
            state.dispatcher.adopt_overflow(older);
        }
        state.retiring.retain(|(_, older)| older.has_overflow());
        if dispatcher.has_overflow() {
            state.retiring.push((previous, dispatcher));
        }
    }

    /// Hands every frozen batch to the dispatcher.
    pub fn dispatch_ready(&self) {
        self.dispatch_ready_into(None);
    }

    /// Hands every frozen batch to the dispatcher and, with `frozen`, keeps a
    /// handle on each (for requests that wait until their batches settle).
    pub fn dispatch_ready_into(&self, mut frozen: Option<&mut Vec<Arc<Batch>>>) {
        let state = &mut *self.state.borrow_mut();
        for (set, batch) in state.batcher.take_ready() {
            state
                .dispatcher
                .dispatch(&state.generation.router, set, &batch);
            if let Some(frozen) = frozen.as_deref_mut() {
                frozen.push(batch);
            }
        }
    }

    /// Accepts connections until shutdown, then drains: waits for open
    /// connections, flushes every batch and hands it to the writers.
    pub async fn run(self: Rc<Self>, listener: TcpListener, driver: &'static str) {
        monoio::spawn(self.clone().tick());
        let notices = self.settle.clone();
        monoio::spawn(async move { notices.run().await });
        if let Some(inbox) = self.shared.handoffs.take_inbox(self.id, driver) {
            // Weak: the task outlives the worker's drain, and must not keep
            // its queues open.
            let worker = Rc::downgrade(&self);
            monoio::spawn(inbox.run(
                move |stream| adopt(&worker, stream),
                |piece| {
                    piece.ingest();
                },
            ));
        }
        let max_connections = self.generation().config.max_connections_per_worker();
        loop {
            // At the limit, stop accepting: new clients wait in the kernel's
            // backlog instead of each adding a connection buffer here.
            while self.open_connections() >= max_connections && !self.stopping.is_fired() {
                monoio::time::sleep(TICK).await;
            }
            let accepted = monoio::select! {
                accepted = listener.accept() => accepted,
                _ = self.stopping.wait() => break,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = &self.shared;
                    let to = shared
                        .handoffs
                        .place(self.id, &shared.workers, &shared.shutdown);
                    if to == self.id {
                        self.clone().serve(stream);
                    } else {
                        self.stats
                            .connections_handed_over
                            .fetch_add(1, Ordering::Relaxed);
                        shared.handoffs.send(to, give_up(stream));
                    }
                }
                Err(e) => {
                    // EMFILE under a connection flood repeats at every retry.
                    static ACCEPT_ERRORS: LogLimit = LogLimit::per_minute(10);
                    if let Some(suppressed) = ACCEPT_ERRORS.allow() {
                        tracing::warn!(worker = self.id, error = %e, suppressed, "accept failed; retrying");
                    }
                    monoio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
        drop(listener);
        self.drain().await;
    }

    /// Serves a connection counted for this worker until it closes.
    fn serve(self: Rc<Self>, stream: monoio::net::TcpStream) {
        monoio::spawn(async move {
            super::conn::serve(stream, &self).await;
            self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Client connections open on this worker, those handed to it included.
    fn open_connections(&self) -> usize {
        self.stats.connections.load(Ordering::Relaxed) as usize
    }

    async fn drain(&self) {
        let shutdown = &self.shared.shutdown;
        // Requests still in flight may wait for batches in overflow: keep
        // moving those into the writer queues while they finish.
        while self.open_connections() > 0 && !shutdown.is_past_deadline() {
            self.state.borrow_mut().drain_overflow();
            monoio::time::sleep(TICK).await;
        }
        self.state.borrow_mut().batcher.flush_all();
        self.dispatch_ready();
        while !self.state.borrow_mut().drain_all_overflow() {
            if shutdown.is_past_deadline() {
                self.count_overflow_as_lost();
                return;
            }
            monoio::time::sleep(TICK).await;
        }
    }

    /// Batches that never reached a writer queue before the grace period
    /// ended: counted as lost per backend (the process then exits non-zero)
    /// and settled, so no request waits for them.
    fn count_overflow_as_lost(&self) {
        let state = &mut *self.state.borrow_mut();
        let current = (state.generation.clone(), &mut state.dispatcher);
        let retiring = state.retiring.iter_mut().map(|(g, d)| (g.clone(), d));
        let overflow =
            std::iter::once(current)
                .chain(retiring)
                .flat_map(|(generation, dispatcher)| {
                    dispatcher
                        .take_overflow()
                        .into_iter()
                        .map(move |(backend, batch)| {
                            (generation.backends[backend].stats.clone(), batch)
                        })
                });
        for (stats, batch) in overflow {
            stats
                .points_lost
                .fetch_add(batch.lines as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                worker = self.id,
                backend = %stats.name,
                points = batch.lines,
                "shutdown grace period over with a batch still waiting for the writer queue; it is lost",
            );
            batch.settle(Some(crate::batch::Refusal {
                backend: stats.name.clone(),
                status: 503,
                message: "not queued before shutdown".to_owned(),
            }));
        }
    }

    /// Background task: flushes aged batches, retries overflow, notices shutdown.
    async fn tick(self: Rc<Self>) {
        loop {
            let flush_interval = self.generation().config.write.flush_interval;
            monoio::time::sleep(TICK.min(flush_interval)).await;
            if self.shared.shutdown.is_requested() {
                self.stopping.fire();
                return;
            }
            // An idle worker lets go of an old generation too, so the queues
            // of removed backends close.
            self.follow_reloads();
            self.state
                .borrow_mut()
                .batcher
                .flush_aged(Instant::now(), flush_interval);
            self.dispatch_ready();
            self.state.borrow_mut().drain_overflow();
        }
    }
}

/// Takes a connection handed to this worker (already counted for it): served
/// here, or closed if the worker is gone.
fn adopt(worker: &Weak<Worker>, stream: std::net::TcpStream) {
    let Some(worker) = worker.upgrade() else {
        return;
    };
    match monoio::net::TcpStream::from_std(stream) {
        Ok(stream) => worker.serve(stream),
        Err(e) => {
            worker.stats.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(worker = worker.id, error = %e, "a connection handed over could not be taken; closed");
        }
    }
}

/// The descriptor of a connection this worker accepted, to hand to another.
fn give_up(stream: monoio::net::TcpStream) -> OwnedFd {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // Just accepted: nothing else refers to it, so monoio gives it up whole.
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` handed over the descriptor's ownership.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A one-shot, thread-local broadcast: `wait()` futures complete once `fire()`
/// has been called. Each waiting future keeps one waker slot, removed on drop,
/// so the table never holds more entries than live waiters.
#[derive(Default)]
pub struct LocalSignal {
    fired: Cell<bool>,
    next_id: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl LocalSignal {
    pub fn fire(&self) {
        self.fired.set(true);
        for (_, waker) in self.waiters.borrow_mut().drain() {
            waker.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    pub fn wait(&self) -> SignalWait<'_> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        SignalWait { signal: self, id }
    }
}

pub struct SignalWait<'a> {
    signal: &'a LocalSignal,
    id: u64,
}

impl Future for SignalWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        self.signal
            .waiters
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SignalWait<'_> {
    fn drop(&mut self) {
        self.signal.waiters.borrow_mut().remove(&self.id);
    }
}
