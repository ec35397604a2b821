//! The broker's counters, in Prometheus' text format.
//!
//! Each shard owns one [`ShardMetrics`] and is its only writer (relaxed atomic adds on its own
//! cache lines, nothing shared on the request path); the metrics endpoint's thread reads every
//! shard's and renders the sums, plus per-shard series where the split matters.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

/// Upper bounds of the request-latency histogram buckets, in microseconds.
const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// API keys are small numbers; counters are kept for keys below this.
const API_KEYS: usize = 80;

/// One API's request count and latency histogram.
struct ApiMetrics {
    requests: AtomicU64,
    /// Cumulative counts per bucket bound, then the overflow (`+Inf`) bucket.
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    latency_micros_sum: AtomicU64,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            requests: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_micros_sum: AtomicU64::new(0),
        }
    }
}

/// One shard's counters.
pub struct ShardMetrics {
    apis: Vec<ApiMetrics>,
    connections_accepted: AtomicU64,
    connections_closed_for_bad_input: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_spliced: AtomicU64,
    records_bytes_appended: AtomicU64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            apis: (0..API_KEYS).map(|_| ApiMetrics::default()).collect(),
            connections_accepted: AtomicU64::new(0),
            connections_closed_for_bad_input: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_spliced: AtomicU64::new(0),
            records_bytes_appended: AtomicU64::new(0),
        }
    }
}

fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

impl ShardMetrics {
    /// One answered request of `api_key` that took `latency` from decoding to its reply.
    pub fn request_answered(&self, api_key: ApiKey, latency: Duration) {
        let Some(api) = self.apis.get(api_key as usize) else {
            return;
        };
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        add(&api.requests, 1);
        add(&api.latency_micros_sum, micros);
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        add(&api.buckets[bucket], 1);
    }

    pub fn connection_accepted(&self) {
        add(&self.connections_accepted, 1);
    }

    pub fn connection_closed_for_bad_input(&self) {
        add(&self.connections_closed_for_bad_input, 1);
    }

    pub fn bytes_received(&self, bytes: u64) {
        add(&self.bytes_received, bytes);
    }

    pub fn bytes_sent(&self, bytes: u64, spliced: bool) {
        add(&self.bytes_sent, bytes);
        if spliced {
            add(&self.bytes_spliced, bytes);
        }
    }

    pub fn records_appended(&self, bytes: u64) {
        add(&self.records_bytes_appended, bytes);
    }
}

/// The per-shard counters as exposed: name, help text, and where each shard keeps it.
type CounterOf = fn(&ShardMetrics) -> &AtomicU64;
const SHARD_COUNTERS: [(&str, &str, CounterOf); 6] = [
    (
        "ferrite_connections_accepted_total",
        "Client connections accepted.",
        |m| &m.connections_accepted,
    ),
    (
        "ferrite_connections_closed_bad_input_total",
        "Connections closed for malformed or unsupported requests.",
        |m| &m.connections_closed_for_bad_input,
    ),
    (
        "ferrite_bytes_received_total",
        "Bytes read from client connections.",
        |m| &m.bytes_received,
    ),
    (
        "ferrite_bytes_sent_total",
        "Bytes written to client connections.",
        |m| &m.bytes_sent,
    ),
    (
        "ferrite_bytes_spliced_total",
        "Bytes sent to clients straight from segment files (splice).",
        |m| &m.bytes_spliced,
    ),
    (
        "ferrite_produce_bytes_total",
        "Record batch bytes accepted by produce requests.",
        |m| &m.records_bytes_appended,
    ),
];

/// Every shard's metrics, for the endpoint. Cheap to clone.
#[derive(Clone)]
pub struct MetricsRegistry {
    shards: Arc<Vec<Arc<ShardMetrics>>>,
}

impl MetricsRegistry {
    pub fn new(shard_count: usize) -> MetricsRegistry {
        MetricsRegistry {
            shards: Arc::new(
                (0..shard_count)
                    .map(|_| Arc::new(ShardMetrics::default()))
                    .collect(),
            ),
        }
    }

    /// Shard `shard`'s metrics. Panics if `shard` is not below the shard count.
    pub fn shard(&self, shard: usize) -> Arc<ShardMetrics> {
        self.shards[shard].clone()
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        for (name, help, counter) in SHARD_COUNTERS {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (shard, metrics) in self.shards.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{shard}\"}} {}",
                    load(counter(metrics))
                );
            }
        }

        let name = "ferrite_request_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a request's decoding to its reply being ready, by API.\n\
             # TYPE {name} histogram"
        );
        for key in 0..API_KEYS {
            let Ok(api_key) = ApiKey::try_from(key as i16) else {
                continue;
            };
            let count: u64 = self
                .shards
                .iter()
                .map(|m| load(&m.apis[key].requests))
                .sum();
            if count == 0 {
                continue;
            }
            let api = format!("{api_key:?}");
            let mut cumulative = 0;
            for (bucket, bound) in LATENCY_BUCKETS_MICROS.iter().enumerate() {
                cumulative += self
                    .shards
                    .iter()
                    .map(|m| load(&m.apis[key].buckets[bucket]))
                    .sum::<u64>();
                let _ = writeln!(
                    out,
                    "{name}_bucket{{api=\"{api}\",le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e6
                );
            }
            let _ = writeln!(out, "{name}_bucket{{api=\"{api}\",le=\"+Inf\"}} {count}");
            let sum: u64 = self
                .shards
                .iter()
                .map(|m| load(&m.apis[key].latency_micros_sum))
                .sum();
            let _ = writeln!(out, "{name}_sum{{api=\"{api}\"}} {}", sum as f64 / 1e6);
            let _ = writeln!(out, "{name}_count{{api=\"{api}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_every_shard_add_up_in_the_exposition() {
        let registry = MetricsRegistry::new(2);
        registry
            .shard(0)
            .request_answered(ApiKey::Produce, Duration::from_micros(300));
        registry
            .shard(1)
            .request_answered(ApiKey::Produce, Duration::from_secs(10));
        registry.shard(1).bytes_sent(100, true);
        let text = registry.render();
        assert!(
            text.contains("ferrite_bytes_spliced_total{shard=\"1\"} 100"),
            "{text}"
        );
        assert!(text
            .contains("ferrite_request_latency_seconds_bucket{api=\"Produce\",le=\"0.00025\"} 0"));
        assert!(text
            .contains("ferrite_request_latency_seconds_bucket{api=\"Produce\",le=\"0.0005\"} 1"));
        assert!(
            text.contains("ferrite_request_latency_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 2")
        );
        assert!(text.contains("ferrite_request_latency_seconds_count{api=\"Produce\"} 2"));
        assert!(
            !text.contains("api=\"Fetch\""),
            "APIs never used are left out"
        );
    }
}
