//! Evening out client connections across workers.
//!
//! SO_REUSEPORT picks the worker of each new connection by a hash of its
//! addresses, so a few long-lived clients (a handful of Telegraf agents) can
//! all land on one worker while another idles. A worker that accepts a
//! connection while another worker holds fewer hands it to the one with the
//! fewest: the descriptor goes through a channel, and the receiving worker's
//! doorbell wakes it to serve the connection from then on. Counts are the
//! workers' `connections` gauges; the receiver's is raised at hand-off, so
//! hand-offs made at the same time see each other.
//!
//! Connections go only between running workers on the same I/O driver: with
//! `server.driver = "auto"` a worker whose io_uring was refused runs on
//! epoll, and the two drivers want their sockets in different modes.
//!
//! The same mailboxes carry pieces of large write bodies that a worker shares
//! to one reading no body of its own (`api/share.rs`).

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use crossbeam_channel::{Receiver, Sender};

use crate::api::share::{Helpers, Piece};
use crate::doorbell::{doorbell, Bell, Ring};
use crate::shutdown::Shutdown;
use crate::stats::WorkerStats;

/// The sending ends, one per worker; shared by all workers.
pub struct Handoffs {
    mailboxes: Vec<Mailbox>,
}

/// What one worker hands another.
enum Handoff {
    /// A client connection, accepted and not yet read.
    Connection(OwnedFd),
    /// Points of a large write body, to ingest while their worker does the rest.
    Piece(Arc<Piece>),
}

struct Mailbox {
    handoffs: Sender<Handoff>,
    /// `None` when the system refused the socket pair: that worker takes no
    /// hand-offs.
    doorbell: Option<Ring>,
    /// The receiving end, until its worker takes it.
    inbox: Mutex<Option<Inbox>>,
    /// The driver of the worker, once it runs and has taken its inbox.
    driver: OnceLock<&'static str>,
}

/// A worker's receiving end.
pub struct Inbox {
    handoffs: Receiver<Handoff>,
    bell: Bell,
}

impl Handoffs {
    pub fn new(workers: usize) -> Handoffs {
        let mailboxes = (0..workers)
            .map(|id| {
                let (sender, receiver) = crossbeam_channel::unbounded();
                let (doorbell, inbox) = match doorbell() {
                    Ok((ring, bell)) => (
                        Some(ring),
                        Some(Inbox {
                            handoffs: receiver,
                            bell,
                        }),
                    ),
                    Err(e) => {
                        tracing::warn!(worker = id, error = %e, "no socket pair for connection hand-offs; this worker keeps what it accepts and takes no others");
                        (None, None)
                    }
                };
                Mailbox {
                    handoffs: sender,
                    doorbell,
                    inbox: Mutex::new(inbox),
                    driver: OnceLock::new(),
                }
            })
            .collect();
        Handoffs { mailboxes }
    }

    /// The receiving end of `worker`, for that worker to take once it runs
    /// on `driver` ("io_uring" or "epoll"); from then on it takes hand-offs
    /// from workers on the same driver.
    pub fn take_inbox(&self, worker: usize, driver: &'static str) -> Option<Inbox> {
        let mailbox = &self.mailboxes[worker];
        let inbox = mailbox
            .inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if inbox.is_some() {
            let _ = mailbox.driver.set(driver);
        }
        inbox
    }

    /// Which worker serves a connection `from` has just accepted: the one
    /// holding the fewest connections if that is fewer than `from` holds, else
    /// `from` itself (and always while shutting down). Counts the connection
    /// for the worker chosen.
    pub fn place(&self, from: usize, workers: &[Arc<WorkerStats>], shutdown: &Shutdown) -> usize {
        let open = |id: usize| workers[id].connections.load(Ordering::Relaxed);
        let driver = self.mailboxes[from].driver.get();
        let fewest = (0..workers.len())
            .filter(|&id| driver.is_some() && self.mailboxes[id].driver.get() == driver)
            .min_by_key(|&id| open(id));
        let to = match fewest {
            Some(id) if open(id) < open(from) && !shutdown.is_requested() => id,
            _ => from,
        };
        workers[to].connections.fetch_add(1, Ordering::Relaxed);
        to
    }

    /// Hands `connection` to `worker` (chosen by [`Handoffs::place`]).
    pub fn send(&self, worker: usize, connection: OwnedFd) {
        // Fails only once the receiving worker has ended: the connection
        // then comes back in the error, and is closed with it.
        self.deliver(worker, Handoff::Connection(connection));
    }

    fn deliver(&self, worker: usize, handoff: Handoff) {
        let mailbox = &self.mailboxes[worker];
        let _ = mailbox.handoffs.send(handoff);
        if let Some(ring) = &mailbox.doorbell {
            ring.ring();
        }
    }

    /// Whether `worker` runs and reads its mailbox.
    fn is_running(&self, worker: usize) -> bool {
        self.mailboxes[worker].driver.get().is_some()
    }
}

/// The other workers, to worker `from` sharing a piece of a body.
pub struct OtherWorkers<'a> {
    pub from: usize,
    pub handoffs: &'a Handoffs,
    pub workers: &'a [Arc<WorkerStats>],
}

impl Helpers for OtherWorkers<'_> {
    fn idle_worker(&self) -> Option<usize> {
        // An owner that may park must have nothing else to do: another
        // body of its own would wait meanwhile.
        if self.workers[self.from].write_bodies.load(Ordering::Relaxed) > 1 {
            return None;
        }
        // Looking from the next worker on spreads the offers of many.
        let count = self.workers.len();
        (1..count).map(|k| (self.from + k) % count).find(|&id| {
            self.handoffs.is_running(id)
                && self.workers[id].write_bodies.load(Ordering::Relaxed) == 0
        })
    }

    fn offer(&self, worker: usize, piece: Arc<Piece>) {
        // An offer to a worker that has ended comes back in the error and
        // is dropped, still on offer: its owner takes it back.
        self.handoffs.deliver(worker, Handoff::Piece(piece));
    }
}

impl Inbox {
    /// Passes each connection handed to this worker to `adopt`, and each
    /// piece of a body shared to it to `ingest`, until the doorbell fails; run
    /// as a task on the worker's runtime. Each ring heard takes everything
    /// waiting.
    pub async fn run(self, adopt: impl Fn(std::net::TcpStream), ingest: impl Fn(Arc<Piece>)) {
        let handoffs = self.handoffs;
        let heard = self.bell.hear(|| {
            for handoff in handoffs.try_iter() {
                match handoff {
                    Handoff::Connection(connection) => {
                        adopt(std::net::TcpStream::from(connection));
                    }
                    Handoff::Piece(piece) => ingest(piece),
                }
            }
        });
        if let Err(e) = heard.await {
            tracing::warn!(error = %e, "connection hand-offs to this worker are not read");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(open: &[u64]) -> Vec<Arc<WorkerStats>> {
        open.iter()
            .map(|&n| {
                let stats = WorkerStats::default();
                stats.connections.store(n, Ordering::Relaxed);
                Arc::new(stats)
            })
            .collect()
    }

    fn open(workers: &[Arc<WorkerStats>]) -> Vec<u64> {
        workers
            .iter()
            .map(|w| w.connections.load(Ordering::Relaxed))
            .collect()
    }

    /// Hand-offs among `count` workers, every one running on io_uring.
    fn running(count: usize) -> Handoffs {
        let handoffs = Handoffs::new(count);
        for id in 0..count {
            handoffs.take_inbox(id, "io_uring").expect("inbox");
        }
        handoffs
    }

    #[test]
    fn a_connection_goes_to_the_worker_with_the_fewest_when_it_has_fewer() {
        let handoffs = running(3);
        let shutdown = Shutdown::new();
        let stats = workers(&[2, 1, 0]);
        assert_eq!(handoffs.place(0, &stats, &shutdown), 2);
        assert_eq!(open(&stats), [2, 1, 1]);
        // Ties keep it where it was accepted.
        assert_eq!(handoffs.place(1, &stats, &shutdown), 1);
        assert_eq!(open(&stats), [2, 2, 1]);
        assert_eq!(handoffs.place(2, &stats, &shutdown), 2);
        assert_eq!(open(&stats), [2, 2, 2]);
    }

    #[test]
    fn connections_all_accepted_by_one_worker_end_up_even() {
        let handoffs = running(2);
        let shutdown = Shutdown::new();
        let stats = workers(&[0, 0]);
        for _ in 0..7 {
            handoffs.place(0, &stats, &shutdown);
        }
        assert_eq!(open(&stats), [4, 3]);
    }

    #[test]
    fn nothing_is_handed_off_while_shutting_down() {
        let handoffs = running(2);
        let shutdown = Shutdown::new();
        shutdown.request(std::time::Duration::from_secs(1));
        let stats = workers(&[3, 0]);
        assert_eq!(handoffs.place(0, &stats, &shutdown), 0);
        assert_eq!(open(&stats), [4, 0]);
    }

    #[test]
    fn connections_go_only_to_running_workers_on_the_same_driver() {
        let handoffs = Handoffs::new(3);
        let shutdown = Shutdown::new();
        let stats = workers(&[5, 0, 0]);
        handoffs.take_inbox(0, "io_uring").expect("inbox");
        // Worker 1 does not run yet, worker 2 fell back to epoll.
        handoffs.take_inbox(2, "epoll").expect("inbox");
        assert_eq!(handoffs.place(0, &stats, &shutdown), 0);
        assert_eq!(handoffs.place(2, &stats, &shutdown), 2);
        handoffs.take_inbox(1, "io_uring").expect("inbox");
        assert_eq!(handoffs.place(0, &stats, &shutdown), 1);
        assert_eq!(open(&stats), [6, 1, 1]);
    }

    #[test]
    fn a_handed_connection_reaches_the_inbox_it_was_sent_to() {
        let handoffs = Handoffs::new(2);
        let inbox = handoffs.take_inbox(1, "epoll").expect("inbox");
        assert!(handoffs.take_inbox(1, "epoll").is_none(), "taken once");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        handoffs.send(1, OwnedFd::from(accepted));
        let adopted = std::cell::RefCell::new(Vec::new());
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        runtime.block_on(async {
            monoio::select! {
                () = inbox.run(|stream| adopted.borrow_mut().push(stream), |_| {}) => {}
                () = async {
                    while adopted.borrow().is_empty() {
                        monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                } => {}
            }
        });
        let adopted = adopted.into_inner();
        assert_eq!(adopted.len(), 1);
        assert_eq!(
            adopted[0].peer_addr().unwrap(),
            client.local_addr().unwrap(),
            "the connection sent"
        );
    }

    #[test]
    fn a_piece_goes_to_a_running_worker_reading_no_body_and_is_ingested_there() {
        use crate::api::share::{share_while, Sharing};
        let handoffs = Handoffs::new(3);
        let stats = workers(&[0, 0, 0]);
        let helpers = OtherWorkers {
            from: 0,
            handoffs: &handoffs,
            workers: &stats,
        };
        handoffs.take_inbox(0, "io_uring").expect("inbox");
        assert_eq!(helpers.idle_worker(), None, "no other worker runs");
        // Pieces carry no socket: any driver takes them.
        let inbox = handoffs.take_inbox(2, "epoll").expect("inbox");
        assert_eq!(helpers.idle_worker(), Some(2));
        handoffs.take_inbox(1, "io_uring").expect("inbox");
        assert_eq!(helpers.idle_worker(), Some(1));
        stats[1].write_bodies.store(1, Ordering::Relaxed);
        assert_eq!(helpers.idle_worker(), Some(2));
        stats[2].write_bodies.store(2, Ordering::Relaxed);
        assert_eq!(helpers.idle_worker(), None);
        stats[1].write_bodies.store(0, Ordering::Relaxed);
        stats[2].write_bodies.store(0, Ordering::Relaxed);
        // Each worker looks from the next one on.
        let from = |from: usize| OtherWorkers {
            from,
            handoffs: &handoffs,
            workers: &stats,
        };
        assert_eq!(from(1).idle_worker(), Some(2));
        assert_eq!(from(2).idle_worker(), Some(0));
        // The owner's own body counts; a second one of its own waits.
        stats[2].write_bodies.store(1, Ordering::Relaxed);
        assert_eq!(from(2).idle_worker(), Some(0));
        stats[2].write_bodies.store(2, Ordering::Relaxed);
        assert_eq!(from(2).idle_worker(), None);
        stats[2].write_bodies.store(0, Ordering::Relaxed);
        stats[1].write_bodies.store(1, Ordering::Relaxed);

        let config = crate::config::Config::from_toml(
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[routes]\n_default_ = [\"a\"]",
        )
        .unwrap();
        let router = Arc::new(crate::route::Router::new(&config));
        let sharing = Sharing {
            router: &router,
            helpers: &helpers,
            min_body_bytes: 0,
        };
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let taken = std::cell::Cell::new(0);
        let received = std::time::SystemTime::now();
        let body = b"m v=1 1\nm v=2 2\n";
        // The owner's own part runs worker 2 until it has ingested the piece.
        let ((), ingested) = share_while(
            sharing,
            body,
            &crate::batch::tests::TARGET,
            received,
            1 << 20,
            || {
                runtime.block_on(async {
                    monoio::select! {
                        () = inbox.run(|_| {}, |piece| taken.set(piece.ingest())) => {}
                        () = async {
                            while taken.get() == 0 {
                                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                            }
                        } => {}
                    }
                });
            },
        );
        assert_eq!(taken.get(), 2);
        let ingested = ingested.expect("ingested by worker 2");
        assert_eq!(ingested.report.accepted, 2);
        assert_eq!(ingested.batches.len(), 1);
        assert_eq!(&ingested.batches[0].1.body[..], body);
    }
}
