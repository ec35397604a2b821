//! Cutting a log back: truncation at an offset (a Raft follower overruled by a new leader),
//! starting over empty at a leader's log start (`reset_to`), and bringing a faulted log back by
//! cutting it to its last good sync (`clear_fault`). Its own room because a cut is the one
//! change that moves the log end backwards, which the journal, the producer table, the epochs
//! and the recovery point must all follow (see the log's invariants).
//!
//! The producer table after a cut is reloaded (Kafka's `truncateAndReload`): the latest snapshot
//! at or below the new end, or an empty table at the log start, with the batches after it read
//! back from the segments (`producer_replay.rs`); it replaces the snapshot before the cut.
//!
//! Truncation deletes the segments after the cut, last first, before it cuts the one that holds it:
//! a crash midway leaves a prefix of the log, never a segment that does not follow on (which would
//! then read as damage).

use std::rc::Rc;

use super::damage::DamagedRange;
use super::epochs::EpochRuns;
use super::producer_replay::{self, ReplayedSegment};
use super::producers::{ProducerLimits, ProducerTable};
use super::read;
use super::state_files::{remove_existing, remove_producer_snapshot, remove_segment_files};
use super::transactions;
use super::PRODUCER_STATE_FILE;
use super::{flush, PartitionLog, Shared};
use crate::durable_file::write_synced_then_rename;
use crate::error::LogError;
use crate::segment::{Segment, SegmentFile, SegmentScanner};
use std::io::Write;

impl PartitionLog {
    /// Brings the log back into service after a failed write or sync, without a restart: after a
    /// failed sync, everything past the last good sync is cut off (the kernel may have dropped
    /// it, whatever a later sync says) and the cut synced; then whatever the log still holds is
    /// synced, so all of it is durable. Fails, leaving the log failed, if the disk fails again.
    ///
    /// A replica calls this before it rebuilds its Raft core from the log, so the core counts
    /// as persisted exactly what is durable. A single broker does not: after a failed sync its
    /// log refuses appends until the broker restarts, and recovery keeps what checks out. Also
    /// refused after a cleaning that failed half-way through installing its output: only the
    /// recovery of a restart finishes that.
    pub async fn clear_fault(&self) -> Result<(), LogError> {
        {
            let _guard = self.shared.enter_maintenance_even_failed().await?;
            let failed = {
                let state = self.shared.state.borrow();
                if state.restart_required {
                    return Err(state.failed.clone().unwrap_or(LogError::Corrupt(
                        "a cleaning failed half-way: restart the broker".into(),
                    )));
                }
                state.failed.is_some()
            };
            if failed {
                if let Err(error) = self.shared.cut_back_to_last_sync().await {
                    self.shared.mark_failed(&error);
                    return Err(error);
                }
            }
            let mut state = self.shared.state.borrow_mut();
            state.failed = None;
            state.write_failure = None;
        }
        self.sync().await
    }

    /// Removes every batch from the one holding `offset` on (Raft: a new leader overrules
    /// uncommitted entries). Cuts at a batch boundary, so the new log end may be below
    /// `offset`; returns it. Appends wait while this runs.
    pub async fn truncate(&self, offset: u64) -> Result<u64, LogError> {
        let _guard = self.shared.enter_maintenance().await?;
        if offset != self.shared.state.borrow().log_end_offset {
            self.shared.prepare_cut().await?;
        }
        self.shared.truncate_quiet(offset).await
    }

    /// Deletes every segment and starts the log empty at `offset`, the offset before it having
    /// been written in `previous_epoch` (a follower told to start over at its leader's log
    /// start: Kafka's truncate-fully-and-start-at, Raft's install-snapshot for a log whose
    /// state is the log itself).
    pub async fn reset_to(&self, offset: u64, previous_epoch: i32) -> Result<(), LogError> {
        let _guard = self.shared.enter_maintenance().await?;
        self.shared.prepare_cut().await?;
        self.shared.restart_empty_at(offset).await?;
        {
            let mut state = self.shared.state.borrow_mut();
            state.epochs = EpochRuns::default();
            if offset > 0 {
                state.epochs.push(previous_epoch, offset - 1);
            }
        }
        self.shared.persist_epochs().await
    }
}

impl Shared {
    /// [`PartitionLog::truncate`] once the log is quiet (maintenance held, nothing unwritten).
    pub(super) async fn truncate_quiet(&self, offset: u64) -> Result<u64, LogError> {
        let mut from_offset = offset;
        {
            let state = self.state.borrow();
            state.check_in_range(offset)?;
            if offset == state.log_end_offset {
                return Ok(offset);
            }
        }
        self.before_change().await?;
        // The cut is at the first batch holding `offset` or after it (compaction leaves gaps),
        // which may be in a later segment (at most one step per segment); in damaged bytes, at
        // their start.
        let (segment_base_offset, files, is_first, cut_position, cut_base_offset) = loop {
            let (segment_base_offset, files, bounds, is_first, next_base, holding, at_limit) = {
                let state = self.state.borrow();
                let segment = state.segment_holding(from_offset);
                let files = segment.files.clone().ok_or_else(|| {
                    LogError::Corrupt(format!("segment {} has no file", segment.base_offset))
                })?;
                let is_first = state.segments.keys().next() == Some(&segment.base_offset);
                let next_base = state
                    .segments
                    .range(segment.base_offset + 1..)
                    .next()
                    .map(|(&base, _)| base);
                let bounds = segment.walk_bounds(from_offset);
                let cut_at = |range: &DamagedRange| (range.position, range.start_offset);
                let holding = segment.damage_holding(from_offset).map(cut_at);
                // Where a walk that finds nothing stops: a compaction gap runs into damage.
                let at_limit = segment
                    .damaged
                    .iter()
                    .find(|range| range.position == bounds.2)
                    .map(cut_at);
                (
                    segment.base_offset,
                    files,
                    bounds,
                    is_first,
                    next_base,
                    holding,
                    at_limit,
                )
            };
            if let Some((position, start_offset)) = holding {
                break (segment_base_offset, files, is_first, position, start_offset);
            }
            let (scan_from, scan_from_offset, limit_bytes) = bounds;
            let open = files.get().await?;
            let mut scanner = SegmentScanner::new(&open.dma, limit_bytes, self.scan_window());
            let walk = read::walk_to_batch(
                &mut scanner,
                scan_from,
                scan_from_offset,
                limit_bytes,
                from_offset,
            )
            .await?;
            match (walk, next_base) {
                (read::Walk::Found(position, header), _) => {
                    break (
                        segment_base_offset,
                        files,
                        is_first,
                        position,
                        header.base_offset as u64,
                    )
                }
                (read::Walk::Damaged(damage), _) => {
                    self.record_damage(segment_base_offset, &files, damage)
                        .await?;
                }
                (read::Walk::End, _) if at_limit.is_some() => {
                    let (position, start_offset) = at_limit.expect("checked just now");
                    break (segment_base_offset, files, is_first, position, start_offset);
                }
                (read::Walk::End, Some(next_base)) => from_offset = next_base,
                (read::Walk::End, None) => {
                    // Only a gap lies from `offset` to the log end: no batch goes, the end
                    // moves back to `offset`.
                    self.lower_recovery_point(offset).await?;
                    {
                        let mut state = self.state.borrow_mut();
                        state.active_segment_mut().end_offset = offset;
                        state.end_at(offset);
                    }
                    self.end_moved_back_to(offset).await?;
                    return Ok(offset);
                }
            }
        };
        // In a gap, the log ends at `offset`; inside a batch, at that batch's start.
        let new_end = offset.min(cut_base_offset);
        if cut_base_offset < self.state.borrow().log_start_offset {
            // The batch holding `offset` began below the log start: nothing of it may stay,
            // and the log cannot end below its start, so it restarts empty at `offset`.
            return self.restart_empty_at(offset).await;
        }
        self.lower_recovery_point(new_end).await?;
        // Every segment after the cut goes; so does the cut segment when the cut is at its
        // start (unless it is the first), and the previous segment becomes active again.
        let removes_whole_segment = cut_position == 0 && !is_first;
        let first_doomed = if removes_whole_segment {
            segment_base_offset
        } else {
            segment_base_offset + 1
        };
        let doomed: Vec<u64> = {
            let state = self.state.borrow();
            state
                .segments
                .range(first_doomed..)
                .map(|(&b, _)| b)
                .collect()
        };
        // Last segment first, then the cut: a crash midway leaves a prefix of the log, never a
        // segment that does not follow on from the one before it (which recovery would report
        // as damage and keep).
        for base in doomed.iter().rev() {
            remove_segment_files(&self.dir, *base)?;
        }
        // The producer table at the new end, reloaded before the cut (the replay reads below
        // the new end only) and made the snapshot, replaced atomically: it describes a prefix
        // of the log before the cut and after it, so a crash at any step finds one (without
        // it, an open transaction whose first batch is in an older segment would be lost).
        let reloaded_from = self.producer_snapshot_at_or_below(new_end);
        let producers = self.reload_producers(new_end, reloaded_from).await?;
        self.persist_producers(&producers, new_end).await?;
        // The segment that becomes the active one keeps the aborted transactions whose markers
        // are before the cut: its index file says so before the cut (replaced atomically; a
        // scan could not rebuild the entries whose transactions began in earlier segments).
        let (active_base, kept_aborted) = {
            let state = self.state.borrow();
            let (&base, segment) = state
                .segments
                .range(..first_doomed)
                .next_back()
                .expect("the first segment is never doomed");
            let kept: Vec<_> = segment
                .aborted_transactions
                .iter()
                .filter(|aborted| aborted.last_offset < new_end)
                .copied()
                .collect();
            (base, kept)
        };
        let index_path = transactions::transaction_index_path(&self.dir, active_base);
        if kept_aborted.is_empty() {
            remove_existing(&[index_path], "deleting a transaction index")?;
        } else if let Some(name) = index_path.file_name().and_then(|name| name.to_str()) {
            let bytes = transactions::encode_index(&kept_aborted);
            write_synced_then_rename(&self.dir, name, |file| file.write_all(&bytes))
                .map_err(|error| LogError::io("rewriting a transaction index", error))?;
        }
        self.sync_directory().await?;
        if !removes_whole_segment {
            files
                .get()
                .await?
                .cut_durably(cut_position, "truncating a segment")
                .await?;
        }
        {
            let mut state = self.state.borrow_mut();
            for base in &doomed {
                state.segments.remove(base);
            }
            let active = state.active_segment_mut();
            if removes_whole_segment {
                // The segment before the cut ends where the log now does: its own batches end
                // at or before `new_end` (nothing from `offset` on was found in it).
                active.end_offset = new_end;
            } else {
                active.forget_from(cut_position, new_end);
            }
            active.written_bytes = active.appended_bytes;
            active.sealed = false;
            // It may have index files (it was sealed).
            state.close_leftovers_may_exist = true;
        }
        self.reload_active_tail_page().await?;
        {
            let mut state = self.state.borrow_mut();
            state.end_at(new_end);
            state.producers = producers;
        }
        self.end_moved_back_to(new_end).await?;
        Ok(new_end)
    }

    /// After a failed sync (maintenance held): the log ends at its last good sync, its files
    /// cut to what they hold and synced, the directory synced.
    pub(super) async fn cut_back_to_last_sync(&self) -> Result<(), LogError> {
        self.before_change().await?;
        let (cut, log_end_offset) = {
            let mut state = self.state.borrow_mut();
            let cut = state.durable_end_offset.max(state.log_start_offset);
            let cut = cut.min(state.log_end_offset);
            // Journaled batches at or past the cut were never durable: they go. Those below
            // it are durable in the journal only, and go to the segment next.
            let keep_end = cut
                .max(state.segment_written_end_offset)
                .min(state.written_end_offset);
            let before: usize = state.lazy_bytes;
            state.lazy.retain(|batch| batch.last_offset < keep_end);
            state.lazy_bytes = state.lazy.iter().map(|batch| batch.bytes.len()).sum();
            self.commit.add_unwritten(0, before - state.lazy_bytes);
            state.written_end_offset = keep_end;
            let error = state.failed.take().unwrap_or(LogError::Closed);
            flush::roll_back_unwritten(&mut state, None, error);
            (cut, state.log_end_offset)
        };
        self.prepare_cut().await?;
        if cut < log_end_offset {
            self.truncate_quiet(cut).await?;
        }
        // What a failed write or trim may have left past the written bytes goes too.
        let unsealed: Vec<(Rc<SegmentFile>, u64)> = self
            .state
            .borrow()
            .segments
            .values()
            .filter(|segment| !segment.sealed)
            .filter_map(|segment| Some((segment.files.clone()?, segment.written_bytes)))
            .collect();
        for (files, written_bytes) in unsealed {
            self.trim_and_sync(
                &*files.get().await?,
                written_bytes,
                "cutting a segment back after a failure",
            )
            .await?;
        }
        self.sync_directory().await
    }

    /// Deletes every segment and starts an empty log at `offset` (Kafka's
    /// `truncateFullyAndStartAt`).
    pub(super) async fn restart_empty_at(&self, offset: u64) -> Result<u64, LogError> {
        self.persist_log_start_offset(offset).await?;
        self.lower_recovery_point(offset).await?;
        let doomed: Vec<u64> = self.state.borrow().segments.keys().copied().collect();
        for base in doomed.iter().rev() {
            remove_segment_files(&self.dir, *base)?;
        }
        remove_producer_snapshot(&self.dir)?;
        self.sync_directory().await?;
        {
            let mut state = self.state.borrow_mut();
            state.segments.clear();
            let now_ms = self.clock.now_ms();
            state
                .segments
                .insert(offset, Segment::new_empty(offset, now_ms));
            assert!(
                state.lazy.is_empty(),
                "a log is reset with everything in its segments"
            );
            state.cut_generation += 1;
            state.log_start_offset = offset;
            state.log_end_offset = offset;
            state.written_end_offset = offset;
            state.durable_end_offset = offset;
            state.segment_written_end_offset = offset;
            state.segment_synced_end_offset = offset;
            state.tail_cache.truncate_from(0);
            state.producers.clear();
            state.producer_snapshot_due = None;
            state.epochs.trim_before(offset);
        }
        self.end_moved_back_to(offset).await?;
        Ok(offset)
    }

    /// The latest producer snapshot describing the log up to an end at or below `end_offset`,
    /// and that end: the file's, or the table kept for the next seal. What a truncation to
    /// `end_offset` reloads.
    fn producer_snapshot_at_or_below(&self, end_offset: u64) -> Option<(ProducerTable, u64)> {
        let limits = ProducerLimits::of(&self.config());
        let file = std::fs::read(self.dir.join(PRODUCER_STATE_FILE))
            .ok()
            .and_then(|bytes| ProducerTable::decode(&bytes, limits).ok());
        let due = self
            .state
            .borrow()
            .producer_snapshot_due
            .clone()
            .map(|(snapshot_end, table)| (table, snapshot_end));
        [file, due]
            .into_iter()
            .flatten()
            .filter(|(_, snapshot_end)| *snapshot_end <= end_offset)
            .max_by_key(|(_, snapshot_end)| *snapshot_end)
    }

    /// The producer table of the log as it ends at `end_offset` after a cut (Kafka's
    /// `truncateAndReload`): `snapshot` (or an empty table at the log start) with the batches
    /// after it replayed (`producer_replay.rs`).
    async fn reload_producers(
        &self,
        end_offset: u64,
        snapshot: Option<(ProducerTable, u64)>,
    ) -> Result<ProducerTable, LogError> {
        let (mut table, offset_from) = match snapshot {
            Some(snapshot) => snapshot,
            None => (
                ProducerTable::new(ProducerLimits::of(&self.config())),
                self.state.borrow().log_start_offset,
            ),
        };
        let segments: Vec<ReplayedSegment> = {
            let state = self.state.borrow();
            let first_base = state
                .segments
                .range(..=offset_from)
                .next_back()
                .map_or(0, |(&base, _)| base);
            state
                .segments
                .range(first_base..)
                .take_while(|(&base, _)| base < end_offset)
                .filter_map(|(_, segment)| ReplayedSegment::of(segment, offset_from))
                .collect()
        };
        let now_ms = self.clock.now_ms();
        producer_replay::replay(
            &segments,
            offset_from,
            end_offset,
            &mut table,
            now_ms,
            self.scan_window(),
        )
        .await?;
        Ok(table)
    }

    pub(super) async fn reload_active_tail_page(&self) -> Result<(), LogError> {
        let (files, written_bytes) = {
            let state = self.state.borrow();
            let active = state.active_segment();
            (active.files.clone(), active.written_bytes)
        };
        let tail_page = match files {
            Some(files) => read::last_partial_page(&*files.get().await?, written_bytes).await?,
            None => Vec::new(),
        };
        self.state.borrow_mut().active_segment_mut().tail_page = tail_page;
        Ok(())
    }
}
