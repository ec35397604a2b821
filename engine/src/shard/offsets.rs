//! Offsets: a ListOffsets query ([`ShardContext::list_offset`]), its version-0 form
//! ([`ShardContext::offsets_before`]), the deletion of records below an offset
//! ([`ShardContext::delete_records`]), and the producers a partition's log remembers
//! ([`ShardContext::active_producers`], DescribeProducers), with their request types.

use futures::future::LocalBoxFuture;

use super::calls::ShardCall;
use super::context::ShardContext;
use super::{IsolationLevel, ListedOffset, OffsetQuery, PartitionId};
use crate::error::LogError;
use crate::log::ActiveProducer;

impl ShardContext {
    /// Answers a ListOffsets query for `partition`, as `isolation` lets the reader see it
    /// (Kafka's `fetchOffsetForTimestamp`): LATEST is the high-water mark, for
    /// `read_committed` the last stable offset; a timestamp's offset only below that.
    pub async fn list_offset(
        &self,
        partition: PartitionId,
        query: OffsetQuery,
        isolation: IsolationLevel,
    ) -> Result<ListedOffset, LogError> {
        let request = ListOffsetRequest {
            partition,
            query,
            isolation,
        };
        self.dispatch(&request.partition.clone(), request).await
    }

    /// Answers a ListOffsets version 0 query for `partition`: up to `count_max` offsets, newest
    /// first (see [`crate::log::PartitionLog::offsets_before`]).
    pub async fn offsets_before(
        &self,
        partition: PartitionId,
        timestamp_ms: i64,
        count_max: usize,
    ) -> Result<Vec<u64>, LogError> {
        self.dispatch(
            &partition.clone(),
            OffsetsBeforeRequest {
                partition,
                timestamp_ms,
                count_max,
            },
        )
        .await
    }

    /// Deletes the records of `partition` below `offset` (`None`: the high-water mark);
    /// returns the new log start offset.
    pub async fn delete_records(
        &self,
        partition: PartitionId,
        offset: Option<u64>,
    ) -> Result<u64, LogError> {
        self.dispatch(
            &partition.clone(),
            DeleteRecordsRequest { partition, offset },
        )
        .await
    }

    /// The producers `partition`'s log remembers, with their open transactions' first offsets
    /// (see [`crate::log::PartitionLog::active_producers`]); its leader answers.
    pub async fn active_producers(
        &self,
        partition: PartitionId,
    ) -> Result<Vec<ActiveProducer>, LogError> {
        self.dispatch(&partition.clone(), ActiveProducersRequest { partition })
            .await
    }

    async fn active_producers_local(
        &self,
        partition: &PartitionId,
    ) -> Result<Vec<ActiveProducer>, LogError> {
        self.check_leading(partition)?;
        Ok(self.partition_log(partition).await?.active_producers())
    }

    async fn list_offset_local(
        &self,
        partition: &PartitionId,
        query: OffsetQuery,
        isolation: IsolationLevel,
    ) -> Result<ListedOffset, LogError> {
        self.check_leading(partition)?;
        let log = self.partition_log(partition).await?;
        let high_watermark = log.high_watermark();
        let last_stable_offset = log.last_stable_offset();
        let (offset, timestamp_ms) = match (query, isolation) {
            (OffsetQuery::Earliest, _) => (Some(log.log_start_offset()), None),
            (OffsetQuery::Latest, IsolationLevel::ReadUncommitted) => (Some(high_watermark), None),
            (OffsetQuery::Latest, IsolationLevel::ReadCommitted) => {
                (Some(last_stable_offset), None)
            }
            (OffsetQuery::Timestamp(timestamp_ms), _) => {
                match log.offset_for_timestamp(timestamp_ms).await? {
                    Some(found)
                        if isolation == IsolationLevel::ReadUncommitted
                            || found.offset < last_stable_offset =>
                    {
                        (Some(found.offset), Some(found.timestamp_ms))
                    }
                    _ => (None, None),
                }
            }
        };
        Ok(ListedOffset {
            offset,
            timestamp_ms,
            log_start_offset: log.log_start_offset(),
            high_watermark,
            last_stable_offset,
        })
    }

    async fn offsets_before_local(
        &self,
        partition: &PartitionId,
        timestamp_ms: i64,
        count_max: usize,
    ) -> Result<Vec<u64>, LogError> {
        self.check_leading(partition)?;
        let log = self.partition_log(partition).await?;
        Ok(log.offsets_before(timestamp_ms, self.now_ms(), count_max))
    }

    async fn delete_records_local(
        &self,
        partition: &PartitionId,
        offset: Option<u64>,
    ) -> Result<u64, LogError> {
        self.check_leading(partition)?;
        let log = self.partition_log(partition).await?;
        let high_watermark = log.high_watermark();
        let offset = offset.unwrap_or(high_watermark);
        if offset > high_watermark {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: log.log_start_offset(),
                log_end_offset: high_watermark,
            });
        }
        log.delete_up_to(offset).await?;
        Ok(log.log_start_offset())
    }
}

/// The partition's offsets, and the answer to a ListOffsets query.
pub(super) struct ListOffsetRequest {
    partition: PartitionId,
    query: OffsetQuery,
    isolation: IsolationLevel,
}

impl ShardCall for ListOffsetRequest {
    type Answer = Result<ListedOffset, LogError>;

    fn closed(&self) -> Self::Answer {
        Err(LogError::Closed)
    }

    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer> {
        let context = context.clone();
        Box::pin(async move {
            context
                .list_offset_local(&self.partition, self.query, self.isolation)
                .await
        })
    }
}

/// The producers a partition's log remembers.
pub(super) struct ActiveProducersRequest {
    partition: PartitionId,
}

impl ShardCall for ActiveProducersRequest {
    type Answer = Result<Vec<ActiveProducer>, LogError>;

    fn closed(&self) -> Self::Answer {
        Err(LogError::Closed)
    }

    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer> {
        let context = context.clone();
        Box::pin(async move { context.active_producers_local(&self.partition).await })
    }
}

/// A ListOffsets version 0 query, answered with its offsets.
pub(super) struct OffsetsBeforeRequest {
    partition: PartitionId,
    timestamp_ms: i64,
    count_max: usize,
}

impl ShardCall for OffsetsBeforeRequest {
    type Answer = Result<Vec<u64>, LogError>;

    fn closed(&self) -> Self::Answer {
        Err(LogError::Closed)
    }

    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer> {
        let context = context.clone();
        Box::pin(async move {
            context
                .offsets_before_local(&self.partition, self.timestamp_ms, self.count_max)
                .await
        })
    }
}

/// Moves the log start up to `offset` (`None`: the high-water mark), deleting whole segments
/// below it; answered with the new log start offset.
pub(super) struct DeleteRecordsRequest {
    partition: PartitionId,
    offset: Option<u64>,
}

impl ShardCall for DeleteRecordsRequest {
    type Answer = Result<u64, LogError>;

    fn closed(&self) -> Self::Answer {
        Err(LogError::Closed)
    }

    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer> {
        let context = context.clone();
        Box::pin(async move {
            context
                .delete_records_local(&self.partition, self.offset)
                .await
        })
    }
}
