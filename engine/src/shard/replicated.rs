//! What the shard knows of the partitions replication runs: who may serve their clients, as
//! data replication pushes down whenever it changes ([`ShardContext::set_client_access`]), never
//! an object the shard calls up into. In a cluster, every partition is served only through its
//! Raft replica, so:
//! - Producer batches never reach this crate's append: replication routes them to the owning
//!   shard itself (over this crate's mesh, [`ShardContext::submit_appends_through`]) and hands
//!   them to the partition's replica there, which appends to the `PartitionLog`. The shard's own
//!   append refuses them (`LogError::Replicated`: a routing bug, never a silent write).
//! - Reads, offset queries and deletions are served only where this broker leads; followers
//!   refuse them with the leader they know, as Kafka's refuse clients with
//!   NOT_LEADER_OR_FOLLOWER (`check_leading`), and so does a broker on a
//!   partition whose replica it does not run (yet).
//! - A faulted replica makes its partition unhealthy in the metrics.
//!
//! The engine knows nothing of Raft: a [`ClientAccess`] says only who leads and from which
//! offset on the log holds this leader's term. Messages between replicas reach the owning shard
//! as replication's own typed closures ([`ShardContext::post`]), also without the engine knowing
//! what they say.
//!
//! The group coordinator (`net::groups`) appends its records to a replicated
//! `__consumer_offsets` partition the same way, through replication, never through this crate's
//! append.

use super::{PartitionId, ShardContext};
use crate::error::LogError;

/// Who may serve a replicated partition's clients on this broker, as its replica last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAccess {
    /// This broker leads the partition in `term`. Its log holds everything earlier leaders
    /// committed once its high-water mark reaches `term_committed_at` (one past the leader's
    /// first batch of the term: a leader commits only entries of its own term, its first one
    /// first); the group coordinator waits for that.
    Leader { term: u64, term_committed_at: u64 },
    /// Another broker leads (`leader`, when known): clients go there.
    Follower { leader: Option<u64> },
    /// The replica cannot write its log just now and takes no part in its group (it comes back
    /// by itself): clients are refused as by a follower that knows no leader, and the partition
    /// is reported unhealthy.
    Faulted,
}

impl ShardContext {
    /// Says who may serve `partition`'s clients: replication calls it when it starts running
    /// the partition's replica, on the shard that owns the partition, and whenever that changes.
    pub fn set_client_access(&self, partition: &PartitionId, access: ClientAccess) {
        let mut accesses = self.state.client_access.borrow_mut();
        match accesses.get_mut(partition) {
            Some(known) => *known = access,
            None => {
                assert_eq!(self.owner_of(partition), self.state.shard_id);
                accesses.insert(partition.clone(), access);
            }
        }
    }

    /// Forgets `partition`'s access: its replica stopped running here.
    pub fn clear_client_access(&self, partition: &PartitionId) {
        self.state.client_access.borrow_mut().remove(partition);
    }

    /// Who may serve `partition`'s clients, if replication runs its replica on this shard.
    pub fn client_access(&self, partition: &PartitionId) -> Option<ClientAccess> {
        self.state.client_access.borrow().get(partition).copied()
    }

    /// The term this broker leads `partition` in, once its log up to the high-water mark holds
    /// an entry of that term (so everything earlier leaders committed); `None` before that and
    /// wherever it does not lead. A group coordinator runs only while this is `Some`, and is
    /// reloaded whenever the term changes.
    pub fn leading_term(&self, partition: &PartitionId) -> Option<u64> {
        let Some(ClientAccess::Leader {
            term,
            term_committed_at,
        }) = self.client_access(partition)
        else {
            return None;
        };
        // A replicated partition's replica holds its log open.
        let log = self.open_log(partition)?;
        (log.high_watermark() >= term_committed_at).then_some(term)
    }

    /// Refuses client work on a replicated partition this broker does not lead, and in a
    /// cluster on one whose replica it does not run (yet).
    pub(super) fn check_leading(&self, partition: &PartitionId) -> Result<(), LogError> {
        match self.client_access(partition) {
            Some(ClientAccess::Leader { .. }) => Ok(()),
            Some(ClientAccess::Follower { leader }) => Err(LogError::NotLeader { leader }),
            Some(ClientAccess::Faulted) => Err(LogError::NotLeader { leader: None }),
            None if self.partitions_replicated() => Err(LogError::NotLeader { leader: None }),
            None => Ok(()),
        }
    }
}
