//! Anonymous memory of its own for batch bodies ([`crate::batch_body`]), carved
//! from regions the kernel can back with huge pages.
//!
//! A lent body's pages are pinned by the kernel once per send (`vmsplice`),
//! which for 4 KiB pages is one reference per page: the largest kernel cost of
//! sending in the profiles. A region aligned to 2 MiB and advised
//! `MADV_HUGEPAGE` is one huge page where the kernel allows it (transparent
//! huge pages `always` or `madvise`), pinned with one reference per send. Bodies
//! are usually smaller than 2 MiB (1 MiB by default), so one region is carved
//! into as many bodies as fit: a region of one body would fault in 2 MiB for it.
//! Where huge pages are off, the pieces are ordinary pages and work as before.

use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The size of a huge page on x86-64 and arm64 with 4 KiB pages (with larger
/// pages, regions of this size are still whole pages, just not huge ones).
const HUGE_PAGE: usize = 2 << 20;

/// `len` bytes of anonymous memory, unmapped on drop.
pub struct Mapping {
    start: NonNull<u8>,
    len: usize,
    /// The mapped bytes from `start`: `len` rounded up to whole pages, which
    /// `munmap` needs.
    span: usize,
}

// SAFETY: a `Mapping` owns its memory exclusively, like a `Vec<u8>`.
unsafe impl Send for Mapping {}
// SAFETY: shared access only reads.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps one region and carves it into zeroed mappings of `len` bytes (at
    /// least one): as many as fit in one huge page when `len` is at most that,
    /// else one of `len` rounded up to whole huge pages. Allocates nothing on
    /// the heap; the pieces not taken from the iterator are unmapped with it.
    pub fn carve(len: usize) -> io::Result<Pieces> {
        let span = len.max(1).next_multiple_of(page_size());
        let (region, count) = if span <= HUGE_PAGE {
            (HUGE_PAGE, HUGE_PAGE / span)
        } else {
            (span.next_multiple_of(HUGE_PAGE), 1)
        };
        let start = map_aligned(region)?;
        // Huge pages are a speed-up, not a need: without them (disabled, or an
        // old kernel) the advice fails and the pages are ordinary ones.
        // SAFETY: `start..start + region` was just mapped.
        unsafe { libc::madvise(start.as_ptr().cast(), region, libc::MADV_HUGEPAGE) };
        let span = if count == 1 { region } else { span };
        let used = count * span;
        if used < region {
            // SAFETY: the tail past the pieces is mapped and belongs to none.
            unsafe { unmap(start.as_ptr().add(used), region - used) };
        }
        Ok(Pieces {
            start,
            len,
            span,
            next: 0,
            count,
        })
    }
}

/// The mappings of one carved region, each made once: taken from the iterator,
/// or unmapped when it is dropped.
pub struct Pieces {
    start: NonNull<u8>,
    len: usize,
    span: usize,
    next: usize,
    count: usize,
}

impl Iterator for Pieces {
    type Item = Mapping;

    fn next(&mut self) -> Option<Mapping> {
        if self.next == self.count {
            return None;
        }
        // SAFETY: `next * span < count * span`, within the region, and no
        // other piece covers it.
        let start = unsafe { self.start.add(self.next * self.span) };
        self.next += 1;
        Some(Mapping {
            start,
            len: self.len,
            span: self.span,
        })
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        self.for_each(drop);
    }
}

/// The kernel's page size (4 KiB on x86-64, up to 64 KiB on arm64).
fn page_size() -> usize {
    // SAFETY: sysconf only reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0 && HUGE_PAGE.is_multiple_of(s))
        .unwrap_or(HUGE_PAGE)
}

/// Maps `len` bytes (a multiple of `HUGE_PAGE`) at an address aligned to
/// `HUGE_PAGE`: maps one huge page more than that and unmaps what lies outside.
fn map_aligned(len: usize) -> io::Result<NonNull<u8>> {
    let padded = len + HUGE_PAGE;
    // SAFETY: a new private anonymous mapping touches no existing memory.
    let mapped = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            padded,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mapped = mapped.cast::<u8>();
    let head = (mapped as usize).next_multiple_of(HUGE_PAGE) - mapped as usize;
    // SAFETY: `mapped..mapped + padded` was just mapped, and both trimmed ends
    // lie within it and outside the aligned part returned.
    unsafe {
        if head > 0 {
            unmap(mapped, head);
        }
        if padded - head - len > 0 {
            unmap(mapped.add(head + len), padded - head - len);
        }
        Ok(NonNull::new_unchecked(mapped.add(head)))
    }
}

/// Unmaps `len` bytes at `start`.
///
/// # Safety
///
/// Nothing may use those bytes afterwards.
unsafe fn unmap(start: *mut u8, len: usize) {
    // SAFETY: the caller's.
    if unsafe { libc::munmap(start.cast(), len) } != 0 {
        // Only invalid arguments fail, which would be a bug here.
        debug_assert!(false, "munmap: {}", io::Error::last_os_error());
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping owns `start..start + span` and is going away.
        unsafe { unmap(self.start.as_ptr(), self.span) };
    }
}

impl Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `start..start + len` is mapped, initialized (zeroed by the
        // kernel or written since) and owned by `self`.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl DerefMut for Mapping {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_carved_into_disjoint_huge_page_aligned_pieces() {
        let pieces = Mapping::carve(1 << 20).expect("mapped").collect::<Vec<_>>();
        assert_eq!(pieces.len(), 2);
        let first = pieces[0].as_ptr() as usize;
        assert_eq!(first % HUGE_PAGE, 0, "the region is aligned");
        assert_eq!(pieces[1].as_ptr() as usize, first + (1 << 20));
        // Odd sizes round up to whole pages; the tail is unmapped.
        let pieces = Mapping::carve(300_000).expect("mapped").collect::<Vec<_>>();
        assert_eq!(
            pieces.len(),
            HUGE_PAGE / 300_000_usize.next_multiple_of(page_size())
        );
        assert!(pieces.iter().all(|p| p.len() == 300_000));
        // Larger than a huge page: one piece.
        let pieces = Mapping::carve(HUGE_PAGE + 1)
            .expect("mapped")
            .collect::<Vec<_>>();
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].len(), HUGE_PAGE + 1);
    }

    #[test]
    fn pieces_are_zeroed_and_independent_and_outlive_their_siblings() {
        let mut pieces = Mapping::carve(512 << 10)
            .expect("mapped")
            .collect::<Vec<_>>();
        assert_eq!(pieces.len(), 4);
        assert!(pieces.iter().all(|p| p.iter().all(|&b| b == 0)));
        for (i, piece) in pieces.iter_mut().enumerate() {
            piece.fill(i as u8 + 1);
        }
        // Unmapping one piece (a body held back) leaves the others whole.
        let kept = pieces.pop().expect("a piece");
        drop(pieces.remove(1));
        assert!(pieces[0].iter().all(|&b| b == 1));
        assert!(pieces[1].iter().all(|&b| b == 3));
        drop(pieces);
        assert!(kept.iter().all(|&b| b == 4));
    }

    #[test]
    fn pieces_not_taken_are_unmapped_with_the_iterator() {
        // Pieces that do not divide a huge page: 6 of 74 pages.
        let len: usize = 300_000;
        let span = len.next_multiple_of(page_size());
        let count = HUGE_PAGE / span;
        let mut pieces = Mapping::carve(len).expect("mapped");
        let taken = pieces.next().expect("a piece");
        let start = taken.as_ptr() as usize;
        let page = page_size();
        // `msync` fails with ENOMEM on a range with unmapped pages.
        let mapped = |from: usize, len: usize| {
            // SAFETY: msync only reports on the range; MS_ASYNC writes nothing back.
            unsafe { libc::msync((start + from) as *mut libc::c_void, len, libc::MS_ASYNC) == 0 }
        };
        // Not one page of the piece at `from` is left mapped.
        let all_gone = |from: usize| (0..span / page).all(|p| !mapped(from + p * page, page));
        assert!(
            mapped(0, count * span),
            "every piece is mapped while carved"
        );
        // The checks run in a child process: there no other thread can map
        // into the freed ranges between the unmapping and the check. The child
        // only makes system calls (the drops unmap) and exits.
        // SAFETY: fork has no preconditions; see above for what the child does.
        match unsafe { libc::fork() } {
            0 => {
                // A panic (a failed munmap asserts) must not unwind into the
                // test harness, which would exit 0: leave with a code of its own.
                struct ExitOnUnwind;
                impl Drop for ExitOnUnwind {
                    fn drop(&mut self) {
                        // SAFETY: ends the child at once.
                        unsafe { libc::_exit(4) }
                    }
                }
                let _unwinding = ExitOnUnwind;
                drop(pieces);
                let siblings_gone = (1..count).all(|k| all_gone(k * span));
                let taken_kept = mapped(0, span);
                drop(taken);
                let taken_gone = all_gone(0);
                let code = [siblings_gone, taken_kept, taken_gone]
                    .iter()
                    .enumerate()
                    .find(|(_, ok)| !**ok)
                    .map_or(0, |(i, _)| i as i32 + 1);
                // SAFETY: ends the child at once, without running the parent's
                // exit handlers.
                unsafe { libc::_exit(code) }
            }
            -1 => panic!("fork: {}", io::Error::last_os_error()),
            child => {
                let mut status = 0;
                // A child stuck (say, in a panic hook's allocation after the
                // fork) is killed after 10 s rather than hanging the tests.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    // SAFETY: waits for our own child, without blocking.
                    let waited = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
                    if waited == child {
                        break;
                    }
                    assert_eq!(waited, 0, "waitpid: {}", io::Error::last_os_error());
                    if std::time::Instant::now() > deadline {
                        // SAFETY: our own child, not yet reaped.
                        unsafe { libc::kill(child, libc::SIGKILL) };
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                assert!(libc::WIFEXITED(status), "child status {status}");
                // 1: a piece not taken left mapped, 2: the taken piece
                // unmapped with them, 3: the taken piece left mapped, 4: a
                // panic in the child.
                assert_eq!(libc::WEXITSTATUS(status), 0);
            }
        }
    }
}
