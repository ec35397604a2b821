//! The commit cycle's I/O operations: a journal write and its sync for many logs at once, a
//! segment operation of one log, and what their completion or failure does to the logs they
//! carried (acknowledgements, released journal space, failed appends). Kept apart from the
//! planning because this is where the write path's failure rules (see `flush.rs`) are applied.

use std::rc::Rc;

use super::{CommitShared, ForgetRequest, JournalPart, JournalWork, SegmentWork};
use crate::error::LogError;
use crate::journal;
use crate::log::injected_faults::{injected_in_any, IoOperation};
use crate::log::{flush, Shared};

/// Fails a journal write that could not be placed or failed: its appends (and what queued
/// behind them) and its Forget requests.
pub(super) fn fail_journal_write(
    commit: &CommitShared,
    parts: Vec<JournalPart>,
    forgets: Vec<ForgetRequest>,
    error: LogError,
) {
    for part in parts {
        let mut state = part.shared.state.borrow_mut();
        state.in_journal_write = false;
        state.in_flight_ticket = None;
        state.write_failure = Some(error.clone());
        // The batches were never written: they and what queued behind them go.
        flush::roll_back_unwritten(&mut state, Some(&part.ticket), error.clone());
        drop(state);
        part.shared.waiters.wake_all();
        commit.mark_dirty(&part.shared);
    }
    for forget in forgets {
        forget.done.fail(error.clone());
    }
}

/// One journal operation: the write of this cycle's records and the release of the oldest
/// file, concurrently, then the sync, then what they mean for each log. When a sync is already
/// wanted as the write starts and nothing else in the journal is unsynced, the write is its
/// own sync (`RWF_DSYNC`, see [`crate::dma::WriteSync::Dsync`]): an acknowledgement
/// waits for one disk operation, not a write and then an `fdatasync`.
pub(super) async fn journal_operation(commit: Rc<CommitShared>, work: JournalWork) {
    let JournalWork {
        write,
        parts,
        forgets,
        release,
        sync,
    } = work;
    let journal = commit
        .journal
        .as_ref()
        .expect("journal operations need one");
    let durable_write = write.is_some()
        && !journal.borrow().has_unsynced()
        && (sync
            || !forgets.is_empty()
            || parts.iter().any(|part| part.ticket.durable_wanted.get())
            || commit.journal_sync_wanted.get());
    let write_future = async {
        let Some((slot, buffer)) = write else {
            return Ok(None);
        };
        let length = buffer.len();
        let file = journal.borrow().file(slot.file);
        let started = std::time::Instant::now();
        let sync = match durable_write {
            true => crate::dma::WriteSync::Dsync,
            false => crate::dma::WriteSync::Later,
        };
        let result = crate::dma::write_whole_at(
            &file,
            buffer,
            slot.position,
            sync,
            "writing the journal",
            "writing the journal (short write)",
        )
        .await;
        let took_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        commit.count(|stats| stats.journal_write_micros += took_micros);
        // The write is done first and its result replaced, as a real failure may have
        // reached the file; every partition in the write sees the fault armed for any.
        let injected_error = injected_in_any(
            parts
                .iter()
                .map(|part| part.shared.dir.as_path())
                .chain(forgets.iter().map(|forget| forget.dir.as_path())),
            IoOperation::Write,
        );
        let result = result.and(injected_error.map_or(Ok(()), |error| {
            Err(LogError::io("writing the journal", error))
        }));
        match result {
            Ok(()) => Ok(Some((slot, length))),
            Err(error) => {
                // Zero what the failed write may have left, durably, before anyone hears of
                // the failure: a crash must not bring those batches back.
                let zeroed = async {
                    journal::zero_range(&file, slot.position, length).await?;
                    file.fdatasync()
                        .await
                        .map_err(|error| LogError::glommio("syncing the journal", error))
                }
                .await;
                Err((error, zeroed.err()))
            }
        }
    };
    let release_future = async {
        let index = release?;
        let file = journal.borrow().file(index);
        Some((index, journal::release_file(&file).await))
    };
    let (written, released) = futures::join!(write_future, release_future);
    if let Some((index, result)) = released {
        match result {
            Ok(()) => {
                journal.borrow_mut().released(index);
                commit.count(|stats| stats.files_released += 1);
            }
            Err(error) => crate::log_rate_limited!(
                "ferrite: cannot release a journal file, kept in use: {error}"
            ),
        }
    }
    let mut forgets = forgets;
    match written {
        Ok(Some((slot, length))) => {
            journal.borrow_mut().wrote(&slot, length);
            let batches: u64 = parts.iter().map(|part| part.batches.len() as u64).sum();
            commit.count(|stats| {
                stats.journal_writes += 1;
                stats.journal_bytes += length as u64;
                stats.journal_batches += batches;
            });
            for part in &parts {
                journaled(&commit, part, slot.file);
            }
        }
        Ok(None) => {}
        Err((error, zero_error)) => {
            journal.borrow_mut().abandon_current();
            fail_journal_write(&commit, parts, std::mem::take(&mut forgets), error);
            if let Some(zero_error) = zero_error {
                // The failed bytes may still be there: whatever the journal holds unsynced is
                // unknown, as after a failed sync.
                fail_journal_sync(&commit, zero_error);
            }
            commit.journal_busy.set(false);
            commit.journal_idle.wake_all();
            commit.wake();
            return;
        }
    }
    let wants_sync = sync
        || !forgets.is_empty()
        || parts.iter().any(|part| part.ticket.durable_wanted.get())
        || commit.journal_sync_wanted.replace(false);
    if durable_write || (wants_sync && journal.borrow().has_unsynced()) {
        let files = journal.borrow_mut().take_unsynced();
        let synced = if durable_write {
            // What the write put there is all that was unsynced, and it is durable.
            debug_assert_eq!(files.len(), 1, "a durable write covers its own file alone");
            commit.journal_sync_wanted.set(false);
            commit.count(|stats| stats.journal_durable_writes += 1);
            Ok(Vec::new())
        } else {
            commit.count(|stats| stats.journal_syncs += files.len() as u64);
            let started = std::time::Instant::now();
            let synced = futures::future::try_join_all(files.iter().map(|file| async move {
                file.fdatasync()
                    .await
                    .map_err(|error| LogError::glommio("syncing the journal", error))
            }))
            .await;
            let took_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            commit.count(|stats| stats.journal_sync_micros += took_micros);
            synced
        };
        let injected_error = {
            let logs = commit.logs.borrow();
            let unsynced = commit.journal_unsynced.borrow();
            injected_in_any(
                unsynced
                    .iter()
                    .filter_map(|(id, _, _)| logs.get(id).map(|shared| shared.dir.as_path()))
                    .chain(forgets.iter().map(|forget| forget.dir.as_path())),
                IoOperation::Sync,
            )
        };
        let synced = synced.and(injected_error.map_or(Ok(()), |error| {
            Err(LogError::io("syncing the journal", error))
        }));
        match synced {
            Ok(_) => journal_synced(&commit, forgets),
            Err(error) => {
                for forget in forgets {
                    forget.done.fail(error.clone());
                }
                fail_journal_sync(&commit, error);
            }
        }
    } else if !forgets.is_empty() {
        journal_synced(&commit, forgets);
    }
    commit.journal_busy.set(false);
    commit.journal_idle.wake_all();
    commit.wake();
}

/// A log's batches are in the journal (not yet synced): they are written, stay in its tail
/// cache until they reach the segment, and count towards the shard's unwritten bytes.
fn journaled(commit: &CommitShared, part: &JournalPart, file: usize) {
    let shared = &part.shared;
    let end_offset = part.batches.last().map_or(0, |batch| batch.last_offset + 1);
    let mut state = shared.state.borrow_mut();
    state.in_journal_write = false;
    state.in_flight_ticket = None;
    state.unflushed_bytes -= part.bytes;
    state.lazy_bytes += part.bytes;
    state.lazy.extend(part.batches.iter().cloned());
    state.written_end_offset = state.written_end_offset.max(end_offset);
    state.stats.flushes += 1;
    state.stats.bytes_written += part.bytes as u64;
    state
        .unsynced_tickets
        .push((end_offset, part.ticket.clone()));
    state.journal_unsynced = true;
    let generation = state.cut_generation;
    drop(state);
    part.ticket.complete_written(Ok(()));
    commit.add_unwritten(part.bytes, 0);
    let id = shared.commit_id.get();
    commit
        .journal
        .as_ref()
        .expect("journaled means a journal")
        .borrow_mut()
        .note_holding(file, id, end_offset);
    commit
        .journal_unsynced
        .borrow_mut()
        .push((id, generation, end_offset));
    shared.waiters.wake_all();
    commit.mark_dirty(shared);
}

/// A journal sync covered every record written before it: each log's journaled batches are
/// durable up to their end, and forgotten logs need nothing of the journal.
fn journal_synced(commit: &CommitShared, forgets: Vec<ForgetRequest>) {
    let unsynced = std::mem::take(&mut *commit.journal_unsynced.borrow_mut());
    for (id, generation, end_offset) in unsynced {
        let Some(shared) = commit.logs.borrow().get(&id).cloned() else {
            continue;
        };
        let mut state = shared.state.borrow_mut();
        if state.cut_generation != generation {
            continue;
        }
        state.journal_unsynced = false;
        state.advance_durable_end(end_offset);
        drop(state);
        shared.waiters.wake_all();
        commit.mark_dirty(&shared);
    }
    if let Some(journal) = &commit.journal {
        let mut journal = journal.borrow_mut();
        for forget in &forgets {
            journal.drop_holdings(forget.log_id);
        }
    }
    for forget in forgets {
        forget.done.complete_written(Ok(()));
        forget.done.complete_durable(Ok(()));
    }
}

/// A journal sync failed (or what a failed write left could not be zeroed): every log with
/// records written since the last good sync is failed, as after a failed sync of its own
/// segment, and the journal moves on to a new file.
fn fail_journal_sync(commit: &CommitShared, error: LogError) {
    if let Some(journal) = &commit.journal {
        journal.borrow_mut().abandon_current();
    }
    let unsynced = std::mem::take(&mut *commit.journal_unsynced.borrow_mut());
    for (id, generation, _) in unsynced {
        let Some(shared) = commit.logs.borrow().get(&id).cloned() else {
            continue;
        };
        if shared.state.borrow().cut_generation != generation {
            continue;
        }
        shared.mark_failed(&error);
        let mut state = shared.state.borrow_mut();
        state.journal_unsynced = false;
        if !state.in_journal_write && state.segment_op.is_none() {
            flush::roll_back_unwritten(&mut state, None, error.clone());
        }
        for (_, ticket) in std::mem::take(&mut state.unsynced_tickets) {
            ticket.fail(error.clone());
        }
        drop(state);
        shared.waiters.wake_all();
        commit.mark_dirty(&shared);
    }
}

/// One log's segment operation, run by the cycle.
pub(super) async fn segment_operation(
    commit: Rc<CommitShared>,
    shared: Rc<Shared>,
    work: SegmentWork,
) {
    let carries_appends = work.ticket.is_some();
    let writes_journaled = !work.journaled.is_empty();
    // A failure is the log's (its appends and waiters hear of it); the cycle goes on.
    let _ = shared.write_to_segments(work).await;
    commit.count(|stats| {
        if carries_appends {
            stats.direct_writes += 1;
        } else if writes_journaled {
            stats.segment_writes += 1;
        }
    });
    shared.state.borrow_mut().segment_op = None;
    commit
        .segment_ops_in_flight
        .set(commit.segment_ops_in_flight.get() - 1);
    shared.waiters.wake_all();
    commit.mark_dirty(&shared);
}
