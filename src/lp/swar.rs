//! Many-bytes-at-a-time tests for the line parser: finding the next delimiter 16
//! bytes at a time, and checking and parsing digits eight at a time in a `u64`
//! ("SIMD within a register", SWAR).
//!
//! Tokens in line protocol are short (a tag key is a few bytes), so what costs is not
//! the bytes but the branches: a byte loop mispredicts its exit at the end of almost
//! every token, and a `memchr` call costs its set-up per token. Testing 16 bytes at
//! once and taking the first hit with `trailing_zeros` leaves one well-predicted
//! branch per token. On x86_64 that test takes two SSE2 instructions per byte of the
//! set; elsewhere it is portable SWAR, several times the work.
//!
//! Words are loaded little-endian, so byte `k` of a slice is bits `8k..8k + 8` and
//! "first" is "lowest". SWAR tests return *flags*: bit 7 of each byte that passes.

/// Bit 0 of every byte.
const LOW_BITS: u64 = 0x0101_0101_0101_0101;
/// Bit 7 of every byte: where flags are set, so also "every byte flagged".
pub(super) const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// `b` in every byte.
const fn splat(b: u8) -> u64 {
    LOW_BITS * b as u64
}

/// The eight bytes at `buf[i..]` as a word, if there are eight.
#[inline(always)]
pub(super) fn load(buf: &[u8], i: usize) -> Option<u64> {
    let bytes = buf.get(i..i.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The eight bytes at `buf[i..]` as a word, with zero bytes standing in for those past
/// the end; `None` only when `buf` is shorter than eight bytes or `i` past its end.
#[inline(always)]
pub(super) fn load_padded(buf: &[u8], i: usize) -> Option<u64> {
    if let Some(word) = load(buf, i) {
        return Some(word);
    }
    // Near the end: load the last eight bytes and shift the wanted ones down.
    let last_start = buf.len().checked_sub(8)?;
    let skip = i.checked_sub(last_start).filter(|&skip| skip <= 8)?;
    Some(
        load(buf, last_start)?
            .checked_shr(8 * skip as u32)
            .unwrap_or(0),
    )
}

/// Flags the bytes of `word` equal to `b`, exactly the *lowest* one: bytes above a
/// flagged one may be flagged too (the subtraction borrows into them). Cheaper than
/// [`eq_flags`] and enough for finding the first match.
#[inline(always)]
fn eq_flags_lowest(word: u64, b: u8) -> u64 {
    let x = word ^ splat(b);
    x.wrapping_sub(LOW_BITS) & !x & HIGH_BITS
}

/// Flags the bytes of `word` equal to `b`, all of them exactly.
#[inline(always)]
pub(super) fn eq_flags(word: u64, b: u8) -> u64 {
    let x = word ^ splat(b);
    // Bit 7 of `(x & 0x7f) + 0x7f` is set iff the low seven bits are not all zero; no
    // byte can carry into the next.
    !(((x & !HIGH_BITS) + !HIGH_BITS) | x) & HIGH_BITS
}

/// Flags the bytes of `word` that are ASCII digits, all of them exactly.
#[inline(always)]
pub(super) fn digit_flags(word: u64) -> u64 {
    // With bit 7 cleared no byte sum below reaches 0x100, so none carries.
    let low = word & !HIGH_BITS;
    let at_least_0 = low + splat(0x80 - b'0');
    let above_9 = low + splat(0x80 - b'9' - 1);
    at_least_0 & !above_9 & !word & HIGH_BITS
}

/// The byte index of the lowest flag of `flags` (which must not be 0).
#[inline(always)]
pub(super) fn first_flag(flags: u64) -> usize {
    (flags.trailing_zeros() / 8) as usize
}

/// The flags of `flags` below its lowest one (all of them if there is none).
#[inline(always)]
pub(super) fn flags_below_first(flags: u64) -> u64 {
    (flags & flags.wrapping_neg()).wrapping_sub(1) & HIGH_BITS
}

/// The first position at or after `i` holding one of the bytes of `set`, or
/// `buf.len()`. `i` must be at most `buf.len()`.
#[inline(always)]
pub(super) fn find_any<const N: usize>(buf: &[u8], mut i: usize, set: [u8; N]) -> usize {
    while let Some(chunk) = buf.get(i..i + 16) {
        let chunk = chunk.try_into().expect("16 bytes");
        if let Some(off) = first_in_chunk(chunk, set) {
            return i + off;
        }
        i += 16;
    }
    if let Some(word) = load(buf, i) {
        let found = set_flags_lowest(word, set);
        if found != 0 {
            return i + first_flag(found);
        }
        i += 8;
    }
    buf[i..]
        .iter()
        .position(|b| set.contains(b))
        .map_or(buf.len(), |off| i + off)
}

/// Flags the bytes of `word` in `set`, exactly the lowest one (see
/// [`eq_flags_lowest`]).
#[inline(always)]
fn set_flags_lowest<const N: usize>(word: u64, set: [u8; N]) -> u64 {
    set.iter().fold(0, |acc, &b| acc | eq_flags_lowest(word, b))
}

/// The index of the first byte of `chunk` in `set`, with SSE2 (part of every x86_64
/// CPU). Worth its `unsafe`: the `scan_validate` input runs about 15-20% faster
/// (1045 against 900 MiB/s, best of 300 runs) than with [`first_in_chunk_swar`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn first_in_chunk<const N: usize>(chunk: &[u8; 16], set: [u8; N]) -> Option<usize> {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_setzero_si128,
    };
    // SAFETY: these intrinsics only need SSE2, which the x86_64 targets always enable
    // (it is part of the architecture's baseline). The load reads the 16 bytes of
    // `chunk`, a valid reference; `loadu` has no alignment requirement.
    let hits = unsafe {
        let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
        let mut hits = _mm_setzero_si128();
        for &b in &set {
            hits = _mm_or_si128(hits, _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b as i8)));
        }
        _mm_movemask_epi8(hits) as u32
    };
    (hits != 0).then(|| hits.trailing_zeros() as usize)
}

#[cfg(not(target_arch = "x86_64"))]
use first_in_chunk_swar as first_in_chunk;

/// The portable [`first_in_chunk`]: two words tested at once, so that the usual
/// short token costs one branch.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn first_in_chunk_swar<const N: usize>(chunk: &[u8; 16], set: [u8; N]) -> Option<usize> {
    let low = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
    let high = u64::from_le_bytes(chunk[8..].try_into().expect("8 bytes"));
    // Each half's lowest flag is exact, so the lowest of both is too.
    let both =
        u128::from(set_flags_lowest(low, set)) | u128::from(set_flags_lowest(high, set)) << 64;
    (both != 0).then(|| (both.trailing_zeros() / 8) as usize)
}

/// Where the bytes that shape a plain line are among 64 bytes of it, as bitmasks:
/// bit `k` stands for byte `k` of the block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Delimiters {
    /// `,` and space: what ends a measurement or a value.
    pub(super) separators: u64,
    /// `=`: what ends a key.
    pub(super) equals: u64,
    /// The spaces alone.
    pub(super) spaces: u64,
    /// `\` and `"`: what makes a line not plain.
    pub(super) escaping: u64,
}

/// The [`Delimiters`] of the 64 bytes at `buf[i..]`; bytes past the end of `buf` are
/// in none of the masks. `i` must be at most `buf.len()`.
#[inline(always)]
pub(super) fn delimiters_64(buf: &[u8], i: usize) -> Delimiters {
    block_delimiters::<16>(buf, i, classify_chunk)
}

/// [`delimiters_64`] with AVX2, 32 bytes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn delimiters_64_avx2(buf: &[u8], i: usize) -> Delimiters {
    block_delimiters::<32>(buf, i, |chunk| classify_chunk_avx2(chunk))
}

/// Assembles a block's masks from chunks of `W` bytes classified by `classify`.
#[inline(always)]
fn block_delimiters<const W: usize>(
    buf: &[u8],
    i: usize,
    classify: impl Fn(&[u8; W]) -> ChunkDelimiters,
) -> Delimiters {
    let mut all = Delimiters::default();
    for k in 0..64 / W {
        let at = i + W * k;
        let chunk = if let Some(chunk) = buf.get(at..at + W) {
            classify(chunk.try_into().expect("W bytes"))
        } else if at >= buf.len() {
            break;
        } else if let Some(last) = buf.len().checked_sub(W) {
            // The line's last W bytes, shifted so that `at` comes first: no copy.
            classify(buf[last..].try_into().expect("W bytes")).shifted_down(at - last)
        } else {
            let mut padded = [0u8; W];
            padded[..buf.len() - at].copy_from_slice(&buf[at..]);
            classify(&padded)
        };
        let shift = W * k;
        all.separators |= chunk.separators << shift;
        all.equals |= chunk.equals << shift;
        all.spaces |= chunk.spaces << shift;
        all.escaping |= chunk.escaping << shift;
    }
    all
}

/// [`Delimiters`] of one chunk (16 or 32 bytes), in the low bits of each mask.
#[derive(Debug, PartialEq, Eq)]
struct ChunkDelimiters {
    separators: u64,
    equals: u64,
    spaces: u64,
    escaping: u64,
}

impl ChunkDelimiters {
    #[inline(always)]
    fn shifted_down(self, bytes: usize) -> Self {
        Self {
            separators: self.separators >> bytes,
            equals: self.equals >> bytes,
            spaces: self.spaces >> bytes,
            escaping: self.escaping >> bytes,
        }
    }
}

/// Classifies 32 bytes with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn classify_chunk_avx2(chunk: &[u8; 32]) -> ChunkDelimiters {
    use std::arch::x86_64::{
        _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };
    // SAFETY: the load reads the 32 bytes of `chunk`, with no alignment requirement.
    let bytes = unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) };
    let is = |b: u8| _mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(b as i8));
    let mask = |v| u64::from(_mm256_movemask_epi8(v) as u32);
    let spaces = is(b' ');
    ChunkDelimiters {
        separators: mask(_mm256_or_si256(is(b','), spaces)),
        equals: mask(is(b'=')),
        spaces: mask(spaces),
        escaping: mask(_mm256_or_si256(is(b'\\'), is(b'"'))),
    }
}

/// Classifies a chunk with SSE2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn classify_chunk(chunk: &[u8; 16]) -> ChunkDelimiters {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 only, which x86_64 always has (see `first_in_chunk`); the load
    // reads the 16 bytes of `chunk`, with no alignment requirement.
    unsafe {
        let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
        let is = |b: u8| _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b as i8));
        let spaces = is(b' ');
        let mask = |v| u64::from(_mm_movemask_epi8(v) as u16);
        ChunkDelimiters {
            separators: mask(_mm_or_si128(is(b','), spaces)),
            equals: mask(is(b'=')),
            spaces: mask(spaces),
            escaping: mask(_mm_or_si128(is(b'\\'), is(b'"'))),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
use classify_chunk_swar as classify_chunk;

/// The portable [`classify_chunk`].
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn classify_chunk_swar(chunk: &[u8; 16]) -> ChunkDelimiters {
    let bits = |test: &dyn Fn(u64) -> u64| {
        let low = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
        let high = u64::from_le_bytes(chunk[8..].try_into().expect("8 bytes"));
        u64::from(flags_to_bits(test(low)) | flags_to_bits(test(high)) << 8)
    };
    ChunkDelimiters {
        separators: bits(&|w| eq_flags(w, b',') | eq_flags(w, b' ')),
        equals: bits(&|w| eq_flags(w, b'=')),
        spaces: bits(&|w| eq_flags(w, b' ')),
        escaping: bits(&|w| eq_flags(w, b'\\') | eq_flags(w, b'"')),
    }
}

/// Packs the flags of a word (bit 7 of each byte) into bits 0..8, byte `k` to bit `k`.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn flags_to_bits(flags: u64) -> u32 {
    // Each flag, moved to bit 0 of its byte, is multiplied into the top byte at its
    // own bit; no two products overlap there.
    (((flags >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56) as u32
}

/// The value of a word of eight ASCII digits, the first the most significant.
#[inline(always)]
pub(super) fn parse_eight_digits(word: u64) -> u64 {
    debug_assert_eq!(digit_flags(word), HIGH_BITS);
    // Lemire's method: combine neighbouring digits, then pairs, then quads, each step
    // a multiply-add over lanes that cannot overflow into each other.
    let digits = word - splat(b'0');
    let pairs = digits * 10 + (digits >> 8);
    const LANES: u64 = 0x0000_00FF_0000_00FF;
    const MUL_HIGH: u64 = 100 + (1_000_000 << 32);
    const MUL_LOW: u64 = 1 + (10_000 << 32);
    ((pairs & LANES)
        .wrapping_mul(MUL_HIGH)
        .wrapping_add(((pairs >> 16) & LANES).wrapping_mul(MUL_LOW)))
        >> 32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(bytes: &[u8; 8]) -> u64 {
        u64::from_le_bytes(*bytes)
    }

    #[test]
    fn flags_match_bytewise_tests() {
        // Every byte value in every position, next to awkward neighbours.
        for pos in 0..8 {
            for b in 0..=255u8 {
                for fill in [0u8, b'0', b'9', 0x7f, 0x80, 0xff, b'='] {
                    let mut bytes = [fill; 8];
                    bytes[pos] = b;
                    let w = word(&bytes);
                    let want = |f: &dyn Fn(u8) -> bool| {
                        bytes
                            .iter()
                            .enumerate()
                            .fold(0u64, |acc, (k, &x)| acc | (u64::from(f(x)) << (8 * k + 7)))
                    };
                    assert_eq!(digit_flags(w), want(&|x| x.is_ascii_digit()));
                    for t in [b'=', b'.', b'0', 0, 0xff] {
                        let exact = want(&|x| x == t);
                        assert_eq!(eq_flags(w, t), exact);
                        let lowest = eq_flags_lowest(w, t);
                        assert_eq!(lowest == 0, exact == 0);
                        if exact != 0 {
                            assert_eq!(first_flag(lowest), first_flag(exact));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn masks_and_padded_loads() {
        assert_eq!(flags_below_first(0), HIGH_BITS);
        assert_eq!(flags_below_first(0x80), 0);
        assert_eq!(flags_below_first(0x8000_8000), 0x80);
        let buf = b"0123456789";
        for i in 0..=buf.len() {
            let mut want = [0u8; 8];
            let n = (buf.len() - i).min(8);
            want[..n].copy_from_slice(&buf[i..i + n]);
            assert_eq!(load_padded(buf, i), Some(u64::from_le_bytes(want)), "{i}");
        }
        assert_eq!(load_padded(buf, buf.len() + 1), None);
        assert_eq!(load_padded(b"0123456", 0), None);
    }

    #[test]
    fn find_any_matches_position() {
        let set = [b',', b' ', b'='];
        let text = b"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz";
        for len in 0..text.len() {
            for at in 0..=len {
                let mut buf = text[..len].to_vec();
                if at < len {
                    buf[at] = b'=';
                }
                for from in 0..=len {
                    let want = buf[from..]
                        .iter()
                        .position(|b| set.contains(b))
                        .map_or(len, |o| from + o);
                    assert_eq!(find_any(&buf, from, set), want, "{len} {at} {from}");
                }
            }
        }
    }

    #[test]
    fn chunk_tests_agree() {
        let set = [b'\\', b'"', b'=', b',', b' '];
        let mut chunk = [b'a'; 16];
        for b in 0..=255u8 {
            for at in 0..16 {
                for second in [at, 15, (at + 3) % 16] {
                    chunk.fill(b'a');
                    chunk[second] = b',';
                    chunk[at] = b;
                    let want = chunk.iter().position(|x| set.contains(x));
                    assert_eq!(first_in_chunk(&chunk, set), want);
                    assert_eq!(first_in_chunk_swar(&chunk, set), want);
                }
            }
        }
        chunk.fill(0xff);
        assert_eq!(first_in_chunk(&chunk, set), None);
        assert_eq!(first_in_chunk_swar(&chunk, set), None);
    }

    /// The bytewise [`Delimiters`] of `bytes` (at most 64).
    fn bytewise(bytes: &[u8]) -> Delimiters {
        let mask = |set: &[u8]| {
            bytes
                .iter()
                .enumerate()
                .fold(0u64, |acc, (k, b)| acc | (u64::from(set.contains(b)) << k))
        };
        Delimiters {
            separators: mask(b", "),
            equals: mask(b"="),
            spaces: mask(b" "),
            escaping: mask(b"\\\""),
        }
    }

    #[test]
    fn delimiter_masks_match_bytewise_tests() {
        let mut chunk = [b'a'; 16];
        for b in 0..=255u8 {
            for at in 0..16 {
                chunk.fill(b'a');
                chunk[(at + 5) % 16] = b'=';
                chunk[at] = b;
                let want = bytewise(&chunk);
                let want = ChunkDelimiters {
                    separators: want.separators,
                    equals: want.equals,
                    spaces: want.spaces,
                    escaping: want.escaping,
                };
                assert_eq!(classify_chunk(&chunk), want, "{b} at {at}");
                assert_eq!(classify_chunk_swar(&chunk), want, "{b} at {at}");
            }
        }
        // Every block start of lines of every length up to 130: only the bytes that
        // are there count.
        let text = b"m,t=v f=\\1 \"x\" 5,a=b c d=e,f=g h=i\\j";
        let long: Vec<u8> = text.iter().cycle().take(130).copied().collect();
        for len in 0..=long.len() {
            let line = &long[..len];
            for i in 0..=len {
                let block = &line[i..len.min(i + 64)];
                assert_eq!(delimiters_64(line, i), bytewise(block), "{len} {i}");
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    let avx2 = unsafe { delimiters_64_avx2(line, i) };
                    assert_eq!(avx2, bytewise(block), "avx2 {len} {i}");
                }
            }
        }
    }

    #[test]
    fn parses_eight_digits() {
        for n in [0u64, 1, 9, 10, 12345678, 99999999, 10000000, 87654321, 1000] {
            let text = format!("{n:08}");
            let w = u64::from_le_bytes(text.as_bytes().try_into().unwrap());
            assert_eq!(parse_eight_digits(w), n);
        }
    }
}
