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
//! left: the tag keys' duplicate check (the full parser's, key by key), the field
//! values (a block at a time while they are plain floats, see [`FloatRuns`], then
//! one at a time), and the timestamp.
//!
//! The fast path answers only when it is sure. `Some` is what the full parser
//! returns for the line; `None` means "ask it", for escapes, strings, blanks InfluxDB
//! skips, `=` in the measurement or at the start of a tag value, numbers that need a
//! range check, tag keys whose order and fingerprints cannot rule out a duplicate,
//! lines too long to skip the key length check, and every invalid line (so errors
//! keep the full parser's words and order).

#[cfg(target_arch = "x86_64")]
use super::classify::Avx2;
use super::classify::{Baseline, Classifier, NumberBytes};
use super::line::{self, Duplicates, Line, TagKey, TagKeyCheck};
use super::swar;

/// The longest line taken: any key in it is then within InfluxDB's limit, so the
/// limit needs no check.
const MAX_LEN: usize = line::MAX_KEY_LENGTH - line::FIELD_KEY_SEPARATOR_LEN;

/// Bytes per block: one bit of a `u64` mask each.
const BLOCK: usize = 64;

/// Validates a plain line, if it is one (see the module docs).
pub(super) fn parse(line: &[u8]) -> Option<Line> {
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = Avx2::detect() {
        return parse_avx2(line, avx2);
    }
    parse_blocks(line, Baseline)
}

/// [`parse`] with the AVX2 classifier, compiled for the CPU features it checks so
/// that the classifier inlines.
#[cfg(target_arch = "x86_64")]
fn parse_avx2(line: &[u8], avx2: Avx2) -> Option<Line> {
    #[target_feature(enable = "avx2,pclmulqdq,bmi1,lzcnt,popcnt")]
    fn with_avx2(line: &[u8], avx2: Avx2) -> Option<Line> {
        parse_blocks(line, avx2)
    }
    // SAFETY: an `Avx2` exists only on CPUs that have every feature enabled here.
    unsafe { with_avx2(line, avx2) }
}

/// [`parse`] with `classifier` finding the delimiters of each block.
#[inline(always)]
fn parse_blocks(line: &[u8], classifier: impl Classifier) -> Option<Line> {
    // Leading blanks are skipped by InfluxDB: not a plain line's business.
    if line.len() > MAX_LEN || matches!(line.first(), None | Some(b'\t' | 0)) {
        return None;
    }
    let mut walk = Walk::new();
    let mut base = 0;
    while base < line.len() {
        if let Some(fields_end) = walk.block(line, base, classifier)? {
            let has_timestamp = timestamp_is_plain(line, fields_end + 1)
                || line::scan_time(line, fields_end).ok()?;
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
    /// Field values so far were all plain floats, checked a block at a time;
    /// once one is not, the rest are checked one value at a time.
    floats: Option<FloatRuns>,
}

impl Walk {
    fn new() -> Self {
        Self {
            odd: 0,
            token_start: 0,
            in_fields: false,
            measurement_end: 0,
            tag_keys: TagKeyCheck::new(),
            floats: Some(FloatRuns::default()),
        }
    }

    /// Takes the block at `base`. `Some(Some(at))` when the field set ends at the
    /// space at `at`; `None` when the line is not plain or not valid.
    #[inline(always)]
    fn block(
        &mut self,
        line: &[u8],
        base: usize,
        classifier: impl Classifier,
    ) -> Option<Option<usize>> {
        let block = classifier.delimiters(line, base);
        // Bits of the tag set (measurement included), and the space ending it.
        let (key, key_end) = if self.in_fields {
            (0, 0)
        } else {
            let space = lowest(block.spaces);
            (space.wrapping_sub(1), space)
        };
        let fields_end = lowest(block.spaces & !key_end);
        // The bits up to the end of the field set (or of the line).
        let live = if fields_end != 0 {
            fields_end | (fields_end - 1)
        } else if line.len() - base < BLOCK {
            (1 << (line.len() - base)) - 1
        } else {
            !0
        };
        // Escapes and strings are found with the delimiters, not in a pass of
        // their own: the walk then stops where one starts. (Past the field set
        // only the timestamp is left, whose checks take digits alone.)
        if block.escaping & live != 0 {
            return None;
        }
        let markers = (block.separators | block.equals) & live;
        let equals = block.equals & live;
        // Counting markers from 1, the odd ones end the measurement or a value and
        // the even ones are exactly the `=`.
        let odd = classifier.prefix_xor(markers) ^ self.odd;
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
        let fields = live & !key & !key_end;
        if let Some(floats) = &mut self.floats {
            // Value bytes: the runs from each `=` to the next marker.
            let values = fields & !odd & !equals;
            let bytes = if values == 0 {
                NumberBytes::default()
            } else {
                classifier.number_bytes(line, base)
            };
            match floats.check(values, bytes) {
                Runs::Floats => {}
                Runs::Invalid => return None,
                Runs::Other => self.floats = None,
            }
        }
        // One value at a time: each one ending in this block, from its start.
        let mut values = if self.floats.is_some() {
            0
        } else {
            block.separators & fields
        };
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
        let valid = ends_in_value
            && match &self.floats {
                Some(floats) => floats.ended_well(),
                None => field_value_is_plain(line, self.token_start, line.len()),
            };
        valid.then(|| self.line(false))
    }

    fn line(&self, has_timestamp: bool) -> Line {
        Line {
            measurement_end: self.measurement_end,
            measurement_escaped: false,
            has_timestamp,
        }
    }
}

/// Checks field values a block at a time, for the common case where every value is
/// a float that needs no range check (`-?[0-9.]+`, a digit, at most one `.`, under
/// 25 bytes: the float form of [`line::plain_number_end`]). Each rule is a few word
/// operations over the block's value bytes, with carries for values that run on
/// into the next block.
#[derive(Default)]
struct FloatRuns {
    /// The previous block's value bytes.
    prev_values: u64,
    /// A run with a dot reached the end of the previous block.
    dot_carry: u64,
    /// A run without digits so far reached the end of the previous block.
    digitless_carry: u64,
}

/// What [`FloatRuns::check`] found.
enum Runs {
    /// Every value byte so far is part of a valid float.
    Floats,
    /// A value is not a valid plain float but looks like a number: the full parser
    /// decides.
    Invalid,
    /// A value has bytes no number has (an integer's `i`, a boolean): check values
    /// one at a time from here.
    Other,
}

impl FloatRuns {
    /// Checks the block's value bytes `values`.
    #[inline(always)]
    fn check(&mut self, values: u64, bytes: NumberBytes) -> Runs {
        if values & !(bytes.digits | bytes.dots | bytes.minus) != 0 {
            return Runs::Other;
        }
        let starts = values & !(values << 1 | self.prev_values >> 63);
        // A minus sign only opens a value.
        let misplaced_minus = bytes.minus & values & !starts;
        // Adding each dot to its run carries through the rest of the run and clears
        // it, the dot included; a second dot in the same run is left set.
        let dots = bytes.dots & values;
        let (sum, dot_out) = values.overflowing_add(dots);
        let (sum, dot_carry_out) = sum.overflowing_add(self.dot_carry);
        let second_dot = dots & sum;
        // Adding each run's start to its leading non-digits carries to its first
        // digit; for a run without digits it carries out of the run, past `values`.
        let non_digits = values & !bytes.digits;
        let (sum, digitless_out) = non_digits.overflowing_add(starts & non_digits);
        let (sum, digitless_carry_out) = sum.overflowing_add(self.digitless_carry);
        let digitless = sum & !values;
        let too_long = has_run_of_25(values)
            || (!self.prev_values).leading_zeros() + (!values).trailing_zeros() >= 25;
        self.prev_values = values;
        self.dot_carry = u64::from(dot_out | dot_carry_out);
        self.digitless_carry = u64::from(digitless_out | digitless_carry_out);
        if misplaced_minus | second_dot | digitless != 0 || too_long {
            Runs::Invalid
        } else {
            Runs::Floats
        }
    }

    /// Whether the value that ends the line had a digit (the other rules were
    /// checked with its last block).
    fn ended_well(&self) -> bool {
        self.digitless_carry == 0
    }
}

/// Whether `bits` has 25 set bits in a row: a float that long needs a range check.
/// (A run across two blocks is the previous block's leading ones plus this one's
/// trailing ones.)
#[inline(always)]
fn has_run_of_25(bits: u64) -> bool {
    // Bit `i` of `run_k` is set when bits `i..i + k` all are.
    let run_2 = bits & bits >> 1;
    let run_4 = run_2 & run_2 >> 2;
    let run_8 = run_4 & run_4 >> 4;
    let run_16 = run_8 & run_8 >> 8;
    let run_24 = run_16 & run_8 >> 16;
    run_24 & bits >> 24 != 0
}

/// The lowest set bit of `mask` alone (0 if none).
#[inline(always)]
fn lowest(mask: u64) -> u64 {
    mask & mask.wrapping_neg()
}

/// Whether `line[start..]` is a timestamp in the usual form: 8 to 19 digits, not
/// starting with 9 if there are 19 (so within InfluxDB's range whatever follows).
/// Anything else (blanks, a sign, short or huge numbers) is for
/// [`line::scan_time`] to judge.
#[inline(always)]
fn timestamp_is_plain(line: &[u8], start: usize) -> bool {
    let len = line.len().saturating_sub(start);
    if !(8..=19).contains(&len) || (len == 19 && line[start] == b'9') {
        return false;
    }
    // Three eight-byte words, overlapping as needed, cover every digit.
    [start, start + (len - 8).min(8), line.len() - 8]
        .iter()
        .all(|&at| {
            swar::load(line, at).is_some_and(|word| swar::digit_flags(word) == swar::HIGH_BITS)
        })
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
        let taken = Ok(parse(line).expect("taken"));
        assert_eq!(super::super::naive::parse(line), taken, "{text:?}");
        assert_eq!(line::parse_in_full(line), taken, "{text:?}");
    }

    #[track_caller]
    fn undecided(text: &str) {
        assert_eq!(parse(text.as_bytes()), None, "{text:?}");
    }

    #[test]
    fn takes_plain_valid_lines() {
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
    fn runs_of_25() {
        for len in 0..=64 {
            for at in 0..=64 - len {
                let run = u64::MAX.checked_shr(64 - len as u32).unwrap_or(0);
                let bits = run.checked_shl(at as u32).unwrap_or(0);
                assert_eq!(has_run_of_25(bits), len >= 25, "{len} at {at}");
            }
        }
    }

    #[test]
    fn values_across_block_boundaries() {
        // Padding puts the value where a carry crosses from one 64-byte block to the
        // next: a run without digits, a second dot, a value ending the line at a
        // block's end.
        let pad = |n: usize| "_".repeat(n);
        undecided(&format!("m{} f=- 1700000000000000000", pad(59)));
        undecided(&format!("m{} f=1..5 1700000000000000000", pad(58)));
        undecided(&format!("m{} f=1.5.5 1700000000000000000", pad(58)));
        undecided(&format!("m{} f=.", pad(59)));
        undecided(&format!("m{} f=-.", pad(58)));
        let measurement = format!("m{}", pad(59));
        plain(&format!("{measurement} f=5"), &measurement, false);
        plain(&format!("{measurement} f=-5"), &measurement, false);
        for n in 50..70 {
            let measurement = format!("m{}", pad(n));
            plain(
                &format!("{measurement} f=-1.5,g=.5 1700000000000000000"),
                &measurement,
                true,
            );
            plain(
                &format!("{measurement} f=12345678901234.5678901 1700000000000000000"),
                &measurement,
                true,
            );
            plain(
                &format!("{measurement} f=1.5,g=7i,h=true"),
                &measurement,
                false,
            );
            undecided(&format!(
                "{measurement} f=123456789012345.678901234 1700000000000000000"
            ));
            undecided(&format!("{measurement} f=1.5,g=1.5-,h=1"));
        }
    }

    #[test]
    fn unsorted_tags_only_when_fingerprints_rule_out_duplicates() {
        plain("m,b=1,a=2,c=3 f=1", "m", false);
        // `axb` and `ayb` share a fingerprint.
        undecided("m,b=1,axb=2,ayb=3 f=1");
        // Sorted keys are compared, whatever their fingerprints.
        plain("m,axb=2,ayb=3 f=1", "m", false);
        // The classic `cpu` shape of load tests: ten unsorted keys, no shared
        // fingerprint.
        plain(
            "cpu,hostname=host_0,region=eu-west-1,datacenter=eu-west-1a,rack=42,os=Ubuntu16.10,\
             arch=x86,team=NYC,service=18,service_version=1,service_environment=production \
             usage_user=58.1317,usage_system=2.6454 1451606400000000000",
            "cpu",
            true,
        );
    }

    #[test]
    fn timestamp_check_agrees_with_the_full_parser() {
        for len in 0..=21 {
            for first in ['1', '9', '0', '-', 'x', ' '] {
                for last in ['5', 'x', ' '] {
                    let mut ts: Vec<u8> = "1".repeat(len).into_bytes();
                    if len > 0 {
                        ts[0] = first as u8;
                        ts[len - 1] = last as u8;
                    }
                    for pos in 0..len.max(1) {
                        let mut ts = ts.clone();
                        if pos > 0 && pos < len - 1 {
                            ts[pos] = b'/';
                        }
                        let line = [b"m f=1 ".as_slice(), &ts].concat();
                        if timestamp_is_plain(&line, 6) {
                            assert_eq!(
                                line::scan_time(&line, 5),
                                Ok(true),
                                "{:?}",
                                String::from_utf8_lossy(&line)
                            );
                        }
                    }
                }
            }
        }
        assert!(timestamp_is_plain(b"m f=1 1700000000000000000", 6));
        assert!(timestamp_is_plain(b"m f=1 8999999999999999999", 6));
        assert!(timestamp_is_plain(b"m f=1 1700000000", 6));
        assert!(!timestamp_is_plain(b"m f=1 9223372036854775807", 6));
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
    /// every delimiter, so most lines are plain and many are subtly invalid; an
    /// edit may put a delimiter, a backslash or a quote anywhere.
    /// Padding in the measurement moves every later token across the 64-byte block
    /// boundaries, and long values span them.
    fn plainish_line() -> impl Strategy<Value = String> {
        let token = |chars: &'static str| {
            proptest::collection::vec(proptest::sample::select(chars.as_bytes().to_vec()), 1..6)
                .prop_map(|b| String::from_utf8(b).expect("ASCII"))
        };
        let long_number =
            proptest::collection::vec(proptest::sample::select(b"0123456789.-".to_vec()), 1..30)
                .prop_map(|b| String::from_utf8(b).expect("ASCII"));
        let value = prop_oneof![
            4 => token("0123456789.-"),
            2 => "-?[0-9]{1,12}\\.[0-9]{1,14}",
            1 => long_number,
            1 => token("0123456789").prop_map(|d| format!("{d}i")),
            1 => token("0123456789").prop_map(|d| format!("{d}u")),
            1 => proptest::sample::select(vec!["t", "true", "F", "FALSE", "tru", "x"])
                .prop_map(String::from),
        ];
        (
            (token("abcm"), 0..130usize),
            proptest::collection::vec((token("abc="), token("xyz=")), 0..5),
            proptest::collection::vec((token("fgh"), value), 1..8),
            proptest::option::of(token("0123456789-")),
            proptest::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    proptest::sample::select(b", =\t\0\\\"".to_vec()),
                ),
                0..2,
            ),
        )
            .prop_map(|((m, padding), tags, fields, ts, edits)| {
                let mut s = format!("{m}{}", "_".repeat(padding));
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
        #![proptest_config(ProptestConfig::with_cases(20000))]

        #[test]
        fn agrees_with_the_oracle_when_it_answers(line in plainish_line()) {
            let oracle = super::super::naive::parse(line.as_bytes());
            let fast = parse(line.as_bytes());
            if let Some(fast) = fast {
                prop_assert_eq!(Ok(fast), oracle, "{:?}", line);
                prop_assert_eq!(Ok(fast), line::parse_in_full(line.as_bytes()), "{:?}", line);
            }
            // Whichever classifier `parse` picked, the portable one agrees.
            prop_assert_eq!(parse_blocks(line.as_bytes(), Baseline), fast);
        }
    }

    /// Valid lines of the kind the fast path is for: sorted tags, values in every
    /// plain form, padding that moves tokens across block boundaries.
    fn plain_valid_line() -> impl Strategy<Value = (String, usize, bool)> {
        let value = prop_oneof![
            "-?[0-9]{1,11}\\.[0-9]{1,11}",
            "-?[0-9]{1,17}",
            "-?[0-9]{1,15}i",
            "[0-9]{1,15}u",
            proptest::sample::select(vec!["t", "T", "true", "False", "FALSE", "f"])
                .prop_map(String::from),
        ];
        (
            "[a-z]{1,8}_{4,130}",
            proptest::collection::btree_map("[a-z]{1,6}", "[a-z0-9.-]{1,8}", 0..12),
            proptest::collection::vec(("[a-z]{1,6}", value), 1..12),
            proptest::option::of("[1-8][0-9]{7,18}"),
        )
            .prop_map(|(m, tags, fields, ts)| {
                let mut s = m.clone();
                for (k, v) in tags {
                    s.push_str(&format!(",{k}={v}"));
                }
                for (i, (k, v)) in fields.into_iter().enumerate() {
                    s.push(if i == 0 { ' ' } else { ',' });
                    s.push_str(&format!("{k}={v}"));
                }
                if let Some(ts) = &ts {
                    s.push_str(&format!(" {ts}"));
                }
                (s, m.len(), ts.is_some())
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// The fast path carries the load: it answers for every such line.
        #[test]
        fn takes_every_plain_valid_line((line, measurement_end, has_timestamp) in plain_valid_line()) {
            let want = Line { measurement_end, measurement_escaped: false, has_timestamp };
            prop_assert_eq!(super::super::naive::parse(line.as_bytes()), Ok(want), "{:?}", line);
            prop_assert_eq!(parse(line.as_bytes()), Some(want), "{:?}", line);
            prop_assert_eq!(parse_blocks(line.as_bytes(), Baseline), Some(want), "{:?}", line);
        }
    }
}
