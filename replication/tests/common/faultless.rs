//! A faultless cluster for the tests of one behaviour at a time: made, ticked until a condition
//! holds (or a leader is known), its nodes looked at, batches committed, logs compared and
//! installed by hand.

use super::{Batch, Cluster, DiskWrite, Faults};
use ferrite_replication::{EntryKind, EntryMeta, NodeId, Term};

pub const TICKS_MAX: u64 = 1_000;
pub const PERFECT: Faults = Faults {
    loss_per_mille: 0,
    duplicate_per_mille: 0,
    delay_ticks_max: 1,
};

pub fn cluster(size: u64) -> Cluster {
    Cluster::new(7, size, size, PERFECT, 10)
}

pub fn tick_until(cluster: &mut Cluster, what: &str, done: impl Fn(&Cluster) -> bool) {
    for _ in 0..TICKS_MAX {
        cluster.tick_synced();
        if done(cluster) {
            return;
        }
    }
    panic!("not within {TICKS_MAX} ticks: {what}");
}

/// Tick until a leader on the main side is known to every node on that side.
pub fn tick_until_leader(cluster: &mut Cluster) -> NodeId {
    tick_until(cluster, "a leader", |cluster| {
        let known = |leader| {
            cluster
                .live()
                .filter(|node| cluster.sides[&node.id()] == 0)
                .all(|node| node.leader() == Some(leader))
        };
        cluster
            .leader()
            .is_some_and(|leader| cluster.sides[&leader] == 0 && known(leader))
    });
    cluster.leader().expect("just seen")
}

pub fn ticks(cluster: &mut Cluster, count: u64) {
    for _ in 0..count {
        cluster.tick_synced();
    }
}

pub fn node(cluster: &Cluster, id: NodeId) -> &ferrite_replication::RaftNode {
    cluster.node(id).expect("live node")
}

/// Propose one batch on the leader and wait until every live voter commits it.
pub fn commit_one(cluster: &mut Cluster) -> Batch {
    let (leader, batch) = cluster.propose().expect("a leader takes proposals");
    let voters = node(cluster, leader).voters().to_vec();
    let last = batch.meta.last_index;
    tick_until(cluster, "commit everywhere", |cluster| {
        cluster
            .live()
            .filter(|node| voters.contains(&node.id()))
            .all(|node| node.commit_index() >= last)
    });
    batch
}

/// Every live node's disk holds exactly the batches of `reference`'s disk from its log start.
pub fn assert_same_logs(cluster: &Cluster, reference: NodeId) {
    let expected = &cluster.disks[&reference].durable;
    for node in cluster.live() {
        let disk = &cluster.disks[&node.id()].durable;
        assert_eq!(disk.last_index, expected.last_index, "node {}", node.id());
        for (last_index, batch) in disk.batches.range(expected.log_start..) {
            assert_eq!(
                expected.batches.get(last_index),
                Some(batch),
                "node {}",
                node.id()
            );
        }
    }
}

/// Put a log of `(first_index, last_index, term)` records batches on `id`'s disk (term and
/// vote at `term`) and restart it from there.
pub fn install(cluster: &mut Cluster, id: NodeId, term: Term, batches: &[(u64, u64, Term)]) {
    cluster.crash(id);
    let disk = cluster.disks.get_mut(&id).expect("known node");
    disk.hard_state.term = term;
    let write = DiskWrite::Append(
        batches
            .iter()
            .map(|(first_index, last_index, term)| Batch {
                meta: EntryMeta {
                    first_index: *first_index,
                    last_index: *last_index,
                    term: *term,
                    kind: EntryKind::Records,
                },
                payload: last_index * 100 + term,
            })
            .collect(),
    );
    disk.durable.apply(&write).expect("a valid log");
    disk.written = disk.durable.clone();
    cluster.restart(id);
}

pub fn node_mut(cluster: &mut Cluster, id: NodeId) -> &mut ferrite_replication::RaftNode {
    cluster.node_mut(id).expect("live node")
}
