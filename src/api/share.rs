//! Sharing the ingestion of a large write body with an idle worker.
//!
//! A body is ingested by the worker that read it, on one core. Under
//! moderate load another core is often idle meanwhile, and a large body
//! (thousands of points) waits on one core for work two could share: its
//! client sees the whole walk as added latency, and a single connection
//! (a backfill, `influx -import`) can never use more than one core.
//!
//! So a worker about to ingest a large body (the owner) offers the points
//! of its second half, from the first newline past the middle, to a worker
//! that is reading no write body of its own, and ingests the first half
//! meanwhile. The piece goes to whichever gets to it first: the other
//! worker, once its doorbell wakes it (the hand-off mailbox,
//! `server/handoff.rs`), takes it and ingests it into batches of its own;
//! an owner that gets there first takes it back and ingests it as if it
//! had never been offered. An owner whose piece was taken waits for it
//! (parked: the other worker ingests it without pausing, and had a head
//! start), then queues its batches behind its own open ones
//! (`Batcher::adopt`), so the body's points reach each backend in order.
//!
//! The answer is the one of ingesting the body alone. The piece's work is
//! used only when the first half's last point ended exactly where the piece
//! starts (a string or an escaped newline can carry a point past it) and
//! the piece had no bad line (whose error would give its line number within
//! the piece); otherwise its batches are dropped unsent and the owner
//! ingests the rest itself.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, Thread};
use std::time::SystemTime;

use super::write::{Ingest, IngestReport};
use crate::batch::{Batch, BatchKey, Batcher, Target};
use crate::route::{Router, SetId};

/// Bodies, or what is left of one, shorter than this are ingested by their
/// worker alone. About 1300 `cpu` lines: some 0.4 ms of a core's walk,
/// where waking another worker and waiting for it take tens of
/// microseconds.
pub const MIN_SHARED_BODY_BYTES: usize = 512 << 10;

/// A piece's states: offered, then either taken and later done by the
/// worker it was offered to, or taken back by its owner.
const OFFERED: u8 = 0;
const TAKEN: u8 = 1;
const DONE: u8 = 2;
const TAKEN_BACK: u8 = 3;

/// Where a worker's pieces can go.
pub trait Helpers {
    /// A worker reading or ingesting no write body now, if any and if the
    /// owner has no other body to go on with while it waits.
    fn idle_worker(&self) -> Option<usize>;
    /// Offers `piece` to `worker`, which ingests it with [`Piece::ingest`]
    /// unless the owner took it back first. An offer that never arrives
    /// (the worker has ended) is taken back.
    fn offer(&self, worker: usize, piece: Arc<Piece>);
}

/// What ingesting a body needs to share a piece of it.
#[derive(Clone, Copy)]
pub struct Sharing<'a> {
    /// The router the body is routed by, for the piece to share.
    pub router: &'a Arc<Router>,
    pub helpers: &'a dyn Helpers,
    /// Bodies shorter than this are not split ([`MIN_SHARED_BODY_BYTES`]).
    pub min_body_bytes: usize,
}

/// Whole points of a body, offered to another worker.
pub struct Piece {
    state: AtomicU8,
    bytes: BorrowedBytes,
    router: Arc<Router>,
    key: BatchKey,
    received: SystemTime,
    max_batch_bytes: usize,
    ingested: Mutex<Option<Ingested>>,
    /// The owner's thread, unparked when the piece is done.
    owner: Thread,
}

/// A piece's bytes: a stretch of a body that stays in place, unchanged,
/// while its owner waits in [`share_while`].
struct BorrowedBytes {
    start: *const u8,
    len: usize,
}

// SAFETY: the bytes are read only by the worker that took the piece,
// between taking it and marking it done, while its owner waits in
// `share_while` with them borrowed.
unsafe impl Send for BorrowedBytes {}
unsafe impl Sync for BorrowedBytes {}

/// What the worker that took a piece made of it: its batches (frozen, set
/// by set in order) and report (line numbers counted from the piece's
/// start).
pub struct Ingested {
    pub batches: Vec<(SetId, Arc<Batch>)>,
    pub report: IngestReport,
}

impl Piece {
    /// Run by the worker the piece was offered to: ingests it into batches
    /// of its own, unless its owner took it back first. Returns the points
    /// ingested.
    pub fn ingest(&self) -> usize {
        if self
            .state
            .compare_exchange(OFFERED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return 0;
        }
        // Marks the piece done even if ingesting panics: the owner waits
        // for that.
        let done = MarkDone(self);
        // SAFETY: the piece is taken, so its owner waits in `share_while`,
        // the bytes still borrowed, until `done` marks it done.
        let bytes = unsafe { std::slice::from_raw_parts(self.bytes.start, self.bytes.len) };
        let mut batcher = Batcher::new(self.router.set_count(), self.max_batch_bytes);
        batcher.begin_request();
        batcher.expect_bytes(bytes.len());
        let mut report = IngestReport::default();
        let target = self.key.target();
        Ingest::new(
            &self.router,
            &mut batcher,
            &mut Vec::new(),
            &target,
            Some(self.received),
            &mut report,
        )
        .all_points(bytes, 1);
        batcher.flush_all();
        let batches = batcher.take_ready().collect();
        let points = report.accepted + report.dropped;
        *self.lock() = Some(Ingested { batches, report });
        drop(done);
        points
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Ingested>> {
        // Only the taker writes it, once; a panic leaves `None`.
        self.ingested.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the piece back if it is still on offer (`None`); else waits
    /// until the worker that took it is done, and returns its work (once).
    fn settle(&self) -> Option<Ingested> {
        match self
            .state
            .compare_exchange(OFFERED, TAKEN_BACK, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(TAKEN_BACK) => return None,
            Err(_) => {}
        }
        while self.state.load(Ordering::Acquire) != DONE {
            // Unparked when done; a wake-up for anything else looks again.
            thread::park();
        }
        self.lock().take()
    }
}

struct MarkDone<'a>(&'a Piece);

impl Drop for MarkDone<'_> {
    fn drop(&mut self) {
        self.0.state.store(DONE, Ordering::Release);
        self.0.owner.unpark();
    }
}

/// Settles a piece when dropped, so its owner cannot return (or unwind)
/// past the borrow of its bytes before the worker that took it is done.
struct Settle(Arc<Piece>);

impl Drop for Settle {
    fn drop(&mut self) {
        self.0.settle();
    }
}

/// Offers `piece` (whole points of a body ingested for `target`, with
/// `received` for points without a timestamp, into batches of at most
/// `max_batch_bytes`) to an idle worker, if there is one, and runs
/// `own_part` meanwhile. Returns what `own_part` returned, and the piece's
/// work if another worker took it; `None` if none was idle, the piece was
/// taken back, or ingesting it failed: the caller then ingests it itself.
pub fn share_while<R>(
    sharing: Sharing<'_>,
    piece: &[u8],
    target: &Target<'_>,
    received: SystemTime,
    max_batch_bytes: usize,
    own_part: impl FnOnce() -> R,
) -> (R, Option<Ingested>) {
    let Some(worker) = sharing.helpers.idle_worker() else {
        return (own_part(), None);
    };
    let piece = Arc::new(Piece {
        state: AtomicU8::new(OFFERED),
        bytes: BorrowedBytes {
            start: piece.as_ptr(),
            len: piece.len(),
        },
        router: sharing.router.clone(),
        key: BatchKey::from_target(target),
        received,
        max_batch_bytes,
        ingested: Mutex::new(None),
        owner: thread::current(),
    });
    let settle = Settle(piece.clone());
    sharing.helpers.offer(worker, piece);
    let own = own_part();
    let ingested = settle.0.settle();
    // Settled: dropping it finds nothing more to wait for.
    drop(settle);
    (own, ingested)
}

/// Where the piece shared of `body` starts: just past the first newline from
/// the middle on, if the body has at least `min_bytes` and the piece would
/// not be empty.
pub fn split_point(body: &[u8], min_bytes: usize) -> Option<usize> {
    if body.len() < min_bytes {
        return None;
    }
    let middle = body.len() / 2;
    let newline = memchr::memchr(b'\n', &body[middle..])?;
    let split = middle + newline + 1;
    (split < body.len()).then_some(split)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::tests::TARGET;
    use crate::config::Config;
    use crossbeam_channel::{Receiver, Sender};

    fn router() -> Arc<Router> {
        let config = Config::from_toml(
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[routes]\n_default_ = [\"a\"]",
        )
        .unwrap();
        Arc::new(Router::new(&config))
    }

    /// Helpers: one thread ingesting every piece
    /// offered, or none when `idle` is false.
    struct ThreadHelper {
        idle: bool,
        pieces: Sender<Arc<Piece>>,
    }

    impl Helpers for ThreadHelper {
        fn idle_worker(&self) -> Option<usize> {
            self.idle.then_some(1)
        }
        fn offer(&self, _worker: usize, piece: Arc<Piece>) {
            self.pieces.send(piece).unwrap();
        }
    }

    /// Helpers with one thread (`idle` or not), and the pieces it is offered.
    fn thread_helper(idle: bool) -> (ThreadHelper, Receiver<Arc<Piece>>) {
        let (pieces, offered) = crossbeam_channel::unbounded();
        (ThreadHelper { idle, pieces }, offered)
    }

    fn sharing<'a>(router: &'a Arc<Router>, helpers: &'a dyn Helpers) -> Sharing<'a> {
        Sharing {
            router,
            helpers,
            min_body_bytes: 0,
        }
    }

    /// Ingests every piece offered, telling how many points each had.
    fn taker(pieces: Receiver<Arc<Piece>>, points: Sender<usize>) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            for piece in pieces {
                points.send(piece.ingest()).unwrap();
            }
        })
    }

    const RECEIVED: SystemTime = SystemTime::UNIX_EPOCH;

    /// Helpers: one that takes every piece the moment it is offered,
    /// before its owner goes on: pieces are always shared.
    pub(crate) struct Eager;

    impl Helpers for Eager {
        fn idle_worker(&self) -> Option<usize> {
            Some(1)
        }
        fn offer(&self, _worker: usize, piece: Arc<Piece>) {
            piece.ingest();
        }
    }

    #[test]
    fn a_piece_taken_by_another_worker_comes_back_ingested() {
        let router = router();
        let (helpers, offered) = thread_helper(true);
        let (points_sender, points) = crossbeam_channel::unbounded();
        let taker = taker(offered, points_sender);
        let sharing = sharing(&router, &helpers);
        let piece = b"m v=1 1\nm v=2\nbad\n";
        // The owner's own part lasts until the piece is ingested.
        let (taken_points, ingested) =
            share_while(sharing, piece, &TARGET, RECEIVED, 1 << 20, || {
                points.recv().unwrap()
            });
        drop(helpers);
        taker.join().unwrap();
        assert_eq!(taken_points, 3);
        let ingested = ingested.expect("taken");
        assert_eq!((ingested.report.accepted, ingested.report.dropped), (2, 1));
        assert!(
            ingested.report.errors.contains("(line 3)"),
            "{}",
            ingested.report.errors
        );
        let bodies: Vec<&[u8]> = ingested
            .batches
            .iter()
            .map(|(_, batch)| batch.body.as_ref())
            .collect();
        assert_eq!(bodies, [&b"m v=1 1\nm v=2 0\n"[..]]);
    }

    #[test]
    fn a_piece_not_taken_in_time_is_taken_back() {
        let router = router();
        let (helpers, receiver) = thread_helper(true);
        let sharing = sharing(&router, &helpers);
        let (own, ingested) = share_while(sharing, b"m v=1 1\n", &TARGET, RECEIVED, 1 << 20, || 7);
        assert_eq!(own, 7);
        assert!(ingested.is_none());
        // Taken back: the worker it was offered to leaves it alone.
        let offered = receiver.try_recv().expect("offered");
        assert_eq!(offered.ingest(), 0);
        assert!(offered.lock().is_none());
    }

    #[test]
    fn nothing_is_offered_without_an_idle_worker() {
        let router = router();
        let (helpers, receiver) = thread_helper(false);
        let sharing = sharing(&router, &helpers);
        let (own, ingested) = share_while(sharing, b"m v=1 1\n", &TARGET, RECEIVED, 1 << 20, || 7);
        assert_eq!((own, ingested.is_none()), (7, true));
        assert!(receiver.try_recv().is_err());
    }

    #[test]
    fn an_owner_unwinding_waits_for_the_worker_that_took_its_piece() {
        let router = router();
        let (helpers, receiver) = thread_helper(true);
        let piece_bytes = b"m v=1 1\n".to_vec();
        let (taken_sender, taken) = crossbeam_channel::bounded(0);
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The taker takes the piece, and is done with it 50 ms later.
        let taker = {
            let finished = finished.clone();
            thread::spawn(move || {
                let piece: Arc<Piece> = receiver.recv().unwrap();
                piece
                    .state
                    .compare_exchange(OFFERED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                    .unwrap();
                taken_sender.send(()).unwrap();
                thread::sleep(std::time::Duration::from_millis(50));
                finished.store(true, Ordering::Release);
                drop(MarkDone(&piece));
            })
        };
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let sharing = sharing(&router, &helpers);
            share_while(sharing, &piece_bytes, &TARGET, RECEIVED, 1 << 20, || {
                taken.recv().unwrap();
                panic!("the owner's own part failed");
            })
        }));
        assert!(unwound.is_err());
        // Unwinding, the owner still waited until the taker was done.
        assert!(finished.load(Ordering::Acquire));
        taker.join().unwrap();
    }

    #[test]
    fn the_split_is_past_the_first_newline_from_the_middle() {
        let mut body = b"m v=1 1\n".repeat(MIN_SHARED_BODY_BYTES / 8);
        assert_eq!(body.len(), MIN_SHARED_BODY_BYTES);
        let split = split_point(&body, MIN_SHARED_BODY_BYTES).unwrap();
        assert_eq!(split, MIN_SHARED_BODY_BYTES / 2 + 8);
        assert_eq!(body[split - 1], b'\n');
        body.truncate(MIN_SHARED_BODY_BYTES - 1);
        assert_eq!(split_point(&body, MIN_SHARED_BODY_BYTES), None);
        // A second half without a newline leaves nothing to share.
        let long_line = vec![b'x'; MIN_SHARED_BODY_BYTES];
        assert_eq!(split_point(&long_line, MIN_SHARED_BODY_BYTES), None);
        let mut ending = long_line.clone();
        ending.push(b'\n');
        assert_eq!(split_point(&ending, MIN_SHARED_BODY_BYTES), None);
    }
}
