//! The broker's metrics, in Prometheus' text format.
//!
//! Each shard owns one [`ShardMetrics`] and is its only writer: counters are relaxed atomic adds
//! on its own cache lines; what does not fit in an atomic (an API's latency histogram, the
//! per-topic traffic, the snapshot of the partitions it owns) sits behind a mutex that only the
//! metrics endpoint's thread contends, once per scrape. That thread reads every shard's metrics
//! and renders per-shard series, or merges the shards' (latency histograms are merged at scrape
//! time, so a shard never waits for another).
//!
//! Partition offsets and sizes belong to the logs on their owning shard, which publishes a
//! [`ShardSnapshot`] of them every second or so (`server::publish_snapshots`); a scrape renders
//! each shard's latest. Everything derived from several shards' state (a partition's lag
//! against a group's committed offset, say) is worked out in [`MetricsRegistry::render`], from
//! the snapshots.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use engine::groups::TopicPartition;
use engine::shard::replicated::{MessageKind, ReplicationStats, Stage, StageHistogram};
use engine::shard::{GroupStats, PartitionStats};
use engine::CommitStats;
use hdrhistogram::Histogram;
use kafka_protocol::messages::ApiKey;

/// API keys are small numbers; latencies are kept for keys below this.
const API_KEYS: usize = 80;

/// Latencies are recorded in microseconds up to a minute (longer ones count as a minute) with
/// two significant digits: quantiles within 1 %, in ≈ 20 KiB per histogram.
const LATENCY_MICROS_MAX: u64 = 60_000_000;
const LATENCY_SIGNIFICANT_DIGITS: u8 = 2;

/// Latency quantiles describe the requests answered in the current window and the one before
/// it: the last one to two windows.
const LATENCY_WINDOW: Duration = Duration::from_secs(60);

/// The latency quantiles exposed.
const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 0.9999];

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant bounds hdrhistogram accepts")
}

/// Only the shard and the scraper take these locks; a panic while one held it leaves numbers
/// that are still worth reading.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One API's latencies on one shard.
#[derive(Default)]
struct ApiLatency {
    /// Requests answered since start (exact).
    requests: u64,
    latency_micros_sum: u64,
    /// Allocated on the API's first request: most APIs are never used.
    recent: Option<RecentLatencies>,
}

/// The latency histograms of the current window and of the one before it.
struct RecentLatencies {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    current_ends: Instant,
}

impl RecentLatencies {
    fn new(now: Instant) -> RecentLatencies {
        RecentLatencies {
            current: latency_histogram(),
            previous: latency_histogram(),
            current_ends: now + LATENCY_WINDOW,
        }
    }

    /// Moves on to the window `now` falls in (at most two steps: after that both are empty).
    fn rotate(&mut self, now: Instant) {
        for _ in 0..2 {
            if now < self.current_ends {
                return;
            }
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.reset();
            self.current_ends += LATENCY_WINDOW;
        }
        if now >= self.current_ends {
            self.current_ends = now + LATENCY_WINDOW;
        }
    }
}

/// What one shard's produce and fetch requests moved for one topic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct TopicTraffic {
    produced_bytes: u64,
    produced_records: u64,
    produced_batches: u64,
    fetched_bytes: u64,
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
    apis: Vec<Mutex<ApiLatency>>,
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    connections_closed_for_bad_input: AtomicU64,
    connections_closed_idle: AtomicU64,
    connections_refused: AtomicU64,
    connections_delayed: AtomicU64,
    connections_moved: AtomicU64,
    accept_failures: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_spliced: AtomicU64,
    produce_bytes_copied: AtomicU64,
    /// Topics this shard's clients produced to or fetched from; topics that no longer exist
    /// are forgotten when the next snapshot is published, so this is bounded by the catalog.
    topics: Mutex<HashMap<String, TopicTraffic>>,
    snapshot: Mutex<ShardSnapshot>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            apis: (0..API_KEYS).map(|_| Mutex::default()).collect(),
            connections_accepted: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
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
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
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

    /// A connection was accepted.
    pub fn connection_accepted(&self) {
        add(&self.connections_accepted, 1);
    }

    /// A connection is served on this shard (accepted here, or handed over by another shard)
    /// until the returned guard is dropped.
    pub fn connection_open(&self) -> OpenConnection<'_> {
        add(&self.connections_open, 1);
        OpenConnection { metrics: self }
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

/// A metric that is one number per shard: name, type, help text, and where a shard keeps it.
type ShardValue = fn(&ShardMetrics) -> &AtomicU64;
const SHARD_VALUES: [(&str, &str, &str, ShardValue); 12] = [
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

/// The per-partition series: name, kind, help text, and the value from the owning shard's
/// number and its statistics of the partition.
type PartitionValue = fn(usize, &PartitionStats) -> u64;
const PARTITION_SERIES: [(&str, &str, &str, PartitionValue); 8] = [
    (
        "ferrite_partition_log_start_offset",
        "gauge",
        "First offset still in the partition's log.",
        |_, p| p.log_start_offset,
    ),
    (
        "ferrite_partition_high_watermark",
        "gauge",
        "Offset after the last record consumers can read (the log end offset).",
        |_, p| p.high_watermark,
    ),
    (
        "ferrite_partition_size_bytes",
        "gauge",
        "Bytes of record batches in the partition's segments.",
        |_, p| p.size_bytes,
    ),
    (
        "ferrite_partition_segments",
        "gauge",
        "Segment files of the partition's log.",
        |_, p| p.segment_count as u64,
    ),
    (
        "ferrite_partition_shard",
        "gauge",
        "The shard (thread, core) that owns the partition's log.",
        |shard, _| shard as u64,
    ),
    (
        "ferrite_partition_healthy",
        "gauge",
        "1 while the partition's log here can be written; 0 after a failed write or sync, \
         until it recovers (a replica by itself, a single broker's log after a failed sync \
         only by a restart).",
        |_, p| u64::from(p.healthy),
    ),
    (
        "ferrite_partition_damaged_offsets",
        "gauge",
        "Offsets of the partition refused to readers (CORRUPT_MESSAGE) because their bytes on \
         disk are damaged; 0 unless the disk lost data (see `ferrite repair-log`).",
        |_, p| p.damaged_offsets,
    ),
    (
        "ferrite_partition_damage_found_total",
        "counter",
        "Damaged ranges found in the partition's log since it was opened (when opened, or by a \
         read), including those since fetched again from a leader.",
        |_, p| p.damage_found,
    ),
];

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn label_value(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

fn write_family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One API's latencies over every shard.
struct MergedLatency {
    requests_per_shard: Vec<u64>,
    latency_micros_sum: u64,
    recent: Histogram<u64>,
}

/// Every shard's metrics, for the endpoint. Cheap to clone.
#[derive(Clone)]
pub struct MetricsRegistry {
    shards: Arc<Vec<Arc<ShardMetrics>>>,
    controller: Arc<ControllerGauge>,
}

/// A cluster's broker's view of the metadata quorum (rendered only once reported).
#[derive(Debug, Default)]
struct ControllerGauge {
    reported: AtomicBool,
    /// The node whose controller leads the metadata log; 0: none known.
    leader: AtomicU64,
}

impl MetricsRegistry {
    pub fn new(shard_count: usize) -> MetricsRegistry {
        MetricsRegistry {
            shards: Arc::new(
                (0..shard_count)
                    .map(|_| Arc::new(ShardMetrics::default()))
                    .collect(),
            ),
            controller: Arc::default(),
        }
    }

    /// The node whose controller leads the metadata log, as this broker knows it now
    /// (`None`: an election, or cut off). Metadata responses name the answering broker as the
    /// controller (it forwards), so this is where an operator sees the real one.
    pub fn controller_leader_observed(&self, leader: Option<u64>) {
        self.controller
            .leader
            .store(leader.unwrap_or(0), Ordering::Relaxed);
        self.controller.reported.store(true, Ordering::Relaxed);
    }

    /// Shard `shard`'s metrics. Panics if `shard` is not below the shard count.
    pub fn shard(&self, shard: usize) -> Arc<ShardMetrics> {
        self.shards[shard].clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.render_at(Instant::now())
    }

    fn render_at(&self, now: Instant) -> String {
        let mut out = String::new();
        if self.controller.reported.load(Ordering::Relaxed) {
            let name = "ferrite_controller_leader";
            write_family(
                &mut out,
                name,
                "gauge",
                "Node id of the broker whose controller leads the metadata log, as this broker \
                 knows it (0: none known).",
            );
            let leader = self.controller.leader.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name} {leader}");
        }
        self.render_shard_values(&mut out);
        self.render_latencies(&mut out, now);
        self.render_topics(&mut out);
        let snapshots: Vec<ShardSnapshot> = self
            .shards
            .iter()
            .map(|shard| lock(&shard.snapshot).clone())
            .collect();
        render_snapshots(&mut out, &snapshots);
        render_commit(&mut out, &snapshots);
        render_mesh(&mut out, &snapshots);
        render_replication(&mut out, &snapshots);
        out
    }

    fn render_shard_values(&self, out: &mut String) {
        for (name, kind, help, value) in SHARD_VALUES {
            write_family(out, name, kind, help);
            for (shard, metrics) in self.shards.iter().enumerate() {
                let value = value(metrics).load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {value}");
            }
        }
    }

    /// Every shard's latencies of `api_key`, or `None` if no shard answered one.
    fn merged_latency(&self, key: usize, now: Instant) -> Option<MergedLatency> {
        let mut merged = MergedLatency {
            requests_per_shard: Vec::with_capacity(self.shards.len()),
            latency_micros_sum: 0,
            recent: latency_histogram(),
        };
        for shard in self.shards.iter() {
            let mut api = lock(&shard.apis[key]);
            merged.requests_per_shard.push(api.requests);
            merged.latency_micros_sum = merged
                .latency_micros_sum
                .saturating_add(api.latency_micros_sum);
            if let Some(recent) = &mut api.recent {
                recent.rotate(now);
                for histogram in [&recent.current, &recent.previous] {
                    merged
                        .recent
                        .add(histogram)
                        .expect("histograms of one configuration merge");
                }
            }
        }
        merged
            .requests_per_shard
            .iter()
            .any(|&requests| requests > 0)
            .then_some(merged)
    }

    fn render_latencies(&self, out: &mut String, now: Instant) {
        let apis: Vec<(String, MergedLatency)> = (0..API_KEYS)
            .filter_map(|key| {
                let api_key = ApiKey::try_from(key as i16).ok()?;
                Some((format!("{api_key:?}"), self.merged_latency(key, now)?))
            })
            .collect();

        let name = "ferrite_requests_total";
        write_family(
            out,
            name,
            "counter",
            "Requests answered, per shard and API.",
        );
        for (api, latency) in &apis {
            for (shard, requests) in latency.requests_per_shard.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\",api=\"{api}\"}} {requests}");
            }
        }

        let seconds = |micros: u64| micros as f64 / 1e6;
        // An empty window has no quantiles, which Prometheus writes as NaN.
        let recent_seconds = |histogram: &Histogram<u64>, micros: u64| {
            if histogram.is_empty() {
                f64::NAN
            } else {
                seconds(micros)
            }
        };
        let name = "ferrite_request_latency_seconds";
        write_family(
            out,
            name,
            "summary",
            "Time from a request's decoding to its reply being ready, per API, merged over \
             shards. Quantiles (within 1%) cover the last 1 to 2 minutes; sum and count, \
             everything since start.",
        );
        for (api, latency) in &apis {
            for quantile in QUANTILES {
                let micros = latency.recent.value_at_quantile(quantile);
                let value = recent_seconds(&latency.recent, micros);
                let _ = writeln!(
                    out,
                    "{name}{{api=\"{api}\",quantile=\"{quantile}\"}} {value}"
                );
            }
            let sum = seconds(latency.latency_micros_sum);
            let count: u64 = latency.requests_per_shard.iter().sum();
            let _ = writeln!(out, "{name}_sum{{api=\"{api}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{api=\"{api}\"}} {count}");
        }

        let name = "ferrite_request_latency_seconds_max";
        write_family(
            out,
            name,
            "gauge",
            "Longest time from a request's decoding to its reply being ready in the last 1 to 2 \
             minutes, per API, over all shards.",
        );
        for (api, latency) in &apis {
            let value = recent_seconds(&latency.recent, latency.recent.max());
            let _ = writeln!(out, "{name}{{api=\"{api}\"}} {value}");
        }
    }

    fn render_topics(&self, out: &mut String) {
        let mut topics: BTreeMap<String, TopicTraffic> = BTreeMap::new();
        for shard in self.shards.iter() {
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
}

/// Renders what the shards published: one series per partition (listed by its owner only),
/// and per group its members, committed offsets and lag. The lag of a group on a partition is
/// the partition's high-water mark (from the owner's snapshot) minus the committed offset; it
/// is left out while the owner has not opened the partition since start-up.
fn render_snapshots(out: &mut String, snapshots: &[ShardSnapshot]) {
    let mut partitions: Vec<(usize, &PartitionStats)> = snapshots
        .iter()
        .enumerate()
        .flat_map(|(shard, snapshot)| snapshot.partitions.iter().map(move |stats| (shard, stats)))
        .collect();
    partitions.sort_by(|(_, a), (_, b)| a.partition.cmp(&b.partition));
    for (name, kind, help, value) in PARTITION_SERIES {
        write_family(out, name, kind, help);
        for (shard, stats) in &partitions {
            let topic = label_value(&stats.partition.topic);
            let partition = stats.partition.partition;
            let _ = writeln!(
                out,
                "{name}{{topic=\"{topic}\",partition=\"{partition}\"}} {}",
                value(*shard, stats)
            );
        }
    }
    let mut groups: Vec<&GroupStats> = snapshots
        .iter()
        .flat_map(|snapshot| &snapshot.groups)
        .collect();
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    write_family(
        out,
        "ferrite_group_members",
        "gauge",
        "Members of the consumer group.",
    );
    for group in &groups {
        let _ = writeln!(
            out,
            "ferrite_group_members{{group=\"{}\",state=\"{}\"}} {}",
            label_value(&group.group_id),
            group.state.name(),
            group.members
        );
    }
    let high_watermarks: HashMap<(&str, i32), u64> = partitions
        .iter()
        .map(|(_, stats)| {
            let key = (
                stats.partition.topic.as_str(),
                stats.partition.partition as i32,
            );
            (key, stats.high_watermark)
        })
        .collect();
    let committed = || {
        groups.iter().flat_map(|group| {
            group
                .offsets
                .iter()
                .map(move |(partition, offset)| (group, partition, *offset))
        })
    };
    let series = |group: &GroupStats, partition: &TopicPartition| {
        format!(
            "{{group=\"{}\",topic=\"{}\",partition=\"{}\"}}",
            label_value(&group.group_id),
            label_value(&partition.topic),
            partition.partition
        )
    };
    write_family(
        out,
        "ferrite_group_committed_offset",
        "gauge",
        "The group's committed offset on the partition.",
    );
    for (group, partition, offset) in committed() {
        let labels = series(group, partition);
        let _ = writeln!(out, "ferrite_group_committed_offset{labels} {offset}");
    }
    write_family(
        out,
        "ferrite_group_lag",
        "gauge",
        "Records of the partition after the group's committed offset (high-water mark minus \
         committed offset, at least 0).",
    );
    for (group, partition, offset) in committed() {
        let key = (partition.topic.as_str(), partition.partition);
        if let Some(&high_watermark) = high_watermarks.get(&key) {
            let lag = (high_watermark as i64).saturating_sub(offset).max(0);
            let labels = series(group, partition);
            let _ = writeln!(out, "ferrite_group_lag{labels} {lag}");
        }
    }
}

/// The commit cycles' counters, per shard.
fn render_commit(out: &mut String, snapshots: &[ShardSnapshot]) {
    type CommitValue = fn(&CommitStats) -> u64;
    const SERIES: [(&str, &str, CommitValue); 10] = [
        ("ferrite_journal_writes_total", "Journal writes.", |s| {
            s.journal_writes
        }),
        ("ferrite_journal_syncs_total", "Journal fdatasyncs.", |s| {
            s.journal_syncs
        }),
        (
            "ferrite_journal_bytes_total",
            "Bytes of journal records written.",
            |s| s.journal_bytes,
        ),
        (
            "ferrite_journal_batches_total",
            "Batches written to the journal.",
            |s| s.journal_batches,
        ),
        (
            "ferrite_journal_write_seconds_total",
            "Time the journal's writes took, summed.",
            |s| s.journal_write_micros,
        ),
        (
            "ferrite_journal_sync_seconds_total",
            "Time the journal's fdatasyncs took, summed.",
            |s| s.journal_sync_micros,
        ),
        (
            "ferrite_segment_direct_writes_total",
            "Segment writes carrying new appends (the direct path: large runs, a full journal).",
            |s| s.direct_writes,
        ),
        (
            "ferrite_segment_lazy_writes_total",
            "Segment writes of journaled batches.",
            |s| s.segment_writes,
        ),
        (
            "ferrite_journal_files_released_total",
            "Journal files released for reuse.",
            |s| s.files_released,
        ),
        (
            "ferrite_files_opened_total",
            "Segment files and partition directories opened on demand by the shard's file cache \
             (closed earlier to stay within --open-files-max, or not opened yet).",
            |s| s.files_opened,
        ),
    ];
    for (name, help, value) in SERIES {
        write_family(out, name, "counter", help);
        for (shard, snapshot) in snapshots.iter().enumerate() {
            let value = value(&snapshot.commit);
            if name.ends_with("_seconds_total") {
                let seconds = value as f64 / 1e6;
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {seconds}");
            } else {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {value}");
            }
        }
    }
}

/// The requests each shard forwarded to each other shard.
fn render_mesh(out: &mut String, snapshots: &[ShardSnapshot]) {
    let name = "ferrite_mesh_requests_total";
    write_family(
        out,
        name,
        "counter",
        "Requests a shard forwarded over the mesh to the shard owning their partitions (`to`): \
         a connection's requests for partitions another shard owns, and the broker's own.",
    );
    for (shard, snapshot) in snapshots.iter().enumerate() {
        for (to, sent) in snapshot.mesh_requests_sent.iter().enumerate() {
            if to != shard {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\",to=\"{to}\"}} {sent}");
            }
        }
    }
}

/// The replication counters and stage histograms, summed over the shards; nothing on a broker
/// without replication.
fn render_replication(out: &mut String, snapshots: &[ShardSnapshot]) {
    let mut total = ReplicationStats::default();
    for snapshot in snapshots {
        total.merge(&snapshot.replication);
    }
    if total == ReplicationStats::default() {
        return;
    }
    for (name, help, counts) in [
        (
            "ferrite_replication_messages_sent_total",
            "Partition Raft messages sent to peer brokers, by kind.",
            &total.sent,
        ),
        (
            "ferrite_replication_messages_received_total",
            "Partition Raft messages received from peer brokers, by kind.",
            &total.received,
        ),
    ] {
        write_family(out, name, "counter", help);
        for kind in MessageKind::ALL {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{}\"}} {}",
                kind.name(),
                counts[kind as usize]
            );
        }
    }
    for (name, help, value) in [
        (
            "ferrite_replication_batches_sent_total",
            "Record batches sent in fetch answers (as a leader).",
            total.batches_sent,
        ),
        (
            "ferrite_replication_batches_received_total",
            "Record batches received in fetch answers (as a follower).",
            total.batches_received,
        ),
        (
            "ferrite_replication_frames_sent_total",
            "Frames carrying partition messages sent to peer brokers.",
            total.frames_sent,
        ),
        (
            "ferrite_replication_fetches_held_total",
            "Followers' fetches held by a leader until it had something new.",
            total.fetches_held,
        ),
        (
            "ferrite_replication_fetch_floor_waits_total",
            "Fetch answers with entries after which the follower waited for its disk before \
             fetching again.",
            total.fetch_floor_waits,
        ),
    ] {
        write_family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "ferrite_replication_stage_seconds";
    write_family(
        out,
        name,
        "histogram",
        "Time a replicated write spends in each stage: place (submitted until the leader's \
         writer placed it), leader_durable, commit (placed until committed), follower_round \
         (entries sent until the follower reports them durable), follower_durable.",
    );
    for stage in Stage::ALL {
        let histogram = &total.stages[stage as usize];
        let stage = stage.name();
        let mut cumulative = 0;
        for (bound, count) in StageHistogram::BOUNDS_MICROS.iter().zip(histogram.buckets) {
            cumulative += count;
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{stage=\"{stage}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {}",
            histogram.count
        );
        let sum = histogram.sum_micros as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{stage=\"{stage}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{stage=\"{stage}\"}} {}", histogram.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::shard::PartitionId;

    /// One sample of the exposition.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    fn is_metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// Parses the text format strictly: every family has HELP then TYPE before its samples,
    /// each family is declared once, every sample belongs to the family declared last (a
    /// summary's `_sum` and `_count` included), labels are well formed and unique, values are
    /// numbers. Panics naming the line otherwise.
    fn parse(text: &str) -> Vec<Sample> {
        let mut declared = std::collections::HashSet::new();
        let mut family: Option<(String, String)> = None;
        let mut help_of: Option<String> = None;
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect(line);
                assert!(is_metric_name(name) && !help.is_empty(), "{line}");
                assert!(declared.insert(name.to_owned()), "declared twice: {line}");
                help_of = Some(name.to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect(line);
                assert_eq!(
                    help_of.as_deref(),
                    Some(name),
                    "TYPE after its HELP: {line}"
                );
                assert!(
                    ["counter", "gauge", "summary", "histogram"].contains(&kind),
                    "{line}"
                );
                family = Some((name.to_owned(), kind.to_owned()));
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.strip_suffix('}').expect(line)),
                None => (series, ""),
            };
            let (family_name, kind) = family.as_ref().expect("a sample after a TYPE");
            let own = name == family_name
                || (kind == "summary"
                    && [format!("{family_name}_sum"), format!("{family_name}_count")]
                        .contains(&name.to_owned()))
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .map(|suffix| format!("{family_name}{suffix}"))
                        .contains(&name.to_owned()));
            assert!(own, "{name} is not of the family {family_name}: {line}");
            if name.ends_with("_total") {
                assert_eq!(kind, "counter", "{line}");
            }
            let mut parsed = BTreeMap::new();
            let mut rest = labels;
            while !rest.is_empty() {
                let (label, after) = rest.split_once("=\"").expect(line);
                assert!(is_metric_name(label), "label name: {line}");
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().expect(line) {
                        (_, '\\') => match chars.next().expect(line).1 {
                            'n' => value.push('\n'),
                            escaped @ ('\\' | '"') => value.push(escaped),
                            other => panic!("escape \\{other}: {line}"),
                        },
                        (index, '"') => break index,
                        (_, c) => value.push(c),
                    }
                };
                assert!(parsed.insert(label.to_owned(), value).is_none(), "{line}");
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
            samples.push(Sample {
                name: name.to_owned(),
                labels: parsed,
                value,
            });
        }
        samples
    }

    /// The value of the one sample named `name` with exactly `labels`.
    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(label, value)| (label.to_string(), value.to_string()))
            .collect();
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|sample| sample.name == name && sample.labels == labels)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in {samples:#?}");
        found[0].value
    }

    #[test]
    fn replication_counts_and_stage_histograms_are_summed_over_the_shards() {
        let registry = MetricsRegistry::new(2);
        // Nothing replicated: no replication series at all (a single broker's metrics).
        assert!(!registry.render().contains("ferrite_replication_"));
        let mut first = ReplicationStats::default();
        first.sent[MessageKind::Fetch as usize] = 3;
        first.received[MessageKind::FetchEntries as usize] = 2;
        first.batches_received = 5;
        first.observe(Stage::Commit, Duration::from_micros(800));
        first.observe(Stage::Commit, Duration::from_millis(30));
        let mut second = ReplicationStats::default();
        second.sent[MessageKind::Fetch as usize] = 4;
        second.fetch_floor_waits = 1;
        second.observe(Stage::Commit, Duration::from_secs(60));
        for (shard, replication) in [first, second].into_iter().enumerate() {
            let snapshot = ShardSnapshot {
                replication,
                ..ShardSnapshot::default()
            };
            registry.shard(shard).publish(snapshot, |_| true);
        }
        let samples = parse(&registry.render());
        let sent = "ferrite_replication_messages_sent_total";
        assert_eq!(value(&samples, sent, &[("kind", "fetch")]), 7.0);
        assert_eq!(value(&samples, sent, &[("kind", "durable")]), 0.0);
        let received = "ferrite_replication_messages_received_total";
        assert_eq!(value(&samples, received, &[("kind", "fetch_entries")]), 2.0);
        let batches = "ferrite_replication_batches_received_total";
        assert_eq!(value(&samples, batches, &[]), 5.0);
        let floor = "ferrite_replication_fetch_floor_waits_total";
        assert_eq!(value(&samples, floor, &[]), 1.0);
        let bucket = |le: &'static str| {
            value(
                &samples,
                "ferrite_replication_stage_seconds_bucket",
                &[("stage", "commit"), ("le", le)],
            )
        };
        // Cumulative: 0.8 ms, 30 ms, and a minute past the last bound.
        assert_eq!(bucket("0.0005"), 0.0);
        assert_eq!(bucket("0.001"), 1.0);
        assert_eq!(bucket("0.02"), 1.0);
        assert_eq!(bucket("0.05"), 2.0);
        assert_eq!(bucket("5"), 2.0);
        assert_eq!(bucket("+Inf"), 3.0);
        let count = "ferrite_replication_stage_seconds_count";
        assert_eq!(value(&samples, count, &[("stage", "commit")]), 3.0);
        assert_eq!(value(&samples, count, &[("stage", "place")]), 0.0);
        let sum = value(
            &samples,
            "ferrite_replication_stage_seconds_sum",
            &[("stage", "commit")],
        );
        assert!((sum - 60.0308).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn counters_and_gauges_per_shard_and_per_topic() {
        let registry = MetricsRegistry::new(2);
        let (zero, one) = (registry.shard(0), registry.shard(1));
        zero.connection_accepted();
        zero.connection_accepted();
        let first = zero.connection_open();
        let second = zero.connection_open();
        drop(first);
        one.connection_moved();
        one.bytes_sent(100, true);
        one.bytes_sent(20, false);
        zero.batch_produced("orders", 1_000, 10);
        one.batch_produced("orders", 500, 5);
        one.batch_produced("payments", 70, 1);
        one.records_fetched("orders", 1_400);
        let samples = parse(&registry.render());
        let shard = |shard: &'static str| [("shard", shard)];
        assert_eq!(
            value(&samples, "ferrite_connections_accepted_total", &shard("0")),
            2.0
        );
        assert_eq!(
            value(&samples, "ferrite_connections_open", &shard("0")),
            1.0
        );
        assert_eq!(
            value(&samples, "ferrite_connections_open", &shard("1")),
            0.0
        );
        assert_eq!(
            value(&samples, "ferrite_connections_moved_total", &shard("1")),
            1.0
        );
        assert_eq!(
            value(&samples, "ferrite_bytes_sent_total", &shard("1")),
            120.0
        );
        assert_eq!(
            value(&samples, "ferrite_bytes_spliced_total", &shard("1")),
            100.0
        );
        let orders = [("topic", "orders")];
        let payments = [("topic", "payments")];
        assert_eq!(
            value(&samples, "ferrite_topic_produced_bytes_total", &orders),
            1_500.0
        );
        assert_eq!(
            value(&samples, "ferrite_topic_produced_records_total", &orders),
            15.0
        );
        assert_eq!(
            value(&samples, "ferrite_topic_produced_batches_total", &orders),
            2.0
        );
        assert_eq!(
            value(&samples, "ferrite_topic_fetched_bytes_total", &orders),
            1_400.0
        );
        assert_eq!(
            value(&samples, "ferrite_topic_produced_bytes_total", &payments),
            70.0
        );
        assert_eq!(
            value(&samples, "ferrite_topic_fetched_bytes_total", &payments),
            0.0
        );

        drop(second);
        // A snapshot forgets the topics that are gone.
        let snapshot = ShardSnapshot {
            mesh_requests_sent: vec![7, 0],
            ..ShardSnapshot::default()
        };
        one.publish(snapshot, |topic| topic == "orders");
        let samples = parse(&registry.render());
        assert_eq!(
            value(
                &samples,
                "ferrite_mesh_requests_total",
                &[("shard", "1"), ("to", "0")]
            ),
            7.0
        );
        assert_eq!(
            value(&samples, "ferrite_connections_open", &shard("0")),
            0.0
        );
        assert_eq!(
            value(&samples, "ferrite_topic_produced_bytes_total", &orders),
            1_500.0
        );
        assert!(samples
            .iter()
            .all(|sample| sample.labels.get("topic").map(String::as_str) != Some("payments")));
    }

    #[test]
    fn latency_quantiles_merge_the_shards_and_cover_the_last_minutes() {
        let registry = MetricsRegistry::new(2);
        let start = Instant::now();
        // 98 fast Produce requests on shard 0, two slow ones on shard 1: the median is fast,
        // the 0.99 quantile slow.
        for _ in 0..98 {
            registry.shard(0).request_answered(
                ApiKey::Produce,
                Duration::from_micros(1_000),
                start,
            );
        }
        for _ in 0..2 {
            registry
                .shard(1)
                .request_answered(ApiKey::Produce, Duration::from_millis(500), start);
        }
        registry
            .shard(1)
            .request_answered(ApiKey::Metadata, Duration::from_secs(3_600), start);
        let samples = parse(&registry.render_at(start + Duration::from_secs(30)));
        let produce = |quantile: &'static str| [("api", "Produce"), ("quantile", quantile)];
        let close = |value: f64, wanted: f64| (value - wanted).abs() <= wanted * 0.01;
        let name = "ferrite_request_latency_seconds";
        assert!(close(value(&samples, name, &produce("0.5")), 0.001));
        assert!(close(value(&samples, name, &produce("0.9")), 0.001));
        assert!(close(value(&samples, name, &produce("0.99")), 0.5));
        assert!(close(value(&samples, name, &produce("0.9999")), 0.5));
        let api = |api: &'static str| [("api", api)];
        assert_eq!(
            value(
                &samples,
                "ferrite_request_latency_seconds_count",
                &api("Produce")
            ),
            100.0
        );
        assert!(close(
            value(
                &samples,
                "ferrite_request_latency_seconds_sum",
                &api("Produce")
            ),
            0.098 + 1.0
        ));
        assert!(close(
            value(
                &samples,
                "ferrite_request_latency_seconds_max",
                &api("Produce")
            ),
            0.5
        ));
        // Beyond the histogram's range: counted as its largest value, summed exactly.
        assert!(close(
            value(
                &samples,
                "ferrite_request_latency_seconds_max",
                &api("Metadata")
            ),
            60.0
        ));
        assert_eq!(
            value(
                &samples,
                "ferrite_request_latency_seconds_sum",
                &api("Metadata")
            ),
            3_600.0
        );
        let requests = |shard: &'static str| [("shard", shard), ("api", "Produce")];
        assert_eq!(
            value(&samples, "ferrite_requests_total", &requests("0")),
            98.0
        );
        assert_eq!(
            value(&samples, "ferrite_requests_total", &requests("1")),
            2.0
        );
        assert!(
            samples
                .iter()
                .all(|sample| sample.labels.get("api").map(String::as_str) != Some("Fetch")),
            "APIs never used are left out"
        );

        // One window later the requests still count; two later, the quantiles are empty.
        let later = parse(&registry.render_at(start + LATENCY_WINDOW + Duration::from_secs(1)));
        assert!(close(value(&later, name, &produce("0.99")), 0.5));
        let much_later = start + 2 * LATENCY_WINDOW + Duration::from_secs(1);
        registry.shard(0).request_answered(
            ApiKey::Produce,
            Duration::from_micros(2_000),
            much_later,
        );
        let later = parse(&registry.render_at(much_later));
        assert!(
            close(value(&later, name, &produce("0.99")), 0.002),
            "only the new request"
        );
        assert_eq!(
            value(
                &later,
                "ferrite_request_latency_seconds_count",
                &api("Produce")
            ),
            101.0
        );
        assert!(value(&later, name, &[("api", "Metadata"), ("quantile", "0.5")]).is_nan());
        assert!(value(
            &later,
            "ferrite_request_latency_seconds_max",
            &api("Metadata")
        )
        .is_nan());
    }

    #[test]
    fn the_controller_leader_is_rendered_once_a_cluster_broker_reports_it() {
        let registry = MetricsRegistry::new(1);
        assert!(
            !registry.render().contains("ferrite_controller_leader"),
            "a broker alone has no controller"
        );
        registry.controller_leader_observed(Some(3));
        assert!(registry
            .render()
            .contains("\nferrite_controller_leader 3\n"));
        registry.controller_leader_observed(None);
        assert!(registry
            .render()
            .contains("\nferrite_controller_leader 0\n"));
    }

    #[test]
    fn partitions_and_group_lag_from_every_shard_are_rendered() {
        let registry = MetricsRegistry::new(2);
        let committed_on = |topic: &str, partition: i32| TopicPartition {
            topic: topic.into(),
            partition,
        };
        let stats = |topic: &str, partition: u32, high_watermark: u64| PartitionStats {
            partition: PartitionId::new(topic, partition),
            log_start_offset: 3,
            high_watermark,
            size_bytes: high_watermark * 100,
            segment_count: 2,
            healthy: partition != 1,
            damaged_offsets: 0,
            damage_found: 0,
        };
        registry.shard(0).publish(
            ShardSnapshot {
                partitions: vec![stats("odd \"name\"\\", 1, 10)],
                // The group's coordinator is on shard 0; its partitions on either shard.
                groups: vec![GroupStats {
                    group_id: "billing".into(),
                    state: engine::groups::GroupState::Stable,
                    members: 3,
                    offsets: vec![
                        (committed_on("odd \"name\"\\", 0), 15),
                        (committed_on("b", 0), 5),
                        (committed_on("unopened", 0), 1),
                    ],
                }],
                ..ShardSnapshot::default()
            },
            |_| true,
        );
        registry.shard(1).publish(
            ShardSnapshot {
                partitions: vec![stats("odd \"name\"\\", 0, 20), stats("b", 0, 5)],
                groups: Vec::new(),
                ..ShardSnapshot::default()
            },
            |_| true,
        );
        let text = registry.render();
        let samples = parse(&text);
        let partition = |topic: &'static str, partition: &'static str| {
            [("topic", topic), ("partition", partition)]
        };
        let odd = "odd \"name\"\\";
        let group_partition =
            |topic: &'static str| [("group", "billing"), ("topic", topic), ("partition", "0")];
        assert_eq!(
            value(&samples, "ferrite_group_lag", &group_partition(odd)),
            5.0
        );
        assert_eq!(
            value(&samples, "ferrite_group_lag", &group_partition("b")),
            0.0
        );
        assert_eq!(
            value(
                &samples,
                "ferrite_group_committed_offset",
                &group_partition("unopened")
            ),
            1.0
        );
        assert!(
            !text.contains("ferrite_group_lag{group=\"billing\",topic=\"unopened\""),
            "no lag without the partition's high-water mark"
        );
        assert_eq!(
            value(
                &samples,
                "ferrite_group_members",
                &[("group", "billing"), ("state", "Stable")]
            ),
            3.0
        );
        assert_eq!(
            value(
                &samples,
                "ferrite_partition_high_watermark",
                &partition(odd, "0")
            ),
            20.0
        );
        assert_eq!(
            value(
                &samples,
                "ferrite_partition_high_watermark",
                &partition(odd, "1")
            ),
            10.0
        );
        assert_eq!(
            value(
                &samples,
                "ferrite_partition_size_bytes",
                &partition("b", "0")
            ),
            500.0
        );
        assert_eq!(
            value(
                &samples,
                "ferrite_partition_log_start_offset",
                &partition("b", "0")
            ),
            3.0
        );
        assert_eq!(
            value(&samples, "ferrite_partition_segments", &partition("b", "0")),
            2.0
        );
        assert_eq!(
            value(&samples, "ferrite_partition_shard", &partition("b", "0")),
            1.0
        );
        assert_eq!(
            value(&samples, "ferrite_partition_shard", &partition(odd, "1")),
            0.0,
            "each partition is listed with the shard that published it"
        );
        assert_eq!(
            value(&samples, "ferrite_partition_healthy", &partition("b", "0")),
            1.0
        );
        assert_eq!(
            value(&samples, "ferrite_partition_healthy", &partition(odd, "1")),
            0.0
        );
        let order: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("ferrite_partition_high_watermark{"))
            .collect();
        assert_eq!(
            order,
            [
                "ferrite_partition_high_watermark{topic=\"b\",partition=\"0\"} 5",
                "ferrite_partition_high_watermark{topic=\"odd \\\"name\\\"\\\\\",partition=\"0\"} 20",
                "ferrite_partition_high_watermark{topic=\"odd \\\"name\\\"\\\\\",partition=\"1\"} 10",
            ],
            "sorted by topic and partition, label values escaped"
        );
    }

    /// Every family filled from a fixed state on two shards, rendered at a fixed time: the
    /// exposition must stay byte for byte what `testdata/metrics_exposition.prom` holds, so a
    /// change of its text is a decision, not an accident of moving the rendering code.
    #[test]
    fn the_exposition_of_a_fixed_state_is_unchanged() {
        let registry = MetricsRegistry::new(2);
        let start = Instant::now();
        registry.controller_leader_observed(Some(2));
        let (zero, one) = (registry.shard(0), registry.shard(1));
        zero.connection_accepted();
        let _open = zero.connection_open();
        zero.connection_closed_for_bad_input();
        zero.connection_closed_idle();
        one.connection_refused();
        one.connection_delayed();
        one.connection_moved();
        one.accept_failed();
        zero.bytes_received(4_096);
        zero.bytes_sent(1_000, true);
        one.bytes_sent(24, false);
        one.produce_bytes_copied(512);
        zero.batch_produced("orders", 1_000, 10);
        one.batch_produced("a \"quoted\"\\topic\n", 70, 1);
        one.records_fetched("orders", 900);
        for micros in [300, 1_000, 2_500, 40_000] {
            zero.request_answered(ApiKey::Produce, Duration::from_micros(micros), start);
        }
        one.request_answered(ApiKey::Fetch, Duration::from_millis(500), start);
        let stats = |topic: &str, partition: u32, high_watermark: u64| PartitionStats {
            partition: PartitionId::new(topic, partition),
            log_start_offset: 2,
            high_watermark,
            size_bytes: high_watermark * 80,
            segment_count: 1,
            healthy: partition == 0,
            damaged_offsets: u64::from(partition),
            damage_found: 1,
        };
        let mut replication = ReplicationStats::default();
        replication.sent[MessageKind::Fetch as usize] = 6;
        replication.received[MessageKind::FetchEntries as usize] = 5;
        replication.batches_sent = 4;
        replication.batches_received = 3;
        replication.frames_sent = 2;
        replication.fetches_held = 1;
        replication.fetch_floor_waits = 1;
        replication.observe(Stage::Place, Duration::from_micros(200));
        replication.observe(Stage::Commit, Duration::from_millis(7));
        let commit = CommitStats {
            journal_writes: 9,
            journal_syncs: 8,
            journal_bytes: 70_000,
            journal_batches: 60,
            direct_writes: 5,
            segment_writes: 4,
            files_released: 3,
            journal_write_micros: 1_500,
            journal_sync_micros: 2_250_000,
            files_opened: 2,
        };
        zero.publish(
            ShardSnapshot {
                partitions: vec![stats("orders", 1, 40)],
                groups: vec![GroupStats {
                    group_id: "billing".into(),
                    state: engine::groups::GroupState::Stable,
                    members: 2,
                    offsets: vec![
                        (
                            TopicPartition {
                                topic: "orders".into(),
                                partition: 0,
                            },
                            12,
                        ),
                        (
                            TopicPartition {
                                topic: "orders".into(),
                                partition: 1,
                            },
                            40,
                        ),
                    ],
                }],
                replication: replication.clone(),
                commit,
                mesh_requests_sent: vec![0, 11],
            },
            |_| true,
        );
        one.publish(
            ShardSnapshot {
                partitions: vec![stats("orders", 0, 30)],
                replication,
                mesh_requests_sent: vec![3, 0],
                ..ShardSnapshot::default()
            },
            |_| true,
        );
        let text = registry.render_at(start + Duration::from_secs(30));
        let expected = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/metrics_exposition.prom"
        ));
        assert_eq!(text, expected);
    }
}
