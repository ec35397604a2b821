//! Offsets committed inside a transaction, end to end over the wire on a broker alone of two
//! shards, as a transactional producer sends them (InitProducerId, AddOffsetsToTxn,
//! TxnOffsetCommit, EndTxn): pending until the transaction's marker (OffsetFetch answers the
//! previous offset, or UNSTABLE_OFFSET_COMMIT with `require_stable`), then committed or
//! dropped; `__consumer_offsets` holds them as Kafka writes them (a transactional batch of the
//! producer, then its control batch); and a restart between the commit and the marker loads
//! them back pending.

mod common;

use std::time::{Duration, Instant};

use common::{
    create_topic, end_transaction, fetch, init_producer, retried_by_transactional_clients, Client,
    Producer, TestBroker, DEADLINE,
};
use engine::batch::{self, BatchHeader, TransactionMarker};
use engine::catalog::OFFSETS_TOPIC;
use engine::LogConfig;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const GROUP: &str = "transform";
const TOPIC: &str = "input";
const TRANSACTIONAL_ID: &str = "transform-1";
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

fn add_offsets(client: &mut Client, producer: Producer) {
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(text(TRANSACTIONAL_ID)))
        .with_producer_id(ProducerId(producer.id))
        .with_producer_epoch(producer.epoch)
        .with_group_id(GroupId(text(GROUP)));
    let code = retried_by_transactional_clients(|| {
        let response: AddOffsetsToTxnResponse = client.call(ApiKey::AddOffsetsToTxn, 3, &request);
        response.error_code
    });
    assert_eq!(code, 0, "AddOffsetsToTxn");
}

/// Waits (up to the deadline) until OffsetFetch with `require_stable` answers `expected`:
/// the markers are written after EndTxn is answered.
fn wait_for_stable_offsets(client: &mut Client, expected: [(i16, i64); 2]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let fetched = fetch_offsets(client, true);
        if fetched == expected {
            return;
        }
        assert!(Instant::now() < deadline, "offsets still {fetched:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn offsets_partition() -> i32 {
    // The broker's default partition count of `__consumer_offsets`.
    net::groups::offsets_partition_for(GROUP, 16) as i32
}

/// TxnOffsetCommit (`version`) of `offsets` by `producer`; the error code of each partition,
/// in the request's order.
fn txn_commit(
    client: &mut Client,
    version: i16,
    producer: Producer,
    offsets: &[(&str, i32, i64)],
) -> Vec<i16> {
    let topics = offsets
        .iter()
        .map(|(topic, partition, offset)| {
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset)
                    .with_committed_metadata(Some(text("in a transaction")))])
        })
        .collect();
    let request = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(text(TRANSACTIONAL_ID)))
        .with_group_id(GroupId(text(GROUP)))
        .with_producer_id(ProducerId(producer.id))
        .with_producer_epoch(producer.epoch)
        .with_topics(topics);
    let response: TxnOffsetCommitResponse = client.call(ApiKey::TxnOffsetCommit, version, &request);
    response
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// A plain commit without membership.
fn commit(client: &mut Client, partition: i32, offset: i64) {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(GROUP)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)])]);
    let response: OffsetCommitResponse = client.call(ApiKey::OffsetCommit, 8, &request);
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
}

/// OffsetFetch v7 of the topic's partitions 0 and 1: (error code, offset) of each.
fn fetch_offsets(client: &mut Client, require_stable: bool) -> Vec<(i16, i64)> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(text(GROUP)))
        .with_require_stable(require_stable)
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_partition_indexes(vec![0, 1])]));
    let response: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 7, &request);
    assert_eq!(response.error_code, 0);
    response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.error_code, p.committed_offset))
        .collect()
}

/// The headers of the batches of the group's `__consumer_offsets` partition, with the marker
/// of each control batch that is one.
fn offsets_log(client: &mut Client) -> Vec<(BatchHeader, Option<TransactionMarker>)> {
    let (error, _, records) = fetch(client, OFFSETS_TOPIC, offsets_partition(), 0, 0);
    assert_eq!(error, 0);
    let mut batches = Vec::new();
    let mut rest = &records[..];
    while let Some(header) = BatchHeader::parse(rest) {
        let bytes = &rest[..header.size_bytes as usize];
        batches.push((header, batch::read_transaction_marker(bytes).unwrap()));
        rest = &rest[header.size_bytes as usize..];
    }
    batches
}

#[test]
fn committed_transactions_offsets_become_the_groups_offsets() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, TOPIC, 2), 0);
    commit(&mut client, 0, 5);
    let producer = init_producer(&mut client, TRANSACTIONAL_ID);

    add_offsets(&mut client, producer);
    let codes = txn_commit(
        &mut client,
        3,
        producer,
        &[
            (TOPIC, 0, 10),
            (TOPIC, 1, 20),
            (TOPIC, 9, 1),
            ("missing", 0, 1),
        ],
    );
    assert_eq!(
        codes,
        [0, 0, UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(fetch_offsets(&mut client, false), [(0, 5), (0, -1)]);
    assert_eq!(
        fetch_offsets(&mut client, true),
        [(UNSTABLE_OFFSET_COMMIT, -1), (UNSTABLE_OFFSET_COMMIT, -1)]
    );
    end_transaction(&mut client, TRANSACTIONAL_ID, producer, true);
    wait_for_stable_offsets(&mut client, [(0, 10), (0, 20)]);

    // As Kafka writes them: the producer's transactional batch, then its COMMIT marker. The
    // group's offsets may become stable before the marker is readable (durable): waited for.
    let deadline = Instant::now() + DEADLINE;
    let batches = loop {
        let batches = offsets_log(&mut client);
        if batches
            .last()
            .is_some_and(|(header, _)| header.is_control())
        {
            break batches;
        }
        assert!(Instant::now() < deadline, "no marker ends {batches:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let (transactional, marker_batch) = (&batches[batches.len() - 2], &batches[batches.len() - 1]);
    assert!(transactional.0.is_transactional() && !transactional.0.is_control());
    assert_eq!(
        (transactional.0.producer_id, transactional.0.records_count),
        (producer.id, 2)
    );
    let marker = marker_batch.1.expect("a marker");
    assert_eq!(
        (marker.producer_id, marker.producer_epoch, marker.committed),
        (producer.id, producer.epoch, true)
    );

    // Version 0 (no member), the producer's second transaction, then a restart.
    add_offsets(&mut client, producer);
    assert_eq!(txn_commit(&mut client, 0, producer, &[(TOPIC, 0, 11)]), [0]);
    end_transaction(&mut client, TRANSACTIONAL_ID, producer, true);
    wait_for_stable_offsets(&mut client, [(0, 11), (0, 20)]);
    let broker = TestBroker::start_in(broker.stop(), 2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(fetch_offsets(&mut client, true), [(0, 11), (0, 20)]);
}

#[test]
fn an_open_transaction_survives_a_restart_and_its_abort_drops_its_offsets() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, TOPIC, 2), 0);
    commit(&mut client, 0, 5);
    let producer = init_producer(&mut client, TRANSACTIONAL_ID);
    add_offsets(&mut client, producer);
    assert_eq!(
        txn_commit(&mut client, 4, producer, &[(TOPIC, 0, 30), (TOPIC, 1, 40)]),
        [0, 0]
    );

    let broker = TestBroker::start_in(broker.stop(), 2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(
        fetch_offsets(&mut client, true),
        [(UNSTABLE_OFFSET_COMMIT, -1), (UNSTABLE_OFFSET_COMMIT, -1)],
        "still pending after the load"
    );
    end_transaction(&mut client, TRANSACTIONAL_ID, producer, false);
    wait_for_stable_offsets(&mut client, [(0, 5), (0, -1)]);

    let broker = TestBroker::start_in(broker.stop(), 2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(fetch_offsets(&mut client, true), [(0, 5), (0, -1)]);
}
