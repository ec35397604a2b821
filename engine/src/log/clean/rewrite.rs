//! A one-time rewrite of every record of a log, in the format a layer above changed: how the
//! group coordinator (in `net`) moves `__consumer_offsets` from the format it once wrote to
//! Kafka's, without the engine learning either format (the layer supplies the record
//! transform, [`RecordRewrite`]).
//!
//! It is the cleaner's rewrite (`clean_group`: `<base>.log.cleaned`, then the committed
//! `<base>.<end>.log.swap`, then the rename into place, so a crash at any step leaves the old
//! segment or the new one) with another rule for each record: every record stays, with the key
//! and value the transform gives it, in its batch, at its offset, with its timestamp and
//! headers; a batch keeps its header fields (base offset, leader epoch, producer fields) and is
//! re-compressed with its codec. So the log's offsets, batch boundaries and epochs are exactly
//! what they were, which is what lets a replicated partition's replicas each rewrite their own
//! copy: the same batches in, the same batches out (the transform is deterministic), and Raft's
//! view of the log (each batch's offset range and term) unchanged. The active segment is rolled
//! first, so that every record is in a sealed segment the swap can replace. It compacts
//! nothing: the rewritten segments stay as dirty as they were, and the cleaner compacts them as
//! any (a log never compacted is all dirty, so at its next check).
//!
//! It runs on a log nobody else uses yet: [`ShardContext::partition_log`] runs it right after the
//! open, before the log is handed to anyone, on the partitions of the transform's topic whose
//! directory has no marker of it yet, and writes the marker once the whole log is rewritten. A
//! crash before the marker leaves segments rewritten and segments not: the next open rewrites
//! the log again, and the transform leaves the records already in the new format as they are
//! (a segment with nothing to change is not written).
//!
//! [`ShardContext::partition_log`]: crate::shard::ShardContext::partition_log

use super::paced_io::Pacer;
use super::{CleanStats, Input, RecordPolicy};
use crate::error::LogError;
use crate::log::PartitionLog;

/// The rewrite of a topic's records, shared by every shard: what a layer above gives the
/// runtime ([`RuntimeConfig::record_rewrite`](crate::shard::RuntimeConfig::record_rewrite)).
pub trait RecordRewrite: Send + Sync + std::fmt::Debug {
    /// The topic whose partitions are rewritten.
    fn topic(&self) -> &str;
    /// The file whose presence in a partition directory says its log was rewritten.
    fn done_marker(&self) -> &str;
    /// The rewrite of one partition's log (it may count what it rewrote, for its summary).
    fn start(&self) -> Box<dyn PartitionRecordRewrite>;
}

/// The rewrite of one partition's log, record by record, oldest first.
pub trait PartitionRecordRewrite {
    /// The record's new key and value; `None` keeps it as it is (a record already in the new
    /// format, or one the transform does not recognize, which is not its to judge).
    fn rewrite(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Option<RewrittenRecord>;
    /// What it rewrote, for the broker's log.
    fn summary(&self) -> String;
}

/// A record's key and value after a rewrite (`value: None`: a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrittenRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl PartitionLog {
    /// Rewrites every record of the log with `rewrite`, as the module documentation says. Only
    /// on a log no one appends to or reads yet (at its open); waits for a maintenance or
    /// cleaning under way. `Err(LogError::Closed)` when the log closes meanwhile.
    pub async fn rewrite_records(
        &self,
        rewrite: &mut dyn PartitionRecordRewrite,
        now_ms: i64,
    ) -> Result<CleanStats, LogError> {
        self.sync().await?;
        let shared = &self.shared;
        let _guard = shared.start_cleaning().await?;
        {
            let mut state = shared.state.borrow_mut();
            if state.active_segment().appended_bytes > 0 {
                state.roll(now_ms);
            }
        }
        let mut stats = CleanStats {
            segments_before: shared.state.borrow().segments.len(),
            ..CleanStats::default()
        };
        let inputs = shared.rewrite_inputs()?;
        let pacer = Pacer::new(shared.config().cleaner_io_bytes_per_second_max);
        let mut policy = RecordPolicy::Rewrite(rewrite);
        for input in &inputs {
            shared.check_not_stopped()?;
            shared
                .clean_group(
                    std::slice::from_ref(input),
                    &mut policy,
                    now_ms,
                    &pacer,
                    &mut stats,
                )
                .await?;
        }
        stats.segments_after = shared.state.borrow().segments.len();
        Ok(stats)
    }
}

impl super::Shared {
    /// Every segment but the (empty) active one, each to be rewritten on its own.
    fn rewrite_inputs(&self) -> Result<Vec<Input>, LogError> {
        let state = self.state.borrow();
        let segments: Vec<_> = state.segments.values().collect();
        let mut inputs = Vec::new();
        for pair in segments.windows(2) {
            let (segment, next) = (pair[0], pair[1]);
            if !segment.damaged.is_empty() {
                return Err(LogError::Corrupt(format!(
                    "segment {} is damaged: its records cannot be rewritten",
                    segment.base_offset
                )));
            }
            // A segment without a file holds nothing (the log was synced).
            inputs.extend(Input::of(segment, next));
        }
        Ok(inputs)
    }
}
