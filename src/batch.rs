//! Per-worker batch buffers: one open batch per backend set and per
//! (db, rp, precision, credentials), frozen when full or old.
//!
//! Lines are copied once, from the request body into an open batch. A frozen
//! [`Batch`] is shared (`Arc`) by every backend of its set, so replication copies
//! nothing, and an outbound gzip is computed once per batch, not once per replica.
//! Bodies live in memory the writers can lend to the kernel ([`BatchBody`]).

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use crate::batch_body::BatchBody;
use crate::lp::precision::Precision;
use crate::route::SetId;
use crate::settle::SettlePoke;

/// What a batch is written as: everything of a request that the backend's
/// `/write` takes besides the body.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    pub db: Box<str>,
    pub rp: Option<Box<str>>,
    pub precision: Precision,
    /// The `Authorization` header to send, derived from the client's `u`/`p` or
    /// its own header, so the backend authenticates the client as if it were direct.
    pub authorization: Option<Box<str>>,
}

/// Credentials never reach logs: `Debug` shows only whether there are any.
impl std::fmt::Debug for BatchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchKey")
            .field("db", &self.db)
            .field("rp", &self.rp)
            .field("precision", &self.precision)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The borrowed form of a [`BatchKey`], built once per request without allocating.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub db: &'a str,
    pub rp: Option<&'a str>,
    pub precision: Precision,
    pub authorization: Option<&'a str>,
}

impl BatchKey {
    fn matches(&self, target: &Target<'_>) -> bool {
        *self.db == *target.db
            && self.rp.as_deref() == target.rp
            && self.precision == target.precision
            && self.authorization.as_deref() == target.authorization
    }

    pub(crate) fn from_target(target: &Target<'_>) -> BatchKey {
        BatchKey {
            db: target.db.into(),
            rp: target.rp.map(Into::into),
            precision: target.precision,
            authorization: target.authorization.map(Into::into),
        }
    }

    pub(crate) fn target(&self) -> Target<'_> {
        Target {
            db: &self.db,
            rp: self.rp.as_deref(),
            precision: self.precision,
            authorization: self.authorization.as_deref(),
        }
    }
}

/// A frozen batch: newline-terminated lines, every one with a timestamp.
#[derive(Debug)]
pub struct Batch {
    pub key: Arc<BatchKey>,
    pub body: BatchBody,
    pub lines: usize,
    gzipped: OnceLock<Vec<u8>>,
    /// A writer lent the body's pages to the kernel and cannot tell that the
    /// kernel is done with them: the body must not be reused.
    pages_may_be_in_use: AtomicBool,
    /// Backends that have not yet settled the batch (written it, spooled it
    /// durably, or refused it). Set before the batch is queued anywhere.
    unsettled: AtomicUsize,
    /// The first refusal, for clients waiting in `ack = "durable"` mode.
    refusal: OnceLock<Refusal>,
    /// Poked when the batch settles: a durable write waits on it.
    watcher: OnceLock<Arc<SettlePoke>>,
}

/// A backend's refusal of a batch: its status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub backend: String,
    pub status: u16,
    pub message: String,
}

impl Batch {
    pub fn new(key: Arc<BatchKey>, body: BatchBody, lines: usize) -> Batch {
        Batch {
            key,
            body,
            lines,
            gzipped: OnceLock::new(),
            pages_may_be_in_use: AtomicBool::new(false),
            unsettled: AtomicUsize::new(0),
            refusal: OnceLock::new(),
            watcher: OnceLock::new(),
        }
    }

    /// Announces how many backends will settle this batch; call before queueing it.
    pub fn expect_settlements(&self, backends: usize) {
        self.unsettled.store(backends, Ordering::Release);
    }

    /// One backend is done with the batch: `None` when it holds the points
    /// (written, or durably spooled), the refusal otherwise.
    pub fn settle(&self, refusal: Option<Refusal>) {
        if let Some(refusal) = refusal {
            let _ = self.refusal.set(refusal);
        }
        if self.unsettled.fetch_sub(1, Ordering::AcqRel) == 1 {
            // With `watch`'s fence: either this sees the watcher, or the
            // watcher sees the batch settled.
            fence(Ordering::SeqCst);
            if let Some(watcher) = self.watcher.get() {
                watcher.poke();
            }
        }
    }

    /// Has `poke` poked when the batch settles; call before looking whether
    /// it has. Batches are per worker, so every watcher of one is its
    /// worker's.
    pub fn watch(&self, poke: &Arc<SettlePoke>) {
        let _ = self.watcher.set(poke.clone());
        fence(Ordering::SeqCst);
    }

    /// Every backend has settled the batch.
    pub fn is_settled(&self) -> bool {
        self.unsettled.load(Ordering::Acquire) == 0
    }

    /// The first backend refusal, once settled.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.get()
    }

    /// Keeps the body's memory from being reused: a writer lent its pages to
    /// the kernel and did not see the backend take every byte.
    pub fn keep_pages_from_reuse(&self) {
        self.pages_may_be_in_use.store(true, Ordering::Relaxed);
    }

    /// The body gzip-compressed, computed by the first writer that asks and
    /// shared with every other replica of the batch.
    pub fn gzipped(&self) -> &[u8] {
        self.gzipped.get_or_init(|| gzip(&self.body))
    }
}

/// Compression level for batches sent to backends: level 1 of libdeflate already
/// shrinks line protocol about 8x at several hundred MB/s; higher levels cost
/// CPU on the proxy's busiest path for little gain on a LAN.
const OUTBOUND_GZIP_LEVEL: i32 = 1;

fn gzip(body: &[u8]) -> Vec<u8> {
    let level = libdeflater::CompressionLvl::new(OUTBOUND_GZIP_LEVEL)
        .unwrap_or_else(|_| libdeflater::CompressionLvl::fastest());
    let mut compressor = libdeflater::Compressor::new(level);
    let mut out = vec![0; compressor.gzip_compress_bound(body.len())];
    let len = compressor
        .gzip_compress(body, &mut out)
        .expect("gzip_compress_bound is large enough by definition");
    out.truncate(len);
    out
}

/// A body no writer left with the kernel goes back to the pool (see `batch_body`).
impl Drop for Batch {
    fn drop(&mut self) {
        if *self.pages_may_be_in_use.get_mut() {
            self.body.hold_back();
        } else {
            self.body.recycle();
        }
    }
}

struct OpenBatch {
    key: Arc<BatchKey>,
    body: BatchBody,
    lines: usize,
    /// When the first line of the current body arrived.
    opened: Instant,
}

/// The open batches of one worker.
pub struct Batcher {
    /// Per set id, the open batches of that set, one per distinct key.
    open: Vec<Vec<OpenBatch>>,
    /// Per set id, the index in `open[set]` of the current request's batch.
    /// Valid between `begin_request` and the next call that removes batches.
    request_slots: Vec<Option<usize>>,
    max_batch_bytes: usize,
    /// The size hint of the current request (`expect_bytes`).
    request_bytes: usize,
    /// Batches frozen and waiting for `take_ready`.
    ready: Vec<(SetId, Arc<Batch>)>,
}

impl Batcher {
    pub fn new(set_count: usize, max_batch_bytes: usize) -> Batcher {
        Batcher {
            open: (0..set_count).map(|_| Vec::new()).collect(),
            request_slots: vec![None; set_count],
            max_batch_bytes,
            request_bytes: max_batch_bytes,
            ready: Vec::new(),
        }
    }

    /// Forgets the previous request's batch choices; call before its first `append`.
    pub fn begin_request(&mut self) {
        self.request_slots.fill(None);
        self.request_bytes = self.max_batch_bytes;
    }

    /// The current request carries a body of `bytes`: a batch it opens starts
    /// with room for that much, doubled for the timestamps added to lines that
    /// have none (capped at `max_batch_bytes`; many small writes to many
    /// databases must not each hold a whole batch).
    pub fn expect_bytes(&mut self, bytes: usize) {
        self.request_bytes = bytes.saturating_mul(2).saturating_add(64);
    }

    /// The longest line a batch can take; longer lines are refused, so that
    /// every batch fits `write.max_batch_bytes` (and a spool sized from it).
    pub fn max_line_bytes(&self) -> usize {
        self.max_batch_bytes
    }

    /// Copies one validated line into the set's batch for `target`, followed by
    /// `timestamp_suffix` (" <ts>", or empty when the line has its own) and a newline.
    /// Freezes the batch first if the line would overflow it.
    pub fn append(
        &mut self,
        set: SetId,
        target: &Target<'_>,
        line: &[u8],
        timestamp_suffix: &[u8],
        now: Instant,
    ) {
        let needed = line.len() + timestamp_suffix.len() + 1;
        let batch = self.batch_with_room(set, target, needed, now);
        batch.body.push_line(line, timestamp_suffix);
        batch.lines += 1;
    }

    /// Adds a batch frozen elsewhere (a request's own, `api::early`) to the
    /// ready ones, behind the set's open batch for `target`, which is frozen
    /// first: lines appended before reach the backends before it.
    pub fn adopt(&mut self, set: SetId, target: &Target<'_>, batch: Arc<Batch>) {
        let open = self.open[set.0 as usize]
            .iter_mut()
            .find(|b| b.key.matches(target) && b.lines > 0);
        if let Some(open) = open {
            self.ready.push((set, freeze(open)));
        }
        self.ready.push((set, batch));
    }

    /// The set's open batch for `target`, frozen and replaced first when
    /// `needed` more bytes would overflow it.
    fn batch_with_room(
        &mut self,
        set: SetId,
        target: &Target<'_>,
        needed: usize,
        now: Instant,
    ) -> &mut OpenBatch {
        let set_index = set.0 as usize;
        let batches = &mut self.open[set_index];
        let slot = match self.request_slots[set_index] {
            Some(slot) => slot,
            None => {
                let slot = match batches.iter().position(|b| b.key.matches(target)) {
                    Some(slot) => slot,
                    None => {
                        batches.push(OpenBatch {
                            key: Arc::new(BatchKey::from_target(target)),
                            body: BatchBody::new(),
                            lines: 0,
                            opened: now,
                        });
                        batches.len() - 1
                    }
                };
                self.request_slots[set_index] = Some(slot);
                batches[slot]
                    .body
                    .reserve(self.request_bytes, self.max_batch_bytes);
                slot
            }
        };
        let batch = &mut batches[slot];
        if batch.lines > 0 && batch.body.len() + needed > self.max_batch_bytes {
            self.ready.push((set, freeze(batch)));
            batch
                .body
                .reserve(self.request_bytes.max(needed), self.max_batch_bytes);
        }
        if batch.lines == 0 {
            batch.opened = now;
        }
        batch
    }

    /// Freezes every batch whose first line is at least `max_age` old, and drops
    /// idle entries so that keys from past requests do not accumulate.
    pub fn flush_aged(&mut self, now: Instant, max_age: Duration) {
        self.flush_where(|batch| now.saturating_duration_since(batch.opened) >= max_age);
    }

    /// Freezes the batches the current request appended to (`ack = "durable"`:
    /// the request waits for exactly these, so they leave now).
    pub fn flush_request(&mut self) {
        for (set_index, slot) in self.request_slots.iter().enumerate() {
            let Some(slot) = *slot else { continue };
            let batch = &mut self.open[set_index][slot];
            if batch.lines > 0 {
                self.ready.push((SetId(set_index as u32), freeze(batch)));
            }
        }
    }

    /// Freezes every non-empty batch (shutdown).
    pub fn flush_all(&mut self) {
        self.flush_where(|_| true);
    }

    fn flush_where(&mut self, mut due: impl FnMut(&OpenBatch) -> bool) {
        for (set_index, batches) in self.open.iter_mut().enumerate() {
            batches.retain_mut(|batch| {
                if batch.lines == 0 {
                    return false;
                }
                if due(batch) {
                    self.ready.push((SetId(set_index as u32), freeze(batch)));
                    return false;
                }
                true
            });
        }
        self.request_slots.fill(None);
    }

    /// Hands out the batches frozen since the last call, oldest first.
    pub fn take_ready(&mut self) -> std::vec::Drain<'_, (SetId, Arc<Batch>)> {
        self.ready.drain(..)
    }

    #[cfg(test)]
    /// Lines in open (not yet frozen) batches.
    pub fn pending_lines(&self) -> usize {
        self.open.iter().flatten().map(|b| b.lines).sum()
    }
}

/// Moves the open batch's lines into a frozen batch, leaving the open batch
/// empty; its next line takes a new body (`append`).
fn freeze(batch: &mut OpenBatch) -> Arc<Batch> {
    let body = std::mem::take(&mut batch.body);
    let lines = std::mem::take(&mut batch.lines);
    Arc::new(Batch::new(batch.key.clone(), body, lines))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Where unit tests write: database "db", nanosecond timestamps.
    pub(crate) const TARGET: Target<'static> = Target {
        db: "db",
        rp: None,
        precision: Precision::Nanoseconds,
        authorization: None,
    };

    fn ready(batcher: &mut Batcher) -> Vec<(u32, String, usize)> {
        batcher
            .take_ready()
            .map(|(set, b)| (set.0, String::from_utf8(b.body.to_vec()).unwrap(), b.lines))
            .collect()
    }

    #[test]
    fn lines_get_the_suffix_and_a_newline() {
        let mut batcher = Batcher::new(1, 1 << 10);
        let now = Instant::now();
        batcher.begin_request();
        batcher.append(SetId(0), &TARGET, b"cpu v=1", b" 42", now);
        batcher.append(SetId(0), &TARGET, b"cpu v=2 7", b"", now);
        assert!(ready(&mut batcher).is_empty());
        batcher.flush_all();
        assert_eq!(
            ready(&mut batcher),
            vec![(0, "cpu v=1 42\ncpu v=2 7\n".to_owned(), 2)]
        );
        assert_eq!(batcher.pending_lines(), 0);
    }

    #[test]
    fn a_full_batch_is_frozen_before_it_overflows() {
        let mut batcher = Batcher::new(1, 15);
        let now = Instant::now();
        batcher.begin_request();
        for i in 0..5 {
            batcher.append(SetId(0), &TARGET, format!("m v={i}").as_bytes(), b"", now);
        }
        // 6 bytes a line: two fit in 15, the third would not.
        assert_eq!(
            ready(&mut batcher),
            vec![
                (0, "m v=0\nm v=1\n".to_owned(), 2),
                (0, "m v=2\nm v=3\n".to_owned(), 2)
            ]
        );
        assert_eq!(batcher.pending_lines(), 1);
    }

    #[test]
    fn a_line_larger_than_a_batch_gets_its_own_batch() {
        let mut batcher = Batcher::new(1, 4);
        let now = Instant::now();
        batcher.begin_request();
        batcher.append(SetId(0), &TARGET, b"measurement v=1", b"", now);
        batcher.append(SetId(0), &TARGET, b"m v=2", b"", now);
        assert_eq!(
            ready(&mut batcher),
            vec![(0, "measurement v=1\n".to_owned(), 1)]
        );
    }

    #[test]
    fn batches_are_kept_apart_by_set_and_key() {
        let mut batcher = Batcher::new(2, 1 << 10);
        let now = Instant::now();
        let other_db = Target {
            db: "other",
            ..TARGET
        };
        let seconds = Target {
            precision: Precision::Seconds,
            ..TARGET
        };
        let with_auth = Target {
            authorization: Some("Basic eDp5"),
            ..TARGET
        };
        for target in [TARGET, other_db, seconds, with_auth] {
            batcher.begin_request();
            batcher.append(SetId(0), &target, b"a v=1", b"", now);
            batcher.append(SetId(1), &target, b"b v=1", b"", now);
        }
        batcher.begin_request();
        batcher.append(SetId(0), &TARGET, b"a v=2", b"", now);
        batcher.flush_all();
        let batches: Vec<_> = batcher.take_ready().collect();
        assert_eq!(batches.len(), 8);
        let first = &batches[0].1;
        assert_eq!(*first.key, BatchKey::from_target(&TARGET));
        assert_eq!(&first.body[..], b"a v=1\na v=2\n");
    }

    #[test]
    fn an_adopted_batch_goes_behind_the_open_batch_of_its_key() {
        let now = Instant::now();
        let other_db = Target {
            db: "other",
            ..TARGET
        };
        let mut batcher = Batcher::new(1, 1 << 20);
        batcher.begin_request();
        batcher.append(SetId(0), &TARGET, b"m v=1 1", b"", now);
        batcher.begin_request();
        batcher.append(SetId(0), &other_db, b"m v=2 2", b"", now);
        let mut own = Batcher::new(1, 1 << 20);
        own.begin_request();
        own.append(SetId(0), &TARGET, b"m v=3 3", b"", now);
        own.flush_all();
        let (set, batch) = own.take_ready().next().unwrap();
        batcher.adopt(set, &TARGET, batch);
        // The other database's open batch stays open.
        assert_eq!(
            ready(&mut batcher),
            [
                (0, "m v=1 1\n".to_owned(), 1),
                (0, "m v=3 3\n".to_owned(), 1)
            ]
        );
        assert_eq!(batcher.pending_lines(), 1);
    }

    #[test]
    fn only_aged_batches_are_flushed() {
        let mut batcher = Batcher::new(2, 1 << 10);
        let start = Instant::now();
        batcher.begin_request();
        batcher.append(SetId(0), &TARGET, b"old v=1", b"", start);
        batcher.begin_request();
        batcher.append(
            SetId(1),
            &TARGET,
            b"new v=1",
            b"",
            start + Duration::from_millis(80),
        );
        batcher.flush_aged(
            start + Duration::from_millis(100),
            Duration::from_millis(100),
        );
        assert_eq!(ready(&mut batcher), vec![(0, "old v=1\n".to_owned(), 1)]);
        // Run it twice: the flushed entry is gone, the young one stays.
        batcher.flush_aged(
            start + Duration::from_millis(100),
            Duration::from_millis(100),
        );
        assert!(ready(&mut batcher).is_empty());
        assert_eq!(batcher.pending_lines(), 1);
    }

    #[test]
    fn a_batch_reuses_its_body_unless_a_writer_left_the_pages_with_the_kernel() {
        let pool = crate::batch_body::tests::own_pool();
        let size = 1 << 20;
        for left_with_kernel in [false, true] {
            let mut body = BatchBody::for_batch_from(pool, size, size);
            body.push_line(b"m v=1", b"");
            let address = body.as_ptr();
            let batch = Batch::new(Arc::new(BatchKey::from_target(&TARGET)), body, 1);
            if left_with_kernel {
                batch.keep_pages_from_reuse();
            }
            drop(batch);
            let reused = pool.take(size).map(|map| map.as_ptr());
            assert_eq!(reused, (!left_with_kernel).then_some(address));
        }
    }

    #[test]
    fn a_large_request_fills_a_lendable_body_and_a_small_one_a_heap_body() {
        let mut batcher = Batcher::new(1, 1 << 20);
        let now = Instant::now();
        for (request_bytes, lendable) in [(100, false), (1 << 20, true)] {
            batcher.begin_request();
            batcher.expect_bytes(request_bytes);
            batcher.append(SetId(0), &TARGET, b"m v=1", b"", now);
            batcher.flush_all();
            let (_, batch) = batcher.take_ready().next().unwrap();
            assert_eq!(batch.body.is_lendable(), lendable);
            assert_eq!(&batch.body[..], b"m v=1\n");
        }
    }

    #[test]
    fn gzipped_body_round_trips_and_is_computed_once() {
        let batch = Batch::new(
            Arc::new(BatchKey::from_target(&TARGET)),
            b"cpu v=1 1\n".repeat(100).into(),
            100,
        );
        let first = batch.gzipped().as_ptr();
        assert_eq!(batch.gzipped().as_ptr(), first);
        let mut out = vec![0; batch.body.len()];
        let n = libdeflater::Decompressor::new()
            .gzip_decompress(batch.gzipped(), &mut out)
            .unwrap();
        assert_eq!(&out[..n], &batch.body[..]);
    }
}
