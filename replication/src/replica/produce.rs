//! Producers' side of a replica: a batch is taken only by the leader, queued in the
//! partition's order for the writer to number and place, and acknowledged as the producer
//! asked (placed, in the leader's log, or committed by a majority), in Raft's terms
//! ([`PartitionReplica::submit`]) or the engine's ([`PartitionReplica::submit_append`]); and
//! who may serve the partition's clients, as the replica tells its shard
//! ([`PartitionReplica::client_access`]).
//!
//! acks=all waits on the log's own high-water mark (which may move when the leader's write
//! completes after the followers made the batch durable) and fails with NotLeader if
//! leadership moves first. It is refused up front with NOT_ENOUGH_REPLICAS while the core's
//! `in_sync_voters` (the leader and the voters that fetched lately and hold everything
//! committed: Kafka's ISR) are fewer than the topic's `min.insync.replicas`.

use std::time::Instant;

use engine::batch::CheckedBatch;
use engine::shard::{AppendPending, Appended, ClientAccess, Durability};
use engine::{AppendReceipt, LogError};
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;

use super::{PartitionReplica, Proposal, ReplicaEvent};
use crate::message::NodeId;
use crate::node::{RaftNode, RoleKind};
use crate::stats::Stage;

/// Why a produce was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    /// This replica does not lead (or stopped leading before the batch committed): the client
    /// retries at the leader. Kafka's NOT_LEADER_OR_FOLLOWER.
    #[error("not the partition leader (leader: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error(transparent)]
    Log(#[from] LogError),
    /// The replica stopped (the broker shuts down, or no longer hosts the partition).
    #[error("the replica stopped")]
    Stopped,
}

/// How much acknowledgement a producer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Once the leader has numbered and placed the batch (acks=0 answers nothing anyway).
    Placed,
    /// Once the leader has placed the batch in its log.
    Leader,
    /// Once a majority has it durably: the high-water mark passed it (acks=all).
    Committed,
}

impl PartitionReplica {
    /// Appends a producer's batch if this replica leads, and waits for the acknowledgement
    /// asked for. The batch is queued in the partition's order before the first await.
    pub async fn produce(
        &self,
        batch: CheckedBatch,
        acks: Acks,
    ) -> Result<AppendReceipt, ProduceError> {
        self.submit(batch, acks).await
    }

    /// [`PartitionReplica::produce`], with the batch queued synchronously (before the returned
    /// future is first polled), so batches submitted in order are placed in that order.
    pub fn submit(
        &self,
        batch: CheckedBatch,
        acks: Acks,
    ) -> LocalBoxFuture<'static, Result<AppendReceipt, ProduceError>> {
        if let Err(error) = self.check_leading() {
            return Box::pin(std::future::ready(Err(error)));
        }
        if acks == Acks::Committed {
            let required = self.inner.log.config().min_insync_replicas;
            let in_sync = self.inner.node.borrow().in_sync_voters().len();
            if in_sync < required as usize {
                let refused = LogError::NotEnoughReplicas { in_sync, required };
                return Box::pin(std::future::ready(Err(refused.into())));
            }
        }
        let (reply, placed) = oneshot::channel();
        self.inner
            .proposals
            .borrow_mut()
            .push_back(Proposal { batch, reply });
        self.inner.changes.wake_all();
        let replica = self.clone();
        let submitted = Instant::now();
        Box::pin(async move {
            let receipt = placed.await.map_err(|_| ProduceError::Stopped)??;
            let outbox = &replica.inner.outbox;
            let placed_at = Instant::now();
            outbox.note(ReplicaEvent::Stage(Stage::Place, placed_at - submitted));
            match acks {
                Acks::Placed => {}
                Acks::Leader => replica.inner.log.wait_written(&receipt).await?,
                Acks::Committed => {
                    replica.wait_committed(&receipt).await?;
                    outbox.note(ReplicaEvent::Stage(Stage::Commit, placed_at.elapsed()));
                }
            }
            Ok(receipt)
        })
    }

    pub(super) fn check_leading(&self) -> Result<u64, ProduceError> {
        if self.inner.stopped.borrow().is_some() {
            return Err(ProduceError::Stopped);
        }
        if self.faulted() {
            return Err(ProduceError::NotLeader { leader_hint: None });
        }
        let node = self.inner.node.borrow();
        if node.role() == RoleKind::Leader {
            Ok(node.term())
        } else {
            Err(ProduceError::NotLeader {
                leader_hint: node.leader(),
            })
        }
    }

    /// Waits until the high-water mark passes the batch, failing if leadership moves first (a
    /// new leader may have truncated it away). The mark is the commit index held to what the
    /// log has written, so it may move when the leader's own write completes after a majority
    /// of followers made the batch durable: the log's own wake-up says so.
    pub(super) async fn wait_committed(&self, receipt: &AppendReceipt) -> Result<(), ProduceError> {
        let term = self.check_leading()?;
        let log = &self.inner.log;
        {
            let committed = log.wait_for_high_watermark_above(receipt.last_offset);
            let deposed = self.inner.changes.until(|| {
                self.inner.stopped.borrow().is_some()
                    || self.check_leading().is_err()
                    || self.term() != term
            });
            futures::pin_mut!(committed, deposed);
            futures::future::select(committed, deposed).await;
        }
        if log.high_watermark() > receipt.last_offset {
            return Ok(());
        }
        self.check_leading()?;
        Err(ProduceError::NotLeader {
            leader_hint: self.leader(),
        })
    }
}

impl PartitionReplica {
    /// [`PartitionReplica::submit`] in the engine's terms: a producer's batch (checked by the
    /// shard owning the partition) with Kafka's acks as a [`Durability`], answered as an append.
    pub fn submit_append(&self, batch: CheckedBatch, durability: Durability) -> AppendPending {
        let acks = match durability {
            Durability::Assigned => Acks::Placed,
            Durability::Written => Acks::Leader,
            Durability::Durable => Acks::Committed,
        };
        let log = self.inner.log.clone();
        let pending = self.submit(batch, acks);
        Box::pin(async move {
            let receipt = pending.await.map_err(|error| match error {
                ProduceError::NotLeader { leader_hint } => LogError::NotLeader {
                    leader: leader_hint,
                },
                ProduceError::Log(error) => error,
                ProduceError::Stopped => LogError::Closed,
            })?;
            Ok(Appended {
                base_offset: receipt.base_offset,
                last_offset: receipt.last_offset,
                log_start_offset: log.log_start_offset(),
            })
        })
    }

    /// Who may serve the partition's clients on this broker, as its shard is told
    /// ([`engine::shard::ShardContext::set_client_access`]): the leader, in its term, with the
    /// high-water mark at which its log holds an entry of that term; a follower, naming the
    /// leader it knows; or, while faulted, neither.
    pub fn client_access(&self) -> ClientAccess {
        if self.faulted() {
            return ClientAccess::Faulted;
        }
        client_access_of(&self.inner.node.borrow())
    }
}

/// [`PartitionReplica::client_access`] of a core that is not faulted.
pub(super) fn client_access_of(node: &RaftNode) -> ClientAccess {
    match node.term_start_index() {
        // Raft index i is offset i - 1: the high-water mark, as an index, is the commit index,
        // and it holds an entry of this term once it reaches the term's first.
        Some(term_start_index) => ClientAccess::Leader {
            term: node.term(),
            term_committed_at: term_start_index,
        },
        None => ClientAccess::Follower {
            leader: node.leader(),
        },
    }
}
