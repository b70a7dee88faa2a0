//! Validation of one line-protocol point, as InfluxDB 1.x's parser does it.
//!
//! [`parse_line`] accepts exactly the points InfluxDB 1.x's `ParsePointsWithPrecision`
//! accepts and rejects the others with InfluxDB's error text, so a proxy that forwards
//! only accepted lines never has a batch refused by its backends. It is a port of
//! `parsePoint`, `scanKey`, `scanFields`, `scanNumber`, `scanBoolean` and `scanTime` in
//! <https://github.com/influxdata/influxdb/blob/004d1cf413d9dd5ed27fb3e761033ceff3def206/models/points.go>,
//! with 16-bytes-at-a-time searches (and `memchr` inside strings) jumping over the
//! bytes that cannot change the parser's state, and word-at-a-time fast paths for the
//! common number and timestamp forms in front of the careful ports.
//!
//! InfluxDB's quirks are kept on purpose, because the point of validating is to
//! agree with the backend:
//!
//! - In the measurement and tag set a byte counts as escaped when the byte *before* it
//!   is a backslash, so `m\\ x=1` is one measurement `m\\ x=1` missing its fields. In
//!   the field set a backslash skips the next byte.
//! - A tag value may start with `=` (`t==v` is tag `t`, value `=v`).
//! - After a closing quote a string value runs on to the next `,` or space
//!   (`s="a"b` is accepted).
//! - Leading spaces, tabs and NULs before the measurement, the fields and the
//!   timestamp are skipped.
//!
//! Differences, each chosen:
//!
//! - Unsigned `123u` values are accepted (stock InfluxDB 1.x has
//!   `enableUint64Support = false` and answers "invalid number"); the field checks
//!   are otherwise those of the enabled path.
//! - The timestamp range check cannot know the request precision, so only the
//!   precision-independent part is done here: a value must be a valid `i64` inside
//!   InfluxDB's nanosecond range, which every coarser precision only narrows.
//! - For the 64 KiB series-key limit, field keys are measured as the field scanner
//!   sees them (a backslash skips the next byte); InfluxDB's `walkFields` re-scans
//!   them differently, which only matters for keys over 64 KiB that end in `\\`.

use std::fmt;

use memchr::{memchr, memchr2};

use super::swar::{self, find_any};

/// InfluxDB's `MaxKeyLength`: the largest measurement-plus-tags key, and the largest
/// key plus [`FIELD_KEY_SEPARATOR_LEN`] plus field key.
pub const MAX_KEY_LENGTH: usize = 65535;

/// Length of tsm1's field-key separator, which InfluxDB counts into the series key
/// size (`seriesKeySize`).
pub(super) const FIELD_KEY_SEPARATOR_LEN: usize = 4;

/// Integers with at least this many characters (sign included) may overflow `i64`, so
/// only they are parsed (`maxInt64Digits`); shorter ones cannot.
const INT_CHECK_DIGITS: usize = 19;

/// Unsigned integers with at least this many digits may overflow `u64`
/// (`maxUint64Digits`).
const UINT_CHECK_DIGITS: usize = 20;

/// Floats with at least this many characters, or any in scientific notation, are
/// parsed to check their range (`maxFloat64Digits`); shorter plain decimals fit.
const FLOAT_CHECK_DIGITS: usize = 25;

/// InfluxDB's `MinNanoTime`: the two lowest `i64` values are sentinels.
const MIN_NANO_TIME: i64 = i64::MIN + 2;

/// InfluxDB's `MaxNanoTime`: `i64::MAX` is reserved for exclusive ranges.
const MAX_NANO_TIME: i64 = i64::MAX - 1;

/// Tag sets up to this size are checked for duplicates on the stack when they are not
/// already sorted; larger unsorted sets (rare) use a heap buffer when their key
/// fingerprints collide. A tuning choice.
const SMALL_TAG_SET: usize = 32;

/// A valid point, as positions in the raw line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// End of the measurement in the raw line: `&line[..measurement_end]` is the escaped measurement.
    ///
    /// Lines from [`scan_lines`](super::scan::scan_lines) never start with blanks; if a
    /// caller passes one that does, the blanks are skipped (as InfluxDB does) but are
    /// still inside `line[..measurement_end]`.
    pub measurement_end: usize,
    /// The measurement contains a backslash escape (so routing must unescape it).
    pub measurement_escaped: bool,
    /// The line has a timestamp.
    pub has_timestamp: bool,
}

/// Why a point was rejected. `Display` is InfluxDB 1.x's message for the same input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// The line starts with a comma (or is empty).
    MissingMeasurement,
    /// Nothing after the measurement and tags.
    MissingFields,
    /// `m,=v` or `m, x=1` or a trailing comma in the tag set.
    MissingTagKey,
    /// `m,t x=1`, `m,t= x=1`.
    MissingTagValue,
    /// An unescaped `=` inside a tag value.
    InvalidTagFormat,
    /// Two tags with the same key.
    DuplicateTags,
    /// The series key (measurement, tags, and each field key) is over [`MAX_KEY_LENGTH`].
    MaxKeyLengthExceeded {
        /// The size InfluxDB computed.
        len: usize,
    },
    /// `m =1`, `m a=1,=2`.
    MissingFieldKey,
    /// `m a=`, `m a=,b=1`.
    MissingFieldValue,
    /// A field without `=`, or more `=` than fields.
    InvalidFieldFormat,
    /// A string field value is not closed.
    UnbalancedQuotes,
    /// A field value that starts like a number but is not one (NaN and Inf included).
    InvalidNumber,
    /// A float out of `f64` range, or malformed scientific notation.
    InvalidFloat,
    /// A field value that is not a number, string or boolean.
    InvalidBoolean,
    /// An `i` integer outside `i64`.
    IntegerOutOfRange(Excerpt),
    /// A `u` integer outside `u64`.
    UnsignedOutOfRange(Excerpt),
    /// The timestamp has a byte other than digits and a leading `-`.
    BadTimestamp,
    /// The timestamp is a lone `-`.
    TimestampSyntax,
    /// The timestamp does not fit in an `i64`.
    TimestampOutOfRange(Excerpt),
    /// The timestamp is one of InfluxDB's reserved sentinel times.
    TimeOutOfRange,
    /// Something other than spaces follows the timestamp.
    InvalidPoint,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingMeasurement => f.write_str("missing measurement"),
            Self::MissingFields => f.write_str("missing fields"),
            Self::MissingTagKey => f.write_str("missing tag key"),
            Self::MissingTagValue => f.write_str("missing tag value"),
            Self::InvalidTagFormat => f.write_str("invalid tag format"),
            Self::DuplicateTags => f.write_str("duplicate tags"),
            Self::MaxKeyLengthExceeded { len } => {
                write!(f, "max key length exceeded: {len} > {MAX_KEY_LENGTH}")
            }
            Self::MissingFieldKey => f.write_str("missing field key"),
            Self::MissingFieldValue => f.write_str("missing field value"),
            Self::InvalidFieldFormat => f.write_str("invalid field format"),
            Self::UnbalancedQuotes => f.write_str("unbalanced quotes"),
            Self::InvalidNumber => f.write_str("invalid number"),
            Self::InvalidFloat => f.write_str("invalid float"),
            Self::InvalidBoolean => f.write_str("invalid boolean"),
            Self::IntegerOutOfRange(n) => write!(
                f,
                "unable to parse integer {n}: strconv.ParseInt: parsing \"{n}\": value out of range"
            ),
            Self::UnsignedOutOfRange(n) => write!(
                f,
                "unable to parse unsigned {n}: strconv.ParseUint: parsing \"{n}\": value out of range"
            ),
            Self::BadTimestamp => f.write_str("bad timestamp"),
            Self::TimestampSyntax => f.write_str("strconv.ParseInt: parsing \"-\": invalid syntax"),
            Self::TimestampOutOfRange(n) => {
                write!(f, "strconv.ParseInt: parsing \"{n}\": value out of range")
            }
            Self::TimeOutOfRange => write!(
                f,
                "time outside range {MIN_NANO_TIME} - {MAX_NANO_TIME}"
            ),
            Self::InvalidPoint => f.write_str("point is invalid"),
        }
    }
}

impl std::error::Error for LineError {}

/// Longest number quoted in an error; longer ones are cut and end in `...`. Enough
/// for any realistic overflow while keeping `LineError` small and `Copy`.
const EXCERPT_CAP: usize = 40;

/// The start of an offending number, kept inline so errors stay `Copy` and
/// allocation-free. Always ASCII digits with an optional leading `-`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Excerpt {
    /// Bytes used in `buf`; always `<= EXCERPT_CAP`.
    len: u8,
    /// The number was longer than `EXCERPT_CAP`.
    truncated: bool,
    buf: [u8; EXCERPT_CAP],
}

impl Excerpt {
    pub(super) fn new(text: &[u8]) -> Self {
        let len = text.len().min(EXCERPT_CAP);
        let mut buf = [0; EXCERPT_CAP];
        buf[..len].copy_from_slice(&text[..len]);
        Self {
            // Cannot truncate: `len <= EXCERPT_CAP`, which fits in a `u8`.
            len: len as u8,
            truncated: text.len() > EXCERPT_CAP,
            buf,
        }
    }

    /// The quoted bytes (without the `...` of a cut excerpt).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl fmt::Display for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Excerpt({self})")
    }
}

/// Validates one point and locates its measurement, without allocating (except for
/// some unsorted tag sets over `SMALL_TAG_SET` tags).
///
/// `line` is one point as yielded by [`scan_lines`](super::scan::scan_lines): no
/// terminating newline, no leading blanks. Any input is safe.
///
/// # Errors
///
/// The first problem InfluxDB 1.x would report, in its order of checks.
pub fn parse_line(line: &[u8]) -> Result<Line, LineError> {
    match super::plain::parse(line) {
        Some(parsed) => Ok(parsed),
        None => parse_in_full(line),
    }
}

/// [`parse_line`] without the fast path for plain lines: the port of InfluxDB's
/// parser, for any line.
pub(super) fn parse_in_full(line: &[u8]) -> Result<Line, LineError> {
    let start = skip_blanks(line, 0);
    let (measurement_end, has_tags) = scan_measurement(line, start)?;
    let key_end = if has_tags {
        scan_tags(line, measurement_end + 1)?
    } else {
        measurement_end
    };
    let key_len = key_end - start;
    if key_len > MAX_KEY_LENGTH {
        return Err(LineError::MaxKeyLengthExceeded { len: key_len });
    }
    let fields = scan_fields(line, key_end, key_len)?;
    if fields.end == fields.start {
        return Err(LineError::MissingFields);
    }
    if let Some(field_key_len) = fields.long_key {
        return Err(LineError::MaxKeyLengthExceeded {
            len: key_len + FIELD_KEY_SEPARATOR_LEN + field_key_len,
        });
    }
    let has_timestamp = scan_time(line, fields.end)?;
    Ok(Line {
        measurement_end,
        measurement_escaped: memchr(b'\\', &line[start..measurement_end]).is_some(),
        has_timestamp,
    })
}

/// Appends the unescaped measurement (`\,` -> `,`, `\ ` -> ` `, `\\` as InfluxDB does) to `out`.
///
/// Mirrors InfluxDB's `escape.Unescape`: a backslash before `,`, `"`, space or `=` is
/// dropped; any other backslash, including both of `\\`, is kept.
pub fn unescape_measurement(raw: &[u8], out: &mut Vec<u8>) {
    let mut rest = raw;
    while let Some(at) = memchr(b'\\', rest) {
        match rest.get(at + 1) {
            Some(&next @ (b',' | b'"' | b' ' | b'=')) => {
                out.extend_from_slice(&rest[..at]);
                out.push(next);
                rest = &rest[at + 2..];
            }
            _ => {
                out.extend_from_slice(&rest[..=at]);
                rest = &rest[at + 1..];
            }
        }
    }
    out.extend_from_slice(rest);
}

/// `skipWhitespace`: spaces, tabs and NULs.
fn skip_blanks(buf: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | 0) = buf.get(i) {
        i += 1;
    }
    i
}

/// The bytes that end a measurement, a number and a boolean.
const COMMA_SPACE: [u8; 2] = [b',', b' '];
/// The bytes that end a tag key or a tag value (when not escaped).
const TAG_DELIMITERS: [u8; 3] = [b',', b' ', b'='];
/// The only bytes that change the field scanner's state outside a string.
const FIELD_SPECIALS: [u8; 5] = [b'\\', b'"', b'=', b',', b' '];

/// The byte at `i` counts as escaped in the key section: the byte before it is a
/// backslash (InfluxDB's rule there, even when that backslash is itself escaped).
fn escaped_by_prev(buf: &[u8], i: usize) -> bool {
    i > 0 && buf[i - 1] == b'\\'
}

/// The first byte of `set` at or after `i` that is not escaped by the byte before it
/// (the key-section rule, see [`escaped_by_prev`]).
#[inline(always)]
fn find_unescaped<const N: usize>(buf: &[u8], mut i: usize, set: [u8; N]) -> Option<usize> {
    loop {
        let at = find_any(buf, i, set);
        if at == buf.len() {
            return None;
        }
        if !escaped_by_prev(buf, at) {
            return Some(at);
        }
        i = at + 1;
    }
}

/// `scanMeasurement`: returns the position of the unescaped `,` or space ending the
/// measurement and whether tags follow.
fn scan_measurement(buf: &[u8], start: usize) -> Result<(usize, bool), LineError> {
    match buf.get(start) {
        None | Some(b',') => return Err(LineError::MissingMeasurement),
        Some(_) => {}
    }
    match find_unescaped(buf, start + 1, COMMA_SPACE) {
        Some(at) => Ok((at, buf[at] == b',')),
        None => Err(LineError::MissingFields),
    }
}

/// A tag key's bounds in the line; never empty.
#[derive(Clone, Copy)]
pub(super) struct TagKey {
    pub(super) start: usize,
    pub(super) end: usize,
}

/// The duplicate check of `scanKey`, fed one tag key at a time, in line order.
///
/// Clients usually send tags sorted, and keys in strictly increasing order have
/// no duplicate: neighbours are compared while that holds, on their first byte,
/// then on their first eight (one word each), and in full only if those are
/// equal too. Once a key is out of order, every key gets an 8-bit fingerprint
/// in a set, the earlier ones too (any between the first and the previous read
/// again from the buffer): equal keys have equal fingerprints, so while no two
/// keys share one there is no duplicate and no keys need comparing (the usual
/// case for unsorted sets too).
pub(super) struct TagKeyCheck {
    /// The first key, and the one pushed last (`end` 0 before there is one:
    /// a key never ends at 0).
    first: TagKey,
    prev: TagKey,
    /// Keys pushed while `sorted`.
    sorted_count: usize,
    /// The keys so far were strictly increasing: no duplicate, no fingerprints.
    sorted: bool,
    fingerprints: Fingerprints,
    duplicate: bool,
}

/// A set of 8-bit key fingerprints, and whether one was added twice.
#[derive(Default)]
struct Fingerprints {
    set: [u64; 4],
    shared: bool,
}

impl Fingerprints {
    #[inline(always)]
    fn add(&mut self, key: &[u8]) {
        let print = key_fingerprint(key);
        let (word, bit) = (usize::from(print / 64), 1 << (print % 64));
        self.shared |= self.set[word] & bit != 0;
        self.set[word] |= bit;
    }
}

/// What [`TagKeyCheck`] can tell from order and fingerprints alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Duplicates {
    None,
    Found,
    /// Unsorted keys share a fingerprint: only comparing them can tell.
    Unknown,
}

impl TagKeyCheck {
    pub(super) fn new() -> Self {
        const NONE: TagKey = TagKey { start: 0, end: 0 };
        Self {
            first: NONE,
            prev: NONE,
            sorted_count: 0,
            sorted: true,
            fingerprints: Fingerprints::default(),
            duplicate: false,
        }
    }

    /// Adds the (non-empty) key `buf[key.start..key.end]`; the keys before it
    /// and their values must be valid (they may be read again).
    #[inline(always)]
    pub(super) fn push(&mut self, buf: &[u8], key: TagKey) {
        // InfluxDB reports duplicates only after the whole tag set has scanned, so
        // the first one found is only remembered.
        if self.duplicate {
            return;
        }
        if self.sorted {
            if self.prev.end == 0 {
                self.first = key;
            } else {
                // Keys nearly always differ in their first byte: that decides
                // most comparisons.
                let order = buf[self.prev.start]
                    .cmp(&buf[key.start])
                    .then_with(|| key_order(buf, self.prev, key));
                match order {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        self.duplicate = true;
                        return;
                    }
                    std::cmp::Ordering::Greater => {
                        self.sorted = false;
                        self.fingerprint_earlier(buf);
                    }
                }
            }
            self.prev = key;
            self.sorted_count += 1;
        }
        if !self.sorted {
            self.fingerprints.add(&buf[key.start..key.end]);
        }
    }

    /// Fingerprints the keys pushed while the order held: `first` and `prev`
    /// as they are, any between them read again from the buffer (they were
    /// valid). Unsorted sets mostly break the order at their second or third
    /// key, where there are none between.
    #[inline(always)]
    fn fingerprint_earlier(&mut self, buf: &[u8]) {
        self.fingerprints
            .add(&buf[self.first.start..self.first.end]);
        if self.sorted_count > 2 {
            fingerprint_between(buf, self.first, self.prev, &mut self.fingerprints);
        }
        if self.sorted_count > 1 {
            self.fingerprints.add(&buf[self.prev.start..self.prev.end]);
        }
    }

    pub(super) fn verdict(&self) -> Duplicates {
        if self.duplicate {
            Duplicates::Found
        } else if self.sorted || !self.fingerprints.shared {
            Duplicates::None
        } else {
            Duplicates::Unknown
        }
    }
}

/// Adds to `fingerprints` those of the keys after `first` and before `last`,
/// read from the buffer again (valid).
#[cold]
#[inline(never)]
fn fingerprint_between(buf: &[u8], first: TagKey, last: TagKey, fingerprints: &mut Fingerprints) {
    let mut add_between = || -> Result<(), LineError> {
        let (mut value_end, _) = scan_tag_value(buf, first.end + 1)?;
        while value_end + 1 < last.start {
            let key = scan_tag_key(buf, value_end + 1)?;
            fingerprints.add(&buf[key.start..key.end]);
            (value_end, _) = scan_tag_value(buf, key.end + 1)?;
        }
        Ok(())
    };
    if add_between().is_err() {
        debug_assert!(false, "the keys pushed before were valid");
        // Cannot happen; were it to, comparing the keys decides.
        fingerprints.shared = true;
    }
}

/// The order of two keys, on their first eight bytes unless those are equal.
#[inline(always)]
fn key_order(buf: &[u8], a: TagKey, b: TagKey) -> std::cmp::Ordering {
    match (order_prefix(buf, a), order_prefix(buf, b)) {
        (Some(a), Some(b)) if a != b => a.cmp(&b),
        _ => buf[a.start..a.end].cmp(&buf[b.start..b.end]),
    }
}

/// The first eight bytes of the key `buf[key.start..key.end]` as a big-endian
/// word, zero past its end: of two keys whose words differ, the one with the
/// smaller word sorts first. `None` when the buffer has under eight bytes.
#[inline(always)]
fn order_prefix(buf: &[u8], key: TagKey) -> Option<u64> {
    let word = swar::load_padded(buf, key.start)?;
    let len = (key.end - key.start).min(8);
    // Little-endian: the key's bytes are the low `len` bytes of the word.
    let kept = u64::MAX.checked_shr(8 * (8 - len) as u32).unwrap_or(0);
    Some((word & kept).swap_bytes())
}

/// `scanTags` + the duplicate check of `scanKey`: returns the position of the space
/// ending the tag set. Out of line: only lines the fast path leaves come
/// here, and kept apart it leaves `parse_in_full` fewer registers to spill
/// (75 fewer instructions per escaped `cpu` line).
#[inline(never)]
fn scan_tags(buf: &[u8], mut i: usize) -> Result<usize, LineError> {
    let tags_start = i;
    let mut check = TagKeyCheck::new();
    // The keys, for an unsorted set whose fingerprints collide (past `SMALL_TAG_SET`
    // only the last one is kept, and the set is scanned again).
    let mut keys = [TagKey { start: 0, end: 0 }; SMALL_TAG_SET];
    let mut count = 0;
    let end = loop {
        let key = scan_tag_key(buf, i)?;
        let (next, more) = scan_tag_value(buf, key.end + 1)?;
        check.push(buf, key);
        keys[count.min(SMALL_TAG_SET - 1)] = key;
        count += 1;
        if !more {
            break next;
        }
        i = next + 1;
    };
    let duplicate = match check.verdict() {
        Duplicates::None => false,
        Duplicates::Found => true,
        Duplicates::Unknown if count <= SMALL_TAG_SET => has_duplicate_small(buf, &keys[..count]),
        Duplicates::Unknown => has_duplicate_keys(buf, tags_start, end),
    };
    if duplicate {
        return Err(LineError::DuplicateTags);
    }
    Ok(end)
}

/// `scanTagsKey`: the key starting at `i`, ended by an unescaped `=`.
#[inline(always)]
fn scan_tag_key(buf: &[u8], i: usize) -> Result<TagKey, LineError> {
    match buf.get(i) {
        None | Some(b' ' | b',' | b'=') => return Err(LineError::MissingTagKey),
        Some(_) => {}
    }
    match find_unescaped(buf, i + 1, TAG_DELIMITERS) {
        Some(at) if buf[at] == b'=' => Ok(TagKey { start: i, end: at }),
        _ => Err(LineError::MissingTagValue),
    }
}

/// `scanTagsValue`: the value starting at `i`; returns the position of the `,` (more
/// tags) or space (fields next) ending it. The first byte is taken as is, so a value
/// may start with `=`.
#[inline(always)]
fn scan_tag_value(buf: &[u8], i: usize) -> Result<(usize, bool), LineError> {
    match buf.get(i) {
        None | Some(b',' | b' ') => return Err(LineError::MissingTagValue),
        Some(_) => {}
    }
    match find_unescaped(buf, i + 1, TAG_DELIMITERS) {
        None => Err(LineError::MissingFields),
        Some(at) => match buf[at] {
            b'=' => Err(LineError::InvalidTagFormat),
            b',' => Ok((at, true)),
            _ => Ok((at, false)),
        },
    }
}

/// Whether two of `keys` (at most `SMALL_TAG_SET`) are equal, comparing every pair:
/// the same answer as sorting them, and only needed when fingerprints collide.
fn has_duplicate_small(buf: &[u8], keys: &[TagKey]) -> bool {
    keys.iter().enumerate().any(|(j, b)| {
        let key = &buf[b.start..b.end];
        keys[..j].iter().any(|a| buf[a.start..a.end] == *key)
    })
}

/// A cheap 8-bit summary of a (non-empty) tag key: its length and end bytes.
fn key_fingerprint(key: &[u8]) -> u8 {
    let first = key[0];
    let last = key[key.len() - 1];
    // Truncating the length is fine: equal keys still get equal fingerprints.
    (key.len() as u8).wrapping_mul(37) ^ first ^ last.rotate_left(4)
}

/// Whether two keys of an already validated tag set `buf[start..end]` are equal, by
/// sorting them. Only used for unsorted sets over `SMALL_TAG_SET` tags whose key
/// fingerprints collide; allocates.
fn has_duplicate_keys(buf: &[u8], start: usize, end: usize) -> bool {
    let mut keys: Vec<(usize, usize)> = Vec::new();
    let mut i = start;
    while i < end {
        let Ok(key) = scan_tag_key(buf, i) else {
            debug_assert!(false, "tag set was validated");
            return false;
        };
        let Ok((next, _)) = scan_tag_value(buf, key.end + 1) else {
            debug_assert!(false, "tag set was validated");
            return false;
        };
        keys.push((key.start, key.end));
        i = next + 1;
    }
    keys.sort_unstable_by(|a, b| buf[a.0..a.1].cmp(&buf[b.0..b.1]));
    keys.windows(2)
        .any(|w| buf[w[0].0..w[0].1] == buf[w[1].0..w[1].1])
}

/// The field set as `scanFields` saw it.
struct Fields {
    /// First byte of the field set (after blanks).
    start: usize,
    /// The space ending the field set, or the end of the line.
    end: usize,
    /// Length of the first field key longer than the series-key budget, if any.
    long_key: Option<usize>,
}

/// `scanFields`: validates the field set starting at `i` (the space after the key);
/// `key_len` is the series key's length, for the per-field key size check.
fn scan_fields(buf: &[u8], i: usize, key_len: usize) -> Result<Fields, LineError> {
    let start = skip_blanks(buf, i);
    let mut i = start;
    let mut quoted = false;
    let mut equals = 0usize;
    let mut commas = 0usize;
    let mut key_start = start;
    let mut long_key = None;
    loop {
        if quoted {
            // Inside a string only a backslash or the closing quote matter, and the
            // counts cannot change, so jump straight to the next one.
            match memchr2(b'"', b'\\', &buf[i..]) {
                None => {
                    i = buf.len();
                    break;
                }
                Some(off) => {
                    i += off;
                    if buf[i] == b'\\' {
                        i += if i + 1 < buf.len() { 2 } else { 1 };
                    } else {
                        quoted = false;
                        i += 1;
                    }
                    continue;
                }
            }
        }
        // Other bytes (field keys, the tail of a string after its closing quote)
        // only move the scanner on.
        i = find_any(buf, i, FIELD_SPECIALS);
        let Some(&b) = buf.get(i) else {
            break;
        };
        match b {
            b'=' => {
                equals += 1;
                if long_key.is_none()
                    && key_len + FIELD_KEY_SEPARATOR_LEN + (i - key_start) > MAX_KEY_LENGTH
                {
                    long_key = Some(i - key_start);
                }
                let before = buf.get(i.wrapping_sub(1)).copied();
                let escaped = i >= 2 && buf[i - 2] == b'\\';
                if matches!(before, Some(b' ' | b',')) && !escaped {
                    return Err(LineError::MissingFieldKey);
                }
                let end = match buf.get(i + 1) {
                    None | Some(b',' | b' ') => return Err(LineError::MissingFieldValue),
                    Some(&next)
                        if next.is_ascii_digit() || matches!(next, b'.' | b'-' | b'N' | b'n') =>
                    {
                        scan_number(buf, i + 1)?
                    }
                    Some(b'"') => {
                        // The quote opens the string on the next turn.
                        i += 1;
                        continue;
                    }
                    Some(_) => scan_boolean(buf, i + 1)?,
                };
                // A number or a boolean ends at a `,` or a space (or the end); taking
                // the comma here saves a turn for the usual stop after a value.
                i = end;
                if buf.get(i) != Some(&b',') {
                    break;
                }
                commas += 1;
                key_start = i + 1;
                i += 1;
            }
            b',' => {
                commas += 1;
                key_start = i + 1;
                i += 1;
            }
            b' ' => break,
            b'\\' if i + 1 < buf.len() => i += 2,
            // Quotes only open a string in a value: more `=` than `,` seen so far.
            b'"' if equals > commas => {
                quoted = true;
                i += 1;
            }
            // A backslash ending the line, or a quote outside a value.
            _ => i += 1,
        }
    }
    if quoted {
        return Err(LineError::UnbalancedQuotes);
    }
    if equals == 0 || commas != equals - 1 {
        return Err(LineError::InvalidFieldFormat);
    }
    Ok(Fields {
        start,
        end: i,
        long_key,
    })
}

/// `isNumeric`.
fn is_numeric(b: u8) -> bool {
    b.is_ascii_digit() || b == b'.'
}

/// `scanNumber`: validates the number starting at `start`; returns the position of
/// the `,`, space or end after it.
fn scan_number(buf: &[u8], start: usize) -> Result<usize, LineError> {
    match plain_number_end(buf, start) {
        Some(end) => Ok(end),
        None => scan_number_in_full(buf, start),
    }
}

/// The fast path of [`scan_number`]: the end of the number at `start` if it is in one
/// of the common forms that need no range check, all of which
/// [`scan_number_in_full`] accepts with the same end; `None` says nothing about
/// validity. The forms, each followed by a `,`, a space or the end:
///
/// - a decimal `-?[0-9.]+` with at least one digit, at most one `.`, and fewer than
///   [`FLOAT_CHECK_DIGITS`] characters;
/// - an integer `-?[0-9]+i` with fewer than [`INT_CHECK_DIGITS`] characters before
///   the `i`;
/// - an unsigned `[0-9]+u` with fewer than [`UINT_CHECK_DIGITS`] digits.
#[inline(always)]
pub(super) fn plain_number_end(buf: &[u8], start: usize) -> Option<usize> {
    let negative = buf.get(start) == Some(&b'-');
    let digits_start = start + usize::from(negative);
    // Find the end of the digits and dots a word at a time, counting the dots (up to
    // two, all that matters). Bytes past the end of the line read as zeros, which
    // end the run like any other byte.
    let mut i = digits_start;
    let mut dots = 0;
    loop {
        let word = swar::load_padded(buf, i)?;
        let dot = swar::eq_flags(word, b'.');
        let other = !(swar::digit_flags(word) | dot) & swar::HIGH_BITS;
        let run_dots = dot & swar::flags_below_first(other);
        dots += usize::from(run_dots != 0) + usize::from(run_dots & run_dots.wrapping_sub(1) != 0);
        if other != 0 {
            i += swar::first_flag(other);
            break;
        }
        i += 8;
        if i - start >= FLOAT_CHECK_DIGITS {
            return None;
        }
    }
    if dots > 1 || i - digits_start == dots {
        // Two dots, or no digit.
        return None;
    }
    let (end, fits) = match buf.get(i) {
        None | Some(b',' | b' ') => (i, i - start < FLOAT_CHECK_DIGITS),
        Some(b'i') => (i + 1, dots == 0 && i - start < INT_CHECK_DIGITS),
        Some(b'u') => (
            i + 1,
            dots == 0 && !negative && i - start < UINT_CHECK_DIGITS,
        ),
        Some(_) => return None,
    };
    match buf.get(end) {
        None | Some(b',' | b' ') if fits => Some(end),
        _ => None,
    }
}

/// `scanNumber` for any input: the careful path behind [`scan_number`]'s fast path.
fn scan_number_in_full(buf: &[u8], start: usize) -> Result<usize, LineError> {
    let mut i = start;
    let mut is_int = false;
    let mut is_unsigned = false;
    let negative = buf.get(start) == Some(&b'-');
    if negative {
        i += 1;
        if i == buf.len() {
            return Err(LineError::InvalidNumber);
        }
    }
    let mut decimal = false;
    let mut scientific = false;
    while let Some(&b) = buf.get(i) {
        if b == b',' || b == b' ' {
            break;
        }
        if (b == b'i' || b == b'u') && i > start && !(is_int || is_unsigned) {
            if b == b'i' {
                is_int = true;
            } else {
                is_unsigned = true;
            }
            i += 1;
            continue;
        }
        if b == b'.' {
            if decimal {
                return Err(LineError::InvalidNumber);
            }
            decimal = true;
        }
        if i > start && (b == b'e' || b == b'E') {
            scientific = true;
            i += 1;
            continue;
        }
        if (b == b'+' || b == b'-') && i > 0 && matches!(buf[i - 1], b'e' | b'E') {
            i += 1;
            continue;
        }
        // NaN and anything else non-numeric (Inf cannot start a number here).
        if !is_numeric(b) {
            return Err(LineError::InvalidNumber);
        }
        i += 1;
    }
    if (is_int || is_unsigned) && (decimal || scientific) {
        return Err(LineError::InvalidNumber);
    }
    let numeric_digits =
        (i - start) - usize::from(is_int) - usize::from(decimal) - usize::from(negative);
    if numeric_digits == 0 {
        return Err(LineError::InvalidNumber);
    }
    let text = &buf[start..i];
    if is_int {
        let Some((b'i', digits)) = text.split_last() else {
            return Err(LineError::InvalidNumber);
        };
        if digits.len() >= INT_CHECK_DIGITS && parse_ascii::<i64>(digits).is_none() {
            return Err(LineError::IntegerOutOfRange(Excerpt::new(digits)));
        }
    } else if is_unsigned {
        let Some((b'u', digits)) = text.split_last() else {
            return Err(LineError::InvalidNumber);
        };
        if negative {
            return Err(LineError::InvalidNumber);
        }
        if digits.len() >= UINT_CHECK_DIGITS && parse_ascii::<u64>(digits).is_none() {
            return Err(LineError::UnsignedOutOfRange(Excerpt::new(digits)));
        }
    } else if scientific || text.len() >= FLOAT_CHECK_DIGITS {
        // Go's ParseFloat fails on overflow; Rust's gives infinity instead.
        match parse_ascii::<f64>(text) {
            Some(v) if v.is_finite() => {}
            _ => return Err(LineError::InvalidFloat),
        }
    }
    Ok(i)
}

/// Parses ASCII text with `FromStr`; `None` for non-UTF-8 or a parse error.
fn parse_ascii<T: std::str::FromStr>(text: &[u8]) -> Option<T> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// `scanBoolean`: validates the boolean starting at `start`; returns the position of
/// the `,`, space or end after it.
fn scan_boolean(buf: &[u8], start: usize) -> Result<usize, LineError> {
    let end = find_any(buf, start, COMMA_SPACE);
    if is_boolean(&buf[start..end]) {
        Ok(end)
    } else {
        Err(LineError::InvalidBoolean)
    }
}

/// The spellings of a boolean field value InfluxDB accepts.
pub(super) fn is_boolean(value: &[u8]) -> bool {
    matches!(
        value,
        b"t" | b"T" | b"true" | b"True" | b"TRUE" | b"f" | b"F" | b"false" | b"False" | b"FALSE"
    )
}

/// Timestamps with at most this many digits fit in a `u64` whatever the digits
/// (`10^19 - 1 < 2^64`), so they are accumulated without overflow checks; longer ones
/// (leading zeros, or out of range) go through `str::parse`.
const TIMESTAMP_FAST_DIGITS: usize = 19;

/// `scanTime` plus the timestamp checks of `parsePoint`: returns whether there is a
/// timestamp.
pub(super) fn scan_time(buf: &[u8], i: usize) -> Result<bool, LineError> {
    let start = skip_blanks(buf, i);
    let negative = buf.get(start) == Some(&b'-');
    let digits_start = start + usize::from(negative);
    let mut i = digits_start;
    // The value of the digits so far: exact while there are at most
    // TIMESTAMP_FAST_DIGITS of them, meaningless (but not used) past that.
    let mut magnitude = 0u64;
    // Eight digits at a time while they last, then byte by byte to the end, which
    // also reports the first bad byte.
    while let Some(word) = swar::load(buf, i) {
        if swar::digit_flags(word) != swar::HIGH_BITS {
            break;
        }
        magnitude = magnitude
            .wrapping_mul(100_000_000)
            .wrapping_add(swar::parse_eight_digits(word));
        i += 8;
    }
    while let Some(&b) = buf.get(i) {
        if b == b'\n' || b == b' ' {
            break;
        }
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err(LineError::BadTimestamp);
        }
        magnitude = magnitude.wrapping_mul(10).wrapping_add(u64::from(digit));
        i += 1;
    }
    let ts = &buf[start..i];
    if ts.is_empty() {
        return Ok(false);
    }
    if ts == b"-" {
        return Err(LineError::TimestampSyntax);
    }
    let parsed = if i - digits_start <= TIMESTAMP_FAST_DIGITS {
        if negative {
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        }
    } else {
        parse_ascii::<i64>(ts)
    };
    let Some(ns) = parsed else {
        return Err(LineError::TimestampOutOfRange(Excerpt::new(ts)));
    };
    if !(MIN_NANO_TIME..=MAX_NANO_TIME).contains(&ns) {
        return Err(LineError::TimeOutOfRange);
    }
    if buf[i..].iter().any(|&b| b != b' ') {
        return Err(LineError::InvalidPoint);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks one line twice (state must not leak between calls), through the fast
    /// path and without it, and on success the measurement it locates.
    #[track_caller]
    fn ok(line: &str, measurement: &str, has_timestamp: bool) {
        for parse in [parse_line, parse_line, parse_in_full] {
            let got = parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?} rejected: {e}"));
            assert_eq!(
                &line.as_bytes()[..got.measurement_end],
                measurement.as_bytes(),
                "{line:?}"
            );
            assert_eq!(
                got.measurement_escaped,
                measurement.contains('\\'),
                "{line:?}"
            );
            assert_eq!(got.has_timestamp, has_timestamp, "{line:?}");
        }
    }

    /// Checks one line is rejected with `want`'s text, twice.
    #[track_caller]
    fn err(line: &str, want: &str) {
        for parse in [parse_line, parse_line, parse_in_full] {
            match parse(line.as_bytes()) {
                Ok(l) => panic!("{line:?} accepted: {l:?}"),
                Err(e) => assert_eq!(e.to_string(), want, "{line:?}"),
            }
        }
    }

    #[test]
    fn valid_points() {
        // Minimal forms
        ok("m f=1", "m", false);
        ok("m f=1 0", "m", true);
        ok("m f=1 -1", "m", true);
        ok(
            "cpu,host=a,region=b usage=0.5,idle=99i 1700000000000000000",
            "cpu",
            true,
        );
        // Blanks InfluxDB skips
        ok("m  f=1", "m", false);
        ok("m \tf=1", "m", false);
        ok("m f=1  123", "m", true);
        ok("m f=1 123   ", "m", true);
        ok("m f=1 ", "m", false);
        ok("m f=1 \t 5", "m", true);
        // Measurement escapes
        ok(r"my\ cpu f=1", r"my\ cpu", false);
        ok(r"my\,cpu,t=v f=1", r"my\,cpu", false);
        ok(r"a\b f=1", r"a\b", false);
        ok("a=b f=1", "a=b", false);
        ok("\"q\" f=1", "\"q\"", false);
        ok("a\tb f=1", "a\tb", false);
        // The byte after a backslash pair still counts as escaped (InfluxDB's rule).
        ok(r"a\\,b f=1", r"a\\,b", false);
        // Tag escapes
        ok(r"m,t\ k=v\ v f=1", "m", false);
        ok(r"m,t\,k=v\,v f=1", "m", false);
        ok(r"m,t\=k=v\=v f=1", "m", false);
        ok("m,t==v f=1", "m", false);
        ok("m,b=1,a=2 f=1", "m", false);
        ok("m,a=1,ab=2 f=1", "m", false);
        // Field key escapes
        ok(r"m f\ k=1", "m", false);
        ok(r"m f\,k=1", "m", false);
        ok(r"m f\=k=1", "m", false);
        ok("m f\"k=1", "m", false);
        ok("m a=1,b\"=2", "m", false);
        // Floats
        ok("m f=1.5", "m", false);
        ok("m f=-1.5", "m", false);
        ok("m f=.5", "m", false);
        ok("m f=5.", "m", false);
        ok("m f=-.5", "m", false);
        ok("m f=1e5", "m", false);
        ok("m f=1E5", "m", false);
        ok("m f=1e+5", "m", false);
        ok("m f=1.5e-5", "m", false);
        ok("m f=1.e5", "m", false);
        ok("m f=1.7976931348623157e308", "m", false);
        ok("m f=1e-400", "m", false);
        ok("m f=000000000000000000000000000000001", "m", false);
        // Integers and their limits
        ok("m f=1i", "m", false);
        ok("m f=-1i", "m", false);
        ok("m f=9223372036854775807i", "m", false);
        ok("m f=-9223372036854775808i", "m", false);
        ok("m f=0009223372036854775807i", "m", false);
        // Unsigned and their limits
        ok("m f=1u", "m", false);
        ok("m f=18446744073709551615u", "m", false);
        // Booleans
        for b in [
            "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE",
        ] {
            ok(&format!("m f={b}"), "m", false);
            ok(&format!("m f={b},g=1 5"), "m", true);
        }
        // Strings
        ok("m f=\"\"", "m", false);
        ok("m f=\"hello world\"", "m", false);
        ok("m f=\"a,b=c d\"", "m", false);
        ok(r#"m f="esc \" quote""#, "m", false);
        ok(r#"m f="esc \\""#, "m", false);
        ok("m f=\"multi\nline\"", "m", false);
        ok("m f=\"x\",g=\"y\" 5", "m", true);
        // After a closing quote a string runs on to `,` or space (InfluxDB).
        ok("m f=\"a\"b", "m", false);
        // Timestamps and their limits
        ok("m f=1 9223372036854775806", "m", true);
        ok("m f=1 -9223372036854775806", "m", true);
        // Nothing after a trailing newline is looked at without a timestamp (InfluxDB).
        ok("m f=1 \nxyz", "m", false);
    }

    #[test]
    fn invalid_points() {
        // Measurement
        err("", "missing measurement");
        err(",t=v f=1", "missing measurement");
        err("   ", "missing measurement");
        // Missing fields
        err("m", "missing fields");
        err(r"m\ f=1", "missing fields");
        err("m,t=v", "missing fields");
        err(r"m\\ f=1", "missing fields");
        // Tag keys
        err("m, f=1", "missing tag key");
        err("m,=v f=1", "missing tag key");
        err("m,,t=v f=1", "missing tag key");
        err("m,t=v, f=1", "missing tag key");
        err("m,", "missing tag key");
        // Tag values
        err("m,t f=1", "missing tag value");
        err("m,t,u=v f=1", "missing tag value");
        err("m,t= f=1", "missing tag value");
        err("m,t=,u=v f=1", "missing tag value");
        err("m,t=", "missing tag value");
        err("m,t", "missing tag value");
        // Tag format
        err("m,t=v=w f=1", "invalid tag format");
        // Duplicate tags, sorted and unsorted
        err("m,a=1,a=2 f=1", "duplicate tags");
        err("m,b=1,a=2,b=3 f=1", "duplicate tags");
        err("m,a=1,b=2,c=3,b=4 f=1", "duplicate tags");
        // Syntax errors after a duplicate win (InfluxDB checks duplicates last).
        err("m,a=1,a=2,b f=1", "missing tag value");
        err("m,b=1,a=2,b", "missing tag value");
        // Field keys
        err("m =1", "missing field key");
        err("m f=1,=2", "missing field key");
        // Field values
        err("m f=", "missing field value");
        err("m f=,g=1", "missing field value");
        err("m f= 1", "missing field value");
        // Field format
        err("m f", "invalid field format");
        err("m f=1,g", "invalid field format");
        err("m f=1,", "invalid field format");
        err("m f=\"a\"=1", "invalid field format");
        err("m \"f\"", "invalid field format");
        // Quotes
        err("m f=\"abc", "unbalanced quotes");
        err(r#"m f="abc\""#, "unbalanced quotes");
        err("m f=\"a\",g=\"b", "unbalanced quotes");
        // Numbers
        err("m f=-", "invalid number");
        err("m f=-,g=1", "invalid number");
        err("m f=.", "invalid number");
        err("m f=-.", "invalid number");
        err("m f=1.1.1", "invalid number");
        err("m f=1a", "invalid number");
        err("m f=NaN", "invalid number");
        err("m f=nan", "invalid number");
        err("m f=n", "invalid number");
        err("m f=-Inf", "invalid number");
        err("m f=1.5i", "invalid number");
        err("m f=1e5i", "invalid number");
        err("m f=9i10", "invalid number");
        err("m f=1ii", "invalid number");
        err("m f=-i", "invalid number");
        err("m f=1iu", "invalid number");
        err("m f=-1u", "invalid number");
        err("m f=1.5u", "invalid number");
        err("m f=1-2", "invalid number");
        err(r"m f=1\ 2", "invalid number");
        // Floats InfluxDB parses to check their range
        err("m f=1e", "invalid float");
        err("m f=1e+", "invalid float");
        err("m f=.e5", "invalid float");
        err("m f=1e5e5", "invalid float");
        err("m f=1e309", "invalid float");
        err("m f=-1e309", "invalid float");
        let huge = format!("m f={}", "9".repeat(400));
        err(&huge, "invalid float");
        // Integer limits + 1
        err(
            "m f=9223372036854775808i",
            "unable to parse integer 9223372036854775808: strconv.ParseInt: parsing \"9223372036854775808\": value out of range",
        );
        err(
            "m f=-9223372036854775809i",
            "unable to parse integer -9223372036854775809: strconv.ParseInt: parsing \"-9223372036854775809\": value out of range",
        );
        err(
            "m f=18446744073709551616u",
            "unable to parse unsigned 18446744073709551616: strconv.ParseUint: parsing \"18446744073709551616\": value out of range",
        );
        let long = format!("m f={}i", "1".repeat(50));
        let cut = "1".repeat(EXCERPT_CAP);
        err(
            &long,
            &format!("unable to parse integer {cut}...: strconv.ParseInt: parsing \"{cut}...\": value out of range"),
        );
        // Booleans
        err("m f=x", "invalid boolean");
        err("m f=tru", "invalid boolean");
        err("m f=truE", "invalid boolean");
        err("m f=tRUE", "invalid boolean");
        err("m f=falsey", "invalid boolean");
        err("m f=t\"", "invalid boolean");
        err("m f=Inf", "invalid boolean");
        // Timestamps
        err("m f=1 abc", "bad timestamp");
        err("m f=1 12a", "bad timestamp");
        err("m f=1 1-2", "bad timestamp");
        err("m f=1 --1", "bad timestamp");
        err("m f=1 1.5", "bad timestamp");
        err("m f=1 -", "strconv.ParseInt: parsing \"-\": invalid syntax");
        err(
            "m f=1 9223372036854775808",
            "strconv.ParseInt: parsing \"9223372036854775808\": value out of range",
        );
        err(
            "m f=1 -9223372036854775809",
            "strconv.ParseInt: parsing \"-9223372036854775809\": value out of range",
        );
        err(
            "m f=1 9223372036854775807",
            "time outside range -9223372036854775806 - 9223372036854775806",
        );
        err(
            "m f=1 -9223372036854775807",
            "time outside range -9223372036854775806 - 9223372036854775806",
        );
        err(
            "m f=1 -9223372036854775808",
            "time outside range -9223372036854775806 - 9223372036854775806",
        );
        // Trailing content
        err("m f=1 1 2", "point is invalid");
        err("m f=1 1 \t", "point is invalid");
        err("m f=1 1\nx", "point is invalid");
    }

    #[test]
    fn sorted_tag_keys_compared_by_their_first_eight_bytes() {
        // Keys sharing their first eight bytes are compared in full.
        ok("m,service_environment=a,service_version=b f=1", "m", false);
        err(
            "m,service_version=a,service_version=b f=1",
            "duplicate tags",
        );
        // Shorter keys are padded with zeros: a prefix sorts first.
        ok("m,a=1,aa=2,ab=3,abcdefghij=4,abcdefghijk=5 f=1", "m", false);
        err("m,a=1,aa=2,aa=3 f=1", "duplicate tags");
        // A zero byte in a key is not padding.
        ok("m,a=1,a\0=2 f=1", "m", false);
        ok("m,a\0=1,a=2 f=1", "m", false);
        err("m,a\0=1,a\0=2 f=1", "duplicate tags");
    }

    #[test]
    fn tag_keys_before_the_order_breaks_are_checked_too() {
        // The order breaks at the second, third or a later key, and a key from
        // before the break comes again: the first, one in between, the last.
        err("m,b=1,a=2,b=3 f=1", "duplicate tags");
        err("m,a=1,c=2,b=3,a=4 f=1", "duplicate tags");
        err("m,a=1,c=2,b=3,c=4 f=1", "duplicate tags");
        err("m,a=1,b=2,c=3,d=4,a0=5,b=6 f=1", "duplicate tags");
        ok("m,a=1,b=2,c=3,d=4,a0=5,e=6 f=1", "m", false);
        // The same, with escapes (the full parser's keys).
        err(r"m,a=1,b\ x=2,c=3,d=4,b=5,b\ x=6 f=1", "duplicate tags");
        ok(r"m,a=1,b\ x=2,c=3,d=4,b=5,b\ y=6 f=1", "m", false);
        // A value between them holding an escaped comma.
        err(r"m,a=1,b=x\,y,c=3,d=4,a0=5,c=6 f=1", "duplicate tags");
    }

    #[test]
    fn unsorted_tag_sets_with_similar_keys() {
        // Same length and end bytes (so the same fingerprint), yet different keys.
        ok("m,b=1,axb=2,ayb=3 f=1", "m", false);
        err("m,b=1,axb=2,ayb=3,axb=4 f=1", "duplicate tags");
        err("m,b=1,axb=2,ayb=3,b=4 f=1", "duplicate tags");
    }

    #[test]
    fn fast_paths_agree_with_oracle() {
        // Numbers and timestamps around the limits of the word-at-a-time fast paths
        // (8-byte words, the *_CHECK_DIGITS lengths), at every distance from the end of
        // the line, checked against the reference parser.
        let mut numbers = Vec::new();
        for len in [
            1, 6, 7, 8, 9, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 30,
        ] {
            let digits = "9".repeat(len);
            let zeros = format!("1{}", "0".repeat(len - 1));
            for body in [&digits, &zeros] {
                for text in [
                    body.clone(),
                    format!("-{body}"),
                    format!("{body}i"),
                    format!("-{body}i"),
                    format!("{body}u"),
                    format!("-{body}u"),
                    format!("{}.{}", &body[..len / 2], &body[len / 2..]),
                    format!("-.{body}"),
                    format!("{body}."),
                    format!("{body}.5.5"),
                    format!("{body}e5"),
                    format!("{body}x"),
                    format!("{body}i5"),
                    format!("{body}.i"),
                ] {
                    numbers.push(text);
                }
            }
        }
        numbers.extend(["-", ".", "-.", "..", "-i", "i", "u", "n", "N", "-1-"].map(String::from));
        for n in &numbers {
            for tail in ["", ",g=1", " 5", " ", "  1", ",", "\\ ", "=", "\""] {
                for line in [
                    format!("m f={n}{tail}"),
                    format!("measurement,t=v f={n}{tail}"),
                ] {
                    assert_eq!(
                        parse_line(line.as_bytes()),
                        super::super::naive::parse(line.as_bytes()),
                        "{line:?}"
                    );
                }
            }
            for ts in [
                format!("m f=1 {n}"),
                format!("m f=1 {n} "),
                format!("m f=1 {n}\n"),
            ] {
                assert_eq!(
                    parse_line(ts.as_bytes()),
                    super::super::naive::parse(ts.as_bytes()),
                    "{ts:?}"
                );
            }
        }
    }

    #[test]
    fn large_unsorted_tag_sets() {
        // Past the stack buffer for unsorted tag sets.
        let tags: String = (0..3 * SMALL_TAG_SET)
            .rev()
            .map(|i| format!(",t{i}=v"))
            .collect();
        ok(&format!("m{tags} f=1"), "m", false);
        err(&format!("m{tags},t7=w f=1"), "duplicate tags");
        err(&format!("m,t7=w{tags} f=1"), "duplicate tags");
    }

    #[test]
    fn key_length_limit() {
        // Measurement + tags: exactly the limit, then one over.
        let at_limit = "m".repeat(MAX_KEY_LENGTH);
        let line = format!("{at_limit} f=1");
        assert!(matches!(
            parse_line(line.as_bytes()),
            Err(LineError::MaxKeyLengthExceeded { len: 65540 })
        ));
        ok(
            &format!("{} f=1", "m".repeat(MAX_KEY_LENGTH - 5)),
            &"m".repeat(MAX_KEY_LENGTH - 5),
            false,
        );
        err(
            &format!("{} f=1", "m".repeat(MAX_KEY_LENGTH + 1)),
            "max key length exceeded: 65536 > 65535",
        );
        // Key + separator + field key.
        let field = "f".repeat(MAX_KEY_LENGTH - 1 - FIELD_KEY_SEPARATOR_LEN);
        ok(&format!("m {field}=1"), "m", false);
        err(
            &format!("m a=1,{field}f=1"),
            "max key length exceeded: 65536 > 65535",
        );
    }

    #[test]
    fn unescape() {
        #[track_caller]
        fn case(raw: &str, want: &str) {
            let mut out = b"prefix".to_vec();
            for _ in 0..2 {
                out.truncate(6);
                unescape_measurement(raw.as_bytes(), &mut out);
                assert_eq!(&out[6..], want.as_bytes(), "{raw:?}");
            }
        }
        case("cpu", "cpu");
        case("", "");
        case(r"my\ cpu", "my cpu");
        case(r"my\,cpu", "my,cpu");
        case(r"a\=b", "a=b");
        case(r#"a\"b"#, "a\"b");
        // InfluxDB keeps both bytes of `\\` and any other backslash.
        case(r"a\\b", r"a\\b");
        case(r"a\\,b", r"a\,b");
        case(r"a\b", r"a\b");
        case("a\\", "a\\");
        case(r"\ \,", " ,");
    }

    #[test]
    fn error_is_small_and_send() {
        fn assert_traits<T: std::error::Error + Send + Sync + Copy + 'static>() {}
        assert_traits::<LineError>();
        assert!(std::mem::size_of::<LineError>() <= 48);
    }
}
