//! Elections on a perfect network, one behaviour per test: what pre-vote and check-quorum are
//! for. (The simulator checks safety under faults; these check the intended liveness choices.)

use std::collections::{BTreeMap, BTreeSet};

use ferrite_replication::{
    Effects, Envelope, NodeId, PersistedState, RaftConfig, RaftNode, RoleKind,
};

const TICKS_MAX: u64 = 1_000;

struct Cluster {
    nodes: BTreeMap<NodeId, RaftNode>,
    queue: Vec<(NodeId, Envelope)>,
    isolated: BTreeSet<NodeId>,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let voters: Vec<NodeId> = (1..=size).collect();
        let nodes = voters
            .iter()
            .map(|id| {
                let config = RaftConfig {
                    id: *id,
                    voters: voters.clone(),
                    election_timeout_ticks_min: 10,
                    heartbeat_interval_ticks: 2,
                    entries_per_message_max: 16,
                    seed: *id,
                };
                (*id, RaftNode::new(config, PersistedState::default()))
            })
            .collect();
        Cluster {
            nodes,
            queue: Vec::new(),
            isolated: BTreeSet::new(),
        }
    }

    /// Carry out effects at once: storage completes immediately, messages arrive next.
    fn apply(&mut self, id: NodeId, effects: Effects) {
        if let Some(last) = effects
            .log_writes
            .last()
            .and_then(|write| write.entries.last())
        {
            let (index, term) = (last.index, last.term);
            let more = self
                .nodes
                .get_mut(&id)
                .expect("known node")
                .persisted(index, term);
            self.queue
                .extend(more.messages.into_iter().map(|envelope| (id, envelope)));
        }
        self.queue
            .extend(effects.messages.into_iter().map(|envelope| (id, envelope)));
    }

    fn tick(&mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            let effects = self.nodes.get_mut(&id).expect("known node").tick();
            self.apply(id, effects);
        }
        while !self.queue.is_empty() {
            for (from, envelope) in std::mem::take(&mut self.queue) {
                if self.isolated.contains(&from) || self.isolated.contains(&envelope.to) {
                    continue;
                }
                let node = self.nodes.get_mut(&envelope.to).expect("known node");
                let effects = node.step(from, envelope.message);
                self.apply(envelope.to, effects);
            }
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .find(|node| node.role() == RoleKind::Leader && !self.isolated.contains(&node.id()))
            .map(RaftNode::id)
    }

    fn tick_until_leader(&mut self) -> NodeId {
        for _ in 0..TICKS_MAX {
            self.tick();
            if let Some(leader) = self.leader() {
                return leader;
            }
        }
        panic!("no leader within {TICKS_MAX} ticks");
    }
}

#[test]
fn a_cluster_elects_one_leader_and_commits_its_proposals_everywhere() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.tick_until_leader();
    let follower = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .expect("3 nodes");
    let refused = cluster
        .nodes
        .get_mut(&follower)
        .expect("known")
        .propose(b"x".to_vec());
    assert_eq!(
        refused.err().map(|error| error.leader_hint),
        Some(Some(leader))
    );
    let (index, effects) = cluster
        .nodes
        .get_mut(&leader)
        .expect("known")
        .propose(b"x".to_vec())
        .expect("leader");
    cluster.apply(leader, effects);
    for _ in 0..10 {
        cluster.tick();
    }
    for node in cluster.nodes.values() {
        assert!(
            node.commit_index() >= index,
            "node {} did not commit",
            node.id()
        );
        assert_eq!(node.entries()[index as usize - 1].payload, b"x");
    }
}

#[test]
fn an_isolated_node_does_not_bump_its_term_and_does_not_depose_the_leader_on_return() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.tick_until_leader();
    let term = cluster.nodes[&leader].term();
    let loner = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .expect("3 nodes");
    cluster.isolated.insert(loner);
    for _ in 0..100 {
        cluster.tick();
    }
    assert_eq!(
        cluster.nodes[&loner].term(),
        term,
        "pre-vote keeps the term"
    );
    cluster.isolated.clear();
    for _ in 0..100 {
        cluster.tick();
    }
    assert_eq!(cluster.leader(), Some(leader));
    assert_eq!(cluster.nodes[&leader].term(), term);
}

#[test]
fn a_leader_cut_off_from_the_majority_steps_down_and_the_majority_elects_another() {
    let mut cluster = Cluster::new(3);
    let old_leader = cluster.tick_until_leader();
    cluster.isolated.insert(old_leader);
    for _ in 0..25 {
        cluster.tick();
    }
    assert_eq!(
        cluster.nodes[&old_leader].role(),
        RoleKind::Follower,
        "check-quorum"
    );
    let new_leader = cluster.tick_until_leader();
    assert_ne!(new_leader, old_leader);
}
