//! Flags shared by the load subcommands (`write`, `query`) and the value parsers
//! for durations and rates, so both read `--duration 10s` and `--rate 500` alike.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Target, connection and output flags common to `write` and `query`.
#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Target base URL: InfluxDB or the proxy. Plain http://host:port only.
    #[arg(long, default_value = "http://127.0.0.1:7076")]
    pub url: String,

    /// Database, sent as the `db` query parameter.
    #[arg(long, default_value = "loadgen")]
    pub db: String,

    /// Concurrent keep-alive connections, one thread each.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub connections: u64,

    /// Stop after this long, e.g. 500ms, 10s, 2m, 1h (a bare number is seconds).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Requests per second over all connections, open loop: each request has an
    /// intended send time and latency counts from it, so a slow server shows up
    /// as latency. Without it, each connection sends as soon as it is answered.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    /// Also write the latency distribution (ms) in HdrHistogram's percentile text
    /// format to FILE.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
}

/// Parses `500ms`, `10s`, `2m`, `1h` or a bare number of seconds.
///
/// # Errors
///
/// For other text and for durations that are not positive.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 10s, 500ms, 2m"))?;
    if !(value.is_finite() && value > 0.0) {
        bail!("duration must be positive, got {text:?}");
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// Parses a positive rate per second.
///
/// # Errors
///
/// For non-numbers and rates that are not positive.
pub fn parse_rate(text: &str) -> Result<f64> {
    let rate: f64 = text
        .parse()
        .with_context(|| format!("{text:?} is not a number"))?;
    if !(rate.is_finite() && rate > 0.0) {
        bail!("rate must be positive, got {text:?}");
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        for bad in ["", "s", "-1s", "0", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rates_must_be_positive_numbers() {
        assert_eq!(parse_rate("2.5").unwrap(), 2.5);
        for bad in ["0", "-1", "inf", "fast"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }
}
