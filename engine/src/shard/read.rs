//! Reads: one partition's ([`ShardContext::read`]), a fetch's partitions sharing one budget
//! with one call per owning shard ([`ShardContext::read_many`]), and a fetch's long poll
//! ([`ShardContext::wait_for_data`]), each with the request type that carries it to the owner.
//!
//! Reads stop at the high-water mark, or for `read_committed` at the last stable offset (and
//! report the aborted transactions of what they return). For a broker alone that is the written end: a consumer
//! sees only batches already written with direct I/O to their segment or to the shard's journal
//! (served from the tail cache until they reach the segment), which survive a broker crash; only
//! a power loss before their `fdatasync` can take them back, as with Kafka's single replica. For
//! a replicated partition it is the Raft commit point.

use std::time::Duration;

use futures::future::{select, select_all, LocalBoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use super::calls::ShardCall;
use super::context::ShardContext;
use super::{IsolationLevel, PartitionId, PartitionRead, ReadMany, SendableData, SendableRead};
use crate::error::LogError;
use crate::log::ReadData;

impl ShardContext {
    /// Reads whole batches of `partition` from `offset` below its high-water mark (see
    /// [`crate::log::PartitionLog::read`]), with the partition's bounds.
    pub async fn read(
        &self,
        partition: PartitionId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<SendableRead, LogError> {
        self.read_isolated(
            partition,
            offset,
            bytes_max,
            IsolationLevel::ReadUncommitted,
        )
        .await
    }

    /// [`ShardContext::read`] as `isolation` lets the reader see the partition: for
    /// `read_committed`, below its last stable offset, with the aborted transactions of the
    /// batches returned.
    pub async fn read_isolated(
        &self,
        partition: PartitionId,
        offset: u64,
        bytes_max: usize,
        isolation: IsolationLevel,
    ) -> Result<SendableRead, LogError> {
        let request = ReadRequest {
            partition,
            offset,
            bytes_max,
            isolation,
        };
        self.dispatch(&request.partition.clone(), request).await
    }

    /// Reads every partition of `reads` with one request per owning shard, with the results
    /// Kafka's fetch gets reading them one after the other in this order, sharing `bytes_max`:
    /// until a read has returned data, a read returns at least one batch; each later one only
    /// whole batches that fit both its own `bytes_max` and the room the earlier ones left
    /// (nothing rather than an oversized batch); once no room is left a read returns its
    /// partition's offsets only. Errors (an offset out of range) are reported either way.
    ///
    /// Each owner reads its partitions in turn, concurrently with the others, each up to its
    /// own `bytes_max` (or the whole budget), and stops reading data once what it read fills
    /// the budget (so a consumer far behind costs each shard at most about one budget of
    /// reads). The results are then taken in order against the shared budget: a read is kept
    /// if it fits the room left, and read again with that room when it does not (or when its
    /// owner had stopped before it) and reads came before it; so a second round trip happens
    /// only where the budget binds, for a consumer that is behind, never for one that keeps
    /// up.
    pub async fn read_many(
        &self,
        reads: &[PartitionRead],
        bytes_max: u64,
    ) -> Vec<Result<SendableRead, LogError>> {
        let shard_id = self.state.shard_id;
        // Per shard: the positions in `reads` of the partitions it owns.
        let mut positions: Vec<Vec<usize>> = vec![Vec::new(); self.state.shard_count];
        for (position, read) in reads.iter().enumerate() {
            positions[self.owner_of(&read.partition)].push(position);
        }
        let mut answers = Vec::new();
        for (owner, owned) in positions.iter().enumerate() {
            if owner == shard_id || owned.is_empty() {
                continue;
            }
            let request = ReadManyRequest {
                reads: owned
                    .iter()
                    .map(|&position| reads[position].clone())
                    .collect(),
                bytes_max,
            };
            let answer = self.forward(owner, request).await;
            answers.push((owned, Box::pin(answer) as LocalBoxFuture<'_, _>));
        }
        // The local reads run while the peers read theirs.
        let local = &positions[shard_id];
        if !local.is_empty() {
            let local_reads = local.iter().map(|&position| &reads[position]);
            answers.push((
                local,
                Box::pin(self.read_many_local(local_reads, bytes_max)),
            ));
        }
        // Per read: its owner's result, and whether the owner read its data.
        let mut results: Vec<Option<(Result<SendableRead, LogError>, bool)>> =
            reads.iter().map(|_| None).collect();
        for (owned, answer) in answers {
            let answered = answer.await;
            assert_eq!(answered.results.len(), owned.len(), "one result per read");
            for (index, (&position, result)) in owned.iter().zip(answered.results).enumerate() {
                results[position] = Some((result, index < answered.read_count));
            }
        }
        let mut used = 0u64;
        let mut merged = Vec::with_capacity(reads.len());
        for (read, result) in reads.iter().zip(results) {
            let (mut result, data_read) = result.expect("every read was sent to its owner");
            if let Ok(answer) = &mut result {
                let remaining = bytes_max.saturating_sub(used);
                let limit = read_limit(read.bytes_max, remaining);
                if used > 0 && remaining == 0 {
                    answer.drop_data(read.offset);
                } else if !data_read || (used > 0 && answer.data.length() > limit as u64) {
                    // Its owner stopped reading, or had more room than the reads before this
                    // one left: read it as a read in turn would have been.
                    result = self
                        .read_isolated(read.partition.clone(), read.offset, limit, read.isolation)
                        .await
                        .map(|again| again.within_budget(read.offset, used, limit));
                }
            }
            if let Ok(answer) = &result {
                used += answer.data.length();
            }
            merged.push(result);
        }
        merged
    }

    /// Resolves once the high-water mark (for `read_committed`, the last stable offset) of any
    /// partition of `waits` is above its offset, after `timeout_ms`, or at shutdown, whichever
    /// is first: a fetch's long poll, with one wait per owning shard. The waits on other
    /// shards are cancelled when this resolves or is dropped.
    pub async fn wait_for_data(
        &self,
        waits: Vec<(PartitionId, u64)>,
        isolation: IsolationLevel,
        timeout_ms: u64,
    ) {
        let shard_id = self.state.shard_id;
        let mut by_owner: Vec<Vec<(PartitionId, u64)>> = vec![Vec::new(); self.state.shard_count];
        for (partition, offset) in waits {
            by_owner[self.owner_of(&partition)].push((partition, offset));
        }
        let local = std::mem::take(&mut by_owner[shard_id]);
        let mut pending: Vec<LocalBoxFuture<'_, ()>> = Vec::new();
        for (owner, waits) in by_owner.into_iter().enumerate() {
            if waits.is_empty() {
                continue;
            }
            let request = WaitForDataRequest {
                waits,
                isolation,
                timeout_ms,
            };
            let answer = self.forward(owner, request).await;
            pending.push(Box::pin(answer.map(drop)));
        }
        if !local.is_empty() {
            pending.push(Box::pin(
                self.wait_for_data_local(local, isolation, timeout_ms),
            ));
        }
        if pending.is_empty() {
            return;
        }
        select_all(pending).await;
    }

    async fn read_local(
        &self,
        partition: &PartitionId,
        offset: u64,
        bytes_max: usize,
        isolation: IsolationLevel,
    ) -> Result<SendableRead, LogError> {
        self.check_leading(partition)?;
        let log = self.partition_log(partition).await?;
        let high_watermark = log.high_watermark();
        let last_stable_offset = log.last_stable_offset();
        let offset_end = match isolation {
            IsolationLevel::ReadUncommitted => high_watermark,
            IsolationLevel::ReadCommitted => last_stable_offset,
        };
        let slice = log.read(offset, bytes_max, offset_end).await?;
        // Taken after the read, whose waits may have seen more appends: the transactions
        // aborted at or after `offset` that started before what it returned ends.
        let aborted_transactions = (isolation == IsolationLevel::ReadCommitted)
            .then(|| log.aborted_transactions(offset, slice.offset_next));
        let data = match slice.data {
            ReadData::Empty => SendableData::Empty,
            ReadData::Memory(batches) => SendableData::Memory(batches),
            ReadData::File(range) => SendableData::File {
                file: range.descriptor(),
                position: range.position,
                length: range.length,
            },
        };
        Ok(SendableRead {
            data,
            offset_next: slice.offset_next,
            log_start_offset: log.log_start_offset(),
            high_watermark,
            last_stable_offset,
            aborted_transactions,
        })
    }

    /// This shard's part of [`ShardContext::read_many`]: its reads in turn, each up to its own
    /// `bytes_max` and `bytes_max` in all, until what they returned fills `bytes_max`; the
    /// reads after that return their partition's offsets only (or its error).
    async fn read_many_local(
        &self,
        reads: impl Iterator<Item = &PartitionRead>,
        bytes_max: u64,
    ) -> ReadMany {
        let mut used = 0u64;
        let mut results = Vec::with_capacity(reads.size_hint().0);
        let mut read_count = 0;
        for read in reads {
            // A budget of 0 still lets the first data through, as Kafka's does.
            let result = if used == 0 || used < bytes_max {
                read_count += 1;
                let limit = read_limit(read.bytes_max, bytes_max);
                self.read_local(&read.partition, read.offset, limit, read.isolation)
                    .await
            } else {
                // The least a read can read, for the offsets and errors only.
                self.read_local(&read.partition, read.offset, 1, read.isolation)
                    .await
                    .map(|mut answer| {
                        answer.drop_data(read.offset);
                        answer
                    })
            };
            if let Ok(answer) = &result {
                used += answer.data.length();
            }
            results.push(result);
        }
        ReadMany {
            results,
            read_count,
        }
    }

    async fn wait_for_data_local(
        &self,
        waits: Vec<(PartitionId, u64)>,
        isolation: IsolationLevel,
        timeout_ms: u64,
    ) {
        let mut logs = Vec::with_capacity(waits.len());
        for (partition, offset) in &waits {
            if self.check_leading(partition).is_err() {
                return; // the fetch's next read reports it
            }
            let Ok(log) = self.partition_log(partition).await else {
                // The fetch's next read reports the error.
                return;
            };
            logs.push((log, *offset));
        }
        // Only the waits whose log woke the task are polled again, not all of them: a long
        // poll over thousands of partitions costs per wake-up what woke it.
        let mut waiting: FuturesUnordered<LocalBoxFuture<'_, ()>> = logs
            .iter()
            .map(|(log, offset)| match isolation {
                IsolationLevel::ReadUncommitted => {
                    Box::pin(log.wait_for_high_watermark_above(*offset)) as LocalBoxFuture<'_, ()>
                }
                IsolationLevel::ReadCommitted => {
                    Box::pin(log.wait_for_stable_offset_above(*offset))
                }
            })
            .collect();
        let data = waiting.next();
        let timeout = std::pin::pin!(glommio::timer::sleep(Duration::from_millis(timeout_ms)));
        let shutdown = std::pin::pin!(self.shutdown_requested());
        select(data, select(timeout, shutdown)).await;
    }
}

/// What the room left in a [`ShardContext::read_many`] budget allows one read: at most its
/// own `bytes_max` and the room, and at least one byte, so that the read returns one whole
/// batch when nothing came before it (a log read returns at least one).
fn read_limit(bytes_max: usize, remaining: u64) -> usize {
    (bytes_max as u64).min(remaining).max(1) as usize
}

impl SendableRead {
    /// Keeps the offsets but not the batches (no room for them in a shared budget).
    fn drop_data(&mut self, offset: u64) {
        self.data = SendableData::Empty;
        self.offset_next = offset;
        if let Some(aborted) = &mut self.aborted_transactions {
            aborted.clear();
        }
    }

    /// This read (made with `limit`, [`read_limit`]) as a read in turn keeps it, `used` bytes
    /// of a shared budget already taken: a first batch larger than the limit is kept while
    /// nothing came before it, never after (Kafka's fetch: "min one message" only until a
    /// partition returned data).
    fn within_budget(mut self, offset: u64, used: u64, limit: usize) -> SendableRead {
        if used > 0 && self.data.length() > limit as u64 {
            self.drop_data(offset);
        }
        self
    }
}

/// Whole batches of `partition` from `offset`, at most `bytes_max` (at least one batch), below
/// the high-water mark.
pub(super) struct ReadRequest {
    partition: PartitionId,
    offset: u64,
    bytes_max: usize,
    isolation: IsolationLevel,
}

impl ShardCall for ReadRequest {
    type Answer = Result<SendableRead, LogError>;

    fn closed(&self) -> Self::Answer {
        Err(LogError::Closed)
    }

    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer> {
        let context = context.clone();
        Box::pin(async move {
            context
                .read_local(&self.partition, self.offset, self.bytes_max, self.isolation)
                .await
        })
    }
}

/// Every read of a fetch whose partition one shard owns, in the fetch's order, sharing
/// `bytes_max` as [`ShardContext::read_many`] says.
pub(super) struct ReadManyRequest {
    reads: Vec<PartitionRead>,
    bytes_max: u64,
}

impl ShardCall for ReadManyRequest {
    type Answer = ReadMany;

    fn closed(&self) -> Self::Answer {
        ReadMany {
            results: self.reads.iter().map(|_| Err(LogError::Closed)).collect(),
            read_count: self.reads.len(),
        }
    }

    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer> {
        let context = context.clone();
        Box::pin(async move {
            context
                .read_many_local(self.reads.iter(), self.bytes_max)
                .await
        })
    }
}

/// Answered once the high-water mark of any of `waits`' partitions passes its offset, after
/// `timeout_ms`, or at shutdown, whichever comes first (a fetch's long poll, one per owning
/// shard). Cancelled by the caller when it stops waiting.
pub(super) struct WaitForDataRequest {
    waits: Vec<(PartitionId, u64)>,
    isolation: IsolationLevel,
    timeout_ms: u64,
}

impl ShardCall for WaitForDataRequest {
    type Answer = ();

    const CANCELLABLE: bool = true;

    fn closed(&self) -> Self::Answer {}

    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer> {
        let context = context.clone();
        Box::pin(async move {
            context
                .wait_for_data_local(self.waits, self.isolation, self.timeout_ms)
                .await
        })
    }
}
