//! Batch bodies that writers can lend to the kernel instead of copying.
//!
//! A large body is sent with `vmsplice` + `splice` ([`crate::writer::splice`]): the
//! socket takes references to the body's pages, not a copy of its bytes. The
//! kernel may read those pages until the backend has received the bytes (and on
//! loopback, until the backend's process has read them), and fluxgate is not told
//! when that is. So a lent body must never be written again while the kernel
//! might still read it, or a backend could receive another batch's bytes.
//!
//! Each body that may be lent therefore has an anonymous mapping of its own:
//! - when every backend answered 2xx to the request that carried it, the backend
//!   has read every byte, so the mapping goes back to a pool and the next batch
//!   reuses its pages (no page faults in the steady state);
//! - after any other ending (an error, a timeout, a refusal, a retry) the mapping
//!   is unmapped. The kernel keeps the pages it still references alive, and they
//!   are never handed to fluxgate again.

use std::fmt;
use std::ops::Deref;
use std::sync::Mutex;

use memmap2::MmapMut;

/// Capacity the pool keeps mapped for reuse, across all bodies.
const POOL_BYTES: usize = 32 << 20;

/// Newline-terminated lines of one batch.
pub struct BatchBody(Storage);

enum Storage {
    /// Memory from the allocator: never lent (spool replays, tests, and the
    /// fallback when a mapping cannot be made).
    Heap(Vec<u8>),
    /// A mapping of its own: may be lent to the kernel.
    Mapped {
        map: MmapMut,
        len: usize,
        /// Where the mapping goes back to.
        pool: &'static Pool,
    },
}

impl BatchBody {
    /// An empty body that owns no memory.
    pub const fn new() -> BatchBody {
        BatchBody(Storage::Heap(Vec::new()))
    }

    /// An empty body with room for `capacity` bytes in a mapping of its own,
    /// reused from the pool when it has one of that size.
    pub fn mapped(capacity: usize) -> BatchBody {
        BatchBody::mapped_from(&POOL, capacity)
    }

    pub(crate) fn mapped_from(pool: &'static Pool, capacity: usize) -> BatchBody {
        let capacity = capacity.max(1);
        match pool
            .take(capacity)
            .map_or_else(|| MmapMut::map_anon(capacity), Ok)
        {
            Ok(map) => BatchBody(Storage::Mapped { map, len: 0, pool }),
            Err(e) => {
                tracing::warn!(error = %e, capacity, "cannot map a batch body; using the heap");
                BatchBody::new()
            }
        }
    }

    /// Whether the body's pages may be lent to the kernel (see the module docs).
    pub fn is_lendable(&self) -> bool {
        matches!(self.0, Storage::Mapped { .. })
    }

    pub fn capacity(&self) -> usize {
        match &self.0 {
            Storage::Heap(vec) => vec.capacity(),
            Storage::Mapped { map, .. } => map.len(),
        }
    }

    /// Appends `line`, then `suffix`, then a newline. A mapped body too small
    /// for them moves to the heap; the batcher sizes bodies so that they fit.
    #[inline]
    pub fn push_line(&mut self, line: &[u8], suffix: &[u8]) {
        let needed = line.len() + suffix.len() + 1;
        if matches!(&self.0, Storage::Mapped { map, len, .. } if len + needed > map.len()) {
            self.move_to_heap();
        }
        match &mut self.0 {
            Storage::Heap(vec) => {
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

    /// The rare case of a line longer than the batch size.
    #[cold]
    fn move_to_heap(&mut self) {
        *self = BatchBody(Storage::Heap(self.to_vec()));
    }

    /// Gives a mapped body's memory back to the pool for the next batch. Only
    /// for a body the kernel no longer reads (see the module docs).
    pub fn recycle(&mut self) {
        if let Storage::Mapped { map, pool, .. } =
            std::mem::replace(&mut self.0, Storage::Heap(Vec::new()))
        {
            pool.put(map);
        }
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
            Storage::Heap(vec) => vec,
            Storage::Mapped { map, len, .. } => &map[..*len],
        }
    }
}

impl From<Vec<u8>> for BatchBody {
    fn from(vec: Vec<u8>) -> Self {
        BatchBody(Storage::Heap(vec))
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

/// Mappings of bodies the kernel is done with, all of one size and at most
/// `POOL_BYTES` in all.
/// Taken and given back once per batch, so a lock is cheap enough.
pub(crate) struct Pool(Mutex<Vec<MmapMut>>);

static POOL: Pool = Pool::new();

impl Pool {
    pub(crate) const fn new() -> Pool {
        Pool(Mutex::new(Vec::new()))
    }

    /// A mapping of `capacity` bytes, if one is free.
    pub(crate) fn take(&self, capacity: usize) -> Option<MmapMut> {
        let mut maps = self.lock();
        match maps.last() {
            Some(map) if map.len() == capacity => maps.pop(),
            _ => None,
        }
    }

    /// Keeps `map` for reuse if there is room. Mappings of another size (from
    /// before a reload changed `write.max_batch_bytes`) are unmapped.
    fn put(&self, map: MmapMut) {
        let mut maps = self.lock();
        maps.retain(|kept| kept.len() == map.len());
        if (maps.len() + 1) * map.len() <= POOL_BYTES {
            maps.push(map);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<MmapMut>> {
        // The pool holds no invariant a panic could break.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_with_suffix_and_newline() {
        let mut body = BatchBody::mapped(64);
        assert!(body.is_lendable());
        body.push_line(b"m v=1", b" 42");
        body.push_line(b"m v=2 7", b"");
        assert_eq!(&body[..], b"m v=1 42\nm v=2 7\n");
    }

    #[test]
    fn a_line_past_the_capacity_moves_the_body_to_the_heap() {
        let mut body = BatchBody::mapped(8);
        body.push_line(b"m v=1", b"");
        body.push_line(b"measurement v=2", b" 5");
        assert_eq!(&body[..], b"m v=1\nmeasurement v=2 5\n");
        assert!(!body.is_lendable());
    }

    /// A pool of the test's own, so tests running alongside do not share it.
    fn own_pool() -> &'static Pool {
        Box::leak(Box::new(Pool::new()))
    }

    #[test]
    fn a_recycled_mapping_is_reused_by_a_body_of_its_size() {
        let pool = own_pool();
        let mut body = BatchBody::mapped_from(pool, 3 * 4096);
        body.push_line(b"m v=1", b"");
        let address = body.as_ptr();
        body.recycle();
        assert!(body.is_empty() && !body.is_lendable());
        let reused = BatchBody::mapped_from(pool, 3 * 4096);
        assert_eq!(reused.as_ptr(), address);
        assert!(reused.is_empty(), "a reused body starts empty");
    }

    #[test]
    fn a_dropped_body_is_not_reused() {
        let pool = own_pool();
        let mut body = BatchBody::mapped_from(pool, 4096);
        body.push_line(b"m v=1", b"");
        drop(body);
        assert!(pool.take(4096).is_none());
    }

    #[test]
    fn the_pool_keeps_one_size_and_a_bounded_total() {
        let pool = own_pool();
        BatchBody::mapped_from(pool, 4096).recycle();
        let mut big: Vec<_> = (0..POOL_BYTES / (1 << 20) + 2)
            .map(|_| BatchBody::mapped_from(pool, 1 << 20))
            .collect();
        big.iter_mut().for_each(BatchBody::recycle);
        assert!(
            pool.lock().iter().all(|map| map.len() == 1 << 20),
            "the old size was unmapped"
        );
        let mut kept = 0;
        while pool.take(1 << 20).is_some() {
            kept += 1;
        }
        assert_eq!(kept, POOL_BYTES / (1 << 20));
    }

    #[test]
    fn heap_bodies_are_never_lent() {
        let mut body = BatchBody::from(b"m v=1\n".to_vec());
        assert!(!body.is_lendable());
        body.push_line(b"m v=2", b"");
        assert_eq!(&body[..], b"m v=1\nm v=2\n");
        body.recycle();
        assert_eq!(&body[..], b"", "recycling a heap body only empties it");
    }
}
