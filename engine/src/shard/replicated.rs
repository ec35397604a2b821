//! Partitions whose log is a Raft log, as the shard sees them. Replication (a crate above this
//! one) registers each partition it runs on its owning shard; from then on the shard sends that
//! partition's producer batches to the partition's Raft group instead of appending them itself,
//! and answers reads, offset queries and deletions only where this broker leads, as Kafka's
//! followers refuse clients with NOT_LEADER_OR_FOLLOWER.
//!
//! The engine knows nothing of Raft: a [`ReplicatedPartition`] is an object that can take a
//! batch in the partition's order and say who leads. Messages between replicas reach the owning
//! shard as replication's own typed closures ([`crate::shard::ShardContext::post`]), also
//! without the engine knowing what they say.
//!
//! A [`ReplicatedPartition`] also says the term it leads in once it is ready to coordinate
//! groups (`leading_term`); the group coordinator runs only then. [`ReplicationStats`] is what
//! the shard's replicas sent and received and how long each stage of a replicated write took,
//! counted by replication and rendered by `net`'s metrics: the engine keeps the counters so that
//! the metrics snapshot, which it publishes, carries them.

use std::cell::RefCell;
use std::rc::Rc;

use super::{AppendPending, Durability, PartitionId, ShardContext};
use crate::batch::CheckedBatch;
use crate::error::LogError;

/// What the shard needs of a replicated partition.
pub trait ReplicatedPartition {
    /// Queues a producer's batch (checked by the shard) in the partition's order,
    /// synchronously, and returns the wait for `durability`: `Durable` means committed by a
    /// majority of the group (acks=all), `Written` in the leader's log file (acks=1). Refused
    /// with `LogError::NotLeader` unless this broker leads.
    fn submit_append(&self, batch: CheckedBatch, durability: Durability) -> AppendPending;

    /// Whether this broker leads the partition, and if not, who does (when known).
    fn leadership(&self) -> Leadership;

    /// Why this broker's replica takes no part in the partition just now (its log could not
    /// be written), if so: the partition is reported unhealthy. `None` by default.
    fn fault(&self) -> Option<String> {
        None
    }

    /// The term this broker leads in, once the log up to its high-water mark holds an entry
    /// of that term (so everything earlier leaders committed); `None` before that and
    /// wherever it does not lead. A group coordinator runs only while this is `Some`, and is
    /// reloaded whenever the term changes.
    fn leading_term(&self) -> Option<u64>;
}

/// Who leads a replicated partition, as this broker knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    Local,
    Remote(Option<u64>),
}

impl ShardContext {
    /// Makes `partition` (owned by this shard) a replicated one: producer batches go to
    /// `replicated`, and clients are served only where this broker leads.
    pub fn register_replicated(
        &self,
        partition: PartitionId,
        replicated: Rc<dyn ReplicatedPartition>,
    ) {
        assert_eq!(self.owner_of(&partition), self.state.shard_id);
        self.state
            .replicated
            .borrow_mut()
            .insert(partition, replicated);
    }

    pub fn unregister_replicated(&self, partition: &PartitionId) {
        self.state.replicated.borrow_mut().remove(partition);
    }

    pub fn replicated(&self, partition: &PartitionId) -> Option<Rc<dyn ReplicatedPartition>> {
        self.state.replicated.borrow().get(partition).cloned()
    }

    /// Refuses client work on a replicated partition this broker does not lead, and in a
    /// cluster on one whose replica it does not run (yet).
    pub(super) fn check_leading(&self, partition: &PartitionId) -> Result<(), LogError> {
        match self
            .replicated(partition)
            .map(|replicated| replicated.leadership())
        {
            Some(Leadership::Local) => Ok(()),
            Some(Leadership::Remote(leader)) => Err(LogError::NotLeader { leader }),
            None if self.partitions_replicated() => Err(LogError::NotLeader { leader: None }),
            None => Ok(()),
        }
    }

    /// Where the shard's replicas count what they did (see [`ReplicationStats`]).
    pub fn replication_counts(&self) -> Rc<RefCell<ReplicationStats>> {
        self.state.replication_stats.clone()
    }

    /// What the shard's replicas did so far.
    pub fn replication_stats(&self) -> ReplicationStats {
        self.state.replication_stats.borrow().clone()
    }
}

/// Where a replicated write's time goes, for `/metrics` (`ferrite_replication_*`): what the
/// shard's replicas sent and received, by kind, and how long each stage of an acks=all write
/// took. Kept per shard by the replication crate ([`crate::shard::ShardContext::replication_counts`]),
/// published with the shard's other metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationStats {
    /// Partition messages sent to peers, by [`MessageKind`].
    pub sent: [u64; MessageKind::COUNT],
    /// Partition messages received from peers, by [`MessageKind`].
    pub received: [u64; MessageKind::COUNT],
    /// Record batches carried by fetch answers sent (leader) and received (follower).
    pub batches_sent: u64,
    pub batches_received: u64,
    /// Frames sent to peers carrying partition messages (each gathers one executor turn's).
    pub frames_sent: u64,
    /// Fetches a leader held (nothing new for the follower) until its log or commit moved.
    pub fetches_held: u64,
    /// Answers with entries after which a follower did not fetch at once: the entries of
    /// the answer before were not durable yet (the fetch floor).
    pub fetch_floor_waits: u64,
    /// Stage durations, by [`Stage`].
    pub stages: [StageHistogram; Stage::COUNT],
}

/// The kinds of partition message [`ReplicationStats`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Fetch,
    /// A fetch answer carrying batches.
    FetchEntries,
    /// A fetch answer carrying none (the commit index, a divergence, a snapshot point).
    FetchAnswer,
    Durable,
    /// Elections and the rest.
    Other,
}

impl MessageKind {
    pub const COUNT: usize = 5;
    pub const ALL: [MessageKind; MessageKind::COUNT] = [
        MessageKind::Fetch,
        MessageKind::FetchEntries,
        MessageKind::FetchAnswer,
        MessageKind::Durable,
        MessageKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Fetch => "fetch",
            MessageKind::FetchEntries => "fetch_entries",
            MessageKind::FetchAnswer => "fetch_answer",
            MessageKind::Durable => "durable",
            MessageKind::Other => "other",
        }
    }
}

/// The stages of a replicated write that [`ReplicationStats`] times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Leader: a producer's batch submitted until the partition's writer placed it (waiting
    /// behind earlier writes).
    Place,
    /// Leader: placed until durable in its own log.
    LeaderDurable,
    /// Leader: placed until committed (acks=all answered).
    Commit,
    /// Leader: entries sent to a follower until the follower's report (fetch or `Durable`)
    /// says they are durable there: the replication round trip.
    FollowerRound,
    /// Follower: fetched entries handed to its writer until durable in its log.
    FollowerDurable,
}

impl Stage {
    pub const COUNT: usize = 5;
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::Place,
        Stage::LeaderDurable,
        Stage::Commit,
        Stage::FollowerRound,
        Stage::FollowerDurable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Place => "place",
            Stage::LeaderDurable => "leader_durable",
            Stage::Commit => "commit",
            Stage::FollowerRound => "follower_round",
            Stage::FollowerDurable => "follower_durable",
        }
    }
}

/// A Prometheus histogram of durations: counts per upper bound (cumulative when rendered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageHistogram {
    /// Observations per bucket of [`StageHistogram::BOUNDS_MICROS`], the last one unbounded.
    pub buckets: [u64; StageHistogram::BOUNDS_MICROS.len() + 1],
    pub count: u64,
    pub sum_micros: u64,
}

impl StageHistogram {
    /// Upper bounds, in microseconds: 0.5 ms to 5 s.
    pub const BOUNDS_MICROS: [u64; 13] = [
        500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
        2_000_000, 5_000_000,
    ];

    pub fn observe(&mut self, elapsed: std::time::Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = Self::BOUNDS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(Self::BOUNDS_MICROS.len());
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Adds another shard's observations.
    pub fn merge(&mut self, other: &StageHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }
}

impl ReplicationStats {
    pub fn observe(&mut self, stage: Stage, elapsed: std::time::Duration) {
        self.stages[stage as usize].observe(elapsed);
    }

    /// Adds another shard's counts.
    pub fn merge(&mut self, other: &ReplicationStats) {
        for (mine, theirs) in self.sent.iter_mut().zip(other.sent) {
            *mine += theirs;
        }
        for (mine, theirs) in self.received.iter_mut().zip(other.received) {
            *mine += theirs;
        }
        self.batches_sent += other.batches_sent;
        self.batches_received += other.batches_received;
        self.frames_sent += other.frames_sent;
        self.fetches_held += other.fetches_held;
        self.fetch_floor_waits += other.fetch_floor_waits;
        for (mine, theirs) in self.stages.iter_mut().zip(&other.stages) {
            mine.merge(theirs);
        }
    }
}
