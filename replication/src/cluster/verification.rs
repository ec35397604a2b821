//! The verification of a transactional produce in a cluster (KIP-890 part 1; Kafka's
//! `AddPartitionsToTxnManager`): a partition leader asks the broker that coordinates the
//! producer's transactional id (the leader of its `__transaction_state` partition) whether the
//! partitions are in the producer's ongoing transaction at that epoch, and the answer, per
//! partition, is the coordinator's.
//!
//! [`ShardCluster::verify_transaction`] finds the coordinator's broker from the leaders this
//! broker knows: itself, and the question goes straight to the coordinator (through the
//! [`TransactionVerifier`] `net` gave the shard: this crate knows no coordinator, as it knows
//! no group); another broker, and it travels as a call (`peer_calls`), which that broker serves
//! with its own verifier. As Kafka's manager does, a shard sends one request at a time to each
//! coordinator's broker, and the verifications that come meanwhile wait and go together in the
//! next (up to [`VerificationConfig::transactions_per_request_max`] in one request); at most
//! [`VerificationConfig::waiting_per_peer_max`] wait, beyond which a verification is refused at
//! once (`Busy`: the producer retries).
//!
//! Refusals are typed ([`VerificationRefusal`]): the coordinator's own answer carries its Kafka
//! error code, passed on as is (as `MarkerRefusal::GroupCoordinator` does); `net` turns them
//! into what Produce answers.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use engine::catalog::TRANSACTION_STATE_TOPIC;
use engine::shard::PartitionId;
use futures::channel::oneshot;
use futures::future::{join_all, LocalBoxFuture};

use super::peer_calls::{PeerAnswer, PeerCall, PeerCalls};
use super::ShardCluster;
use crate::controller::within;
use crate::message::NodeId;

/// One transaction's partitions to verify.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TransactionVerification {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partitions: Vec<(String, i32)>,
}

/// Why a partition was not verified.
#[derive(
    Debug, Clone, PartialEq, Eq, thiserror::Error, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum VerificationRefusal {
    /// The coordinator said no, with this Kafka error code (the partition is not in the
    /// transaction, a newer epoch exists, it is moving or loading ...).
    #[error("the transaction coordinator answered error code {code}")]
    Coordinator { code: i16 },
    /// No broker is known to coordinate the transactional id, or the one asked runs no
    /// coordinator (yet): retriable. Kafka's COORDINATOR_NOT_AVAILABLE.
    #[error("no transaction coordinator is available")]
    NoCoordinator,
    /// No answer in time, or too many verifications wait already: retriable. Kafka's
    /// NETWORK_EXCEPTION.
    #[error("the transaction coordinator's broker did not answer in time")]
    TimedOut,
}

/// One partition's answer: verified, or why not.
pub type VerificationOutcome = Result<(), VerificationRefusal>;

/// [`VerificationOutcome`] on the wire (`None`: verified).
pub type WireVerified = Option<VerificationRefusal>;

/// Answers a verification for a coordinator this broker runs, one outcome per partition in
/// order; called on the shard it was given to.
pub type TransactionVerifier =
    Rc<dyn Fn(TransactionVerification) -> LocalBoxFuture<'static, Vec<VerificationOutcome>>>;

/// The bounds of verifications sent to other brokers (see the module documentation).
#[derive(Debug, Clone)]
pub struct VerificationConfig {
    /// Verifications waiting on one shard to be sent to one coordinator's broker.
    pub waiting_per_peer_max: usize,
    /// Transactions in one request.
    pub transactions_per_request_max: usize,
}

impl Default for VerificationConfig {
    fn default() -> VerificationConfig {
        VerificationConfig {
            waiting_per_peer_max: 1024,
            transactions_per_request_max: 256,
        }
    }
}

/// A verification waiting to be sent, and where its answer goes.
type Waiting = (
    TransactionVerification,
    oneshot::Sender<Vec<VerificationOutcome>>,
);

/// The verifications one shard has waiting, per coordinator's broker.
#[derive(Default)]
pub(super) struct VerificationQueues {
    by_peer: RefCell<BTreeMap<NodeId, Rc<PeerQueue>>>,
}

#[derive(Default)]
struct PeerQueue {
    waiting: RefCell<Vec<Waiting>>,
    /// A task sends this queue's requests, one at a time, until it is empty.
    sending: Cell<bool>,
}

/// Serves a peer's verifications with this broker's verifier (within the commit timeout, so
/// the answer arrives before the asker stops waiting).
pub(super) async fn serve_verifications(
    calls: &PeerCalls,
    transactions: Vec<TransactionVerification>,
) -> Vec<Vec<WireVerified>> {
    let verifier = calls.verifier.borrow().clone();
    let timeout = calls.markers.commit_timeout;
    join_all(transactions.into_iter().map(|transaction| {
        let count = transaction.partitions.len();
        let verifier = verifier.clone();
        async move {
            let outcomes = match verifier {
                Some(verifier) => within(timeout, verifier(transaction))
                    .await
                    .filter(|outcomes| outcomes.len() == count)
                    .unwrap_or_else(|| vec![Err(VerificationRefusal::TimedOut); count]),
                None => vec![Err(VerificationRefusal::NoCoordinator); count],
            };
            outcomes.into_iter().map(Result::err).collect()
        }
    }))
    .await
}

/// Sends the verifications waiting for `peer`, one request at a time, until none is left.
async fn send_waiting(calls: Rc<PeerCalls>, peer: NodeId, queue: Rc<PeerQueue>) {
    loop {
        let batch: Vec<Waiting> = {
            let mut waiting = queue.waiting.borrow_mut();
            let count = waiting
                .len()
                .min(calls.verification.transactions_per_request_max);
            waiting.drain(..count).collect()
        };
        if batch.is_empty() {
            queue.sending.set(false);
            return;
        }
        let (transactions, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let counts: Vec<usize> = transactions
            .iter()
            .map(|transaction| transaction.partitions.len())
            .collect();
        let answered = match calls.request(peer, PeerCall::Verify(transactions)).await {
            Some(PeerAnswer::Verify(outcomes))
                if outcomes.len() == counts.len()
                    && outcomes
                        .iter()
                        .zip(&counts)
                        .all(|(o, count)| o.len() == *count) =>
            {
                Some(outcomes)
            }
            _ => None,
        };
        match answered {
            Some(outcomes) => {
                for (answer, outcomes) in answers.into_iter().zip(outcomes) {
                    let outcomes = outcomes
                        .into_iter()
                        .map(|refusal| refusal.map_or(Ok(()), Err))
                        .collect();
                    let _ = answer.send(outcomes);
                }
            }
            None => {
                for (answer, count) in answers.into_iter().zip(counts) {
                    let _ = answer.send(vec![Err(VerificationRefusal::TimedOut); count]);
                }
            }
        }
    }
}

impl ShardCluster {
    /// Asks the coordinator of `__transaction_state` partition `state_partition` whether
    /// `verification`'s partitions are in its transaction (see the module documentation); one
    /// outcome per partition, in order.
    pub async fn verify_transaction(
        &self,
        state_partition: u32,
        verification: TransactionVerification,
    ) -> Vec<VerificationOutcome> {
        let count = verification.partitions.len();
        let partition = PartitionId::new(TRANSACTION_STATE_TOPIC, state_partition);
        let Some((coordinator, _)) = self.state.leaders.leader(&partition) else {
            return vec![Err(VerificationRefusal::NoCoordinator); count];
        };
        if coordinator == self.state.settings.node_id {
            let verifier = self.calls.verifier.borrow().clone();
            return match verifier {
                Some(verifier) => verifier(verification).await,
                None => vec![Err(VerificationRefusal::NoCoordinator); count],
            };
        }
        let calls = &self.calls;
        let queue = calls
            .verifications
            .by_peer
            .borrow_mut()
            .entry(coordinator)
            .or_default()
            .clone();
        if queue.waiting.borrow().len() >= calls.verification.waiting_per_peer_max {
            return vec![Err(VerificationRefusal::TimedOut); count];
        }
        let (answer, answered) = oneshot::channel();
        queue.waiting.borrow_mut().push((verification, answer));
        if !queue.sending.replace(true) {
            glommio::spawn_local(send_waiting(calls.clone(), coordinator, queue)).detach();
        }
        answered
            .await
            .unwrap_or_else(|_| vec![Err(VerificationRefusal::TimedOut); count])
    }

    /// From now on, verifications for the transaction coordinators this broker runs, asked of
    /// this shard (by a peer or by [`ShardCluster::verify_transaction`] here), go to
    /// `verifier`.
    pub fn set_transaction_verifier(&self, verifier: TransactionVerifier) {
        *self.calls.verifier.borrow_mut() = Some(verifier);
    }
}
