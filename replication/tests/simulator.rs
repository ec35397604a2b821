//! The deterministic Raft simulator: N nodes on a seeded network that loses, delays, reorders
//! and duplicates messages, with partitions and heals, crashes that lose unsynced log writes,
//! restarts from what storage holds, clock jumps (a node's ticks arriving in a burst),
//! retention (a node moves its log start up, below its commit index, so lagging followers must
//! start over at it), compaction (a node drops committed batches, leaving gaps), leadership
//! transfers and membership changes (voters removed, spares added as learners and promoted),
//! messages from a broken or hostile peer naming terms past the last leader epoch (which every
//! node must refuse: no term ever passes `TERM_MAX`), and, in two seeds of three, observers:
//! nodes that are never members but follow the log (as the controller's non-voting brokers
//! do). The disks hold real batches (a payload per batch),
//! and after every event the simulator checks Raft's safety properties on them, and that
//! observers never campaign, vote or lead and commit only what the voters committed; after
//! healing, that every node (observers included) catches up with the leader. Everything random comes from one seed,
//! so a failure names its seed and `RAFT_SIM_SEED=N` replays exactly that run;
//! `RAFT_SIM_SEEDS=N` runs N seeds instead of the default few.
//!
//! "Committed stays on a majority", with membership changes, retention and compaction: when a
//! batch is first seen committed by its leader, the disks durably holding it must be a
//! majority of that leader's voters; from then on each of those disks must keep *accounting
//! for* it: hold the very batch, or have legitimately let it go: the index is below its log
//! start (retention, or a reset to a leader's log start, both only ever below a commit index),
//! or lies in a gap left where some node's cleaner removed that committed batch.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Batch, Cluster, Faults, InFlight, StoredLog};
use ferrite_replication::{
    EntryKind, FetchResult, Index, Message, NodeId, Refusal, RoleKind, SplitMix64, Term, TERM_MAX,
};

/// Nodes `1..=NODES`; the first `VOTERS_INITIAL` start as voters, the others as spares that
/// membership changes bring in (as learners, then voters). After them come
/// `seed % (OBSERVERS_MAX + 1)` observers, never members.
const NODES: u64 = 6;
const OBSERVERS_MAX: u64 = 2;
const VOTERS_INITIAL: u64 = 5;
/// Membership changes never shrink the voter set below this.
const VOTERS_MIN: usize = 3;
const STEPS: u64 = 3_000;
const SEEDS_DEFAULT: u64 = 10;
const FAULTS: Faults = Faults {
    loss_per_mille: 100,
    duplicate_per_mille: 50,
    delay_ticks_max: 5,
};

/// A committed batch, and the nodes whose durable logs held it when it was first seen
/// committed (a majority of the committing leader's voters): each must keep accounting for it.
struct Committed {
    batch: Batch,
    holders: Vec<NodeId>,
}

/// What the simulator has seen, to check each new state against.
#[derive(Default)]
struct Checker {
    leaders_by_term: BTreeMap<Term, NodeId>,
    /// The batch committed at each index, and the nodes whose durable logs held it then.
    committed: BTreeMap<Index, Committed>,
    /// Last indexes of committed batches some node's cleaner removed.
    compacted: BTreeSet<Index>,
    /// How far each node's commits have been recorded.
    recorded: BTreeMap<NodeId, Index>,
    /// The nodes that are never members.
    observers: BTreeSet<NodeId>,
}

impl Checker {
    /// After every delivery: election safety, state-machine safety, leader completeness.
    fn check_step(&mut self, cluster: &Cluster) {
        self.record_commits(cluster);
        for node in cluster.live() {
            if node.term() > TERM_MAX {
                cluster.fail(format!(
                    "node {} reached term {}, past the last leader epoch",
                    node.id(),
                    node.term()
                ));
            }
            if self.observers.contains(&node.id()) && node.role() != RoleKind::Follower {
                cluster.fail(format!(
                    "observer {} became a {:?} in term {}",
                    node.id(),
                    node.role(),
                    node.term()
                ));
            }
            if node.role() != RoleKind::Leader {
                continue;
            }
            match self.leaders_by_term.get(&node.term()) {
                Some(leader) if *leader != node.id() => cluster.fail(format!(
                    "election safety: nodes {leader} and {} lead term {}",
                    node.id(),
                    node.term()
                )),
                Some(_) => continue,
                None => {}
            }
            // Checked when a leader first appears: entries it commits later come from it.
            let log = &cluster.disks[&node.id()].written;
            for (index, Committed { batch, .. }) in self.committed.range(log.log_start..) {
                if !self.accounts_for(log, *index, batch) || log.last_index < *index {
                    cluster.fail(format!(
                        "leader completeness: leader {} of term {} lacks committed {batch:?}",
                        node.id(),
                        node.term()
                    ));
                }
            }
            self.leaders_by_term.insert(node.term(), node.id());
        }
    }

    /// Whether `log` holds the committed `batch` at `index`, or has legitimately let it go.
    fn accounts_for(&self, log: &StoredLog, index: Index, batch: &Batch) -> bool {
        match log.batch_containing(index) {
            Some(held) => held == batch,
            None => {
                index < log.log_start
                    || (index <= log.last_index && self.compacted.contains(&batch.meta.last_index))
            }
        }
    }

    /// Every committed index holds the same batch on every node that committed it, and a
    /// commit index never splits a batch.
    fn record_commits(&mut self, cluster: &Cluster) {
        for node in cluster.live() {
            let commit = node.commit_index();
            let recorded = self
                .recorded
                .get(&node.id())
                .map_or(0, |at| (*at).min(commit));
            let log = &cluster.disks[&node.id()].written;
            for batch in log.batches.range(recorded + 1..).map(|(_, batch)| batch) {
                if batch.meta.first_index > commit {
                    break;
                }
                if batch.meta.last_index > commit {
                    cluster.fail(format!(
                        "node {} commit index {commit} splits {batch:?}",
                        node.id()
                    ));
                }
                for index in batch.meta.first_index.max(recorded + 1)..=batch.meta.last_index {
                    match self.committed.get(&index) {
                        Some(committed) if committed.batch != *batch => cluster.fail(format!(
                            "state-machine safety: node {} committed {batch:?} at {index}, \
                             others {:?}",
                            node.id(),
                            committed.batch
                        )),
                        Some(_) => {}
                        // Every commit is recorded right after the delivery or sync that made
                        // it, before any fetch response can carry it to an observer.
                        None if self.observers.contains(&node.id()) => cluster.fail(format!(
                            "observer {} committed {batch:?} at {index}, which no leader had",
                            node.id()
                        )),
                        None => {
                            let holders: Vec<NodeId> = cluster
                                .disks
                                .iter()
                                .filter(|(_, disk)| self.accounts_for(&disk.durable, index, batch))
                                .map(|(id, _)| *id)
                                .collect();
                            if node.role() == RoleKind::Leader {
                                let voters = node.voters();
                                let durable_voters =
                                    voters.iter().filter(|id| holders.contains(id)).count();
                                if durable_voters <= voters.len() / 2 {
                                    cluster.fail(format!(
                                        "durability: leader {} committed {batch:?} held by only \
                                         {holders:?} of voters {voters:?}",
                                        node.id()
                                    ));
                                }
                            }
                            let batch = batch.clone();
                            self.committed.insert(index, Committed { batch, holders });
                        }
                    }
                }
            }
            self.recorded.insert(node.id(), commit);
        }
    }

    /// Once per tick: log matching above what both nodes of a pair committed (below that,
    /// state-machine safety already compares them), and that each core's log summary is
    /// what its disk holds.
    fn check_logs(&self, cluster: &Cluster) {
        let live: Vec<_> = cluster.live().collect();
        for node in &live {
            let written = cluster.disks[&node.id()].written.summary();
            if node.log() != &written {
                cluster.fail(format!(
                    "node {}'s log summary {:?} is not its disk's {written:?}",
                    node.id(),
                    node.log()
                ));
            }
        }
        for (position, a) in live.iter().enumerate() {
            for b in &live[position + 1..] {
                let (log_a, log_b) = (
                    &cluster.disks[&a.id()].written,
                    &cluster.disks[&b.id()].written,
                );
                let from = a.commit_index().min(b.commit_index()) + 1;
                let mut first_difference = None;
                for batch in log_a.batches.range(from..).map(|(_, batch)| batch) {
                    let Some(other) = log_b.batch_containing(batch.meta.last_index) else {
                        continue;
                    };
                    if other == batch {
                        if let Some(index) = first_difference {
                            cluster.fail(format!(
                                "log matching: nodes {} and {} share {batch:?} but differ at {index}",
                                a.id(),
                                b.id()
                            ));
                        }
                    } else if other.meta.term == batch.meta.term {
                        cluster.fail(format!(
                            "log matching: nodes {} and {} hold {batch:?} and {other:?} in one term",
                            a.id(),
                            b.id()
                        ));
                    } else {
                        first_difference.get_or_insert(batch.meta.last_index);
                    }
                }
            }
        }
    }

    /// Observers never ask for votes nor grant them (no candidate asks them: they are in no
    /// voter set), as the messages on their way show.
    fn check_observers_silent(&self, cluster: &Cluster) {
        for in_flight in &cluster.network {
            let campaigning = match &in_flight.message {
                Message::PreVote { .. } | Message::RequestVote { .. } => true,
                Message::PreVoteResponse { granted, .. }
                | Message::RequestVoteResponse { granted, .. } => *granted,
                _ => false,
            };
            if campaigning && self.observers.contains(&in_flight.from) {
                cluster.fail(format!(
                    "observer {} sent {:?} to {}",
                    in_flight.from, in_flight.message, in_flight.to
                ));
            }
        }
    }

    /// Every committed index from `from_index` on is still accounted for by every disk that
    /// held it when it committed.
    fn check_durability(&self, cluster: &Cluster, from_index: Index) {
        for (index, Committed { batch, holders }) in self.committed.range(from_index..) {
            for holder in holders {
                if !self.accounts_for(&cluster.disks[holder].durable, *index, batch) {
                    cluster.fail(format!(
                        "durability: node {holder} lost committed {batch:?} at {index}"
                    ));
                }
            }
        }
    }
}

struct Simulation {
    cluster: Cluster,
    checker: Checker,
    /// Spares and observers included.
    node_count: u64,
}

impl Simulation {
    fn new(seed: u64) -> Simulation {
        let node_count = NODES + seed % (OBSERVERS_MAX + 1);
        let checker = Checker {
            observers: (NODES + 1..=node_count).collect(),
            ..Checker::default()
        };
        Simulation {
            cluster: Cluster::new(seed, VOTERS_INITIAL, node_count, FAULTS, 20),
            checker,
            node_count,
        }
    }

    fn event(&mut self) {
        let Simulation {
            cluster,
            checker,
            node_count,
        } = self;
        let node_count = *node_count;
        cluster.now += 1;
        for id in 1..=node_count {
            cluster.tick_node(id);
        }
        if cluster.random.chance(1, 100) {
            let id = cluster.random.range(1, node_count + 1);
            for _ in 0..cluster.random.range(5, 40) {
                cluster.tick_node(id);
            }
        }
        cluster.deliver_due(|cluster| checker.check_step(cluster));
        for id in 1..=node_count {
            if cluster.random.chance(1, 2) {
                cluster.sync_disk(id);
            }
        }
        // Before a membership change below moves the leader to another voter set.
        checker.record_commits(cluster);
        if cluster.random.chance(1, 3) {
            cluster.propose();
        }
        self.faults();
        self.check();
    }

    fn check(&mut self) {
        self.checker.check_step(&self.cluster);
        self.checker.check_logs(&self.cluster);
        self.checker.check_observers_silent(&self.cluster);
        if let Some(from_index) = self.cluster.durable_changed_from.take() {
            self.checker.check_durability(&self.cluster, from_index);
        }
    }

    fn faults(&mut self) {
        let node_count = self.node_count;
        let cluster = &mut self.cluster;
        if cluster.random.chance(1, 200) {
            let id = cluster.random.range(1, node_count + 1);
            if cluster.node(id).is_some() {
                cluster.crash(id);
            } else {
                cluster.restart(id);
            }
        }
        for id in 1..=node_count {
            if cluster.node(id).is_none() && cluster.random.chance(1, 50) {
                cluster.restart(id);
            }
        }
        if cluster.random.chance(1, 300) {
            for id in 1..=node_count {
                let side = cluster.random.range(0, 2);
                cluster.sides.insert(id, side);
            }
        }
        if cluster.random.chance(1, 100) {
            for side in cluster.sides.values_mut() {
                *side = 0;
            }
        }
        if cluster.random.chance(1, 100) {
            let id = self.cluster.random.range(1, node_count + 1);
            self.retention(id);
        }
        if self.cluster.random.chance(1, 30) {
            let id = self.cluster.random.range(1, node_count + 1);
            self.compaction(id);
        }
        if self.cluster.random.chance(1, 150) {
            self.transfer();
        }
        if self.cluster.random.chance(1, 60) {
            self.change_membership();
        }
        if self.cluster.random.chance(1, 40) {
            self.hostile_message();
        }
    }

    /// A message from a broken or hostile peer (posing as one of the nodes that may be
    /// members) naming a term past the last leader epoch in one of the fields that carry a
    /// term; a vote request for a leadership transfer among them, which passes the leader
    /// lease.
    fn hostile_message(&mut self) {
        let node_count = self.node_count;
        let cluster = &mut self.cluster;
        let from = cluster.random.range(1, NODES + 1);
        let to = cluster.random.range(1, node_count + 1);
        let far = TERM_MAX + cluster.random.range(1, 1 << 40);
        let term = cluster.node(to).map_or(0, |node| node.term());
        let message = match cluster.random.range(0, 6) {
            0 => Message::RequestVote {
                term: far,
                last_index: Index::MAX / 2,
                last_term: far,
                transfer: true,
            },
            1 => Message::BeginEpoch {
                term: far,
                leader: from,
            },
            2 => Message::PreVote {
                term: term + 1,
                last_index: Index::MAX / 2,
                last_term: far,
            },
            3 => Message::TimeoutNow { term: far },
            4 => Message::Durable {
                term,
                fetch_index: 2,
                last_fetched_term: far,
                durable_index: 1,
            },
            _ => Message::FetchResponse {
                term,
                leader: from,
                commit_index: 0,
                fetch_index: 1,
                last_fetched_term: 0,
                result: FetchResult::Diverging {
                    end_index: 1,
                    term: far,
                },
            },
        };
        let deliver_at = cluster.now + 1;
        cluster.network.push(InFlight {
            deliver_at,
            from,
            to,
            message,
            batches: Vec::new(),
        });
    }

    /// The leader removes a voter (perhaps itself), or brings a spare in: first as a learner,
    /// then, once it has caught up, as a voter. Refusals (a change in flight, a learner
    /// behind) are part of the test.
    fn change_membership(&mut self) {
        let cluster = &mut self.cluster;
        let Some(leader) = cluster.leader() else {
            return;
        };
        let voters = cluster.node(leader).expect("live").voters().to_vec();
        let spares: Vec<NodeId> = (1..=NODES).filter(|id| !voters.contains(id)).collect();
        let remove =
            spares.is_empty() || (voters.len() > VOTERS_MIN && cluster.random.chance(1, 3));
        let pick = |random: &mut SplitMix64, ids: &[NodeId]| {
            ids[random.range(0, ids.len() as u64) as usize]
        };
        let member = if remove {
            pick(&mut cluster.random, &voters)
        } else {
            pick(&mut cluster.random, &spares)
        };
        let node = cluster.node_mut(leader).expect("live");
        let result = if remove {
            node.remove_voter(member)
        } else {
            match node.promote(member) {
                Err(Refusal::InvalidMember { .. }) => node.add_learner(member),
                other => other,
            }
        };
        if let Ok(effects) = result {
            cluster.apply(leader, effects, &[]);
        }
    }

    /// Node `id` moves its log start up to a batch boundary at most one past its commit index
    /// (when all its writes are synced, so its disk is one log).
    fn retention(&mut self, id: NodeId) {
        let cluster = &mut self.cluster;
        let Some(commit) = cluster.node(id).map(|node| node.commit_index()) else {
            return;
        };
        let disk = &cluster.disks[&id];
        if !disk.pending.is_empty() {
            return;
        }
        let starts: Vec<Index> = disk
            .durable
            .batches
            .values()
            .map(|batch| batch.meta.first_index)
            .filter(|first| *first > disk.durable.log_start && *first <= commit + 1)
            .collect();
        if starts.is_empty() {
            return;
        }
        let log_start = starts[cluster.random.range(0, starts.len() as u64) as usize];
        let disk = cluster.disks.get_mut(&id).expect("known node");
        disk.durable.remove_before(log_start);
        disk.written = disk.durable.clone();
        cluster
            .node_mut(id)
            .expect("live")
            .log_start_advanced(log_start);
    }

    /// Node `id`'s cleaner removes one committed records batch (never its last), leaving a gap.
    fn compaction(&mut self, id: NodeId) {
        let cluster = &mut self.cluster;
        let Some(commit) = cluster.node(id).map(|node| node.commit_index()) else {
            return;
        };
        let disk = &cluster.disks[&id];
        if !disk.pending.is_empty() {
            return;
        }
        let candidates: Vec<Index> = disk
            .durable
            .batches
            .values()
            .filter(|batch| {
                batch.meta.kind == EntryKind::Records
                    && batch.meta.last_index <= commit
                    && batch.meta.last_index < disk.durable.last_index
            })
            .map(|batch| batch.meta.last_index)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let last_index = candidates[cluster.random.range(0, candidates.len() as u64) as usize];
        let disk = cluster.disks.get_mut(&id).expect("known node");
        disk.durable.batches.remove(&last_index);
        disk.written = disk.durable.clone();
        self.checker.compacted.insert(last_index);
    }

    fn transfer(&mut self) {
        let cluster = &mut self.cluster;
        let Some(leader) = cluster.leader() else {
            return;
        };
        let target = cluster.random.range(1, NODES + 1); // a non-voter target is refused
        let node = cluster.node_mut(leader).expect("live");
        if let Ok(effects) = node.transfer_leadership(target) {
            cluster.apply(leader, effects, &[]);
        }
    }

    /// Heal everything and check that the cluster elects a leader and commits again, and that
    /// then every node catches up with the highest commit index (observers, spares and voters
    /// removed without knowing it included: the voters name the leader to them; and a node
    /// whose term went past the leader's, whose answer to the leader's announcement makes it
    /// step down for an election that takes the node in).
    fn settle(&mut self) {
        for id in 1..=self.node_count {
            if self.cluster.node(id).is_none() {
                self.cluster.restart(id);
            }
            self.cluster.sides.insert(id, 0);
        }
        let committed_before = self.checker.committed.len();
        let progressed = (0..2_000).any(|_| {
            self.settle_tick();
            self.checker.committed.len() > committed_before + 5
        });
        if !progressed {
            self.cluster.fail("no progress after healing".to_string());
        }
        let target = self
            .cluster
            .live()
            .map(|node| node.commit_index())
            .max()
            .expect("every node was restarted");
        let caught_up = (0..2_000).any(|_| {
            self.settle_tick();
            self.cluster.leader().is_some()
                && self
                    .cluster
                    .live()
                    .all(|node| node.commit_index() >= target)
        });
        if !caught_up {
            let behind: Vec<String> = self
                .cluster
                .live()
                .filter(|node| node.commit_index() < target)
                .map(|node| {
                    format!(
                        "{} (commit {}, {:?} in term {}, leader {:?}, voters {:?})",
                        node.id(),
                        node.commit_index(),
                        node.role(),
                        node.term(),
                        node.leader(),
                        node.voters()
                    )
                })
                .collect();
            let leader = self.cluster.leader().and_then(|id| self.cluster.node(id));
            let leader = leader.map(|node| (node.id(), node.term(), node.voters().to_vec()));
            self.cluster.fail(format!(
                "after healing, nodes {behind:?} never reached the commit index {target} \
                 (leader, term, voters: {leader:?})"
            ));
        }
    }

    fn settle_tick(&mut self) {
        self.cluster.tick_synced();
        if self.cluster.random.chance(1, 10) {
            self.cluster.propose();
        }
        self.check();
    }
}

fn run(seed: u64) {
    let mut simulation = Simulation::new(seed);
    for _ in 0..STEPS {
        simulation.event();
    }
    simulation.settle();
}

#[test]
fn raft_stays_safe_under_faults() {
    if let Some(seed) = std::env::var("RAFT_SIM_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
    {
        return run(seed);
    }
    let seeds = std::env::var("RAFT_SIM_SEEDS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(SEEDS_DEFAULT);
    for seed in 0..seeds {
        run(seed);
    }
}
