//! Offsets committed inside a transaction, end to end on a broker alone of two shards:
//! TxnOffsetCommit over the wire keeps them pending (OffsetFetch answers the previous offset,
//! or UNSTABLE_OFFSET_COMMIT with `require_stable`); the transaction's end in the groups
//! (`complete_transaction`, as the marker writer calls it, run on a shard of the broker)
//! commits or drops them; `__consumer_offsets` holds them as Kafka writes them (a
//! transactional batch of the producer, then its control batch); and a restart between the
//! commit and the marker loads them back pending.

mod common;

use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};

use common::{create_topic, fetch, Client, ShardHook, TestBroker, DEADLINE};
use engine::batch::{self, BatchHeader, TransactionMarker};
use engine::catalog::OFFSETS_TOPIC;
use engine::LogConfig;
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use net::broker::Broker;
use net::groups::transactions::complete_transaction;
use net::transactions::markers::MarkerError;

const GROUP: &str = "transform";
const TOPIC: &str = "input";
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// Work for shard 0, with its broker.
type Task = Box<dyn FnOnce(Rc<Broker>) -> LocalBoxFuture<'static, ()> + Send>;

/// The broker, and a way into its shard 0.
struct Harness {
    broker: TestBroker,
    tasks: futures::channel::mpsc::UnboundedSender<Task>,
}

impl Harness {
    fn start(data: tempfile::TempDir) -> Harness {
        let (tasks, received) = futures::channel::mpsc::unbounded::<Task>();
        let received = Arc::new(Mutex::new(Some(received)));
        let hook: ShardHook = Arc::new(move |broker: Rc<Broker>| {
            if broker.context.shard_id() != 0 {
                return;
            }
            let Some(mut received) = received.lock().unwrap().take() else {
                return;
            };
            glommio::spawn_local(async move {
                while let Some(task) = received.next().await {
                    task(broker.clone()).await;
                }
            })
            .detach();
        });
        let broker = TestBroker::start_hooked(data, 2, LogConfig::default(), Some(hook));
        Harness { broker, tasks }
    }

    fn restart(self) -> Harness {
        Harness::start(self.broker.stop())
    }

    /// The end of `marker`'s transaction in the group's `__consumer_offsets` partition, as the
    /// marker writer asks for it.
    fn complete(&self, marker: TransactionMarker) -> Result<(), MarkerError> {
        let (reply, answer) = mpsc::channel();
        let partition = offsets_partition();
        let task: Task = Box::new(move |broker| {
            Box::pin(async move {
                let _ = reply.send(complete_transaction(&broker, partition, marker).await);
            })
        });
        self.tasks.unbounded_send(task).unwrap();
        answer.recv_timeout(DEADLINE).expect("an answer")
    }
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn offsets_partition() -> i32 {
    // The broker's default partition count of `__consumer_offsets`.
    net::groups::offsets_partition_for(GROUP, 16) as i32
}

fn marker(producer_id: i64, producer_epoch: i16, committed: bool) -> TransactionMarker {
    TransactionMarker {
        producer_id,
        producer_epoch,
        coordinator_epoch: 0,
        committed,
    }
}

/// TxnOffsetCommit (`version`) of `offsets` by `producer_id`; the error code of each
/// partition, in the request's order.
fn txn_commit(
    client: &mut Client,
    version: i16,
    producer_id: i64,
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
        .with_transactional_id(TransactionalId(text("transform-1")))
        .with_group_id(GroupId(text(GROUP)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(0)
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
    let harness = Harness::start(tempfile::tempdir().unwrap());
    let mut client = harness.broker.connect();
    assert_eq!(create_topic(&mut client, TOPIC, 2), 0);
    commit(&mut client, 0, 5);

    let codes = txn_commit(
        &mut client,
        3,
        1_000,
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

    assert_eq!(
        harness.complete(marker(1_000, -1, true)).unwrap_err().code,
        INVALID_PRODUCER_EPOCH,
        "a fenced epoch's marker"
    );
    harness.complete(marker(1_000, 0, true)).unwrap();
    assert_eq!(fetch_offsets(&mut client, true), [(0, 10), (0, 20)]);

    // As Kafka writes them: the producer's transactional batch, then its COMMIT marker.
    let batches = offsets_log(&mut client);
    let (transactional, marker_batch) = (&batches[batches.len() - 2], &batches[batches.len() - 1]);
    assert!(transactional.0.is_transactional() && !transactional.0.is_control());
    assert_eq!(
        (transactional.0.producer_id, transactional.0.records_count),
        (1_000, 2)
    );
    assert_eq!(marker_batch.1, Some(marker(1_000, 0, true)));

    // Version 0 (no member), a second transaction of the same producer, then a restart.
    assert_eq!(txn_commit(&mut client, 0, 1_000, &[(TOPIC, 0, 11)]), [0]);
    harness.complete(marker(1_000, 0, true)).unwrap();
    let harness = harness.restart();
    let mut client = harness.broker.connect();
    assert_eq!(fetch_offsets(&mut client, true), [(0, 11), (0, 20)]);
}

#[test]
fn an_open_transaction_survives_a_restart_and_its_abort_drops_its_offsets() {
    let harness = Harness::start(tempfile::tempdir().unwrap());
    let mut client = harness.broker.connect();
    assert_eq!(create_topic(&mut client, TOPIC, 2), 0);
    commit(&mut client, 0, 5);
    assert_eq!(
        txn_commit(&mut client, 4, 2_000, &[(TOPIC, 0, 30), (TOPIC, 1, 40)]),
        [0, 0]
    );

    let harness = harness.restart();
    let mut client = harness.broker.connect();
    assert_eq!(
        fetch_offsets(&mut client, true),
        [(UNSTABLE_OFFSET_COMMIT, -1), (UNSTABLE_OFFSET_COMMIT, -1)],
        "still pending after the load"
    );
    harness.complete(marker(2_000, 0, false)).unwrap();
    assert_eq!(fetch_offsets(&mut client, true), [(0, 5), (0, -1)]);

    let harness = harness.restart();
    let mut client = harness.broker.connect();
    assert_eq!(fetch_offsets(&mut client, true), [(0, 5), (0, -1)]);
}
