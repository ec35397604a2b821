//! Latency distributions: one HdrHistogram configuration and one way of reading percentiles
//! from it, shared by every benchmark so that figures from different tools mean the same thing.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency a histogram tells apart: an hour. Longer ones are recorded as an hour.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// An empty histogram of latencies in microseconds, from 1 µs to `LATENCY_US_MAX`, to three
/// significant digits (any value is reported within 0.1 %).
pub fn histogram_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant bounds are valid")
}

/// Records `latency` (saturating at `LATENCY_US_MAX`).
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(latency_us.min(LATENCY_US_MAX));
}

/// Records a latency given in nanoseconds.
pub fn record_ns(histogram: &mut Histogram<u64>, latency_ns: u64) {
    record(histogram, Duration::from_nanos(latency_ns));
}

/// The percentiles the benchmark results report, in milliseconds (with microsecond precision).
/// An empty histogram reads as all zeros with `count` 0.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PercentilesMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    #[serde(rename = "p99.99")]
    pub p99_99: f64,
    pub max: f64,
    pub mean: f64,
    pub count: u64,
}

impl PercentilesMs {
    pub fn of(histogram: &Histogram<u64>) -> PercentilesMs {
        let at = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        let mean = if histogram.is_empty() {
            0.0
        } else {
            (histogram.mean() * 1000.0).round() / 1_000_000.0
        };
        PercentilesMs {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p99_9: at(0.999),
            p99_99: at(0.9999),
            max: histogram.max() as f64 / 1000.0,
            mean,
            count: histogram.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1..=10_000 µs, once each: the q-quantile is q × 10 000 µs (to the histogram's precision).
    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut histogram = histogram_us();
        for latency_us in 1..=10_000u64 {
            record(&mut histogram, Duration::from_micros(latency_us));
        }
        let percentiles = PercentilesMs::of(&histogram);
        let close = |actual: f64, expected: f64| (actual - expected).abs() <= expected * 0.001;
        assert!(close(percentiles.p50, 5.0), "{percentiles:?}");
        assert!(close(percentiles.p90, 9.0), "{percentiles:?}");
        assert!(close(percentiles.p99, 9.9), "{percentiles:?}");
        assert!(close(percentiles.p99_9, 9.99), "{percentiles:?}");
        assert!(close(percentiles.p99_99, 9.999), "{percentiles:?}");
        assert!(close(percentiles.max, 10.0), "{percentiles:?}");
        assert!(close(percentiles.mean, 5.0005), "{percentiles:?}");
        assert_eq!(percentiles.count, 10_000);
    }

    /// Two slow outliers in 10 000 show at p99.99 and max, not at p99.9.
    #[test]
    fn rare_outliers_show_only_in_the_far_tail() {
        let mut histogram = histogram_us();
        for _ in 0..9_998 {
            record_ns(&mut histogram, 1_000_000);
        }
        record_ns(&mut histogram, 250_000_000);
        record_ns(&mut histogram, 250_000_000);
        let percentiles = PercentilesMs::of(&histogram);
        assert_eq!(percentiles.p99_9, 1.0);
        assert!((percentiles.p99_99 - 250.0).abs() < 0.25, "{percentiles:?}");
        assert!((percentiles.max - 250.0).abs() < 0.25, "{percentiles:?}");
    }

    #[test]
    fn an_empty_histogram_reads_as_zeros() {
        let percentiles = PercentilesMs::of(&histogram_us());
        assert_eq!(percentiles.count, 0);
        assert_eq!(percentiles.max, 0.0);
        assert_eq!(percentiles.mean, 0.0);
    }

    #[test]
    fn latencies_beyond_the_bound_saturate() {
        let mut histogram = histogram_us();
        record(&mut histogram, Duration::from_secs(10 * 3600));
        assert_eq!(histogram.len(), 1);
        assert!(histogram.max() >= LATENCY_US_MAX - LATENCY_US_MAX / 1000);
    }
}
