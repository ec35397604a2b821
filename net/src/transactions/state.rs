//! One transactional id's state (Kafka's `TransactionMetadata`) and the errors the coordinator
//! answers with.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

use super::record::NO_PRODUCER_ID;

/// Kafka's "no epoch" (RecordBatch.NO_PRODUCER_EPOCH).
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// A transaction's state, with Kafka's ids (the `TransactionStatus` of its record) and names
/// (DescribeTransactions, ListTransactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i8)]
pub enum TransactionState {
    /// No transaction open (the id was just initialised).
    Empty = 0,
    /// Partitions were added: a transaction is open.
    Ongoing = 1,
    /// EndTxn(commit) is durable; the markers are being written.
    PrepareCommit = 2,
    /// EndTxn(abort), a fence or a timeout is durable; the markers are being written.
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    /// Expired: its tombstone is being written.
    Dead = 6,
    /// A fence of an open transaction, on its way to PrepareAbort (never written).
    PrepareEpochFence = 7,
}

impl TransactionState {
    pub const ALL: [TransactionState; 8] = [
        TransactionState::Empty,
        TransactionState::Ongoing,
        TransactionState::PrepareCommit,
        TransactionState::PrepareAbort,
        TransactionState::CompleteCommit,
        TransactionState::CompleteAbort,
        TransactionState::Dead,
        TransactionState::PrepareEpochFence,
    ];

    pub fn from_id(id: i8) -> Option<TransactionState> {
        TransactionState::ALL
            .into_iter()
            .find(|state| *state as i8 == id)
    }

    /// Kafka's name of the state (`TransactionState.name`).
    pub fn name(self) -> &'static str {
        match self {
            TransactionState::Empty => "Empty",
            TransactionState::Ongoing => "Ongoing",
            TransactionState::PrepareCommit => "PrepareCommit",
            TransactionState::PrepareAbort => "PrepareAbort",
            TransactionState::CompleteCommit => "CompleteCommit",
            TransactionState::CompleteAbort => "CompleteAbort",
            TransactionState::Dead => "Dead",
            TransactionState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TransactionState> {
        TransactionState::ALL
            .into_iter()
            .find(|state| state.name() == name)
    }

    /// Whether a transaction in this state is over, so the id may take a new one.
    pub fn is_complete(self) -> bool {
        matches!(
            self,
            TransactionState::Empty
                | TransactionState::CompleteCommit
                | TransactionState::CompleteAbort
        )
    }
}

/// A (topic, partition) pair of a transaction.
pub type TransactionPartition = (String, i32);

/// One transactional id's producer and transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last rotation (KIP-360: a retry of the InitProducerId that
    /// rotated it is recognised by it); not in version 0 records.
    pub previous_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump (a retried InitProducerId is recognised by it); not
    /// recorded, as in Kafka.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TransactionState,
    pub partitions: BTreeSet<TransactionPartition>,
    /// When the open transaction started (-1: none).
    pub start_ms: i64,
    pub last_update_ms: i64,
}

impl TransactionMetadata {
    /// A new id's metadata, before its first epoch.
    pub fn new(
        transactional_id: String,
        producer_id: i64,
        timeout_ms: i32,
        now_ms: i64,
    ) -> TransactionMetadata {
        TransactionMetadata {
            transactional_id,
            producer_id,
            previous_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state: TransactionState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }
    }

    /// The partitions grouped by topic, each topic's in order.
    pub fn topics(&self) -> BTreeMap<String, Vec<i32>> {
        let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in &self.partitions {
            topics.entry(topic.clone()).or_default().push(*partition);
        }
        topics
    }

    /// Whether the epoch cannot be bumped again (Kafka keeps the last value for a fence).
    pub fn is_epoch_exhausted(epoch: i16) -> bool {
        epoch >= i16::MAX - 1
    }
}

/// Why a transaction call is refused: each carries its Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    #[error("invalid request")]
    InvalidRequest,
    #[error("the transaction timeout is larger than the broker's maximum")]
    InvalidTransactionTimeout,
    #[error("a transaction of this id is being ended; retry")]
    ConcurrentTransactions,
    #[error("a newer producer with the same transactional id exists")]
    ProducerFenced,
    #[error("the producer id does not belong to the transactional id")]
    InvalidProducerIdMapping,
    #[error("the transaction is not in a state that allows this")]
    InvalidTxnState,
    #[error("no such transactional id")]
    TransactionalIdNotFound,
    #[error("the partition is not in the transaction")]
    TransactionAbortable,
    #[error("this broker is not the transaction's coordinator")]
    NotCoordinator,
    #[error("the coordinator is loading")]
    CoordinatorLoadInProgress,
    #[error("the coordinator is not available")]
    CoordinatorNotAvailable,
}

impl TransactionError {
    pub fn code(self) -> i16 {
        let error = match self {
            TransactionError::InvalidRequest => ResponseError::InvalidRequest,
            TransactionError::InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
            TransactionError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
            TransactionError::ProducerFenced => ResponseError::ProducerFenced,
            TransactionError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
            TransactionError::InvalidTxnState => ResponseError::InvalidTxnState,
            TransactionError::TransactionalIdNotFound => ResponseError::TransactionalIdNotFound,
            TransactionError::TransactionAbortable => ResponseError::TransactionAbortable,
            TransactionError::NotCoordinator => ResponseError::NotCoordinator,
            TransactionError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
            TransactionError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        };
        error.code()
    }

    /// [`TransactionError::code`] in the answer to `api_version` of an API whose versions
    /// from `fenced_since` on may carry PRODUCER_FENCED (KIP-588, Kafka 2.7): older versions get
    /// INVALID_PRODUCER_EPOCH instead, the code their clients know for the same case, as Kafka
    /// answers them (kafkajs, older Sarama and librdkafka send the older versions; an unknown
    /// code leaves them without the fencing error they handle).
    pub fn code_at(self, api_version: i16, fenced_since: i16) -> i16 {
        match self {
            TransactionError::ProducerFenced if api_version < fenced_since => {
                ResponseError::InvalidProducerEpoch.code()
            }
            _ => self.code(),
        }
    }
}
