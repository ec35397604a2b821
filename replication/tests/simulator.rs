//! The deterministic Raft simulator: N nodes on a seeded network that loses, delays, reorders
//! and duplicates messages, with partitions, crashes that lose unsynced log writes, and
//! restarts from what storage holds. After every event it checks Raft's safety properties.
//! Everything random comes from one seed, so a failure names its seed and `RAFT_SIM_SEED=N`
//! replays exactly that run. `RAFT_SIM_SEEDS=N` runs N seeds instead of the default few.

use std::collections::{BTreeMap, VecDeque};

use ferrite_replication::{
    Effects, HardState, Index, LogEntry, LogWrite, Message, NodeId, PersistedState, RaftConfig,
    RaftNode, RoleKind, SplitMix64, Term,
};

const NODES: u64 = 5;
const STEPS: u64 = 3_000;
const SEEDS_DEFAULT: u64 = 10;

/// A node's disk: what survives a crash, and the writes not yet synced.
#[derive(Default)]
struct Disk {
    hard_state: HardState,
    durable: Vec<LogEntry>,
    pending: VecDeque<LogWrite>,
}

struct InFlight {
    deliver_at: u64,
    from: NodeId,
    to: NodeId,
    message: Message,
}

struct Simulation {
    seed: u64,
    random: SplitMix64,
    now: u64,
    nodes: BTreeMap<NodeId, Option<RaftNode>>,
    disks: BTreeMap<NodeId, Disk>,
    network: Vec<InFlight>,
    /// Partition side of each node; messages cross only between equal sides.
    sides: BTreeMap<NodeId, u64>,
    leaders_by_term: BTreeMap<Term, NodeId>,
    committed: BTreeMap<Index, LogEntry>,
    payload_next: u64,
}

fn config(id: NodeId, seed: u64, incarnation: u64) -> RaftConfig {
    RaftConfig {
        id,
        voters: (1..=NODES).collect(),
        election_timeout_ticks_min: 20,
        heartbeat_interval_ticks: 4,
        entries_per_message_max: 8,
        seed: seed ^ (id << 48) ^ (incarnation << 32),
    }
}

impl Simulation {
    fn new(seed: u64) -> Simulation {
        let nodes = (1..=NODES)
            .map(|id| {
                (
                    id,
                    Some(RaftNode::new(
                        config(id, seed, 0),
                        PersistedState::default(),
                    )),
                )
            })
            .collect();
        Simulation {
            seed,
            random: SplitMix64::new(seed),
            now: 0,
            nodes,
            disks: (1..=NODES).map(|id| (id, Disk::default())).collect(),
            network: Vec::new(),
            sides: (1..=NODES).map(|id| (id, 0)).collect(),
            leaders_by_term: BTreeMap::new(),
            committed: BTreeMap::new(),
            payload_next: 0,
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {}: tick {}: {what} (replay with RAFT_SIM_SEED={})",
            self.seed, self.now, self.seed
        )
    }

    fn apply(&mut self, id: NodeId, effects: Effects) {
        let disk = self.disks.get_mut(&id).expect("every node has a disk");
        if let Some(hard_state) = effects.hard_state {
            disk.hard_state = hard_state;
        }
        disk.pending.extend(effects.log_writes);
        for envelope in effects.messages {
            let copies = if self.random.chance(1, 20) { 2 } else { 1 };
            for _ in 0..copies {
                if self.random.chance(1, 10) {
                    continue;
                }
                let deliver_at = self.now + self.random.range(1, 6);
                self.network.push(InFlight {
                    deliver_at,
                    from: id,
                    to: envelope.to,
                    message: envelope.message.clone(),
                });
            }
        }
        if effects.commit_index.is_some() {
            self.record_commits(id);
        }
    }

    fn record_commits(&mut self, id: NodeId) {
        let Some(node) = &self.nodes[&id] else { return };
        for entry in &node.entries()[..node.commit_index() as usize] {
            match self.committed.get(&entry.index) {
                Some(committed) if committed != entry => self.fail(format!(
                    "state-machine safety: node {id} committed {entry:?}, others {committed:?}"
                )),
                Some(_) => {}
                None => {
                    self.committed.insert(entry.index, entry.clone());
                }
            }
        }
    }

    fn sync_disk(&mut self, id: NodeId) {
        let disk = self.disks.get_mut(&id).expect("every node has a disk");
        let Some(write) = disk.pending.pop_front() else {
            return;
        };
        let from_index = write.from_index;
        disk.durable.truncate(from_index as usize - 1);
        disk.durable.extend(write.entries.iter().cloned());
        let last = write
            .entries
            .last()
            .expect("log writes are not empty")
            .clone();
        if let Some(node) = self.nodes.get_mut(&id).expect("known node") {
            let effects = node.persisted(last.index, last.term);
            self.apply(id, effects);
        }
        self.check_durability(from_index);
    }

    fn crash(&mut self, id: NodeId) {
        self.nodes.insert(id, None);
        self.disks
            .get_mut(&id)
            .expect("every node has a disk")
            .pending
            .clear();
    }

    fn restart(&mut self, id: NodeId) {
        let disk = &self.disks[&id];
        let persisted = PersistedState {
            hard_state: disk.hard_state,
            entries: disk.durable.clone(),
        };
        let node = RaftNode::new(config(id, self.seed, self.now), persisted);
        self.nodes.insert(id, Some(node));
    }

    fn event(&mut self) {
        self.now += 1;
        for id in 1..=NODES {
            if let Some(node) = self.nodes.get_mut(&id).expect("known node") {
                let effects = node.tick();
                self.apply(id, effects);
            }
        }
        let mut due = Vec::new();
        let mut position = 0;
        while position < self.network.len() {
            if self.network[position].deliver_at <= self.now {
                due.push(self.network.swap_remove(position));
            } else {
                position += 1;
            }
        }
        while !due.is_empty() {
            let delivery = due.swap_remove(self.random.range(0, due.len() as u64) as usize);
            if self.sides[&delivery.from] != self.sides[&delivery.to] {
                continue;
            }
            if let Some(node) = self.nodes.get_mut(&delivery.to).expect("known node") {
                let effects = node.step(delivery.from, delivery.message);
                self.apply(delivery.to, effects);
                self.check();
            }
        }
        for id in 1..=NODES {
            if self.random.chance(1, 2) {
                self.sync_disk(id);
            }
        }
        if self.random.chance(1, 3) {
            self.propose();
        }
        self.faults();
        self.check();
        self.check_logs();
    }

    fn propose(&mut self) {
        let leader = self.nodes.iter_mut().find_map(|(id, node)| {
            node.as_mut()
                .filter(|node| node.role() == RoleKind::Leader)
                .map(|node| (*id, node))
        });
        if let Some((id, node)) = leader {
            self.payload_next += 1;
            let payload = self.payload_next.to_be_bytes().to_vec();
            if let Ok((_, effects)) = node.propose(payload) {
                self.apply(id, effects);
            }
        }
    }

    fn faults(&mut self) {
        if self.random.chance(1, 200) {
            let id = self.random.range(1, NODES + 1);
            if self.nodes[&id].is_some() {
                self.crash(id);
            } else {
                self.restart(id);
            }
        }
        for id in 1..=NODES {
            if self.nodes[&id].is_none() && self.random.chance(1, 50) {
                self.restart(id);
            }
        }
        if self.random.chance(1, 300) {
            for id in 1..=NODES {
                let side = self.random.range(0, 2);
                self.sides.insert(id, side);
            }
        }
        if self.random.chance(1, 100) {
            for side in self.sides.values_mut() {
                *side = 0;
            }
        }
    }

    fn check(&mut self) {
        let live: Vec<&RaftNode> = self.nodes.values().flatten().collect();
        let mut violations = Vec::new();
        let mut new_leaders = Vec::new();
        for node in &live {
            if node.role() == RoleKind::Leader {
                match self.leaders_by_term.get(&node.term()) {
                    Some(leader) if *leader != node.id() => violations.push(format!(
                        "election safety: nodes {leader} and {} lead term {}",
                        node.id(),
                        node.term()
                    )),
                    Some(_) => continue,
                    None => new_leaders.push((node.term(), node.id())),
                }
                // Checked when a leader first appears: entries it commits later come from it.
                for (index, entry) in &self.committed {
                    if node.entries().get(*index as usize - 1) != Some(entry) {
                        violations.push(format!(
                            "leader completeness: leader {} of term {} lacks committed {entry:?}",
                            node.id(),
                            node.term()
                        ));
                    }
                }
            }
        }
        if let Some(violation) = violations.into_iter().next() {
            self.fail(violation);
        }
        self.leaders_by_term.extend(new_leaders);
    }

    /// Log matching over every pair of live logs; once per tick, as it is quadratic.
    fn check_logs(&self) {
        let live: Vec<&RaftNode> = self.nodes.values().flatten().collect();
        let mut violations = Vec::new();
        for (position, a) in live.iter().enumerate() {
            for b in &live[position + 1..] {
                let shared = a.entries().len().min(b.entries().len());
                let last_same_term = (0..shared)
                    .rev()
                    .find(|at| a.entries()[*at].term == b.entries()[*at].term);
                if let Some(last) = last_same_term {
                    if a.entries()[..=last] != b.entries()[..=last] {
                        violations.push(format!(
                            "log matching: nodes {} and {} agree on the term of index {} but not on the prefix",
                            a.id(),
                            b.id(),
                            last + 1
                        ));
                    }
                }
            }
        }
        if let Some(violation) = violations.into_iter().next() {
            self.fail(violation);
        }
    }

    /// Every committed entry from `from_index` on is durable on a majority of disks.
    fn check_durability(&self, from_index: Index) {
        for (index, entry) in self.committed.range(from_index..) {
            let holders = self
                .disks
                .values()
                .filter(|disk| disk.durable.get(*index as usize - 1) == Some(entry))
                .count() as u64;
            if holders <= NODES / 2 {
                self.fail(format!(
                    "durability: committed {entry:?} is on only {holders} disks"
                ));
            }
        }
    }

    /// Heal everything and check that the cluster elects a leader and commits again.
    fn settle(&mut self) {
        for id in 1..=NODES {
            if self.nodes[&id].is_none() {
                self.restart(id);
            }
            self.sides.insert(id, 0);
        }
        let committed_before = self.committed.len();
        for _ in 0..2_000 {
            self.now += 1;
            for id in 1..=NODES {
                let node = self
                    .nodes
                    .get_mut(&id)
                    .expect("known node")
                    .as_mut()
                    .expect("restarted");
                let effects = node.tick();
                self.apply(id, effects);
            }
            let (due, later): (Vec<_>, Vec<_>) = self
                .network
                .drain(..)
                .partition(|delivery| delivery.deliver_at <= self.now);
            self.network = later;
            for delivery in due {
                if let Some(node) = self.nodes.get_mut(&delivery.to).expect("known node") {
                    let effects = node.step(delivery.from, delivery.message);
                    self.apply(delivery.to, effects);
                }
            }
            for id in 1..=NODES {
                self.sync_disk(id);
            }
            if self.random.chance(1, 10) {
                self.propose();
            }
            self.check();
            self.check_logs();
            if self.committed.len() > committed_before + 5 {
                return;
            }
        }
        self.fail("no progress after healing".to_string());
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
