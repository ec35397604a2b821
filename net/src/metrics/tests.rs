//! The exposition checked through the registry's public API and a strict parser of the text
//! format, plus a byte-for-byte comparison of one fixed state's exposition.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::groups::shard::GroupStats;
use crate::groups::TopicPartition;
use engine::shard::{PartitionId, PartitionStats};
use engine::CommitStats;
use ferrite_replication::stats::{MessageKind, ReplicationStats, Stage};
use kafka_protocol::messages::ApiKey;

use super::latency::LATENCY_WINDOW;
use super::{MetricsRegistry, ShardSnapshot};

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
    second.sent[MessageKind::PreVote as usize] = 2;
    second.received[MessageKind::PreVoteRefused as usize] = 1;
    second.transport_messages_dropped = 9;
    second.transport_authentication_failures = 2;
    second.observe(Stage::Commit, Duration::from_secs(60));
    first.tick_lateness.observe(Duration::from_micros(300));
    second.tick_lateness.observe(Duration::from_millis(30));
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
    assert_eq!(value(&samples, sent, &[("kind", "pre_vote")]), 2.0);
    assert_eq!(
        value(&samples, received, &[("kind", "pre_vote_refused")]),
        1.0
    );
    let dropped = "ferrite_transport_messages_dropped_total";
    assert_eq!(value(&samples, dropped, &[]), 9.0);
    let unauthenticated = "ferrite_transport_authentication_failures_total";
    assert_eq!(value(&samples, unauthenticated, &[]), 2.0);
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
    // The shards' clocks: one tick 0.3 ms late, one 30 ms (the shard waited for its turn).
    let lateness = |le: &'static str| {
        value(
            &samples,
            "ferrite_replication_tick_lateness_seconds_bucket",
            &[("le", le)],
        )
    };
    assert_eq!(lateness("0.0005"), 1.0);
    assert_eq!(lateness("0.02"), 1.0);
    assert_eq!(lateness("0.05"), 2.0);
    assert_eq!(lateness("+Inf"), 2.0);
    let count = "ferrite_replication_tick_lateness_seconds_count";
    assert_eq!(value(&samples, count, &[]), 2.0);
    let sum = value(
        &samples,
        "ferrite_replication_tick_lateness_seconds_sum",
        &[],
    );
    assert!((sum - 0.0303).abs() < 1e-9, "{sum}");
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
        registry
            .shard(0)
            .request_answered(ApiKey::Produce, Duration::from_micros(1_000), start);
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
    registry
        .shard(0)
        .request_answered(ApiKey::Produce, Duration::from_micros(2_000), much_later);
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
        last_stable_offset: high_watermark - 1,
        open_transactions: 1,
    };
    registry.shard(0).publish(
        ShardSnapshot {
            partitions: vec![stats("odd \"name\"\\", 1, 10)],
            // The group's coordinator is on shard 0; its partitions on either shard.
            groups: vec![GroupStats {
                group_id: "billing".into(),
                state: crate::groups::GroupState::Stable,
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
    let partition =
        |topic: &'static str, partition: &'static str| [("topic", topic), ("partition", partition)];
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
    assert_eq!(
        value(
            &samples,
            "ferrite_partition_last_stable_offset",
            &partition("b", "0")
        ),
        4.0
    );
    assert_eq!(
        value(
            &samples,
            "ferrite_partition_last_stable_offset_lag",
            &partition("b", "0")
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "ferrite_partition_open_transactions",
            &partition("b", "0")
        ),
        1.0
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
    one.request_throttled(Duration::from_millis(250));
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
        last_stable_offset: high_watermark,
        open_transactions: 0,
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
    replication.tick_lateness.observe(Duration::from_millis(3));
    let commit = CommitStats {
        journal_writes: 9,
        journal_syncs: 8,
        journal_durable_writes: 1,
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
                state: crate::groups::GroupState::Stable,
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
