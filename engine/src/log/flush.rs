//! Segment writes: turning a log's batches into direct-I/O writes of its segment files, the
//! sealing of finished segments, and what a failed write or sync does. The shard's commit
//! cycle (`commit/`) decides when a log's batches go here; maintenance (truncation, close)
//! calls the same functions while it holds the log.
//!
//! Failures: a failed write rolls the log end back to the written end (the batches of that
//! operation and everything queued behind it fail; journaled batches, already written, stay).
//! A failed `fdatasync` (or a failed trim, or a failed sync of the directory) makes the log
//! *failed*: the kernel may have dropped what that sync was to cover, and a later sync that
//! succeeds says nothing about it (PostgreSQL's fsync lesson), so from then on nothing is
//! written or synced and nothing past the last good sync is acknowledged; every queued append
//! fails. [`super::PartitionLog::clear_fault`] cuts the log back to the last good sync to bring
//! it back.
//!
//! A failed write (`ENOSPC`, `EIO`) also cuts the segment file back to the written end and syncs
//! the cut, so a crash cannot bring the failed write's batches back; the log end goes back with the
//! tail cache and the producer table, the partition stays readable, and the next `append` (once
//! there is space) reuses the offsets. A failed journal write is overwritten with zeros and synced
//! before any of its appends hears of the failure (for the same reason), fails the appends of every
//! partition in it, and the journal continues in a new file. Batches numbered elsewhere
//! (`append_replicated`: a replica's Raft core numbered them for the end that is gone) are refused
//! until `clear_fault`, so the replica hears of the rollback instead of taking its next batch for a
//! compaction gap.
//!
//! What makes a log failed: a failed `fdatasync` of the active segment, of a segment being sealed,
//! of the cut after a failed write, or of the directory after a new segment file. A single broker's
//! failed log stays so until the broker restarts (recovery keeps what checks out, as Kafka takes a
//! failed log directory offline); a replica's is brought back by `clear_fault`, which cuts the log
//! back to the last good sync (`durable_end_offset`; a sealed segment counts as synced to its end),
//! trims and syncs what is left, and syncs everything still written but unsynced. A failed journal
//! `fdatasync` (or a failed zeroing after a failed journal write) fails, the same way, every log
//! with records written to the journal since its last good sync, and the journal moves on to a new
//! file; `clear_fault` keeps what the journal made durable (it writes it to the segment and syncs
//! it first).
//!
//! # The durable page
//! The bytes of a durable page are never changed: a write starts at the 4 KiB page holding the
//! written end and repeats that page's existing bytes, so a torn rewrite of the page (given
//! sector-atomic writes) can only damage bytes after the durable end. That page is rewritten with
//! direct I/O, so a page-cache copy of it could be stale: the network layer splices file ranges
//! only below the active segment's last partial page, and reads of that page are direct I/O.

use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile};

use super::commit::SegmentWork;
use super::injected_faults::{injected, IoOperation};
use super::transactions;
use super::{FlushTicket, LogState, Shared, UnflushedBatch};
use crate::config::DMA_ALIGNMENT_BYTES;
use crate::durable_file::write_whole_file;
use crate::error::LogError;
use crate::index::TimeIndexEntry;
use crate::segment::{self, align_down, align_up, SegmentFiles};

/// How long a failed write of journaled batches to their segment waits before the next try.
const SEGMENT_RETRY_DELAY_MS: i64 = 100;

/// After a failed write or sync: everything past the written end is discarded (the failed
/// operation's ticket, if any, failing with `error`, and every append queued behind it) and the
/// log end goes back to the written end, so the next append reuses those offsets. Batches
/// already written (to the segment or the journal) stay. The partition stays readable.
pub(super) fn roll_back_unwritten(
    state: &mut LogState,
    in_flight: Option<&FlushTicket>,
    error: LogError,
) {
    if let Some(in_flight) = in_flight {
        in_flight.fail(error);
    }
    std::mem::take(&mut state.open_ticket).fail(LogError::Discarded {
        reason: "an earlier write or sync of this partition failed",
    });
    if state.log_end_offset == state.written_end_offset {
        return;
    }
    state.unflushed.clear();
    state.unflushed_bytes = 0;
    let keep_end = state.written_end_offset;
    state.log_end_offset = keep_end;
    state.tail_cache.truncate_from(keep_end);
    let doomed: Vec<u64> = state
        .segments
        .range(keep_end + 1..)
        .map(|(&base, _)| base)
        .collect();
    for base in doomed {
        state.segments.remove(&base);
    }
    // What the active segment keeps: its written bytes and the journaled batches that belong
    // to it (written to the journal, not yet to the segment).
    let active_base_offset = state.active_segment().base_offset;
    let journaled_bytes: u64 = state
        .lazy
        .iter()
        .filter(|batch| batch.segment_base_offset == active_base_offset)
        .map(|batch| batch.bytes.len() as u64)
        .sum();
    let active = state.active_segment_mut();
    let keep_bytes = active.written_bytes + journaled_bytes;
    active.forget_from(keep_bytes, keep_end);
    // A retry of a discarded batch must be appended again, not answered as a duplicate.
    state.forget_producers_from(keep_end);
}

impl Shared {
    /// Writes `batches` (in log order) to their segments, sealing each segment before the
    /// first write to a later one; `reserve_ahead`: no sync waits on these writes, so they may
    /// reserve space ahead (`preallocate.rs`).
    async fn write_batches(
        &self,
        batches: &[UnflushedBatch],
        reserve_ahead: bool,
    ) -> Result<(), LogError> {
        self.before_change().await?;
        let mut start = 0;
        while start < batches.len() {
            let base_offset = batches[start].segment_base_offset;
            let run_length = batches[start..]
                .iter()
                .take_while(|batch| batch.segment_base_offset == base_offset)
                .count();
            self.seal_segments_before(base_offset).await?;
            self.write_run(
                base_offset,
                &batches[start..start + run_length],
                reserve_ahead,
            )
            .await?;
            start += run_length;
        }
        Ok(())
    }

    async fn seal_segments_before(&self, base_offset: u64) -> Result<(), LogError> {
        let unsealed: Vec<u64> = {
            let state = self.state.borrow();
            state
                .segments
                .range(..base_offset)
                .filter(|(_, segment)| !segment.sealed)
                .map(|(&base, _)| base)
                .collect()
        };
        for base in unsealed {
            self.seal_segment(base).await?;
        }
        Ok(())
    }

    /// Trims the segment's file to its logical size (dropping the direct-I/O padding), syncs
    /// it, writes its indexes and marks it sealed. Also used for the active segment on close,
    /// which is synced but not trimmed: see `recovery.rs` on the padding it keeps.
    pub(super) async fn seal_segment(&self, base_offset: u64) -> Result<(), LogError> {
        let (
            files,
            written_bytes,
            offset_index_bytes,
            time_index_bytes,
            damaged,
            closing,
            closing_small,
            transaction_index_bytes,
        ) = {
            let mut state = self.state.borrow_mut();
            let closing = state.closing && state.segments.keys().next_back() == Some(&base_offset);
            // The active segment of a log closing, small enough to be read whole at the next
            // open: no index files (`SMALL_SEGMENT_BYTES_MAX`).
            let closing_small = closing
                && state.segments[&base_offset].written_bytes <= super::SMALL_SEGMENT_BYTES_MAX;
            let segment = state
                .segments
                .get_mut(&base_offset)
                .expect("sealing a segment that exists");
            assert_eq!(
                segment.written_bytes, segment.appended_bytes,
                "only fully written segments are sealed"
            );
            if let Some(max_timestamp_ms) = segment.max_timestamp_ms {
                if segment.end_offset > segment.base_offset {
                    let relative_offset = segment.relative_offset(segment.end_offset - 1);
                    segment.time_index.push_if_newer(TimeIndexEntry {
                        timestamp_ms: max_timestamp_ms,
                        relative_offset,
                    });
                }
            }
            (
                segment.files.clone(),
                segment.written_bytes,
                segment.offset_index.encode(),
                segment.time_index.encode(),
                !segment.damaged.is_empty(),
                closing,
                closing_small,
                // A sealed segment always has one (empty without entries), so recovery
                // can tell a lost one; the active segment's at a close only with entries.
                (!segment.aborted_transactions.is_empty() || !closing)
                    .then(|| transactions::encode_index(&segment.aborted_transactions)),
            )
        };
        if let Some(files) = &files {
            let open = match files.get().await {
                Ok(open) => open,
                Err(error) => {
                    self.mark_failed(&error);
                    return Err(error);
                }
            };
            if closing {
                // Past its written bytes the file holds at most its last page's padding: a
                // failed write was cut off at once (or failed the log, which does not close
                // cleanly), and a cut or recovery left the file at a batch's end or with
                // verified padding. A trim would be an `ftruncate` inside a page (the kernel
                // reads the page back first); the next open takes the padding for the end.
                self.fdatasync(&open, "sealing a segment").await?;
            } else {
                self.trim_and_sync(&open, written_bytes, "sealing a segment")
                    .await?;
            }
        }
        if closing_small {
            // Its stale index files, if any, go with the close (`PartitionLog::close`).
        } else if damaged {
            // No index files for a damaged segment: the next open scans it in full again.
            super::damage::remove_index_files(&self.dir, base_offset)?;
        } else if files.is_some() {
            self.state.borrow_mut().close_leftovers_may_exist = true;
            write_whole_file(
                &segment::offset_index_path(&self.dir, base_offset),
                &offset_index_bytes,
            )
            .await?;
            write_whole_file(
                &segment::time_index_path(&self.dir, base_offset),
                &time_index_bytes,
            )
            .await?;
        }
        if let (Some(bytes), Some(_)) = (&transaction_index_bytes, &files) {
            // Whatever the segment's size or damage: unlike its other indexes, a scan of the
            // segment alone cannot rebuild it (the transactions' starts may lie in earlier
            // segments; recovery replays the log from its start to rebuild a lost one, see
            // `producer_replay.rs`). Written whole at each seal and close.
            self.state.borrow_mut().close_leftovers_may_exist = true;
            write_whole_file(
                &transactions::transaction_index_path(&self.dir, base_offset),
                bytes,
            )
            .await?;
        }
        let producer_snapshot = {
            let mut state = self.state.borrow_mut();
            let Some(segment) = state.segments.get_mut(&base_offset) else {
                return Ok(());
            };
            segment.sealed = true;
            // Trimmed: what it had reserved is free again.
            segment.preallocation = None;
            let end_offset = segment.end_offset;
            // Synced whole, after every earlier segment: durable up to its end (or the written
            // end, if a gap follows its last batch).
            let synced_end_offset = end_offset.min(state.segment_written_end_offset);
            state.segment_synced(synced_end_offset);
            match state.producer_snapshot_due.take() {
                Some((snapshot_end, table)) if snapshot_end == end_offset => {
                    Some((table, snapshot_end))
                }
                other => {
                    state.producer_snapshot_due = other;
                    None
                }
            }
        };
        if let Some((table, end_offset)) = producer_snapshot {
            // A crash in the next segment then loses no producer (recovery continues this).
            self.persist_producers(&table, end_offset).await?;
        }
        Ok(())
    }

    /// The segment's files, created (and the directory synced) on its first write.
    async fn files_for_write(&self, base_offset: u64) -> Result<Rc<SegmentFiles>, LogError> {
        let existing = self
            .state
            .borrow()
            .segments
            .get(&base_offset)
            .and_then(|segment| segment.files.clone());
        if let Some(files) = existing {
            return files.get().await;
        }
        let path = segment::log_path(&self.dir, base_offset);
        let (handle, files) =
            SegmentFiles::create(self.resources.files(), &path, path.clone()).await?;
        if let Err(error) = self.sync_directory().await {
            // The new file may not survive a crash, whatever a later directory sync says.
            self.mark_failed(&error);
            return Err(error);
        }
        let mut state = self.state.borrow_mut();
        let segment = state
            .segments
            .get_mut(&base_offset)
            .expect("a segment with queued batches exists");
        segment.files = Some(handle);
        Ok(files)
    }

    /// Writes one segment's run of batches: the last partial page is repeated, the whole is
    /// split into `write_chunk_bytes` chunks written concurrently, the end padded with zeros to
    /// the 4 KiB alignment.
    async fn write_run(
        &self,
        base_offset: u64,
        run: &[UnflushedBatch],
        reserve_ahead: bool,
    ) -> Result<(), LogError> {
        let files = self.files_for_write(base_offset).await?;
        let (position, tail_page) = {
            let state = self.state.borrow();
            let segment = &state.segments[&base_offset];
            (segment.written_bytes, segment.tail_page.clone())
        };
        let aligned_start = align_down(position);
        assert_eq!(
            tail_page.len() as u64,
            position - aligned_start,
            "the tail page holds exactly the partial page"
        );
        let run_bytes: u64 = run.iter().map(|batch| batch.bytes.len() as u64).sum();
        let written_end = position + run_bytes;
        self.reserve_space(base_offset, &files, align_up(written_end), reserve_ahead)
            .await?;
        let pieces = std::iter::once(&tail_page[..]).chain(run.iter().map(|b| &b.bytes[..]));
        let (buffers, new_tail_page) = fill_dma_buffers(
            &files.dma,
            pieces,
            aligned_start,
            written_end,
            self.config().write_chunk_bytes,
        );
        let chunk_bytes = self.config().write_chunk_bytes as u64;
        let writes = buffers.into_iter().enumerate().map(|(index, buffer)| {
            let files = &files;
            async move {
                let at = aligned_start + index as u64 * chunk_bytes;
                crate::dma::write_whole_at(
                    &files.dma,
                    buffer,
                    at,
                    crate::dma::WriteSync::Later,
                    "writing a segment",
                    "writing a segment (short write)",
                )
                .await
            }
        });
        let written = futures::future::try_join_all(writes).await.and_then(|_| {
            injected(&self.dir, IoOperation::Write).map_or(Ok(()), |error| {
                Err(LogError::io("writing a segment", error))
            })
        });
        if let Err(error) = written {
            // Cut off whatever part of the failed write reached the file, durably, so that
            // neither a scan after a crash nor the next write's padding can bring it back. (If
            // that fails too, the log is failed.)
            let _ = self
                .trim_and_sync(&files, position, "trimming a segment after a failed write")
                .await;
            return Err(error);
        }
        let mut state = self.state.borrow_mut();
        let segment = state
            .segments
            .get_mut(&base_offset)
            .expect("written segment exists");
        segment.written_bytes = written_end;
        segment.tail_page = new_tail_page;
        let last_offset = run.last().expect("a run has batches").last_offset;
        state.segment_written_end_offset = last_offset + 1;
        // Journaled batches now in the segment leave `lazy` at once, so that it always holds
        // exactly those from the segment's written end on.
        let mut written_journaled_bytes = 0;
        while let Some(front) = state.lazy.front() {
            if front.last_offset > last_offset {
                break;
            }
            written_journaled_bytes += front.bytes.len();
            state.lazy.pop_front();
        }
        state.lazy_bytes -= written_journaled_bytes;
        self.commit.add_unwritten(0, written_journaled_bytes);
        let segment_written_end_offset = state.segment_written_end_offset;
        state.tail_cache.evict(segment_written_end_offset);
        Ok(())
    }

    /// Before a write ending at `needed_bytes`: reserves the segment's blocks ahead of the
    /// writes (without changing the file size) when the partition is written steadily, as much
    /// as its rate asks for and the shard's budget allows (`preallocate.rs`).
    async fn reserve_space(
        &self,
        base_offset: u64,
        files: &SegmentFiles,
        needed_bytes: u64,
        reserve_ahead: bool,
    ) -> Result<(), LogError> {
        let Some(planned) = self.plan_reservation(base_offset, needed_bytes, reserve_ahead) else {
            return Ok(());
        };
        files
            .dma
            .pre_allocate(planned.end_bytes, true)
            .await
            .map_err(|error| LogError::glommio("reserving a segment's space", error))?;
        self.note_reservation(base_offset, planned);
        Ok(())
    }

    /// Makes the log failed (see the module documentation), and says so once: the operator
    /// must know why a partition stopped taking appends.
    pub(super) fn mark_failed(&self, error: &LogError) {
        let mut state = self.state.borrow_mut();
        if state.failed.is_none() {
            eprintln!(
                "ferrite: partition log in {}: {error}; it takes no more appends (a replica \
                 recovers by itself, a single broker's log once the broker restarts)",
                self.dir.display()
            );
            state.failed = Some(error.clone());
        }
    }

    /// `fdatasync` of a segment file. A failure makes the log failed (see the module
    /// documentation): the caller returns the error.
    async fn fdatasync(
        &self,
        files: &SegmentFiles,
        operation: &'static str,
    ) -> Result<(), LogError> {
        if self.syncs_deferred {
            return Ok(());
        }
        let result = files
            .dma
            .fdatasync()
            .await
            .map_err(|error| LogError::glommio(operation, error))
            .and_then(|()| {
                injected(&self.dir, IoOperation::Sync)
                    .map_or(Ok(()), |error| Err(LogError::io(operation, error)))
            });
        if let Err(error) = &result {
            self.mark_failed(error);
        }
        result
    }

    /// Cuts a segment file to `length_bytes` (dropping padding, or what a failed write left)
    /// and syncs it. A failure makes the log failed: what the file holds is unknown.
    pub(super) async fn trim_and_sync(
        &self,
        files: &SegmentFiles,
        length_bytes: u64,
        operation: &'static str,
    ) -> Result<(), LogError> {
        if let Err(error) = files.dma.truncate(length_bytes).await {
            let error = LogError::glommio(operation, error);
            self.mark_failed(&error);
            return Err(error);
        }
        self.fdatasync(files, operation).await
    }

    /// Writes `work`'s batches (journaled ones first, then new ones) to their segments and
    /// syncs the segment when an append waits for durability (or `force_sync`), completing
    /// what that covers. On a failed write the journaled batches stay unwritten (they are in
    /// the journal; the next try waits a moment) and the new ones are rolled back; a failed
    /// sync fails the log. The caller holds the log's segment operation.
    pub(super) async fn write_to_segments(&self, work: SegmentWork) -> Result<(), LogError> {
        let SegmentWork {
            journaled,
            queued,
            queued_bytes,
            ticket,
            force_sync,
        } = work;
        let batches: Vec<UnflushedBatch> = journaled.iter().chain(&queued).cloned().collect();
        let written = if batches.is_empty() {
            Ok(())
        } else {
            // Journaled batches alone: their durability is the journal's, no sync waits on
            // this write (a forced one is a checkpoint or a close, which trims what is left).
            self.write_batches(&batches, queued.is_empty() && !force_sync)
                .await
        };
        // A log that failed meanwhile (a journal sync it had records in) acknowledges nothing
        // more.
        let failed = self.state.borrow().failed.clone();
        let written = match (written, failed) {
            (Ok(()), Some(error)) => Err(error),
            (written, _) => written,
        };
        {
            let mut state = self.state.borrow_mut();
            if ticket.is_some() {
                state.in_flight_ticket = None;
            }
            // Whatever part of the batches reached the segment counts as written.
            state.written_end_offset = state
                .written_end_offset
                .max(state.segment_written_end_offset);
            match &written {
                Ok(()) => {
                    if !queued.is_empty() {
                        state.unflushed_bytes -= queued_bytes;
                        state.direct_unsynced = true;
                        state.stats.flushes += 1;
                        state.stats.bytes_written += queued_bytes as u64;
                    }
                    if let Some(ticket) = &ticket {
                        let end_offset = state.written_end_offset;
                        state.unsynced_tickets.push((end_offset, ticket.clone()));
                    }
                }
                Err(error) => {
                    // Journaled batches that did not reach the segment stay in `lazy` for a
                    // later write, after a pause (the journal holds them).
                    let written_anyway = state.failed.is_some();
                    if !written_anyway {
                        state.write_failure = Some(error.clone());
                    }
                    if queued.is_empty() {
                        state.segment_retry_at_ms = self.clock.now_ms() + SEGMENT_RETRY_DELAY_MS;
                        self.commit
                            .mark_dirty_later(self.commit_id.get(), SEGMENT_RETRY_DELAY_MS);
                    } else {
                        state.unflushed_bytes -= queued_bytes;
                        roll_back_unwritten(&mut state, ticket.as_deref(), error.clone());
                    }
                }
            }
        }
        if let (Ok(()), Some(ticket)) = (&written, &ticket) {
            ticket.complete_written(Ok(()));
        }
        self.waiters.wake_all();
        written?;
        let wants_sync = {
            let state = self.state.borrow();
            // Journaled batches are made durable by the journal's sync: a write of them alone
            // syncs only when asked to (the journal needs the space).
            let waited_on = !queued.is_empty()
                && (state.sync_requested
                    || state
                        .unsynced_tickets
                        .iter()
                        .any(|(_, ticket)| ticket.durable_wanted.get()));
            (force_sync || waited_on)
                && (state.direct_unsynced
                    || state.segment_synced_end_offset < state.segment_written_end_offset)
        };
        if wants_sync {
            self.sync_segment().await?;
        }
        Ok(())
    }

    /// Syncs the segment being written (earlier ones were synced when sealed): everything in
    /// the segments is then durable.
    pub(super) async fn sync_segment(&self) -> Result<(), LogError> {
        let (files, covered_end_offset) = {
            let mut state = self.state.borrow_mut();
            state.sync_requested = false;
            let files = state
                .segments
                .values()
                .rev()
                .find_map(|segment| segment.files.clone().filter(|_| !segment.sealed));
            (files, state.segment_written_end_offset)
        };
        let result = match files {
            // Failing to open the file for the sync is a failed sync: nothing it was to cover
            // is known durable.
            Some(files) => match files.get().await {
                Ok(files) => {
                    self.state.borrow_mut().stats.syncs += 1;
                    self.fdatasync(&files, "syncing a segment").await
                }
                Err(error) => {
                    self.mark_failed(&error);
                    Err(error)
                }
            },
            None => Ok(()),
        };
        let segment_synced_end_offset = {
            let mut state = self.state.borrow_mut();
            match &result {
                Ok(()) => {
                    state.direct_unsynced = false;
                    state.segment_synced(covered_end_offset);
                }
                Err(error) => {
                    // `fdatasync` made the log failed; nothing unsynced is acknowledged.
                    roll_back_unwritten(&mut state, None, error.clone());
                    for (_, ticket) in std::mem::take(&mut state.unsynced_tickets) {
                        ticket.fail(error.clone());
                    }
                }
            }
            state.segment_synced_end_offset
        };
        self.waiters.wake_all();
        result?;
        self.checkpoint_recovery_point(segment_synced_end_offset)
            .await;
        Ok(())
    }
}

/// Copies `pieces` (laid end to end from `aligned_start`) into DMA buffers of at most
/// `chunk_bytes`, zero-padding the last to the alignment. Also returns the bytes of the new
/// last partial page (empty when the end is aligned).
pub(super) fn fill_dma_buffers<'a>(
    file: &DmaFile,
    pieces: impl Iterator<Item = &'a [u8]>,
    aligned_start: u64,
    end: u64,
    chunk_bytes: usize,
) -> (Vec<DmaBuffer>, Vec<u8>) {
    assert_eq!(aligned_start % DMA_ALIGNMENT_BYTES, 0);
    let padded_bytes = (align_up(end) - aligned_start) as usize;
    let mut buffers: Vec<DmaBuffer> = (0..padded_bytes.div_ceil(chunk_bytes))
        .map(|index| {
            let length = chunk_bytes.min(padded_bytes - index * chunk_bytes);
            file.alloc_dma_buffer(length)
        })
        .collect();
    let mut cursor = 0usize;
    for mut piece in pieces {
        while !piece.is_empty() {
            let buffer = &mut buffers[cursor / chunk_bytes];
            let within = cursor % chunk_bytes;
            let take = piece.len().min(buffer.len() - within);
            buffer.as_bytes_mut()[within..within + take].copy_from_slice(&piece[..take]);
            piece = &piece[take..];
            cursor += take;
        }
    }
    let data_bytes = (end - aligned_start) as usize;
    assert_eq!(cursor, data_bytes, "pieces fill exactly up to the end");
    let tail_start = (align_down(end) - aligned_start) as usize;
    let mut new_tail_page = Vec::with_capacity(data_bytes - tail_start);
    if let Some(last) = buffers.last_mut() {
        let last_start = padded_bytes - last.len();
        let bytes = last.as_bytes_mut();
        bytes[data_bytes - last_start..].fill(0);
        if tail_start < data_bytes {
            new_tail_page
                .extend_from_slice(&bytes[tail_start - last_start..data_bytes - last_start]);
        }
    }
    (buffers, new_tail_page)
}
