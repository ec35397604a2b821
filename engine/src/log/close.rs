//! Closing a log: everything written to the segments and sealed, the producer snapshot and the
//! clean-shutdown marker written last, the journal told to forget the log. Its own room because
//! the three kinds of close (a normal one, the shard's shutdown, a log still held by a long
//! poll) and replay's close must leave the files in exactly the state the next open trusts.

use std::path::PathBuf;

use super::damage;
use super::replay::ReplayedLog;
use super::{
    CleanMarker, PartitionLog, CLEAN_SHUTDOWN_FILE, PRODUCER_STATE_FILE, SMALL_SEGMENT_BYTES_MAX,
};
use crate::error::LogError;

impl PartitionLog {
    /// Writes and syncs everything to the segments, writes the active segment's indexes and
    /// marks the directory as cleanly closed, so the next open need not scan the log; then the
    /// journal forgets the log. A log whose files did not change since a clean open is left as
    /// it is: it still holds that close's marker.
    pub async fn close(self) -> Result<(), LogError> {
        self.close_as(false).await
    }

    /// [`PartitionLog::close`] at the shard's shutdown: the journal is released whole after
    /// every log closed, so no log's close writes a Forget record to it; instead the log leaves
    /// the commit cycle, which needs none of its records any more (they are in its synced
    /// segments). Takes `&self` because another task may still hold the log (a long poll, a
    /// coordinator's task that outlived the drain): it is closed all the same, its later appends
    /// refused. Only syncing such a log lost data: when its holder let go of it before the
    /// journal's release, the release took the only copy of its journaled batches (a
    /// transaction coordinator's records, gone across a clean restart). A close that fails
    /// leaves the log registered, so the journal is kept for the next start's replay.
    pub async fn close_at_shutdown(&self) -> Result<(), LogError> {
        self.close_as(true).await?;
        self.shared.commit.unregister(self.shared.commit_id.get());
        Ok(())
    }

    /// [`PartitionLog::close`] of a log other tasks may still hold (a long poll), before its
    /// directory is removed: once it returns, nothing of the log writes, reopens or syncs a
    /// file (appends are refused as closed; reads of what is gone fail) and the journal has
    /// forgotten it. A removal that only dropped its own handle left a held log's queued
    /// writes to reopen segment files unlinked under them (glommio's open panics on a path
    /// removed while it opens) and its journal records to replay into a new partition of the
    /// same name.
    pub async fn close_while_held(&self) -> Result<(), LogError> {
        self.close_as(false).await
    }

    pub(super) async fn close_as(&self, at_shutdown: bool) -> Result<(), LogError> {
        if let Some(marker) = self.close_files().await? {
            marker.write()?;
        }
        self.forget_unless(at_shutdown).await
    }

    /// A close for journal replay (a log opened by [`PartitionLog::open_for_replay`]): the
    /// segments written, unsynced, and no clean-shutdown marker: what it would say is handed
    /// back, for the shard's first open once a `syncfs` made it durable (see `replay.rs`).
    /// `None`: the files are still as the last clean close left them, its marker with them.
    pub(crate) async fn close_for_replay(self) -> Result<Option<ReplayedLog>, LogError> {
        assert!(self.shared.syncs_deferred);
        let closed = self.close_files().await?;
        Ok(closed.map(|marker| ReplayedLog {
            active_base_offset: self.shared.state.borrow().active_segment().base_offset,
            log_end_offset: marker.log_end_offset,
        }))
    }

    /// What every close does to the files: everything written to the segments, the active
    /// one sealed, its producer snapshot; the clean-shutdown marker to write after (none if
    /// the files are still as the last clean close left them; only it if they are as replay's
    /// close left them).
    async fn close_files(&self) -> Result<Option<CleanMarkerDue>, LogError> {
        let _guard = self.shared.enter_maintenance_even_failed().await?;
        {
            let mut state = self.shared.state.borrow_mut();
            state.closing = true;
            if let Some(error) = state.failed.clone() {
                return Err(error);
            }
        }
        self.shared.waiters.wake_all();
        self.shared.write_to_segments_before(false).await?;
        // Batches journaled since the open reached the segment just now (and removed the
        // marker): a marker still there means the files are as the last clean close left them;
        // one owed, as replay's close left them, durable: only the marker is missing.
        let clean_marker = self.shared.state.borrow().clean_marker;
        match clean_marker {
            CleanMarker::Present { .. } => return Ok(None),
            CleanMarker::Owed { log_end_offset } => {
                assert_eq!(
                    log_end_offset,
                    self.shared.state.borrow().log_end_offset,
                    "a log owed its marker is as replay closed it"
                );
                return Ok(Some(CleanMarkerDue {
                    dir: self.shared.dir.clone(),
                    log_end_offset,
                }));
            }
            CleanMarker::Removing | CleanMarker::Absent => {}
        }
        let active_base_offset = self.shared.state.borrow().active_segment().base_offset;
        self.shared.seal_segment(active_base_offset).await?;
        let (producers, log_end_offset) = {
            let state = self.shared.state.borrow();
            let small = state.active_segment().written_bytes <= SMALL_SEGMENT_BYTES_MAX;
            (
                (!state.producers.is_empty() || !small)
                    .then(|| state.producers.encode(state.log_end_offset)),
                state.log_end_offset,
            )
        };
        // One directory sync covers the snapshot's rename and the active segment's index
        // files. A small active segment keeps no indexes and writes no empty snapshot: the
        // next open scans it whole in one read and finds the same. A snapshot already there
        // stays (it describes a prefix of the log): a log with sealed segments always has
        // one, so that recovery can tell a lost one.
        match producers {
            Some(producers) => {
                self.shared
                    .replace_files(
                        &[(PRODUCER_STATE_FILE, &producers)],
                        "writing the producer state snapshot",
                    )
                    .await?
            }
            None => {
                let (active_base_offset, leftovers) = {
                    let state = self.shared.state.borrow();
                    (
                        state.active_segment().base_offset,
                        state.close_leftovers_may_exist,
                    )
                };
                let stale =
                    leftovers && damage::remove_index_files(&self.shared.dir, active_base_offset)?;
                if stale {
                    self.shared.sync_directory().await?;
                }
            }
        }
        Ok(Some(CleanMarkerDue {
            dir: self.shared.dir.clone(),
            log_end_offset,
        }))
    }

    /// After a close: the journal forgets the log (so that a replay never re-appends its
    /// records after a cut made elsewhere, once it moved), except at the shard's shutdown,
    /// where the shard releases its whole journal once every log closed
    /// ([`Committer::close`]): a crash before that finds every closed log's records already in
    /// its synced segments, and replay skips them.
    pub(super) async fn forget_unless(&self, at_shutdown: bool) -> Result<(), LogError> {
        if at_shutdown {
            return Ok(());
        }
        self.shared.forget_in_journal().await
    }
}

/// The clean-shutdown marker a close leaves to write last, once everything it vouches for is
/// durable (at once for a normal close, whose seal synced; never for replay's, whose `syncfs`
/// comes after: `ReplayedLog`).
#[derive(Debug)]
struct CleanMarkerDue {
    dir: PathBuf,
    log_end_offset: u64,
}

impl CleanMarkerDue {
    /// Not synced: everything it vouches for is durable already, and a marker lost to a
    /// crash only makes the next open scan the last segment. Its text is the log end, the
    /// recovery point once the files change again (see `Shared::before_change`).
    fn write(&self) -> Result<(), LogError> {
        std::fs::write(
            self.dir.join(CLEAN_SHUTDOWN_FILE),
            self.log_end_offset.to_string(),
        )
        .map_err(|error| LogError::io("writing the clean-shutdown marker", error))
    }
}
