//! Latency histograms (hdrhistogram, microseconds) and their renderings: a JSON
//! summary of percentiles, and HdrHistogram's percentile distribution text.

use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Recorded range: 1 µs to 10 minutes at 3 significant digits (~0.1% error);
/// anything slower is recorded as 10 minutes.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// The percentiles of the JSON summary.
const SUMMARY_PERCENTILES: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p999", 0.999),
    ("p9999", 0.9999),
];

/// One thread's histogram. The lock is taken by its owner per record and by a
/// reader merging snapshots; it is never shared between two recording threads
/// of the hot path.
#[derive(Debug)]
pub struct LatencyHistogram(Mutex<Histogram<u64>>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        LatencyHistogram(Mutex::new(empty()))
    }

    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.lock()
            .saturating_record(micros.clamp(LOWEST_US, HIGHEST_US));
    }

    /// A copy of the counts so far.
    pub fn snapshot(&self) -> Histogram<u64> {
        self.lock().clone()
    }

    /// Adds the counts so far to `into` and, with `reset`, starts a new interval.
    pub fn merge_into(&self, into: &mut Histogram<u64>, reset: bool) {
        let mut histogram = self.lock();
        // Same bounds on both sides, so adding cannot fail.
        let _ = into.add(&*histogram);
        if reset {
            histogram.reset();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        // A histogram is plain counts: a panic while holding it leaves them usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An empty histogram with the recorded range, to merge snapshots into.
pub fn empty() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        .expect("constant bounds are valid")
}

/// `{"count":N,"mean":..,"min":..,"p50":..,...,"max":..}` in microseconds.
pub fn summary_json(histogram: &Histogram<u64>, out: &mut String) {
    let _ = write!(out, "{{\"count\":{}", histogram.len());
    if histogram.is_empty() {
        out.push('}');
        return;
    }
    let _ = write!(
        out,
        ",\"mean\":{:.1},\"min\":{}",
        histogram.mean(),
        histogram.min()
    );
    for (name, quantile) in SUMMARY_PERCENTILES {
        let _ = write!(out, ",\"{name}\":{}", histogram.value_at_quantile(quantile));
    }
    let _ = write!(out, ",\"max\":{}}}", histogram.max());
}

/// HdrHistogram's percentile distribution text (as `outputPercentileDistribution`
/// prints it, values in microseconds), readable by the HdrHistogram plotter.
pub fn hgrm_text(histogram: &Histogram<u64>, out: &mut String) {
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !histogram.is_empty() {
        for step in histogram.iter_quantiles(5) {
            let quantile = step.quantile_iterated_to();
            let inverse = if quantile < 1.0 {
                format!("{:>14.2}", 1.0 / (1.0 - quantile))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{:>12.3} {:>2.12} {:>10} {inverse}",
                step.value_iterated_to() as f64,
                quantile,
                step.count_since_last_iteration(),
            );
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        histogram.mean(),
        histogram.stdev()
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        histogram.max() as f64,
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        histogram.distinct_values()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_merges_and_resets() {
        let a = LatencyHistogram::new();
        let b = LatencyHistogram::new();
        for micros in 1..=100 {
            a.record(Duration::from_micros(micros));
        }
        b.record(Duration::from_secs(3600));
        b.record(Duration::ZERO);
        let mut merged = empty();
        a.merge_into(&mut merged, false);
        b.merge_into(&mut merged, true);
        assert_eq!(merged.len(), 102);
        assert_eq!(merged.max(), merged.highest_equivalent(HIGHEST_US));
        assert_eq!(merged.min(), LOWEST_US);
        assert_eq!(a.snapshot().len(), 100);
        assert!(b.snapshot().is_empty());
        let mut json = String::new();
        summary_json(&a.snapshot(), &mut json);
        assert!(
            json.starts_with("{\"count\":100,\"mean\":50.5,\"min\":1,\"p50\":50,"),
            "{json}"
        );
        let mut text = String::new();
        hgrm_text(&a.snapshot(), &mut text);
        assert!(
            text.contains("#[Max     =      100.000, Total count    =          100]"),
            "{text}"
        );
        let mut json = String::new();
        summary_json(&empty(), &mut json);
        assert_eq!(json, "{\"count\":0}");
    }
}
