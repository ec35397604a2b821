//! Produce end to end over TCP, across shards: the idempotent producer and InitProducerId,
//! refused batches, acks=0, and the large batch appended without a copy.

mod common;

use std::time::{Duration, Instant};

use common::{
    create_topic, fetch, list_offset, name, produce, produce_request, shard_counter, stamped,
    Client, TestBroker,
};
use engine::batch::build::{batch_from, batch_of, ProducerFields, TestRecord};
use engine::LogConfig;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;

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
