//! Failure injection, to exercise the proxy's retries and spooling: a share of
//! `/write` requests answered 500, a delay before every `/write` answer, and one
//! outage window.
//!
//! Which writes fail is a pure function of the seed, the listener and the write's
//! ordinal on that listener, so a rerun with the same seed fails the same
//! ordinals (which request gets which ordinal still depends on thread timing when
//! several connections write at once).

use std::time::Duration;

use clap::ValueEnum;

use crate::gen::Rng;

/// Keeps each listener's dice apart from the others'.
const LISTENER_STREAM: u64 = 0x3C6E_F372_FE94_F82B;

/// What the sink does during its outage window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DownMode {
    /// Close the listening socket (new connections are refused) and close open
    /// connections without answering, like a crashed backend.
    Close,
    /// Keep connections, answer every request but `/stats` with 503, like an
    /// overloaded or restarting backend behind a load balancer.
    #[value(name = "503")]
    Unavailable,
}

/// The configured faults.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Share of `/write` requests answered 500, in `0.0..=1.0`.
    pub fail_ratio: f64,
    pub seed: u64,
    /// Wait before answering each `/write`.
    pub delay: Option<Duration>,
    /// The outage: from this long after start...
    pub down_after: Duration,
    /// ...for this long (none if `None`).
    pub down_for: Option<Duration>,
    pub down_mode: DownMode,
}

impl Faults {
    /// No faults at all.
    #[cfg(test)]
    pub fn none() -> Faults {
        Faults {
            fail_ratio: 0.0,
            seed: 0,
            delay: None,
            down_after: Duration::ZERO,
            down_for: None,
            down_mode: DownMode::Close,
        }
    }

    /// Whether write number `ordinal` (from 0) on listener `listener` fails.
    pub fn fails(&self, listener: usize, ordinal: u64) -> bool {
        if self.fail_ratio <= 0.0 {
            return false;
        }
        if self.fail_ratio >= 1.0 {
            return true;
        }
        let seed = self.seed ^ (listener as u64 + 1).wrapping_mul(LISTENER_STREAM);
        let draw = Rng::new(seed, ordinal).next_u64();
        // Compare in 53-bit floating point: the ratio's own precision.
        ((draw >> 11) as f64) < self.fail_ratio * (1u64 << 53) as f64
    }

    /// Whether the sink is in its outage window `since_start` after it started.
    pub fn is_down(&self, since_start: Duration) -> bool {
        self.down_for.is_some_and(|length| {
            since_start >= self.down_after && since_start < self.down_after + length
        })
    }

    /// Whether the outage closes connections (as opposed to answering 503).
    pub fn is_down_closed(&self, since_start: Duration) -> bool {
        self.down_mode == DownMode::Close && self.is_down(since_start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ratio(fail_ratio: f64, seed: u64) -> Faults {
        Faults {
            fail_ratio,
            seed,
            ..Faults::none()
        }
    }

    fn failed(faults: &Faults, listener: usize, writes: u64) -> Vec<u64> {
        (0..writes).filter(|&n| faults.fails(listener, n)).collect()
    }

    #[test]
    fn same_seed_fails_the_same_writes() {
        let a = failed(&with_ratio(0.1, 42), 0, 10_000);
        assert_eq!(a, failed(&with_ratio(0.1, 42), 0, 10_000));
        assert_ne!(a, failed(&with_ratio(0.1, 43), 0, 10_000), "other seed");
        assert_ne!(a, failed(&with_ratio(0.1, 42), 1, 10_000), "other listener");
        // 10% of 10,000 within 4 standard deviations (30).
        assert!((880..=1120).contains(&a.len()), "{}", a.len());
    }

    #[test]
    fn ratio_zero_and_one_are_exact() {
        assert!(failed(&with_ratio(0.0, 1), 0, 1000).is_empty());
        assert_eq!(failed(&with_ratio(1.0, 1), 0, 1000).len(), 1000);
    }

    #[test]
    fn outage_window_is_half_open() {
        let faults = Faults {
            down_after: Duration::from_secs(5),
            down_for: Some(Duration::from_secs(10)),
            ..Faults::none()
        };
        let down = |s: f64| faults.is_down(Duration::from_secs_f64(s));
        assert!(!down(4.999) && down(5.0) && down(14.999) && !down(15.0));
        assert!(faults.is_down_closed(Duration::from_secs(6)));
        assert!(!Faults::none().is_down(Duration::ZERO));
    }
}
