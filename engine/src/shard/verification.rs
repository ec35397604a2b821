//! The first step of KIP-890's verification of a transactional produce, on the shards that own
//! its partitions: each partition's log says whether the producer's transaction is open there
//! already, or hands out the guard the batch must show once the transaction coordinator
//! confirmed the partition is in the transaction (`log::VerificationGuard`). The Kafka layer
//! asks the coordinator in between, and appends with [`AppendKind::Verified`].
//!
//! One mesh call per owning shard, on the same queue as the appends: a request's verification
//! starts after every earlier request's appends to that shard have their places.
//!
//! [`AppendKind::Verified`]: super::AppendKind::Verified

use futures::future::join_all;

use super::context::OwnedPart;
use super::{PartitionId, ShardContext};
use crate::error::LogError;
use crate::log::VerificationGuard;

impl ShardContext {
    /// Starts the verification of producer `producer_id`'s (at `producer_epoch`) batches for
    /// `partitions`, each with its batch's base sequence, on the shards owning them. One result
    /// per partition, in order: the guard its batch must show (`SENTINEL` where the
    /// transaction is open already), or why the partition cannot take it (not led here, in a
    /// cluster; its log closed).
    pub async fn start_transaction_verifications(
        &self,
        partitions: Vec<(PartitionId, i32)>,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Vec<Result<VerificationGuard, LogError>> {
        let count = partitions.len();
        let by_owner = self.split_by_owner(partitions, |(partition, _)| partition);
        let calls = by_owner
            .into_iter()
            .enumerate()
            .filter(|(_, part)| !part.positions.is_empty())
            .map(|(owner, part)| {
                let OwnedPart { positions, items } = part;
                let closed: Vec<_> = items.iter().map(|_| Err(LogError::Closed)).collect();
                async move {
                    let started = self
                        .call_on(owner, move |context| {
                            let context = context.clone();
                            Box::pin(async move {
                                let mut guards = Vec::with_capacity(items.len());
                                for (partition, base_sequence) in items {
                                    guards.push(
                                        context
                                            .start_owned_verification(
                                                &partition,
                                                producer_id,
                                                producer_epoch,
                                                base_sequence,
                                            )
                                            .await,
                                    );
                                }
                                guards
                            })
                        })
                        .await;
                    (positions, started.unwrap_or(closed))
                }
            });
        let mut results: Vec<Option<Result<VerificationGuard, LogError>>> = vec![None; count];
        for (positions, started) in join_all(calls).await {
            assert_eq!(positions.len(), started.len(), "one result per partition");
            for (position, result) in positions.into_iter().zip(started) {
                results[position] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|result| result.expect("every partition has its result"))
            .collect()
    }

    /// [`ShardContext::start_transaction_verifications`] of one partition this shard owns.
    async fn start_owned_verification(
        &self,
        partition: &PartitionId,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Result<VerificationGuard, LogError> {
        // In a cluster only the leader's replica (which holds its log open) takes batches.
        self.check_leading(partition)?;
        let log = self.partition_log(partition).await?;
        log.start_transaction_verification(producer_id, producer_epoch, base_sequence)
    }
}
