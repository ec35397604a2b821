//! The administrative APIs end to end over TCP, on a broker of two shards: ListOffsets and
//! DeleteRecords, CreateTopics and DeleteTopics (a deleted topic comes back empty), topic
//! configurations given at creation, and partition moves on a broker alone.

mod common;

use std::time::{Duration, Instant};

use common::{
    create_topic, create_topic_with, fetch, list_offset, name, produce, stamped, Client, TestBroker,
};
use engine::batch::build::batch_of;
use engine::LogConfig;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

#[test]
fn offsets_by_time_and_bounds_and_deleted_records() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "events", 1), 0);
    for (index, timestamp) in [1_000, 2_000, 3_000].into_iter().enumerate() {
        assert_eq!(
            produce(&mut client, "events", 0, batch_of(2, 8, timestamp)),
            (0, index as i64 * 2)
        );
    }
    assert_eq!(
        list_offset(&mut client, "events", 0, -2),
        (0, 0),
        "earliest"
    );
    assert_eq!(list_offset(&mut client, "events", 0, -1), (0, 6), "latest");
    assert_eq!(
        list_offset(&mut client, "events", 0, 1_500),
        (0, 2),
        "by timestamp"
    );
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("events"))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(1_500)])]);
    let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 6, &request);
    assert_eq!(
        response.topics[0].partitions[0].timestamp, 2_000,
        "the found record's timestamp"
    );
    assert_eq!(
        list_offset(&mut client, "events", 0, 9_000),
        (0, -1),
        "after the newest record"
    );
    assert_eq!(
        list_offset(&mut client, "events", 7, -1).0,
        3,
        "no such partition"
    );

    let (error, _, _) = fetch(&mut client, "events", 0, 7, 0);
    assert_eq!(error, 1, "OFFSET_OUT_OF_RANGE past the end");

    let request = DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
        .with_name(name("events"))
        .with_partitions(vec![DeleteRecordsPartition::default()
            .with_partition_index(0)
            .with_offset(4)])]);
    let response: DeleteRecordsResponse = client.call(ApiKey::DeleteRecords, 2, &request);
    let answer = &response.topics[0].partitions[0];
    assert_eq!((answer.error_code, answer.low_watermark), (0, 4));
    assert_eq!(list_offset(&mut client, "events", 0, -2), (0, 4));
    assert_eq!(
        fetch(&mut client, "events", 0, 0, 0).0,
        1,
        "below the log start"
    );
    let (error, _, records) = fetch(&mut client, "events", 0, 4, 0);
    assert_eq!(error, 0);
    assert_eq!(&records[..], &stamped(batch_of(2, 8, 3_000), 4)[..]);
}

#[test]
fn a_deleted_topic_comes_back_empty_and_admin_errors_are_explained() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "short-lived", 3), 0);
    for partition in 0..3 {
        assert_eq!(
            produce(&mut client, "short-lived", partition, batch_of(2, 4, 1)).0,
            0
        );
    }
    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![name("short-lived"), name("never-was")]);
    let response: DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, 5, &delete);
    assert_eq!(response.responses[0].error_code, 0);
    assert_eq!(response.responses[1].error_code, 3);
    for partition in 0..3 {
        assert!(!broker
            .data
            .path()
            .join(format!("short-lived-{partition}"))
            .exists());
    }
    assert_eq!(create_topic(&mut client, "short-lived", 1), 0);
    assert_eq!(
        list_offset(&mut client, "short-lived", 0, -1),
        (0, 0),
        "starts empty"
    );

    let bad = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("three-copies"))
            .with_num_partitions(1)
            .with_replication_factor(3),
        CreatableTopic::default()
            .with_name(name("bad name!"))
            .with_num_partitions(1)
            .with_replication_factor(1),
        CreatableTopic::default()
            .with_name(name("zero"))
            .with_num_partitions(0)
            .with_replication_factor(1),
    ]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &bad);
    let codes: Vec<i16> = response
        .topics
        .iter()
        .map(|topic| topic.error_code)
        .collect();
    assert_eq!(codes, vec![38, 17, 37]);
    assert!(response
        .topics
        .iter()
        .all(|topic| topic.error_message.is_some()));

    let grow = CreatePartitionsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default()
            .with_name(name("short-lived"))
            .with_count(4)
            .with_assignments(None),
    ]);
    let response: CreatePartitionsResponse = client.call(ApiKey::CreatePartitions, 3, &grow);
    assert_eq!(response.results[0].error_code, 0);
    assert_eq!(
        produce(&mut client, "short-lived", 3, batch_of(1, 4, 1)),
        (0, 0)
    );

    let describe = DescribeConfigsRequest::default().with_resources(vec![
        kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("short-lived")),
    ]);
    let response: DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, 4, &describe);
    let configs = &response.results[0].configs;
    assert!(configs.iter().any(|entry| &*entry.name == "retention.ms"));
}

#[test]
fn topic_configs_given_at_creation_apply_to_that_topic_only() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(
        create_topic_with(&mut client, "small", 1, &[("max.message.bytes", "2000")]),
        0
    );
    assert_eq!(
        create_topic_with(
            &mut client,
            "short-lived-data",
            1,
            &[("retention.ms", "60000"), ("segment.bytes", "1024")]
        ),
        0
    );
    assert_eq!(create_topic(&mut client, "plain", 1), 0);
    assert_eq!(
        create_topic_with(&mut client, "table", 1, &[("cleanup.policy", "compact")]),
        0
    );
    assert_eq!(
        create_topic_with(&mut client, "bad", 1, &[("min.cleanable.dirty.ratio", "2")]),
        40,
        "INVALID_CONFIG for a value out of range"
    );

    assert_eq!(
        produce(&mut client, "small", 0, batch_of(1, 3_000, 1)).0,
        10
    );
    assert_eq!(
        produce(&mut client, "plain", 0, batch_of(1, 3_000, 1)),
        (0, 0)
    );

    // Records from 1970 in 1 KiB segments: past a one-minute retention once sealed.
    for index in 0..8 {
        assert_eq!(
            produce(&mut client, "short-lived-data", 0, batch_of(1, 1_500, 1)),
            (0, index)
        );
        assert_eq!(produce(&mut client, "plain", 0, batch_of(1, 1_500, 1)).0, 0);
    }
    let deadline = Instant::now() + common::DEADLINE;
    while list_offset(&mut client, "short-lived-data", 0, -2) == (0, 0) {
        assert!(
            Instant::now() < deadline,
            "the topic's retention never applied"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(list_offset(&mut client, "short-lived-data", 0, -1), (0, 8));
    assert_eq!(
        list_offset(&mut client, "plain", 0, -2),
        (0, 0),
        "the other topic keeps its one, active segment"
    );
}

#[test]
fn a_broker_alone_can_only_move_partitions_to_itself() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "moved", 2), 0);
    let alter = |client: &mut Client, partition: i32, replicas: Option<Vec<i32>>| {
        let request = AlterPartitionReassignmentsRequest::default().with_topics(vec![
            alter_partition_reassignments_request::ReassignableTopic::default()
                .with_name(name("moved"))
                .with_partitions(vec![
                    alter_partition_reassignments_request::ReassignablePartition::default()
                        .with_partition_index(partition)
                        .with_replicas(replicas.map(|ids| ids.into_iter().map(BrokerId).collect())),
                ]),
        ]);
        let response: AlterPartitionReassignmentsResponse =
            client.call(ApiKey::AlterPartitionReassignments, 0, &request);
        assert_eq!(response.error_code, 0);
        response.responses[0].partitions[0].error_code
    };
    // The broker's node id is 0 (see common).
    assert_eq!(alter(&mut client, 1, Some(vec![0])), 0, "a move to itself");
    let invalid_replica_assignment = 39;
    assert_eq!(
        alter(&mut client, 1, Some(vec![0, 2])),
        invalid_replica_assignment
    );
    let unknown_topic_or_partition = 3;
    assert_eq!(
        alter(&mut client, 2, Some(vec![0])),
        unknown_topic_or_partition
    );
    assert_eq!(
        alter(&mut client, -1, Some(vec![0])),
        unknown_topic_or_partition
    );
    let no_reassignment_in_progress = 85;
    assert_eq!(alter(&mut client, 0, None), no_reassignment_in_progress);

    let listed: ListPartitionReassignmentsResponse = client.call(
        ApiKey::ListPartitionReassignments,
        0,
        &ListPartitionReassignmentsRequest::default().with_topics(None),
    );
    assert_eq!(listed.error_code, 0);
    assert!(listed.topics.is_empty(), "nothing moves on a broker alone");
    broker.stop();
}
