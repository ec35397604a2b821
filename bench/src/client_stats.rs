//! Where a message's ack latency went, as the producer's librdkafka tells it: its own queue
//! (`int_latency`: from `produce()` until the message is put into a request to the broker) and
//! the broker round trip (`rtt`: from sending the request until its answer arrived).
//!
//! Why: at `linger.ms=0` librdkafka sends a request per partition batch, and with thousands of
//! partitions its broker thread, not the broker, can be where messages wait; on a small machine
//! the client and the broker also share the cores. A latency figure that cannot say which side
//! it came from cannot be acted on. librdkafka keeps both as histograms per statistics interval
//! (`statistics.interval.ms`, set by `--client-stats-interval-ms`), each window starting
//! empty; the intervals that end inside the measurement window are summed here: exact means
//! and maxima, and the worst interval's p99 (windows' percentiles cannot be merged).

use serde::{Deserialize, Serialize};

/// Only the part of librdkafka's statistics JSON read here (the rest, per partition, can be
/// megabytes at thousands of partitions, and is skipped by the parser).
#[derive(Deserialize)]
struct Statistics {
    brokers: std::collections::HashMap<String, BrokerStatistics>,
}

#[derive(Deserialize)]
struct BrokerStatistics {
    /// -1 for the bootstrap entries, which carry no traffic.
    nodeid: i32,
    int_latency: Option<Window>,
    rtt: Option<Window>,
}

/// One interval's histogram summary, in microseconds.
#[derive(Deserialize)]
struct Window {
    max: i64,
    sum: i64,
    cnt: i64,
    p99: i64,
}

/// One side's latency over the measured intervals, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SideLatencyMs {
    pub mean: f64,
    /// The largest p99 of any one interval.
    pub p99_worst_interval: f64,
    pub max: f64,
    pub count: u64,
    #[serde(skip)]
    sum_us: i64,
}

impl SideLatencyMs {
    fn note(&mut self, window: &Window) {
        if window.cnt <= 0 {
            return;
        }
        self.sum_us += window.sum;
        self.count += window.cnt as u64;
        self.mean = self.sum_us as f64 / self.count as f64 / 1000.0;
        self.p99_worst_interval = self.p99_worst_interval.max(window.p99 as f64 / 1000.0);
        self.max = self.max.max(window.max as f64 / 1000.0);
    }
}

/// The producer's queue and the broker round trip, over the statistics intervals that ended
/// inside the measurement window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProducerLatencySplit {
    pub intervals: u64,
    pub producer_queue_ms: SideLatencyMs,
    pub broker_round_trip_ms: SideLatencyMs,
}

impl ProducerLatencySplit {
    /// Adds one statistics report (librdkafka's JSON); reports that do not parse are ignored
    /// (the split is a diagnosis beside the run's own figures, not one of them).
    pub fn note(&mut self, statistics_json: &[u8]) {
        let Ok(statistics) = serde_json::from_slice::<Statistics>(statistics_json) else {
            return;
        };
        self.intervals += 1;
        for broker in statistics
            .brokers
            .values()
            .filter(|broker| broker.nodeid >= 0)
        {
            if let Some(window) = &broker.int_latency {
                self.producer_queue_ms.note(window);
            }
            if let Some(window) = &broker.rtt {
                self.broker_round_trip_ms.note(window);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(int_latency: (i64, i64, i64, i64), rtt: (i64, i64, i64, i64)) -> Vec<u8> {
        let window = |(max, sum, cnt, p99): (i64, i64, i64, i64)| {
            serde_json::json!({"min": 0, "max": max, "avg": 0, "sum": sum, "cnt": cnt,
                "stddev": 0, "hdrsize": 0, "p50": 0, "p75": 0, "p90": 0, "p95": 0, "p99": p99,
                "p99_99": 0, "outofrange": 0})
        };
        serde_json::to_vec(&serde_json::json!({
            "name": "rdkafka#producer-1", "topics": {"t": {"partitions": {}}},
            "brokers": {
                "127.0.0.1:9092/bootstrap": {"nodeid": -1, "int_latency": window((9e9 as i64, 0, 0, 0)),
                    "rtt": window((9e9 as i64, 0, 0, 0))},
                "127.0.0.1:9092/1": {"nodeid": 1, "int_latency": window(int_latency),
                    "rtt": window(rtt)},
            }
        }))
        .unwrap()
    }

    #[test]
    fn means_and_maxima_are_exact_over_intervals_and_p99_is_the_worst_intervals() {
        let mut split = ProducerLatencySplit::default();
        split.note(&report((1_000, 2_000, 4, 900), (5_000, 40_000, 10, 4_500)));
        split.note(&report(
            (3_000, 6_000, 4, 2_500),
            (2_000, 10_000, 10, 1_500),
        ));
        assert_eq!(split.intervals, 2);
        assert_eq!(split.producer_queue_ms.mean, 1.0, "8 ms over 8 messages");
        assert_eq!(split.producer_queue_ms.p99_worst_interval, 2.5);
        assert_eq!(split.producer_queue_ms.max, 3.0);
        assert_eq!(
            split.broker_round_trip_ms.mean, 2.5,
            "50 ms over 20 requests"
        );
        assert_eq!(split.broker_round_trip_ms.p99_worst_interval, 4.5);
        assert_eq!(split.broker_round_trip_ms.max, 5.0);
    }

    #[test]
    fn bootstrap_entries_and_unparsable_reports_count_for_nothing() {
        let mut split = ProducerLatencySplit::default();
        split.note(b"{ not json");
        split.note(&report((0, 0, 0, 0), (0, 0, 0, 0)));
        assert_eq!(split.producer_queue_ms, SideLatencyMs::default());
        assert_eq!(split.broker_round_trip_ms, SideLatencyMs::default());
        assert_eq!(split.intervals, 1);
    }
}
