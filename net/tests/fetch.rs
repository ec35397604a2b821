//! The broker's Kafka APIs end to end over TCP: what a client sees, across shards (two
//! shards, so most partitions live on the shard that did not accept the connection).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    create_topic, fetch_request, name, partitions_by_shard, produce_request, shard_counter, Client,
    TestBroker,
};
use engine::batch::build::{batch_from, batch_of, ProducerFields, TestRecord};
use engine::LogConfig;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

/// Produces one batch; returns (error code, base offset).
fn produce(client: &mut Client, topic: &str, partition: i32, batch: Vec<u8>) -> (i16, i64) {
    let response: ProduceResponse = client.call(
        ApiKey::Produce,
        9,
        &produce_request(topic, partition, batch, -1),
    );
    let answer = &response.responses[0].partition_responses[0];
    (answer.error_code, answer.base_offset)
}

/// (error code, high-water mark, records) of one partition's fetch.
fn fetch(
    client: &mut Client,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> (i16, i64, Bytes) {
    let response: FetchResponse = client.call(
        ApiKey::Fetch,
        12,
        &fetch_request(topic, partition, offset, max_wait_ms),
    );
    let data = &response.responses[0].partitions[0];
    (
        data.error_code,
        data.high_watermark,
        data.records.clone().unwrap_or_default(),
    )
}

/// The batch as the broker stores it: base offset and leader epoch (0) filled in.
fn stamped(mut batch: Vec<u8>, base_offset: i64) -> Vec<u8> {
    engine::batch::assign_offset_and_epoch(&mut batch, base_offset, 0);
    batch
}

fn list_offset(client: &mut Client, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 6, &request);
    let answer = &response.topics[0].partitions[0];
    (answer.error_code, answer.offset)
}

/// InitProducerId v4 (KIP-360's fields) without a transactional id: (error, id, epoch).
fn init_producer_id(client: &mut Client, producer_id: i64, producer_epoch: i16) -> (i16, i64, i16) {
    let response: InitProducerIdResponse = client.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_transactional_id(None)
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch),
    );
    (
        response.error_code,
        response.producer_id.0,
        response.producer_epoch,
    )
}

#[test]
fn pipelined_produce_and_fetch_across_shards_keep_order_and_bytes() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "orders", 4), 0);
    assert_eq!(
        create_topic(&mut client, "orders", 4),
        36,
        "TOPIC_ALREADY_EXISTS"
    );

    // Twenty requests sent before reading any answer: answered in order, offsets in order.
    let mut sent = Vec::new();
    let mut batches = vec![Vec::new(); 4];
    for request in 0..20 {
        let partition = request % 4;
        let batch = batch_of(3, 100 + request as usize, 1_000 + request as i64);
        batches[partition as usize].push(batch.clone());
        let acks = if request % 2 == 0 { -1 } else { 1 };
        sent.push(client.send(
            ApiKey::Produce,
            9,
            &produce_request("orders", partition, batch, acks),
        ));
    }
    for (request, correlation_id) in sent.into_iter().enumerate() {
        let (received, response): (i32, ProduceResponse) = client.receive(ApiKey::Produce, 9);
        assert_eq!(received, correlation_id);
        let answer = &response.responses[0].partition_responses[0];
        assert_eq!(answer.error_code, 0);
        assert_eq!(
            answer.base_offset,
            (request / 4) as i64 * 3,
            "request {request}"
        );
    }
    for partition in 0..4 {
        let (error, high_watermark, records) = fetch(&mut client, "orders", partition, 0, 1_000);
        assert_eq!((error, high_watermark), (0, 15));
        let expected: Vec<u8> = batches[partition as usize]
            .iter()
            .enumerate()
            .flat_map(|(index, batch)| stamped(batch.clone(), index as i64 * 3))
            .collect();
        assert_eq!(&records[..], &expected[..], "partition {partition}");
    }
}

#[test]
fn a_waiting_fetch_is_woken_by_a_produce_not_by_its_timeout() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut consumer = broker.connect();
    assert_eq!(create_topic(&mut consumer, "ticks", 2), 0);
    for partition in 0..2 {
        let started = Instant::now();
        consumer.send(
            ApiKey::Fetch,
            12,
            &fetch_request("ticks", partition, 0, 20_000),
        );
        let mut producer = broker.connect();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            produce(&mut producer, "ticks", partition, batch_of(1, 10, 5)).0,
            0
        );
        let (_, response): (i32, FetchResponse) = consumer.receive(ApiKey::Fetch, 12);
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.high_watermark, 1);
        assert!(!data.records.as_ref().unwrap().is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered when the data came, not after max_wait_ms"
        );
    }
    // Data below min_bytes: the fetch waits for more until max_wait_ms, then answers with
    // what there is.
    let started = Instant::now();
    let request = fetch_request("ticks", 0, 0, 300).with_min_bytes(1 << 20);
    let response: FetchResponse = consumer.call(ApiKey::Fetch, 12, &request);
    assert!(!response.responses[0].partitions[0]
        .records
        .as_ref()
        .unwrap()
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Nothing arrives: the fetch waits its max_wait_ms, then answers empty.
    let started = Instant::now();
    let (error, high_watermark, records) = fetch(&mut consumer, "ticks", 0, 1, 300);
    assert_eq!((error, high_watermark), (0, 1));
    assert!(records.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
}

/// librdkafka sends a produce request per partition batch and keeps as many in flight as it
/// likes; a broker that stops reading a connection after a few dozen unanswered requests caps
/// that connection at so many requests per reply latency (issue 16: with a cluster's acks=all
/// latency the client's queue grew without bound). Here a long-poll fetch heads the
/// connection, and the produce that would answer it comes 300 requests later: it must be read
/// and started while the fetch still waits.
#[test]
fn a_connection_keeps_reading_hundreds_of_requests_behind_a_waiting_one() {
    let broker = TestBroker::start(1, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "deep", 1), 0);
    let started = Instant::now();
    let max_wait = Duration::from_secs(20);
    client.send(
        ApiKey::Fetch,
        12,
        &fetch_request("deep", 0, 0, max_wait.as_millis() as i32),
    );
    let between = 300;
    for _ in 0..between {
        client.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    }
    client.send(
        ApiKey::Produce,
        9,
        &produce_request("deep", 0, batch_of(1, 10, 5), 1),
    );
    let (_, response): (i32, FetchResponse) = client.receive(ApiKey::Fetch, 12);
    let data = &response.responses[0].partitions[0];
    assert_eq!(data.high_watermark, 1);
    assert!(!data.records.as_ref().unwrap().is_empty());
    assert!(
        started.elapsed() < max_wait / 2,
        "the fetch was answered by the produce behind it, not by its max_wait_ms ({:?})",
        started.elapsed()
    );
    for _ in 0..between {
        let (_, versions): (i32, ApiVersionsResponse) = client.receive(ApiKey::ApiVersions, 3);
        assert_eq!(versions.error_code, 0);
    }
    let (_, produced): (i32, ProduceResponse) = client.receive(ApiKey::Produce, 9);
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
}

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
fn the_idempotent_producer_is_deduplicated_and_gaps_are_refused() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    let (error, producer_id, epoch) = init_producer_id(&mut client, -1, -1);
    assert_eq!((error, epoch), (0, 0));
    assert!(producer_id >= 0);
    let record = |value: &[u8]| TestRecord {
        key: None,
        value: value.to_vec(),
        timestamp_ms: 1,
    };
    let batch = |sequence: i32, value: &[u8]| {
        batch_from(
            &[record(value), record(value)],
            ProducerFields::idempotent(producer_id, 0, sequence),
        )
    };
    for partition in 0..2 {
        assert_eq!(
            produce(&mut client, "auto-created", partition, batch(0, b"a")),
            (0, 0)
        );
        assert_eq!(
            produce(&mut client, "auto-created", partition, batch(2, b"b")),
            (0, 2)
        );
        assert_eq!(
            produce(&mut client, "auto-created", partition, batch(0, b"a")),
            (0, 0),
            "a retry gets its original offset"
        );
        assert_eq!(
            produce(&mut client, "auto-created", partition, batch(9, b"c")).0,
            45,
            "a gap"
        );
        assert_eq!(
            list_offset(&mut client, "auto-created", partition, -1),
            (0, 4),
            "written once"
        );
    }
}

#[test]
fn init_producer_id_naming_another_producer_does_not_fence_it() {
    let broker = TestBroker::start(1, LogConfig::default());
    let mut owner = broker.connect();
    let mut stranger = broker.connect();
    assert_eq!(create_topic(&mut owner, "fenced", 1), 0);
    let (error, owner_id, owner_epoch) = init_producer_id(&mut owner, -1, -1);
    assert_eq!((error, owner_epoch), (0, 0));
    let batch = |producer_id, epoch, sequence| {
        let record = TestRecord {
            key: None,
            value: b"v".to_vec(),
            timestamp_ms: 1,
        };
        batch_from(
            &[record],
            ProducerFields::idempotent(producer_id, epoch, sequence),
        )
    };
    assert_eq!(
        produce(&mut owner, "fenced", 0, batch(owner_id, 0, 0)),
        (0, 0)
    );

    // Another client names the owner's id and epoch: Kafka hands it a fresh id with epoch 0
    // (only a transaction coordinator bumps epochs), and it produces under what it got.
    let (error, stranger_id, stranger_epoch) = init_producer_id(&mut stranger, owner_id, 0);
    assert_eq!(error, 0);
    assert_eq!(
        produce(
            &mut stranger,
            "fenced",
            0,
            batch(stranger_id, stranger_epoch, 0)
        ),
        (0, 1)
    );

    // The owner's next batch is still accepted (not INVALID_PRODUCER_EPOCH).
    assert_eq!(
        produce(&mut owner, "fenced", 0, batch(owner_id, 0, 1)),
        (0, 2)
    );
    assert_ne!(stranger_id, owner_id, "the stranger got the owner's id");
    assert_eq!(stranger_epoch, 0);

    // KIP-360's id and epoch come both or neither (INVALID_REQUEST).
    assert_eq!(init_producer_id(&mut stranger, owner_id, -1).0, 42);
    assert_eq!(init_producer_id(&mut stranger, -1, 0).0, 42);
}

#[test]
fn bad_batches_get_error_codes_and_leave_the_partition_untouched() {
    let broker = TestBroker::start(
        1,
        LogConfig {
            batch_bytes_max: 4_096,
            ..LogConfig::default()
        },
    );
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "strict", 1), 0);
    assert_eq!(
        produce(&mut client, "strict", 0, batch_of(1, 10, 1)),
        (0, 0)
    );

    let mut flipped = batch_of(1, 10, 2);
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    assert_eq!(
        produce(&mut client, "strict", 0, flipped).0,
        2,
        "CORRUPT_MESSAGE for a bad CRC"
    );
    let mut cut = batch_of(1, 10, 2);
    cut.truncate(cut.len() - 3);
    assert_eq!(
        produce(&mut client, "strict", 0, cut).0,
        2,
        "CORRUPT_MESSAGE for a cut batch"
    );
    assert_eq!(
        produce(&mut client, "strict", 0, batch_of(1, 8_000, 2)).0,
        10,
        "MESSAGE_TOO_LARGE"
    );
    assert_eq!(
        produce(&mut client, "strict", 0, batch_of(1, 10, 2).split_off(1)).0,
        2
    );
    assert_eq!(
        produce(&mut client, "strict", 3, batch_of(1, 10, 2)).0,
        3,
        "no such partition"
    );
    let control = batch_from(
        &[TestRecord {
            key: None,
            value: vec![0; 6],
            timestamp_ms: 1,
        }],
        ProducerFields::idempotent(1, 0, 0).with_transaction_bits(true),
    );
    assert_eq!(
        produce(&mut client, "strict", 0, control).0,
        87,
        "INVALID_RECORD"
    );
    // Kafka takes exactly one batch per partition from Produce version 3 on, and only magic 2.
    assert_eq!(
        produce(
            &mut client,
            "strict",
            0,
            [batch_of(1, 10, 2), batch_of(1, 10, 3)].concat()
        )
        .0,
        87,
        "INVALID_RECORD for two batches"
    );
    let mut magic_1 = batch_of(1, 10, 2);
    magic_1[16] = 1;
    assert_eq!(
        produce(&mut client, "strict", 0, magic_1).0,
        87,
        "INVALID_RECORD for magic 1"
    );
    let response: ProduceResponse = client.call(
        ApiKey::Produce,
        9,
        &produce_request("strict", 0, batch_of(1, 1, 1), 2),
    );
    assert_eq!(
        response.responses[0].partition_responses[0].error_code, 21,
        "INVALID_REQUIRED_ACKS"
    );

    let (error, high_watermark, records) = fetch(&mut client, "strict", 0, 0, 0);
    assert_eq!(
        (error, high_watermark),
        (0, 1),
        "only the good batch is there"
    );
    assert_eq!(&records[..], &stamped(batch_of(1, 10, 1), 0)[..]);
}

#[test]
fn acks_zero_gets_no_response_and_later_answers_stay_in_order() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    client.send(
        ApiKey::Produce,
        9,
        &produce_request("fire-and-forget", 1, batch_of(1, 5, 1), 0),
    );
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name("fire-and-forget"))),
    ]));
    let sent = client.send(ApiKey::Metadata, 12, &metadata);
    let (received, response): (i32, MetadataResponse) = client.receive(ApiKey::Metadata, 12);
    assert_eq!(received, sent, "the next response is the metadata one");
    assert_eq!(
        response.topics[0].partitions.len(),
        2,
        "auto-created with the default count"
    );
    let deadline = Instant::now() + common::DEADLINE;
    while list_offset(&mut client, "fire-and-forget", 1, -1) != (0, 1) {
        assert!(
            Instant::now() < deadline,
            "the acks=0 batch was never written"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn data_past_the_tail_cache_is_spliced_from_the_segment_file() {
    let log = LogConfig {
        tail_cache_bytes_max: 64 << 10,
        ..LogConfig::default()
    };
    let broker = TestBroker::start(2, log);
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "bulk", 1), 0);
    let mut expected = Vec::new();
    for index in 0..64 {
        let batch = batch_of(4, 2_000, index);
        let (error, base_offset) = produce(&mut client, "bulk", 0, batch.clone());
        assert_eq!(error, 0);
        expected.extend(stamped(batch, base_offset));
    }
    let mut received = Vec::new();
    let mut offset = 0;
    while offset < 256 {
        let (error, _, records) = fetch(&mut client, "bulk", 0, offset, 0);
        assert_eq!(error, 0);
        let mut cursor = &records[..];
        while cursor.len() >= 61 {
            let header = engine::batch::BatchHeader::parse(cursor).unwrap();
            offset = header.last_offset() + 1;
            cursor = &cursor[header.size_bytes as usize..];
        }
        received.extend_from_slice(&records);
    }
    assert_eq!(received, expected, "every byte, in order");
    let text = broker.metrics.render();
    let spliced: u64 = text
        .lines()
        .filter(|line| line.starts_with("ferrite_bytes_spliced_total{"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        spliced > 256 << 10,
        "old batches left by splice, not memory: {spliced} bytes"
    );
}

#[test]
fn a_large_batch_alone_in_its_request_is_appended_without_a_copy() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "large", 2), 0);
    let copied = || shard_counter(&broker, "ferrite_produce_bytes_copied_total");
    let mut expected = Vec::new();
    // Both partitions: one lives on the shard that accepted the connection, one on the other.
    for partition in 0..2 {
        let large = batch_of(256, 1_000, 1);
        assert!(large.len() > 128 << 10);
        let before = copied();
        let (error, base_offset) = produce(&mut client, "large", partition, large.clone());
        assert_eq!(error, 0);
        assert_eq!(
            copied() - before,
            0,
            "a large batch alone in its request is appended in the buffer it was read into"
        );
        let small = batch_of(2, 100, 2);
        let (error, _) = produce(&mut client, "large", partition, small.clone());
        assert_eq!(error, 0);
        assert_eq!(
            copied() - before,
            small.len() as u64,
            "a small batch is copied out of the shared read buffer"
        );
        let (error, _, records) = fetch(&mut client, "large", partition, 0, 0);
        assert_eq!(error, 0);
        assert_eq!(
            records[..large.len()],
            stamped(large, base_offset)[..],
            "the large batch reads back as sent, offsets stamped"
        );
        expected.push(partition);
    }
    assert_eq!(expected, [0, 1]);
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
fn a_fetch_waiting_on_a_deleted_topic_does_not_bring_it_back() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut admin = broker.connect();
    let mut consumer = broker.connect();
    assert_eq!(create_topic(&mut admin, "doomed", 2), 0);
    for partition in 0..2 {
        consumer.send(
            ApiKey::Fetch,
            12,
            &fetch_request("doomed", partition, 0, 1_000),
        );
    }
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![name("doomed")]);
    let response: DeleteTopicsResponse = admin.call(ApiKey::DeleteTopics, 5, &delete);
    assert_eq!(response.responses[0].error_code, 0);
    for _ in 0..2 {
        let (_, response): (i32, FetchResponse) = consumer.receive(ApiKey::Fetch, 12);
        let error = response.responses[0].partitions[0].error_code;
        assert!(
            error == 3 || error == 0,
            "unknown topic (or empty, if answered first): {error}"
        );
    }
    // Once both waits are over, nothing may have re-created the partitions.
    let (error, _, _) = fetch(&mut consumer, "doomed", 0, 0, 0);
    assert_eq!(error, 3);
    for partition in 0..2 {
        let dir = broker.data.path().join(format!("doomed-{partition}"));
        assert!(!dir.exists(), "{} came back", dir.display());
    }
}

fn create_topic_with(client: &mut Client, topic: &str, configs: &[(&str, &str)]) -> i16 {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(key, value)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(key.to_string()))
                        .with_value(Some(StrBytes::from_string(value.to_string())))
                })
                .collect(),
        )]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    response.topics[0].error_code
}

#[test]
fn topic_configs_given_at_creation_apply_to_that_topic_only() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(
        create_topic_with(&mut client, "small", &[("max.message.bytes", "2000")]),
        0
    );
    assert_eq!(
        create_topic_with(
            &mut client,
            "short-lived-data",
            &[("retention.ms", "60000"), ("segment.bytes", "1024")]
        ),
        0
    );
    assert_eq!(create_topic(&mut client, "plain", 1), 0);
    assert_eq!(
        create_topic_with(&mut client, "table", &[("cleanup.policy", "compact")]),
        0
    );
    assert_eq!(
        create_topic_with(&mut client, "bad", &[("min.cleanable.dirty.ratio", "2")]),
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

/// A consumer of many partitions spread over both shards, fetching them all in each request
/// under tight limits, gets every batch of every partition exactly once, in order, each
/// response within the partition and response limits (only a lone first batch may exceed
/// them); the producer's requests carry a batch for every partition at once.
#[test]
fn a_fetch_of_many_partitions_across_shards_gets_each_partitions_batches_in_order_within_its_limits(
) {
    const PARTITIONS_MANY: i32 = 8;
    const PARTITION_BYTES_MAX: usize = 5_000;
    const RESPONSE_BYTES_MAX: usize = 12_000;
    let log = LogConfig {
        // Older batches come from the segment files (spliced), newer ones from memory.
        tail_cache_bytes_max: 16 << 10,
        ..LogConfig::default()
    };
    let broker = TestBroker::start(2, log);
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "fanout", PARTITIONS_MANY), 0);
    let mut produced: Vec<Vec<u8>> = vec![Vec::new(); PARTITIONS_MANY as usize];
    let mut offsets = vec![0i64; PARTITIONS_MANY as usize];
    for round in 0..24usize {
        let batches: Vec<Vec<u8>> = (0..PARTITIONS_MANY as usize)
            .map(|partition| {
                let records = 1 + (round + partition) % 3;
                let value_bytes = 100 + ((round * 5 + partition * 3) % 7) * 400;
                batch_of(records, value_bytes, round as i64)
            })
            .collect();
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("fanout"))
                .with_partition_data(
                    batches
                        .iter()
                        .enumerate()
                        .map(|(partition, batch)| {
                            PartitionProduceData::default()
                                .with_index(partition as i32)
                                .with_records(Some(Bytes::from(batch.clone())))
                        })
                        .collect(),
                )]);
        let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
        let answers = &response.responses[0].partition_responses;
        assert_eq!(answers.len(), PARTITIONS_MANY as usize);
        for (partition, (answer, batch)) in answers.iter().zip(batches).enumerate() {
            assert_eq!(answer.index, partition as i32);
            assert_eq!(
                (answer.error_code, answer.base_offset),
                (0, offsets[partition]),
                "round {round}, partition {partition}"
            );
            let records = engine::batch::BatchHeader::parse(&batch)
                .unwrap()
                .records_count;
            produced[partition].extend(stamped(batch, offsets[partition]));
            offsets[partition] += i64::from(records);
        }
    }

    let mut consumed: Vec<Vec<u8>> = vec![Vec::new(); PARTITIONS_MANY as usize];
    let mut positions = vec![0i64; PARTITIONS_MANY as usize];
    let started = Instant::now();
    while positions != offsets {
        assert!(
            started.elapsed() < common::DEADLINE,
            "the consumer stopped progressing"
        );
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(RESPONSE_BYTES_MAX as i32)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("fanout"))
                .with_partitions(
                    positions
                        .iter()
                        .enumerate()
                        .map(|(partition, &offset)| {
                            FetchPartition::default()
                                .with_partition(partition as i32)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(PARTITION_BYTES_MAX as i32)
                        })
                        .collect(),
                )]);
        let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
        let answers = &response.responses[0].partitions;
        assert_eq!(answers.len(), PARTITIONS_MANY as usize);
        let mut response_bytes = 0;
        for answer in answers {
            let partition = answer.partition_index as usize;
            assert_eq!(answer.error_code, 0);
            assert_eq!(answer.high_watermark, offsets[partition]);
            let records = answer.records.clone().unwrap_or_default();
            let mut batches = 0;
            let mut cursor = &records[..];
            while !cursor.is_empty() {
                let header = engine::batch::BatchHeader::parse(cursor).unwrap();
                assert_eq!(
                    header.base_offset, positions[partition],
                    "whole batches, in order"
                );
                positions[partition] = header.last_offset() + 1;
                cursor = &cursor[header.size_bytes as usize..];
                batches += 1;
            }
            let lone_first_batch = batches == 1 && response_bytes == 0;
            assert!(
                records.len() <= PARTITION_BYTES_MAX || lone_first_batch,
                "partition {partition}: {} bytes",
                records.len()
            );
            response_bytes += records.len();
            assert!(
                response_bytes <= RESPONSE_BYTES_MAX || lone_first_batch,
                "{response_bytes} bytes in the response"
            );
            consumed[partition].extend_from_slice(&records);
        }
        assert!(
            response_bytes > 0,
            "every fetch returns something until the end"
        );
    }
    assert_eq!(
        consumed, produced,
        "every byte of every partition, in order"
    );
}

/// A broker of two shards with `topic` of six partitions: a client, and the partitions by
/// owning shard ([`partitions_by_shard`]).
fn broker_with_topic_on_both_shards(topic: &str) -> (TestBroker, Client, [Vec<i32>; 2]) {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, topic, 6), 0);
    (broker, client, partitions_by_shard(topic, 6))
}

/// A fetch (v12) of `partitions` of `topic`, each `(partition, fetch offset)` with the same
/// partition limit, in this order.
fn fetch_partitions(
    topic: &str,
    partitions: &[(i32, i64)],
    partition_bytes_max: i32,
    response_bytes_max: i32,
    min_bytes: i32,
    max_wait_ms: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(response_bytes_max)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(partition, offset)| {
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(partition_bytes_max)
                    })
                    .collect(),
            )])
}

/// Each answered partition of a one-topic fetch: (partition, error code, high-water mark,
/// records), in the response's order.
fn answered(response: &FetchResponse) -> Vec<(i32, i16, i64, Bytes)> {
    response.responses[0]
        .partitions
        .iter()
        .map(|data| {
            (
                data.partition_index,
                data.error_code,
                data.high_watermark,
                data.records.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// A long poll over partitions of both shards, whichever shard took the connection: data on
/// one shard below `min_bytes` does not end it; a produce to a partition of the other shard
/// that brings the total to `min_bytes` does, long before `max_wait_ms`, and the answer holds
/// both partitions' data. Then, with `min_bytes` never reached, the fetch answers at
/// `max_wait_ms` with what both shards have.
#[test]
fn a_long_poll_across_shards_waits_for_min_bytes_and_is_woken_by_either_shards_produce() {
    let (broker, mut consumer, [shard_0, shard_1]) = broker_with_topic_on_both_shards("polls");
    let mut producer = broker.connect();
    // Each order: the first batch to one shard's partition, the second (which completes
    // min_bytes) to the other's.
    for (round, (first, second)) in [(shard_0[0], shard_1[0]), (shard_1[1], shard_0[1])]
        .into_iter()
        .enumerate()
    {
        let first_batch = batch_of(2, 300, round as i64);
        let second_batch = batch_of(3, 300, round as i64);
        let offsets = [(first, 0), (second, 0)];
        let min_bytes = (first_batch.len() + 1) as i32;
        let started = Instant::now();
        consumer.send(
            ApiKey::Fetch,
            12,
            &fetch_partitions("polls", &offsets, 1 << 20, 1 << 20, min_bytes, 20_000),
        );
        assert_eq!(
            produce(&mut producer, "polls", first, first_batch.clone()),
            (0, 0)
        );
        assert_eq!(
            produce(&mut producer, "polls", second, second_batch.clone()),
            (0, 0)
        );
        let (_, response): (i32, FetchResponse) = consumer.receive(ApiKey::Fetch, 12);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "round {round}: answered when min_bytes was reached, not at max_wait_ms"
        );
        assert_eq!(
            answered(&response),
            vec![
                (first, 0, 2, Bytes::from(stamped(first_batch, 0))),
                (second, 0, 3, Bytes::from(stamped(second_batch, 0))),
            ],
            "round {round}: both shards' data, not only the first batch"
        );
    }
    // min_bytes beyond what both shards have: the answer comes at max_wait_ms, with it all.
    let started = Instant::now();
    let offsets = [(shard_0[0], 0), (shard_1[0], 0), (shard_0[2], 0)];
    let response: FetchResponse = consumer.call(
        ApiKey::Fetch,
        12,
        &fetch_partitions("polls", &offsets, 1 << 20, 1 << 20, 1 << 20, 300),
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    let answers = answered(&response);
    assert_eq!(
        answers
            .iter()
            .map(|(partition, error, high_watermark, records)| (
                *partition,
                *error,
                *high_watermark,
                records.is_empty()
            ))
            .collect::<Vec<_>>(),
        vec![
            (shard_0[0], 0, 2, false),
            (shard_1[0], 0, 3, false),
            (shard_0[2], 0, 0, true)
        ]
    );
}

/// KIP-74 across shards: the first partition that has data returns its first batch whole
/// even when it exceeds both the partition and the response limit; a later partition never
/// returns a batch beyond its limit or the room left, whichever shard owns it; a partition
/// with nothing to return does not use up the "first batch" allowance.
#[test]
fn only_the_first_partition_with_data_may_exceed_the_fetch_limits_whichever_shard_owns_it() {
    let (_broker, mut client, [shard_0, shard_1]) = broker_with_topic_on_both_shards("kip74");
    // One partition of each shard starts with a batch over every limit, another of each
    // shard with small batches.
    let big = batch_of(1, 20_000, 1);
    let small = batch_of(1, 300, 2);
    // Two small batches fit a partition's limit, three the response's.
    let partition_bytes_max = (small.len() * 5 / 2) as i32;
    let response_bytes_max = (small.len() * 7 / 2) as i32;
    assert!(big.len() > response_bytes_max as usize);
    let (big_0, big_1, small_0, small_1, empty) =
        (shard_0[0], shard_1[0], shard_0[1], shard_1[1], shard_0[2]);
    for partition in [big_0, big_1] {
        assert_eq!(
            produce(&mut client, "kip74", partition, big.clone()),
            (0, 0)
        );
    }
    for partition in [small_0, small_1] {
        for offset in 0..4 {
            assert_eq!(
                produce(&mut client, "kip74", partition, small.clone()),
                (0, offset)
            );
        }
    }
    let small_bytes = |count: usize| -> Bytes {
        (0..count)
            .flat_map(|offset| stamped(small.clone(), offset as i64))
            .collect::<Vec<u8>>()
            .into()
    };
    let big_bytes = Bytes::from(stamped(big.clone(), 0));
    let nothing = Bytes::new();
    let fetch_records = |client: &mut Client, order: &[(i32, i64)]| -> Vec<(i32, Bytes)> {
        let request = fetch_partitions(
            "kip74",
            order,
            partition_bytes_max,
            response_bytes_max,
            1,
            0,
        );
        let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
        answered(&response)
            .into_iter()
            .map(|(partition, error, _, records)| {
                assert_eq!(error, 0, "partition {partition}");
                (partition, records)
            })
            .collect()
    };
    for (big, small, other_small) in [(big_0, small_1, small_0), (big_1, small_0, small_1)] {
        // The big batch first: returned whole; nothing fits after it.
        assert_eq!(
            fetch_records(&mut client, &[(big, 0), (small, 0)]),
            vec![(big, big_bytes.clone()), (small, nothing.clone())]
        );
        // Small batches first: two fit the partition's limit; the big batch exceeds the
        // room left, so it is not returned.
        assert_eq!(
            fetch_records(&mut client, &[(small, 0), (big, 0)]),
            vec![(small, small_bytes(2)), (big, nothing.clone())]
        );
        // A partition with nothing new first (caught up, or empty): the big batch is still the
        // first data, so it is returned.
        assert_eq!(
            fetch_records(
                &mut client,
                &[(small, 4), (empty, 0), (big, 0), (other_small, 0)]
            ),
            vec![
                (small, nothing.clone()),
                (empty, nothing.clone()),
                (big, big_bytes.clone()),
                (other_small, nothing.clone())
            ]
        );
        // Two small partitions of different shards share the response limit: the second gets
        // only what fits the room the first left (one batch of the two its limit allows).
        assert_eq!(
            fetch_records(&mut client, &[(small, 0), (other_small, 0)]),
            vec![(small, small_bytes(2)), (other_small, small_bytes(1))]
        );
    }
}

/// Each partition of a fetch gets its own error code, the others their data, whichever shard
/// owns them; an error ends a long poll at once (as Kafka answers at once when a partition
/// fails), and read_committed reads the same as read_uncommitted (no transactions, so the
/// last stable offset is the high-water mark).
#[test]
fn a_fetch_reports_each_partitions_error_beside_the_others_data_without_waiting() {
    let (_broker, mut client, [shard_0, shard_1]) = broker_with_topic_on_both_shards("mixed");
    let batch = batch_of(2, 100, 7);
    for &partition in shard_0.iter().chain(&shard_1) {
        assert_eq!(
            produce(&mut client, "mixed", partition, batch.clone()),
            (0, 0)
        );
    }
    let wanted = [
        (shard_0[0], 0),  // data
        (shard_1[0], 5),  // past the end: out of range
        (99, 0),          // no such partition
        (shard_1[1], 0),  // data
        (shard_0[1], -1), // a negative offset: out of range
        (shard_0[2], 2),  // at the end: nothing yet, no error
    ];
    for isolation_level in [0, 1] {
        // min_bytes that the data never reaches, and a long max_wait_ms.
        let mut request = fetch_partitions("mixed", &wanted, 1 << 20, 1 << 20, 1 << 20, 20_000)
            .with_isolation_level(isolation_level);
        request.topics.push(
            FetchTopic::default()
                .with_topic(name("no-such-topic"))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)]),
        );
        let started = Instant::now();
        let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "an error answers at once, not at max_wait_ms"
        );
        let records = Bytes::from(stamped(batch.clone(), 0));
        assert_eq!(
            answered(&response),
            vec![
                (shard_0[0], 0, 2, records.clone()),
                (shard_1[0], 1, -1, Bytes::new()),
                (99, 3, -1, Bytes::new()),
                (shard_1[1], 0, 2, records.clone()),
                (shard_0[1], 1, -1, Bytes::new()),
                (shard_0[2], 0, 2, Bytes::new()),
            ],
            "isolation level {isolation_level}"
        );
        for data in &response.responses[0].partitions {
            assert_eq!(data.last_stable_offset, data.high_watermark);
        }
        let unknown = &response.responses[1];
        assert_eq!(&*unknown.topic.0, "no-such-topic");
        assert_eq!(unknown.partitions[0].error_code, 3);
    }
}
