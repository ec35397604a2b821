//! What one shard counts and publishes: [`ShardMetrics`], written by its shard only (relaxed
//! atomic adds on its own cache lines; the latencies, the per-topic traffic and the last
//! [`ShardSnapshot`] behind mutexes only a scrape contends), and read by the metrics thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::groups::shard::GroupStats;
use engine::shard::PartitionStats;
use engine::CommitStats;
use ferrite_replication::stats::ReplicationStats;
use kafka_protocol::messages::ApiKey;

use super::latency::{ApiLatency, RecentLatencies, API_KEYS};
use super::lock;

/// What one shard's produce and fetch requests moved for one topic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct TopicTraffic {
    pub(super) produced_bytes: u64,
    pub(super) produced_records: u64,
    pub(super) produced_batches: u64,
    pub(super) fetched_bytes: u64,
}

/// What a shard publishes about the state it owns, for the metrics thread to render.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// The partition logs the shard has open.
    pub partitions: Vec<PartitionStats>,
    /// The groups whose coordinator runs on the shard, with their committed offsets.
    pub groups: Vec<GroupStats>,
    /// What the shard's replicas sent, received and waited for (a cluster broker's).
    pub replication: ReplicationStats,
    /// What the shard's commit cycle did.
    pub commit: CommitStats,
    /// Requests the shard forwarded to each shard over the mesh since the start, by shard.
    pub mesh_requests_sent: Vec<u64>,
}

/// One shard's metrics.
pub struct ShardMetrics {
    /// Indexed by API key.
    pub(super) apis: Vec<Mutex<ApiLatency>>,
    pub(super) connections_accepted: AtomicU64,
    pub(super) connections_open: AtomicU64,
    pub(super) connections_tls_open: AtomicU64,
    pub(super) tls_handshakes_failed: AtomicU64,
    pub(super) connections_closed_for_bad_input: AtomicU64,
    pub(super) connections_closed_idle: AtomicU64,
    pub(super) connections_refused: AtomicU64,
    pub(super) connections_delayed: AtomicU64,
    pub(super) connections_moved: AtomicU64,
    pub(super) accept_failures: AtomicU64,
    pub(super) bytes_received: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
    pub(super) bytes_spliced: AtomicU64,
    pub(super) produce_bytes_copied: AtomicU64,
    pub(super) requests_throttled: AtomicU64,
    pub(super) throttle_time_ms: AtomicU64,
    /// Topics this shard's clients produced to or fetched from; topics that no longer exist
    /// are forgotten when the next snapshot is published, so this is bounded by the catalog.
    pub(super) topics: Mutex<HashMap<String, TopicTraffic>>,
    pub(super) snapshot: Mutex<ShardSnapshot>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            apis: (0..API_KEYS).map(|_| Mutex::default()).collect(),
            connections_accepted: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_tls_open: AtomicU64::new(0),
            tls_handshakes_failed: AtomicU64::new(0),
            connections_closed_for_bad_input: AtomicU64::new(0),
            connections_closed_idle: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_delayed: AtomicU64::new(0),
            connections_moved: AtomicU64::new(0),
            accept_failures: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_spliced: AtomicU64::new(0),
            produce_bytes_copied: AtomicU64::new(0),
            requests_throttled: AtomicU64::new(0),
            throttle_time_ms: AtomicU64::new(0),
            topics: Mutex::default(),
            snapshot: Mutex::default(),
        }
    }
}

fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

/// Counts a connection as open while it lives.
#[must_use = "the connection counts as open only while this lives"]
pub struct OpenConnection<'a> {
    metrics: &'a ShardMetrics,
    tls: bool,
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        if self.tls {
            self.metrics
                .connections_tls_open
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ShardMetrics {
    /// One answered request of `api_key` that took `latency` from decoding to its reply, which
    /// was ready at `now`.
    pub fn request_answered(&self, api_key: ApiKey, latency: Duration, now: Instant) {
        let Some(api) = self.apis.get(api_key as usize) else {
            return;
        };
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut api = lock(api);
        api.requests += 1;
        api.latency_micros_sum = api.latency_micros_sum.saturating_add(micros);
        let recent = api.recent.get_or_insert_with(|| RecentLatencies::new(now));
        recent.rotate(now);
        recent.current.saturating_record(micros);
    }

    /// A client over its quota was throttled for `throttle` after a request.
    pub fn request_throttled(&self, throttle: Duration) {
        add(&self.requests_throttled, 1);
        add(
            &self.throttle_time_ms,
            throttle.as_millis().min(u128::from(u64::MAX)) as u64,
        );
    }

    /// A connection was accepted.
    pub fn connection_accepted(&self) {
        add(&self.connections_accepted, 1);
    }

    /// A connection is served on this shard (accepted here, or handed over by another shard)
    /// until the returned guard is dropped.
    pub fn connection_open(&self) -> OpenConnection<'_> {
        add(&self.connections_open, 1);
        OpenConnection {
            metrics: self,
            tls: false,
        }
    }

    /// A TLS connection is served on this shard until the returned guard is dropped.
    pub fn connection_tls_open(&self) -> OpenConnection<'_> {
        add(&self.connections_open, 1);
        add(&self.connections_tls_open, 1);
        OpenConnection {
            metrics: self,
            tls: true,
        }
    }

    /// A TLS handshake failed (a plaintext client on a TLS listener, an untrusted certificate).
    pub fn tls_handshake_failed(&self) {
        add(&self.tls_handshakes_failed, 1);
    }

    /// A connection was handed over to another shard.
    pub fn connection_moved(&self) {
        add(&self.connections_moved, 1);
    }

    pub fn connection_closed_for_bad_input(&self) {
        add(&self.connections_closed_for_bad_input, 1);
    }

    /// Closed after `connections.max.idle.ms` without activity.
    pub fn connection_closed_idle(&self) {
        add(&self.connections_closed_idle, 1);
    }

    /// Closed at once: its address had `max.connections.per.ip` open.
    pub fn connection_refused(&self) {
        add(&self.connections_refused, 1);
    }

    /// Served only once a slot freed: `max.connections` were open when it came.
    pub fn connection_delayed(&self) {
        add(&self.connections_delayed, 1);
    }

    /// An accept failed (out of descriptors and the like).
    pub fn accept_failed(&self) {
        add(&self.accept_failures, 1);
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

    /// A produce request's batch of `bytes` was copied out of the request's buffer.
    pub fn produce_bytes_copied(&self, bytes: u64) {
        add(&self.produce_bytes_copied, bytes);
    }

    /// A produce request appended one batch of `bytes` holding `records` records to `topic`.
    pub fn batch_produced(&self, topic: &str, bytes: u64, records: u64) {
        self.count_traffic(topic, |traffic| {
            traffic.produced_bytes += bytes;
            traffic.produced_records += records;
            traffic.produced_batches += 1;
        });
    }

    /// A fetch response carries `bytes` of `topic`'s record batches.
    pub fn records_fetched(&self, topic: &str, bytes: u64) {
        self.count_traffic(topic, |traffic| traffic.fetched_bytes += bytes);
    }

    fn count_traffic(&self, topic: &str, count: impl FnOnce(&mut TopicTraffic)) {
        let mut topics = lock(&self.topics);
        match topics.get_mut(topic) {
            Some(traffic) => count(traffic),
            None => count(topics.entry(topic.to_owned()).or_default()),
        }
    }

    /// Replaces what the shard last published; forgets the traffic of topics for which
    /// `topic_exists` says no.
    pub fn publish(&self, snapshot: ShardSnapshot, topic_exists: impl Fn(&str) -> bool) {
        lock(&self.topics).retain(|topic, _| topic_exists(topic));
        *lock(&self.snapshot) = snapshot;
    }
}
