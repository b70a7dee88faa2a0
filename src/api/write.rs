//! `POST /write`: parameters, admission, then decode -> scan -> route -> batch.
//!
//! The hot path is [`ingest`]: it walks the body in place and copies each valid
//! line once, into its batch. It allocates nothing per line; error messages are
//! built only for rejected lines, and at most `MAX_REPORTED_ERRORS` of them.
//!
//! InfluxDB's partial-write semantics are kept: valid lines are written even when
//! others in the same body are rejected, and the answer says which were dropped
//! ([handler.go](https://github.com/influxdata/influxdb/blob/v1.8.10/services/httpd/handler.go#L1029-L1037)).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::auth::Access;
use super::early::EarlyIngest;
use super::share::{self, Sharing};
use crate::batch::{Batch, Batcher, Target};
use crate::config::AckMode;
use crate::error::ApiError;
use crate::generation::Generation;
use crate::lp::line::{parse_line, unescape_measurement};
use crate::lp::precision::Precision;
use crate::lp::scan::scan_lines;
use crate::route::{Router, SetId};
use crate::server::admission::BodyPass;
use crate::server::handoff::OtherWorkers;
use crate::server::request::{Head, Method};
use crate::server::response::Response;
use crate::server::worker::{Worker, WorkerState};
use crate::settle;
use crate::urlencoded;

/// Rejected lines described in one answer; the rest are only counted.
const MAX_REPORTED_ERRORS: usize = 10;
/// Bytes of a rejected line quoted in its error.
const MAX_QUOTED_LINE_BYTES: usize = 256;
/// How often a write waiting for full backend queues looks again.
const ADMISSION_POLL: Duration = Duration::from_millis(1);

/// The query parameters of a write, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteParams {
    pub db: String,
    pub rp: Option<String>,
    pub precision: Precision,
    /// The `Authorization` header to send to backends: the client's own header,
    /// or Basic built from its `u` and `p` parameters.
    pub authorization: Option<String>,
}

impl WriteParams {
    /// # Errors
    /// `ApiError::BadParameter` with InfluxDB's message.
    pub fn parse(query: &str, authorization: Option<&str>) -> Result<WriteParams, ApiError> {
        let mut db = None;
        let mut rp = None;
        let mut precision = Precision::Nanoseconds;
        let mut user = None;
        let mut password = None;
        for (key, value) in urlencoded::pairs(query) {
            let decoded = || {
                urlencoded::decode(value).ok_or_else(|| {
                    ApiError::BadParameter(format!("invalid encoding of parameter {key:?}"))
                })
            };
            match key {
                "db" => db = Some(decoded()?),
                "rp" => rp = Some(decoded()?).filter(|rp: &String| !rp.is_empty()),
                "precision" => {
                    let value = decoded()?;
                    precision = Precision::parse(&value).ok_or_else(|| {
                        ApiError::BadParameter(format!(
                            "invalid precision {value:?}: use one of n, ns, u, µ, ms, s, m, h"
                        ))
                    })?;
                }
                "u" => user = Some(decoded()?),
                "p" => password = Some(decoded()?),
                _ => {}
            }
        }
        let db = db
            .filter(|db| !db.is_empty())
            .ok_or_else(|| ApiError::BadParameter("database is required".to_owned()))?;
        let authorization = super::backend_authorization(authorization, user, password);
        Ok(WriteParams {
            db,
            rp,
            precision,
            authorization,
        })
    }

    pub fn target(&self) -> Target<'_> {
        Target {
            db: &self.db,
            rp: self.rp.as_deref(),
            precision: self.precision,
            authorization: self.authorization.as_deref(),
        }
    }
}

/// Handles `POST /write`. `early` holds what the connection ingested of
/// `body` while it arrived (see [`super::early`]); `pass` is dropped once the
/// body is ingested, before a durable write waits for its acks.
pub async fn write(
    worker: &Worker,
    generation: &Generation,
    head: &Head,
    buf: &[u8],
    body: &[u8],
    early: &mut EarlyIngest,
    pass: Option<BodyPass<'_>>,
) -> Response {
    match try_write(worker, generation, head, buf, body, early, pass).await {
        Ok(()) => Response::no_content(),
        Err(e) => e.response(),
    }
}

/// `generation` is the one the request started with (its ack mode and users);
/// lines are routed and batched by the worker's, which is the same unless a
/// reload lands while the request waits for admission.
async fn try_write(
    worker: &Worker,
    generation: &Generation,
    head: &Head,
    buf: &[u8],
    body: &[u8],
    early: &mut EarlyIngest,
    pass: Option<BodyPass<'_>>,
) -> Result<(), ApiError> {
    let mut params = WriteParams::parse(head.query(buf), head.authorization(buf))?;
    if generation.users.is_enabled() {
        // The client's credentials are fluxgate's own, not the backends'.
        params.authorization = None;
    }
    worker
        .stats
        .bytes_received
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    admit(worker, generation.config.write.queue_timeout).await?;
    let received = SystemTime::now();
    let report = {
        let state = &mut *worker.state.borrow_mut();
        let WorkerState {
            generation,
            batcher,
            gunzip,
            decompressed,
            measurement,
            ..
        } = state;
        let shared = &worker.shared;
        let helpers = OtherWorkers {
            from: worker.id,
            handoffs: &shared.handoffs,
            workers: &shared.workers,
        };
        let sharing = Some(Sharing {
            router: &generation.router,
            helpers: &helpers,
            min_body_bytes: share::MIN_SHARED_BODY_BYTES,
        });
        let (report, early_points) = match early.take(generation) {
            Some(early) => early.commit(
                &generation.router,
                batcher,
                measurement,
                received,
                body,
                sharing,
            ),
            None => {
                let body = if head.gzip {
                    gunzip.decompress(
                        body,
                        decompressed,
                        generation.config.server.max_decompressed_bytes.as_usize(),
                    )?;
                    &decompressed[..]
                } else {
                    body
                };
                let report = ingest(
                    &generation.router,
                    batcher,
                    measurement,
                    &params.target(),
                    body,
                    received,
                    sharing,
                );
                (report, 0)
            }
        };
        let stats = &worker.stats;
        stats
            .lines_received
            .fetch_add((report.accepted + report.dropped) as u64, Ordering::Relaxed);
        stats
            .lines_invalid
            .fetch_add(report.dropped as u64, Ordering::Relaxed);
        stats
            .lines_ingested_early
            .fetch_add(early_points as u64, Ordering::Relaxed);
        stats
            .lines_shared
            .fetch_add(report.shared as u64, Ordering::Relaxed);
        if decompressed.capacity() > RETAINED_DECOMPRESSED_BYTES {
            *decompressed = Vec::new();
        }
        report
    };
    // Ingested: the line may let in another body.
    drop(pass);
    if generation.config.write.ack == AckMode::Accepted {
        worker.dispatch_ready();
        return report.into_result();
    }
    // Durable: this request's batches leave now and it waits until every
    // backend has them (written or spooled).
    worker.state.borrow_mut().batcher.flush_request();
    let mut frozen = Vec::new();
    worker.dispatch_ready_into(Some(&mut frozen));
    wait_until_settled(worker, &frozen, generation.config.write.ack_timeout).await?;
    report.into_result()
}

/// Waits until every backend settled `batches`: woken by the writer that
/// settles the last of them (see [`crate::settle`]), or by the backstop.
async fn wait_until_settled(
    worker: &Worker,
    batches: &[Arc<Batch>],
    timeout: Duration,
) -> Result<(), ApiError> {
    for batch in batches {
        batch.watch(worker.settle.poke());
    }
    let started = Instant::now();
    while !batches.iter().all(|b| b.is_settled()) {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(ApiError::NotDurable { timeout });
        }
        monoio::select! {
            _ = worker.settle.next() => {},
            _ = monoio::time::sleep(settle::BACKSTOP.min(left)) => {},
        }
    }
    match batches.iter().find_map(|b| b.refusal()) {
        Some(refusal) => Err(ApiError::BackendRefused(refusal.clone())),
        None => Ok(()),
    }
}

/// A worker keeps at most this much gunzip space between requests.
const RETAINED_DECOMPRESSED_BYTES: usize = 16 << 20;

/// Bodies a worker reads at once for writes let in from the line: while a
/// backend stalls, the writes waiting hold no bodies, and the ones let in at
/// most this many.
const MAX_BODIES_FROM_LINE: usize = 4;

/// Runs before a request's body is read. A write whose credentials are
/// refused is refused here; one that passes waits in line while this
/// worker's writer queues are full (see [`crate::server::admission`]), so the
/// writes a slow backend holds back hold no bodies. Other requests pass. The
/// pass is to be held until the body is ingested (not through a durable
/// write's wait for acks, which needs no more room).
///
/// # Errors
/// What [`super::auth::authorize`] refuses with, and `ApiError::QueueFull`
/// after `write.queue_timeout`, all with the body unread.
pub async fn admit_body<'w>(
    worker: &'w Worker,
    head: &Head,
    buf: &[u8],
) -> Result<Option<BodyPass<'w>>, ApiError> {
    if head.method != Method::Post || head.path(buf) != "/write" {
        return Ok(None);
    }
    let generation = worker.generation();
    // Checked again by the handler, then from the cache of verifications.
    super::auth::authorize(&generation, head, buf, Access::User).await?;
    let line = &worker.admission;
    if line.is_empty() && worker.state.borrow_mut().drain_overflow() {
        return Ok(Some(line.body_pass()));
    }
    let queue_timeout = generation.config.write.queue_timeout;
    let deadline = Instant::now() + queue_timeout;
    // Leaving the line (let in or not) hands the turn to the next write.
    let ticket = line.join();
    let let_in = async {
        monoio::time::timeout(queue_timeout, ticket.first())
            .await
            .map_err(|_| queue_full(worker))?;
        wait_until(deadline, || {
            line.bodies_in_flight() < MAX_BODIES_FROM_LINE
                && worker.state.borrow_mut().drain_overflow()
        })
        .await
        .map_err(|()| queue_full(worker))
    };
    // A write still waiting when shutdown starts is answered at once, its body
    // unread: its client can retry elsewhere now rather than be cut off when
    // the grace period ends.
    monoio::select! {
        let_in = let_in => let_in?,
        _ = worker.stopping.wait() => {
            return Err(ApiError::Unavailable("fluxgate is shutting down".into()))
        }
    }
    Ok(Some(line.body_pass()))
}

/// Waits with the body read, just before it is ingested, while batches of
/// this worker wait for full writer queues: a write is only ingested once
/// everything accepted before it has a place in a queue, so a slow or down
/// backend pushes back on clients instead of growing memory. Only writes let
/// in before the queues filled again wait here, each looking on its own.
async fn admit(worker: &Worker, queue_timeout: Duration) -> Result<(), ApiError> {
    wait_until(Instant::now() + queue_timeout, || {
        worker.state.borrow_mut().drain_overflow()
    })
    .await
    .map_err(|()| queue_full(worker))
}

/// Looks every [`ADMISSION_POLL`] until `ready`; `Err` at `deadline`.
async fn wait_until(deadline: Instant, mut ready: impl FnMut() -> bool) -> Result<(), ()> {
    while !ready() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(());
        }
        monoio::time::sleep(ADMISSION_POLL.min(left)).await;
    }
    Ok(())
}

fn queue_full(worker: &Worker) -> ApiError {
    ApiError::QueueFull {
        backends: worker.state.borrow().blocked_backends().join(", "),
    }
}

/// What [`ingest`] did with a body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestReport {
    pub accepted: usize,
    pub dropped: usize,
    /// Of `accepted`, points ingested by another worker (see [`super::share`]).
    pub shared: usize,
    /// InfluxDB-style descriptions of the first rejected lines, one per line.
    pub errors: String,
}

impl IngestReport {
    fn reject(&mut self, line_number: usize, describe: impl FnOnce(&mut String)) {
        self.dropped += 1;
        if self.dropped > MAX_REPORTED_ERRORS {
            return;
        }
        if !self.errors.is_empty() {
            self.errors.push('\n');
        }
        describe(&mut self.errors);
        let _ = write!(self.errors, " (line {line_number})");
    }

    /// The answer InfluxDB would give: nothing, all lines rejected, or a partial write.
    ///
    /// # Errors
    /// `ApiError::LinesRejected` when any line was dropped.
    pub fn into_result(mut self) -> Result<(), ApiError> {
        if self.dropped == 0 {
            return Ok(());
        }
        if self.dropped > MAX_REPORTED_ERRORS {
            let _ = write!(
                self.errors,
                "\n({} more lines rejected)",
                self.dropped - MAX_REPORTED_ERRORS
            );
        }
        if self.accepted == 0 {
            return Err(ApiError::LinesRejected(self.errors));
        }
        Err(ApiError::LinesRejected(format!(
            "partial write: {} dropped={}",
            self.errors, self.dropped
        )))
    }
}

/// Scans, validates and routes every line of `body`, appending the good ones to
/// their batches with `received` as the timestamp of lines that have none.
/// `scratch` holds unescaped measurement names. With `sharing`, the second
/// half of a large body may be ingested by an idle worker meanwhile.
pub fn ingest(
    router: &Router,
    batcher: &mut Batcher,
    scratch: &mut Vec<u8>,
    target: &Target<'_>,
    body: &[u8],
    received: SystemTime,
    sharing: Option<Sharing<'_>>,
) -> IngestReport {
    batcher.begin_request();
    batcher.expect_bytes(body.len());
    let mut report = IngestReport::default();
    Ingest::new(
        router,
        batcher,
        scratch,
        target,
        Some(received),
        &mut report,
    )
    .sharing(sharing)
    .all_points(body, 1);
    report
}

/// Lines on their way into batches: one request's constants, and its report.
pub(super) struct Ingest<'r, 'b> {
    router: &'r Router,
    batcher: &'r mut Batcher,
    scratch: &'r mut Vec<u8>,
    target: &'r Target<'r>,
    /// " <receive time>" for lines without a timestamp; `None` before the
    /// body is whole, when such lines must wait (they get the time the body
    /// was received, as InfluxDB gives them).
    suffix: Option<([u8; 24], usize)>,
    now: Instant,
    max_line_bytes: usize,
    /// Consecutive lines nearly always share a measurement: route it once.
    last_route: Option<(&'b [u8], Option<SetId>)>,
    report: &'r mut IngestReport,
    received: Option<SystemTime>,
    /// Where a large body's second half may be shared (see [`super::share`]).
    sharing: Option<Sharing<'r>>,
}

impl<'r, 'b> Ingest<'r, 'b> {
    /// `received`: the time given to points without a timestamp, or `None`
    /// while it is not known (such points then wait, see `whole_points`).
    pub(super) fn new(
        router: &'r Router,
        batcher: &'r mut Batcher,
        scratch: &'r mut Vec<u8>,
        target: &'r Target<'r>,
        received: Option<SystemTime>,
        report: &'r mut IngestReport,
    ) -> Self {
        // Formatted once per call, not per line.
        let suffix = received.map(|received| {
            let mut suffix = [0u8; 24];
            let mut cursor = &mut suffix[..];
            let _ = write!(cursor, " {}", target.precision.timestamp(received));
            let len = 24 - cursor.len();
            (suffix, len)
        });
        Ingest {
            router,
            max_line_bytes: batcher.max_line_bytes(),
            batcher,
            scratch,
            target,
            suffix,
            now: Instant::now(),
            last_route: None,
            report,
            received,
            sharing: None,
        }
    }

    /// Shares the second half of a large body with an idle worker, if there
    /// is one, in [`all_points`](Self::all_points).
    pub(super) fn sharing(mut self, sharing: Option<Sharing<'r>>) -> Self {
        self.sharing = sharing;
        self
    }

    /// Ingests every point of `lines`, whose first physical line is line
    /// `first_line` of the body, sharing the second half of a large one if
    /// [`sharing`](Self::sharing) allows. Needs the receive time.
    pub(super) fn all_points(&mut self, lines: &'b [u8], first_line: usize) {
        let shared = match (self.sharing, self.received) {
            (Some(sharing), Some(received)) => share::split_point(lines, sharing.min_body_bytes)
                .map(|split| (sharing, received, split)),
            _ => None,
        };
        let Some((sharing, received, split)) = shared else {
            return self.points_from(lines, 0, first_line);
        };
        let target = self.target;
        let max_batch_bytes = self.max_line_bytes;
        let ((end, end_line), piece) = share::share_while(
            sharing,
            &lines[split..],
            target,
            received,
            max_batch_bytes,
            || self.points_before(lines, split, first_line),
        );
        match piece {
            // The first half ended where the piece starts, and the piece's
            // lines were all good: its batches go behind this half's.
            Some(piece) if end == split && piece.report.dropped == 0 => {
                for (set, batch) in piece.batches {
                    self.batcher.adopt(set, target, batch);
                }
                self.report.accepted += piece.report.accepted;
                self.report.shared += piece.report.accepted;
            }
            _ => self.points_from(lines, end, end_line),
        }
    }

    /// Ingests the points of `lines` from `start`, where physical line
    /// `line` of the body starts.
    fn points_from(&mut self, lines: &'b [u8], start: usize, line: usize) {
        for (number, point) in scan_lines(&lines[start..]) {
            self.point(line + number - 1, point);
        }
    }

    /// Ingests the points of `lines` that start before `end`; returns where
    /// the next one starts (past `end` if a point ran on over it) and the
    /// number of its physical line.
    fn points_before(&mut self, lines: &'b [u8], end: usize, first_line: usize) -> (usize, usize) {
        let mut points = scan_lines(lines);
        while points.position().0 < end {
            let before = points.clone();
            let Some((number, point)) = points.next() else {
                break;
            };
            // Blank lines skipped on the way may have led past `end`.
            if point.as_ptr() as usize - lines.as_ptr() as usize >= end {
                points = before;
                break;
            }
            self.point(first_line + number - 1, point);
        }
        let (offset, line) = points.position();
        (offset, first_line + line - 1)
    }

    /// Ingests the points of `lines` (the body's first physical line there is
    /// line `first_line`) up to the first that may continue past it (its
    /// newline is the last byte, or a string is still open) or lacks a
    /// timestamp while the receive time is not known yet. Returns where that
    /// point starts, the number of its physical line, and whether it was one
    /// without a timestamp (then nothing more can be taken before the end).
    pub(super) fn whole_points(
        &mut self,
        lines: &'b [u8],
        first_line: usize,
    ) -> (usize, usize, bool) {
        let mut points = scan_lines(lines);
        let mut needs_time = false;
        loop {
            let before = points.clone();
            let Some((number, line)) = points.next() else {
                break;
            };
            let whole = points.position().0 < lines.len();
            if !whole || !self.point(first_line + number - 1, line) {
                needs_time = whole;
                points = before;
                break;
            }
        }
        let (offset, line) = points.position();
        (offset, first_line + line - 1, needs_time)
    }

    /// Validates, routes and batches one point, or reports why not. Returns
    /// false, having done nothing, for a valid point without a timestamp
    /// while the receive time is not known.
    fn point(&mut self, line_number: usize, line: &'b [u8]) -> bool {
        let parsed = match parse_line(line) {
            Ok(parsed) => parsed,
            Err(reason) => {
                self.report.reject(line_number, |out| {
                    let _ = write!(out, "unable to parse '{}': {reason}", Quoted(line));
                });
                return true;
            }
        };
        let suffix_len = match (parsed.has_timestamp, &self.suffix) {
            (true, _) => 0,
            (false, Some((_, len))) => *len,
            (false, None) => return false,
        };
        if line.len() + suffix_len + 1 > self.max_line_bytes {
            let max_line_bytes = self.max_line_bytes;
            self.report.reject(line_number, |out| {
                let _ = write!(
                    out,
                    "unable to parse '{}': line longer than write.max_batch_bytes ({max_line_bytes} bytes)",
                    Quoted(line)
                );
            });
            return true;
        }
        let raw_measurement = &line[..parsed.measurement_end];
        let Some(set) = self.route(raw_measurement, parsed.measurement_escaped) else {
            self.report.reject(line_number, |out| {
                let _ = write!(
                    out,
                    "no route for measurement '{}': add a route for it or a _default_ route",
                    Quoted(raw_measurement)
                );
            });
            return true;
        };
        let suffix = self
            .suffix
            .as_ref()
            .map_or(&[][..], |(s, _)| &s[..suffix_len]);
        self.batcher
            .append(set, self.target, line, suffix, self.now);
        self.report.accepted += 1;
        true
    }

    fn route(&mut self, raw_measurement: &'b [u8], escaped: bool) -> Option<SetId> {
        match self.last_route {
            Some((previous, set)) if previous == raw_measurement => set,
            _ => {
                let set = if escaped {
                    self.scratch.clear();
                    unescape_measurement(raw_measurement, self.scratch);
                    self.router.route(self.scratch)
                } else {
                    self.router.route(raw_measurement)
                };
                self.last_route = Some((raw_measurement, set));
                set
            }
        }
    }
}

/// A line quoted in an error message: lossy UTF-8, cut at `MAX_QUOTED_LINE_BYTES`.
struct Quoted<'a>(&'a [u8]);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.len() > MAX_QUOTED_LINE_BYTES {
            write!(
                f,
                "{}...",
                String::from_utf8_lossy(&self.0[..MAX_QUOTED_LINE_BYTES])
            )
        } else {
            write!(f, "{}", String::from_utf8_lossy(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::early::Partial;
    use crate::batch::tests::TARGET;
    use crate::config::Config;

    fn router(routes: &str) -> Arc<Router> {
        let config = Config::from_toml(&format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[[backends]]\nname = \"b\"\nurl = \"http://h:2\"\n[routes]\n{routes}"
        ))
        .unwrap();
        Arc::new(Router::new(&config))
    }

    /// The report and the batches (set, body, lines) of ingesting `body`:
    /// at the end, or, with `reads` (lengths of the body so far), partly
    /// while it arrives and the rest at the end; with `share`, whatever is
    /// left at the end split in two and its second half shared.
    fn ingest_after_reads(
        router: &Arc<Router>,
        body: &[u8],
        reads: Option<&[usize]>,
        share: bool,
        precision: Precision,
        max_batch_bytes: usize,
    ) -> (IngestReport, Vec<(u32, String, usize)>) {
        let sharing = share.then_some(Sharing {
            router,
            helpers: &share::tests::Eager,
            min_body_bytes: 0,
        });
        let target = Target {
            precision,
            ..TARGET
        };
        let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut batcher = Batcher::new(router.set_count(), max_batch_bytes);
        let mut scratch = Vec::new();
        let report = match reads {
            None => ingest(
                router,
                &mut batcher,
                &mut scratch,
                &target,
                body,
                received,
                sharing,
            ),
            Some(reads) => {
                let mut partial = Partial::new(router.set_count(), max_batch_bytes, body.len());
                for &read in reads {
                    partial.advance(router, &target, &body[..read]);
                }
                partial.commit_into(
                    router,
                    &target,
                    &mut batcher,
                    &mut scratch,
                    received,
                    body,
                    sharing,
                )
            }
        };
        batcher.flush_all();
        let batches = batcher
            .take_ready()
            .map(|(set, batch)| {
                let text = String::from_utf8_lossy(batch.body.as_ref()).into_owned();
                (set.0, text, batch.lines)
            })
            .collect();
        (report, batches)
    }

    /// Per set, its batches' lines in order and how many: what a backend of
    /// the set receives, whatever the batch boundaries.
    fn per_set(
        batches: &[(u32, String, usize)],
    ) -> std::collections::BTreeMap<u32, (String, usize)> {
        let mut sets = std::collections::BTreeMap::<u32, (String, usize)>::new();
        for (set, text, lines) in batches {
            let entry = sets.entry(*set).or_default();
            entry.0.push_str(text);
            entry.1 += lines;
        }
        sets
    }

    /// Ingests `body` and returns the report and the batches' bodies per set,
    /// after checking that ingesting it partly while it arrives, whatever the
    /// reads, and sharing half of what is left at the end give the answer,
    /// and each backend the lines in the order, of ingesting it at the end.
    fn run(
        router: &Arc<Router>,
        body: &str,
        precision: Precision,
    ) -> (IngestReport, Vec<(u32, String)>) {
        let body = body.as_bytes();
        let at_the_end = ingest_after_reads(router, body, None, false, precision, 1 << 20);
        for read in 0..=body.len() {
            for share in [false, true] {
                let read = [read];
                let reads = (read[0] > 0 || !share).then_some(&read[..]);
                let other = ingest_after_reads(router, body, reads, share, precision, 1 << 20);
                assert_eq!(
                    IngestReport {
                        shared: 0,
                        ..other.0
                    },
                    at_the_end.0,
                    "up to byte {read:?}, sharing {share}"
                );
                assert_eq!(
                    per_set(&other.1),
                    per_set(&at_the_end.1),
                    "up to byte {read:?}, sharing {share}"
                );
            }
        }
        let (report, batches) = at_the_end;
        let batches = batches
            .into_iter()
            .map(|(set, body, _)| (set, body))
            .collect();
        (report, batches)
    }

    #[test]
    fn lines_without_timestamp_get_the_receive_time_in_the_request_precision() {
        let r = router("_default_ = [\"a\"]");
        let (report, batches) = run(&r, "cpu v=1\ncpu v=2 5\n", Precision::Seconds);
        assert_eq!(report.accepted, 2);
        assert_eq!(
            batches,
            vec![(0, "cpu v=1 1700000000\ncpu v=2 5\n".to_owned())]
        );
        let (_, batches) = run(&r, "cpu v=1", Precision::Milliseconds);
        assert_eq!(batches, vec![(0, "cpu v=1 1700000000000\n".to_owned())]);
    }

    #[test]
    fn lines_are_split_by_route_including_escaped_measurements() {
        let r = router("_default_ = [\"a\", \"b\"]\ncpu = [\"a\"]\n\"my mem\" = [\"b\"]");
        let (report, batches) = run(
            &r,
            "cpu v=1 1\nmy\\ mem v=2 2\ndisk v=3 3\ncpu_x v=4 4\n",
            Precision::Nanoseconds,
        );
        assert_eq!(report.dropped, 0);
        let cpu = r.route(b"cpu").unwrap().0;
        let mem = r.route(b"my mem").unwrap().0;
        let both = r.route(b"disk").unwrap().0;
        let mut expected = vec![
            (cpu, "cpu v=1 1\ncpu_x v=4 4\n".to_owned()),
            (mem, "my\\ mem v=2 2\n".to_owned()),
            (both, "disk v=3 3\n".to_owned()),
        ];
        expected.sort();
        let mut batches = batches;
        batches.sort();
        assert_eq!(batches, expected);
    }

    #[test]
    fn bad_lines_are_reported_and_good_lines_kept() {
        let r = router("cpu = [\"a\"]");
        let (report, batches) = run(
            &r,
            "cpu v=1 1\ncpu\n\ndisk v=1 1\ncpu v=2 2\n",
            Precision::Nanoseconds,
        );
        assert_eq!(batches, vec![(0, "cpu v=1 1\ncpu v=2 2\n".to_owned())]);
        let error = report.into_result().unwrap_err().to_string();
        assert_eq!(
            error,
            "partial write: unable to parse 'cpu': missing fields (line 2)\n\
             no route for measurement 'disk': add a route for it or a _default_ route (line 4) dropped=2"
        );
    }

    #[test]
    fn all_lines_bad_is_not_a_partial_write() {
        let r = router("_default_ = [\"a\"]");
        let (report, batches) = run(&r, "cpu\n", Precision::Nanoseconds);
        assert!(batches.is_empty());
        assert_eq!(
            report.into_result().unwrap_err(),
            ApiError::LinesRejected("unable to parse 'cpu': missing fields (line 1)".into())
        );
    }

    #[test]
    fn error_list_is_bounded() {
        let r = router("_default_ = [\"a\"]");
        let body = format!("{}cpu v=1 1\n", "x\n".repeat(1000));
        let (report, _) = run(&r, &body, Precision::Nanoseconds);
        assert_eq!(report.dropped, 1000);
        let error = report.into_result().unwrap_err().to_string();
        assert_eq!(
            error.matches("unable to parse").count(),
            MAX_REPORTED_ERRORS
        );
        assert!(
            error.ends_with("(990 more lines rejected) dropped=1000"),
            "{error}"
        );
        let long = format!("{} v=", "m".repeat(1000));
        let (report, _) = run(&r, &long, Precision::Nanoseconds);
        let error = report.into_result().unwrap_err().to_string();
        assert!(error.len() < MAX_QUOTED_LINE_BYTES + 100, "{error}");
    }

    #[test]
    fn a_shared_half_is_batched_behind_the_first_half() {
        let r = router("_default_ = [\"a\"]\nmem = [\"b\"]");
        let body = b"cpu v=1 1\nmem v=2 2\ncpu v=3 3\nmem v=4 4\ncpu v=5 5\nmem v=6 6\n";
        let (report, batches) =
            ingest_after_reads(&r, body, None, true, Precision::Nanoseconds, 1 << 20);
        // Split past the newline after the middle, ending "mem v=4 4": the
        // other worker took the last two points.
        assert_eq!((report.accepted, report.shared), (6, 2));
        let batches: Vec<_> = batches
            .into_iter()
            .map(|(set, text, _)| (set, text))
            .collect();
        // Each set's open batch is frozen before the piece's batch of that set.
        assert_eq!(
            batches,
            [
                (0, "cpu v=1 1\ncpu v=3 3\n".to_owned()),
                (0, "cpu v=5 5\n".to_owned()),
                (1, "mem v=2 2\nmem v=4 4\n".to_owned()),
                (1, "mem v=6 6\n".to_owned()),
            ]
        );
    }

    #[test]
    fn a_shared_half_is_ingested_again_when_a_point_runs_into_it_or_it_has_a_bad_line() {
        let r = router("_default_ = [\"a\"]");
        for body in [
            // A string carries the first half's last point past the split.
            "m v=1 1\nm s=\"a\nb\nc\nd\ne\" 2\nm v=3 3\n",
            // An escaped newline does too.
            "m v=1 1\nm,t=aaaaaaaaaaaaaaaa\\\nb v=2 2\nm v=3 3\n",
            // The piece's bad line is reported with its number in the body.
            "m v=1 1\nm v=2 2\nm v=3 3\nm v=x 4\n",
            // Blank lines where the piece starts.
            "m v=1 1\nm v=2 2\n\n\n\n\n\n\n\n\n\nm v=3 3\n",
        ] {
            let (alone, alone_batches) = ingest_after_reads(
                &r,
                body.as_bytes(),
                None,
                false,
                Precision::Nanoseconds,
                1 << 20,
            );
            let (shared, shared_batches) = ingest_after_reads(
                &r,
                body.as_bytes(),
                None,
                true,
                Precision::Nanoseconds,
                1 << 20,
            );
            assert_eq!(shared.shared, 0, "{body:?}");
            assert_eq!(shared, alone, "{body:?}");
            assert_eq!(shared_batches, alone_batches, "{body:?}");
        }
    }

    #[test]
    fn a_line_longer_than_a_batch_is_refused() {
        let r = router("_default_ = [\"a\"]");
        let long = format!("m v=\"{}\" 1", "x".repeat(100));
        // Without a timestamp, the one added must fit too.
        let almost = format!("m v={}", "1".repeat(50));
        for body in [
            format!("m v=1 1\n{long}\nm v=2 2\n"),
            format!("m v=1\n{almost}\nm v=2\n"),
        ] {
            let body = body.as_bytes();
            let at_the_end = ingest_after_reads(&r, body, None, false, Precision::Nanoseconds, 64);
            let (report, batches) = &at_the_end;
            assert_eq!((report.accepted, report.dropped), (2, 1));
            assert!(
                report
                    .errors
                    .ends_with("line longer than write.max_batch_bytes (64 bytes) (line 2)"),
                "{}",
                report.errors
            );
            assert_eq!(batches.iter().map(|b| b.2).sum::<usize>(), 2);
            for read in 0..=body.len() {
                let early =
                    ingest_after_reads(&r, body, Some(&[read]), false, Precision::Nanoseconds, 64);
                assert_eq!(early.0, at_the_end.0, "ingested early up to byte {read}");
                assert_eq!(
                    per_set(&early.1),
                    per_set(&at_the_end.1),
                    "up to byte {read}"
                );
            }
        }
    }

    /// Lines of every kind the scanner and validator tell apart.
    const LINES: &[&str] = &[
        "cpu,host=a,region=b usage=1.5,idle=2 1700000000000000000",
        "cpu,host=b usage=2 1700000000000000001",
        "cpu usage=3",
        "mem,host=a used=10i 5",
        "mem used=11i",
        "disk free=1 1",
        "my\\ cpu v=1 1",
        "cpu s=\"a b\",v=1 2",
        "cpu s=\"multi\nline\" 3",
        "cpu v=1 2\\",
        "",
        "# a comment",
        "  cpu v=1 4",
        "cpu v=1 5  ",
        "cpu v=1 6\r",
        "cpu v=oops 7",
        "cpu",
        "cpu v=\"unterminated 8",
        "cpu,host=a v=1,w=2,x=3,y=4,z=5 1700000000000000002",
    ];

    proptest::proptest! {
        #[test]
        fn ingesting_early_or_sharing_never_changes_what_is_written(
            picks in proptest::collection::vec(0..LINES.len(), 0..40),
            final_newline: bool,
            read_fractions in proptest::collection::vec(0.0..1.0f64, 0..6),
            share: bool,
            max_batch_bytes in 40usize..400,
        ) {
            let r = router("_default_ = [\"a\"]\nmem = [\"b\"]\ncpu = [\"a\", \"b\"]");
            let mut body = picks.iter().map(|&i| LINES[i]).collect::<Vec<_>>().join("\n");
            if final_newline {
                body.push('\n');
            }
            let body = body.as_bytes();
            let mut reads: Vec<usize> = read_fractions
                .iter()
                .map(|f| (f * body.len() as f64) as usize)
                .collect();
            reads.sort_unstable();
            let at_the_end =
                ingest_after_reads(&r, body, None, false, Precision::Nanoseconds, max_batch_bytes);
            let other =
                ingest_after_reads(&r, body, Some(&reads), share, Precision::Nanoseconds, max_batch_bytes);
            proptest::prop_assert!(other.0.shared <= other.0.accepted);
            proptest::prop_assert_eq!(IngestReport { shared: 0, ..other.0 }, at_the_end.0);
            proptest::prop_assert_eq!(per_set(&other.1), per_set(&at_the_end.1));
        }
    }

    #[test]
    fn write_params() {
        let params =
            WriteParams::parse("db=my%20db&rp=autogen&precision=ms&u=joe&p=s3cret", None).unwrap();
        assert_eq!(params.db, "my db");
        assert_eq!(params.rp.as_deref(), Some("autogen"));
        assert_eq!(params.precision, Precision::Milliseconds);
        assert_eq!(
            params.authorization.as_deref(),
            Some("Basic am9lOnMzY3JldA==")
        );
        let params = WriteParams::parse("db=x&u=joe&p=pw", Some("Token abc")).unwrap();
        assert_eq!(params.authorization.as_deref(), Some("Token abc"));
        let missing = ApiError::BadParameter("database is required".into());
        assert_eq!(
            WriteParams::parse("precision=s", None).unwrap_err(),
            missing
        );
        assert_eq!(WriteParams::parse("db=", None).unwrap_err(), missing);
        assert!(matches!(
            WriteParams::parse("db=x&precision=fortnight", None),
            Err(ApiError::BadParameter(_))
        ));
        assert!(matches!(
            WriteParams::parse("db=%zz", None),
            Err(ApiError::BadParameter(_))
        ));
    }
}
