//! Consumer groups over a replicated `__consumer_offsets` partition, inside real shard runtimes:
//! three brokers (each an engine runtime of two shards with its own data directory) run the
//! partition's Raft group over the real transport. Only the leader's broker coordinates: the
//! others refuse group calls with NOT_COORDINATOR; a commit is answered once a majority has it,
//! so when the leader's broker stops, the broker that leads next has it and answers with it,
//! a transaction's offsets and markers included.

// Replication's multi-broker test support: brokers of engine shards running replication.
#[path = "../../replication/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;

use engine::batch::TransactionMarker;
use engine::catalog::OFFSETS_TOPIC;
use engine::shard::PartitionId;
use ferrite_replication::NodeId;
use net::groups::shard::{
    CompleteTransaction, FetchOffsets, GroupRequest, GroupsConfig, ReplicatedOffsetsLog,
    ShardGroups,
};
use net::groups::{
    GroupError, OffsetCommit, OffsetCommitPartition, PartitionResults, TopicPartition,
    TransactionProducer, TxnOffsetCommit,
};
use support::shard_broker::ShardBroker;
use support::{loopback_peers, wait_until, DEADLINE};

const GROUP: &str = "billing";

type FetchAnswer = <FetchOffsets as GroupRequest>::Answer;

/// A group call for the test's broker, and where its answer goes.
enum Command {
    Commit(OffsetCommit, mpsc::Sender<PartitionResults>),
    TxnCommit(TxnOffsetCommit, mpsc::Sender<PartitionResults>),
    Complete(CompleteTransaction, mpsc::Sender<Result<(), GroupError>>),
    Fetch(FetchOffsets, mpsc::Sender<FetchAnswer>),
}

type Broker = ShardBroker<Command>;

fn offsets_partition() -> PartitionId {
    PartitionId::new(OFFSETS_TOPIC, 0)
}

fn start(node_id: NodeId, dir: PathBuf, peers: BTreeMap<NodeId, SocketAddr>) -> Broker {
    let groups = GroupsConfig {
        offsets_partitions: 1,
        ..GroupsConfig::default()
    };
    Broker::start(
        node_id,
        dir,
        peers,
        vec![offsets_partition()],
        move |context| {
            drop(ShardGroups::start(
                context,
                groups.clone(),
                Rc::new(ReplicatedOffsetsLog),
            ))
        },
        |_, _, command: Command| async move {
            let groups = ShardGroups::local().expect("started on every shard");
            match command {
                Command::Commit(commit, reply) => {
                    let _ = reply.send(groups.call(0, commit).await);
                }
                Command::TxnCommit(commit, reply) => {
                    let _ = reply.send(groups.call(0, commit).await);
                }
                Command::Complete(complete, reply) => {
                    let _ = reply.send(groups.call(0, complete).await);
                }
                Command::Fetch(fetch, reply) => {
                    let _ = reply.send(groups.call(0, fetch).await);
                }
            }
        },
    )
}

impl Broker {
    fn commit_offsets(&self, commit: OffsetCommit) -> PartitionResults {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Commit(commit, reply));
        answer.recv_timeout(DEADLINE).expect("an answer")
    }

    fn fetch_offsets(&self, fetch: FetchOffsets) -> FetchAnswer {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Fetch(fetch, reply));
        answer.recv_timeout(DEADLINE).expect("an answer")
    }

    /// A simple commit (no membership) of `offset` for the group's one partition.
    fn commit(&self, offset: i64) -> Result<(), GroupError> {
        let commit = OffsetCommit {
            api_version: net::groups::OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
            group_id: GROUP.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            partitions: vec![OffsetCommitPartition {
                partition: topic_partition(),
                offset,
                leader_epoch: -1,
                metadata: None,
            }],
        };
        for (_, result) in self.commit_offsets(commit)? {
            result?;
        }
        Ok(())
    }

    /// The group's committed offset of its partition.
    fn committed(&self) -> Result<Option<i64>, GroupError> {
        let fetch = FetchOffsets {
            group_id: GROUP.into(),
            partitions: Some(vec![topic_partition()]),
            member: None,
            require_stable: false,
        };
        Ok(self
            .fetch_offsets(fetch)?
            .into_iter()
            .find_map(|(_, committed)| committed.ok().flatten().map(|c| c.offset)))
    }

    /// Whether an open transaction commits an offset of the group's partition (OffsetFetch with
    /// `require_stable` is refused for it).
    fn pending(&self) -> Result<bool, GroupError> {
        let fetch = FetchOffsets {
            group_id: GROUP.into(),
            partitions: Some(vec![topic_partition()]),
            member: None,
            require_stable: true,
        };
        let fetched = self.fetch_offsets(fetch)?;
        Ok(fetched[0].1 == Err(GroupError::UnstableOffsetCommit))
    }

    /// `producer`'s transaction commits `offset` for the group's partition.
    fn txn_commit(&self, producer: TransactionProducer, offset: i64) -> Result<(), GroupError> {
        let commit = TxnOffsetCommit {
            group_id: GROUP.into(),
            producer,
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            partitions: vec![OffsetCommitPartition {
                partition: topic_partition(),
                offset,
                leader_epoch: -1,
                metadata: None,
            }],
        };
        let (reply, answer) = mpsc::channel();
        self.send(Command::TxnCommit(commit, reply));
        for (_, result) in answer.recv_timeout(DEADLINE).expect("an answer")? {
            result?;
        }
        Ok(())
    }

    /// `producer`'s transaction ends in the partition's groups.
    fn complete(&self, producer: TransactionProducer, committed: bool) -> Result<(), GroupError> {
        let marker = TransactionMarker {
            producer_id: producer.producer_id,
            producer_epoch: producer.producer_epoch,
            coordinator_epoch: 1,
            committed,
        };
        let (reply, answer) = mpsc::channel();
        self.send(Command::Complete(CompleteTransaction { marker }, reply));
        answer.recv_timeout(DEADLINE).expect("an answer")
    }
}

fn topic_partition() -> TopicPartition {
    TopicPartition {
        topic: "orders".into(),
        partition: 0,
    }
}

/// What a broker that cannot coordinate (yet) answers.
fn not_coordinating(error: GroupError) -> bool {
    matches!(
        error,
        GroupError::NotCoordinator | GroupError::CoordinatorLoadInProgress
    )
}

/// The broker that takes a commit of `offset`, trying each in turn as a client following
/// NOT_COORDINATOR does.
fn commit_anywhere(brokers: &BTreeMap<NodeId, Broker>, offset: i64) -> NodeId {
    wait_until("a broker to coordinate the group", || {
        brokers
            .iter()
            .find_map(|(id, broker)| match broker.commit(offset) {
                Ok(()) => Some(*id),
                Err(error) if not_coordinating(error) => None,
                Err(error) => panic!("broker {id} refused a commit: {error}"),
            })
    })
}

#[test]
fn only_the_leader_coordinates_and_the_next_leader_has_its_commits() {
    let dirs: BTreeMap<NodeId, tempfile::TempDir> = (1..=3)
        .map(|id| (id, tempfile::tempdir().unwrap()))
        .collect();
    let (reservations, peers) = loopback_peers(3);
    let mut brokers: BTreeMap<NodeId, Broker> = (1..=3)
        .map(|id| (id, start(id, dirs[&id].path().into(), peers.clone())))
        .collect();

    let coordinator = commit_anywhere(&brokers, 42);
    assert_eq!(brokers[&coordinator].committed(), Ok(Some(42)));
    for (id, broker) in &brokers {
        if *id != coordinator {
            assert_eq!(
                broker.committed(),
                Err(GroupError::NotCoordinator),
                "broker {id} follows, so it refuses group calls"
            );
            assert_eq!(broker.commit(7), Err(GroupError::NotCoordinator));
        }
    }

    // The coordinator's broker stops; the next leader loads the group from its copy of the log.
    brokers.remove(&coordinator).unwrap().stop();
    let (successor, committed) = wait_until("another broker to coordinate the group", || {
        brokers
            .iter()
            .find_map(|(id, broker)| match broker.committed() {
                Ok(committed) => Some((*id, committed)),
                Err(error) if not_coordinating(error) => None,
                Err(error) => panic!("broker {id} refused an offset fetch: {error}"),
            })
    });
    assert_ne!(successor, coordinator);
    assert_eq!(
        committed,
        Some(42),
        "the commit acknowledged before the stop"
    );
    assert_eq!(commit_anywhere(&brokers, 43), successor);
    assert_eq!(brokers[&successor].committed(), Ok(Some(43)));

    // The stopped broker comes back: whoever coordinates then has everything committed.
    brokers.insert(
        coordinator,
        start(coordinator, dirs[&coordinator].path().into(), peers.clone()),
    );
    let latest = commit_anywhere(&brokers, 44);
    assert_eq!(brokers[&latest].committed(), Ok(Some(44)));
    for broker in brokers.into_values() {
        broker.stop();
    }
    drop(reservations);
}

#[test]
fn a_transactions_offsets_and_marker_are_replicated_with_the_groups() {
    let dirs: BTreeMap<NodeId, tempfile::TempDir> = (1..=3)
        .map(|id| (id, tempfile::tempdir().unwrap()))
        .collect();
    let (reservations, peers) = loopback_peers(3);
    let mut brokers: BTreeMap<NodeId, Broker> = (1..=3)
        .map(|id| (id, start(id, dirs[&id].path().into(), peers.clone())))
        .collect();
    let committed_first = TransactionProducer {
        producer_id: 7,
        producer_epoch: 0,
    };
    let open_at_stop = TransactionProducer {
        producer_id: 8,
        producer_epoch: 0,
    };

    let coordinator = commit_anywhere(&brokers, 42);
    let leader = &brokers[&coordinator];
    leader.txn_commit(committed_first, 50).unwrap();
    assert_eq!(leader.committed(), Ok(Some(42)), "pending until the marker");
    assert_eq!(leader.pending(), Ok(true));
    leader.complete(committed_first, true).unwrap();
    assert_eq!(leader.committed(), Ok(Some(50)));
    leader.txn_commit(open_at_stop, 60).unwrap();
    for (id, broker) in &brokers {
        if *id != coordinator {
            assert_eq!(
                broker.complete(open_at_stop, true),
                Err(GroupError::NotCoordinator),
                "broker {id} follows: the marker goes to the leader"
            );
        }
    }

    // The next leader has the committed transaction's offset, and the open one still pending.
    brokers.remove(&coordinator).unwrap().stop();
    let successor = wait_until("another broker to coordinate the group", || {
        brokers
            .iter()
            .find_map(|(id, broker)| match broker.committed() {
                Ok(committed) => Some((*id, committed)),
                Err(error) if not_coordinating(error) => None,
                Err(error) => panic!("broker {id} refused an offset fetch: {error}"),
            })
    });
    assert_eq!(successor.1, Some(50));
    let successor = &brokers[&successor.0];
    assert_eq!(successor.pending(), Ok(true));
    successor.complete(open_at_stop, false).unwrap();
    assert_eq!(successor.pending(), Ok(false));
    assert_eq!(
        successor.committed(),
        Ok(Some(50)),
        "the aborted offset is dropped"
    );
    for broker in brokers.into_values() {
        broker.stop();
    }
    drop(reservations);
}
