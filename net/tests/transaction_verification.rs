//! KIP-890 part 1 over the wire, on a broker alone of two shards: a transactional producer's
//! batch for a partition that is not in its transaction is refused and not written; once
//! AddPartitionsToTxn added the partition, it is taken; and a late batch of a transaction that
//! was aborted (by EndTxn, or by a new producer instance's fence, as a timeout does) is refused,
//! never visible to read_committed, and opens no transaction that would hold the last stable
//! offset back. Also: the next transaction's AddPartitionsToTxn, sent while the markers of the
//! previous one are written, waits for them instead of being refused.

mod common;

use std::time::{Duration, Instant};

use common::{
    add_partition_to_transaction, create_topic, end_transaction, init_producer, list_offset, name,
    produce_request, Client, Producer, TestBroker, DEADLINE,
};
use engine::batch::build::{self, ProducerFields, TestRecord};
use engine::LogConfig;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

const TOPIC: &str = "ledger";
const TRANSACTIONAL_ID: &str = "ledger-writer";
const READ_COMMITTED: i8 = 1;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn add_partition(client: &mut Client, producer: Producer, partition: i32) {
    add_partition_to_transaction(client, TRANSACTIONAL_ID, producer, TOPIC, partition);
}

/// Produces `producer`'s transactional batch (`sequence`) to `partition` as its transactional
/// id; returns (error code, base offset).
fn produce_transactional(
    client: &mut Client,
    producer: Producer,
    partition: i32,
    sequence: i32,
) -> (i16, i64) {
    produce_as(
        client,
        producer,
        partition,
        sequence,
        Some(TRANSACTIONAL_ID),
    )
}

/// A transactional batch of `producer`, in a Produce request naming `transactional_id` (or
/// none); its answer's error code and base offset.
fn produce_as(
    client: &mut Client,
    producer: Producer,
    partition: i32,
    sequence: i32,
    transactional_id: Option<&str>,
) -> (i16, i64) {
    let fields = ProducerFields::idempotent(producer.id, producer.epoch, sequence)
        .with_transaction_bits(false);
    let record = TestRecord {
        key: None,
        value: format!("sequence {sequence}").into_bytes(),
        timestamp_ms: 1_000,
    };
    let request = produce_request(TOPIC, partition, build::batch_from(&[record], fields), -1)
        .with_transactional_id(transactional_id.map(|id| TransactionalId(text(id))));
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
    let answer = &response.responses[0].partition_responses[0];
    (answer.error_code, answer.base_offset)
}

/// The log end (read_uncommitted LATEST) and the last stable offset (read_committed LATEST).
fn ends(client: &mut Client, partition: i32) -> (i64, i64) {
    let (code, log_end) = list_offset(client, TOPIC, partition, -1);
    assert_eq!(code, 0);
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(READ_COMMITTED)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 6, &request);
    let answer = &response.topics[0].partitions[0];
    assert_eq!(answer.error_code, 0);
    (log_end, answer.offset)
}

/// Waits until the partition ends at `end` with its last stable offset there too: no
/// transaction is open (the markers, written after EndTxn is answered, are in). Both offsets
/// are asked for, one after the other, so only the expected end tells the wait is over.
fn wait_stable_at(client: &mut Client, partition: i32, end: i64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (log_end, stable) = ends(client, partition);
        if (log_end, stable) == (end, end) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partition {partition} ends at {log_end}, stable {stable}, not {end}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_batch_for_a_partition_outside_the_transaction_is_refused_and_one_added_is_taken() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, TOPIC, 2), 0);
    let producer = init_producer(&mut client, TRANSACTIONAL_ID);

    // No AddPartitionsToTxn: the producer has no transaction, let alone on this partition.
    assert_eq!(
        produce_transactional(&mut client, producer, 0, 0).0,
        ResponseError::InvalidTxnState.code()
    );
    assert_eq!(ends(&mut client, 0), (0, 0), "nothing was written");

    // A transaction on partition 1 only: partition 0 is still refused.
    add_partition(&mut client, producer, 1);
    assert_eq!(produce_transactional(&mut client, producer, 1, 0), (0, 0));
    assert_eq!(
        produce_transactional(&mut client, producer, 0, 0).0,
        ResponseError::InvalidTxnState.code()
    );
    assert_eq!(ends(&mut client, 0), (0, 0));

    // Added: taken, and the next batch (the transaction open there now) too.
    add_partition(&mut client, producer, 0);
    assert_eq!(produce_transactional(&mut client, producer, 0, 0), (0, 0));
    assert_eq!(produce_transactional(&mut client, producer, 0, 1), (0, 1));
    assert_eq!(
        ends(&mut client, 0),
        (2, 0),
        "open: held back from read_committed"
    );
    end_transaction(&mut client, TRANSACTIONAL_ID, producer, true);
    // Two batches and the COMMIT marker.
    wait_stable_at(&mut client, 0, 3);
    broker.stop();
}

/// Kafka refuses a Produce carrying transactional batches without the producer's transactional
/// id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED): no coordinator could verify them, and none would
/// ever end the transaction they would open, which would hold read_committed consumers back.
#[test]
fn transactional_batches_without_the_transactional_id_are_refused() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, TOPIC, 2), 0);
    let producer = init_producer(&mut client, TRANSACTIONAL_ID);
    add_partition(&mut client, producer, 0);
    assert_eq!(
        produce_as(&mut client, producer, 0, 0, None).0,
        ResponseError::TransactionalIdAuthorizationFailed.code()
    );
    assert_eq!(ends(&mut client, 0), (0, 0), "nothing was written");
    // The same batch naming its transactional id is taken.
    assert_eq!(
        produce_as(&mut client, producer, 0, 0, Some(TRANSACTIONAL_ID)),
        (0, 0)
    );
    end_transaction(&mut client, TRANSACTIONAL_ID, producer, true);
    wait_stable_at(&mut client, 0, 2);
    broker.stop();
}

#[test]
fn a_late_batch_of_an_aborted_transaction_is_refused_and_leaves_nothing_open() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, TOPIC, 2), 0);

    // Aborted by EndTxn: the batch that was still on its way arrives after the markers.
    let producer = init_producer(&mut client, TRANSACTIONAL_ID);
    add_partition(&mut client, producer, 0);
    assert_eq!(produce_transactional(&mut client, producer, 0, 0), (0, 0));
    end_transaction(&mut client, TRANSACTIONAL_ID, producer, false);
    // The batch and the ABORT marker.
    let aborted_end = 2;
    wait_stable_at(&mut client, 0, aborted_end);
    assert_eq!(
        produce_transactional(&mut client, producer, 0, 1).0,
        ResponseError::InvalidTxnState.code(),
        "the late batch of the aborted transaction"
    );
    assert_eq!(
        ends(&mut client, 0),
        (aborted_end, aborted_end),
        "not written, and no transaction holds the last stable offset back"
    );

    // Aborted by the next instance's InitProducerId (a bumped epoch, as the coordinator's
    // timeout does): the hung instance's late batch is fenced.
    add_partition(&mut client, producer, 1);
    assert_eq!(produce_transactional(&mut client, producer, 1, 0), (0, 0));
    let next = init_producer(&mut client, TRANSACTIONAL_ID);
    assert!(next.epoch > producer.epoch);
    let fenced_end = 2;
    wait_stable_at(&mut client, 1, fenced_end);
    assert_eq!(
        produce_transactional(&mut client, producer, 1, 1).0,
        ResponseError::InvalidProducerEpoch.code()
    );
    assert_eq!(produce_transactional(&mut client, producer, 0, 2).0, {
        ResponseError::InvalidProducerEpoch.code()
    });
    assert_eq!(ends(&mut client, 1), (fenced_end, fenced_end));
    assert_eq!(ends(&mut client, 0), (aborted_end, aborted_end));

    // The new instance writes as usual.
    add_partition(&mut client, next, 0);
    assert_eq!(
        produce_transactional(&mut client, next, 0, 0),
        (0, aborted_end)
    );
    end_transaction(&mut client, TRANSACTIONAL_ID, next, true);
    wait_stable_at(&mut client, 0, aborted_end + 2);
    broker.stop();
}

/// The next transaction's AddPartitionsToTxn, sent right after EndTxn while the markers of the
/// one that ended are still being written, is held until they are and then answered, not
/// refused with CONCURRENT_TRANSACTIONS (which librdkafka answers by waiting 20 ms: in a
/// cluster, most transactions paid that).
#[test]
fn the_next_transactions_partitions_are_added_once_the_markers_are_written_not_refused() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, TOPIC, 2), 0);
    let producer = init_producer(&mut client, TRANSACTIONAL_ID);
    let add_both = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(text(TRANSACTIONAL_ID)))
        .with_v3_and_below_producer_id(ProducerId(producer.id))
        .with_v3_and_below_producer_epoch(producer.epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(vec![0, 1])]);
    add_partition(&mut client, producer, 0);
    add_partition(&mut client, producer, 1);
    for round in 0..20 {
        for partition in [0, 1] {
            assert_eq!(
                produce_transactional(&mut client, producer, partition, round).0,
                0,
                "round {round}"
            );
        }
        end_transaction(&mut client, TRANSACTIONAL_ID, producer, true);
        let response: AddPartitionsToTxnResponse =
            client.call(ApiKey::AddPartitionsToTxn, 3, &add_both);
        let codes: Vec<i16> = response.results_by_topic_v3_and_below[0]
            .results_by_partition
            .iter()
            .map(|partition| partition.partition_error_code)
            .collect();
        assert_eq!(
            codes,
            [0, 0],
            "round {round}: the next transaction's partitions"
        );
    }
    end_transaction(&mut client, TRANSACTIONAL_ID, producer, false);
    broker.stop();
}
