//! The thread-per-core runtime: one glommio executor per core, each owning a subset of the
//! partitions outright, and the forwarding of partition requests between them.
//!
//! A shard owns the `PartitionLog`s of the partitions that [`owner_shard`] maps to it; nothing
//! else touches them, so the data path has no locks and no shared mutable state. Work that
//! lands on the wrong shard (a connection is accepted by whichever shard the kernel picks)
//! travels to the owner over the SPSC [`mesh`](crate::mesh) as a request of its own type, and
//! its answer, of the type the request's type names, comes back the same way (`calls`).
//! Batches move (a `BytesMut` changes hands, no copy); a read's file range travels as the
//! segment's shared descriptor, so the connection's shard can still splice it to the socket
//! through a pipe (`net`'s `send_file`), counted among the owner's open files until the last
//! holder drops it.
//!
//! Invariants: only the owning shard opens a partition's log (asserted); nothing on the data
//! path is locked or shared between threads. What the runtime shares between shards is the
//! mesh rings, the doorbells and the shutdown bells; beside them, state that changes rarely and
//! is read per request (the catalog's table, the replica placement) is published immutable
//! behind a version, so a reader pays one atomic load and never a lock.
//!
//! Modules: `context` (what a shard's tasks hold, [`ShardContext`]) and its operations, one
//! concern a file (`append`, `read`, `offsets`, `logs`, `replicated`, `handover`, `shutdown`),
//! `calls` (the typed traffic of the mesh and what a shard does with each message), `cleaner`
//! (the task that compacts the shard's compacted partitions when they are due), `placement`
//! (a cluster's placement of replicas on shards), `runtime` (starting the executors, and the
//! shutdown sequence).
//!
//! Besides partition work, the mesh carries client connections: the network layer hands a
//! connection whose partition requests nearly all go to another shard over to that shard
//! ([`ShardContext::hand_over`]), as a closure of the network layer's
//! that adopts the connection on the receiving shard. It counts as work in flight on the shard
//! that had it until its handover is queued to the mesh, and on the receiving shard from the
//! moment that shard takes it, so the shutdown drain never loses one between shards.

mod append;
mod calls;
mod cleaner;
mod context;
mod handover;
pub mod listen;
mod logs;
mod offsets;
mod placement;
mod read;
mod replicated;
mod runtime;
mod shutdown;
mod verification;

use std::sync::Arc;

use bytes::Bytes;

use crate::error::LogError;
use crate::log::AbortedTransaction;
use crate::resources::ReadDescriptor;

pub use append::{refused_append, AppendKind, AppendOwner, UnreplicatedLogs};
pub use context::{AppendPending, InFlight, ShardContext};
pub use placement::ReplicaPlacement;
pub use replicated::ClientAccess;
pub use runtime::{Runtime, RuntimeConfig, RuntimeError, ShutdownHandle, TopicLogConfig};

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic: String,
    pub partition: u32,
}

impl PartitionId {
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        PartitionId {
            topic: topic.into(),
            partition,
        }
    }

    /// The partition's directory name under the data directory, as Kafka names it.
    pub fn directory_name(&self) -> String {
        crate::catalog::partition_directory_name(&self.topic, self.partition)
    }

    /// Creates the partition's (empty) directory under `data_dir`, which is what makes the
    /// partition exist for the shards. The catalog does this when it creates a topic.
    pub fn create_directory(&self, data_dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir.join(self.directory_name()))
    }
}

/// The shard that owns `partition` among `shard_count` shards: FNV-1a of the topic name plus
/// the partition number, modulo the shard count. A pure function of the name, so every shard
/// (and every restart with the same shard count) agrees without asking; consecutive partitions
/// of one topic land on consecutive shards, which spreads a topic evenly.
pub fn owner_shard(partition: &PartitionId, shard_count: usize) -> usize {
    assert!(shard_count > 0, "a runtime has at least one shard");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in partition.topic.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash.wrapping_add(u64::from(partition.partition)) % shard_count as u64) as usize
}

/// How long an append's caller waits (Kafka's acks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Answer once the batch has offsets (acks=0 callers do not even wait for this).
    Assigned,
    /// Answer once the batch is in the segment file (acks=1).
    Written,
    /// Answer once the batch is covered by an `fdatasync` (acks=all on one node).
    Durable,
}

/// What a reader may see (Kafka's isolation level of a Fetch or ListOffsets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Up to the high-water mark, open and aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Up to the last stable offset, with the aborted transactions of what is returned, so
    /// the reader can skip their records.
    ReadCommitted,
}

/// One partition of a [`ShardContext::read_many`]: whole batches from `offset`, at most
/// `bytes_max` of them (at least one batch while the shared budget has room), as `isolation`
/// lets the reader see them.
#[derive(Debug, Clone)]
pub struct PartitionRead {
    pub partition: PartitionId,
    pub offset: u64,
    pub bytes_max: usize,
    pub isolation: IsolationLevel,
}

/// What a ListOffsets request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    /// The high-water mark (for `read_committed`, the last stable offset).
    Latest,
    /// The first offset whose timestamp is at or after this one (milliseconds).
    Timestamp(i64),
}

/// Offsets given to an appended batch (or, for a retried duplicate, the original's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub last_offset: u64,
    pub log_start_offset: u64,
}

/// One open partition log's offsets and size as its owning shard sees them (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    pub partition: PartitionId,
    pub log_start_offset: u64,
    /// The written end: consumers read up to here (Kafka's high-water mark, and log end
    /// offset once the flusher caught up).
    pub high_watermark: u64,
    /// Bytes of batches in the log's segments (appended ones not yet written included).
    pub size_bytes: u64,
    pub segment_count: usize,
    /// Whether the partition can be written here: false after a failed write or sync of its
    /// log until the log (or its replica) has recovered.
    pub healthy: bool,
    /// Offsets readers are refused because their bytes on disk are damaged.
    pub damaged_offsets: u64,
    /// Damaged ranges found since the log was opened (some may be gone since: fetched again
    /// from a leader, or truncated).
    pub damage_found: u64,
    /// What `read_committed` consumers read up to (at most the high-water mark).
    pub last_stable_offset: u64,
    /// Transactions open in the partition.
    pub open_transactions: usize,
}

/// The answer to a [`OffsetQuery`], with the partition's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// `None` when no record has a timestamp at or after the one asked for.
    pub offset: Option<u64>,
    /// The timestamp of the record found by a timestamp query; `None` for the others.
    pub timestamp_ms: Option<i64>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub last_stable_offset: u64,
}

/// An owner's part of a [`ShardContext::read_many`].
#[derive(Debug)]
pub struct ReadMany {
    /// One result per read, in the request's order.
    pub results: Vec<Result<SendableRead, LogError>>,
    /// The reads (a prefix) whose data was read; the owner read only the offsets of the rest,
    /// its budget full.
    pub read_count: usize,
}

/// A read's result in a form that may cross threads.
#[derive(Debug)]
pub struct SendableRead {
    pub data: SendableData,
    /// One past the last offset returned; the requested offset when nothing was returned.
    pub offset_next: u64,
    pub log_start_offset: u64,
    /// The end of what readers may see: every batch below it is in the segment file.
    pub high_watermark: u64,
    /// The end of what `read_committed` readers may see (at most the high-water mark).
    pub last_stable_offset: u64,
    /// For a `read_committed` read, the aborted transactions overlapping the batches returned
    /// (Kafka's `abortedTransactions`); `None` for `read_uncommitted`.
    pub aborted_transactions: Option<Vec<AbortedTransaction>>,
}

#[derive(Debug)]
pub enum SendableData {
    Empty,
    /// Whole batches from memory.
    Memory(Vec<Bytes>),
    /// Whole batches at `position..position + length` of `file`: the segment file's
    /// descriptor, shared with the owning shard, which counts it among its open files and
    /// keeps it open until this (the last holder) drops it.
    File {
        file: Arc<ReadDescriptor>,
        position: u64,
        length: u64,
    },
}

impl SendableData {
    /// The number of bytes of batches.
    pub fn length(&self) -> u64 {
        match self {
            SendableData::Empty => 0,
            SendableData::Memory(batches) => batches.iter().map(|batch| batch.len() as u64).sum(),
            SendableData::File { length, .. } => *length,
        }
    }

    /// The bytes, concatenated (tools and tests; the broker splices file ranges).
    pub fn to_vec(&self) -> Result<Vec<u8>, LogError> {
        use std::os::unix::fs::FileExt;
        match self {
            SendableData::Empty => Ok(Vec::new()),
            SendableData::Memory(batches) => Ok(batches.concat()),
            SendableData::File {
                file,
                position,
                length,
            } => {
                let mut bytes = vec![0u8; *length as usize];
                file.file()
                    .read_exact_at(&mut bytes, *position)
                    .map_err(|error| LogError::io("reading a file range", error))?;
                Ok(bytes)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_stable_and_spreads_a_topic_over_every_shard() {
        let shards = 4;
        let owners: Vec<usize> = (0..8)
            .map(|partition| owner_shard(&PartitionId::new("orders", partition), shards))
            .collect();
        for shard in 0..shards {
            assert_eq!(owners.iter().filter(|&&owner| owner == shard).count(), 2);
        }
        assert_eq!(
            owner_shard(&PartitionId::new("orders", 3), shards),
            owners[3],
            "a pure function of the name"
        );
        assert_eq!(owner_shard(&PartitionId::new("x", 9), 1), 0);
    }
}
