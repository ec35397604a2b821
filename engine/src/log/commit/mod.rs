//! The shard's commit cycle: one task per shard that turns every partition's queued appends
//! into writes and syncs, instead of a flusher task per partition.
//!
//! Why: the disk and the kernel charge per I/O operation (a write, an `fdatasync`, the io-wq
//! wake-up behind each sync), so a flusher per partition multiplied latency by the number of
//! partitions written in a window. Here every log of the shard registers with one
//! [`Committer`]; a log with work marks itself dirty, and the cycle plans, for every dirty log
//! at once, one of:
//! - the *journal path* (its pending bytes below `bypass_bytes`, the shard has a journal with
//!   room): its batches are copied into the shard journal's next write. One write and one
//!   `fdatasync` of the journal cover every partition in it; the batches stay in the log's
//!   tail cache (unwritten batches are never evicted) and reach the segment later, unsynced;
//! - the *direct path* (large pending runs, no journal, a full journal): every byte of the log
//!   not yet in its segment (journaled ones first, so the segment stays contiguous) is written
//!   there, sealing finished segments, and the segment is synced in the same operation when an
//!   append waits for durability;
//! - a *segment write* of journaled batches alone (unsynced): once `segment_write_bytes` have
//!   gathered, the log rolled, the shard's unwritten bytes exceed their bound, or the journal
//!   needs the space (then synced too);
//! - a *sync* of what an acks=1 append left unsynced, when someone now waits for durability,
//!   or when small appends follow a direct write nobody waited to sync: only a synced log may
//!   journal again, and acks=1 never asks (a 1-partition acks=1 run sent every append to the
//!   segment, each an extending write through an io-wq worker, p99 up to 10x acks=all's).
//!
//! Operations of different logs, and the journal's, run concurrently (their I/O is submitted
//! in the same reactor turn); a log is in at most one operation at a time, and the journal
//! writes one cycle at a time, so its group-commit window is one journal round trip.
//!
//! Invariants:
//! - A log's acknowledged data is a contiguous prefix: `durable_end_offset` (and
//!   `written_end_offset`) only cover offsets below which every batch is durable (written),
//!   in the journal or in a segment.
//! - A log writes to the journal only while everything it wrote to its segment directly is
//!   synced (`direct_unsynced` false), so a synced journal record never follows segment data a
//!   power loss could take.
//! - A journal file is released only when every batch it holds is in a synced segment, or
//!   its log wrote a Forget record that is durable (a cut, a close).
//! - Failures keep the write path's rules (see `flush.rs`): a failed journal write is zeroed
//!   on disk (and synced) before its appends are failed and rolled back; a failed journal sync
//!   makes every log with records in it failed.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::path::Path;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures::future::LocalBoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};

use super::injected_faults::{injected_in_any, IoOperation};
use super::{FlushTicket, LogState, SegmentOp, Shared, UnflushedBatch};
use crate::error::LogError;
use crate::journal::format::{self, RecordKind};
use crate::journal::{self, Journal, JournalConfig, WriteSlot};

/// Segment operations of a shard in flight beyond which its lazy segment writes (journaled
/// batches, which nobody waits on) wait for a slot: each holds its segment's files open (in
/// use, so the shard's file cache cannot close them), and a checkpoint that asked every log of
/// the journal's oldest file at once would otherwise open as many files as there are such
/// logs, whatever `open_files_max` says. Enough to keep the disk's queue full.
const LAZY_WRITES_BESIDE_MAX: usize = 32;

/// Counters of the commit cycle's work, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Journal writes (each covers every partition that had small appends pending).
    pub journal_writes: u64,
    /// `fdatasync`s of journal files.
    pub journal_syncs: u64,
    /// Bytes of journal records written.
    pub journal_bytes: u64,
    /// Batches that went into the journal.
    pub journal_batches: u64,
    /// Direct-path operations (segment writes carrying new appends).
    pub direct_writes: u64,
    /// Segment writes of journaled batches only.
    pub segment_writes: u64,
    /// Journal files released for reuse.
    pub files_released: u64,
    /// Time the journal's writes and syncs took, summed, in microseconds (with
    /// `journal_writes` and `journal_syncs`, their mean).
    pub journal_write_micros: u64,
    pub journal_sync_micros: u64,
    /// Data files the shard's file cache opened on demand (see
    /// [`crate::resources::ShardResources::files_opened`]): with more partitions written than
    /// `open_files_max` holds, mostly this cycle's segment writes reopening their files.
    pub files_opened: u64,
}

/// A shard's commit cycle (see the module documentation). Every log of the shard is opened
/// with it ([`super::PartitionLog::open_in`]); a log opened alone ([`super::PartitionLog::open`])
/// has one of its own, without a journal. Not `Send`: it runs on its shard, and dropping it
/// stops the cycle there (what a crash does).
pub struct Committer {
    shared: Rc<CommitShared>,
    task: RefCell<Option<glommio::Task<()>>>,
}

pub(crate) struct CommitShared {
    logs: RefCell<HashMap<u64, Rc<Shared>>>,
    log_id_next: Cell<u64>,
    /// Logs that may want an operation (each at most once: `Shared::commit_dirty`).
    dirty: RefCell<Vec<u64>>,
    waker: RefCell<Option<Waker>>,
    woken: Cell<bool>,
    journal: Option<RefCell<Journal>>,
    /// The journal has a write, sync or release in flight.
    journal_busy: Cell<bool>,
    /// Woken when the journal's operation ends (the shard's close waits for it).
    journal_idle: crate::waiters::Waiters,
    /// Someone waits for a journal record written without a sync.
    journal_sync_wanted: Cell<bool>,
    /// Logs with journal records written since the journal's last sync: (log id, cut
    /// generation, end offset).
    journal_unsynced: RefCell<Vec<(u64, u64, u64)>>,
    forgets: RefCell<Vec<ForgetRequest>>,
    /// Journaled bytes of all logs not yet in their segments.
    unwritten_bytes: Cell<usize>,
    /// Segment operations running (see `LAZY_WRITES_BESIDE_MAX`).
    segment_ops_in_flight: Cell<usize>,
    /// Logs whose lazy segment write waits for a slot (`LAZY_WRITES_BESIDE_MAX`), each at most
    /// once (`Shared::segment_slot_waiting`), in two queues: those whose segment file the
    /// shard's file cache holds open now go first (see `SlotQueues`).
    slot_waiting: RefCell<SlotQueues>,
    stats: Cell<CommitStats>,
}

/// A log asked that replay ignore its earlier journal records (`Shared::forget_in_journal`).
struct ForgetRequest {
    log_id: u64,
    key: String,
    dir: std::path::PathBuf,
    done: Rc<FlushTicket>,
}

/// A log's batches in one journal write.
struct JournalPart {
    shared: Rc<Shared>,
    batches: Vec<UnflushedBatch>,
    bytes: usize,
    ticket: Rc<FlushTicket>,
}

/// What one journal operation does: a write (with its place and buffer), the release of the
/// oldest file, and a sync.
struct JournalWork {
    write: Option<(WriteSlot, glommio::io::DmaBuffer)>,
    parts: Vec<JournalPart>,
    forgets: Vec<ForgetRequest>,
    release: Option<usize>,
    sync: bool,
}

/// What a log's segment operation writes: journaled batches first, then new ones.
pub(super) struct SegmentWork {
    pub journaled: Vec<UnflushedBatch>,
    pub queued: Vec<UnflushedBatch>,
    pub queued_bytes: usize,
    /// The appends of `queued` (none when only journaled batches are written).
    pub ticket: Option<Rc<FlushTicket>>,
    /// Sync the segment even if nobody waits for durability (the journal needs the space,
    /// maintenance needs the log on its segments).
    pub force_sync: bool,
}

impl Default for Committer {
    fn default() -> Self {
        Committer::new()
    }
}

impl Committer {
    /// A commit cycle without a journal: every operation writes segments directly. Must run
    /// on a glommio executor (it starts the cycle's task there).
    pub fn new() -> Committer {
        Committer::start(None)
    }

    /// A commit cycle with the journal in `dir` (created and filled with zeros where missing).
    /// The journal must hold nothing: replay ([`super::replay_journals`]) runs first.
    pub async fn with_journal(
        dir: &Path,
        shard: u32,
        config: JournalConfig,
    ) -> Result<Committer, LogError> {
        let journal = Journal::open(dir, shard, config).await?;
        Ok(Committer::start(Some(journal)))
    }

    fn start(journal: Option<Journal>) -> Committer {
        let shared = Rc::new(CommitShared {
            logs: RefCell::new(HashMap::new()),
            log_id_next: Cell::new(0),
            dirty: RefCell::new(Vec::new()),
            waker: RefCell::new(None),
            woken: Cell::new(false),
            journal: journal.map(RefCell::new),
            journal_busy: Cell::new(false),
            journal_idle: Default::default(),
            journal_sync_wanted: Cell::new(false),
            journal_unsynced: RefCell::new(Vec::new()),
            forgets: RefCell::new(Vec::new()),
            unwritten_bytes: Cell::new(0),
            segment_ops_in_flight: Cell::new(0),
            slot_waiting: RefCell::new(SlotQueues::default()),
            stats: Cell::new(CommitStats::default()),
        });
        let task = glommio::spawn_local(run(shared.clone()));
        Committer {
            shared,
            task: RefCell::new(Some(task)),
        }
    }

    pub(super) fn shared(&self) -> &Rc<CommitShared> {
        &self.shared
    }

    pub fn stats(&self) -> CommitStats {
        CommitStats {
            files_opened: crate::resources::current().files_opened(),
            ..self.shared.stats.get()
        }
    }

    /// Logs registered (open).
    pub fn log_count(&self) -> usize {
        self.shared.logs.borrow().len()
    }

    /// After every log of the shard was closed (each wrote and synced its segments): releases
    /// every journal file, so the next start has nothing to replay: the shard's clean
    /// shutdown. Logs still open keep their journal records.
    pub async fn close(&self) -> Result<(), LogError> {
        let shared = self.shared.clone();
        shared
            .journal_idle
            .until(|| !shared.journal_busy.get())
            .await;
        let Some(journal) = &shared.journal else {
            return Ok(());
        };
        if !shared.logs.borrow().is_empty() {
            return Ok(());
        }
        self.task.borrow_mut().take();
        let files: Vec<_> = {
            let journal = journal.borrow();
            journal
                .live_files()
                .into_iter()
                .map(|index| journal.file(index))
                .collect()
        };
        for file in files {
            journal::release_file(&file).await?;
        }
        journal.borrow_mut().all_released();
        Ok(())
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // The task goes with the handle (a crash, as far as the disk is concerned); the logs
        // still registered fail what they wait for when they are dropped in turn.
        self.task.borrow_mut().take();
    }
}

impl CommitShared {
    /// Registers a log; returns its id.
    pub(super) fn register(&self, shared: &Rc<Shared>) -> u64 {
        let id = self.log_id_next.get();
        self.log_id_next.set(id + 1);
        self.logs.borrow_mut().insert(id, shared.clone());
        id
    }

    /// The log `id` is closed or gone: its journal records are no longer needed (a close
    /// synced its segments and forgot them; a dropped log is a crash of it).
    pub(super) fn unregister(&self, id: u64) {
        self.logs.borrow_mut().remove(&id);
        if let Some(journal) = &self.journal {
            journal.borrow_mut().drop_holdings(id);
        }
        self.wake();
    }

    /// The log `id` may want an operation.
    pub(super) fn mark_dirty(&self, shared: &Shared) {
        if !shared.commit_dirty.replace(true) {
            self.dirty.borrow_mut().push(shared.commit_id.get());
        }
        self.wake();
    }

    /// Marks the log `id` dirty after `delay_ms` (a retry: the cycle plans only when
    /// something changes).
    pub(super) fn mark_dirty_later(self: &Rc<Self>, id: u64, delay_ms: i64) {
        let commit = Rc::downgrade(self);
        let delay = std::time::Duration::from_millis(delay_ms.max(0) as u64);
        glommio::spawn_local(async move {
            glommio::timer::sleep(delay).await;
            let Some(commit) = commit.upgrade() else {
                return;
            };
            let shared = commit.logs.borrow().get(&id).cloned();
            if let Some(shared) = shared {
                commit.mark_dirty(&shared);
            }
        })
        .detach();
    }

    fn wake(&self) {
        self.woken.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Whether the journal holds records of log `id` that replay would read.
    pub(super) fn journal_holds(&self, id: u64) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|journal| journal.borrow().holds(id))
    }

    /// Queues a Forget record for `shared`'s earlier journal records; the ticket is durable
    /// once the record is.
    pub(super) fn request_forget(&self, shared: &Shared) -> Rc<FlushTicket> {
        let done = Rc::new(FlushTicket::default());
        done.durable_wanted.set(true);
        self.forgets.borrow_mut().push(ForgetRequest {
            log_id: shared.commit_id.get(),
            key: shared.key.clone(),
            dir: shared.dir.clone(),
            done: done.clone(),
        });
        self.wake();
        done
    }

    /// Queues `shared` for a segment operation's slot (`SlotQueues`), unless it waits already.
    fn wait_for_slot(&self, shared: &Shared, file_open: bool) {
        if shared.segment_slot_waiting.replace(true) {
            return;
        }
        self.slot_waiting
            .borrow_mut()
            .push(shared.commit_id.get(), file_open);
        self.wake();
    }

    /// Journaled bytes moved from (negative) or to the logs' unwritten part.
    pub(super) fn add_unwritten(&self, added: usize, removed: usize) {
        self.unwritten_bytes
            .set(self.unwritten_bytes.get() + added - removed);
    }

    fn count(&self, change: impl FnOnce(&mut CommitStats)) {
        let mut stats = self.stats.get();
        change(&mut stats);
        self.stats.set(stats);
    }

    fn journal_config(&self) -> Option<JournalConfig> {
        self.journal
            .as_ref()
            .map(|journal| journal.borrow().config().clone())
    }
}

/// The cycle: plan operations for the dirty logs, run them, plan again when one ends or a log
/// becomes dirty.
async fn run(commit: Rc<CommitShared>) {
    let mut running: FuturesUnordered<LocalBoxFuture<'static, ()>> = FuturesUnordered::new();
    loop {
        commit.woken.set(false);
        plan(&commit, &mut running);
        poll_fn(|context| {
            let mut progressed = false;
            while let Poll::Ready(Some(())) = running.poll_next_unpin(context) {
                progressed = true;
            }
            if progressed || commit.woken.get() {
                return Poll::Ready(());
            }
            *commit.waker.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        })
        .await;
    }
}

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
fn plan(commit: &Rc<CommitShared>, running: &mut FuturesUnordered<LocalBoxFuture<'static, ()>>) {
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
        super::flush::roll_back_unwritten(&mut state, None, error.clone());
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
struct SlotQueues {
    open: VecDeque<u64>,
    closed: VecDeque<u64>,
}

impl SlotQueues {
    fn push(&mut self, log_id: u64, file_open: bool) {
        if file_open {
            self.open.push_back(log_id);
        } else {
            self.closed.push_back(log_id);
        }
    }

    fn pop(&mut self) -> Option<u64> {
        self.open.pop_front().or_else(|| self.closed.pop_front())
    }

    fn is_empty(&self) -> bool {
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

/// Fails a journal write that could not be placed or failed: its appends (and what queued
/// behind them) and its Forget requests.
fn fail_journal_write(
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
        super::flush::roll_back_unwritten(&mut state, Some(&part.ticket), error.clone());
        drop(state);
        part.shared.waiters.wake_all();
        commit.mark_dirty(&part.shared);
    }
    for forget in forgets {
        forget.done.fail(error.clone());
    }
}

/// One journal operation: the write of this cycle's records and the release of the oldest
/// file, concurrently, then the sync, then what they mean for each log.
async fn journal_operation(commit: Rc<CommitShared>, work: JournalWork) {
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
    let write_future = async {
        let Some((slot, buffer)) = write else {
            return Ok(None);
        };
        let length = buffer.len();
        let file = journal.borrow().file(slot.file);
        let started = std::time::Instant::now();
        let result = crate::dma::write_whole_at(
            &file,
            buffer,
            slot.position,
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
    if wants_sync && journal.borrow().has_unsynced() {
        let files = journal.borrow_mut().take_unsynced();
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
            super::flush::roll_back_unwritten(&mut state, None, error.clone());
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
async fn segment_operation(commit: Rc<CommitShared>, shared: Rc<Shared>, work: SegmentWork) {
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
