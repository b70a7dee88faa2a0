//! The fast path of [`parse_line`](super::line::parse_line), for plain lines: no
//! backslash and no double quote anywhere, which is nearly every line real clients
//! send (string fields aside).
//!
//! Without escapes and strings, three bytes decide a line's whole structure: `,` and
//! the space end the measurement or a value, `=` ends a key. The line is classified
//! 64 bytes at a time into bitmasks of those delimiters, and the grammar of
//! `scanKey` and `scanFields` becomes a few word operations per block: the
//! delimiters must alternate (measurement or value, then `=`, then value ...), which
//! a prefix XOR of their mask checks, and no two may touch (no empty token). What is
//! left is per token and shared with the full parser: the tag keys' duplicate check
//! and each field value's type, then the timestamp.
//!
//! The fast path answers only when it is sure. `Some` is what the full parser
//! returns for the line; `None` means "ask it", for escapes, strings, blanks InfluxDB
//! skips, tag values starting with `=`, numbers that need a range check, tag keys
//! whose order and fingerprints cannot rule out a duplicate, and every invalid line
//! (so errors keep the full parser's words and order).

use super::line::{self, Duplicates, Line, TagKey, TagKeyCheck};
use super::swar::{self, Delimiters};

/// The longest line taken: any key in it is then within InfluxDB's limit, so the
/// limit needs no check.
const MAX_LEN: usize = line::MAX_KEY_LENGTH - line::FIELD_KEY_SEPARATOR_LEN;

/// Bytes per block: one bit of a `u64` mask each.
const BLOCK: usize = 64;

/// Validates a plain line, if it is one (see the module docs).
pub(super) fn parse(line: &[u8]) -> Option<Line> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, as just checked (a cached flag).
        return unsafe { parse_avx2(line) };
    }
    parse_blocks(line, swar::delimiters_64)
}

/// [`parse`] with the AVX2 classifier, half the instructions of SSE2's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn parse_avx2(line: &[u8]) -> Option<Line> {
    parse_blocks(line, |line, base| swar::delimiters_64_avx2(line, base))
}

/// [`parse`] with `classify` finding the delimiters of each block.
#[inline(always)]
fn parse_blocks(line: &[u8], classify: impl Fn(&[u8], usize) -> Delimiters) -> Option<Line> {
    // Leading blanks are skipped by InfluxDB: not a plain line's business.
    if line.len() > MAX_LEN || matches!(line.first(), None | Some(b'\t' | 0)) {
        return None;
    }
    let mut walk = Walk::new();
    let mut base = 0;
    while base < line.len() {
        let block = classify(line, base);
        if block.escaping != 0 {
            return None;
        }
        if let Some(fields_end) = walk.block(line, base, block)? {
            // The full parser's check of the timestamp (and trailing spaces) is as
            // fast as any.
            let has_timestamp = line::scan_time(line, fields_end).ok()?;
            return Some(walk.line(has_timestamp));
        }
        base += BLOCK;
    }
    walk.finish(line)
}

/// The state carried from one block of a line to the next.
struct Walk {
    /// All ones after an odd number of markers (delimiters before the end of the
    /// field set), else 0.
    odd: u64,
    /// One past the last marker: where the current token starts.
    token_start: usize,
    /// Past the space ending the tag set.
    in_fields: bool,
    /// The measurement's end, once found (it is never at 0).
    measurement_end: usize,
    tag_keys: TagKeyCheck,
}

impl Walk {
    fn new() -> Self {
        Self {
            odd: 0,
            token_start: 0,
            in_fields: false,
            measurement_end: 0,
            tag_keys: TagKeyCheck::new(),
        }
    }

    /// Takes the block at `base`. `Some(Some(at))` when the field set ends at the
    /// space at `at`; `None` when the line is not plain or not valid.
    #[inline(always)]
    fn block(&mut self, line: &[u8], base: usize, block: Delimiters) -> Option<Option<usize>> {
        // Bits of the tag set (measurement included), and the space ending it.
        let (key, key_end) = if self.in_fields {
            (0, 0)
        } else {
            let space = lowest(block.spaces);
            (space.wrapping_sub(1), space)
        };
        let fields_end = lowest(block.spaces & !key_end);
        // Markers are the delimiters up to the end of the field set.
        let live = if fields_end == 0 {
            !0
        } else {
            fields_end | (fields_end - 1)
        };
        let markers = (block.separators | block.equals) & live;
        let equals = block.equals & live;
        // Counting markers from 1, the odd ones end the measurement or a value and
        // the even ones are exactly the `=`.
        let odd = prefix_xor(markers) ^ self.odd;
        if markers & !odd != equals {
            return None;
        }
        // No empty token: no marker right after another (or at the line's start).
        let after_marker = (markers << 1) | u64::from(self.token_start == base);
        if markers & after_marker != 0 {
            return None;
        }
        self.odd = 0u64.wrapping_sub(odd >> 63);
        if self.measurement_end == 0 && markers != 0 {
            self.measurement_end = base + markers.trailing_zeros() as usize;
        }
        let mut keys = equals & key;
        while keys != 0 {
            let at = keys.trailing_zeros() as usize;
            keys &= keys - 1;
            let start = self.token_start_before(markers, base, at);
            self.tag_keys.push(
                line,
                TagKey {
                    start,
                    end: base + at,
                },
            );
        }
        if key_end != 0 {
            // InfluxDB skips blanks before the fields.
            let at = base + key_end.trailing_zeros() as usize;
            if self.tag_keys.verdict() != Duplicates::None
                || matches!(line.get(at + 1), Some(b'\t' | 0))
            {
                return None;
            }
            self.in_fields = true;
        }
        let mut values = block.separators & live & !key & !key_end;
        while values != 0 {
            let at = values.trailing_zeros() as usize;
            values &= values - 1;
            let start = self.token_start_before(markers, base, at);
            if !field_value_is_plain(line, start, base + at) {
                return None;
            }
        }
        if markers != 0 {
            self.token_start = base + BLOCK - markers.leading_zeros() as usize;
        }
        Some((fields_end != 0).then(|| base + fields_end.trailing_zeros() as usize))
    }

    /// Where the token ending at bit `at` of the block at `base` starts.
    #[inline(always)]
    fn token_start_before(&self, markers: u64, base: usize, at: usize) -> usize {
        let before = markers & ((1 << at) - 1);
        if before == 0 {
            self.token_start
        } else {
            base + BLOCK - before.leading_zeros() as usize
        }
    }

    /// The end of a line without timestamp: it must end in a field value.
    fn finish(&self, line: &[u8]) -> Option<Line> {
        let ends_in_value = self.in_fields && self.odd == 0 && self.token_start < line.len();
        (ends_in_value && field_value_is_plain(line, self.token_start, line.len()))
            .then(|| self.line(false))
    }

    fn line(&self, has_timestamp: bool) -> Line {
        Line {
            measurement_end: self.measurement_end,
            measurement_escaped: false,
            has_timestamp,
        }
    }
}

/// The lowest set bit of `mask` alone (0 if none).
#[inline(always)]
fn lowest(mask: u64) -> u64 {
    mask & mask.wrapping_neg()
}

/// Bit `k` of the result is the XOR of bits `0..=k` of `x`: set at the 1st, 3rd ...
/// set bit of `x` and on to the next one.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        x ^= x << shift;
    }
    x
}

/// Whether `line[start..end]`, a field value without delimiters, is a number in a
/// form that needs no range check, or a boolean.
#[inline(always)]
fn field_value_is_plain(line: &[u8], start: usize, end: usize) -> bool {
    match line[start] {
        b'0'..=b'9' | b'.' | b'-' => is_plain_number(line, start, end),
        _ => line::is_boolean(&line[start..end]),
    }
}

/// Whether `line[start..end]` (not empty) is one of the number forms
/// [`line::plain_number_end`] accepts: `-?[0-9.]+` with a digit and at most one `.`,
/// `-?[0-9]+i` or `[0-9]+u`, all short enough to need no range check. Up to 16 bytes
/// before the suffix are checked as two words, whose digit and dot flags settle it
/// at once; longer numbers take the general check.
#[inline(always)]
fn is_plain_number(line: &[u8], start: usize, end: usize) -> bool {
    let suffix = line[end - 1];
    let digits_len = end - start - usize::from(matches!(suffix, b'i' | b'u'));
    let low = swar::load_padded(line, start);
    let (Some(low), 1..=16) = (low, digits_len) else {
        return line::plain_number_end(line, start) == Some(end);
    };
    // Flags of the first `n` bytes of a word (`n` at most 8).
    let lanes = |n: usize| swar::HIGH_BITS.checked_shr(8 * (8 - n) as u32).unwrap_or(0);
    let low_lanes = lanes(digits_len.min(8));
    let negative = line[start] == b'-';
    let sign = u64::from(negative) << 7;
    let digits = swar::digit_flags(low) & low_lanes;
    let dots = swar::eq_flags(low, b'.') & low_lanes;
    if digits | dots | sign != low_lanes {
        return false;
    }
    let (high_digits, high_dots) = if digits_len > 8 {
        let high_lanes = lanes(digits_len - 8);
        let high = swar::load_padded(line, start + 8).unwrap_or(0);
        let high_digits = swar::digit_flags(high) & high_lanes;
        let high_dots = swar::eq_flags(high, b'.') & high_lanes;
        if high_digits | high_dots != high_lanes {
            return false;
        }
        (high_digits, high_dots)
    } else {
        (0, 0)
    };
    if digits | high_digits == 0 {
        return false;
    }
    let no_dot = dots | high_dots == 0;
    match suffix {
        b'i' => no_dot,
        b'u' => no_dot && !negative,
        // One dot at most: each word has at most one, and not both have one.
        _ => {
            dots & dots.wrapping_sub(1) == 0
                && high_dots & high_dots.wrapping_sub(1) == 0
                && (dots == 0 || high_dots == 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    #[track_caller]
    fn plain(text: &str, measurement: &str, has_timestamp: bool) {
        let line = text.as_bytes();
        assert_eq!(
            parse(line),
            Some(Line {
                measurement_end: measurement.len(),
                measurement_escaped: false,
                has_timestamp,
            }),
            "{text:?}"
        );
        assert_eq!(
            super::super::naive::parse(line),
            Ok(parse(line).expect("taken")),
            "{text:?}"
        );
    }

    #[track_caller]
    fn undecided(text: &str) {
        assert_eq!(parse(text.as_bytes()), None, "{text:?}");
    }

    #[test]
    fn takes_plain_valid_lines() {
        // (Lines under eight bytes go to the full parser: its number check reads
        // eight bytes at a time.)
        plain("mmm f=10", "mmm", false);
        plain("mm f=1 0", "mm", true);
        plain("mm f=1  0", "mm", true);
        plain(
            "cpu,host=a,region=b usage=0.5,idle=99i,on=true 1700000000000000000",
            "cpu",
            true,
        );
        plain("m,b=1,a=2 f=-.5,g=5.,h=7u,i=F", "m", false);
        plain("a\tb,t=\tv f=1", "a\tb", false);
        plain("mm f=1 -5", "mm", true);
        plain("mm f=1 5   ", "mm", true);
        // A line over 16 bytes with delimiters in the last chunk's last byte.
        plain(
            "measurement_name,tag=value field=1,x=1",
            "measurement_name",
            false,
        );
    }

    #[test]
    fn leaves_the_rest_to_the_full_parser() {
        // Not plain
        undecided(r"m\ x f=1");
        undecided("m s=\"x\"");
        undecided("\tm f=1");
        undecided("m \tf=1");
        undecided("m  f=1");
        undecided("m,t==v f=1");
        undecided("m=x f=1");
        // Numbers that need a range check, or are no numbers
        undecided("m f=1e5");
        undecided(&format!("m f={}", "1".repeat(30)));
        undecided(&format!("m f={}i", "1".repeat(19)));
        undecided("m f=NaN");
        // Invalid, whatever the error
        for bad in [
            "",
            "m",
            "m ",
            ",t=v f=1",
            "m,t=v",
            "m,t f=1",
            "m,=v f=1",
            "m,t= f=1",
            "m f=",
            "m f",
            "m =1",
            "m f=1,",
            "m f=1,g",
            "m f=1 x",
            "mm f=1 5 5",
            "m,a=1,a=2 f=1",
            "m f=yes",
            "m f=1..2",
            "m f=-",
            "mm f=1 5x",
            "mm f=1 99999999999999999999",
        ] {
            undecided(bad);
        }
    }

    #[test]
    fn unsorted_tags_only_when_fingerprints_rule_out_duplicates() {
        plain("m,b=1,a=2,c=3 f=1", "m", false);
        // `axb` and `ayb` share a fingerprint.
        undecided("m,b=1,axb=2,ayb=3 f=1");
        // Sorted keys are compared, whatever their fingerprints.
        plain("m,axb=2,ayb=3 f=1", "m", false);
    }

    #[test]
    fn number_check_agrees_with_the_full_parsers() {
        // Every form around the word boundaries (8 and 16 bytes) and the range-check
        // lengths, as the last field and before another one.
        let mut numbers = vec![String::from("."), "-".into(), "-.".into(), "..".into()];
        for len in 1..=26 {
            let digits = "7".repeat(len);
            for body in [
                digits.clone(),
                format!("{}.{}", &digits[..len / 2], &digits[len / 2..]),
            ] {
                for form in [
                    "", "-", "i", "-i", "u", "-u", "x", ".", "..", "-.", "5-", "e5",
                ] {
                    numbers.push(match form {
                        "-" | "-." => format!("{form}{body}"),
                        "-i" | "-u" => format!("-{body}{}", &form[1..]),
                        _ => format!("{body}{form}"),
                    });
                }
            }
        }
        for n in &numbers {
            for text in [format!("m f={n}"), format!("m f={n},g=1")] {
                let line = text.as_bytes();
                let (start, end) = (4, 4 + n.len());
                let full = line::plain_number_end(line, start) == Some(end);
                assert_eq!(is_plain_number(line, start, end), full, "{text:?}");
            }
        }
    }

    /// Plain-looking lines: names and values from a small alphabet that includes
    /// every delimiter, so most lines are plain and many are subtly invalid.
    fn plainish_line() -> impl Strategy<Value = String> {
        let token = |chars: &'static str| {
            proptest::collection::vec(proptest::sample::select(chars.as_bytes().to_vec()), 1..6)
                .prop_map(|b| String::from_utf8(b).expect("ASCII"))
        };
        let value = prop_oneof![
            token("0123456789.-"),
            token("0123456789").prop_map(|d| format!("{d}i")),
            token("0123456789").prop_map(|d| format!("{d}u")),
            proptest::sample::select(vec!["t", "true", "F", "FALSE", "tru", "x"])
                .prop_map(String::from),
        ];
        (
            token("abcm"),
            proptest::collection::vec((token("abc="), token("xyz=")), 0..5),
            proptest::collection::vec((token("fgh"), value), 1..5),
            proptest::option::of(token("0123456789-")),
            proptest::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    proptest::sample::select(b", =\t\0".to_vec()),
                ),
                0..2,
            ),
        )
            .prop_map(|(m, tags, fields, ts, edits)| {
                let mut s = m;
                for (k, v) in tags {
                    s.push_str(&format!(",{k}={v}"));
                }
                for (i, (k, v)) in fields.into_iter().enumerate() {
                    s.push(if i == 0 { ' ' } else { ',' });
                    s.push_str(&format!("{k}={v}"));
                }
                if let Some(ts) = ts {
                    s.push_str(&format!(" {ts}"));
                }
                let mut bytes = s.into_bytes();
                for (at, byte) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                String::from_utf8(bytes).expect("ASCII")
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn agrees_with_the_oracle_when_it_answers(line in plainish_line()) {
            let oracle = super::super::naive::parse(line.as_bytes());
            let fast = parse(line.as_bytes());
            if let Some(fast) = fast {
                prop_assert_eq!(Ok(fast), oracle, "{:?}", line);
            }
            // Whichever classifier `parse` picked, the portable one agrees.
            prop_assert_eq!(parse_blocks(line.as_bytes(), swar::delimiters_64), fast);
        }
    }

    #[test]
    fn answers_for_most_valid_plain_lines() {
        // The fast path must actually carry the load: of generated lines the oracle
        // accepts, nearly all with sorted or distinct-fingerprint keys are taken.
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = plainish_line();
        let (mut valid, mut taken) = (0, 0);
        for _ in 0..5000 {
            let line = strategy.new_tree(&mut runner).expect("tree").current();
            if super::super::naive::parse(line.as_bytes()).is_ok() {
                valid += 1;
                taken += usize::from(parse(line.as_bytes()).is_some());
            }
        }
        assert!(valid > 500, "{valid} valid lines");
        assert!(
            taken * 10 >= valid * 8,
            "{taken} of {valid} valid lines taken"
        );
    }
}
