//! Appends, a producer's batches or the broker's own: [`ShardContext::submit_appends_through`]
//! gives each batch its place in its partition's order (here, or in the FIFO queue to the
//! owning shard, which gives batches their places in the order it receives them) and returns
//! the waits for their durability. A produce request's batches cost one mesh message per
//! owning shard, not per batch, and one answer per shard.
//!
//! What the owner does with its batches is the caller's [`AppendOwner`], the same for its own
//! batches and a peer's [`AppendRequest`]: the engine routes and carries them without knowing
//! what happens at the other end. Its own, [`UnreplicatedLogs`]
//! ([`ShardContext::submit_appends`]), appends to the shard's logs of a broker alone; in a
//! cluster replication routes producer batches with an owner of its own, which hands them to
//! the partitions' Raft replicas, and the shard's logs refuse them (see `replicated.rs`).
//! Either owner checks each batch once, there, before anything numbers it: as its
//! [`AppendKind`] says, a producer's batch as Kafka checks a produced one
//! ([`CheckedBatch::produced`], against the partition's `max.message.bytes`), a batch the broker
//! writes itself (a transaction's marker, a control batch no producer may send) as a stored one
//! ([`CheckedBatch::stored`]).

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::rc::Rc;

use bytes::BytesMut;
use futures::future::{join_all, LocalBoxFuture, Shared};
use futures::FutureExt;

use super::calls::ShardCall;
use super::context::{OwnedPart, ShardContext};
use super::{Appended, Durability, PartitionId};
use crate::batch::CheckedBatch;
use crate::error::LogError;
use crate::log::{PartitionLog, VerificationGuard};

/// Who wrote a batch that enters a partition through these appends, which decides how it is
/// checked (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendKind {
    /// A producer's batch (or a group coordinator's records, built as a producer's):
    /// [`CheckedBatch::produced`], control batches refused.
    Produced,
    /// A transactional producer's batch under KIP-890's verification: as `Produced`, and a
    /// transactional batch that would open its producer's transaction is refused unless the
    /// partition's log still holds this guard, the one it handed out for the request
    /// ([`ShardContext::start_transaction_verifications`]) before the transaction
    /// coordinator confirmed the partition is in the transaction.
    Verified(VerificationGuard),
    /// A batch the broker writes itself, such as a transaction coordinator's COMMIT or ABORT
    /// marker: [`CheckedBatch::stored`], control batches taken.
    BrokerWritten,
}

/// An append that has its place in the partition's order; resolves as its durability says.
pub type AppendPending = LocalBoxFuture<'static, Result<Appended, LogError>>;

/// An append refused before it had a place: resolves at once with `error`.
pub fn refused_append(error: LogError) -> AppendPending {
    Box::pin(async move { Err(error) })
}

/// The answers of one shard to a request's appends, each taken by its batch's wait.
type AppendAnswers = Rc<RefCell<Vec<Option<Result<Appended, LogError>>>>>;

/// What the shard owning some partitions does with a produce request's batches for them: gives
/// each its place in its partition's order, in the request's order, before it resolves (the
/// owner reads its next mesh message only then, so nothing sent after lands in between), and
/// returns one wait per batch, in the same order. Runs on the owning shard, for
/// [`ShardContext::submit_appends_through`].
pub trait AppendOwner: 'static {
    fn submit_owned(
        context: &ShardContext,
        appends: Vec<(PartitionId, BytesMut)>,
        kind: AppendKind,
        durability: Durability,
    ) -> impl Future<Output = Vec<AppendPending>>;
}

/// The [`AppendOwner`] of a broker alone: the shard's own logs. In a cluster every partition is
/// replicated, and a producer's batch that reaches it is refused (`LogError::Replicated`).
pub struct UnreplicatedLogs;

impl AppendOwner for UnreplicatedLogs {
    async fn submit_owned(
        context: &ShardContext,
        appends: Vec<(PartitionId, BytesMut)>,
        kind: AppendKind,
        durability: Durability,
    ) -> Vec<AppendPending> {
        let mut pending = Vec::with_capacity(appends.len());
        for (partition, batch) in appends {
            pending.push(
                context
                    .submit_local_append(&partition, batch, kind, durability)
                    .await,
            );
        }
        pending
    }
}

impl ShardContext {
    /// Appends `batch` to `partition` (opening its log on first use) and waits as `durability`
    /// says, forwarding to the owning shard when that is another one.
    pub async fn append(
        &self,
        partition: PartitionId,
        batch: BytesMut,
        durability: Durability,
    ) -> Result<Appended, LogError> {
        self.submit_append(partition, batch, durability).await.await
    }

    /// Appends in two steps. The returned future resolves as `durability` says; by the time
    /// this returns, the batch already has its place in the partition's order (its offsets,
    /// or its place in the FIFO queue to the owning shard, which assigns offsets in the order
    /// it receives batches). A connection submits its requests' appends one after the other
    /// and awaits them concurrently: pipelined produce requests keep their order, which the
    /// idempotent producer's sequence numbers rely on.
    pub async fn submit_append(
        &self,
        partition: PartitionId,
        batch: BytesMut,
        durability: Durability,
    ) -> AppendPending {
        self.submit_appends(vec![(partition, batch)], durability)
            .await
            .pop()
            .expect("one append submitted, one answer")
    }

    /// [`ShardContext::submit_append`] for several batches at once (a produce request's), in
    /// their order: [`ShardContext::submit_appends_through`] the shard's own logs.
    pub async fn submit_appends(
        &self,
        appends: Vec<(PartitionId, BytesMut)>,
        durability: Durability,
    ) -> Vec<AppendPending> {
        self.submit_appends_through::<UnreplicatedLogs>(appends, AppendKind::Produced, durability)
            .await
    }

    /// Routes `appends` (a produce request's batches, in its order, or the broker's own, as
    /// `kind` says) to the shards owning their partitions, where `Owner` checks each batch and
    /// gives it its place: here directly, elsewhere with one mesh message per owning shard
    /// rather than one per batch. A request's appends to one
    /// shard get their places there in this order, before that shard reads its next message.
    /// Returns one wait per batch, in the same order. Calls to other shards count as work in
    /// flight on both sides until answered (the shutdown drain waits for them).
    pub async fn submit_appends_through<Owner: AppendOwner>(
        &self,
        appends: Vec<(PartitionId, BytesMut)>,
        kind: AppendKind,
        durability: Durability,
    ) -> Vec<AppendPending> {
        let shard_id = self.state.shard_id;
        let mut pending: Vec<Option<AppendPending>> = appends.iter().map(|_| None).collect();
        let by_owner = self.split_by_owner(appends, |(partition, _)| partition);
        for (
            owner,
            OwnedPart {
                positions,
                items: appends,
            },
        ) in by_owner.into_iter().enumerate()
        {
            if appends.is_empty() {
                continue;
            }
            if owner == shard_id {
                let submitted = Owner::submit_owned(self, appends, kind, durability).await;
                for (position, append) in positions.into_iter().zip(submitted) {
                    pending[position] = Some(append);
                }
                continue;
            }
            let count = appends.len();
            let request = AppendRequest::<Owner> {
                appends,
                kind,
                durability,
                owner: PhantomData,
            };
            let answer = self.forward(owner, request).await;
            if let [position] = positions[..] {
                // One batch (librdkafka sends a produce request per partition batch): its wait
                // is the answer itself, without sharing it.
                pending[position] = Some(Box::pin(async move {
                    let mut results = answer.await;
                    assert_eq!(results.len(), 1, "one result per append");
                    results.pop().expect("checked: one result")
                }));
                continue;
            }
            // One answer for the shard's batches, which each batch's wait takes its part of.
            let answers = async move {
                let results = answer.await;
                assert_eq!(results.len(), count, "one result per append");
                Rc::new(RefCell::new(results.into_iter().map(Some).collect()))
            }
            .boxed_local()
            .shared();
            for (index, position) in positions.into_iter().enumerate() {
                let answers: Shared<LocalBoxFuture<'static, AppendAnswers>> = answers.clone();
                pending[position] = Some(Box::pin(async move {
                    let answers = answers.await;
                    let result = answers.borrow_mut()[index].take();
                    result.expect("each append's result is taken once")
                }));
            }
        }
        pending
            .into_iter()
            .map(|append| append.expect("every append was submitted"))
            .collect()
    }

    /// The one check of a batch for `partition` (owned by this shard), wherever it is
    /// appended: the partition's log (open, or opened now) and the batch checked as `kind`
    /// says against its `max.message.bytes` ([`CheckedBatch::produced`] or
    /// [`CheckedBatch::stored`]).
    pub async fn check_append(
        &self,
        partition: &PartitionId,
        batch: BytesMut,
        kind: AppendKind,
    ) -> Result<(Rc<PartitionLog>, CheckedBatch), LogError> {
        let log = self.partition_log(partition).await?;
        let batch_bytes_max = log.config().batch_bytes_max;
        let batch = match kind {
            AppendKind::Produced => CheckedBatch::produced(batch, batch_bytes_max)?,
            AppendKind::Verified(guard) => {
                CheckedBatch::produced(batch, batch_bytes_max)?.with_verification(guard)
            }
            AppendKind::BrokerWritten => CheckedBatch::stored(batch, batch_bytes_max)?,
        };
        Ok((log, batch))
    }

    /// Checks the batch ([`ShardContext::check_append`]), then has this shard's log number it
    /// (nothing else can append in between: no await separates the sequence checks from the
    /// assignment). Returns the wait for `durability`. Serves only logs without replicas: in a
    /// cluster the batch belongs to the partition's replica, and is refused.
    pub async fn submit_local_append(
        &self,
        partition: &PartitionId,
        batch: BytesMut,
        kind: AppendKind,
        durability: Durability,
    ) -> AppendPending {
        if self.partitions_replicated() {
            return refused_append(LogError::Replicated);
        }
        let (log, batch) = match self.check_append(partition, batch, kind).await {
            Ok(checked) => checked,
            Err(error) => return refused_append(error),
        };
        // A single copy is one in-sync replica (as Kafka counts a partition of replication
        // factor 1).
        let min_insync_replicas = log.config().min_insync_replicas;
        if durability == Durability::Durable && min_insync_replicas > 1 {
            return refused_append(LogError::NotEnoughReplicas {
                in_sync: 1,
                required: min_insync_replicas,
            });
        }
        let assigned = log
            .append_checked(batch, crate::log::SINGLE_BROKER_EPOCH)
            .await;
        Box::pin(async move {
            let receipt = assigned?;
            match durability {
                Durability::Assigned => {}
                Durability::Written => log.wait_written(&receipt).await?,
                Durability::Durable => log.wait_durable(&receipt).await?,
            }
            Ok(Appended {
                base_offset: receipt.base_offset,
                last_offset: receipt.last_offset,
                log_start_offset: log.log_start_offset(),
            })
        })
    }
}

/// Every append of a produce request whose partition one shard owns, in the request's order:
/// the owner gives them their places in this order (through `Owner`) before it reads its next
/// message, and answers once each has the durability asked for (one answer, since the
/// producer's answer waits for them all anyway), one result per append.
pub(super) struct AppendRequest<Owner: AppendOwner> {
    appends: Vec<(PartitionId, BytesMut)>,
    kind: AppendKind,
    durability: Durability,
    owner: PhantomData<fn() -> Owner>,
}

impl<Owner: AppendOwner> ShardCall for AppendRequest<Owner> {
    type Answer = Vec<Result<Appended, LogError>>;

    fn closed(&self) -> Self::Answer {
        self.appends.iter().map(|_| Err(LogError::Closed)).collect()
    }

    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer> {
        let pending = Owner::submit_owned(context, self.appends, self.kind, self.durability).await;
        Box::pin(join_all(pending))
    }
}
