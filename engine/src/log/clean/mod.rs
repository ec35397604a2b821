//! Compaction (Kafka's log cleaner) of one partition log: keep only the latest record of each
//! key in the sealed segments, so a compacted topic holds its keys' current values and reading
//! it from the start rebuilds them.
//!
//! # What a cleaning does
//! 1. Picks the sealed segments from the front of the log up to the first one whose newest
//!    timestamp is younger than `min_compaction_lag_ms`, and never the last segment before an
//!    active segment that has no file yet (a sealed segment's end offset is the next segment's
//!    base on disk; without that segment, recovery would end the log at the cleaned segment's
//!    last kept batch and hand out offsets again), nor one that ends above the last stable
//!    offset (a replicated log cleans committed data only, and every transaction below the
//!    last stable offset is decided).
//! 2. Builds a map key → offset of the key's latest record over them (decompressing batches to
//!    read keys), bounded by `cleaner_map_bytes_max`: when the keys do not fit, only the
//!    segments that were mapped whole are cleaned (a partly mapped one names later offsets, so
//!    records before them that it supersedes go, and the latest stays where it is). Control
//!    batches hold no keys; the data batches of aborted transactions are left out of the map
//!    and removed, so an aborted record never hides a committed one, and a transaction marker
//!    goes `delete_retention_ms` after no record of its transaction is left, stamped with that
//!    delete horizon first (Kafka's rules with KIP-534: `transactions::CleanedTransactions`).
//!    The output's aborted-transaction index holds the entries of the ABORT markers that stay
//!    with data to skip.
//! 3. Groups consecutive segments so that each group's input fits `segment_bytes_max`, and
//!    rewrites each group into one segment named after its first input's base: a record stays
//!    if it has no key, or it is its key's latest and not a tombstone (null value) whose
//!    timestamp is older than `now - delete_retention_ms`. A batch keeps its base offset, offset
//!    range (last offset delta), timestamps, producer fields and attributes; its kept records
//!    keep their bytes (so their offset deltas, which now have gaps) and are re-compressed with
//!    the batch's codec; a batch with nothing kept is dropped; a batch with everything kept is
//!    copied as it was. So offsets are preserved and gaps appear. The batch's max timestamp is
//!    kept (it may then exceed every kept record's): retention and the lag rule see the segment
//!    as before, and a LogAppendTime batch's records keep their time.
//! 4. Records the end of the range in `compacted-end-offset` (atomically, durably) before the
//!    first swap: recovery accepts gaps between batches only below it, so a torn or damaged
//!    batch above it (whose base offset the CRC does not cover) is still caught.
//!    Then swaps each group in, Kafka-style, crash-safely: the output is written to
//!    `<base>.log.cleaned` and synced; renamed to `<base>.<end>.log.swap` (directory synced:
//!    the commit point, `end` being the base of the segment after the group); the inputs'
//!    files are deleted (directory synced); the swap file is renamed to `<base>.log`
//!    (directory synced) and its indexes written. Recovery deletes a `.cleaned` file and
//!    finishes a `.swap` (deletes the segments whose base is in its range, renames it), so a
//!    crash at any step leaves the old segments or the new one, never a mix. An error after
//!    the commit point fails the log (appends refused until a restart finishes the swap),
//!    since the files on disk and the segments in memory no longer agree.
//! 5. Replaces the group's segments in memory in one synchronous section. Readers holding the
//!    old files keep reading them (unlinked, still open).
//!
//! Cleaning is serialized with truncation, retention and `delete_up_to` (the `cleaning` flag
//! and the maintenance flag exclude each other) but not with appends, which only touch the
//! active segment. A group that is one segment and loses nothing is left as it was, so
//! cleaning a clean log writes nothing.
//!
//! A cleaning can be long (it reads the cleanable segments twice), and `close` waits for it;
//! so [`PartitionLog::stop_cleaning`] makes it stop at its next batch, before its next commit
//! point (an output not yet committed is deleted), and every batch read yields to the
//! executor when its time slice is used up, so a cleaning in a low-priority task queue
//! leaves the request path its time. [`PartitionLog::cleaning_due`] is the scheduler's test:
//! Kafka's dirty ratio over what a cleaning could rewrite now, and `max.compaction.lag.ms`.
//!
//! `rewrite` (beside) runs the same swap with another rule per record: a one-time rewrite of
//! every record in a format a layer above changed ([`PartitionLog::rewrite_records`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

mod paced_io;
mod rewrite;

pub use rewrite::{PartitionRecordRewrite, RecordRewrite, RewrittenRecord};

use super::state_files::remove_segment_files;
use super::transactions::{self, AbortedTransaction, CleanedTransactions, ControlFate};
use super::{PartitionLog, Shared};
use crate::batch::{self, BatchHeader, StoredRecords, BATCH_HEADER_BYTES};
use crate::codec;
use crate::config::CLEANER_MAP_ENTRY_OVERHEAD_BYTES;
use crate::durable_file::write_whole_file;
use crate::error::LogError;
use crate::segment::{self, Segment, SegmentFile, SegmentFiles};
use paced_io::{BatchWalk, OutputWriter, Pacer};

/// Decompressed records of one batch beyond this are refused (a hostile batch could expand
/// to gigabytes); the cleaning stops with an error rather than guess at that batch's keys.
const DECOMPRESSED_BYTES_MAX: usize = 256 << 20;

/// What one cleaning did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Bytes of the segments rewritten (read twice: once for the map, once to copy).
    pub bytes_read: u64,
    /// Bytes of the segments written in their place.
    pub bytes_written: u64,
    pub records_removed: u64,
    /// Records a rewrite ([`PartitionLog::rewrite_records`]) changed.
    pub records_rewritten: u64,
    pub segments_before: usize,
    pub segments_after: usize,
}

/// The steps of a segment swap after which a test can stop a cleaning as a crash would: the
/// cleaning returns an error at once and leaves everything as it is; the test then drops the
/// log (a crash) and reopens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanStep {
    /// `<base>.log.cleaned` is written and synced.
    OutputWritten,
    /// Renamed to `<base>.<end>.log.swap`: committed.
    SwapCommitted,
    /// The input segments' files are deleted.
    InputsDeleted,
    /// The output is renamed into place; its indexes are not written yet.
    SwapInstalled,
}

/// A sealed segment the cleaning may rewrite.
struct Input {
    base_offset: u64,
    /// The next segment's base: where this one's offsets end.
    end_offset: u64,
    files: Rc<SegmentFile>,
    written_bytes: u64,
    max_timestamp_ms: Option<i64>,
    /// The segment's aborted-transaction index, which its output keeps.
    aborted_transactions: Vec<AbortedTransaction>,
}

impl Input {
    /// `segment` as an input, its offsets ending where `next` begins; `None` if it has no file.
    fn of(segment: &Segment, next: &Segment) -> Option<Input> {
        Some(Input {
            base_offset: segment.base_offset,
            end_offset: next.base_offset,
            files: segment.files.clone()?,
            written_bytes: segment.written_bytes,
            max_timestamp_ms: segment.max_timestamp_ms,
            aborted_transactions: segment.aborted_transactions.clone(),
        })
    }
}

/// Clears the cleaning flag however the cleaning ends.
struct CleaningGuard<'a> {
    shared: &'a Shared,
}

impl Drop for CleaningGuard<'_> {
    fn drop(&mut self) {
        self.shared.state.borrow_mut().cleaning = false;
        self.shared.clean_stop_requested.set(false);
        self.shared.waiters.wake_all();
    }
}

impl Shared {
    /// Waits for a maintenance or cleaning under way, then marks one (a cleaning or a record
    /// rewrite) as running until the guard drops; refused on a closing or failed log.
    async fn start_cleaning(&self) -> Result<CleaningGuard<'_>, LogError> {
        self.wait_until(|state| (!state.maintenance && !state.cleaning) || state.closing)
            .await;
        let mut state = self.state.borrow_mut();
        if state.closing {
            return Err(LogError::Closed);
        }
        if let Some(error) = &state.failed {
            return Err(error.clone());
        }
        state.cleaning = true;
        Ok(CleaningGuard { shared: self })
    }
}

impl PartitionLog {
    /// Compacts the sealed segments as this module describes, at time `now_ms` (for
    /// `delete_retention_ms` and `min_compaction_lag_ms`). Waits for a running truncation,
    /// retention or deletion; appends go on meanwhile. `Err(LogError::Closed)` when the log
    /// closes or [`PartitionLog::stop_cleaning`] stops it (the groups swapped in by then
    /// stay cleaned).
    pub async fn clean(&self, now_ms: i64) -> Result<CleanStats, LogError> {
        let shared = &self.shared;
        let _guard = shared.start_cleaning().await?;
        shared.check_not_stopped()?;
        let mut stats = CleanStats {
            segments_before: shared.state.borrow().segments.len(),
            ..CleanStats::default()
        };
        let inputs = shared.cleanable_inputs(now_ms);
        let pacer = Pacer::new(shared.config().cleaner_io_bytes_per_second_max);
        let transactions = || {
            CleanedTransactions::of(
                shared
                    .state
                    .borrow()
                    .segments
                    .values()
                    .flat_map(|segment| segment.aborted_transactions.iter()),
            )
        };
        let (keys, mapped) = shared
            .map_latest_offsets(&inputs, transactions(), &pacer)
            .await?;
        let Some(last) = inputs[..mapped].last() else {
            stats.segments_after = stats.segments_before;
            return Ok(stats);
        };
        // Recovery must accept the gaps before any swap can commit.
        shared.allow_gaps_below(last.end_offset).await?;
        let delete_retention_ms =
            i64::try_from(shared.config().delete_retention_ms).unwrap_or(i64::MAX);
        let mut policy = RecordPolicy::Compact {
            keys: &keys,
            transactions: transactions(),
            kept_entries: Vec::new(),
            now_ms,
            tombstone_horizon_ms: now_ms.saturating_sub(delete_retention_ms),
            marker_horizon_ms: now_ms.saturating_add(delete_retention_ms),
        };
        for group in shared.group(&inputs[..mapped]) {
            shared.check_not_stopped()?;
            shared
                .clean_group(group, &mut policy, now_ms, &pacer, &mut stats)
                .await?;
        }
        stats.segments_after = shared.state.borrow().segments.len();
        Ok(stats)
    }

    /// Whether a cleaning at `now_ms` is worth running, by Kafka's rules, and how dirty the
    /// log is (the scheduler cleans the dirtiest first): over the segments a cleaning could
    /// rewrite now (sealed, from the front, up to the first one younger than
    /// `min_compaction_lag_ms`), the share of bytes not cleaned yet, if it reaches
    /// `min_cleanable_dirty_ratio`, or if the first segment not cleaned yet has a newest
    /// timestamp older than `max_compaction_lag_ms` (its oldest record is older still: a
    /// record waits at most the lag plus its segment's time span). `None` when not due.
    pub fn cleaning_due(&self, now_ms: i64) -> Option<f64> {
        let shared = &self.shared;
        let config = shared.config();
        let cleaned_end_offset = shared.state.borrow().cleaned_end_offset;
        let inputs = shared.cleanable_inputs(now_ms);
        let (mut dirty_bytes, mut total_bytes) = (0u64, 0u64);
        let mut first_dirty = None;
        for input in &inputs {
            total_bytes += input.written_bytes;
            if input.base_offset >= cleaned_end_offset {
                dirty_bytes += input.written_bytes;
                first_dirty.get_or_insert(input);
            }
        }
        let first_dirty = first_dirty?;
        let dirty_ratio = dirty_bytes as f64 / total_bytes as f64;
        let lag_ms = i64::try_from(config.max_compaction_lag_ms).unwrap_or(i64::MAX);
        let lag_passed = first_dirty
            .max_timestamp_ms
            .is_some_and(|newest_ms| newest_ms < now_ms.saturating_sub(lag_ms));
        (dirty_ratio >= config.min_cleanable_dirty_ratio || lag_passed).then_some(dirty_ratio)
    }

    /// Makes the running cleaning, or the next one if none runs, stop at its next batch,
    /// before its next commit point, with `LogError::Closed`: the log is about to close or be
    /// removed.
    pub fn stop_cleaning(&self) {
        self.shared.clean_stop_requested.set(true);
    }

    /// Makes the next cleanings stop after `step` as a crash would (tests only).
    #[doc(hidden)]
    pub fn inject_clean_fault(&self, step: Option<CleanStep>) {
        self.shared.clean_fault.set(step);
    }
}

impl Shared {
    /// The sealed segments from the front that a cleaning at `now_ms` may rewrite.
    fn cleanable_inputs(&self, now_ms: i64) -> Vec<Input> {
        let state = self.state.borrow();
        let lag_ms = i64::try_from(self.config().min_compaction_lag_ms).unwrap_or(i64::MAX);
        let segments: Vec<&Segment> = state.segments.values().collect();
        // Only committed data: a replicated log's follower may still have to truncate above
        // its high-water mark, and must do so on the batches its leader sent. And only
        // stable data: below the last stable offset every transaction is decided, so the
        // cleaner knows which records are aborted.
        let stable_end = state.last_stable_offset();
        let mut inputs = Vec::new();
        for pair in segments.windows(2) {
            let (segment, next) = (pair[0], pair[1]);
            let too_recent = segment
                .max_timestamp_ms
                .is_some_and(|newest_ms| newest_ms > now_ms.saturating_sub(lag_ms));
            // Damaged bytes are not read through: the cleaner stops before them.
            if !segment.sealed
                || next.files.is_none()
                || too_recent
                || next.base_offset > stable_end
                || !segment.damaged.is_empty()
            {
                break;
            }
            let Some(input) = Input::of(segment, next) else {
                break;
            };
            inputs.push(input);
        }
        inputs
    }

    /// Key → offset of its latest record over `inputs`, and how many of them (from the front)
    /// were mapped whole within `cleaner_map_bytes_max`.
    async fn map_latest_offsets(
        &self,
        inputs: &[Input],
        mut cleaned: CleanedTransactions,
        pacer: &Pacer,
    ) -> Result<(HashMap<Box<[u8]>, u64>, usize), LogError> {
        let mut keys: HashMap<Box<[u8]>, u64> = HashMap::new();
        let mut map_bytes = 0usize;
        for (index, input) in inputs.iter().enumerate() {
            let files = input.files.get().await?;
            let mut batches = BatchWalk::new(input, &files, pacer);
            while let Some((header, bytes)) = batches.next().await? {
                self.check_not_stopped()?;
                if header.is_control() {
                    let marker = transactions::marker_of(&header, &bytes);
                    cleaned.on_control_batch(&header, marker.as_ref());
                    continue;
                }
                if cleaned.on_data_batch(&header) {
                    continue;
                }
                let body = records_section(&header, &bytes)?;
                for record in StoredRecords::new(&body, header) {
                    let record = record.map_err(|_| corrupt_batch(input, &header))?.record;
                    let Some(key) = record.key else { continue };
                    let offset = record.offset as u64;
                    if let Some(latest) = keys.get_mut(key) {
                        *latest = offset;
                        continue;
                    }
                    map_bytes += key.len() + CLEANER_MAP_ENTRY_OVERHEAD_BYTES;
                    if map_bytes > self.config().cleaner_map_bytes_max {
                        if index == 0 {
                            return Err(LogError::InvalidConfig(format!(
                                "cleaner_map_bytes_max ({}) cannot hold the keys of one \
                                 segment",
                                self.config().cleaner_map_bytes_max
                            )));
                        }
                        return Ok((keys, index));
                    }
                    keys.insert(key.into(), offset);
                }
            }
        }
        Ok((keys, inputs.len()))
    }

    /// Consecutive inputs whose bytes together fit one segment (at least one each).
    fn group<'a>(&self, inputs: &'a [Input]) -> Vec<&'a [Input]> {
        let mut groups = Vec::new();
        let mut start = 0;
        while start < inputs.len() {
            let mut bytes = inputs[start].written_bytes;
            let mut end = start + 1;
            while end < inputs.len() {
                let fits_bytes =
                    bytes + inputs[end].written_bytes <= self.config().segment_bytes_max;
                // The index's relative offsets are 32-bit.
                let fits_offsets =
                    inputs[end].end_offset - inputs[start].base_offset <= u64::from(u32::MAX);
                if !fits_bytes || !fits_offsets {
                    break;
                }
                bytes += inputs[end].written_bytes;
                end += 1;
            }
            groups.push(&inputs[start..end]);
            start = end;
        }
        groups
    }

    /// Rewrites one group into one segment, its records kept or changed as `policy` says, and
    /// swaps it in.
    async fn clean_group(
        &self,
        group: &[Input],
        policy: &mut RecordPolicy<'_>,
        now_ms: i64,
        pacer: &Pacer,
        stats: &mut CleanStats,
    ) -> Result<(), LogError> {
        let base_offset = group[0].base_offset;
        let end_offset = group[group.len() - 1].end_offset;
        let cleaned_path = segment::cleaned_log_path(&self.dir, base_offset);
        // The inputs stay open (in use) until the output has replaced them in memory: once the
        // output is renamed into place, their name is its, and the cache must not reopen an
        // input by that name for a reader.
        let mut inputs_open = Vec::with_capacity(group.len());
        for input in group {
            inputs_open.push(input.files.get().await?);
        }
        let (handle, files) = SegmentFiles::create(
            self.resources.files(),
            &cleaned_path,
            segment::log_path(&self.dir, base_offset),
        )
        .await?;
        let mut output = Segment::new_empty(base_offset, now_ms);
        let mut writer = OutputWriter::new(&files, self.config().write_chunk_bytes, pacer);
        let mut records_removed = 0u64;
        let mut records_rewritten = 0u64;
        let mut batches_changed = 0u64;
        let mut bytes_read = 0u64;
        let written = async {
            for (input, input_files) in group.iter().zip(&inputs_open) {
                bytes_read += input.written_bytes;
                let mut batches = BatchWalk::new(input, input_files, pacer);
                while let Some((header, bytes)) = batches.next().await? {
                    self.check_not_stopped()?;
                    let Some(kept) = filter_batch(input, &header, &bytes, policy)? else {
                        records_removed += header.records_count as u64;
                        continue;
                    };
                    records_rewritten += kept.records_rewritten;
                    let kept = kept.bytes;
                    batches_changed += u64::from(matches!(kept, Cow::Owned(_)));
                    let kept_header =
                        BatchHeader::parse(&kept).expect("the filtered batch has a header");
                    records_removed += (header.records_count - kept_header.records_count) as u64;
                    let position = output.appended_bytes;
                    output.note_batch(position, &kept_header, self.config().index_interval_bytes);
                    writer.push(&kept).await?;
                }
            }
            writer.finish(output.appended_bytes).await
        }
        .await;
        if let Err(error) = written {
            drop((files, handle));
            remove_file_if_present(&cleaned_path)?;
            return Err(error);
        }
        output.aborted_transactions = match policy {
            // The entries of the ABORT markers kept with data to skip, in marker order.
            RecordPolicy::Compact { kept_entries, .. } => std::mem::take(kept_entries),
            // Every batch stays where it was, and so does every entry.
            RecordPolicy::Rewrite(_) => group
                .iter()
                .flat_map(|input| input.aborted_transactions.iter().copied())
                .collect(),
        };
        // Only compaction makes a segment clean: a rewrite leaves superseded records for the
        // cleaner, which then finds the rewritten segments as dirty as before.
        let compacted = matches!(policy, RecordPolicy::Compact { .. });
        if group.len() == 1 && records_removed == 0 && batches_changed == 0 {
            // Nothing to gain: the segment stays as it is (and, compacted, counts as clean).
            drop((files, handle));
            remove_file_if_present(&cleaned_path)?;
            if compacted {
                let mut state = self.state.borrow_mut();
                state.cleaned_end_offset = state.cleaned_end_offset.max(end_offset);
            }
            return Ok(());
        }
        self.fault_after(CleanStep::OutputWritten)?;
        self.before_change().await?;
        let swap_path = segment::swap_log_path(&self.dir, base_offset, end_offset);
        std::fs::rename(&cleaned_path, &swap_path)
            .map_err(|error| LogError::io("committing a cleaned segment", error))?;
        self.sync_directory().await?;
        // Committed: from here on, failing leaves the disk ahead of memory.
        let installed = self.install(group, &swap_path, &output, base_offset).await;
        if let Err(error) = installed {
            // Only recovery, at the next open, can finish the swap.
            self.state.borrow_mut().restart_required = true;
            self.mark_failed(&error);
            return Err(error);
        }
        self.replace_in_memory(group, output, handle, end_offset, compacted);
        drop((files, inputs_open));
        stats.bytes_read += bytes_read;
        stats.bytes_written += self
            .state
            .borrow()
            .segments
            .get(&base_offset)
            .map_or(0, |segment| segment.appended_bytes);
        stats.records_removed += records_removed;
        stats.records_rewritten += records_rewritten;
        Ok(())
    }

    /// The steps after the commit point: delete the inputs, rename the output into place,
    /// write its indexes (an empty output is deleted instead).
    async fn install(
        &self,
        group: &[Input],
        swap_path: &Path,
        output: &Segment,
        base_offset: u64,
    ) -> Result<(), LogError> {
        self.fault_after(CleanStep::SwapCommitted)?;
        for input in group {
            remove_segment_files(&self.dir, input.base_offset)?;
        }
        self.sync_directory().await?;
        self.fault_after(CleanStep::InputsDeleted)?;
        if output.appended_bytes == 0 {
            remove_file_if_present(swap_path)?;
            return self.sync_directory().await;
        }
        std::fs::rename(swap_path, segment::log_path(&self.dir, base_offset))
            .map_err(|error| LogError::io("installing a cleaned segment", error))?;
        self.sync_directory().await?;
        self.fault_after(CleanStep::SwapInstalled)?;
        write_whole_file(
            &segment::offset_index_path(&self.dir, base_offset),
            &output.offset_index.encode(),
        )
        .await?;
        write_whole_file(
            &segment::time_index_path(&self.dir, base_offset),
            &output.time_index.encode(),
        )
        .await?;
        // Even empty: a sealed segment without one lost it (recovery rebuilds it then).
        write_whole_file(
            &transactions::transaction_index_path(&self.dir, base_offset),
            &transactions::encode_index(&output.aborted_transactions),
        )
        .await
    }

    /// Puts the output in the group's place, in one synchronous section; `compacted`: it is
    /// clean now.
    fn replace_in_memory(
        &self,
        group: &[Input],
        mut output: Segment,
        files: Rc<SegmentFile>,
        end_offset: u64,
        compacted: bool,
    ) {
        let mut state = self.state.borrow_mut();
        for input in group {
            state.segments.remove(&input.base_offset);
        }
        let base_offset = output.base_offset;
        if output.appended_bytes > 0 {
            output.written_bytes = output.appended_bytes;
            output.reserved_bytes = output.appended_bytes;
            // The output's offsets end where the group's did, kept batches or not.
            output.end_offset = end_offset;
            output.files = Some(files);
            output.sealed = true;
            state.segments.insert(base_offset, output);
        } else if let Some((_, previous)) = state.segments.range_mut(..base_offset).next_back() {
            previous.end_offset = end_offset;
        } else {
            // Everything from the log start to the next segment was compacted away; recovery
            // derives the same start from the first segment's base.
            state.log_start_offset = state.log_start_offset.max(end_offset);
        }
        assert!(
            state.segments.contains_key(&end_offset),
            "a cleaned group ends at the next segment's base"
        );
        state.tail_cache.drop_below(end_offset);
        if compacted {
            state.cleaned_end_offset = state.cleaned_end_offset.max(end_offset);
        }
    }

    /// `Err(LogError::Closed)` once the log is closing or the cleaning was asked to stop.
    fn check_not_stopped(&self) -> Result<(), LogError> {
        if self.clean_stop_requested.get() || self.state.borrow().closing {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    fn fault_after(&self, step: CleanStep) -> Result<(), LogError> {
        if self.clean_fault.get() == Some(step) {
            return Err(LogError::Io {
                operation: "cleaning (injected fault)",
                kind: std::io::ErrorKind::Other,
                message: format!("stopped after {step:?}"),
            });
        }
        Ok(())
    }
}

/// What a rewrite keeps of each record and how.
enum RecordPolicy<'a> {
    /// Compaction: a record stays if it has no key, or it is its key's latest (`keys`: key →
    /// offset of its latest record) and not a tombstone older than the horizon.
    /// The data of aborted transactions never stays, a marker whose transaction has no data
    /// left goes once its delete horizon has passed (`transactions`); `kept_entries` collects
    /// the index entries of the group being written.
    Compact {
        keys: &'a HashMap<Box<[u8]>, u64>,
        transactions: CleanedTransactions,
        kept_entries: Vec<AbortedTransaction>,
        now_ms: i64,
        tombstone_horizon_ms: i64,
        /// The delete horizon a marker that may go is stamped with.
        marker_horizon_ms: i64,
    },
    /// A one-time rewrite ([`PartitionLog::rewrite_records`]): every record stays, as the
    /// transform makes it.
    Rewrite(&'a mut dyn PartitionRecordRewrite),
}

/// A batch as a cleaning keeps it, and how many of its records the policy changed.
struct KeptBatch<'a> {
    bytes: Cow<'a, [u8]>,
    records_rewritten: u64,
}

impl<'a> KeptBatch<'a> {
    fn unchanged(bytes: &'a [u8]) -> KeptBatch<'a> {
        KeptBatch {
            bytes: Cow::Borrowed(bytes),
            records_rewritten: 0,
        }
    }
}

/// The batch as `policy` keeps it: `None` when no record stays, the original bytes when every
/// record stays unchanged, otherwise a rebuilt batch of the kept records (same header fields,
/// fewer or changed records, re-compressed).
fn filter_batch<'a>(
    input: &Input,
    header: &BatchHeader,
    bytes: &'a [u8],
    policy: &mut RecordPolicy<'_>,
) -> Result<Option<KeptBatch<'a>>, LogError> {
    if let RecordPolicy::Compact {
        transactions: cleaned,
        kept_entries,
        now_ms,
        marker_horizon_ms,
        ..
    } = policy
    {
        if header.is_control() {
            let marker = transactions::marker_of(header, bytes);
            return Ok(match cleaned.on_control_batch(header, marker.as_ref()) {
                ControlFate::Keep(entry) => {
                    kept_entries.extend(entry);
                    Some(KeptBatch::unchanged(bytes))
                }
                ControlFate::Discardable => match header.delete_horizon_ms() {
                    Some(horizon_ms) if horizon_ms <= *now_ms => None,
                    Some(_) => Some(KeptBatch::unchanged(bytes)),
                    None => Some(KeptBatch {
                        bytes: Cow::Owned(batch::with_delete_horizon(bytes, *marker_horizon_ms)),
                        records_rewritten: 0,
                    }),
                },
            });
        }
        if cleaned.on_data_batch(header) {
            return Ok(None);
        }
    }
    if header.is_control() {
        return Ok(Some(KeptBatch::unchanged(bytes)));
    }
    let body = records_section(header, bytes)?;
    let mut kept_records = Vec::with_capacity(body.len());
    let mut kept_count = 0i32;
    let mut rewritten = 0u64;
    for record in StoredRecords::new(&body, *header) {
        let stored = record.map_err(|_| corrupt_batch(input, header))?;
        let record = stored.record;
        match policy {
            RecordPolicy::Compact {
                keys,
                tombstone_horizon_ms,
                ..
            } => {
                let keep = match record.key {
                    None => true,
                    Some(key) => {
                        let latest = keys
                            .get(key)
                            .is_none_or(|&latest| latest == record.offset as u64);
                        let expired_tombstone =
                            record.value.is_none() && record.timestamp_ms < *tombstone_horizon_ms;
                        latest && !expired_tombstone
                    }
                };
                if keep {
                    kept_records.extend_from_slice(stored.encoded);
                    kept_count += 1;
                }
            }
            RecordPolicy::Rewrite(rewrite) => {
                match rewrite.rewrite(record.key, record.value) {
                    None => kept_records.extend_from_slice(stored.encoded),
                    Some(changed) => {
                        let encoded = batch::rewrite_record(
                            stored.encoded,
                            changed.key.as_deref(),
                            changed.value.as_deref(),
                        )
                        .ok_or_else(|| corrupt_batch(input, header))?;
                        kept_records.extend_from_slice(&encoded);
                        rewritten += 1;
                    }
                }
                kept_count += 1;
            }
        }
    }
    if kept_count == 0 {
        return Ok(None);
    }
    if kept_count == header.records_count && rewritten == 0 {
        return Ok(Some(KeptBatch::unchanged(bytes)));
    }
    let section = codec::compress(header.compression(), &kept_records)
        .map_err(|error| LogError::Corrupt(format!("re-compressing a cleaned batch: {error}")))?;
    let rebuilt = batch::encode_batch(
        &BatchHeader {
            records_count: kept_count,
            ..*header
        },
        &section,
    );
    debug_assert!(batch::validate_stored(&rebuilt, usize::MAX).is_ok());
    Ok(Some(KeptBatch {
        bytes: Cow::Owned(rebuilt),
        records_rewritten: rewritten,
    }))
}

/// The batch's records section, decompressed.
fn records_section<'a>(header: &BatchHeader, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>, LogError> {
    let section = &bytes[BATCH_HEADER_BYTES..];
    if header.compression() == codec::CODEC_NONE {
        return Ok(Cow::Borrowed(section));
    }
    codec::decompress(header.compression(), section, DECOMPRESSED_BYTES_MAX)
        .map(Cow::Owned)
        .map_err(|error| {
            LogError::Corrupt(format!(
                "batch at offset {} cannot be decompressed: {error}",
                header.base_offset
            ))
        })
}

fn corrupt_batch(input: &Input, header: &BatchHeader) -> LogError {
    LogError::Corrupt(format!(
        "segment {}: the records of the batch at offset {} do not parse",
        input.base_offset, header.base_offset
    ))
}

fn remove_file_if_present(path: &Path) -> Result<(), LogError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(LogError::io("deleting a cleaner file", error)),
    }
}

/// Finishes or forgets a cleaning that a crash interrupted, before recovery lists the
/// segments: `.cleaned` files (not committed) are deleted; a `.swap` file (committed) replaces
/// every segment whose base is in its range, index files included: recovery rebuilds the
/// swapped segment's indexes, its `.txnindex` by a replay of the log (as Kafka's `LogLoader`
/// recovers a swap segment), so no entry of the replaced segments is lost or left stale.
/// `names` are the directory's entries (listed once by the open). Returns whether it changed
/// the directory (the open then lists it again).
pub(super) fn finish_interrupted<'a>(
    dir: &Path,
    names: impl Iterator<Item = &'a str>,
) -> Result<bool, LogError> {
    let mut swaps = Vec::new();
    let mut segment_files = Vec::new();
    let mut changed = false;
    for name in names {
        if name.ends_with(segment::CLEANED_SUFFIX) {
            remove_file_if_present(&dir.join(name))?;
            changed = true;
        } else if let Some(range) = name.strip_suffix(segment::SWAP_SUFFIX) {
            let parsed = range.split_once('.').and_then(|(base, end)| {
                Some((base.parse::<u64>().ok()?, end.parse::<u64>().ok()?))
            });
            if let Some((base_offset, end_offset)) = parsed {
                swaps.push((base_offset, end_offset, dir.join(name)));
            }
        } else if let Some(base_offset) = [".log", ".index", ".timeindex", ".txnindex"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix)?.parse::<u64>().ok())
        {
            segment_files.push((base_offset, dir.join(name)));
        }
    }
    for (base_offset, end_offset, swap_path) in &swaps {
        for (_, path) in segment_files
            .iter()
            .filter(|(base, _)| (*base_offset..*end_offset).contains(base))
        {
            remove_file_if_present(path)?;
        }
        std::fs::rename(swap_path, segment::log_path(dir, *base_offset))
            .map_err(|error| LogError::io("finishing a segment swap", error))?;
        changed = true;
    }
    if changed {
        std::fs::File::open(dir)
            .and_then(|directory| directory.sync_all())
            .map_err(|error| LogError::io("syncing the partition directory", error))?;
    }
    Ok(changed)
}
