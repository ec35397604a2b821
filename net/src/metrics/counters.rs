//! The counters a shard keeps itself: one number per shard (connections, bytes), rendered per
//! shard, and the per-topic traffic of its produce and fetch requests, summed over the shards.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::exposition::{label_value, write_family};
use super::lock;
use super::shard::{ShardMetrics, TopicTraffic};

/// A metric that is one number per shard: name, type, help text, and where a shard keeps it.
type ShardValue = fn(&ShardMetrics) -> &AtomicU64;
const SHARD_VALUES: [(&str, &str, &str, ShardValue); 16] = [
    (
        "ferrite_connections_accepted_total",
        "counter",
        "Client connections accepted.",
        |m| &m.connections_accepted,
    ),
    (
        "ferrite_connections_open",
        "gauge",
        "Client connections open now.",
        |m| &m.connections_open,
    ),
    (
        "ferrite_connections_tls_open",
        "gauge",
        "Client connections open now that use TLS, encrypted in userspace by rustls (their file \
         ranges are read and copied, not spliced; kTLS is not used); the rest of \
         ferrite_connections_open are plaintext.",
        |m| &m.connections_tls_open,
    ),
    (
        "ferrite_tls_handshakes_failed_total",
        "counter",
        "TLS handshakes that failed: a client speaking plaintext to a TLS listener, a client \
         certificate missing or not signed by --tls-ca, no common protocol, a timeout.",
        |m| &m.tls_handshakes_failed,
    ),
    (
        "ferrite_connections_moved_total",
        "counter",
        "Connections handed over to another shard, the owner of nearly all the partitions their \
         produce and fetch requests named (they are served there from then on).",
        |m| &m.connections_moved,
    ),
    (
        "ferrite_connections_closed_bad_input_total",
        "counter",
        "Connections closed for malformed or unsupported requests.",
        |m| &m.connections_closed_for_bad_input,
    ),
    (
        "ferrite_connections_closed_idle_total",
        "counter",
        "Connections closed after connections.max.idle.ms without a request.",
        |m| &m.connections_closed_idle,
    ),
    (
        "ferrite_connections_refused_total",
        "counter",
        "Connections closed at once: their address had max.connections.per.ip open.",
        |m| &m.connections_refused,
    ),
    (
        "ferrite_connections_delayed_total",
        "counter",
        "Connections accepted only once another closed: max.connections were open.",
        |m| &m.connections_delayed,
    ),
    (
        "ferrite_accept_failures_total",
        "counter",
        "Accepts that failed (out of file descriptors and the like); a shortage pauses accepts.",
        |m| &m.accept_failures,
    ),
    (
        "ferrite_bytes_received_total",
        "counter",
        "Bytes read from client connections.",
        |m| &m.bytes_received,
    ),
    (
        "ferrite_bytes_sent_total",
        "counter",
        "Bytes written to client connections.",
        |m| &m.bytes_sent,
    ),
    (
        "ferrite_bytes_spliced_total",
        "counter",
        "Bytes sent to clients straight from segment files (splice).",
        |m| &m.bytes_spliced,
    ),
    (
        "ferrite_produce_bytes_copied_total",
        "counter",
        "Produced record batch bytes copied out of their request's buffer before the append.",
        |m| &m.produce_bytes_copied,
    ),
    (
        "ferrite_quota_throttled_requests_total",
        "counter",
        "Requests after which a client over its quota (producer_byte_rate, consumer_byte_rate, \
         request_percentage) was throttled: told throttle_time_ms and its connection muted.",
        |m| &m.requests_throttled,
    ),
    (
        "ferrite_quota_throttle_time_ms_total",
        "counter",
        "Milliseconds of throttle time given to clients over their quotas.",
        |m| &m.throttle_time_ms,
    ),
];

/// The per-topic counters: name, help text, and the field.
type TopicValue = fn(&TopicTraffic) -> u64;
const TOPIC_COUNTERS: [(&str, &str, TopicValue); 4] = [
    (
        "ferrite_topic_produced_bytes_total",
        "Record batch bytes appended by produce requests, summed over shards.",
        |t| t.produced_bytes,
    ),
    (
        "ferrite_topic_produced_records_total",
        "Records (offsets) appended by produce requests, summed over shards.",
        |t| t.produced_records,
    ),
    (
        "ferrite_topic_produced_batches_total",
        "Record batches appended by produce requests, summed over shards.",
        |t| t.produced_batches,
    ),
    (
        "ferrite_topic_fetched_bytes_total",
        "Record batch bytes in fetch responses, summed over shards.",
        |t| t.fetched_bytes,
    ),
];

pub(super) fn render_shard_values(out: &mut String, shards: &[Arc<ShardMetrics>]) {
    for (name, kind, help, value) in SHARD_VALUES {
        write_family(out, name, kind, help);
        for (shard, metrics) in shards.iter().enumerate() {
            let value = value(metrics).load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {value}");
        }
    }
}

pub(super) fn render_topics(out: &mut String, shards: &[Arc<ShardMetrics>]) {
    let mut topics: BTreeMap<String, TopicTraffic> = BTreeMap::new();
    for shard in shards.iter() {
        for (topic, traffic) in lock(&shard.topics).iter() {
            let total = topics.entry(topic.clone()).or_default();
            total.produced_bytes += traffic.produced_bytes;
            total.produced_records += traffic.produced_records;
            total.produced_batches += traffic.produced_batches;
            total.fetched_bytes += traffic.fetched_bytes;
        }
    }
    for (name, help, value) in TOPIC_COUNTERS {
        write_family(out, name, "counter", help);
        for (topic, traffic) in &topics {
            let topic = label_value(topic);
            let _ = writeln!(out, "{name}{{topic=\"{topic}\"}} {}", value(traffic));
        }
    }
}
