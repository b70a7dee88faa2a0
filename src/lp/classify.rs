//! Classifying 64 bytes of a line at once into bitmasks (bit `k` for byte `k` of the
//! block), for the plain-line fast path: SSE2 (every x86_64) or AVX2 (checked at run
//! time), and portable SWAR elsewhere; and the prefix XOR that turns a mask of
//! delimiters into the spans between them.
//!
//! Bytes past the end of the line are in no mask. The last partial chunk of a line
//! is classified from the line's last chunk-sized window, shifted, rather than
//! copied, unless the whole line is shorter than a chunk.

use super::swar::{eq_flags, flags_to_bits};

/// The bytes that shape a plain line.
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

/// The bytes a plain decimal number is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct NumberBytes {
    pub(super) digits: u64,
    pub(super) dots: u64,
    pub(super) minus: u64,
}

impl From<[u64; 4]> for Delimiters {
    fn from([separators, equals, spaces, escaping]: [u64; 4]) -> Self {
        Self {
            separators,
            equals,
            spaces,
            escaping,
        }
    }
}

impl From<[u64; 3]> for NumberBytes {
    fn from([digits, dots, minus]: [u64; 3]) -> Self {
        Self {
            digits,
            dots,
            minus,
        }
    }
}

/// A way to classify blocks.
pub(super) trait Classifier: Copy {
    /// The [`Delimiters`] of the 64 bytes at `buf[i..]`; `i` at most `buf.len()`.
    fn delimiters(self, buf: &[u8], i: usize) -> Delimiters;
    /// The [`NumberBytes`] of the 64 bytes at `buf[i..]`; `i` at most `buf.len()`.
    fn number_bytes(self, buf: &[u8], i: usize) -> NumberBytes;
    /// Bit `k` of the result is the XOR of bits `0..=k` of `x`: set from the 1st,
    /// 3rd ... set bit of `x` up to (not including) the next one.
    fn prefix_xor(self, x: u64) -> u64;
}

/// The classifier every CPU of the target has: SSE2 on x86_64, SWAR elsewhere.
#[derive(Debug, Clone, Copy)]
pub(super) struct Baseline;

impl Classifier for Baseline {
    #[inline(always)]
    fn delimiters(self, buf: &[u8], i: usize) -> Delimiters {
        block(buf, i, chunk_delimiters).into()
    }

    #[inline(always)]
    fn number_bytes(self, buf: &[u8], i: usize) -> NumberBytes {
        block(buf, i, chunk_number_bytes).into()
    }

    #[inline(always)]
    fn prefix_xor(self, mut x: u64) -> u64 {
        for shift in [1, 2, 4, 8, 16, 32] {
            x ^= x << shift;
        }
        x
    }
}

/// The AVX2 classifier, 32 bytes an instruction, with the carry-less multiply and
/// bit instructions every AVX2 CPU also has. A value exists only on CPUs that have
/// AVX2, PCLMULQDQ, BMI1, LZCNT and POPCNT, which is what makes its use (and code
/// compiled for those features) sound.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(super) struct Avx2(());

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    /// The classifier, if the CPU has all it needs: checked once, then one load.
    #[inline(always)]
    pub(super) fn detect() -> Option<Self> {
        use std::sync::atomic::{AtomicU8, Ordering};
        const UNKNOWN: u8 = 0;
        const ABSENT: u8 = 1;
        const PRESENT: u8 = 2;
        static FEATURES: AtomicU8 = AtomicU8::new(UNKNOWN);
        let mut features = FEATURES.load(Ordering::Relaxed);
        if features == UNKNOWN {
            let all = std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("pclmulqdq")
                && std::is_x86_feature_detected!("bmi1")
                && std::is_x86_feature_detected!("lzcnt")
                && std::is_x86_feature_detected!("popcnt");
            features = if all { PRESENT } else { ABSENT };
            FEATURES.store(features, Ordering::Relaxed);
        }
        (features == PRESENT).then_some(Self(()))
    }
}

#[cfg(target_arch = "x86_64")]
impl Classifier for Avx2 {
    #[inline(always)]
    fn delimiters(self, buf: &[u8], i: usize) -> Delimiters {
        // SAFETY: `self` exists, so the CPU has AVX2.
        unsafe { avx2::delimiters(buf, i) }.into()
    }

    #[inline(always)]
    fn number_bytes(self, buf: &[u8], i: usize) -> NumberBytes {
        // SAFETY: `self` exists, so the CPU has AVX2.
        unsafe { avx2::number_bytes(buf, i) }.into()
    }

    #[inline(always)]
    fn prefix_xor(self, x: u64) -> u64 {
        // SAFETY: `self` exists, so the CPU has PCLMULQDQ.
        unsafe { avx2::prefix_xor(x) }
    }
}

/// Assembles the `N` masks of the block at `buf[i..]` from chunks of `W` bytes
/// classified by `classify`, which puts chunk byte `k` at bit `k` of each mask.
#[inline(always)]
fn block<const W: usize, const N: usize>(
    buf: &[u8],
    i: usize,
    classify: impl Fn(&[u8; W]) -> [u64; N],
) -> [u64; N] {
    let mut all = [0; N];
    for k in 0..64 / W {
        let at = i + W * k;
        let chunk = if let Some(chunk) = buf.get(at..at + W) {
            classify(chunk.try_into().expect("W bytes"))
        } else if at >= buf.len() {
            break;
        } else if let Some(last) = buf.len().checked_sub(W) {
            // The line's last W bytes, shifted so that `at` comes first.
            classify(buf[last..].try_into().expect("W bytes")).map(|mask| mask >> (at - last))
        } else {
            let mut padded = [0u8; W];
            padded[..buf.len() - at].copy_from_slice(&buf[at..]);
            classify(&padded)
        };
        for (all, mask) in all.iter_mut().zip(chunk) {
            *all |= mask << (W * k);
        }
    }
    all
}

/// Separators, equals, spaces and escaping bytes of a chunk, with SSE2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn chunk_delimiters(chunk: &[u8; 16]) -> [u64; 4] {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 only, which x86_64 always has (it is part of the architecture's
    // baseline); the load reads the 16 bytes of `chunk`, with no alignment requirement.
    unsafe {
        let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
        let is = |b: u8| _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b as i8));
        let mask = |v| u64::from(_mm_movemask_epi8(v) as u16);
        let spaces = is(b' ');
        [
            mask(_mm_or_si128(is(b','), spaces)),
            mask(is(b'=')),
            mask(spaces),
            mask(_mm_or_si128(is(b'\\'), is(b'"'))),
        ]
    }
}

/// Digits, dots and minus signs of a chunk, with SSE2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn chunk_number_bytes(chunk: &[u8; 16]) -> [u64; 3] {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_set1_epi8,
        _mm_sub_epi8,
    };
    // SAFETY: as in `chunk_delimiters`.
    unsafe {
        let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
        let mask = |v| u64::from(_mm_movemask_epi8(v) as u16);
        // A digit is at most 9 above `0`, as an unsigned byte.
        let above_zero = _mm_sub_epi8(bytes, _mm_set1_epi8(b'0' as i8));
        let digits = _mm_cmpeq_epi8(_mm_min_epu8(above_zero, _mm_set1_epi8(9)), above_zero);
        [
            mask(digits),
            mask(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'.' as i8))),
            mask(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'-' as i8))),
        ]
    }
}

#[cfg(not(target_arch = "x86_64"))]
use {chunk_delimiters_swar as chunk_delimiters, chunk_number_bytes_swar as chunk_number_bytes};

/// The bits of a 16-byte chunk for which `test` flags the byte (see `swar`).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn chunk_bits(chunk: &[u8; 16], test: impl Fn(u64) -> u64) -> u64 {
    let low = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
    let high = u64::from_le_bytes(chunk[8..].try_into().expect("8 bytes"));
    u64::from(flags_to_bits(test(low)) | flags_to_bits(test(high)) << 8)
}

/// The portable [`chunk_delimiters`].
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn chunk_delimiters_swar(chunk: &[u8; 16]) -> [u64; 4] {
    [
        chunk_bits(chunk, |w| eq_flags(w, b',') | eq_flags(w, b' ')),
        chunk_bits(chunk, |w| eq_flags(w, b'=')),
        chunk_bits(chunk, |w| eq_flags(w, b' ')),
        chunk_bits(chunk, |w| eq_flags(w, b'\\') | eq_flags(w, b'"')),
    ]
}

/// The portable [`chunk_number_bytes`].
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn chunk_number_bytes_swar(chunk: &[u8; 16]) -> [u64; 3] {
    [
        chunk_bits(chunk, super::swar::digit_flags),
        chunk_bits(chunk, |w| eq_flags(w, b'.')),
        chunk_bits(chunk, |w| eq_flags(w, b'-')),
    ]
}

/// The AVX2 chunk classifiers and the blocks built from them.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8, _mm256_sub_epi8, _mm_clmulepi64_si128,
        _mm_cvtsi128_si64, _mm_set_epi64x,
    };

    /// Multiplying by all ones without carries XORs every bit into all those above.
    #[target_feature(enable = "pclmulqdq")]
    #[inline]
    pub(super) fn prefix_xor(x: u64) -> u64 {
        let product = _mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set_epi64x(0, -1), 0);
        _mm_cvtsi128_si64(product) as u64
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn delimiters(buf: &[u8], i: usize) -> [u64; 4] {
        super::block(buf, i, |chunk: &[u8; 32]| {
            let bytes = load(chunk);
            let is = |b: u8| _mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(b as i8));
            let spaces = is(b' ');
            [
                mask(_mm256_or_si256(is(b','), spaces)),
                mask(is(b'=')),
                mask(spaces),
                mask(_mm256_or_si256(is(b'\\'), is(b'"'))),
            ]
        })
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn number_bytes(buf: &[u8], i: usize) -> [u64; 3] {
        super::block(buf, i, |chunk: &[u8; 32]| {
            let bytes = load(chunk);
            let above_zero = _mm256_sub_epi8(bytes, _mm256_set1_epi8(b'0' as i8));
            let digits =
                _mm256_cmpeq_epi8(_mm256_min_epu8(above_zero, _mm256_set1_epi8(9)), above_zero);
            [
                mask(digits),
                mask(_mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(b'.' as i8))),
                mask(_mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(b'-' as i8))),
            ]
        })
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn load(chunk: &[u8; 32]) -> __m256i {
        // SAFETY: reads the 32 bytes of `chunk`, with no alignment requirement.
        unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn mask(v: __m256i) -> u64 {
        u64::from(_mm256_movemask_epi8(v) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masks of `bytes` (at most 64), one byte at a time.
    fn bytewise(bytes: &[u8]) -> (Delimiters, NumberBytes) {
        let mask = |test: &dyn Fn(u8) -> bool| {
            bytes
                .iter()
                .enumerate()
                .fold(0u64, |acc, (k, &b)| acc | (u64::from(test(b)) << k))
        };
        let delimiters = Delimiters {
            separators: mask(&|b| b == b',' || b == b' '),
            equals: mask(&|b| b == b'='),
            spaces: mask(&|b| b == b' '),
            escaping: mask(&|b| b == b'\\' || b == b'"'),
        };
        let numbers = NumberBytes {
            digits: mask(&|b| b.is_ascii_digit()),
            dots: mask(&|b| b == b'.'),
            minus: mask(&|b| b == b'-'),
        };
        (delimiters, numbers)
    }

    #[track_caller]
    fn check(classifier: impl Classifier, buf: &[u8], i: usize) {
        let want = bytewise(&buf[i..buf.len().min(i + 64)]);
        let got = (
            classifier.delimiters(buf, i),
            classifier.number_bytes(buf, i),
        );
        assert_eq!(got, want, "{:?} at {i}", String::from_utf8_lossy(buf));
        // The portable chunk classifiers, whatever the target.
        let swar = (
            Delimiters::from(block(buf, i, chunk_delimiters_swar)),
            NumberBytes::from(block(buf, i, chunk_number_bytes_swar)),
        );
        assert_eq!(
            swar,
            want,
            "swar: {:?} at {i}",
            String::from_utf8_lossy(buf)
        );
    }

    #[test]
    fn every_byte_value_in_every_position() {
        let mut block = [b'a'; 64];
        for b in 0..=255u8 {
            for at in 0..64 {
                block.fill(b'a');
                block[(at + 5) % 64] = b'=';
                block[at] = b;
                check(Baseline, &block, 0);
                #[cfg(target_arch = "x86_64")]
                if let Some(avx2) = Avx2::detect() {
                    check(avx2, &block, 0);
                }
            }
        }
    }

    #[test]
    fn prefix_xors_agree() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x = x.rotate_left(7).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (x >> 3);
            let want = (0..64).fold(0u64, |acc, k| {
                acc | (u64::from((x & ((2u128 << k) - 1) as u64).count_ones() % 2 == 1) << k)
            });
            assert_eq!(Baseline.prefix_xor(x), want, "{x:#x}");
            #[cfg(target_arch = "x86_64")]
            if let Some(avx2) = Avx2::detect() {
                assert_eq!(avx2.prefix_xor(x), want, "{x:#x}");
            }
        }
    }

    #[test]
    fn only_the_bytes_that_are_there_count() {
        // Every block start of lines of every length up to 150.
        let text = b"m,t=v f=\\1 \"x\" 5,a=-1.5 c d=e,f=g h=i\\j9";
        let long: Vec<u8> = text.iter().cycle().take(150).copied().collect();
        for len in 0..=long.len() {
            for i in 0..=len {
                check(Baseline, &long[..len], i);
                #[cfg(target_arch = "x86_64")]
                if let Some(avx2) = Avx2::detect() {
                    check(avx2, &long[..len], i);
                }
            }
        }
    }
}
