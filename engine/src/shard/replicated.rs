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
//! groups (`leading_term`); the group coordinator runs only then.

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

    pub(super) fn replicated(
        &self,
        partition: &PartitionId,
    ) -> Option<Rc<dyn ReplicatedPartition>> {
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
}
