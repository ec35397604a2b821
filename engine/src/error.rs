//! The engine's error type. Callers (the network layer) map each variant to a Kafka error code
//! in one place; nothing here knows those codes.

use std::io;

use thiserror::Error;

use crate::batch::BatchError;

/// Why a log operation did not happen. Cloneable so that one failed flush can be reported to
/// every append that was waiting on it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LogError {
    /// The batch was rejected before anything reached the log.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// An idempotent producer's batch does not continue its sequence: a batch went missing in
    /// between (or this one is a retry older than the batches the log remembers). Nothing was
    /// written. Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[error(
        "out-of-order sequence from producer {producer_id}: expected sequence {expected}, \
         received {received}; the batch was not written"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        received: i32,
    },
    /// An idempotent producer's batch carries an epoch older than one the log has already
    /// seen for it (a fenced, zombie instance). Nothing was written. Kafka's
    /// INVALID_PRODUCER_EPOCH.
    #[error(
        "producer {producer_id} sent epoch {received}, older than its current epoch {current}; \
         the batch was not written"
    )]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        received: i16,
    },
    /// A producer's batch or marker does not fit its transaction's state: a non-transactional
    /// batch while its transaction is open. Nothing was written. Kafka's INVALID_TXN_STATE.
    #[error("producer {producer_id}: {reason}; the batch was not written")]
    InvalidTransactionState {
        producer_id: i64,
        reason: &'static str,
    },
    /// A transaction marker from a coordinator older than the one that wrote the producer's
    /// last marker (a deposed coordinator). Nothing was written. Kafka's
    /// TRANSACTION_COORDINATOR_FENCED.
    #[error(
        "marker for producer {producer_id} from coordinator epoch {received}, older than \
         {current}; the marker was not written"
    )]
    TransactionCoordinatorFenced {
        producer_id: i64,
        current: i32,
        received: i32,
    },
    /// A replicated batch starts below the log end (the follower must truncate first, or the
    /// batch is garbage). Nothing was written.
    #[error("replicated batch at offset {base_offset} is below the log end {log_end_offset}")]
    BelowLogEnd {
        base_offset: i64,
        log_end_offset: u64,
    },
    /// The partition is replicated and this broker does not lead it: clients go to the leader
    /// (`leader`, when known). Kafka's NOT_LEADER_OR_FOLLOWER.
    #[error("this broker does not lead the partition (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// A producer's batch for a partition whose log replication runs reached the shard's own
    /// append (a routing bug: in a cluster, producer batches go to the partition's Raft
    /// replica). Nothing was written.
    #[error("the partition is replicated: its batches are appended by its replica")]
    Replicated,
    /// acks=all was asked while fewer replicas than `min.insync.replicas` are in sync. Nothing
    /// was written. Kafka's NOT_ENOUGH_REPLICAS.
    #[error("{in_sync} replica(s) in sync, fewer than min.insync.replicas={required}")]
    NotEnoughReplicas { in_sync: usize, required: u32 },
    /// A batch of a leader epoch older than the log's latest: a deposed leader's write. Nothing
    /// was written. Kafka's FENCED_LEADER_EPOCH.
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    StaleLeaderEpoch { epoch: i32, latest: i32 },
    /// The requested offset is outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: u64,
        log_start_offset: u64,
        log_end_offset: u64,
    },
    /// The device has no space left. The partition stays readable; later appends work once
    /// space is freed.
    #[error("no space left on the log device while {operation}")]
    DiskFull { operation: &'static str },
    /// Any other I/O failure, with the operation that failed.
    #[error("I/O error while {operation}: {message} ({kind:?})")]
    Io {
        operation: &'static str,
        kind: io::ErrorKind,
        message: String,
    },
    /// The appended data was discarded before it became durable: a flush failed, or the log
    /// was truncated back past it.
    #[error("appended batch was discarded before it was written ({reason})")]
    Discarded { reason: &'static str },
    /// The partition does not exist on this broker (its topic was never created here, or
    /// was deleted). Only the catalog creates partition directories.
    #[error("partition {0} does not exist")]
    UnknownPartition(String),
    /// The log is shutting down (or was closed) and takes no more appends.
    #[error("the log is closed")]
    Closed,
    /// The log configuration breaks one of its own bounds.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// The on-disk state contradicts itself in a way recovery cannot repair.
    #[error("corrupt log directory: {0}")]
    Corrupt(String),
    /// The offsets' bytes on disk are damaged (found when the log was opened or read); every
    /// other offset of the partition is served. Kafka's CORRUPT_MESSAGE.
    #[error(
        "offsets {start_offset}..{end_offset} of this partition are damaged on disk ({reason}); \
         they are refused until a replica fetches them again or an operator drops them \
         (ferrite repair-log)"
    )]
    Damaged {
        start_offset: u64,
        end_offset: u64,
        reason: String,
    },
}

impl LogError {
    /// Wraps an I/O error from `operation`, recognising a full disk.
    pub fn io(operation: &'static str, error: io::Error) -> LogError {
        if error.raw_os_error() == Some(libc::ENOSPC) || error.kind() == io::ErrorKind::StorageFull
        {
            return LogError::DiskFull { operation };
        }
        LogError::Io {
            operation,
            kind: error.kind(),
            message: error.to_string(),
        }
    }

    /// Wraps an error from glommio's file API.
    pub fn glommio<T>(operation: &'static str, error: glommio::GlommioError<T>) -> LogError {
        match error {
            // Keep the OS error number, which the conversion to io::Error would drop.
            glommio::GlommioError::EnhancedIoError { source, .. }
            | glommio::GlommioError::IoError(source) => LogError::io(operation, source),
            other => LogError::io(operation, io::Error::from(other)),
        }
    }
}
