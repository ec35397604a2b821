//! The flusher: one task per partition that turns queued appends into direct-I/O writes and
//! `fdatasync`s, and the sealing of finished segments.
//!
//! Group commit falls out of the loop's shape: each turn takes every queued batch, so the
//! appends that arrive during one flush share the next one. A turn syncs only if some append
//! in it (or an earlier unsynced one) is waited on for durability, so acks=1 traffic does not
//! pay for `fdatasync`.
//!
//! Failures: a failed write rolls the log end back to the written end (the batches of that
//! flush and everything queued behind it fail). A failed `fdatasync` (or a failed trim, or a
//! failed sync of the directory) makes the log *failed*: the kernel may have dropped what that
//! sync was to cover, and a later sync that succeeds says nothing about it (PostgreSQL's fsync
//! lesson), so from then on nothing is written or synced and nothing past the last good sync
//! is acknowledged; every queued append fails. [`super::PartitionLog::clear_fault`] cuts the
//! log back to the last good sync to bring it back.

use std::future::poll_fn;
use std::path::Path;
use std::rc::Rc;
use std::task::Poll;

use glommio::io::{DmaBuffer, DmaFile};

use super::injected_faults::{injected, IoOperation};
use super::{FlushTicket, LogState, Shared, UnflushedBatch};
use crate::config::DMA_ALIGNMENT_BYTES;
use crate::error::LogError;
use crate::index::TimeIndexEntry;
use crate::segment::{self, align_down, align_up, SegmentFiles};

/// Runs until the log closes (or is dropped, which cancels it).
pub(super) async fn run_flusher(shared: Rc<Shared>) {
    loop {
        poll_fn(|context| {
            let mut state = shared.state.borrow_mut();
            if !state.unflushed.is_empty() || state.sync_requested || state.closing {
                Poll::Ready(())
            } else {
                state.flusher_waker = Some(context.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let (batches, ticket) = {
            let mut state = shared.state.borrow_mut();
            if state.closing && state.unflushed.is_empty() && !state.sync_requested {
                return;
            }
            if let Some(error) = state.failed.clone() {
                // Nothing is written or synced after a failed sync: what arrived fails too.
                roll_back_unwritten(&mut state, None, error.clone());
                for ticket in std::mem::take(&mut state.unsynced_tickets) {
                    ticket.fail(error.clone());
                }
                state.sync_requested = false;
                drop(state);
                shared.waiters.wake_all();
                continue;
            }
            let batches: Vec<UnflushedBatch> = state.unflushed.drain(..).collect();
            let ticket = std::mem::take(&mut state.open_ticket);
            if !batches.is_empty() {
                state.in_flight_ticket = Some(ticket.clone());
            }
            (batches, ticket)
        };
        if !batches.is_empty() {
            let flushed_bytes: usize = batches.iter().map(|batch| batch.bytes.len()).sum();
            let result = shared.write_batches(&batches).await;
            let mut state = shared.state.borrow_mut();
            state.in_flight_ticket = None;
            match result {
                Ok(()) => {
                    state.stats.flushes += 1;
                    state.stats.bytes_written += flushed_bytes as u64;
                    state.unflushed_bytes -= flushed_bytes;
                    state.unsynced_tickets.push(ticket.clone());
                    ticket.complete_written(Ok(()));
                }
                Err(error) => {
                    state.write_failure = Some(error.clone());
                    roll_back_unwritten(&mut state, Some(&ticket), error)
                }
            }
            drop(state);
            shared.waiters.wake_all();
        }
        shared.sync_if_wanted().await;
    }
}

/// After a failed write or sync: everything past the written end is discarded (the in-flight
/// flush, if any, failing with `error`, and every append queued behind it) and the log end goes
/// back to the written end, so the next append reuses those offsets. The partition stays
/// readable.
fn roll_back_unwritten(state: &mut LogState, in_flight: Option<&FlushTicket>, error: LogError) {
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
    let active = state.active_segment_mut();
    let written_bytes = active.written_bytes;
    active.forget_from(written_bytes, keep_end);
    // A retry of a discarded batch must be appended again, not answered as a duplicate.
    state.forget_producers_from(keep_end);
}

impl Shared {
    /// Writes `batches` (in log order) to their segments, sealing each segment before the
    /// first write to a later one.
    async fn write_batches(&self, batches: &[UnflushedBatch]) -> Result<(), LogError> {
        self.before_change().await?;
        let mut start = 0;
        while start < batches.len() {
            let base_offset = batches[start].segment_base_offset;
            let run_length = batches[start..]
                .iter()
                .take_while(|batch| batch.segment_base_offset == base_offset)
                .count();
            self.seal_segments_before(base_offset).await?;
            self.write_run(base_offset, &batches[start..start + run_length])
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
    /// it, writes its indexes and marks it sealed. Also used for the active segment on close.
    pub(super) async fn seal_segment(&self, base_offset: u64) -> Result<(), LogError> {
        let (files, written_bytes, offset_index_bytes, time_index_bytes, damaged, closing_small) = {
            let mut state = self.state.borrow_mut();
            // The active segment of a log closing, small enough to be read whole at the next
            // open: no index files (`SMALL_SEGMENT_BYTES_MAX`).
            let closing_small = state.closing
                && state.segments.keys().next_back() == Some(&base_offset)
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
                closing_small,
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
            self.trim_and_sync(&open, written_bytes, "sealing a segment")
                .await?;
        }
        if closing_small {
            // Its stale index files, if any, go with the close (`PartitionLog::close`).
        } else if damaged {
            // No index files for a damaged segment: the next open scans it in full again.
            super::damage::remove_index_files(&self.dir, base_offset)?;
        } else if files.is_some() {
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
            let durable_end_offset = end_offset.min(state.written_end_offset);
            state.durable_end_offset = state.durable_end_offset.max(durable_end_offset);
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
    async fn write_run(&self, base_offset: u64, run: &[UnflushedBatch]) -> Result<(), LogError> {
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
        self.reserve_space(base_offset, &files, align_up(written_end))
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
                let length = buffer.len();
                let at = aligned_start + index as u64 * chunk_bytes;
                let written = files
                    .dma
                    .write_at(buffer, at)
                    .await
                    .map_err(|error| LogError::glommio("writing a segment", error))?;
                if written < length {
                    // Linux returns a short direct write only when it ran out of room (ENOSPC,
                    // or the file size limit) part way.
                    return Err(LogError::DiskFull {
                        operation: "writing a segment (short write)",
                    });
                }
                Ok(())
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
        state.written_end_offset = last_offset + 1;
        let written_end_offset = state.written_end_offset;
        state.tail_cache.evict(written_end_offset);
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
    ) -> Result<(), LogError> {
        let Some(planned) = self.plan_reservation(base_offset, needed_bytes) else {
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

    /// Syncs the active file when a written append is waited on for durability (or a sync was
    /// asked for), then completes the tickets it covers.
    async fn sync_if_wanted(&self) {
        let (files, tickets, covered_end_offset) = {
            let mut state = self.state.borrow_mut();
            let wanted = state.sync_requested
                || state
                    .unsynced_tickets
                    .iter()
                    .any(|ticket| ticket.durable_wanted.get());
            // A sync asked for while another was running is already answered by it once
            // nothing new was written since: never sync with nothing to cover.
            if !wanted || state.unsynced_tickets.is_empty() {
                state.sync_requested = false;
                return;
            }
            state.sync_requested = false;
            // Earlier segments were synced when sealed, so the active file is all there is.
            let files = state
                .segments
                .values()
                .rev()
                .find_map(|segment| segment.files.clone().filter(|_| !segment.sealed));
            (
                files,
                std::mem::take(&mut state.unsynced_tickets),
                state.written_end_offset,
            )
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
        let durable_end_offset = {
            let mut state = self.state.borrow_mut();
            match &result {
                Ok(()) => {
                    state.durable_end_offset = state.durable_end_offset.max(covered_end_offset);
                }
                // `fdatasync` made the log failed; what was queued behind it is never written.
                Err(error) => roll_back_unwritten(&mut state, None, error.clone()),
            }
            for ticket in tickets {
                ticket.complete_durable(result.clone());
            }
            state.durable_end_offset
        };
        self.waiters.wake_all();
        if result.is_ok() {
            self.checkpoint_recovery_point(durable_end_offset).await;
        }
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

/// Writes a small file in full with direct I/O and syncs it (segment indexes, the log's state
/// files): through io_uring, so the writes of many logs overlap.
pub(super) async fn write_whole_file(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let file = DmaFile::create(path)
        .await
        .map_err(|error| LogError::glommio("creating an index or state file", error))?;
    if !bytes.is_empty() {
        let mut buffer = file.alloc_dma_buffer(align_up(bytes.len() as u64) as usize);
        let data = buffer.as_bytes_mut();
        data[..bytes.len()].copy_from_slice(bytes);
        data[bytes.len()..].fill(0);
        file.write_at(buffer, 0)
            .await
            .map_err(|error| LogError::glommio("writing an index or state file", error))?;
        file.truncate(bytes.len() as u64)
            .await
            .map_err(|error| LogError::glommio("trimming an index or state file", error))?;
    }
    file.fdatasync()
        .await
        .map_err(|error| LogError::glommio("syncing an index or state file", error))?;
    file.close()
        .await
        .map_err(|error| LogError::glommio("closing an index or state file", error))
}
