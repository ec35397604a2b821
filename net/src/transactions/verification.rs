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
//!    one call (`VerifyPartitions`, the coordinator's `verify_partitions`): on a broker alone,
//!    on whichever shard owns its `__transaction_state` partition
//!    (`coordinator_log::on_owning_shard`); in a cluster, at the partition's leader, through
//!    the cluster (`ferrite_replication::cluster::verification`: one request at a time per
//!    coordinator's broker, the verifications that wait meanwhile batched into the next),
//!    which that broker answers with its own coordinator ([`serve_verifications`]);
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

use std::rc::Rc;

use ferrite_replication::cluster::{TransactionVerification, VerificationRefusal};
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

/// Has this shard's cluster (if the broker is one of several) answer the verifications for the
/// transaction coordinators this broker runs, asked here or by other brokers, with them. Each
/// shard's [`Broker`] calls it once, when made.
pub fn serve_verifications(broker: &Rc<Broker>) {
    let Some(cluster) = &broker.cluster else {
        return;
    };
    // The cluster lives in the broker: the verifier must not keep it alive.
    let weak = Rc::downgrade(broker);
    cluster.set_transaction_verifier(Rc::new(move |verification| {
        let broker = weak.upgrade();
        Box::pin(async move {
            let count = verification.partitions.len();
            let Some(broker) = broker else {
                return vec![Err(VerificationRefusal::NoCoordinator); count];
            };
            let TransactionVerification {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
            } = verification;
            ask_coordinator_here(
                &broker,
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
            )
            .await
            .into_iter()
            .map(|answer| {
                answer.map_err(|error| VerificationRefusal::Coordinator { code: error.code() })
            })
            .collect()
        })
    }));
}

/// The coordinator's answer for `partitions` of a transaction, one per partition in order, as
/// Produce answers a refusal: asked here on a broker alone, at the broker that coordinates
/// the transactional id in a cluster.
pub async fn verify_with_coordinator(
    broker: &Broker,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<TransactionPartition>,
) -> Vec<Result<(), VerificationRefused>> {
    let Some(cluster) = &broker.cluster else {
        let answers = ask_coordinator_here(
            broker,
            transactional_id.to_owned(),
            producer_id,
            producer_epoch,
            partitions,
        )
        .await;
        return answers
            .into_iter()
            .map(|answer| answer.map_err(|error| produce_error(error.code(), &error.to_string())))
            .collect();
    };
    let state_partition = broker.transactions.state_partition(transactional_id);
    let verification = TransactionVerification {
        transactional_id: transactional_id.to_owned(),
        producer_id,
        producer_epoch,
        partitions,
    };
    let outcomes = cluster
        .verify_transaction(state_partition, verification)
        .await;
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.map_err(|refusal| match refusal {
                VerificationRefusal::Coordinator { code } => {
                    produce_error(code, &format!("error code {code}"))
                }
                VerificationRefusal::NoCoordinator => produce_error(
                    ResponseError::CoordinatorNotAvailable.code(),
                    &refusal.to_string(),
                ),
                VerificationRefusal::TimedOut => {
                    produce_error(ResponseError::NetworkException.code(), &refusal.to_string())
                }
            })
        })
        .collect()
}

/// Asks the coordinator of `transactional_id`, on whichever shard of this broker owns its
/// `__transaction_state` partition; one answer per partition, in order.
async fn ask_coordinator_here(
    broker: &Broker,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<TransactionPartition>,
) -> Vec<Result<(), TransactionError>> {
    let state_partition = broker.transactions.state_partition(&transactional_id);
    let request = VerifyPartitions(AddPartitions {
        transactional_id,
        producer_id,
        producer_epoch,
        partitions,
    });
    let answers = broker.transactions.call(state_partition, request).await;
    answers.into_iter().map(|(_, answer)| answer).collect()
}

/// A refusal of a verification (the coordinator's Kafka error `code`, described by `cause`)
/// as Produce answers it (Kafka's `AddPartitionsToTxnManager` and
/// `ReplicaManager.handleProduceAppend`).
fn produce_error(code: i16, cause: &str) -> VerificationRefused {
    let retriable = [
        ResponseError::ConcurrentTransactions,
        ResponseError::NetworkException,
        ResponseError::CoordinatorLoadInProgress,
        ResponseError::CoordinatorNotAvailable,
        ResponseError::NotCoordinator,
    ];
    let (code, message) = if code == ResponseError::ProducerFenced.code() {
        (
            ResponseError::InvalidProducerEpoch.code(),
            "a newer producer with the same transactional id exists".to_owned(),
        )
    } else if code == ResponseError::TransactionAbortable.code()
        || code == ResponseError::InvalidTxnState.code()
    {
        (
            ResponseError::InvalidTxnState.code(),
            "Partition was not added to the transaction".to_owned(),
        )
    } else if retriable.iter().any(|error| error.code() == code) {
        (
            ResponseError::NotEnoughReplicas.code(),
            format!(
                "Unable to verify the partition has been added to the transaction. Underlying \
                 error: {cause}"
            ),
        )
    } else {
        (code, cause.to_owned())
    };
    VerificationRefused { code, message }
}
