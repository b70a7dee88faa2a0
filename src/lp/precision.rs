//! The `precision=` query parameter of `/write`.
//!
//! InfluxDB 1.x reads point timestamps in the request's precision and, for points
//! without one, uses the server's clock truncated to that precision
//! (`point.SetPrecision` in
//! <https://github.com/influxdata/influxdb/blob/004d1cf413d9dd5ed27fb3e761033ceff3def206/models/points.go>).
//! A proxy that fans a write out to several backends stamps such points itself, once,
//! with [`Precision::timestamp`], so every replica stores the same time.

use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_MICRO: i64 = 1_000;
const NANOS_PER_MILLI: i64 = 1_000_000;
const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_MINUTE: i64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: i64 = 60 * NANOS_PER_MINUTE;

/// Unit of the timestamps in a write body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// InfluxDB 1.x `precision=` values: "n" and "ns", "u" "us" and "µ", "ms", "s", "m", "h". Empty string is nanoseconds.
    ///
    /// Both the micro sign (U+00B5) and the Greek mu (U+03BC) are accepted, since
    /// clients type either. Matching is case-sensitive, as in InfluxDB (`M` is not
    /// minutes).
    pub fn parse(param: &str) -> Option<Precision> {
        Some(match param {
            "" | "n" | "ns" => Self::Nanoseconds,
            "u" | "us" | "\u{b5}" | "\u{3bc}" => Self::Microseconds,
            "ms" => Self::Milliseconds,
            "s" => Self::Seconds,
            "m" => Self::Minutes,
            "h" => Self::Hours,
            _ => return None,
        })
    }

    /// The canonical value to pass on to a backend ("ns", "u", "ms", "s", "m", "h").
    pub fn as_param(self) -> &'static str {
        match self {
            Self::Nanoseconds => "ns",
            Self::Microseconds => "u",
            Self::Milliseconds => "ms",
            Self::Seconds => "s",
            Self::Minutes => "m",
            Self::Hours => "h",
        }
    }

    /// Nanoseconds in one unit (InfluxDB's `GetPrecisionMultiplier`).
    const fn nanos(self) -> i64 {
        match self {
            Self::Nanoseconds => 1,
            Self::Microseconds => NANOS_PER_MICRO,
            Self::Milliseconds => NANOS_PER_MILLI,
            Self::Seconds => NANOS_PER_SECOND,
            Self::Minutes => NANOS_PER_MINUTE,
            Self::Hours => NANOS_PER_HOUR,
        }
    }

    /// `now` expressed in this precision (truncated), as InfluxDB stores a point without a timestamp.
    ///
    /// Times before 1970 round down (towards the past), as Go's `Time.Truncate` does;
    /// times beyond `i64` nanoseconds saturate rather than wrap.
    pub fn timestamp(self, now: SystemTime) -> i64 {
        let nanos: i128 = match now.duration_since(UNIX_EPOCH) {
            Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
            Err(before) => i128::try_from(before.duration().as_nanos()).map_or(i128::MIN, |n| -n),
        };
        let units = nanos.div_euclid(i128::from(self.nanos()));
        i64::try_from(units).unwrap_or(if units < 0 { i64::MIN } else { i64::MAX })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[track_caller]
    fn parses(param: &str, want: Option<Precision>) {
        for _ in 0..2 {
            assert_eq!(Precision::parse(param), want, "{param:?}");
        }
    }

    #[test]
    fn parse_values() {
        use Precision::*;
        // Accepted
        parses("", Some(Nanoseconds));
        parses("n", Some(Nanoseconds));
        parses("ns", Some(Nanoseconds));
        parses("u", Some(Microseconds));
        parses("us", Some(Microseconds));
        parses("µ", Some(Microseconds));
        parses("μ", Some(Microseconds));
        parses("ms", Some(Milliseconds));
        parses("s", Some(Seconds));
        parses("m", Some(Minutes));
        parses("h", Some(Hours));
        // Rejected
        parses("x", None);
        parses("S", None);
        parses("M", None);
        parses("NS", None);
        parses("sec", None);
        parses(" s", None);
        parses("s ", None);
        parses("µs", None);
    }

    #[test]
    fn canonical_round_trip() {
        use Precision::*;
        for p in [
            Nanoseconds,
            Microseconds,
            Milliseconds,
            Seconds,
            Minutes,
            Hours,
        ] {
            assert_eq!(Precision::parse(p.as_param()), Some(p));
        }
        assert_eq!(Precision::default(), Nanoseconds);
    }

    #[test]
    fn timestamps() {
        use Precision::*;
        #[track_caller]
        fn at(p: Precision, now: SystemTime, want: i64) {
            for _ in 0..2 {
                assert_eq!(p.timestamp(now), want, "{p:?}");
            }
        }
        // 2023-11-14T22:13:20.123456789Z
        let now = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        at(Nanoseconds, now, 1_700_000_000_123_456_789);
        at(Microseconds, now, 1_700_000_000_123_456);
        at(Milliseconds, now, 1_700_000_000_123);
        at(Seconds, now, 1_700_000_000);
        at(Minutes, now, 28_333_333);
        at(Hours, now, 472_222);
        // The epoch and just before it (rounds down, as Go's Truncate).
        at(Seconds, UNIX_EPOCH, 0);
        at(Nanoseconds, UNIX_EPOCH - Duration::from_nanos(1), -1);
        at(Seconds, UNIX_EPOCH - Duration::from_nanos(1), -1);
        at(Hours, UNIX_EPOCH - Duration::from_secs(3600), -1);
        // Beyond i64 nanoseconds (year 2262): saturates in ns, fits in coarser units.
        let far = UNIX_EPOCH + Duration::from_secs(10_000_000_000);
        at(Nanoseconds, far, i64::MAX);
        at(Seconds, far, 10_000_000_000);
    }
}
