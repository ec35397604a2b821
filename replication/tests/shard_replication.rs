//! Replicated partitions inside real shard runtimes: three brokers (each an engine runtime of
//! two shards with its own data directory) run a Raft group per partition over the real
//! transport. Producer batches sent through any shard reach the owning shard and its group;
//! only leaders take them (others answer NOT_LEADER with a hint), acks=all returns once a
//! majority has them, consumers read from leaders only, and every replica of a partition ends
//! up with the same log, also after a leader's broker stops.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use engine::batch::{self, build, BatchError};
use engine::shard::listen::ListenReservation;
use engine::shard::{AppendKind, Durability, PartitionId};
use engine::LogError;
use ferrite_replication::votes::RecoveredVotes;
use ferrite_replication::NodeId;
use support::shard_broker::ShardBroker;
use support::{loopback_peers, wait_until, DEADLINE};

const PARTITIONS: u32 = 4;

enum Command {
    /// Produce a batch (as a producer's request carries it) with acks=all.
    Produce {
        partition: u32,
        batch: Vec<u8>,
        reply: mpsc::Sender<Result<u64, LogError>>,
    },
    /// The values a consumer reads from this broker (an error where it does not lead).
    Read {
        partition: u32,
        reply: mpsc::Sender<Result<Vec<String>, LogError>>,
    },
}

type Broker = ShardBroker<Command>;

fn partition(number: u32) -> PartitionId {
    PartitionId::new("orders", number)
}

fn values(bytes: &[u8]) -> Vec<String> {
    let mut values = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let header = batch::BatchHeader::parse(rest).unwrap();
        let size = header.size_bytes as usize;
        if !header.is_control() {
            for record in batch::plain_records(&rest[..size]).unwrap() {
                values.push(String::from_utf8(record.unwrap().value.unwrap().to_vec()).unwrap());
            }
        }
        rest = &rest[size..];
    }
    values
}

fn start(node_id: NodeId, dir: PathBuf, peers: BTreeMap<NodeId, SocketAddr>) -> Broker {
    let partitions = (0..PARTITIONS).map(partition).collect();
    Broker::start(
        node_id,
        dir,
        peers,
        partitions,
        |_| {},
        |context, replication, command| async move {
            match command {
                Command::Produce {
                    partition: number,
                    batch,
                    reply,
                } => {
                    let batch = BytesMut::from(&batch[..]);
                    let mut pending = replication
                        .submit_appends(
                            vec![(partition(number), batch)],
                            AppendKind::Produced,
                            Durability::Durable,
                        )
                        .await;
                    let appended = pending.pop().expect("one wait per batch").await;
                    let result = appended.map(|appended| appended.base_offset);
                    let _ = reply.send(result);
                }
                Command::Read {
                    partition: number,
                    reply,
                } => {
                    let mut all = Vec::new();
                    let mut offset = 0;
                    let result = loop {
                        match context.read(partition(number), offset, 1 << 20).await {
                            Err(error) => break Err(error),
                            Ok(read) => {
                                let bytes = read.data.to_vec().unwrap();
                                if bytes.is_empty() {
                                    break Ok(all);
                                }
                                all.extend(values(&bytes));
                                offset = read.offset_next;
                            }
                        }
                    };
                    let _ = reply.send(result);
                }
            }
        },
    )
}

/// A producer's batch of one record holding `value`.
fn batch_of(value: &[u8]) -> Vec<u8> {
    build::batch(&[build::TestRecord {
        key: None,
        value: value.to_vec(),
        timestamp_ms: 0,
    }])
}

impl Broker {
    fn produce(&self, number: u32, value: &str) -> Result<u64, LogError> {
        self.produce_batch(number, batch_of(value.as_bytes()))
    }

    fn produce_batch(&self, number: u32, batch: Vec<u8>) -> Result<u64, LogError> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Produce {
            partition: number,
            batch,
            reply,
        });
        answer.recv_timeout(DEADLINE).expect("an answer")
    }

    fn read(&self, number: u32) -> Result<Vec<String>, LogError> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Read {
            partition: number,
            reply,
        });
        answer.recv_timeout(DEADLINE).expect("an answer")
    }
}

/// Produces `value` to whichever broker leads `number`, following NOT_LEADER hints as a
/// client does; returns the leader.
fn produce_to_leader(brokers: &BTreeMap<NodeId, Broker>, number: u32, value: &str) -> NodeId {
    let deadline = Instant::now() + DEADLINE;
    let mut candidate = *brokers.keys().next().unwrap();
    loop {
        match brokers[&candidate].produce(number, value) {
            Ok(_) => return candidate,
            Err(LogError::NotLeader {
                leader: Some(leader),
            }) if brokers.contains_key(&leader) => candidate = leader,
            Err(LogError::NotLeader { .. }) | Err(LogError::Closed) => {
                let ids: Vec<NodeId> = brokers.keys().copied().collect();
                let next = ids.iter().position(|id| *id == candidate).unwrap() + 1;
                candidate = ids[next % ids.len()];
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("produce to {candidate}: {error}"),
        }
        assert!(
            Instant::now() < deadline,
            "no leader took partition {number}"
        );
    }
}

/// Brokers 1 to 3 on loopback, each with its own data directory, which outlives a broker's
/// stop so it can start again.
struct Cluster {
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
    _reservations: Vec<ListenReservation>,
    peers: BTreeMap<NodeId, SocketAddr>,
}

impl Cluster {
    fn new() -> (Cluster, BTreeMap<NodeId, Broker>) {
        let dirs = (1..=3)
            .map(|id| (id, tempfile::tempdir().unwrap()))
            .collect();
        let (reservations, peers) = loopback_peers(3);
        let cluster = Cluster {
            dirs,
            _reservations: reservations,
            peers,
        };
        let brokers = (1..=3).map(|id| (id, cluster.start(id))).collect();
        (cluster, brokers)
    }

    fn start(&self, id: NodeId) -> Broker {
        start(id, self.dirs[&id].path().into(), self.peers.clone())
    }
}

#[test]
fn partitions_replicate_across_brokers_and_shards_and_fail_over() {
    let (cluster, mut brokers) = Cluster::new();

    let mut expected: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut leaders = BTreeMap::new();
    for round in 0..20 {
        for number in 0..PARTITIONS {
            let value = format!("p{number}-{round}");
            leaders.insert(number, produce_to_leader(&brokers, number, &value));
            expected.entry(number).or_default().push(value);
        }
    }
    for number in 0..PARTITIONS {
        let leader = leaders[&number];
        // Every broker's table names the leader (its own replica's view, and the reports).
        for broker in brokers.values() {
            wait_until("the leader known everywhere", || {
                (broker.leaders.leader(&partition(number)).map(|(id, _)| id) == Some(leader))
                    .then_some(())
            });
        }
        assert_eq!(brokers[&leader].read(number).unwrap(), expected[&number]);
        for (id, broker) in &brokers {
            if *id != leader {
                assert!(
                    matches!(broker.read(number), Err(LogError::NotLeader { .. })),
                    "a follower refuses consumers"
                );
            }
        }
    }

    // The broker leading partition 0 stops; the others elect new leaders and go on.
    let stopped = leaders[&0];
    brokers.remove(&stopped).unwrap().stop();
    for round in 20..30 {
        for number in 0..PARTITIONS {
            let value = format!("p{number}-{round}");
            let leader = produce_to_leader(&brokers, number, &value);
            assert_ne!(leader, stopped);
            leaders.insert(number, leader);
            expected.entry(number).or_default().push(value);
        }
    }
    // It comes back and catches up: every replica reads the same once it leads.
    brokers.insert(stopped, cluster.start(stopped));
    for number in 0..PARTITIONS {
        let leader = leaders[&number];
        assert_eq!(brokers[&leader].read(number).unwrap(), expected[&number]);
    }
    for broker in brokers.into_values() {
        broker.stop();
    }
}

/// The term in a replica's `raft-state.json`.
fn state_file_term(dir: &std::path::Path, number: u32) -> u64 {
    let path = dir
        .join(partition(number).directory_name())
        .join("raft-state.json");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    state["term"].as_u64().unwrap()
}

/// A failover's terms and votes go to the shards' vote logs (one sync covers every vote of a
/// moment), not to each partition's `raft-state.json` (two syncs and a rename each, which made
/// a thousand elections after a broker's death take many seconds), and what the brokers left
/// in them when they stopped (nothing is written at a stop: as after a kill -9) is what the
/// next start reads: every survivor's vote in the new leader's term.
#[test]
fn a_failovers_terms_and_votes_are_in_the_vote_logs_when_the_brokers_stop() {
    let (cluster, mut brokers) = Cluster::new();
    let mut leaders = BTreeMap::new();
    for number in 0..PARTITIONS {
        leaders.insert(number, produce_to_leader(&brokers, number, "before"));
    }
    let stopped = leaders[&0];
    brokers.remove(&stopped).unwrap().stop();
    for number in 0..PARTITIONS {
        leaders.insert(number, produce_to_leader(&brokers, number, "after"));
    }
    let leader = leaders[&0];
    let (_, term) = wait_until("the new leader's term known", || {
        brokers[&leader].leaders.leader(&partition(0))
    });
    let survivors: Vec<NodeId> = brokers.keys().copied().collect();
    for broker in brokers.into_values() {
        broker.stop();
    }
    for id in survivors {
        let dir = cluster.dirs[&id].path();
        assert!(
            state_file_term(dir, 0) < term,
            "broker {id}: the election of term {term} rewrote raft-state.json"
        );
        let votes = RecoveredVotes::recover(dir).unwrap();
        let vote = votes.vote(&partition(0).directory_name()).unwrap();
        assert!(
            vote.term >= term,
            "broker {id}: {vote:?} is older than term {term}"
        );
        if vote.term == term {
            assert_eq!(
                vote.voted_for,
                Some(leader),
                "broker {id} voted for the leader"
            );
        }
    }
}

#[test]
fn a_batch_the_log_would_refuse_is_refused_before_the_group_numbers_it() {
    let (_cluster, brokers) = Cluster::new();
    let leader = produce_to_leader(&brokers, 0, "before");
    // A partition whose replica no broker runs: no group to number it.
    assert!(
        matches!(
            brokers[&leader].produce(PARTITIONS, "nowhere"),
            Err(LogError::NotLeader { leader: None })
        ),
        "a produce without a replica is refused"
    );
    // One record of 2 MiB: over the default max.message.bytes (1 MiB and a little).
    let large = batch_of(&vec![7u8; 2 << 20]);
    let mut corrupt = batch_of(b"flipped");
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let refused = |result: Result<u64, LogError>, batch: &str| match result {
        Err(LogError::InvalidBatch(error)) => error,
        other => panic!("{batch} was answered {other:?}"),
    };
    let too_large = |result| {
        let error = refused(result, "a 2 MiB batch");
        assert!(matches!(error, BatchError::TooLarge { .. }), "{error}");
    };
    let bad_crc = |result| {
        let error = refused(result, "a corrupt batch");
        assert!(matches!(error, BatchError::CrcMismatch { .. }), "{error}");
    };
    for round in 0..3 {
        too_large(brokers[&leader].produce_batch(0, large.clone()));
        bad_crc(brokers[&leader].produce_batch(0, corrupt.clone()));
        // The partition goes on taking produces at once (it used to stop for good).
        let started = Instant::now();
        brokers[&leader]
            .produce(0, &format!("after-{round}"))
            .expect("the leader goes on");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // A follower refuses them alike (checked before it looks at who leads).
    for (id, broker) in &brokers {
        if *id != leader {
            too_large(broker.produce_batch(0, large.clone()));
            bad_crc(broker.produce_batch(0, corrupt.clone()));
        }
    }
    assert_eq!(
        brokers[&leader].read(0).unwrap(),
        ["before", "after-0", "after-1", "after-2"],
        "nothing refused was stored"
    );
    for broker in brokers.into_values() {
        broker.stop();
    }
}
