//! Changing a topic's configuration over the wire: AlterConfigs (the whole set) and
//! IncrementalAlterConfigs (SET, DELETE, APPEND, SUBTRACT), what DescribeConfigs then shows,
//! the errors clients get and why, and the new settings taking effect on partitions whose logs
//! are open (two shards, so partitions live on both), and after a restart.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{produce, Client, TestBroker};
use engine::batch::build::batch_of;
use engine::LogConfig;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const MESSAGE_TOO_LARGE: i16 = 10;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn create_topic(client: &mut Client, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    assert_eq!(
        common::create_topic_with(client, topic, partitions, configs),
        0,
        "{topic}"
    );
}

/// Every key of the topic: value, source and type.
fn describe(client: &mut Client, topic: &str) -> BTreeMap<String, (String, i8, i8)> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(text(topic))]);
    let response: DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, 4, &request);
    assert_eq!(response.results[0].error_code, 0, "{topic}");
    response.results[0]
        .configs
        .iter()
        .map(|entry| {
            (
                entry.name.to_string(),
                (
                    entry.value.as_deref().unwrap_or_default().to_owned(),
                    entry.config_source,
                    entry.config_type,
                ),
            )
        })
        .collect()
}

/// The value and source of one key.
fn described(client: &mut Client, topic: &str, key: &str) -> (String, i8) {
    let (value, source, _) = describe(client, topic).remove(key).unwrap();
    (value, source)
}

/// AlterConfigs of one resource; returns its (error code, error message).
fn alter(
    client: &mut Client,
    version: i16,
    resource_type: i8,
    name: &str,
    configs: &[(&str, Option<&str>)],
    validate_only: bool,
) -> (i16, String) {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let request = AlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(name))
            .with_configs(
                configs
                    .iter()
                    .map(|(key, value)| {
                        AlterableConfig::default()
                            .with_name(text(key))
                            .with_value(value.map(text))
                    })
                    .collect(),
            )]);
    let response: AlterConfigsResponse = client.call(ApiKey::AlterConfigs, version, &request);
    assert_eq!(response.responses.len(), 1);
    let answer = &response.responses[0];
    assert_eq!(
        (answer.resource_type, &*answer.resource_name),
        (resource_type, name)
    );
    (
        answer.error_code,
        answer
            .error_message
            .as_deref()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// One IncrementalAlterConfigs change: key, operation, value.
type Change<'a> = (&'a str, i8, Option<&'a str>);

/// IncrementalAlterConfigs of topics: (topic, changes) each; returns each resource's (error
/// code, error message).
fn incremental(
    client: &mut Client,
    version: i16,
    resources: &[(&str, &[Change])],
    validate_only: bool,
) -> Vec<(i16, String)> {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let request = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(
            resources
                .iter()
                .map(|(topic, operations)| {
                    AlterConfigsResource::default()
                        .with_resource_type(TOPIC)
                        .with_resource_name(text(topic))
                        .with_configs(
                            operations
                                .iter()
                                .map(|(key, operation, value)| {
                                    AlterableConfig::default()
                                        .with_name(text(key))
                                        .with_config_operation(*operation)
                                        .with_value(value.map(text))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response: IncrementalAlterConfigsResponse =
        client.call(ApiKey::IncrementalAlterConfigs, version, &request);
    assert_eq!(response.responses.len(), resources.len());
    response
        .responses
        .iter()
        .zip(resources)
        .map(|(answer, (topic, _))| {
            assert_eq!(&*answer.resource_name, *topic);
            (
                answer.error_code,
                answer
                    .error_message
                    .as_deref()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// One SET (or other operation) on one topic, in the newest version.
fn incremental_one(
    client: &mut Client,
    topic: &str,
    key: &str,
    operation: i8,
    value: Option<&str>,
) -> (i16, String) {
    incremental(client, 1, &[(topic, &[(key, operation, value)])], false).remove(0)
}

/// The partition's log start (`timestamp` -2) or high-water mark (-1).
fn list_offset(client: &mut Client, topic: &str, partition: i32, timestamp: i64) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 6, &request);
    let answer = &response.topics[0].partitions[0];
    assert_eq!(answer.error_code, 0);
    answer.offset
}

fn segment_files(broker: &TestBroker, topic: &str, partition: i32) -> usize {
    std::fs::read_dir(broker.data.path().join(format!("{topic}-{partition}")))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|extension| extension == "log")
        })
        .count()
}

#[test]
fn alter_configs_replaces_the_whole_set_and_describe_shows_where_values_come_from() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    create_topic(
        &mut client,
        "orders",
        1,
        &[("retention.ms", "60000"), ("segment.ms", "3600000")],
    );
    let configs = describe(&mut client, "orders");
    assert_eq!(configs["retention.ms"], ("60000".into(), SOURCE_TOPIC, 5));
    assert_eq!(
        configs["cleanup.policy"],
        ("delete".into(), SOURCE_DEFAULT, 7)
    );
    assert_eq!(
        configs["min.cleanable.dirty.ratio"],
        ("0.5".into(), SOURCE_DEFAULT, 6)
    );
    assert_eq!(
        configs["delete.retention.ms"],
        ("86400000".into(), SOURCE_DEFAULT, 5)
    );
    assert_eq!(
        configs["max.message.bytes"],
        ("1048588".into(), SOURCE_DEFAULT, 3)
    );

    for version in 0..=2 {
        let retention_bytes = format!("{}", 1_000_000 + i64::from(version));
        let outcome = alter(
            &mut client,
            version,
            TOPIC,
            "orders",
            &[
                ("retention.bytes", Some(&retention_bytes)),
                // A key without a value is not set.
                ("min.insync.replicas", None),
            ],
            false,
        );
        assert_eq!(outcome, (0, String::new()), "v{version}");
        let configs = describe(&mut client, "orders");
        assert_eq!(
            configs["retention.bytes"],
            (retention_bytes, SOURCE_TOPIC, 5),
            "v{version}"
        );
        assert_eq!(
            configs["retention.ms"],
            ("604800000".into(), SOURCE_DEFAULT, 5),
            "v{version}: what the new set leaves out takes the default again"
        );
        assert_eq!(configs["min.insync.replicas"].1, SOURCE_DEFAULT);
    }

    let checked = alter(
        &mut client,
        2,
        TOPIC,
        "orders",
        &[("segment.bytes", Some("1048576"))],
        true,
    );
    assert_eq!(checked.0, 0);
    assert_eq!(
        described(&mut client, "orders", "segment.bytes").1,
        SOURCE_DEFAULT,
        "validate_only changes nothing"
    );

    let (error_code, message) = alter(
        &mut client,
        2,
        TOPIC,
        "orders",
        &[("retention.ms", Some("soon"))],
        false,
    );
    assert_eq!(error_code, INVALID_CONFIG);
    assert_eq!(
        message,
        "invalid value 'soon' for topic config 'retention.ms': expected a whole number of at \
         least -1"
    );
    let (error_code, message) = alter(
        &mut client,
        2,
        TOPIC,
        "orders",
        &[("retention.milliseconds", Some("1"))],
        false,
    );
    assert_eq!(
        (error_code, message.as_str()),
        (
            INVALID_CONFIG,
            "unknown topic config 'retention.milliseconds'"
        )
    );
    assert_eq!(
        described(&mut client, "orders", "retention.bytes").0,
        "1000002",
        "a refused set leaves the old one"
    );

    let (error_code, message) = alter(&mut client, 1, TOPIC, "nowhere", &[], false);
    assert_eq!(error_code, UNKNOWN_TOPIC_OR_PARTITION);
    assert!(message.contains("'nowhere' does not exist"), "{message}");
    let (error_code, message) = alter(
        &mut client,
        1,
        TOPIC,
        "__consumer_offsets",
        &[("retention.ms", Some("1000"))],
        false,
    );
    assert_eq!(error_code, INVALID_TOPIC_EXCEPTION);
    assert!(message.contains("internal"), "{message}");
    let (error_code, message) = alter(
        &mut client,
        0,
        BROKER,
        "0",
        &[("message.max.bytes", Some("1000"))],
        false,
    );
    assert_eq!(error_code, INVALID_REQUEST);
    assert!(message.contains("ferrite serve"), "{message}");
    let (error_code, message) = alter(
        &mut client,
        0,
        TOPIC,
        "orders",
        &[("retention.ms", Some("1")), ("retention.ms", Some("2"))],
        false,
    );
    assert_eq!(error_code, INVALID_REQUEST);
    assert!(message.contains("more than once"), "{message}");
}

#[test]
fn incremental_alter_configs_sets_deletes_appends_and_subtracts() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    create_topic(&mut client, "events", 2, &[("retention.ms", "60000")]);
    create_topic(&mut client, "other", 1, &[]);

    for version in 0..=1 {
        let answers = incremental(
            &mut client,
            version,
            &[(
                "events",
                &[
                    ("segment.ms", SET, Some("600000")),
                    ("retention.ms", DELETE, None),
                ],
            )],
            false,
        );
        assert_eq!(answers, vec![(0, String::new())], "v{version}");
    }
    let configs = describe(&mut client, "events");
    assert_eq!(configs["segment.ms"].0, "600000");
    assert_eq!(configs["segment.ms"].1, SOURCE_TOPIC);
    assert_eq!(
        (
            configs["retention.ms"].0.as_str(),
            configs["retention.ms"].1
        ),
        ("604800000", SOURCE_DEFAULT)
    );

    // Several resources: each answered on its own.
    let answers = incremental(
        &mut client,
        1,
        &[
            ("events", &[("retention.bytes", SET, Some("5000000"))]),
            ("missing", &[("retention.bytes", SET, Some("1"))]),
            ("other", &[("retention.bytes", SET, Some("-7"))]),
        ],
        false,
    );
    assert_eq!(answers[0], (0, String::new()));
    assert_eq!(answers[1].0, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(
        answers[2],
        (
            INVALID_CONFIG,
            "invalid value '-7' for topic config 'retention.bytes': expected a whole number \
             of at least -1"
                .to_owned()
        )
    );

    // cleanup.policy is a list: APPEND starts from the default, "delete".
    let appended = incremental_one(
        &mut client,
        "events",
        "cleanup.policy",
        APPEND,
        Some("compact"),
    );
    assert_eq!(appended.0, 0);
    assert_eq!(
        described(&mut client, "events", "cleanup.policy"),
        ("delete,compact".into(), SOURCE_TOPIC)
    );
    let subtracted = incremental_one(
        &mut client,
        "events",
        "cleanup.policy",
        SUBTRACT,
        Some("delete"),
    );
    assert_eq!(subtracted.0, 0);
    assert_eq!(
        described(&mut client, "events", "cleanup.policy").0,
        "compact"
    );
    let emptied = incremental_one(
        &mut client,
        "events",
        "cleanup.policy",
        SUBTRACT,
        Some("compact"),
    );
    assert_eq!(emptied.0, INVALID_CONFIG);
    assert!(
        emptied.1.contains("at least one of delete, compact"),
        "{}",
        emptied.1
    );
    incremental_one(&mut client, "events", "cleanup.policy", DELETE, None);
    let emptied = incremental_one(
        &mut client,
        "events",
        "cleanup.policy",
        SUBTRACT,
        Some("delete"),
    );
    assert_eq!(
        emptied,
        (
            INVALID_CONFIG,
            "invalid value '' for topic config 'cleanup.policy': expected a comma-separated \
             list of at least one of delete, compact"
                .to_owned()
        )
    );
    let not_a_list = incremental_one(&mut client, "events", "segment.ms", APPEND, Some("5"));
    assert_eq!(
        not_a_list,
        (
            INVALID_CONFIG,
            "APPEND applies to list-valued topic configs only; 'segment.ms' is a whole number \
             of at least 1"
                .to_owned()
        )
    );
    let no_value = incremental_one(&mut client, "events", "segment.ms", SET, None);
    assert_eq!(
        no_value,
        (
            INVALID_CONFIG,
            "SET of topic config 'segment.ms' needs a value".to_owned()
        )
    );
    let bad_ratio = incremental_one(
        &mut client,
        "events",
        "min.cleanable.dirty.ratio",
        SET,
        Some("1.5"),
    );
    assert_eq!(bad_ratio.0, INVALID_CONFIG);
    assert!(
        bad_ratio.1.contains("a number from 0 to 1"),
        "{}",
        bad_ratio.1
    );
    let lags = incremental(
        &mut client,
        1,
        &[(
            "events",
            &[
                ("min.compaction.lag.ms", SET, Some("10000")),
                ("max.compaction.lag.ms", SET, Some("5000")),
            ],
        )],
        false,
    );
    assert_eq!(lags[0].0, INVALID_CONFIG);
    assert!(
        lags[0]
            .1
            .contains("min.compaction.lag.ms (10000) is greater than max.compaction.lag.ms (5000)"),
        "{}",
        lags[0].1
    );
    let unknown_operation = incremental_one(&mut client, "events", "segment.ms", 9, Some("1"));
    assert_eq!(unknown_operation.0, INVALID_REQUEST);
    assert!(
        unknown_operation.1.contains("unknown config operation 9"),
        "{}",
        unknown_operation.1
    );

    let checked = incremental(
        &mut client,
        1,
        &[("events", &[("delete.retention.ms", SET, Some("1000"))])],
        true,
    );
    assert_eq!(checked[0].0, 0);
    assert_eq!(
        described(&mut client, "events", "delete.retention.ms"),
        ("86400000".into(), SOURCE_DEFAULT),
        "validate_only changes nothing"
    );
    let set = incremental_one(
        &mut client,
        "events",
        "delete.retention.ms",
        SET,
        Some("1000"),
    );
    assert_eq!(set.0, 0);
    assert_eq!(
        described(&mut client, "events", "delete.retention.ms"),
        ("1000".into(), SOURCE_TOPIC)
    );
    let internal = incremental_one(
        &mut client,
        "__consumer_offsets",
        "retention.ms",
        SET,
        Some("1"),
    );
    assert_eq!(internal.0, INVALID_TOPIC_EXCEPTION);
}

#[test]
fn altered_settings_take_effect_on_open_logs_without_a_restart() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    // Kept forever: the records are from 1970, and retention must not remove the segments
    // this test counts.
    create_topic(&mut client, "sized", 2, &[("retention.ms", "-1")]);
    // Both partitions' logs open (and, with two shards, on both shards).
    for partition in 0..2 {
        assert_eq!(
            produce(&mut client, "sized", partition, batch_of(1, 3_000, 1)).0,
            0
        );
    }
    assert_eq!(
        incremental_one(&mut client, "sized", "max.message.bytes", SET, Some("2000")).0,
        0
    );
    for partition in 0..2 {
        assert_eq!(
            produce(&mut client, "sized", partition, batch_of(1, 3_000, 1)).0,
            MESSAGE_TOO_LARGE,
            "partition {partition}: the next append is checked against the new limit"
        );
        assert_eq!(
            produce(&mut client, "sized", partition, batch_of(1, 1_000, 1)).0,
            0
        );
    }
    assert_eq!(
        incremental_one(&mut client, "sized", "max.message.bytes", DELETE, None).0,
        0
    );
    for partition in 0..2 {
        assert_eq!(
            produce(&mut client, "sized", partition, batch_of(1, 3_000, 1)),
            (0, 2),
            "the default limit is back"
        );
    }

    // segment.bytes: the next roll follows the new size. (One segment so far; its file may
    // not exist yet while its batches are in the shard's journal.)
    assert!(segment_files(&broker, "sized", 0) <= 1);
    assert_eq!(
        incremental_one(&mut client, "sized", "segment.bytes", SET, Some("1024")).0,
        0
    );
    for _ in 0..3 {
        assert_eq!(produce(&mut client, "sized", 0, batch_of(1, 1_500, 1)).0, 0);
    }
    // Segment files are written once the shard's commit cycle moves the journaled batches
    // there, a moment after the acknowledgements.
    let deadline = Instant::now() + common::DEADLINE;
    while segment_files(&broker, "sized", 0) < 3 {
        assert!(
            Instant::now() < deadline,
            "each batch larger than a segment rolls to a new one"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // retention.ms: the next retention check (every 50 ms here) applies it. The records are
    // from 1970, so only "no limit" kept them.
    create_topic(
        &mut client,
        "kept",
        1,
        &[("segment.bytes", "1024"), ("retention.ms", "-1")],
    );
    for offset in 0..6 {
        assert_eq!(
            produce(&mut client, "kept", 0, batch_of(1, 1_500, 1)),
            (0, offset)
        );
    }
    assert_eq!(list_offset(&mut client, "kept", 0, -2), 0);
    assert_eq!(
        incremental_one(&mut client, "kept", "retention.ms", SET, Some("60000")).0,
        0
    );
    // Every segment but the active one goes, once sealed (the last of them is sealed with the
    // active one's first write, a moment after the acknowledgement).
    let deadline = Instant::now() + common::DEADLINE;
    while list_offset(&mut client, "kept", 0, -2) != 5 {
        assert!(
            Instant::now() < deadline,
            "the new retention never removed every sealed segment"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(list_offset(&mut client, "kept", 0, -1), 6);
}

#[test]
fn altered_configs_survive_a_restart_and_older_bigger_batches_stay_readable() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    create_topic(&mut client, "durable", 1, &[]);
    for offset in 0..3 {
        assert_eq!(
            produce(&mut client, "durable", 0, batch_of(1, 3_000, 1)),
            (0, offset)
        );
    }
    let answers = incremental(
        &mut client,
        1,
        &[(
            "durable",
            &[
                ("max.message.bytes", SET, Some("2000")),
                ("retention.ms", SET, Some("-1")),
                ("min.cleanable.dirty.ratio", SET, Some("0.75")),
            ],
        )],
        false,
    );
    assert_eq!(answers[0].0, 0);
    drop(client);
    let data = broker.stop();

    let broker = TestBroker::start_in(data, 2, LogConfig::default());
    let mut client = broker.connect();
    let configs = describe(&mut client, "durable");
    for (key, value) in [
        ("max.message.bytes", "2000"),
        ("retention.ms", "-1"),
        ("min.cleanable.dirty.ratio", "0.75"),
    ] {
        assert_eq!(
            (configs[key].0.as_str(), configs[key].1),
            (value, SOURCE_TOPIC),
            "{key}"
        );
    }
    assert_eq!(
        list_offset(&mut client, "durable", 0, -1),
        3,
        "batches accepted under the old, larger limit are not mistaken for torn ones"
    );
    assert_eq!(
        produce(&mut client, "durable", 0, batch_of(1, 3_000, 1)).0,
        MESSAGE_TOO_LARGE,
        "the lowered limit holds after the restart"
    );
    assert_eq!(
        produce(&mut client, "durable", 0, batch_of(1, 1_000, 1)),
        (0, 3)
    );
}

#[test]
fn acks_all_needs_min_insync_replicas_and_a_single_broker_has_one() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    create_topic(&mut client, "strict", 1, &[("min.insync.replicas", "2")]);
    let (error_code, _) = produce(&mut client, "strict", 0, batch_of(1, 10, 1));
    assert_eq!(
        error_code,
        kafka_protocol::ResponseError::NotEnoughReplicas.code()
    );
    assert_eq!(
        list_offset(&mut client, "strict", 0, -1),
        0,
        "nothing was written"
    );
    let (error_code, _) =
        incremental_one(&mut client, "strict", "min.insync.replicas", SET, Some("1"));
    assert_eq!(error_code, 0);
    let (error_code, offset) = produce(&mut client, "strict", 0, batch_of(1, 10, 1));
    assert_eq!((error_code, offset), (0, 0));
}
