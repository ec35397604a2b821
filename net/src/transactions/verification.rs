//! KIP-890 part 1 on the partition leader's side: before a transactional producer's batch
//! opens its transaction on a partition, the transaction coordinator confirms the partition is
//! in the producer's ongoing transaction, at that epoch (Kafka's `ReplicaManager`
//! `maybeStartTransactionVerificationForPartitions` with its `AddPartitionsToTxnManager`,
//! AddPartitionsToTxn with `verify_only`). A late batch from a hung producer whose transaction
//! was aborted meanwhile is refused instead of opening a transaction nobody will end (which
//! would hold the partition's last stable offset back for good).
//!
//! The steps, for the partitions of one produce request whose batches are transactional:
//! 1. each partition's log, on its owning shard, says whether the producer's transaction is
//!    open there already (nothing to ask) or hands out a guard
//!    (`ShardContext::start_transaction_verifications`, `engine::log::VerificationGuard`);
//! 2. the coordinator of the transactional id is asked about the partitions that need it, in
//!    one call (`VerifyPartitions`, the coordinator's `verify_partitions`; on whichever shard
//!    owns its `__transaction_state` partition, `coordinator_log::on_owning_shard`);
//! 3. the batches are appended with their guard (`AppendKind::Verified`): the log refuses a
//!    batch that would open a transaction if a marker came in between (the transaction ended
//!    while the coordinator was asked), so the answer cannot be stale.
//!
//! Refusals become the codes Kafka answers a produce with (`produce_error`): PRODUCER_FENCED
//! as INVALID_PRODUCER_EPOCH (what producers handle there), "not in the transaction" as
//! INVALID_TXN_STATE (Produce v11+ would carry TRANSACTION_ABORTABLE; we serve up to v9), and
//! the coordinator's retriable errors (moving, loading, ending the previous transaction) as
//! NOT_ENOUGH_REPLICAS, which every client retries without refreshing its metadata.
//!
//! Real clients send AddPartitionsToTxn before their first batch to a partition, so for them
//! the answer is yes, and only a transaction's first batch on each partition waits for it; the
//! wait holds the connection's next requests (as Kafka, which handles a connection's requests
//! one at a time), so a producer's batches keep their order.

use kafka_protocol::ResponseError;

use super::requests::{AddPartitions, VerifyPartitions};
use super::state::{TransactionError, TransactionPartition};
use crate::broker::Broker;

/// Why a partition's batch was not verified: the Kafka error code Produce answers, and a
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationRefused {
    pub code: i16,
    pub message: String,
}

/// The coordinator's answer for partitions of a transaction, one per partition in order;
/// `None` where no coordinator of the id runs on this broker (in a cluster, another broker
/// coordinates it).
pub async fn verify_with_coordinator(
    broker: &Broker,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<TransactionPartition>,
) -> Option<Vec<Result<(), VerificationRefused>>> {
    let state_partition = broker.transactions.state_partition(transactional_id);
    let request = VerifyPartitions(AddPartitions {
        transactional_id: transactional_id.to_owned(),
        producer_id,
        producer_epoch,
        partitions,
    });
    let answers = broker.transactions.call(state_partition, request).await;
    let elsewhere = broker.cluster.is_some()
        && answers
            .iter()
            .any(|(_, answer)| *answer == Err(TransactionError::NotCoordinator));
    if elsewhere {
        return None;
    }
    Some(
        answers
            .into_iter()
            .map(|(_, answer)| answer.map_err(produce_error))
            .collect(),
    )
}

/// A coordinator's refusal of a verification as Produce answers it (Kafka's
/// `AddPartitionsToTxnManager` and `ReplicaManager.handleProduceAppend`).
pub fn produce_error(error: TransactionError) -> VerificationRefused {
    let (code, message) = match error {
        TransactionError::ProducerFenced => (
            ResponseError::InvalidProducerEpoch.code(),
            "a newer producer with the same transactional id exists".to_owned(),
        ),
        TransactionError::TransactionAbortable | TransactionError::InvalidTxnState => (
            ResponseError::InvalidTxnState.code(),
            "Partition was not added to the transaction".to_owned(),
        ),
        TransactionError::ConcurrentTransactions
        | TransactionError::NotCoordinator
        | TransactionError::CoordinatorLoadInProgress
        | TransactionError::CoordinatorNotAvailable => (
            ResponseError::NotEnoughReplicas.code(),
            format!(
                "Unable to verify the partition has been added to the transaction. Underlying \
                 error: {error}"
            ),
        ),
        error => (error.code(), error.to_string()),
    };
    VerificationRefused { code, message }
}
