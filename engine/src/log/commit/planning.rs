//! The commit cycle's planning: which operation each dirty log gets this cycle (journal write,
//! direct write, lazy segment write, sync, or none yet), which journal file can be released,
//! and how the shard's unwritten bytes stay bounded. Pure decisions over the logs' state, no
//! I/O: kept apart from the operations so the rules of the module doc can be read in one place.

use std::collections::VecDeque;
use std::rc::Rc;

use futures::future::LocalBoxFuture;
use futures::stream::FuturesUnordered;

use super::operations::{fail_journal_write, journal_operation, segment_operation};
use super::{
    CommitShared, ForgetRequest, JournalPart, JournalWork, SegmentWork, LAZY_WRITES_BESIDE_MAX,
};
use crate::error::LogError;
use crate::journal::format::{self, RecordKind};
use crate::journal::JournalConfig;
use crate::log::{flush, LogState, SegmentOp, Shared, UnflushedBatch};

/// What the cycle does with one dirty log now: its new batches may go into this cycle's
/// journal write (or wait for it) while its journaled ones go to the segment.
#[derive(Default)]
struct Decision {
    journal: Option<JournalPart>,
    /// It waits for the journal (busy, or this cycle's write is full); planned again later.
    defer: bool,
    segment: Option<SegmentWork>,
}

/// Plans every operation that can start now (see the module documentation).
pub(super) fn plan(
    commit: &Rc<CommitShared>,
    running: &mut FuturesUnordered<LocalBoxFuture<'static, ()>>,
) {
    let config = commit.journal_config();
    let journal_free = commit.journal.is_some() && !commit.journal_busy.get();
    let release = journal_free.then(|| plan_release(commit)).flatten();
    if let Some(config) = &config {
        plan_unwritten_bound(commit, config);
    }
    // Logs waiting for a segment operation's slot take those free now, before the dirty ones.
    let mut ids: Vec<u64> = Vec::new();
    {
        let mut waiting = commit.slot_waiting.borrow_mut();
        let logs = commit.logs.borrow();
        let free = LAZY_WRITES_BESIDE_MAX.saturating_sub(commit.segment_ops_in_flight.get());
        while ids.len() < free {
            let Some(id) = waiting.pop() else {
                break;
            };
            if let Some(shared) = logs.get(&id) {
                shared.segment_slot_waiting.set(false);
                ids.push(id);
            }
        }
    }
    ids.extend(std::mem::take(&mut *commit.dirty.borrow_mut()));
    let mut parts: Vec<JournalPart> = Vec::new();
    let mut records_bytes = 0usize;
    let mut deferred = Vec::new();
    for id in ids {
        let Some(shared) = commit.logs.borrow().get(&id).cloned() else {
            continue;
        };
        shared.commit_dirty.set(false);
        let decision = decide(
            commit,
            &shared,
            config.as_ref(),
            journal_free,
            &mut records_bytes,
            !parts.is_empty(),
        );
        if let Some(part) = decision.journal {
            parts.push(part);
        }
        if let Some(work) = decision.segment {
            commit
                .segment_ops_in_flight
                .set(commit.segment_ops_in_flight.get() + 1);
            running.push(Box::pin(segment_operation(
                commit.clone(),
                shared.clone(),
                work,
            )));
        }
        if decision.defer {
            deferred.push(shared);
        }
    }
    for shared in deferred {
        if !shared.commit_dirty.replace(true) {
            commit.dirty.borrow_mut().push(shared.commit_id.get());
        }
    }
    if commit.segment_ops_in_flight.get() < LAZY_WRITES_BESIDE_MAX
        && !commit.slot_waiting.borrow().is_empty()
    {
        // A log given a slot found nothing to do after all: the next waiting ones take it.
        commit.wake();
    }
    if !journal_free {
        return;
    }
    let forgets: Vec<ForgetRequest> = std::mem::take(&mut *commit.forgets.borrow_mut());
    let forget_bytes: usize = forgets
        .iter()
        .map(|forget| format::record_bytes(forget.key.len(), 0))
        .sum();
    let sync_wanted = commit.journal_sync_wanted.replace(false);
    if parts.is_empty() && forgets.is_empty() && release.is_none() && !sync_wanted {
        return;
    }
    let journal = commit.journal.as_ref().expect("checked: a journal");
    let write = (records_bytes + forget_bytes > 0)
        .then(|| {
            let mut journal = journal.borrow_mut();
            let slot = journal.plan_write(records_bytes + forget_bytes)?;
            let (mut buffer, mut at) = journal.buffer_for(&slot, records_bytes + forget_bytes);
            let bytes = buffer.as_bytes_mut();
            for part in &parts {
                for batch in &part.batches {
                    at += format::encode_record(
                        &mut bytes[at..],
                        slot.salt,
                        RecordKind::Batch,
                        part.shared.key.as_bytes(),
                        &batch.bytes,
                    );
                }
            }
            for forget in &forgets {
                at += format::encode_record(
                    &mut bytes[at..],
                    slot.salt,
                    RecordKind::Forget,
                    forget.key.as_bytes(),
                    &[],
                );
            }
            Some((slot, buffer))
        })
        .flatten();
    if write.is_none() && (!parts.is_empty() || !forgets.is_empty()) {
        // `decide` checked the room; only a full ring with nothing to release gets here.
        let error = LogError::Io {
            operation: "writing the journal",
            kind: std::io::ErrorKind::StorageFull,
            message: "the journal has no room".into(),
        };
        fail_journal_write(commit, parts, forgets, error);
        return;
    }
    commit.journal_busy.set(true);
    let work = JournalWork {
        write,
        parts,
        forgets,
        release,
        sync: sync_wanted,
    };
    running.push(Box::pin(journal_operation(commit.clone(), work)));
}

/// Decides what `shared` does now; takes its batches for the operations it starts.
///
/// A log is in at most one journal write and at most one segment operation at a time. New
/// batches go to the journal only while no direct write of its is in flight or unsynced (a
/// synced journal record must not follow segment data a power loss could take); journaled
/// batches go to the segment while newer ones are in the journal write (the segment stays
/// behind the journal, in order); a direct write waits until neither is in flight, since it
/// writes everything not yet in the segment.
fn decide(
    commit: &CommitShared,
    shared: &Rc<Shared>,
    config: Option<&JournalConfig>,
    journal_free: bool,
    records_bytes: &mut usize,
    cycle_has_parts: bool,
) -> Decision {
    let mut decision = Decision::default();
    let mut state = shared.state.borrow_mut();
    if let Some(error) = state.failed.clone() {
        if state.in_journal_write || state.segment_op.is_some() {
            return decision;
        }
        // Nothing is written or synced after a failed sync: what arrived fails too.
        flush::roll_back_unwritten(&mut state, None, error.clone());
        for (_, ticket) in std::mem::take(&mut state.unsynced_tickets) {
            ticket.fail(error.clone());
        }
        state.sync_requested = false;
        drop(state);
        shared.waiters.wake_all();
        return decision;
    }
    if !state.unflushed.is_empty() && !state.in_journal_write {
        let journal_fits = config.filter(|config| {
            !state.closing
                && state.segment_op != Some(SegmentOp::Direct)
                && state.unflushed_bytes < config.bypass_bytes
        });
        if journal_fits.is_some() && state.direct_unsynced && state.segment_op.is_none() {
            // Small appends after a direct write that nobody waited to sync (acks=1): only a
            // sync lets the log back into the journal, and acks=1 never asks for one, so
            // without this every later append would extend the segment through an io-wq
            // worker. One sync, then the next plan journals them.
            decision.segment = Some(take_for_segment(&mut state, SegmentOp::Journaled, true));
            return decision;
        }
        let journal_path = journal_fits.filter(|_| !state.direct_unsynced);
        match journal_path {
            Some(_) if !journal_free => decision.defer = true,
            Some(config) => {
                let bytes: usize = state
                    .unflushed
                    .iter()
                    .map(|batch| format::record_bytes(shared.key.len(), batch.bytes.len()))
                    .sum();
                let room = commit
                    .journal
                    .as_ref()
                    .expect("a journal config means a journal")
                    .borrow()
                    .has_room(*records_bytes + bytes + forget_bytes_pending(commit));
                if *records_bytes + bytes <= config.write_bytes_max && room {
                    *records_bytes += bytes;
                    decision.journal = Some(take_for_journal(&mut state, shared));
                } else if cycle_has_parts && room {
                    decision.defer = true;
                } else if state.segment_op.is_none() {
                    // The journal is full (or this log's batches alone exceed a write): the
                    // segment takes them.
                    decision.segment = Some(take_for_segment(&mut state, SegmentOp::Direct, false));
                    return decision;
                }
            }
            None if state.segment_op.is_none() => {
                decision.segment = Some(take_for_segment(&mut state, SegmentOp::Direct, false));
                return decision;
            }
            // The segment operation in flight ends, and the log is planned again.
            None => {}
        }
    }
    if state.segment_op.is_some() || state.maintenance {
        // Maintenance writes the log's segments itself.
        if state.sync_requested && state.journal_unsynced {
            commit.journal_sync_wanted.set(true);
        }
        return decision;
    }
    let checkpoint = shared.segment_write_wanted.get();
    let segment_write_due = !state.lazy.is_empty() && {
        // The log rolled: the finished segment is sealed (synced, indexed: readable by the
        // cleaner) with the first write to the next one.
        let active_base_offset = state.active_segment().base_offset;
        let rolled = state
            .lazy
            .front()
            .is_some_and(|batch| batch.segment_base_offset != active_base_offset)
            || state
                .segments
                .range(..active_base_offset)
                .next_back()
                .is_some_and(|(_, segment)| !segment.sealed);
        let gathered = config.is_some_and(|config| state.lazy_bytes >= config.segment_write_bytes);
        // After a failed write the flag stays set until the retry is due.
        let retry_due = state.segment_retry_at_ms <= shared.clock.now_ms();
        (checkpoint || rolled || gathered || state.closing || config.is_none()) && retry_due
    };
    if segment_write_due && commit.segment_ops_in_flight.get() >= LAZY_WRITES_BESIDE_MAX {
        // Given a slot when one frees (see `SlotQueues`), without being planned again meanwhile.
        commit.wait_for_slot(shared, segment_file_open(&state));
    } else if segment_write_due {
        shared.segment_write_wanted.set(false);
        decision.segment = Some(take_for_segment(
            &mut state,
            SegmentOp::Journaled,
            checkpoint,
        ));
        return decision;
    }
    if state.sync_requested {
        if state.direct_unsynced
            || (state.lazy.is_empty()
                && state.segment_synced_end_offset < state.segment_written_end_offset)
        {
            decision.segment = Some(take_for_segment(&mut state, SegmentOp::Journaled, true));
        } else if state.journal_unsynced || state.in_journal_write {
            commit.journal_sync_wanted.set(true);
        } else {
            state.sync_requested = false;
        }
    }
    decision
}

/// Whether the file the log's next segment write goes to is open in the shard's file cache.
fn segment_file_open(state: &LogState) -> bool {
    let base_offset = state
        .lazy
        .front()
        .map_or(state.active_segment().base_offset, |batch| {
            batch.segment_base_offset
        });
    state
        .segments
        .get(&base_offset)
        .and_then(|segment| segment.files.as_ref())
        .is_some_and(|files| files.is_open())
}

/// Logs waiting for a slot of `LAZY_WRITES_BESIDE_MAX`, those whose file is open first.
///
/// Why: a checkpoint asks every log with batches in the journal's oldest file to write and
/// sync its segment. With more such logs than the shard's file cache holds (4 096 partitions
/// of 2 shards at 5 messages a second each: 2 048 logs against ~900 open segments), taking them
/// in the order they asked made nearly every write reopen its file (~570 reopens a second,
/// each an `openat`, `statx`, `statfs`, `fcntl` and two `close`s): the least recently used
/// file is the one needed next, and each open closes one the checkpoint has yet to reach.
/// Writing the open ones first reopens only the files beyond the cache's room.
#[derive(Default)]
pub(super) struct SlotQueues {
    open: VecDeque<u64>,
    closed: VecDeque<u64>,
}

impl SlotQueues {
    pub(super) fn push(&mut self, log_id: u64, file_open: bool) {
        if file_open {
            self.open.push_back(log_id);
        } else {
            self.closed.push_back(log_id);
        }
    }

    pub(super) fn pop(&mut self) -> Option<u64> {
        self.open.pop_front().or_else(|| self.closed.pop_front())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.open.is_empty() && self.closed.is_empty()
    }
}

fn forget_bytes_pending(commit: &CommitShared) -> usize {
    commit
        .forgets
        .borrow()
        .iter()
        .map(|forget| format::record_bytes(forget.key.len(), 0))
        .sum()
}

/// Takes the log's queued batches for this cycle's journal write.
fn take_for_journal(state: &mut LogState, shared: &Rc<Shared>) -> JournalPart {
    let batches: Vec<UnflushedBatch> = state.unflushed.drain(..).collect();
    let bytes = batches.iter().map(|batch| batch.bytes.len()).sum();
    let ticket = std::mem::take(&mut state.open_ticket);
    state.in_flight_ticket = Some(ticket.clone());
    state.in_journal_write = true;
    JournalPart {
        shared: shared.clone(),
        batches,
        bytes,
        ticket,
    }
}

/// A segment operation of the log: its journaled batches (they stay in `lazy` until written),
/// and for a direct write the queued ones with their ticket.
fn take_for_segment(state: &mut LogState, op: SegmentOp, force_sync: bool) -> SegmentWork {
    let journaled: Vec<UnflushedBatch> = state.lazy.iter().cloned().collect();
    let (queued, queued_bytes, ticket) = match op {
        SegmentOp::Journaled => (Vec::new(), 0, None),
        SegmentOp::Direct => {
            let queued: Vec<UnflushedBatch> = state.unflushed.drain(..).collect();
            let ticket = std::mem::take(&mut state.open_ticket);
            state.in_flight_ticket = Some(ticket.clone());
            (queued, state.unflushed_bytes, Some(ticket))
        }
    };
    state.segment_op = Some(op);
    SegmentWork {
        journaled,
        queued,
        queued_bytes,
        ticket,
        force_sync,
    }
}

/// When fewer than two journal files are free: the oldest live file is released once every
/// batch in it is in a synced segment; until then the logs holding it are asked to write and
/// sync theirs. Returns the file to release now, if any.
fn plan_release(commit: &CommitShared) -> Option<usize> {
    let journal = commit.journal.as_ref()?;
    if journal.borrow().free_files() >= 2 {
        return None;
    }
    let logs = commit.logs.borrow();
    let mut asked = Vec::new();
    let remaining = journal.borrow().oldest_needs(|log_id, end_offset| {
        let Some(shared) = logs.get(&log_id) else {
            return false;
        };
        let state = shared.state.borrow();
        // After a cut the log's generation moved on: its earlier records were forgotten.
        let needed = state.segment_synced_end_offset < end_offset.min(state.log_end_offset);
        if needed {
            asked.push(shared.clone());
        }
        needed
    });
    drop(logs);
    for shared in asked {
        if !shared.segment_write_wanted.replace(true) {
            // Through the slot queue, open files first (see `SlotQueues`); the next plan
            // gives the free slots to the first of them.
            let file_open = segment_file_open(&shared.state.borrow());
            commit.wait_for_slot(&shared, file_open);
        }
    }
    if remaining > 0 {
        return None;
    }
    journal.borrow().oldest_releasable()
}

/// Beyond the shard's bound on journaled bytes not yet in segments, the largest logs write
/// theirs first.
fn plan_unwritten_bound(commit: &CommitShared, config: &JournalConfig) {
    let unwritten = commit.unwritten_bytes.get();
    if unwritten <= config.unwritten_bytes_max {
        return;
    }
    let mut candidates: Vec<(usize, Rc<Shared>)> = commit
        .logs
        .borrow()
        .values()
        .filter(|shared| !shared.segment_write_wanted.get())
        .map(|shared| (shared.state.borrow().lazy_bytes, shared.clone()))
        .filter(|(bytes, _)| *bytes > 0)
        .collect();
    candidates.sort_by_key(|candidate| std::cmp::Reverse(candidate.0));
    let mut excess = unwritten - config.unwritten_bytes_max / 2;
    for (bytes, shared) in candidates {
        shared.segment_write_wanted.set(true);
        commit.mark_dirty(&shared);
        if bytes >= excess {
            break;
        }
        excess -= bytes;
    }
}
