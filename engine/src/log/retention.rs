//! Retention and DeleteRecords: the log start moved forward (durably first, so a crash never
//! brings back an offset a client was told is gone) and the sealed segments wholly below it
//! deleted. Its own room because it is the only way data leaves the front of the log.

use super::state_files::remove_segment_files;
use super::{PartitionLog, Shared};
use crate::error::LogError;
use crate::segment::Segment;

impl PartitionLog {
    /// Moves the log start to `offset` (Kafka's DeleteRecords) and deletes the segments that
    /// now lie wholly below it. Reads below the new start fail with `OffsetOutOfRange`.
    pub async fn delete_up_to(&self, offset: u64) -> Result<(), LogError> {
        let _guard = self.shared.enter_maintenance().await?;
        {
            let state = self.shared.state.borrow();
            state.check_in_range(offset)?;
            if offset <= state.log_start_offset {
                return Ok(());
            }
        }
        // The segments must reach the new start before it is recorded: after a crash, replay
        // would otherwise bring back journaled batches below it.
        self.shared.flush_to_segments().await?;
        self.shared.persist_log_start_offset(offset).await?;
        self.shared.state.borrow_mut().log_start_offset = offset;
        self.shared
            .delete_front_segments(|segment, _| segment.end_offset <= offset)
            .await?;
        Ok(())
    }

    /// Applies the retention bounds: deletes the oldest sealed segments while they are older
    /// than `retention_age_ms_max` (by their newest timestamp) or the log is larger than
    /// `retention_bytes_max`. Whole segments only; the active one never; nothing unless the
    /// cleanup policy includes deletion. Returns how many segments were deleted.
    pub async fn enforce_retention(&self) -> Result<usize, LogError> {
        let _guard = self.shared.enter_maintenance().await?;
        let config = self.shared.config();
        if !config.cleanup_policy.deletes() {
            return Ok(0);
        }
        let now_ms = self.shared.clock.now_ms();
        self.shared
            .delete_front_segments(|segment, log_bytes| {
                let expired = config.retention_age_ms_max.is_some_and(|age_ms_max| {
                    segment
                        .max_timestamp_ms
                        .is_some_and(|newest_ms| now_ms - newest_ms > age_ms_max as i64)
                });
                let oversized = config.retention_bytes_max.is_some_and(|bytes_max| {
                    log_bytes.saturating_sub(segment.appended_bytes) >= bytes_max
                });
                expired || oversized
            })
            .await
    }
}

impl Shared {
    /// Deletes sealed segments from the front while `condition(segment, log_bytes)` holds,
    /// moving the log start to the first kept segment. Never deletes the active segment.
    pub(super) async fn delete_front_segments(
        &self,
        condition: impl Fn(&Segment, u64) -> bool,
    ) -> Result<usize, LogError> {
        let doomed: Vec<u64> = {
            let state = self.state.borrow();
            let mut log_bytes: u64 = state.segments.values().map(|s| s.appended_bytes).sum();
            let mut doomed = Vec::new();
            // Never past the high-water mark: a replicated log keeps what is not committed.
            let high_watermark = state.high_watermark();
            for segment in state.segments.values() {
                if !segment.sealed
                    || segment.end_offset > high_watermark
                    || !condition(segment, log_bytes)
                {
                    break;
                }
                log_bytes -= segment.appended_bytes;
                doomed.push(segment.base_offset);
            }
            doomed
        };
        let Some(&last_doomed) = doomed.last() else {
            return Ok(0);
        };
        let new_start = {
            let state = self.state.borrow();
            let next = state
                .segments
                .range(last_doomed + 1..)
                .next()
                .map(|(&base, _)| base)
                .expect("the active segment is never deleted");
            next.max(state.log_start_offset)
        };
        self.persist_log_start_offset(new_start).await?;
        {
            let mut state = self.state.borrow_mut();
            state.log_start_offset = new_start;
            for base in &doomed {
                state.segments.remove(base);
            }
        }
        for base in &doomed {
            remove_segment_files(&self.dir, *base)?;
        }
        self.sync_directory().await?;
        Ok(doomed.len())
    }
}
