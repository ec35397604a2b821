//! The test driver shared by the simulator and the election tests: what a broker does around
//! the Raft core, with simulated parts. Each node has a disk holding real batches (metadata
//! and a payload) with the writes not yet synced; the network carries messages with the
//! batches a leader's driver attaches to its fetch responses, losing, duplicating and delaying
//! them as the [`Faults`] say. Everything random comes from one seed.
//!
//! Time reaches the nodes as the broker's timer wheel hands it out: a node's ticks are owed
//! to it until its next due tick (`RaftNode::ticks_until_due`) and then given in one
//! `RaftNode::advance`; before any other input the node is first brought up to date. Each
//! such `advance` is checked against a copy of the node given the same ticks one by one: the
//! two must end equal, with equal effects.
//!
//! Each test binary uses part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use ferrite_replication::{
    Effects, EntryKind, EntryMeta, EpochRun, FetchResult, HardState, Index, LogSummary, LogWrite,
    Message, NodeId, PersistedState, RaftConfig, RaftNode, RoleKind, SplitMix64, Term,
};

/// How many batches a leader's driver attaches to one fetch response (its byte budget).
pub const BATCHES_PER_FETCH_MAX: usize = 4;

/// A record batch as stored: its header, and a payload standing for its bytes (0 for the
/// control batches the core appends itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub meta: EntryMeta,
    pub payload: u64,
}

/// A log write as the disk carries it out, batches included.
#[derive(Debug, Clone)]
pub enum DiskWrite {
    Append(Vec<Batch>),
    Truncate {
        after_index: Index,
    },
    ResetTo {
        log_start: Index,
        prev_term: Term,
        voters: Vec<NodeId>,
    },
}

/// A partition log on disk: batches by their last index, and beside them what Kafka keeps in
/// its leader-epoch checkpoint and partition metadata (epoch runs, the voter set at the log
/// start). Maintained here independently of the core, so each can check the other.
#[derive(Debug, Clone)]
pub struct StoredLog {
    pub log_start: Index,
    pub prev_term: Term,
    pub voters_base: Vec<NodeId>,
    pub epochs: Vec<EpochRun>,
    pub voter_changes: Vec<(Index, Vec<NodeId>)>,
    pub batches: BTreeMap<Index, Batch>,
    pub last_index: Index,
}

impl StoredLog {
    pub fn new(voters: Vec<NodeId>) -> StoredLog {
        StoredLog {
            log_start: 1,
            prev_term: 0,
            voters_base: voters,
            epochs: Vec::new(),
            voter_changes: Vec::new(),
            batches: BTreeMap::new(),
            last_index: 0,
        }
    }

    pub fn batch_containing(&self, index: Index) -> Option<&Batch> {
        self.batches
            .range(index..)
            .next()
            .map(|(_, batch)| batch)
            .filter(|batch| batch.meta.first_index <= index)
    }

    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        if index + 1 == self.log_start {
            return Some(self.prev_term);
        }
        if index < self.log_start || index > self.last_index {
            return None;
        }
        self.epochs
            .iter()
            .rev()
            .find(|run| run.start_index <= index)
            .map(|run| run.term)
    }

    pub fn last_term(&self) -> Term {
        self.term_at(self.last_index)
            .expect("the last index has a term")
    }

    pub fn voters_at(&self, index: Index) -> Vec<NodeId> {
        self.voter_changes
            .iter()
            .rev()
            .find(|(change, _)| *change <= index)
            .map_or(&self.voters_base, |(_, voters)| voters)
            .clone()
    }

    pub fn voters(&self) -> Vec<NodeId> {
        self.voters_at(self.last_index)
    }

    /// Whether no batch holds both `index` and `index + 1`.
    pub fn is_boundary(&self, index: Index) -> bool {
        self.batch_containing(index)
            .is_none_or(|batch| batch.meta.last_index == index)
    }

    pub fn apply(&mut self, write: &DiskWrite) -> Result<(), String> {
        match write {
            DiskWrite::Append(batches) => {
                for batch in batches {
                    let meta = &batch.meta;
                    if meta.last_index <= self.last_index || meta.term < self.last_term() {
                        return Err(format!("append of {meta:?} after {}", self.last_index));
                    }
                    if self.epochs.is_empty() || meta.term > self.last_term() {
                        let start_index = if self.epochs.is_empty() {
                            self.log_start
                        } else {
                            meta.first_index
                        };
                        self.epochs.push(EpochRun {
                            term: meta.term,
                            start_index,
                        });
                    }
                    if let EntryKind::Voters(voters) = &meta.kind {
                        self.voter_changes.push((meta.last_index, voters.clone()));
                    }
                    self.last_index = meta.last_index;
                    self.batches.insert(meta.last_index, batch.clone());
                }
            }
            DiskWrite::Truncate { after_index } => {
                let after_index = *after_index;
                if after_index >= self.last_index || after_index + 1 < self.log_start {
                    return Err(format!(
                        "truncation after {after_index} of {}..={}",
                        self.log_start, self.last_index
                    ));
                }
                if !self.is_boundary(after_index) {
                    return Err(format!("truncation after {after_index} splits a batch"));
                }
                self.batches.split_off(&(after_index + 1));
                self.epochs.retain(|run| run.start_index <= after_index);
                self.voter_changes
                    .retain(|(index, _)| *index <= after_index);
                self.last_index = after_index;
            }
            DiskWrite::ResetTo {
                log_start,
                prev_term,
                voters,
            } => {
                *self = StoredLog::new(voters.clone());
                self.log_start = *log_start;
                self.prev_term = *prev_term;
                self.last_index = log_start - 1;
            }
        }
        Ok(())
    }

    /// Retention: drop everything before `log_start` (a batch boundary).
    pub fn remove_before(&mut self, log_start: Index) {
        assert!(log_start > self.log_start && log_start <= self.last_index + 1);
        assert!(self.is_boundary(log_start - 1));
        self.prev_term = self.term_at(log_start - 1).expect("held");
        self.voters_base = self.voters_at(log_start - 1);
        self.voter_changes.retain(|(index, _)| *index >= log_start);
        self.batches = self.batches.split_off(&log_start);
        let keep_from = self
            .epochs
            .iter()
            .rposition(|run| run.start_index <= log_start)
            .unwrap_or(0);
        self.epochs.drain(..keep_from);
        self.log_start = log_start;
        if log_start > self.last_index {
            self.epochs.clear();
        } else if let Some(first) = self.epochs.first_mut() {
            first.start_index = log_start;
        }
    }

    pub fn summary(&self) -> LogSummary {
        LogSummary {
            log_start: self.log_start,
            prev_term: self.prev_term,
            epochs: self.epochs.clone(),
            last_index: self.last_index,
            voters_base: self.voters_base.clone(),
            voter_changes: self.voter_changes.clone(),
        }
    }

    /// What a leader's driver attaches to a fetch response: whole batches from `from_index`.
    pub fn batches_from(&self, from_index: Index, count_max: usize) -> Vec<Batch> {
        self.batches
            .range(from_index..)
            .take(count_max)
            .map(|(_, batch)| batch.clone())
            .collect()
    }
}

/// A node's disk: what survives a crash (term and vote, synced at once; the durable log), and
/// the log as written but not yet synced.
#[derive(Debug, Clone)]
pub struct Disk {
    pub hard_state: HardState,
    pub durable: StoredLog,
    pub written: StoredLog,
    pub pending: VecDeque<DiskWrite>,
}

/// Network faults, each a chance in 1000 per message, and the delivery delay range in ticks.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub loss_per_mille: u64,
    pub duplicate_per_mille: u64,
    pub delay_ticks_max: u64,
}

pub struct InFlight {
    pub deliver_at: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub message: Message,
    /// The batches a fetch response carries.
    pub batches: Vec<Batch>,
}

pub struct Cluster {
    pub seed: u64,
    pub random: SplitMix64,
    pub now: u64,
    pub nodes: BTreeMap<NodeId, Option<RaftNode>>,
    pub disks: BTreeMap<NodeId, Disk>,
    pub network: Vec<InFlight>,
    /// Partition side of each node; messages cross only between equal sides.
    pub sides: BTreeMap<NodeId, u64>,
    pub faults: Faults,
    pub election_timeout_ticks_min: u64,
    /// The lowest index any durable log changed at since the last `take`.
    pub durable_changed_from: Option<Index>,
    /// Ticks each live node is owed (its next tick is not due yet).
    pub owed_ticks: BTreeMap<NodeId, u64>,
    payload_next: u64,
    restarts: u64,
}

impl Cluster {
    /// Nodes `1..=size`, the first `voter_count` voters, the others not (yet) members.
    pub fn new(
        seed: u64,
        voter_count: u64,
        size: u64,
        faults: Faults,
        election_timeout_ticks_min: u64,
    ) -> Cluster {
        let voters: Vec<NodeId> = (1..=voter_count).collect();
        let mut cluster = Cluster {
            seed,
            random: SplitMix64::new(seed),
            now: 0,
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            network: Vec::new(),
            sides: BTreeMap::new(),
            faults,
            election_timeout_ticks_min,
            durable_changed_from: None,
            owed_ticks: BTreeMap::new(),
            payload_next: 0,
            restarts: 0,
        };
        for id in 1..=size {
            cluster.add_node(id, voters.clone());
        }
        cluster
    }

    /// A node that has never run, with an empty disk, believing the voters are `voters`.
    pub fn add_node(&mut self, id: NodeId, voters: Vec<NodeId>) {
        let log = StoredLog::new(voters);
        self.disks.insert(
            id,
            Disk {
                hard_state: HardState::default(),
                durable: log.clone(),
                written: log,
                pending: VecDeque::new(),
            },
        );
        self.sides.insert(id, 0);
        self.restart(id);
    }

    pub fn fail(&self, what: String) -> ! {
        panic!(
            "seed {}: tick {}: {what} (replay with RAFT_SIM_SEED={})",
            self.seed, self.now, self.seed
        )
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: NodeId) -> Option<&RaftNode> {
        self.nodes.get(&id).and_then(Option::as_ref)
    }

    /// Node `id` to hand an input to, brought up to date first (as the broker's driver does).
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut RaftNode> {
        self.catch_up(id);
        self.nodes.get_mut(&id).and_then(Option::as_mut)
    }

    pub fn live(&self) -> impl Iterator<Item = &RaftNode> {
        self.nodes.values().flatten()
    }

    /// The live leader with the highest term.
    pub fn leader(&self) -> Option<NodeId> {
        self.live()
            .filter(|node| node.role() == RoleKind::Leader)
            .max_by_key(|node| node.term())
            .map(RaftNode::id)
    }

    fn config(&self, id: NodeId) -> RaftConfig {
        RaftConfig {
            id,
            election_timeout_ticks_min: self.election_timeout_ticks_min,
            begin_epoch_interval_ticks: 3,
            fetch_timeout_ticks: self.election_timeout_ticks_min / 2,
            seed: self.seed ^ (id << 48) ^ (self.restarts << 32),
        }
    }

    /// Carry out `effects` of node `id`: the hard state is durable at once; log writes go to
    /// the disk's written log and its queue; fetch responses get their batches; messages go
    /// on the network. `held` are the batches this node's driver holds for the writes.
    pub fn apply(&mut self, id: NodeId, effects: Effects, held: &[Batch]) {
        let disk = self.disks.get_mut(&id).expect("every node has a disk");
        if let Some(hard_state) = effects.hard_state {
            disk.hard_state = hard_state;
        }
        for write in effects.log_writes {
            let write = match write {
                LogWrite::Append { entries } => DiskWrite::Append(
                    entries
                        .into_iter()
                        .map(|meta| {
                            let payload = match meta.kind {
                                EntryKind::Records => held
                                    .iter()
                                    .find(|batch| batch.meta == meta)
                                    .map(|batch| batch.payload)
                                    .unwrap_or_else(|| {
                                        self.fail(format!("node {id}: no batch for {meta:?}"))
                                    }),
                                EntryKind::LeaderChange | EntryKind::Voters(_) => 0,
                            };
                            Batch { meta, payload }
                        })
                        .collect(),
                ),
                LogWrite::Truncate { after_index } => DiskWrite::Truncate { after_index },
                LogWrite::ResetTo {
                    log_start,
                    prev_term,
                    voters,
                } => DiskWrite::ResetTo {
                    log_start,
                    prev_term,
                    voters,
                },
            };
            let disk = self.disks.get_mut(&id).expect("every node has a disk");
            if let Err(error) = disk.written.apply(&write) {
                self.fail(format!("node {id}: {error}"));
            }
            disk.pending.push_back(write);
        }
        for envelope in effects.messages {
            let mut message = envelope.message;
            let mut batches = Vec::new();
            if let Message::FetchResponse {
                fetch_index,
                result: FetchResult::Entries { entries },
                ..
            } = &mut message
            {
                batches = self.disks[&id]
                    .written
                    .batches_from(*fetch_index, BATCHES_PER_FETCH_MAX);
                *entries = batches.iter().map(|batch| batch.meta.clone()).collect();
            }
            let copies = if self.random.chance(self.faults.duplicate_per_mille, 1000) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                if self.random.chance(self.faults.loss_per_mille, 1000) {
                    continue;
                }
                let deliver_at = self.now + self.random.range(1, self.faults.delay_ticks_max + 1);
                self.network.push(InFlight {
                    deliver_at,
                    from: id,
                    to: envelope.to,
                    message: message.clone(),
                    batches: batches.clone(),
                });
            }
        }
    }

    /// One tick of node `id`'s time: owed to it, and handed over once its next tick is due.
    pub fn tick_node(&mut self, id: NodeId) {
        let Some(node) = self.node(id) else {
            return;
        };
        let due = node.ticks_until_due();
        let owed = self.owed_ticks.entry(id).or_default();
        *owed += 1;
        if *owed >= due {
            self.catch_up(id);
        }
    }

    /// Hands node `id` the ticks it is owed in one `advance`, checked against a copy of the
    /// node ticked one by one.
    pub fn catch_up(&mut self, id: NodeId) {
        let owed = self.owed_ticks.remove(&id).unwrap_or(0);
        let Some(node) = self.nodes.get_mut(&id).and_then(Option::as_mut) else {
            return;
        };
        if owed == 0 {
            return;
        }
        let mut ticked = node.clone();
        let mut expected = Effects::default();
        for _ in 0..owed {
            expected.merge(ticked.tick());
        }
        let effects = node.advance(owed);
        if effects != expected || format!("{node:?}") != format!("{ticked:?}") {
            self.fail(format!(
                "node {id}: advance({owed}) differs from {owed} ticks: {effects:?} vs \
                 {expected:?}"
            ));
        }
        self.apply(id, effects, &[]);
    }

    /// Deliver every message due, in random order, calling `after_each` after each delivery.
    pub fn deliver_due(&mut self, mut after_each: impl FnMut(&Cluster)) {
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
            if let Some(node) = self.node_mut(delivery.to) {
                let effects = node.step(delivery.from, delivery.message);
                self.apply(delivery.to, effects, &delivery.batches);
                after_each(self);
            }
        }
    }

    /// Sync the oldest pending write of `id`'s disk and report it to the node.
    pub fn sync_disk(&mut self, id: NodeId) {
        let disk = self.disks.get_mut(&id).expect("every node has a disk");
        let Some(write) = disk.pending.pop_front() else {
            return;
        };
        let changed_from = match &write {
            DiskWrite::Append(batches) => batches[0].meta.first_index,
            DiskWrite::Truncate { after_index } => after_index + 1,
            DiskWrite::ResetTo { .. } => 0,
        };
        disk.durable
            .apply(&write)
            .expect("the written log took this write already");
        let (index, term) = (disk.durable.last_index, disk.durable.last_term());
        self.durable_changed_from = Some(
            self.durable_changed_from
                .map_or(changed_from, |low| low.min(changed_from)),
        );
        if let Some(node) = self.node_mut(id) {
            let effects = node.persisted(index, term);
            self.apply(id, effects, &[]);
        }
    }

    pub fn sync_all(&mut self, id: NodeId) {
        while !self.disks[&id].pending.is_empty() {
            self.sync_disk(id);
        }
    }

    /// The node dies: writes not yet synced are lost.
    pub fn crash(&mut self, id: NodeId) {
        self.nodes.insert(id, None);
        self.owed_ticks.remove(&id);
        let disk = self.disks.get_mut(&id).expect("every node has a disk");
        disk.pending.clear();
        disk.written = disk.durable.clone();
    }

    /// The node (re)starts from what its disk holds.
    pub fn restart(&mut self, id: NodeId) {
        self.restarts += 1;
        let disk = &self.disks[&id];
        let persisted = PersistedState {
            hard_state: disk.hard_state,
            log: disk.durable.summary(),
        };
        let node = RaftNode::new(self.config(id), persisted);
        self.nodes.insert(id, Some(node));
        self.owed_ticks.remove(&id);
    }

    /// The leader appends a batch of 1 to 3 records; returns its payload.
    pub fn propose(&mut self) -> Option<(NodeId, Batch)> {
        let leader = self.leader()?;
        let record_count = self.random.range(1, 4);
        let node = self.node_mut(leader)?;
        let (meta, effects) = node.propose(record_count).ok()?;
        self.payload_next += 1;
        let batch = Batch {
            meta,
            payload: self.payload_next,
        };
        self.apply(leader, effects, std::slice::from_ref(&batch));
        Some((leader, batch))
    }

    /// One tick of the whole cluster on a network without surprises: every node ticks, due
    /// messages arrive, and every disk syncs. Every node is brought up to date, so that what a
    /// test reads of a node after the tick is its state at that tick.
    pub fn tick_synced(&mut self) {
        self.now += 1;
        for id in self.ids() {
            self.tick_node(id);
            self.catch_up(id);
        }
        self.deliver_due(|_| {});
        for id in self.ids() {
            self.sync_all(id);
        }
    }
}
pub mod faultless;
