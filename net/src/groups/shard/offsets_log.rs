//! Where a shard's coordinators append the records of a change: the log of their
//! `__consumer_offsets` partition, which the shard owns. On a broker alone that is the shard's
//! own log ([`LocalOffsetsLog`]); in a cluster the partition's Raft replica on the shard
//! ([`ReplicatedOffsetsLog`]), so that a majority has the records before anyone hears of the
//! change, and a broker that does not lead is refused. The choice is made once, where the
//! broker starts, and goes down: net asks replication, which appends to the engine's log.

use bytes::BytesMut;
use engine::shard::{AppendKind, AppendPending, Durability, PartitionId, ShardContext};
use ferrite_replication::shard::ShardReplication;
use futures::future::LocalBoxFuture;

/// How a shard's coordinators append their records to their partition.
pub trait OffsetsLog {
    /// Places `batch` in `partition`'s order before it resolves, and returns the wait until it
    /// is durable as `durability` says; refused with `LogError::NotLeader` where this broker
    /// does not lead the partition. The batch is the broker's own (`AppendKind::BrokerWritten`,
    /// Kafka's coordinator appends): records, a transaction's offsets (transactional, without
    /// a sequence), or a transaction's marker (a control batch).
    fn submit<'a>(
        &'a self,
        context: &'a ShardContext,
        partition: &'a PartitionId,
        batch: BytesMut,
        durability: Durability,
    ) -> LocalBoxFuture<'a, AppendPending>;
}

/// A broker alone: the shard's own log of the partition.
pub struct LocalOffsetsLog;

impl OffsetsLog for LocalOffsetsLog {
    fn submit<'a>(
        &'a self,
        context: &'a ShardContext,
        partition: &'a PartitionId,
        batch: BytesMut,
        durability: Durability,
    ) -> LocalBoxFuture<'a, AppendPending> {
        Box::pin(context.submit_local_append(
            partition,
            batch,
            AppendKind::BrokerWritten,
            durability,
        ))
    }
}

/// A broker of a cluster: the partition's replica on the shard, through this shard's
/// replication (which starts after the coordinators; until it runs, appends are refused as
/// where the broker does not lead).
pub struct ReplicatedOffsetsLog;

impl OffsetsLog for ReplicatedOffsetsLog {
    fn submit<'a>(
        &'a self,
        _context: &'a ShardContext,
        partition: &'a PartitionId,
        batch: BytesMut,
        durability: Durability,
    ) -> LocalBoxFuture<'a, AppendPending> {
        Box::pin(ShardReplication::submit_on_this_shard(
            partition,
            batch,
            AppendKind::BrokerWritten,
            durability,
        ))
    }
}
