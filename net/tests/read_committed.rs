//! read_committed over the wire: a transactional producer's batches are taken, and a
//! `read_committed` Fetch and ListOffsets stop at the last stable offset (the first offset of
//! the open transaction) while `read_uncommitted` ones see up to the high-water mark; Fetch says
//! both offsets and lists aborted transactions only for `read_committed` (null otherwise, as
//! Kafka answers). The markers that end transactions are the coordinator's (tested with it).
//! DescribeProducers shows the producers and the open transaction's start.

mod common;

use std::time::{Duration, Instant};

use common::{
    add_partition_to_transaction, create_topic, fetch_request, init_producer, list_offset, name,
    produce, produce_request, Client, TestBroker,
};
use engine::batch::build::{self, ProducerFields, TestRecord};
use engine::LogConfig;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

const READ_COMMITTED: i8 = 1;

fn batch(producer: ProducerFields, value: &str) -> Vec<u8> {
    let record = TestRecord {
        key: None,
        value: value.as_bytes().to_vec(),
        timestamp_ms: 1_000,
    };
    build::batch_from(&[record], producer)
}

/// What a fetch of one partition answered: high-water mark, last stable offset, aborted
/// transactions as (producer, first offset), and the records' length in bytes.
type Fetched = (i64, i64, Option<Vec<(i64, i64)>>, usize);

/// Partition 0's fetch from `offset`.
fn fetch(
    client: &mut Client,
    topic: &str,
    offset: i64,
    isolation_level: i8,
    max_wait_ms: i32,
) -> Fetched {
    let request =
        fetch_request(topic, 0, offset, max_wait_ms).with_isolation_level(isolation_level);
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
    let data = &response.responses[0].partitions[0];
    assert_eq!(data.error_code, 0);
    (
        data.high_watermark,
        data.last_stable_offset,
        data.aborted_transactions.as_ref().map(|aborted| {
            aborted
                .iter()
                .map(|transaction| (transaction.producer_id.0, transaction.first_offset))
                .collect()
        }),
        data.records.as_ref().map_or(0, |records| records.len()),
    )
}

fn latest_committed(client: &mut Client, topic: &str) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(READ_COMMITTED)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 6, &request);
    let answer = &response.topics[0].partitions[0];
    assert_eq!(answer.error_code, 0);
    answer.offset
}

#[test]
fn read_committed_stops_at_the_open_transaction_and_read_uncommitted_does_not() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "payments", 1), 0);
    let plain = ProducerFields::idempotent(3, 0, 0);
    assert_eq!(
        produce(&mut client, "payments", 0, batch(plain, "before")),
        (0, 0)
    );
    // A transactional producer's batch, its partition added to its transaction first.
    let producer = init_producer(&mut client, "payments-writer");
    add_partition_to_transaction(&mut client, "payments-writer", producer, "payments", 0);
    let transactional =
        ProducerFields::idempotent(producer.id, producer.epoch, 0).with_transaction_bits(false);
    let request = produce_request("payments", 0, batch(transactional, "open"), -1)
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(
            "payments-writer",
        ))));
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!(
        (answer.error_code, answer.base_offset),
        (0, 1),
        "a transactional batch is taken"
    );
    let plain = ProducerFields::idempotent(3, 0, 1);
    assert_eq!(
        produce(&mut client, "payments", 0, batch(plain, "after")),
        (0, 2)
    );

    let (high_watermark, stable, aborted, bytes) =
        fetch(&mut client, "payments", 0, READ_COMMITTED, 0);
    assert_eq!((high_watermark, stable), (3, 1));
    assert_eq!(
        aborted,
        Some(vec![]),
        "listed, and empty, for read_committed"
    );
    let first_batch = batch(ProducerFields::idempotent(3, 0, 0), "before").len();
    assert_eq!(
        bytes, first_batch,
        "only the batch before the open transaction"
    );
    let (high_watermark, stable, aborted, bytes) = fetch(&mut client, "payments", 0, 0, 0);
    assert_eq!((high_watermark, stable), (3, 1));
    assert_eq!(aborted, None, "null for read_uncommitted");
    assert!(bytes > first_batch, "every batch");

    // A read_committed fetch at the last stable offset waits: nothing there is stable yet.
    let started = Instant::now();
    let (_, _, _, bytes) = fetch(&mut client, "payments", 1, READ_COMMITTED, 300);
    assert_eq!(bytes, 0);
    assert!(started.elapsed() >= Duration::from_millis(250), "it waited");

    assert_eq!(latest_committed(&mut client, "payments"), 1);
    assert_eq!(list_offset(&mut client, "payments", 0, -1), (0, 3));

    // The producer's plain batch while its transaction is open: INVALID_TXN_STATE.
    let during = ProducerFields::idempotent(producer.id, producer.epoch, 1);
    assert_eq!(
        produce(&mut client, "payments", 0, batch(during, "plain")).0,
        ResponseError::InvalidTxnState.code()
    );

    let request = DescribeProducersRequest::default().with_topics(vec![
        describe_producers_request::TopicRequest::default()
            .with_name(name("payments"))
            .with_partition_indexes(vec![0, 5]),
    ]);
    let response: DescribeProducersResponse = client.call(ApiKey::DescribeProducers, 0, &request);
    let partitions = &response.topics[0].partitions;
    assert_eq!(partitions[0].error_code, 0);
    let producers: Vec<(i64, i32, i64)> = partitions[0]
        .active_producers
        .iter()
        .map(|producer| {
            (
                producer.producer_id.0,
                producer.last_sequence,
                producer.current_txn_start_offset,
            )
        })
        .collect();
    let mut expected = vec![(3, 1, -1), (producer.id, 0, 1)];
    expected.sort_unstable();
    let mut producers = producers;
    producers.sort_unstable();
    assert_eq!(producers, expected);
    assert_eq!(
        partitions[1].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
}
