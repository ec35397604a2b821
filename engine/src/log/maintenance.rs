//! Maintenance: the exclusive hold on a quiet log (`maintenance` flag, no write in flight) that
//! truncation, retention, epoch records and close take, and bringing the log onto its segments
//! alone before a cut. Its own room because every operation that changes more than the log's
//! end goes through it, and its guard is what lets appends resume however such an operation
//! ends.

use super::commit;
use super::{SegmentOp, Shared, UnflushedBatch};
use crate::error::LogError;

impl Shared {
    /// Takes the maintenance flag (waiting for a running maintenance or cleaning to end) and
    /// waits until every appended batch is written, so the caller sees a quiet log; refused if
    /// the log failed.
    pub(super) async fn enter_maintenance(&self) -> Result<MaintenanceGuard<'_>, LogError> {
        let guard = self.enter_maintenance_even_failed().await?;
        if let Some(error) = self.state.borrow().failed.clone() {
            return Err(error);
        }
        Ok(guard)
    }

    /// [`Shared::enter_maintenance`], also when the log failed (to repair it).
    pub(super) async fn enter_maintenance_even_failed(
        &self,
    ) -> Result<MaintenanceGuard<'_>, LogError> {
        self.wait_until(|state| (!state.maintenance && !state.cleaning) || state.closing)
            .await;
        {
            let mut state = self.state.borrow_mut();
            if state.closing {
                return Err(LogError::Closed);
            }
            state.maintenance = true;
        }
        self.request_commit();
        let guard = MaintenanceGuard { shared: self };
        self.wait_until(|state| {
            state.unflushed.is_empty() && !state.in_journal_write && state.segment_op.is_none()
        })
        .await;
        Ok(guard)
    }

    /// With maintenance held: writes every batch not yet in the segments there and syncs
    /// them, so the log is on its segments alone (the journal holds nothing it needs).
    pub(super) async fn flush_to_segments(&self) -> Result<(), LogError> {
        self.write_to_segments_before(true).await
    }

    /// [`Shared::flush_to_segments`], the sync left to the caller when not `sync` (a close:
    /// sealing the active segment syncs it, and with it everything unsynced, since earlier
    /// segments were synced when sealed: one `fdatasync` per closing log instead of two).
    pub(super) async fn write_to_segments_before(&self, sync: bool) -> Result<(), LogError> {
        let work = {
            let mut state = self.state.borrow_mut();
            assert!(state.maintenance && state.segment_op.is_none());
            assert!(!state.in_journal_write && state.unflushed.is_empty());
            if state.lazy.is_empty()
                && (!sync
                    || (!state.direct_unsynced
                        && state.segment_synced_end_offset >= state.segment_written_end_offset))
            {
                return Ok(());
            }
            state.segment_op = Some(SegmentOp::Direct);
            let journaled: Vec<UnflushedBatch> = state.lazy.iter().cloned().collect();
            commit::SegmentWork {
                journaled,
                queued: Vec::new(),
                queued_bytes: 0,
                ticket: None,
                force_sync: sync,
            }
        };
        let result = self.write_to_segments(work).await;
        self.state.borrow_mut().segment_op = None;
        self.waiters.wake_all();
        result
    }

    /// With maintenance held, before a cut: the log on its segments alone, and its journal
    /// records forgotten.
    pub(super) async fn prepare_cut(&self) -> Result<(), LogError> {
        self.flush_to_segments().await?;
        self.forget_in_journal().await
    }

    /// With maintenance held and the log on its segments ([`Shared::flush_to_segments`]):
    /// makes replay ignore every earlier journal record of the log, durably, before the log is
    /// cut or closed (replay would otherwise re-append what the cut removed).
    pub(super) async fn forget_in_journal(&self) -> Result<(), LogError> {
        if !self.commit.journal_holds(self.commit_id.get()) {
            return Ok(());
        }
        let done = self.commit.request_forget(self);
        done.waiters
            .wait_for(|| done.durable.borrow().clone())
            .await
    }
}

/// Clears the maintenance flag however the maintenance ends.
pub(super) struct MaintenanceGuard<'a> {
    shared: &'a Shared,
}

impl Drop for MaintenanceGuard<'_> {
    fn drop(&mut self) {
        self.shared.state.borrow_mut().maintenance = false;
        self.shared.waiters.wake_all();
        // What waited for the maintenance (a sync, the journal's need for space) goes on.
        self.shared.request_commit();
    }
}
