//! Producer batches in a cluster: from the connection's shard to the partitions' Raft replicas.
//!
//! [`ShardReplication::submit_appends`] routes a produce request's batches to the shards that
//! own their partitions over the engine's mesh ([`ShardContext::submit_appends_through`]: one
//! call per owning shard, the batches moved, not copied), and on each owner [`ReplicaAppends`]
//! hands them, in the request's order, to the replica this shard runs
//! ([`ShardReplication::submit_local_append`]). So a produce flows one way, down: the Kafka
//! handler asks the cluster, which asks Raft, which appends to the log; the engine only carries
//! the call and keeps it counted as work in flight for the shutdown drain.
//!
//! Each batch is checked once, on the owner, with the engine's check for its [`AppendKind`]
//! ([`ShardContext::check_append`], against the partition's `max.message.bytes`: a producer's
//! batch as Kafka checks one, a batch the broker writes itself, a transaction's marker, as a
//! stored one) before the replica sees it, so a bad batch never reaches a Raft core and a
//! leader and a follower refuse it alike; the replica's writer then checks the idempotent
//! producer's sequence and has the core number the batch in one synchronous step
//! (`replica::writer`), stamped with the leader's term, whoever wrote it.

use bytes::BytesMut;
use engine::shard::{
    refused_append, AppendKind, AppendOwner, AppendPending, Durability, PartitionId, ShardContext,
};
use engine::LogError;

use super::ShardReplication;

/// The owner's part of [`ShardReplication::submit_appends`]: each batch to its partition's
/// replica on this shard.
struct ReplicaAppends;

impl AppendOwner for ReplicaAppends {
    async fn submit_owned(
        _context: &ShardContext,
        appends: Vec<(PartitionId, BytesMut)>,
        kind: AppendKind,
        durability: Durability,
    ) -> Vec<AppendPending> {
        let mut pending = Vec::with_capacity(appends.len());
        for (partition, batch) in appends {
            pending.push(
                ShardReplication::submit_on_this_shard(&partition, batch, kind, durability).await,
            );
        }
        pending
    }
}

impl ShardReplication {
    /// Submits a produce request's batches (in its order; or the broker's own, as `kind`
    /// says) to their partitions' replicas, wherever this broker's shards run them, and returns
    /// one wait per batch, in the same order, each resolving as `durability` says (acks=all:
    /// committed by a majority). By the time this returns, every batch has its place in its
    /// partition's order, so a connection's pipelined requests keep theirs.
    pub async fn submit_appends(
        &self,
        appends: Vec<(PartitionId, BytesMut)>,
        kind: AppendKind,
        durability: Durability,
    ) -> Vec<AppendPending> {
        self.context
            .submit_appends_through::<ReplicaAppends>(appends, kind, durability)
            .await
    }

    /// [`ShardReplication::submit_local_append`] on the calling shard's replication, which
    /// work running on a shard finds there (a produce request's owner side, a group
    /// coordinator's records); refused with NotLeader while none runs (before its start, after
    /// its stop at shutdown).
    pub async fn submit_on_this_shard(
        partition: &PartitionId,
        batch: BytesMut,
        kind: AppendKind,
        durability: Durability,
    ) -> AppendPending {
        match ShardReplication::on_this_shard() {
            Some(replication) => {
                replication
                    .submit_local_append(partition, batch, kind, durability)
                    .await
            }
            None => refused_append(LogError::NotLeader { leader: None }),
        }
    }

    /// Checks a batch for `partition` (owned by this shard) as `kind` says and queues it to
    /// the partition's replica here; refused with NotLeader where no replica runs (yet, or any
    /// more) or this one does not lead.
    pub async fn submit_local_append(
        &self,
        partition: &PartitionId,
        batch: BytesMut,
        kind: AppendKind,
        durability: Durability,
    ) -> AppendPending {
        let Some(replica) = self.replica(partition) else {
            return refused_append(LogError::NotLeader { leader: None });
        };
        // The replica holds its log open: this only looks it up (and refuses a partition the
        // placement moved to another shard meanwhile).
        match self.context.check_append(partition, batch, kind).await {
            Ok((_, batch)) => replica.submit_append(batch, durability),
            Err(error) => refused_append(error),
        }
    }
}
