//! Bounded decompression of `Content-Encoding: gzip` write bodies.
//!
//! [`Gunzip`] wraps one libdeflate decompressor per worker and inflates a whole body
//! into a caller-owned buffer that is reused across requests. It guarantees:
//!
//! - The output never grows past the caller's limit, however the body lies about its
//!   size, so a gzip bomb costs at most `max_out` bytes.
//! - Concatenated members (RFC 1952 section 2.2) are all decoded, as Go's
//!   `gzip.Reader` in InfluxDB 1.x does; bytes after the last member that are not
//!   another member are an error, as there.
//!
//! libdeflate decodes a member in one call, checks its CRC-32 and size, and (through
//! `libdeflate_gzip_decompress_ex`, called directly because libdeflater 1.26 does
//! not wrap it) says how many input bytes the member used, which is where the next
//! member starts. It writes straight into the buffer's spare capacity, so a body is
//! never zero-filled first.
//!
//! An empty body inflates to an empty body (InfluxDB 1.x answers `EOF` instead).

use std::fmt;
use std::ptr::NonNull;

use libdeflate_sys::{
    libdeflate_alloc_decompressor, libdeflate_decompressor, libdeflate_free_decompressor,
    libdeflate_gzip_decompress_ex,
    libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE as INSUFFICIENT_SPACE,
    libdeflate_result_LIBDEFLATE_SUCCESS as SUCCESS,
};

/// DEFLATE cannot expand input by more than about 1032:1, so a claimed size beyond
/// that is a lie and is not allocated up front.
const MAX_DEFLATE_RATIO: usize = 1032;

/// Smallest step when the first guess was too small. A tuning choice: large enough
/// that bodies without a usable size hint do not restart many times.
const MIN_GROWTH: usize = 64 * 1024;

/// Per-worker gzip decoder (libdeflate), reused across requests.
pub struct Gunzip {
    decompressor: Decompressor,
}

/// A libdeflate decompressor, owned.
struct Decompressor(NonNull<libdeflate_decompressor>);

// SAFETY: libdeflate's decompressor is plain heap state with no tie to a thread;
// every use goes through `&mut self`, so one thread at a time.
unsafe impl Send for Decompressor {}

/// Why one member did not decode.
enum MemberError {
    Corrupt,
    /// The output did not fit in the room given.
    NoRoom,
}

impl Decompressor {
    fn new() -> Self {
        // SAFETY: no preconditions; NULL means out of memory.
        let raw = unsafe { libdeflate_alloc_decompressor() };
        Self(NonNull::new(raw).expect("libdeflate_alloc_decompressor: out of memory"))
    }

    /// Decodes the gzip member at the start of `input`, appending its output to
    /// `out` within `room` bytes of `out`'s spare capacity. Returns how many bytes
    /// of `input` the member took.
    fn member(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        room: usize,
    ) -> Result<usize, MemberError> {
        let spare = out.spare_capacity_mut();
        let room = room.min(spare.len());
        let (mut used, mut produced) = (0usize, 0usize);
        // SAFETY: the decompressor is live (freed only on drop); `input` is readable
        // for `input.len()` bytes and the spare capacity writable for `room` bytes,
        // the most libdeflate writes; the two out-pointers are valid `usize`s.
        let result = unsafe {
            libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                spare.as_mut_ptr().cast(),
                room,
                &mut used,
                &mut produced,
            )
        };
        match result {
            SUCCESS if used > 0 => {
                assert!(produced <= room, "libdeflate wrote past the room given");
                // SAFETY: libdeflate initialised the first `produced` bytes of the
                // spare capacity, and `produced <= room <= spare.len()`.
                unsafe { out.set_len(out.len() + produced) };
                Ok(used)
            }
            INSUFFICIENT_SPACE => Err(MemberError::NoRoom),
            // Bad data (a successful member always uses input; SHORT_OUTPUT is only
            // returned without an out-size pointer).
            _ => Err(MemberError::Corrupt),
        }
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: allocated by `libdeflate_alloc_decompressor`, freed once, here.
        unsafe { libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

/// Why a gzip body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GzipError {
    /// Not gzip, damaged, truncated, or followed by junk.
    Corrupt,
    /// Inflating would exceed the caller's limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl fmt::Display for GzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt => f.write_str("gzip: invalid compressed data"),
            Self::TooLarge { limit } => {
                write!(f, "gzip: decompressed body exceeds {limit} bytes")
            }
        }
    }
}

impl std::error::Error for GzipError {}

impl Default for Gunzip {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Gunzip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gunzip").finish_non_exhaustive()
    }
}

impl Gunzip {
    /// A decoder with its own libdeflate state.
    ///
    /// # Panics
    ///
    /// If libdeflate cannot allocate its state (out of memory).
    pub fn new() -> Self {
        Self {
            decompressor: Decompressor::new(),
        }
    }

    /// Decompresses a whole gzip body into `out` (cleared first), never growing `out` past `max_out` bytes.
    ///
    /// The last member's ISIZE trailer is the first size guess, capped by `max_out`
    /// and by what DEFLATE can produce from the input; on `InsufficientSpace` the
    /// buffer doubles (up to `max_out`) and the member is decoded again.
    ///
    /// # Errors
    ///
    /// [`GzipError::Corrupt`] for anything that is not a sequence of valid gzip
    /// members, [`GzipError::TooLarge`] once the output would pass `max_out`. On error
    /// `out` is left empty.
    pub fn decompress(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> Result<(), GzipError> {
        out.clear();
        let result = self.decompress_into(input, out, max_out);
        if result.is_err() {
            out.clear();
        }
        result
    }

    fn decompress_into(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> Result<(), GzipError> {
        // Room for the guess (or the capacity kept from earlier bodies), without
        // over-allocating: capacity is what the caller pays for, and it stays within
        // `max_out` unless it was larger already.
        let mut size = first_guess(input, max_out).max(out.capacity().min(max_out));
        out.reserve_exact(size);
        let mut pos = 0;
        while pos < input.len() {
            match self
                .decompressor
                .member(&input[pos..], out, size - out.len())
            {
                Ok(used) => pos += used,
                Err(MemberError::Corrupt) => return Err(GzipError::Corrupt),
                Err(MemberError::NoRoom) => {
                    if size >= max_out {
                        return Err(GzipError::TooLarge { limit: max_out });
                    }
                    size = size
                        .saturating_mul(2)
                        .max(size.saturating_add(MIN_GROWTH))
                        .min(max_out);
                    out.reserve_exact(size - out.len());
                }
            }
        }
        Ok(())
    }
}

/// The initial output size: the last member's ISIZE (exact for single-member bodies
/// under 4 GiB), but never more than `max_out` or than the input could inflate to.
fn first_guess(input: &[u8], max_out: usize) -> usize {
    let isize_hint = match input.len().checked_sub(4).map(|at| &input[at..]) {
        Some(&[a, b, c, d]) => usize::try_from(u32::from_le_bytes([a, b, c, d])).unwrap_or(0),
        _ => 0,
    };
    isize_hint
        .min(max_out)
        .min(input.len().saturating_mul(MAX_DEFLATE_RATIO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use libdeflater::{CompressionLvl, Compressor};

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut c = Compressor::new(CompressionLvl::default());
        let mut out = vec![0; c.gzip_compress_bound(data.len())];
        let n = c.gzip_compress(data, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// Some line protocol that compresses well but not trivially.
    fn sample(len: usize) -> Vec<u8> {
        let mut s = Vec::with_capacity(len + 64);
        let mut i = 0u64;
        while s.len() < len {
            s.extend_from_slice(
                format!("cpu,host=h{} v={}i {}\n", i % 7, i * 31 % 1000, i).as_bytes(),
            );
            i += 1;
        }
        s.truncate(len);
        s
    }

    /// Runs one case twice through the same decoder and buffer.
    #[track_caller]
    fn case(
        g: &mut Gunzip,
        out: &mut Vec<u8>,
        input: &[u8],
        max_out: usize,
        want: Result<&[u8], GzipError>,
    ) {
        for _ in 0..2 {
            let got = g.decompress(input, out, max_out);
            match want {
                Ok(data) => {
                    assert_eq!(got, Ok(()));
                    assert_eq!(out.as_slice(), data);
                }
                Err(e) => {
                    assert_eq!(got, Err(e));
                    assert!(out.is_empty());
                }
            }
        }
    }

    #[test]
    fn round_trips() {
        let mut g = Gunzip::new();
        let mut out = b"stale".to_vec();
        for len in [0, 1, 100, 65_536, 300_000] {
            let data = sample(len);
            case(&mut g, &mut out, &gzip(&data), 1 << 20, Ok(&data));
        }
        // Empty body
        case(&mut g, &mut out, b"", 10, Ok(b""));
        case(&mut g, &mut out, b"", 0, Ok(b""));
    }

    #[test]
    fn concatenated_members() {
        let mut g = Gunzip::new();
        let mut out = Vec::new();
        let (a, b) = (sample(1000), sample(5000));
        let both = [a.as_slice(), b.as_slice()].concat();
        let mut body = gzip(&a);
        body.extend_from_slice(&gzip(&b));
        case(&mut g, &mut out, &body, 1 << 20, Ok(&both));
        // Identical members, one after the other.
        let mut twice = gzip(&a);
        twice.extend_from_slice(&gzip(&a));
        case(
            &mut g,
            &mut out,
            &twice,
            1 << 20,
            Ok(&[a.clone(), a.clone()].concat()),
        );
        // Empty members around data
        let mut padded = gzip(b"");
        padded.extend_from_slice(&gzip(&a));
        padded.extend_from_slice(&gzip(b""));
        case(&mut g, &mut out, &padded, 1 << 20, Ok(&a));
        // The limit counts across members.
        case(&mut g, &mut out, &body, both.len(), Ok(&both));
        case(
            &mut g,
            &mut out,
            &body,
            both.len() - 1,
            Err(GzipError::TooLarge {
                limit: both.len() - 1,
            }),
        );
    }

    #[test]
    fn corrupt_and_truncated() {
        let mut g = Gunzip::new();
        let mut out = Vec::new();
        let data = sample(10_000);
        let good = gzip(&data);
        // Not gzip at all
        case(
            &mut g,
            &mut out,
            b"cpu v=1",
            1 << 20,
            Err(GzipError::Corrupt),
        );
        case(&mut g, &mut out, &data, 1 << 20, Err(GzipError::Corrupt));
        // Damaged bytes: magic, deflate data, CRC, ISIZE
        for at in [0, good.len() / 2, good.len() - 8, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x55;
            case(&mut g, &mut out, &bad, 1 << 20, Err(GzipError::Corrupt));
        }
        // Every truncation
        for len in 1..good.len() {
            case(
                &mut g,
                &mut out,
                &good[..len],
                1 << 20,
                Err(GzipError::Corrupt),
            );
        }
        // Junk after a valid member, including half a magic
        for junk in [&b"\0"[..], b"\x1f", b"garbage", b"\x1f\x8b"] {
            let mut bad = good.clone();
            bad.extend_from_slice(junk);
            case(&mut g, &mut out, &bad, 1 << 20, Err(GzipError::Corrupt));
        }
        // Still usable afterwards
        case(&mut g, &mut out, &good, 1 << 20, Ok(&data));
    }

    #[test]
    fn output_limit() {
        let mut g = Gunzip::new();
        let mut out = Vec::new();
        for len in [1, 1000, 200_000] {
            let data = sample(len);
            let body = gzip(&data);
            // Exactly the limit, then one byte over it.
            case(&mut g, &mut out, &body, len, Ok(&data));
            case(
                &mut g,
                &mut out,
                &body,
                len - 1,
                Err(GzipError::TooLarge { limit: len - 1 }),
            );
        }
        // A lying ISIZE: libdeflate verifies it, so the lie is corruption even though
        // the buffer had to grow past the guess first.
        let data = sample(200_000);
        let mut low = gzip(&data);
        let n = low.len();
        low[n - 4..].copy_from_slice(&1u32.to_le_bytes());
        case(&mut g, &mut out, &low, 1 << 20, Err(GzipError::Corrupt));
        // A huge claimed size is not allocated up front.
        let mut fresh = Vec::new();
        let tiny = gzip(b"x");
        assert_eq!(g.decompress(&tiny, &mut fresh, 1 << 30), Ok(()));
        assert!(
            fresh.capacity() < 1 << 20,
            "guess must be capped by the input size"
        );
        // Capacity never passes the limit when starting from nothing.
        let mut fresh = Vec::new();
        let body = gzip(&sample(300_000));
        assert_eq!(
            g.decompress(&body, &mut fresh, 100_000),
            Err(GzipError::TooLarge { limit: 100_000 })
        );
        assert!(fresh.capacity() <= 100_000);
    }

    #[test]
    fn messages() {
        assert_eq!(
            GzipError::Corrupt.to_string(),
            "gzip: invalid compressed data"
        );
        assert_eq!(
            GzipError::TooLarge { limit: 1024 }.to_string(),
            "gzip: decompressed body exceeds 1024 bytes"
        );
    }
}
