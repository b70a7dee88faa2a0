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

/// Packs the flags of a word (bit 7 of each byte) into bits 0..8, byte `k` to bit `k`.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
pub(super) fn flags_to_bits(flags: u64) -> u32 {
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

    #[test]
    fn packs_flags_to_bits() {
        for bits in [0u32, 1, 0x80, 0xff, 0xa5, 0x5a, 0x01 | 0x40] {
            let flags = (0..8).fold(0u64, |acc, k| {
                acc | (u64::from(bits >> k & 1) << (8 * k + 7))
            });
            assert_eq!(flags_to_bits(flags), bits);
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
