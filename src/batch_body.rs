//! Batch bodies that writers can lend to the kernel instead of copying.
//!
//! A large body is sent with `vmsplice` + `splice` ([`crate::writer::splice`]): the
//! socket takes references to the body's pages, not a copy of its bytes. The
//! kernel may read those pages until the backend has received the bytes (and on
//! loopback, until the backend's process has read them), and fluxgate is not told
//! when that is. So a lent body must never be written again while the kernel
//! might still read it, or a backend could receive another batch's bytes.
//!
//! A body that may be lent therefore has an anonymous mapping of its own (a
//! piece of a region backed by a huge page where the kernel allows, see
//! [`crate::mapping`]):
//! - when every backend answered 2xx to the request that carried it (or answered
//!   otherwise, then a `/ping` on the same connection), the backend has read
//!   every byte, so the mapping goes back to a pool and the next batch reuses
//!   its pages (no page faults in the steady state);
//! - after any other ending (an error, a timeout, a retry, a refusal on a
//!   closed connection) the mapping is unmapped. The kernel keeps the pages it
//!   still references alive, and they are never handed to fluxgate again.
//!
//! Small bodies are not worth lending: a body starts on the heap, sized for the
//! request that opens it, and moves into a mapping once it passes
//! [`MIN_LENT_BYTES`] (or starts in one when the request alone is that large).

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::mapping::Mapping;

/// Bodies shorter than this are copied to the socket, not lent: below a pipe's
/// default capacity, the extra system calls and page references cost as much
/// as the copy.
pub const MIN_LENT_BYTES: usize = 64 << 10;

/// Mapped capacity the pool keeps for reuse, across all bodies (at least two
/// bodies, whatever their size).
const POOL_BYTES: usize = 32 << 20;

/// What became of mapped bodies, process-wide (`/metrics`).
#[derive(Debug, Default)]
pub struct BodyCounts {
    /// Mapped bodies taken from the pool.
    pub reused: AtomicU64,
    /// Mapped bodies whose memory was never used (newly mapped, or carved
    /// with another that was): each page faults once.
    pub mapped: AtomicU64,
    /// Bodies lent to a socket (once per backend and attempt).
    pub lent: AtomicU64,
    /// Lent bodies unmapped instead of reused, as the kernel might still read them.
    pub held_back: AtomicU64,
}

pub static BODY_COUNTS: BodyCounts = BodyCounts {
    reused: AtomicU64::new(0),
    mapped: AtomicU64::new(0),
    lent: AtomicU64::new(0),
    held_back: AtomicU64::new(0),
};

/// Newline-terminated lines of one batch.
pub struct BatchBody(Storage);

enum Storage {
    Heap {
        vec: Vec<u8>,
        /// The pool and size of the mapping to move into once the body passes
        /// `MIN_LENT_BYTES`, if any.
        lend_into: Option<(&'static Pool, usize)>,
    },
    /// A mapping of its own: may be lent to the kernel.
    Mapped {
        map: Mapping,
        len: usize,
        /// Where the mapping goes back to.
        pool: &'static Pool,
    },
}

impl BatchBody {
    /// An empty body that owns no memory.
    pub const fn new() -> BatchBody {
        BatchBody(Storage::Heap {
            vec: Vec::new(),
            lend_into: None,
        })
    }

    /// An empty body for a batch of at most `capacity` bytes, opened by a request
    /// that brings about `expected` bytes: on the heap with room for those, or
    /// mapped at once when they are enough to lend.
    pub fn for_batch(expected: usize, capacity: usize) -> BatchBody {
        BatchBody::for_batch_from(&POOL, expected, capacity)
    }

    pub(crate) fn for_batch_from(
        pool: &'static Pool,
        expected: usize,
        capacity: usize,
    ) -> BatchBody {
        let expected = expected.min(capacity);
        if expected >= MIN_LENT_BYTES {
            if let Some(map) = take_mapping(pool, capacity) {
                return BatchBody(Storage::Mapped { map, len: 0, pool });
            }
        }
        BatchBody(Storage::Heap {
            vec: Vec::with_capacity(expected),
            lend_into: (capacity >= MIN_LENT_BYTES).then_some((pool, capacity)),
        })
    }

    /// Makes room for `more` bytes, of a batch of at most `capacity` (once per
    /// request that writes to the batch, so that its lines do not grow the
    /// body one by one): an empty body starts as [`BatchBody::for_batch`]
    /// would, a heap body that will pass `MIN_LENT_BYTES` moves into its mapping
    /// now, another heap body reserves.
    pub fn reserve(&mut self, more: usize, capacity: usize) {
        match &mut self.0 {
            Storage::Heap {
                vec,
                lend_into: None,
            } if vec.capacity() == 0 => {
                *self = BatchBody::for_batch(more, capacity);
            }
            Storage::Heap {
                vec,
                lend_into: Some(_),
            } if vec.len() + more >= MIN_LENT_BYTES => self.move_into_mapping(),
            Storage::Heap { vec, .. } => {
                let want = vec.len().saturating_add(more).min(capacity);
                if vec.capacity() < want {
                    vec.reserve_exact(want - vec.len());
                }
            }
            Storage::Mapped { .. } => {}
        }
    }

    /// Whether the body's pages may be lent to the kernel (see the module docs).
    pub fn is_lendable(&self) -> bool {
        matches!(self.0, Storage::Mapped { .. })
    }

    /// Appends `line`, then `suffix`, then a newline.
    #[inline]
    pub fn push_line(&mut self, line: &[u8], suffix: &[u8]) {
        let needed = line.len() + suffix.len() + 1;
        self.make_room(needed);
        match &mut self.0 {
            Storage::Heap { vec, .. } => {
                vec.extend_from_slice(line);
                vec.extend_from_slice(suffix);
                vec.push(b'\n');
            }
            Storage::Mapped { map, len, .. } => {
                let out = &mut map[*len..*len + needed];
                out[..line.len()].copy_from_slice(line);
                out[line.len()..needed - 1].copy_from_slice(suffix);
                out[needed - 1] = b'\n';
                *len += needed;
            }
        }
    }

    /// Moves the body where `needed` more bytes fit: into a mapping once a
    /// heap body is large enough to lend, back to the heap in the rare case of
    /// a line longer than the batch size.
    #[inline]
    fn make_room(&mut self, needed: usize) {
        let total = self.len() + needed;
        match &self.0 {
            Storage::Heap {
                lend_into: Some((_, capacity)),
                ..
            } if total >= MIN_LENT_BYTES && total <= *capacity => self.move_into_mapping(),
            Storage::Mapped { map, .. } if total > map.len() => {
                *self = BatchBody::from(self.to_vec());
            }
            _ => {}
        }
    }

    /// Moves a heap body into the mapping it was meant for (`lend_into`). When
    /// no mapping can be made (logged), it stays on the heap for good.
    fn move_into_mapping(&mut self) {
        let Storage::Heap { vec, lend_into } = &mut self.0 else {
            return;
        };
        let Some((pool, size)) = lend_into.take() else {
            return;
        };
        if vec.len() > size {
            return;
        }
        if let Some(mut map) = take_mapping(pool, size) {
            map[..vec.len()].copy_from_slice(vec);
            self.0 = Storage::Mapped {
                len: vec.len(),
                map,
                pool,
            };
        }
    }

    /// Unmaps a lent body the kernel may still read (see the module docs).
    pub(crate) fn hold_back(&mut self) {
        if self.is_lendable() {
            BODY_COUNTS.held_back.fetch_add(1, Ordering::Relaxed);
            *self = BatchBody::new();
        }
    }

    /// Gives a mapped body's memory back to its pool for the next batch. Only
    /// for a body the kernel no longer reads (see the module docs).
    pub(crate) fn recycle(&mut self) {
        if self.is_lendable() {
            if let Storage::Mapped { map, pool, .. } = std::mem::take(&mut self.0) {
                pool.put(map);
            }
        }
    }
}

/// A mapping of `size` bytes, reused from `pool` when it has one, else
/// carved with its siblings (which go to the pool); `None` (logged) when no
/// mapping can be made.
fn take_mapping(pool: &Pool, size: usize) -> Option<Mapping> {
    if let Some(map) = pool.take(size) {
        return Some(map);
    }
    match Mapping::carve(size) {
        Ok(mut maps) => {
            BODY_COUNTS.mapped.fetch_add(1, Ordering::Relaxed);
            let map = maps.next();
            pool.put_fresh(maps);
            map
        }
        Err(e) => {
            tracing::warn!(error = %e, size, "cannot map a batch body; it stays on the heap");
            None
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        BatchBody::new().0
    }
}

impl Default for BatchBody {
    fn default() -> Self {
        BatchBody::new()
    }
}

impl Deref for BatchBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Storage::Heap { vec, .. } => vec,
            Storage::Mapped { map, len, .. } => &map[..*len],
        }
    }
}

/// A body read back from a spool, or built by a test: never lent.
impl From<Vec<u8>> for BatchBody {
    fn from(vec: Vec<u8>) -> Self {
        BatchBody(Storage::Heap {
            vec,
            lend_into: None,
        })
    }
}

impl fmt::Debug for BatchBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchBody")
            .field("len", &self.len())
            .field("lendable", &self.is_lendable())
            .finish()
    }
}

/// Mappings of bodies the kernel is done with. Taken and given back once per
/// batch (not per point), so a lock is cheap enough.
pub(crate) struct Pool(Mutex<PoolState>);

struct PoolState {
    /// Recycled, all of `size` bytes: their pages are faulted in already.
    maps: Vec<Mapping>,
    /// Carved with another and never used, all of `size` bytes.
    fresh: Vec<Mapping>,
    /// The size bodies were last asked for: after a reload changes
    /// `write.max_batch_bytes`, mappings of the old size are unmapped.
    size: usize,
}

static POOL: Pool = Pool::new();

impl PoolState {
    /// Whether `map` has the current size and the pool room for it (at least
    /// two bodies, whatever their size).
    fn has_room_for(&self, map: &Mapping) -> bool {
        let room = (POOL_BYTES / map.len().max(1)).max(2);
        map.len() == self.size && self.maps.len() + self.fresh.len() < room
    }
}

impl Pool {
    pub(crate) const fn new() -> Pool {
        Pool(Mutex::new(PoolState {
            maps: Vec::new(),
            fresh: Vec::new(),
            size: 0,
        }))
    }

    /// A mapping of `size` bytes, if one is free: a recycled one first, whose
    /// pages are faulted in already.
    pub(crate) fn take(&self, size: usize) -> Option<Mapping> {
        let mut state = self.lock();
        if state.size != size {
            state.maps.clear();
            state.fresh.clear();
            state.size = size;
        }
        if let Some(map) = state.maps.pop() {
            BODY_COUNTS.reused.fetch_add(1, Ordering::Relaxed);
            return Some(map);
        }
        let map = state.fresh.pop()?;
        BODY_COUNTS.mapped.fetch_add(1, Ordering::Relaxed);
        Some(map)
    }

    /// Keeps recycled `map` for reuse if it has the current size and there is
    /// room.
    fn put(&self, map: Mapping) {
        let mut state = self.lock();
        if state.has_room_for(&map) {
            state.maps.push(map);
        }
    }

    /// Keeps never used `maps` for later bodies, as far as there is room.
    fn put_fresh(&self, maps: impl Iterator<Item = Mapping>) {
        let mut state = self.lock();
        for map in maps {
            if state.has_room_for(&map) {
                state.fresh.push(map);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // The pool holds no invariant a panic could break.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pool of the test's own, so tests running alongside do not share it.
    pub(crate) fn own_pool() -> &'static Pool {
        Box::leak(Box::new(Pool::new()))
    }

    const LARGE: usize = 4 * MIN_LENT_BYTES;

    #[test]
    fn lines_are_appended_with_suffix_and_newline() {
        for expected in [0, LARGE] {
            let mut body = BatchBody::for_batch_from(own_pool(), expected, LARGE);
            assert_eq!(body.is_lendable(), expected == LARGE);
            body.push_line(b"m v=1", b" 42");
            body.push_line(b"m v=2 7", b"");
            assert_eq!(&body[..], b"m v=1 42\nm v=2 7\n");
        }
    }

    #[test]
    fn a_small_body_moves_into_a_mapping_once_it_is_worth_lending() {
        let mut body = BatchBody::for_batch_from(own_pool(), 100, LARGE);
        let line = [b'x'; 999];
        let mut expected = Vec::new();
        while body.len() + 1000 < MIN_LENT_BYTES {
            body.push_line(&line, b"");
            expected.extend_from_slice(&line);
            expected.push(b'\n');
            assert!(!body.is_lendable());
        }
        body.push_line(&line, b"");
        expected.extend_from_slice(&line);
        expected.push(b'\n');
        assert!(body.is_lendable());
        assert!(body[..] == expected[..], "bytes differ after the move");
    }

    #[test]
    fn a_line_past_the_capacity_moves_the_body_to_the_heap() {
        let pool = own_pool();
        let mut body = BatchBody::for_batch_from(pool, LARGE, LARGE);
        body.push_line(b"m v=1", b"");
        let long = vec![b'y'; LARGE];
        body.push_line(&long, b" 5");
        assert_eq!(body.len(), 6 + LARGE + 3);
        assert!(body.starts_with(b"m v=1\nyyy") && body.ends_with(b"y 5\n"));
        assert!(!body.is_lendable());
    }

    #[test]
    fn a_recycled_mapping_is_reused_by_a_body_of_its_size() {
        let pool = own_pool();
        let mut body = BatchBody::for_batch_from(pool, LARGE, LARGE);
        body.push_line(b"m v=1", b"");
        let address = body.as_ptr();
        body.recycle();
        assert!(body.is_empty() && !body.is_lendable());
        let reused = BatchBody::for_batch_from(pool, LARGE, LARGE);
        assert_eq!(reused.as_ptr(), address);
        assert!(reused.is_empty(), "a reused body starts empty");
    }

    #[test]
    fn a_dropped_body_is_not_reused() {
        let pool = own_pool();
        let mut body = BatchBody::for_batch_from(pool, LARGE, LARGE);
        body.push_line(b"m v=1", b"");
        let address = body.as_ptr();
        drop(body);
        // The bodies carved with it are in the pool; it is not.
        let mut siblings = Vec::new();
        while let Some(map) = pool.take(LARGE) {
            assert_ne!(map.as_ptr(), address);
            siblings.push(map);
        }
        assert_eq!(siblings.len(), (2 << 20) / LARGE - 1);
    }

    #[test]
    fn the_pool_keeps_the_current_size_within_its_bound() {
        let pool = own_pool();
        let mut small = BatchBody::for_batch_from(pool, LARGE, LARGE);
        // A reload: bodies are now asked for in another size, and the old
        // size is no longer kept.
        let size = 1 << 20;
        let mut bodies: Vec<_> = (0..POOL_BYTES / size + 2)
            .map(|_| BatchBody::for_batch_from(pool, size, size))
            .collect();
        small.recycle();
        bodies.iter_mut().for_each(BatchBody::recycle);
        let mut kept = 0;
        while pool.take(size).is_some() {
            kept += 1;
        }
        assert_eq!(kept, POOL_BYTES / size);
        // Bodies larger than the bound are still kept two at a time.
        let huge = POOL_BYTES;
        let mut bodies: Vec<_> = (0..3)
            .map(|_| BatchBody::for_batch_from(pool, huge, huge))
            .collect();
        bodies.iter_mut().for_each(BatchBody::recycle);
        assert!(pool.take(huge).is_some() && pool.take(huge).is_some());
        assert!(pool.take(huge).is_none());
    }

    #[test]
    fn heap_bodies_are_never_lent() {
        let mut body = BatchBody::from(b"m v=1\n".to_vec());
        assert!(!body.is_lendable());
        body.push_line(&[b'z'; LARGE], b"");
        assert!(!body.is_lendable());
        assert!(body.starts_with(b"m v=1\nzz"));
        body.recycle();
        assert_eq!(
            body.len(),
            6 + LARGE + 1,
            "recycling a heap body changes nothing"
        );
    }
}
