//! Counting points in a line-protocol body the way InfluxDB 1.x splits it, without
//! validating them and without allocating per line.
//!
//! Lines end at `\n`, except where InfluxDB's `scanLine` would not end them: a
//! newline right after a backslash, or inside a quoted string field value. Bodies
//! without a `"` take a memchr fast path that falls back to the `scanLine` port
//! only for a line ending in a backslash. Blank lines, lines of only spaces and
//! tabs, and `#` comment lines are not points; a trailing `\r` is dropped. A
//! malformed line still counts as a point: the sink counts, it does not parse.
//!
//! Source: influxdb v1.8.10 `models/points.go` (`scanLine`,
//! `ParsePointsWithPrecision`, `scanMeasurement`),
//! <https://github.com/influxdata/influxdb/blob/v1.8.10/models/points.go>.

use std::collections::HashMap;

use memchr::{memchr, memchr2, memrchr};

/// Calls `f` with each point line of `body`, leading whitespace and trailing `\r`
/// removed.
pub fn for_each_point(body: &[u8], mut f: impl FnMut(&[u8])) {
    let quoted = memchr(b'"', body).is_some();
    let mut pos = 0;
    while pos < body.len() {
        let end = if quoted {
            scan_line(body, pos)
        } else {
            fast_line_end(body, pos)
        };
        if let Some(line) = point_line(&body[pos..end]) {
            f(line);
        }
        pos = end + 1;
    }
}

/// The end of the line at `start` in a body without quotes: the next newline,
/// unless a backslash escapes it.
fn fast_line_end(body: &[u8], start: usize) -> usize {
    match memchr(b'\n', &body[start..]) {
        None => body.len(),
        Some(i) if i > 0 && body[start + i - 1] == b'\\' => scan_line(body, start),
        Some(i) => start + i,
    }
}

/// Port of InfluxDB's `scanLine`: the end of the line starting at `i`.
fn scan_line(buf: &[u8], mut i: usize) -> usize {
    let (mut quoted, mut fields) = (false, false);
    // '=' and ',' seen in the field section: a quote opens a string only in
    // value position.
    let (mut equals, mut commas) = (0usize, 0usize);
    while i < buf.len() {
        if buf[i] == b'\\' && i + 2 < buf.len() {
            i += 2;
            continue;
        }
        if buf[i] == b' ' {
            fields = true;
        }
        if fields {
            match buf[i] {
                b'=' if !quoted => {
                    equals += 1;
                    i += 1;
                    continue;
                }
                b',' if !quoted => {
                    commas += 1;
                    i += 1;
                    continue;
                }
                b'"' if equals > commas => {
                    quoted = !quoted;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        if buf[i] == b'\n' && !quoted {
            break;
        }
        i += 1;
    }
    i
}

/// The point in a raw line, or `None` for blank and comment lines.
fn point_line(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // InfluxDB's skipWhitespace: spaces, tabs and NULs.
    let start = line.iter().position(|&b| !matches!(b, b' ' | b'\t' | 0))?;
    let line = &line[start..];
    (line[0] != b'#').then_some(line)
}

/// The measurement of a point line: the bytes before the first ',' or ' ' not
/// right after a backslash (the first byte is never a separator), escapes kept.
pub fn measurement(line: &[u8]) -> &[u8] {
    end_at_unescaped(line, |rest| memchr2(b',', b' ', rest))
}

/// The series key: measurement and tags, up to the first unescaped space. Tags
/// are taken in the order sent, not sorted as InfluxDB stores them.
pub fn series_key(line: &[u8]) -> &[u8] {
    end_at_unescaped(line, |rest| memchr(b' ', rest))
}

fn end_at_unescaped(line: &[u8], find: impl Fn(&[u8]) -> Option<usize>) -> &[u8] {
    let mut from = 1.min(line.len());
    while let Some(i) = find(&line[from..]) {
        let at = from + i;
        if line[at - 1] != b'\\' {
            return &line[..at];
        }
        from = at + 1;
    }
    line
}

/// The timestamp of a point line: its last space-separated token, if that comes
/// after the series key and is an integer.
pub fn timestamp(line: &[u8]) -> Option<&[u8]> {
    let key_len = series_key(line).len();
    let at = memrchr(b' ', line)?;
    let token = &line[at + 1..];
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    (at > key_len && !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)).then_some(token)
}

/// A 64-bit hash of a point's identity (series key and timestamp) mixed with
/// `seed` (the db and precision), or `None` for a line without a timestamp, whose
/// time the server picks. Not cryptographic: the chance of any false duplicate
/// among `n` distinct points is about `n² / 2⁶⁵`, 3% at a billion points.
pub fn point_hash(line: &[u8], seed: u64) -> Option<u64> {
    let time = timestamp(line)?;
    let key = hash_bytes(seed, series_key(line));
    Some(hash_bytes(key, time))
}

/// Word-at-a-time hash: each 8-byte word is xored into the state, which then
/// goes through murmur3's `fmix64` finalizer (a bijection in which every input
/// bit reaches every output bit). A cheaper multiply-rotate step (FxHash's) was
/// tried first and made false duplicates by the thousand among timestamps that
/// differ in a few digits: its differences only travel towards high bits.
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    // Any odd constant keeps an all-zero seed and input away from fmix64's fixed
    // point at zero.
    const START: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = fmix64(seed ^ START ^ bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        h = fmix64(h ^ u64::from_le_bytes(chunk.try_into().expect("8-byte chunk")));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    fmix64(h ^ u64::from_le_bytes(tail))
}

/// murmur3's 64-bit finalizer.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Points per measurement for one connection, between merges into the shared
/// stats. Consecutive lines of one measurement cost a byte comparison each; the
/// map is looked up only when the measurement changes and allocates only for a
/// measurement the connection has not seen before.
#[derive(Default)]
pub struct Tally {
    counts: HashMap<Box<[u8]>, u64>,
    /// The measurement of the current run of lines and its length so far.
    run: Vec<u8>,
    run_points: u64,
}

impl Tally {
    pub fn add(&mut self, measurement: &[u8]) {
        if self.run_points > 0 && self.run == measurement {
            self.run_points += 1;
            return;
        }
        self.end_run();
        self.run.extend_from_slice(measurement);
        self.run_points = 1;
    }

    fn end_run(&mut self) {
        if self.run_points > 0 {
            match self.counts.get_mut(&self.run[..]) {
                Some(count) => *count += self.run_points,
                None => {
                    self.counts
                        .insert(self.run.clone().into_boxed_slice(), self.run_points);
                }
            }
        }
        self.run.clear();
        self.run_points = 0;
    }

    /// Hands each measurement's count to `f` and zeroes them, keeping the keys
    /// so the next body allocates nothing.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8], u64)) {
        self.end_run();
        for (measurement, count) in &mut self.counts {
            if *count > 0 {
                f(measurement, *count);
                *count = 0;
            }
        }
    }
}

/// Counts the points of `body` into `tally`, and pushes each point's
/// [`point_hash`] to `hashes` when given. Returns the number of points.
pub fn count_points(
    body: &[u8],
    tally: &mut Tally,
    mut hashes: Option<&mut Vec<u64>>,
    seed: u64,
) -> u64 {
    let mut points = 0;
    for_each_point(body, |line| {
        points += 1;
        tally.add(measurement(line));
        if let Some(hashes) = hashes.as_deref_mut() {
            hashes.extend(point_hash(line, seed));
        }
    });
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (measurement, line) pairs found in `body`, the same through the fast
    /// path and the `scanLine` port, and the same when run twice.
    #[track_caller]
    fn points(body: &str) -> Vec<(String, String)> {
        let collect = |body: &[u8], slow: bool| {
            let mut out = Vec::new();
            let mut push = |line: &[u8]| {
                out.push((
                    String::from_utf8_lossy(measurement(line)).into_owned(),
                    String::from_utf8_lossy(line).into_owned(),
                ))
            };
            if slow {
                let mut pos = 0;
                while pos < body.len() {
                    let end = scan_line(body, pos);
                    if let Some(line) = point_line(&body[pos..end]) {
                        push(line);
                    }
                    pos = end + 1;
                }
            } else {
                for_each_point(body, push);
            }
            out
        };
        let fast = collect(body.as_bytes(), false);
        assert_eq!(fast, collect(body.as_bytes(), true), "fast vs scanLine");
        assert_eq!(fast, collect(body.as_bytes(), false), "second run");
        fast
    }

    #[track_caller]
    fn measurements(body: &str) -> Vec<String> {
        points(body).into_iter().map(|(m, _)| m).collect()
    }

    #[test]
    fn lines_are_counted_with_blank_and_comment_lines_skipped() {
        // Plain lines, with and without a final newline
        assert_eq!(measurements("cpu v=1 1\nmem v=2 2\n"), ["cpu", "mem"]);
        assert_eq!(measurements("cpu v=1 1\nmem v=2 2"), ["cpu", "mem"]);
        // Blank, whitespace-only and comment lines
        assert_eq!(
            measurements("\n\n  \t\n# cpu v=1\n  # x\ncpu v=1\n\n"),
            ["cpu"]
        );
        assert_eq!(measurements(""), Vec::<String>::new());
        // CRLF: the \r is dropped, a CRLF-only line is blank
        assert_eq!(
            points("cpu v=1 1\r\n\r\nmem v=2\r\n"),
            [
                ("cpu".to_owned(), "cpu v=1 1".to_owned()),
                ("mem".to_owned(), "mem v=2".to_owned())
            ]
        );
        // Leading whitespace is not part of the measurement
        assert_eq!(measurements("  \tcpu,host=a v=1"), ["cpu"]);
    }

    #[test]
    fn measurement_ends_at_the_first_unescaped_comma_or_space() {
        assert_eq!(measurements("cpu,host=a v=1"), ["cpu"]);
        assert_eq!(measurements("cpu v=1"), ["cpu"]);
        assert_eq!(measurements(r"c\,pu,host=a v=1"), [r"c\,pu"]);
        assert_eq!(measurements(r"c\ pu v=1"), [r"c\ pu"]);
        // As scanMeasurement: a separator right after any backslash is escaped
        assert_eq!(measurements(r"cpu\\,x v=1"), [r"cpu\\,x"]);
        // The first byte never ends it; a line without separators is all name
        assert_eq!(measurements(" ,cpu v=1"), [",cpu"]);
        assert_eq!(measurements("cpu"), ["cpu"]);
    }

    #[test]
    fn escaped_newlines_and_quoted_strings_do_not_end_a_line() {
        // A backslash escapes the newline after it
        assert_eq!(measurements("cpu,t=a\\\nb v=1\nmem v=1\n").len(), 2);
        // A newline inside a string field value, and an escaped quote in it
        assert_eq!(
            measurements("log msg=\"two\nlines\",n=1 1\nlog msg=\"q\\\"\n\" 2\ncpu v=1\n"),
            ["log", "log", "cpu"]
        );
        // A quote in a tag value opens no string
        assert_eq!(measurements("cpu,t=a\"b v=1\ncpu v=2\n").len(), 2);
    }

    #[test]
    fn timestamp_is_the_last_integer_token_after_the_key() {
        let ts = |line: &str| {
            timestamp(line.as_bytes()).map(|t| String::from_utf8_lossy(t).into_owned())
        };
        assert_eq!(ts("cpu,h=a v=1 123"), Some("123".to_owned()));
        assert_eq!(ts("cpu,h=a v=1 -5"), Some("-5".to_owned()));
        assert_eq!(ts("cpu,h=a v=1"), None);
        assert_eq!(ts("cpu,h=a s=\"x 12\""), None);
        assert_eq!(ts("cpu v=1 12a"), None);
        assert_eq!(ts(r"cpu,h=a\ 1 v=1"), None);
    }

    #[test]
    fn point_hash_tells_series_times_and_seeds_apart() {
        let h = |line: &str, seed| point_hash(line.as_bytes(), seed);
        assert_eq!(
            h("cpu,h=a v=1 1", 0),
            h("cpu,h=a v=2 1", 0),
            "fields do not count"
        );
        assert_ne!(h("cpu,h=a v=1 1", 0), h("cpu,h=b v=1 1", 0));
        assert_ne!(h("cpu,h=a v=1 1", 0), h("cpu,h=a v=1 2", 0));
        assert_ne!(h("cpu,h=a v=1 1", 0), h("cpu,h=a v=1 1", 1));
        assert_eq!(h("cpu,h=a v=1", 0), None);
        // Every length up to two words hashes apart from its neighbours
        let hashes: std::collections::HashSet<u64> =
            (0..=16).map(|n| hash_bytes(7, &vec![b'x'; n])).collect();
        assert_eq!(hashes.len(), 17);
    }

    #[test]
    fn timestamps_a_few_digits_apart_do_not_collide() {
        // FxHash's step collided on exactly these (1451607090 s vs 1451607820 s
        // for one series) thousands of times in a 3M-point run.
        let key = b"cpu,hostname=host_1,region=ap-northeast-1 usage=1 ";
        let mut seen = std::collections::HashSet::new();
        for second in 0..200_000u64 {
            let line = [
                &key[..],
                (1_451_606_400 + second).to_string().as_bytes(),
                b"000000000",
            ]
            .concat();
            assert!(
                seen.insert(point_hash(&line, 0).unwrap()),
                "second {second}"
            );
        }
    }

    #[test]
    fn tally_counts_runs_and_alternations_and_keeps_keys_when_drained() {
        let mut tally = Tally::default();
        let body = b"cpu v=1\ncpu v=1\nmem v=1\ncpu v=1\n# c\nmem v=1\ndisk v=1";
        let mut hashes = Vec::new();
        for _ in 0..2 {
            assert_eq!(count_points(body, &mut tally, Some(&mut hashes), 0), 6);
            let mut got = Vec::new();
            tally.drain(|m, n| got.push((String::from_utf8_lossy(m).into_owned(), n)));
            got.sort();
            assert_eq!(
                got,
                [
                    ("cpu".to_owned(), 3),
                    ("disk".to_owned(), 1),
                    ("mem".to_owned(), 2)
                ]
            );
        }
        assert!(hashes.is_empty(), "no line had a timestamp");
    }

    #[test]
    fn generated_bodies_count_every_line() {
        use crate::gen::{Generator, Shape};
        let generator = Generator::new(Shape {
            hosts: 7,
            measurements: 3,
            seed: 1,
            ns_per_unit: 1,
            sorted_tags: false,
        });
        let mut body = Vec::new();
        generator.write_lines(0, 1000, 0, &mut body, &mut Vec::new());
        let mut tally = Tally::default();
        let mut hashes = Vec::new();
        assert_eq!(count_points(&body, &mut tally, Some(&mut hashes), 0), 1000);
        let distinct: std::collections::HashSet<_> = hashes.iter().collect();
        assert_eq!((hashes.len(), distinct.len()), (1000, 1000));
    }
}
