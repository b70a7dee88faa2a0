//! Ingesting a plain write body while the rest of it still arrives.
//!
//! A large body comes in over many reads, and over a real link it takes
//! milliseconds to arrive. Whenever the connection would wait for more, it
//! hands the bytes so far to [`EarlyIngest::advance`], which validates,
//! routes and copies their whole points into batches of the request's own
//! ([`Partial`]), while they are still in the cache. When the body is
//! complete, `/write` commits: the batches of the points taken early join the
//! worker's frozen ones behind the open batches they follow, which are frozen
//! first (so a connection's writes reach each backend in order), and the rest
//! of the body is ingested into the worker's batches like any body. A body
//! that is cut off, times out or is refused commits nothing: its batches are
//! dropped unsent.
//!
//! The points, their order and the answer are those of ingesting the body at
//! the end; only where its batches start and when they are made differ.
//! Only bodies of at least half a batch (`write.max_batch_bytes`) are
//! ingested early: a smaller one would become a small batch of its own, where
//! the ordinary path lets it share a batch with the requests around it.
//! Ingestion starts only for a client already known (no PBKDF2 runs for it)
//! while the worker's queues have room, is dropped if they fill, and stops at
//! the first point without a timestamp (it gets the receive time once the
//! body is whole). Small bodies, those that arrive in one read, gzip and
//! chunked bodies take the ordinary path (`ingest`) throughout.

use std::sync::Arc;
use std::time::SystemTime;

use memchr::memrchr;

use super::auth;
use super::share::Sharing;
use super::write::{Ingest, IngestReport, WriteParams};
use crate::batch::{Batcher, Target};
use crate::generation::Generation;
use crate::route::Router;
use crate::server::request::{Head, Method};
use crate::server::worker::Worker;

/// Longest stretch of a body left for a later read: once a walk leaves more
/// waiting (a point that runs on over many lines, such as an unterminated
/// string), the rest of the body waits for the end. Walks happen as the
/// waiting stretch doubles, so this is noticed by twice the limit.
const MAX_PENDING_BYTES: usize = 64 << 10;

/// The part of one body ingested so far, into batches of its own.
pub struct Partial {
    batcher: Batcher,
    scratch: Vec<u8>,
    report: IngestReport,
    /// `body[..consumed]` is ingested; it ends where a point starts.
    consumed: usize,
    /// Number of the physical line starting at `consumed`.
    next_line: usize,
    /// How far the last walk looked: bytes after `consumed` it left waiting
    /// are walked again only once as many new ones have arrived, so no
    /// stretch is scanned more than a few times.
    walked: usize,
    /// Points taken before the body was complete.
    early_points: usize,
    /// The rest waits for [`commit_into`](Self::commit_into): a point
    /// without a timestamp (it gets the time the body is received), or too
    /// much pending.
    stopped: bool,
}

impl Partial {
    /// For a body of `body_bytes` bytes, batched as the worker would
    /// (`set_count` backend sets, `max_batch_bytes`).
    pub fn new(set_count: usize, max_batch_bytes: usize, body_bytes: usize) -> Partial {
        let mut batcher = Batcher::new(set_count, max_batch_bytes);
        batcher.begin_request();
        batcher.expect_bytes(body_bytes);
        Partial {
            batcher,
            scratch: Vec::new(),
            report: IngestReport::default(),
            consumed: 0,
            next_line: 1,
            walked: 0,
            early_points: 0,
            stopped: false,
        }
    }

    /// Ingests the whole points of `arrived` (the body's first bytes; a
    /// longer prefix of the same body on every call) past what earlier calls
    /// took.
    pub fn advance(&mut self, router: &Router, target: &Target<'_>, arrived: &[u8]) {
        if self.stopped {
            return;
        }
        // Only the bytes after the last walk can hold a newline not seen yet.
        let new = self.walked.max(self.consumed);
        let Some(last_newline) = memrchr(b'\n', &arrived[new..]) else {
            // Nothing more has ended: the point at `consumed` is still going.
            self.stopped = arrived.len() - self.consumed > MAX_PENDING_BYTES;
            return;
        };
        let end = new + last_newline + 1;
        if end - new < new - self.consumed {
            return;
        }
        let (before, first_line) = (self.report.accepted + self.report.dropped, self.next_line);
        let lines = &arrived[self.consumed..end];
        let (taken, next_line, needs_time) = self
            .ingest(router, target, None)
            .whole_points(lines, first_line);
        self.early_points += self.report.accepted + self.report.dropped - before;
        self.consumed += taken;
        self.next_line = next_line;
        self.walked = end;
        self.stopped = needs_time || arrived.len() - self.consumed > MAX_PENDING_BYTES;
    }

    /// Commits the body once it is whole: the batches of the points taken
    /// early go behind `worker`'s open batches they follow (frozen first,
    /// see [`Batcher::adopt`]), then the rest of `body` is ingested into
    /// `worker` like any body, points without a timestamp getting
    /// `received` (and a large rest maybe partly by an idle worker, with
    /// `sharing`). Returns the report for the whole body.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_into(
        mut self,
        router: &Router,
        target: &Target<'_>,
        worker: &mut Batcher,
        scratch: &mut Vec<u8>,
        received: SystemTime,
        body: &[u8],
        sharing: Option<Sharing<'_>>,
    ) -> IngestReport {
        self.batcher.flush_all();
        worker.begin_request();
        worker.expect_bytes(body.len() - self.consumed);
        for (set, batch) in self.batcher.take_ready() {
            worker.adopt(set, target, batch);
        }
        // The rest shares the worker's batches with the requests after it.
        Ingest::new(
            router,
            worker,
            scratch,
            target,
            Some(received),
            &mut self.report,
        )
        .sharing(sharing)
        .all_points(&body[self.consumed..], self.next_line);
        self.report
    }

    /// Ingestion into this body's own batches and report.
    fn ingest<'r, 'b>(
        &'r mut self,
        router: &'r Router,
        target: &'r Target<'r>,
        received: Option<SystemTime>,
    ) -> Ingest<'r, 'b> {
        Ingest::new(
            router,
            &mut self.batcher,
            &mut self.scratch,
            target,
            received,
            &mut self.report,
        )
    }

    /// Points taken before the body was complete, valid or not.
    pub fn early_points(&self) -> usize {
        self.early_points
    }
}

/// One connection's early ingestion of the request it is reading.
#[derive(Default)]
pub struct EarlyIngest(Option<Started>);

struct Started {
    /// The generation the points were routed by; the request commits them
    /// only if the worker still batches by it.
    generation: Arc<Generation>,
    params: WriteParams,
    partial: Partial,
}

impl EarlyIngest {
    /// Starts ingesting the body of `head` (`body` bytes) as it arrives if
    /// it is a plain write of at least half a batch, from a client already
    /// known to be allowed to write (no PBKDF2 verification runs here), with
    /// valid parameters (an invalid one is answered by `/write` as usual),
    /// while `worker` has room in its backends' queues (a write that would
    /// wait for room must not hold batches meanwhile). Otherwise forgets any
    /// earlier request.
    pub fn begin(&mut self, worker: &Worker, head: &Head, buf: &[u8], body: usize) {
        self.0 = None;
        let generation = worker.generation();
        let max_batch_bytes = generation.config.write.max_batch_bytes.as_usize();
        let plain_write = head.method == Method::Post && !head.gzip && head.path(buf) == "/write";
        if !plain_write
            || body < max_batch_bytes / 2
            || !auth::is_known_writer(&generation, head, buf)
            || worker.state.borrow().dispatcher.has_overflow()
        {
            return;
        }
        let Ok(mut params) = WriteParams::parse(head.query(buf), head.authorization(buf)) else {
            return;
        };
        if generation.users.is_enabled() {
            // As in `/write`: the client's credentials are fluxgate's own.
            params.authorization = None;
        }
        let partial = Partial::new(generation.router.set_count(), max_batch_bytes, body);
        self.0 = Some(Started {
            generation,
            params,
            partial,
        });
    }

    /// Whether the current request's body is being ingested as it arrives.
    pub fn is_active(&self) -> bool {
        self.0.is_some()
    }

    /// Ingests the whole points of `arrived`, the body so far. If the
    /// worker's queues have filled meanwhile, drops what was ingested early
    /// instead: the body waits for room at the end, holding no batches.
    pub fn advance(&mut self, worker: &Worker, arrived: &[u8]) {
        if self.0.is_some() && worker.state.borrow().dispatcher.has_overflow() {
            self.0 = None;
        }
        if let Some(started) = &mut self.0 {
            let target = started.params.target();
            let router = &started.generation.router;
            started.partial.advance(router, &target, arrived);
        }
    }

    /// The early ingestion of the current request, if the worker still
    /// batches by the generation it was routed by (`current`). Either way,
    /// nothing is left for the next request.
    pub fn take(&mut self, current: &Arc<Generation>) -> Option<Committable> {
        let started = self.0.take()?;
        Arc::ptr_eq(&started.generation, current).then_some(Committable(started))
    }

    /// Drops what the current request ingested early, unsent.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

/// A request's early ingestion, ready to be finished once its body is whole.
pub struct Committable(Started);

impl Committable {
    /// Commits the request (see [`Partial::commit_into`]) into the worker's
    /// batches; returns the report and how many points were ingested early.
    pub fn commit(
        self,
        router: &Router,
        worker: &mut Batcher,
        scratch: &mut Vec<u8>,
        received: SystemTime,
        body: &[u8],
        sharing: Option<Sharing<'_>>,
    ) -> (IngestReport, usize) {
        let Started {
            params, partial, ..
        } = self.0;
        let early = partial.early_points();
        let target = params.target();
        let report = partial.commit_into(router, &target, worker, scratch, received, body, sharing);
        (report, early)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::TARGET;
    use crate::config::Config;

    fn router() -> Router {
        let config = Config::from_toml(
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[routes]\n_default_ = [\"a\"]",
        )
        .unwrap();
        Router::new(&config)
    }

    /// Commits into a worker batcher of its own, and freezes what is open.
    fn commit(
        partial: Partial,
        router: &Router,
        received: SystemTime,
        body: &[u8],
    ) -> (IngestReport, Batcher) {
        let mut worker = Batcher::new(1, 1 << 20);
        let report = partial.commit_into(
            router,
            &TARGET,
            &mut worker,
            &mut Vec::new(),
            received,
            body,
            None,
        );
        worker.flush_all();
        (report, worker)
    }

    /// Feeds `body` 4 KiB more at a time until early ingestion stops, and
    /// returns how much had arrived by then (failing past `limit`).
    fn bytes_until_stopped(
        partial: &mut Partial,
        router: &Router,
        body: &[u8],
        limit: usize,
    ) -> usize {
        let mut read = 0;
        while !partial.stopped {
            read += 4096;
            assert!(read <= limit, "still going after {read} bytes");
            partial.advance(router, &TARGET, &body[..read]);
        }
        read
    }

    #[test]
    fn whole_points_are_taken_as_they_arrive_and_the_last_one_waits() {
        let router = router();
        let body = b"m v=1 1\nm v=2 2\nm v=3 3\n";
        let mut partial = Partial::new(1, 1 << 20, body.len());
        let received = SystemTime::now();
        partial.advance(&router, &TARGET, &body[..12]);
        // "m v=1 1" ends at the last byte so far, where a point the read cut
        // short (inside a string) would end too: it waits.
        assert_eq!((partial.early_points(), partial.consumed), (0, 0));
        partial.advance(&router, &TARGET, &body[..20]);
        assert_eq!((partial.early_points(), partial.consumed), (1, 8));
        partial.advance(&router, &TARGET, body);
        assert_eq!((partial.early_points(), partial.consumed), (2, 16));
        let (report, mut batcher) = commit(partial, &router, received, body);
        assert_eq!(report.accepted, 3);
        // The two points taken early in a batch of their own; the last one
        // in the worker's batch, which later requests share.
        let batches: Vec<_> = batcher.take_ready().map(|(_, b)| b.lines).collect();
        assert_eq!(batches, [2, 1]);
    }

    #[test]
    fn a_line_growing_past_the_pending_limit_stops_early_ingestion() {
        let router = router();
        let mut body = b"m v=1 1\nm v=2 2\nm s=\"".to_vec();
        body.resize(body.len() + 3 * MAX_PENDING_BYTES, b'x');
        let mut partial = Partial::new(1, 1 << 20, body.len());
        bytes_until_stopped(&mut partial, &router, &body, 2 * MAX_PENDING_BYTES);
        assert_eq!((partial.early_points(), partial.consumed), (1, 8));
    }

    #[test]
    fn a_point_without_a_timestamp_waits_for_the_receive_time() {
        let router = router();
        let body = b"m v=1 1\nm v=2\nm v=3 3\nm v=4 4\n";
        let mut partial = Partial::new(1, 1 << 20, body.len());
        partial.advance(&router, &TARGET, body);
        // InfluxDB stamps such a point when the body is whole: so does the
        // end, and everything after it waits too, to stay in order.
        assert_eq!((partial.early_points(), partial.consumed), (1, 8));
        assert!(partial.stopped);
        let received = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7);
        let (report, mut batcher) = commit(partial, &router, received, body);
        assert_eq!(report.accepted, 4);
        let written: Vec<u8> = batcher
            .take_ready()
            .flat_map(|(_, batch)| batch.body.to_vec())
            .collect();
        assert_eq!(written, b"m v=1 1\nm v=2 7000000000\nm v=3 3\nm v=4 4\n");
    }

    #[test]
    fn a_point_running_on_past_the_pending_limit_stops_early_ingestion() {
        let router = router();
        // An unterminated string swallows every later line.
        let mut body = b"m v=1 1\nm s=\"".to_vec();
        while body.len() < 5 * MAX_PENDING_BYTES {
            body.extend_from_slice(b"x v=1 1\n");
        }
        let mut partial = Partial::new(1, 1 << 20, body.len());
        bytes_until_stopped(&mut partial, &router, &body, 4 * MAX_PENDING_BYTES);
        assert_eq!((partial.early_points(), partial.consumed), (1, 8));
        let received = SystemTime::now();
        // The rest is ingested at the end, as without early ingestion.
        let (report, _) = commit(partial, &router, received, &body);
        assert_eq!((report.accepted, report.dropped), (1, 1));
    }
}
