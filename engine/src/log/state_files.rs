//! The partition directory's small state files: the clean-shutdown marker, the recovery point,
//! the log start offset, the compacted end offset, the leader epochs and the producer snapshot.
//! Each is replaced atomically and durably (a temporary written and synced, renamed over it,
//! the directory synced), through io_uring wherever the shard must not block; and the first
//! change to a cleanly closed log's files removes its clean-shutdown marker first. Its own room
//! because these files are what recovery trusts, so the rules for writing them live in one
//! place.
//!
//! Why never with blocking calls on the shard: a failover gives each surviving broker a thousand
//! new epochs at once, and a close writes several files for many logs together. The one file not
//! written through io_uring is the recovery point, written at most once per
//! `recovery_point_interval_ms` in the turn of the sync it follows, so it is on disk before the
//! appends that sync acknowledged run.
//!
//! # The clean-shutdown marker and the recovery point
//! `close` writes a `clean-shutdown` marker holding the log end as text, unsynced: a marker a crash
//! loses only makes the next open scan the last segment. The marker stays while the files are as
//! that close left them, so opening, reading and closing an unchanged log writes and syncs nothing.
//! The first change (a segment write, a cut; a journal record is not one, since replay re-appends
//! it) renames the marker to `recovery-point` and syncs the directory before the change reaches the
//! files.
//!
//! The *recovery point* (`recovery-point`, Kafka's `recovery-point-offset-checkpoint`) is an offset
//! below which everything was made durable by an `fdatasync`. It moves to the synced end after a
//! sync, at most every `recovery_point_interval_ms` (Kafka's
//! `log.flush.offset.checkpoint.interval.ms`); after a clean close it is the marker's text (one
//! rename, no write at close); it is lowered before a truncation below it. A recovery point whose
//! text a crash lost reads as none, so recovery scans more, never less. Every segment but the last
//! was sealed (synced) before the next got data, so everything below the last segment's base counts
//! as below the recovery point whatever the file says.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::epochs;
use super::producers::ProducerTable;
use super::{
    CleanMarker, Shared, CLEAN_SHUTDOWN_FILE, COMPACTED_END_OFFSET_FILE, LOG_START_OFFSET_FILE,
    PRODUCER_STATE_FILE, RECOVERY_POINT_FILE,
};
use crate::durable_file;
use crate::error::LogError;
use crate::segment;

impl Shared {
    pub(super) async fn sync_directory(&self) -> Result<(), LogError> {
        if self.syncs_deferred {
            return Ok(());
        }
        self.directory
            .get()
            .await?
            .directory
            .sync()
            .await
            .map_err(|error| LogError::glommio("syncing the partition directory", error))
    }

    /// Before the first change to the files since a clean open: the clean-shutdown marker goes,
    /// durably, so that a crash from now on is noticed by the next open. Every change to a
    /// partition's files comes after this (segment writes, truncation, deletion, a cleaning's
    /// swap, the small state files). A failure to make the removal durable fails the log, as a
    /// failed directory sync does anywhere.
    pub(super) async fn before_change(&self) -> Result<(), LogError> {
        self.wait_until(|state| state.clean_marker != CleanMarker::Removing)
            .await;
        let clean_marker = self.state.borrow().clean_marker;
        let log_end_offset = match clean_marker {
            CleanMarker::Present { log_end_offset } => log_end_offset,
            CleanMarker::Owed { .. } => {
                // No file vouches for the files: the close must seal them again.
                self.state.borrow_mut().clean_marker = CleanMarker::Absent;
                return Ok(());
            }
            CleanMarker::Removing | CleanMarker::Absent => return Ok(()),
        };
        self.state.borrow_mut().clean_marker = CleanMarker::Removing;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        // Everything up to the log end of the clean close was durable: the marker becomes the
        // recovery point in one rename (a recovery point whose text was lost in a crash reads
        // as none, which only makes recovery scan more).
        let gone = match log_end_offset {
            Some(_) => std::fs::rename(&marker, self.dir.join(RECOVERY_POINT_FILE)),
            None => std::fs::remove_file(&marker),
        };
        let removed = match gone {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(LogError::io("removing the clean-shutdown marker", error))
            }
            _ => self.sync_directory().await,
        };
        self.state.borrow_mut().clean_marker = CleanMarker::Absent;
        self.waiters.wake_all();
        if let Err(error) = &removed {
            self.mark_failed(error);
        }
        removed
    }

    /// Replaces the file `name` with `bytes` atomically and durably: written to a temporary
    /// file, synced, renamed over it, directory synced. A crash leaves the old or the new.
    /// Through io_uring, never blocking the shard: when a broker dies, every partition it led
    /// gets a new leader epoch on each survivor at once, and a thousand epoch files written
    /// and synced one after another with blocking calls stalled the shard for seconds (its
    /// Metadata answers, its followers' fetches and its leaders' quorum checks with it, so
    /// leaders stepped down and the elections churned; issue 16).
    pub(super) async fn replace_file(
        &self,
        name: &str,
        bytes: &[u8],
        operation: &'static str,
    ) -> Result<(), LogError> {
        self.replace_files(&[(name, bytes)], operation).await
    }

    /// [`Shared::replace_file`] with the file written, synced and renamed by blocking calls,
    /// in the turn that asks (only the directory sync is awaited): for the recovery point,
    /// moved right after a sync whose appends were just woken, so that it is on disk before
    /// any of them runs (a crash after an acknowledgement then finds its checkpoint, which
    /// `tests/damage.rs` relies on). Written at most once per `recovery_point_interval_ms`,
    /// never for each of a failover's thousand new epochs.
    pub(super) async fn replace_file_in_this_turn(
        &self,
        name: &str,
        bytes: &[u8],
        operation: &'static str,
    ) -> Result<(), LogError> {
        self.before_change().await?;
        durable_file::write_synced_then_rename(&self.dir, name, |file| file.write_all(bytes))
            .map_err(|error| LogError::io(operation, error))?;
        self.sync_directory().await
    }

    /// [`Shared::replace_file`] for several files at once, as a close writes them: their
    /// temporaries written and synced through io_uring (so the syncs of many logs closing
    /// together overlap instead of blocking the shard one after the other), renamed, then one
    /// directory sync for all. A crash leaves each file old or new.
    pub(super) async fn replace_files(
        &self,
        files: &[(&str, &[u8])],
        operation: &'static str,
    ) -> Result<(), LogError> {
        self.before_change().await?;
        let temporaries: Vec<PathBuf> = files
            .iter()
            .map(|(name, _)| self.dir.join(format!("{name}.tmp")))
            .collect();
        futures::future::try_join_all(
            files
                .iter()
                .zip(&temporaries)
                .map(|((_, bytes), temporary)| durable_file::write_whole_file(temporary, bytes)),
        )
        .await?;
        for ((name, _), temporary) in files.iter().zip(&temporaries) {
            std::fs::rename(temporary, self.dir.join(name))
                .map_err(|error| LogError::io(operation, error))?;
        }
        self.sync_directory().await
    }

    /// Moves the log start forward and records it durably before anything below it is
    /// deleted, so a crash never resurrects an offset a client was told is gone.
    pub(super) async fn persist_log_start_offset(
        &self,
        log_start_offset: u64,
    ) -> Result<(), LogError> {
        self.replace_file(
            LOG_START_OFFSET_FILE,
            log_start_offset.to_string().as_bytes(),
            "recording the log start offset",
        )
        .await
    }

    /// Records `offset` as the recovery point (every offset below it is durable).
    pub(super) async fn persist_recovery_point(&self, offset: u64) -> Result<(), LogError> {
        self.replace_file_in_this_turn(
            RECOVERY_POINT_FILE,
            offset.to_string().as_bytes(),
            "recording the recovery point",
        )
        .await?;
        let mut state = self.state.borrow_mut();
        state.recovery_point = offset;
        state.recovery_point_written_ms = self.clock.now_ms();
        Ok(())
    }

    /// Before the log is cut back to `offset`: a recovery point above it would have recovery
    /// take a torn write of the offsets appended there next for damage.
    pub(super) async fn lower_recovery_point(&self, offset: u64) -> Result<(), LogError> {
        if offset < self.state.borrow().recovery_point {
            self.persist_recovery_point(offset).await?;
        }
        Ok(())
    }

    /// After a sync made everything below `durable_end_offset` durable: moves the recovery
    /// point there, if the last move is `recovery_point_interval_ms` old (as Kafka checkpoints
    /// its recovery points every `log.flush.offset.checkpoint.interval.ms`).
    pub(super) async fn checkpoint_recovery_point(&self, durable_end_offset: u64) {
        // Deferred syncs: "durable" is not yet, and a recovery point past what a power loss
        // can take back would turn a torn tail into damage.
        if self.syncs_deferred {
            return;
        }
        let due = {
            let state = self.state.borrow();
            let interval_ms =
                i64::try_from(self.config().recovery_point_interval_ms).unwrap_or(i64::MAX);
            durable_end_offset > state.recovery_point
                && self
                    .clock
                    .now_ms()
                    .saturating_sub(state.recovery_point_written_ms)
                    >= interval_ms
        };
        // A failure only leaves an older recovery point, which recovery handles: more of the
        // last segment is then taken for a possibly torn tail.
        if due
            && self
                .persist_recovery_point(durable_end_offset)
                .await
                .is_err()
        {
            self.state.borrow_mut().recovery_point_written_ms = self.clock.now_ms();
        }
    }

    /// Records on disk that `epoch` begins at the log end (`base_offset` when the caller
    /// looked), with appends held meanwhile; a no-op if another append recorded it first.
    pub(super) async fn record_epoch(&self, epoch: i32, base_offset: u64) -> Result<(), LogError> {
        let _guard = self.enter_maintenance().await?;
        let recorded = {
            let mut state = self.state.borrow_mut();
            let log_end_offset = state.log_end_offset;
            let new_run = state.epoch_needs_recording(epoch, log_end_offset.max(base_offset))?;
            if new_run {
                state.epochs.push(epoch, log_end_offset.max(base_offset));
            }
            new_run
        };
        if recorded {
            self.persist_epochs().await?;
        }
        Ok(())
    }

    /// Before a replicated batch of `epoch` at `base_offset` (at or after the log end): records
    /// a gap before it so recovery accepts it, and its epoch if new.
    pub(super) async fn prepare_replicated(
        &self,
        epoch: i32,
        base_offset: u64,
    ) -> Result<(), LogError> {
        {
            let _guard = self.enter_maintenance().await?;
            self.allow_gaps_below(base_offset).await?;
        }
        self.record_epoch(epoch, base_offset).await
    }

    /// Makes recovery accept gaps between batches below `offset` (durably, before any batch
    /// after such a gap can be written).
    pub(super) async fn allow_gaps_below(&self, offset: u64) -> Result<(), LogError> {
        if offset <= self.state.borrow().gaps_allowed_below {
            return Ok(());
        }
        self.replace_file(
            COMPACTED_END_OFFSET_FILE,
            offset.to_string().as_bytes(),
            "recording the compacted end offset",
        )
        .await?;
        let mut state = self.state.borrow_mut();
        state.gaps_allowed_below = state.gaps_allowed_below.max(offset);
        Ok(())
    }

    /// Writes the leader epochs as they are now.
    pub(super) async fn persist_epochs(&self) -> Result<(), LogError> {
        let text = {
            let mut state = self.state.borrow_mut();
            if !state.epochs_file_may_exist
                && state
                    .epochs
                    .absent_file_says_the_same(state.log_start_offset)
            {
                return Ok(());
            }
            // Set before the write: one that fails half-way may leave the file in place.
            state.epochs_file_may_exist = true;
            state.epochs.encode()
        };
        // Replay appends the batches the file was written for before they were journaled:
        // it usually says this already, and rewriting it would cost a sync per partition.
        if self.syncs_deferred && !epochs::file_differs_from_text(&self.dir, &text)? {
            return Ok(());
        }
        self.replace_file(
            epochs::LEADER_EPOCHS_FILE,
            text.as_bytes(),
            "recording the leader epochs",
        )
        .await
    }

    /// The log now ends at `end_offset` (a truncation): the replicated high-water mark stays
    /// at or below it, and the epochs that started there or later are forgotten, on disk before
    /// anything is appended in their place (a later batch may carry an older epoch than a
    /// forgotten one, and the file must not claim it for the forgotten one).
    pub(super) async fn end_moved_back_to(&self, end_offset: u64) -> Result<(), LogError> {
        let changed = {
            let mut state = self.state.borrow_mut();
            if let Some(high_watermark) = &mut state.replicated_high_watermark {
                *high_watermark = (*high_watermark).min(end_offset);
            }
            let before = state.epochs.runs().len();
            state.epochs.truncate_from(end_offset);
            state.epochs.runs().len() != before
        };
        if changed {
            self.persist_epochs().await?;
        }
        Ok(())
    }

    /// Writes the producer snapshot for a log ending at `end_offset`.
    pub(super) async fn persist_producers(
        &self,
        table: &ProducerTable,
        end_offset: u64,
    ) -> Result<(), LogError> {
        self.state.borrow_mut().close_leftovers_may_exist = true;
        self.replace_file(
            PRODUCER_STATE_FILE,
            &table.encode(end_offset),
            "writing the producer state snapshot",
        )
        .await
    }
}

/// Unlinks a segment's files (those that exist). The caller syncs the directory afterwards.
pub(super) fn remove_segment_files(dir: &Path, base_offset: u64) -> Result<bool, LogError> {
    remove_existing(
        &[
            segment::log_path(dir, base_offset),
            segment::offset_index_path(dir, base_offset),
            segment::time_index_path(dir, base_offset),
            super::transactions::transaction_index_path(dir, base_offset),
        ],
        "deleting a segment",
    )
}

/// Unlinks those of `paths` that exist; whether there were any.
pub(super) fn remove_existing(
    paths: &[PathBuf],
    operation: &'static str,
) -> Result<bool, LogError> {
    let mut removed = false;
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => removed = true,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(LogError::io(operation, error)),
        }
    }
    Ok(removed)
}

/// Deletes the producer snapshot (the log is about to lose batches it describes); whether there
/// was one. The caller syncs the directory before the log changes further.
pub(super) fn remove_producer_snapshot(dir: &Path) -> Result<bool, LogError> {
    remove_existing(
        &[dir.join(PRODUCER_STATE_FILE)],
        "deleting the producer state snapshot",
    )
}
