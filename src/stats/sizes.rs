//! Counts of batch sizes in fixed buckets, exposed as a Prometheus histogram:
//! how full the batches a backend gets are, which decides its write cost.
//! Recording is two relaxed atomic adds per batch, never per point.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (inclusive, as Prometheus' `le`) of the points-per-batch
/// buckets: from a trickle of single points, through InfluxDB's recommended
/// 5000, to a full 1 MiB batch of short lines and beyond.
pub const BATCH_POINTS_BOUNDS: [u64; 10] =
    [1, 10, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000];

/// Points per batch: a count per bucket (the last for sizes past every
/// bound), and the sum of all sizes.
#[derive(Debug, Default)]
pub struct BatchSizes {
    counts: [AtomicU64; BATCH_POINTS_BOUNDS.len() + 1],
    sum: AtomicU64,
}

/// A read of [`BatchSizes`], cumulative as Prometheus wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cumulative {
    /// Batches of at most each bound, in the order of [`BATCH_POINTS_BOUNDS`].
    pub at_most: [u64; BATCH_POINTS_BOUNDS.len()],
    /// All batches (the `+Inf` bucket and `_count`).
    pub count: u64,
    /// Points in all batches.
    pub sum: u64,
}

impl Cumulative {
    /// Each bound with the batches of at most that many points.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        BATCH_POINTS_BOUNDS.iter().copied().zip(self.at_most)
    }
}

impl BatchSizes {
    pub fn record(&self, points: usize) {
        let points = points as u64;
        let bucket = BATCH_POINTS_BOUNDS.partition_point(|&bound| bound < points);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(points, Ordering::Relaxed);
    }

    /// The counts so far. A batch recorded meanwhile may show in its bucket
    /// and not yet in the sum, as with any pair of counters read one by one.
    pub fn cumulative(&self) -> Cumulative {
        let mut at_most = [0; BATCH_POINTS_BOUNDS.len()];
        let mut running = 0;
        for (total, count) in at_most.iter_mut().zip(&self.counts) {
            running += count.load(Ordering::Relaxed);
            *total = running;
        }
        let past_every_bound = self.counts[BATCH_POINTS_BOUNDS.len()].load(Ordering::Relaxed);
        Cumulative {
            at_most,
            count: running + past_every_bound,
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_counts_in_the_first_bucket_whose_bound_it_does_not_pass() {
        let sizes = BatchSizes::default();
        for points in [0, 1, 2, 10, 11, 5000, 5001, 100_000, 100_001, 7_000_000] {
            sizes.record(points);
        }
        let read = sizes.cumulative();
        // le 1: 0 and 1; le 10: 2 and 10; le 100: 11; le 5000: 5000;
        // le 10000: 5001; le 100000: 100000; past every bound: two.
        assert_eq!(read.at_most, [2, 4, 5, 5, 5, 5, 6, 7, 7, 8]);
        assert_eq!(read.count, 10);
        assert_eq!(
            read.sum,
            1 + 2 + 10 + 11 + 5000 + 5001 + 100_000 + 100_001 + 7_000_000
        );
    }

    #[test]
    fn nothing_recorded_reads_as_zeros() {
        let read = BatchSizes::default().cumulative();
        assert_eq!(read.at_most, [0; BATCH_POINTS_BOUNDS.len()]);
        assert_eq!((read.count, read.sum), (0, 0));
    }
}
