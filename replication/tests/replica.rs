//! Partition replicas over real partition logs and the real transport: three "brokers", each a
//! glommio executor on its own thread with its own data directory, talking over loopback TCP.
//! A leader is elected, acks=all produces commit on a majority, every log ends up byte for byte
//! the same, a killed leader is replaced, and the restarted one catches up; a group moves to
//! other voters one membership change at a time while it takes produces; a replica whose log
//! is damaged on disk (a follower's, found when it opens it; the leader's, found reading it for
//! a follower) gets the damaged entries back from another replica.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use engine::batch::{self, build, CheckedBatch};
use engine::shard::listen::ListenReservation;
use engine::{LogConfig, PartitionLog, SystemClock};
use ferrite_replication::replica::{Acks, Outbox, PartitionReplica, ReplicaConfig};
use ferrite_replication::transport::{Received, Transport, TransportConfig};
use ferrite_replication::{Message, NodeId, RoleKind};
use support::{loopback_peers, wait_until, DEADLINE};

const TICK: Duration = Duration::from_millis(10);

/// What a broker thread reports after every tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    role: RoleKind,
    term: u64,
    commit_index: u64,
    log_end_offset: u64,
    /// It leads, and the group's committed voters are the target it was given.
    moved: bool,
    /// Its replica takes no part in the group just now (a disk fault).
    faulted: bool,
    /// Its replica faulted at least once since the broker started.
    ever_faulted: bool,
    /// The in-sync voters it reports as leader, one bit per node id.
    in_sync: u64,
}

enum Command {
    /// Produce a batch with acks=all; reply with its base offset or the error.
    Produce {
        value: String,
        reply: mpsc::Sender<Result<u64, String>>,
    },
    /// Every batch in the log, as stored.
    Dump { reply: mpsc::Sender<Vec<Vec<u8>>> },
    /// Move the group to these voters (a reassignment's target).
    Target(Vec<NodeId>),
    /// Stop as a crash does: nothing closed, nothing flushed.
    Crash,
}

struct Broker {
    thread: Option<JoinHandle<()>>,
    commands: mpsc::Sender<Command>,
    status: Arc<Mutex<Option<Status>>>,
}

/// The brokers cut off from the others: every message from or to one of them is lost.
type Isolated = Arc<Mutex<BTreeSet<NodeId>>>;

struct TransportOutbox {
    node_id: NodeId,
    transport: Rc<Transport<Message>>,
    isolated: Isolated,
}

impl Outbox for TransportOutbox {
    fn send(&self, to: NodeId, message: Message, payload: Bytes) {
        let isolated = self.isolated.lock().unwrap();
        if isolated.contains(&self.node_id) || isolated.contains(&to) {
            return;
        }
        drop(isolated);
        // Lost messages are part of Raft's model; a full queue drops the oldest.
        let _ = self.transport.send(to, &message, payload);
    }
}

fn log_config(min_insync_replicas: u32) -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        // Followers' fetches read the files, not memory (where damage on disk cannot be).
        tail_cache_bytes_max: 0,
        min_insync_replicas,
        ..LogConfig::default()
    }
}

impl Broker {
    fn start(
        node_id: NodeId,
        dir: PathBuf,
        peers: BTreeMap<NodeId, SocketAddr>,
        voters: Vec<NodeId>,
        isolated: Isolated,
        min_insync_replicas: u32,
    ) -> Broker {
        let (commands, received) = mpsc::channel();
        let status = Arc::new(Mutex::new(None));
        let reported = status.clone();
        let thread = std::thread::spawn(move || {
            glommio::LocalExecutorBuilder::default()
                .spawn(move || {
                    let config = log_config(min_insync_replicas);
                    let group = Group { peers, voters };
                    run_broker(node_id, dir, group, isolated, config, received, reported)
                })
                .unwrap()
                .join()
                .unwrap();
        });
        Broker {
            thread: Some(thread),
            commands,
            status,
        }
    }

    fn status(&self) -> Option<Status> {
        *self.status.lock().unwrap()
    }

    fn produce(&self, value: &str) -> Result<u64, String> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .send(Command::Produce {
                value: value.to_owned(),
                reply,
            })
            .unwrap();
        answer.recv_timeout(DEADLINE).expect("a produce answer")
    }

    fn dump(&self) -> Vec<Vec<u8>> {
        let (reply, answer) = mpsc::channel();
        self.commands.send(Command::Dump { reply }).unwrap();
        answer.recv_timeout(DEADLINE).expect("a dump")
    }

    fn target(&self, voters: &[NodeId]) {
        self.commands
            .send(Command::Target(voters.to_vec()))
            .unwrap();
    }

    fn crash(mut self) {
        self.commands.send(Command::Crash).unwrap();
        self.thread.take().unwrap().join().unwrap();
    }
}

/// Where a broker's peers are, and the voters its replica starts with.
struct Group {
    peers: BTreeMap<NodeId, SocketAddr>,
    voters: Vec<NodeId>,
}

async fn run_broker(
    node_id: NodeId,
    dir: PathBuf,
    Group { peers, voters }: Group,
    isolated: Isolated,
    log_config: LogConfig,
    commands: mpsc::Receiver<Command>,
    status: Arc<Mutex<Option<Status>>>,
) {
    let log = Rc::new(
        PartitionLog::open(&dir, log_config, Rc::new(SystemClock))
            .await
            .unwrap(),
    );
    let replica_slot: Rc<std::cell::RefCell<Option<PartitionReplica>>> = Default::default();
    let mut transport_config =
        TransportConfig::new("test", node_id, 0, peers[&node_id], peers.clone());
    transport_config.backoff_max = Duration::from_millis(100);
    let transport = Rc::new(
        Transport::<Message>::start(transport_config, {
            let replica_slot = replica_slot.clone();
            let isolated = isolated.clone();
            move |received: Received<Message>| {
                let cut = {
                    let isolated = isolated.lock().unwrap();
                    isolated.contains(&node_id) || isolated.contains(&received.from_node)
                };
                if cut {
                    return;
                }
                if let Some(replica) = &*replica_slot.borrow() {
                    replica.receive(received.from_node, received.message, received.payload);
                }
            }
        })
        .unwrap(),
    );
    let config = ReplicaConfig {
        node_id,
        initial_voters: voters,
        election_timeout_ticks_min: 30,
        begin_epoch_interval_ticks: 5,
        fetch_timeout_ticks: 20,
        fetch_wait_ticks: 10,
        fetch_bytes_max: 256 << 10,
        seed: node_id * 7919 + std::process::id() as u64,
        preferred_leader_check_ticks: 0,
    };
    let replica = PartitionReplica::open(
        config,
        dir.clone(),
        log.clone(),
        Rc::new(TransportOutbox {
            node_id,
            transport: transport.clone(),
            isolated,
        }),
    )
    .unwrap();
    *replica_slot.borrow_mut() = Some(replica.clone());
    let mut ever_faulted = false;
    loop {
        glommio::timer::sleep(TICK).await;
        replica.tick();
        assert_eq!(replica.stopped(), None);
        let faulted = replica.fault().is_some();
        ever_faulted |= faulted;
        *status.lock().unwrap() = Some(Status {
            role: replica.role(),
            term: replica.term(),
            commit_index: replica.commit_index(),
            log_end_offset: log.log_end_offset(),
            moved: replica.completed_target().is_some(),
            faulted,
            ever_faulted,
            in_sync: replica
                .in_sync_voters()
                .iter()
                .fold(0, |bits, node| bits | 1 << node),
        });
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Produce { value, reply } => {
                    let replica = replica.clone();
                    glommio::spawn_local(async move {
                        let bytes = BytesMut::from(
                            &build::batch(&[build::TestRecord {
                                key: None,
                                value: value.into_bytes(),
                                timestamp_ms: 0,
                            }])[..],
                        );
                        let batch = CheckedBatch::produced(bytes, usize::MAX).unwrap();
                        let result = replica
                            .produce(batch, Acks::Committed)
                            .await
                            .map(|receipt| receipt.base_offset)
                            .map_err(|error| error.to_string());
                        let _ = reply.send(result);
                    })
                    .detach();
                }
                Command::Dump { reply } => {
                    let mut batches = Vec::new();
                    let mut offset = log.log_start_offset();
                    while offset < log.log_end_offset() {
                        // Damaged offsets (until the replica fetched them again) end the dump.
                        let Ok(slice) = log.read(offset, 1 << 20, log.log_end_offset()).await
                        else {
                            break;
                        };
                        let bytes = slice.data.to_vec().unwrap();
                        let mut rest = &bytes[..];
                        while !rest.is_empty() {
                            let header = batch::BatchHeader::parse(rest).unwrap();
                            let size = header.size_bytes as usize;
                            batches.push(rest[..size].to_vec());
                            offset = header.last_offset() as u64 + 1;
                            rest = &rest[size..];
                        }
                    }
                    let _ = reply.send(batches);
                }
                Command::Target(voters) => replica.set_target_voters(Some(voters)),
                Command::Crash => {
                    replica.stop("crash");
                    *replica_slot.borrow_mut() = None;
                    transport.close().await;
                    return;
                }
            }
        }
    }
}

/// The one broker that leads, once the others agree on its term.
fn leader_of(brokers: &BTreeMap<NodeId, Broker>) -> Option<NodeId> {
    let statuses: Vec<(NodeId, Status)> = brokers
        .iter()
        .filter_map(|(id, broker)| broker.status().map(|status| (*id, status)))
        .collect();
    let leaders: Vec<&(NodeId, Status)> = statuses
        .iter()
        .filter(|(_, status)| status.role == RoleKind::Leader)
        .collect();
    match leaders.as_slice() {
        [(id, status)] if status.commit_index > 0 => Some(*id),
        _ => None,
    }
}

/// The data batches' values (control batches skipped), in log order.
fn values(batches: &[Vec<u8>]) -> Vec<String> {
    batches
        .iter()
        .filter(|bytes| !batch::BatchHeader::parse(bytes).unwrap().is_control())
        .flat_map(|bytes| {
            batch::plain_records(bytes)
                .unwrap()
                .map(|record| String::from_utf8(record.unwrap().value.unwrap().to_vec()).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Three brokers on loopback, their data directories and the switch that cuts them off.
struct Cluster {
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
    _reservations: Vec<ListenReservation>,
    peers: BTreeMap<NodeId, SocketAddr>,
    isolated: Isolated,
    min_insync_replicas: u32,
    /// The voters every replica starts with.
    voters: Vec<NodeId>,
    brokers: BTreeMap<NodeId, Broker>,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(1)
    }

    fn start_with(min_insync_replicas: u32) -> Cluster {
        Cluster::start_with_voters(min_insync_replicas, vec![1, 2, 3])
    }

    fn start_with_voters(min_insync_replicas: u32, voters: Vec<NodeId>) -> Cluster {
        let dirs: BTreeMap<NodeId, tempfile::TempDir> = (1..=3)
            .map(|id| (id, tempfile::tempdir().unwrap()))
            .collect();
        let (reservations, peers) = loopback_peers(3);
        let mut cluster = Cluster {
            dirs,
            _reservations: reservations,
            peers,
            isolated: Isolated::default(),
            min_insync_replicas,
            voters,
            brokers: BTreeMap::new(),
        };
        for id in 1..=3 {
            cluster.start_broker(id);
        }
        cluster
    }

    fn start_broker(&mut self, id: NodeId) {
        let broker = Broker::start(
            id,
            self.dirs[&id].path().to_path_buf(),
            self.peers.clone(),
            self.voters.clone(),
            self.isolated.clone(),
            self.min_insync_replicas,
        );
        self.brokers.insert(id, broker);
    }

    /// Every log, once they are all the same.
    fn agreed_log(&self) -> Option<Vec<Vec<u8>>> {
        if !self
            .brokers
            .values()
            .all(|broker| broker.status().is_some())
        {
            return None;
        }
        let dumps: Vec<Vec<Vec<u8>>> = self.brokers.values().map(Broker::dump).collect();
        dumps
            .windows(2)
            .all(|pair| pair[0] == pair[1])
            .then(|| dumps[0].clone())
    }

    fn stop(self) {
        for broker in self.brokers.into_values() {
            broker.crash();
        }
    }
}

#[test]
fn three_replicas_elect_commit_agree_and_survive_the_leaders_crash() {
    let mut cluster = Cluster::start();
    let first_leader = wait_until("a leader", || leader_of(&cluster.brokers));
    let mut acknowledged = Vec::new();
    let mut last_offset = None;
    for n in 0..100 {
        let value = format!("first-{n}");
        let offset = cluster.brokers[&first_leader]
            .produce(&value)
            .expect("acks=all");
        assert!(last_offset < Some(offset), "offsets only grow");
        last_offset = Some(offset);
        acknowledged.push(value);
    }
    let log = wait_until("every log the same", || cluster.agreed_log());
    assert_eq!(
        values(&log),
        acknowledged,
        "every acknowledged batch, once, in order"
    );

    // The leader crashes; the other two elect one of themselves and go on.
    let crashed_at = Instant::now();
    cluster.brokers.remove(&first_leader).unwrap().crash();
    let second_leader = wait_until("a new leader", || leader_of(&cluster.brokers));
    assert_ne!(second_leader, first_leader);
    let failover = crashed_at.elapsed();
    for n in 0..50 {
        let value = format!("second-{n}");
        cluster.brokers[&second_leader]
            .produce(&value)
            .expect("acks=all with two of three");
        acknowledged.push(value);
    }
    eprintln!("failover took {failover:?}");

    // The crashed broker comes back and catches up, byte for byte.
    cluster.start_broker(first_leader);
    let log = wait_until("the restarted broker caught up", || cluster.agreed_log());
    assert_eq!(values(&log), acknowledged);
    // A follower refuses produces and names the leader.
    let leader = leader_of(&cluster.brokers);
    let follower = cluster
        .brokers
        .keys()
        .copied()
        .find(|id| Some(*id) != leader)
        .unwrap();
    let refused = cluster.brokers[&follower].produce("nope").unwrap_err();
    assert!(refused.contains("not the partition leader"), "{refused}");
    cluster.stop();
}

#[test]
fn a_leader_cut_off_acknowledges_nothing_and_its_uncommitted_tail_is_replaced() {
    let cluster = Cluster::start();
    let first_leader = wait_until("a leader", || leader_of(&cluster.brokers));
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let value = format!("before-{n}");
        cluster.brokers[&first_leader].produce(&value).unwrap();
        acknowledged.push(value);
    }
    wait_until("every log the same", || cluster.agreed_log());

    // Cut the leader off. It still takes a batch into its own log, but no majority ever has
    // it: the producer is refused (once check-quorum makes it step down), never acknowledged.
    cluster.isolated.lock().unwrap().insert(first_leader);
    let refused = cluster.brokers[&first_leader]
        .produce("never-acknowledged")
        .unwrap_err();
    assert!(refused.contains("not the partition leader"), "{refused}");
    let majority_leader = wait_until("a leader on the majority side", || {
        let others: BTreeMap<NodeId, &Broker> = cluster
            .brokers
            .iter()
            .filter(|(id, _)| **id != first_leader)
            .map(|(id, broker)| (*id, broker))
            .collect();
        others.iter().find_map(|(id, broker)| {
            let status = broker.status()?;
            (status.role == RoleKind::Leader && status.commit_index > 0).then_some(*id)
        })
    });
    for n in 0..20 {
        let value = format!("after-{n}");
        cluster.brokers[&majority_leader].produce(&value).unwrap();
        acknowledged.push(value);
    }

    // Healed, the old leader follows the new one, drops its uncommitted batch and catches up.
    cluster.isolated.lock().unwrap().clear();
    let log = wait_until("every log the same after healing", || cluster.agreed_log());
    assert_eq!(values(&log), acknowledged);
    cluster.stop();
}

#[test]
fn acks_all_is_refused_while_fewer_replicas_than_min_insync_are_in_sync() {
    let mut cluster = Cluster::start_with(3);
    let leader = wait_until("a leader", || leader_of(&cluster.brokers));
    // A follower counts as in sync once it has fetched from the new leader: not at once.
    wait_until("acks=all taken with all three in sync", || {
        cluster.brokers[&leader].produce("all three").ok()
    });
    let follower = cluster
        .brokers
        .keys()
        .copied()
        .find(|id| *id != leader)
        .unwrap();
    cluster.brokers.remove(&follower).unwrap().crash();
    let refused = wait_until("acks=all refused with two of three in sync", || {
        cluster.brokers[&leader].produce("two of three").err()
    });
    assert!(
        refused.contains("fewer than min.insync.replicas=3"),
        "{refused}"
    );
    cluster.start_broker(follower);
    wait_until(
        "acks=all taken again once the third is back in sync",
        || cluster.brokers[&leader].produce("three again").ok(),
    );
    cluster.stop();
}

#[test]
fn a_group_moves_to_other_voters_while_it_takes_produces() {
    // Brokers 1 and 2 vote; broker 3 runs a replica that starts with their voter set, as a
    // broker a partition is moved to does, so it cannot campaign.
    let mut cluster = Cluster::start_with_voters(1, vec![1, 2]);
    let leader = wait_until("a leader", || leader_of(&cluster.brokers));
    assert_ne!(leader, 3, "a replica that is not a voter never leads");
    let mut produced = vec!["before the move".to_owned()];
    cluster.brokers[&leader].produce(&produced[0]).unwrap();
    for broker in cluster.brokers.values() {
        broker.target(&[2, 3]);
    }
    for number in 0..20 {
        let value = format!("during the move {number}");
        let taken = wait_until("a produce taken during the move", || {
            let leader = leader_of(&cluster.brokers)?;
            cluster.brokers[&leader].produce(&value).ok()
        });
        assert!(taken > 0);
        produced.push(value);
    }
    let moved = wait_until("a leader whose committed voters are 2 and 3", || {
        cluster
            .brokers
            .iter()
            .find(|(_, broker)| broker.status().is_some_and(|status| status.moved))
            .map(|(id, _)| *id)
    });
    assert!(
        [2, 3].contains(&moved),
        "broker {moved} leads the moved group"
    );
    // Broker 1 is out of the group: the others commit without it.
    cluster.brokers.remove(&1).unwrap().crash();
    produced.push("after the move".to_owned());
    wait_until("a produce taken without broker 1", || {
        let leader = leader_of(&cluster.brokers)?;
        cluster.brokers[&leader].produce("after the move").ok()
    });
    let log = wait_until("brokers 2 and 3 to hold the same log", || {
        cluster.agreed_log()
    });
    // A produce refused as the leader stepped down may have been committed anyway, and its
    // retry is then there twice (these batches are not idempotent): in order, none lost.
    let mut stored = values(&log);
    stored.dedup();
    assert_eq!(stored, produced);
    cluster.stop();
}

/// Disk faults under the replicas (feature `fault-injection`): `replica/disk_faults.rs`.
#[cfg(feature = "fault-injection")]
#[path = "replica/disk_faults.rs"]
mod disk_faults;

/// A value of about 1 KiB, so that a few hundred fill several 64 KiB segments.
fn padded(label: &str, number: usize) -> String {
    format!("{label}-{number}-{}", "x".repeat(1000))
}

/// The segment files of a log directory, in offset order.
fn segment_logs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    logs.sort();
    logs
}

/// Flips a byte 100 bytes before the end of `path` (inside its last batch's records).
fn flip_near_the_end(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x5a;
    std::fs::write(path, &bytes).unwrap();
}

#[test]
fn a_follower_damaged_while_down_fetches_the_damaged_entries_again() {
    let mut cluster = Cluster::start();
    let leader = wait_until("a leader", || leader_of(&cluster.brokers));
    let mut acknowledged = Vec::new();
    for n in 0..300 {
        let value = padded("before", n);
        cluster.brokers[&leader].produce(&value).expect("acks=all");
        acknowledged.push(value);
    }
    wait_until("every log the same", || cluster.agreed_log());
    let follower = *cluster.brokers.keys().find(|id| **id != leader).unwrap();
    cluster.brokers.remove(&follower).unwrap().crash();
    let logs = segment_logs(cluster.dirs[&follower].path());
    assert!(logs.len() >= 4, "several sealed segments: {logs:?}");
    flip_near_the_end(&logs[1]);
    cluster.start_broker(follower);
    for n in 0..20 {
        let value = padded("after", n);
        cluster.brokers[&leader].produce(&value).expect("acks=all");
        acknowledged.push(value);
    }
    let log = wait_until("the damaged follower holds the leader's log again", || {
        cluster.agreed_log()
    });
    assert_eq!(values(&log), acknowledged);
    cluster.stop();
}

#[test]
fn a_leader_that_finds_damage_reading_for_a_follower_hands_over_and_fetches_it_again() {
    let mut cluster = Cluster::start();
    let leader = wait_until("a leader", || leader_of(&cluster.brokers));
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let value = padded("before", n);
        cluster.brokers[&leader].produce(&value).expect("acks=all");
        acknowledged.push(value);
    }
    wait_until("every log the same", || cluster.agreed_log());
    // A follower is down while the other two take enough for several segments.
    let behind = *cluster.brokers.keys().find(|id| **id != leader).unwrap();
    cluster.brokers.remove(&behind).unwrap().crash();
    for n in 0..300 {
        let value = padded("while-down", n);
        cluster.brokers[&leader].produce(&value).expect("acks=all");
        acknowledged.push(value);
    }
    // The leader's copy of a sealed segment the follower lacks goes bad under it.
    let logs = segment_logs(cluster.dirs[&leader].path());
    assert!(logs.len() >= 4, "several sealed segments: {logs:?}");
    flip_near_the_end(&logs[logs.len() - 2]);
    cluster.start_broker(behind);
    let log = wait_until("every replica holds the same log again", || {
        cluster.agreed_log()
    });
    assert_eq!(values(&log), acknowledged);
    let now_leading = wait_until("a leader", || leader_of(&cluster.brokers));
    assert_ne!(
        now_leading, leader,
        "the damaged leader handed leadership over"
    );
    cluster.brokers[&now_leading]
        .produce("after")
        .expect("the group takes produces");
    cluster.stop();
}
