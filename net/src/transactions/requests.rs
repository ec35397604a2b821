//! The requests a transaction coordinator takes, one type per kind, each with the type of its
//! answer: what it does to the state machine (without awaiting) and how it is refused whole.

use std::collections::BTreeSet;

use super::coordinator::{
    Effects, InitProducerId, ListedTransaction, ProducerIdAndEpoch, TransactionCoordinator,
};
use super::state::{TransactionError, TransactionMetadata, TransactionPartition, TransactionState};

/// One kind of request for the coordinator of a `__transaction_state` partition.
pub trait TransactionRequest: Send + 'static {
    type Answer: Send + 'static;

    /// The answer that refuses the whole request with `error`.
    fn refused(&self, error: TransactionError) -> Self::Answer;

    /// Runs the request against `state` at `now_ms`.
    fn apply(&self, state: &mut TransactionCoordinator, now_ms: i64) -> (Self::Answer, Effects);

    /// Whether `answer` is a CONCURRENT_TRANSACTIONS the driver may hold (the id's previous
    /// transaction is still being ended): it then waits for the markers to be written and
    /// applies the request again (`shard::CONCURRENT_HOLD_MAX`). False (the default): answered
    /// as it is.
    fn is_concurrent(_answer: &Self::Answer) -> bool {
        false
    }
}

impl TransactionRequest for InitProducerId {
    type Answer = Result<ProducerIdAndEpoch, TransactionError>;

    fn refused(&self, error: TransactionError) -> Self::Answer {
        Err(error)
    }

    fn apply(&self, state: &mut TransactionCoordinator, now_ms: i64) -> (Self::Answer, Effects) {
        state.init_producer_id(self, now_ms)
    }

    fn is_concurrent(answer: &Self::Answer) -> bool {
        matches!(answer, Err(TransactionError::ConcurrentTransactions))
    }
}

/// Partitions join a transaction (AddPartitionsToTxn, AddOffsetsToTxn).
#[derive(Debug)]
pub struct AddPartitions {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partitions: Vec<TransactionPartition>,
}

impl TransactionRequest for AddPartitions {
    type Answer = Result<(), TransactionError>;

    fn refused(&self, error: TransactionError) -> Self::Answer {
        Err(error)
    }

    fn apply(&self, state: &mut TransactionCoordinator, now_ms: i64) -> (Self::Answer, Effects) {
        state.add_partitions(
            &self.transactional_id,
            self.producer_id,
            self.producer_epoch,
            &self.partitions,
            now_ms,
        )
    }

    fn is_concurrent(answer: &Self::Answer) -> bool {
        matches!(answer, Err(TransactionError::ConcurrentTransactions))
    }
}

/// Whether partitions are in a transaction (AddPartitionsToTxn with `verify_only`).
#[derive(Debug)]
pub struct VerifyPartitions(pub AddPartitions);

impl TransactionRequest for VerifyPartitions {
    type Answer = Vec<(TransactionPartition, Result<(), TransactionError>)>;

    fn refused(&self, error: TransactionError) -> Self::Answer {
        self.0
            .partitions
            .iter()
            .map(|partition| (partition.clone(), Err(error)))
            .collect()
    }

    fn apply(&self, state: &mut TransactionCoordinator, _: i64) -> (Self::Answer, Effects) {
        let request = &self.0;
        let answer = state.verify_partitions(
            &request.transactional_id,
            request.producer_id,
            request.producer_epoch,
            &request.partitions,
        );
        (answer, Effects::default())
    }

    /// Held like AddPartitionsToTxn while the transaction's markers are written, so the
    /// produce it verifies gets the transaction's outcome, not a retriable refusal.
    fn is_concurrent(answer: &Self::Answer) -> bool {
        answer
            .iter()
            .any(|(_, result)| matches!(result, Err(TransactionError::ConcurrentTransactions)))
    }
}

/// EndTxn.
#[derive(Debug)]
pub struct EndTransaction {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
}

impl TransactionRequest for EndTransaction {
    type Answer = Result<(), TransactionError>;

    fn refused(&self, error: TransactionError) -> Self::Answer {
        Err(error)
    }

    fn apply(&self, state: &mut TransactionCoordinator, now_ms: i64) -> (Self::Answer, Effects) {
        state.end_transaction(
            &self.transactional_id,
            self.producer_id,
            self.producer_epoch,
            self.commit,
            now_ms,
        )
    }
}

/// One transactional id's state (DescribeTransactions).
#[derive(Debug)]
pub struct DescribeTransaction {
    pub transactional_id: String,
}

impl TransactionRequest for DescribeTransaction {
    type Answer = Result<TransactionMetadata, TransactionError>;

    fn refused(&self, error: TransactionError) -> Self::Answer {
        Err(error)
    }

    fn apply(&self, state: &mut TransactionCoordinator, _: i64) -> (Self::Answer, Effects) {
        (state.describe(&self.transactional_id), Effects::default())
    }
}

/// The partition's transactions that pass the filters (ListTransactions).
#[derive(Debug, Clone)]
pub struct ListTransactions {
    pub states: BTreeSet<TransactionState>,
    pub producer_ids: BTreeSet<i64>,
    pub duration_min_ms: i64,
}

impl TransactionRequest for ListTransactions {
    type Answer = Result<Vec<ListedTransaction>, TransactionError>;

    fn refused(&self, error: TransactionError) -> Self::Answer {
        Err(error)
    }

    fn apply(&self, state: &mut TransactionCoordinator, now_ms: i64) -> (Self::Answer, Effects) {
        let listed = state.list(
            &self.states,
            &self.producer_ids,
            self.duration_min_ms,
            now_ms,
        );
        (Ok(listed), Effects::default())
    }
}
