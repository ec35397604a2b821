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
//! A log's new batches may go into the journal while its older journaled ones are being written to
//! its segment (two operation slots per log), but never while a direct write of it is in flight or
//! unsynced (see the invariants). An idle shard thus commits one append at once, a busy one
//! everything that arrived during the previous round trip.
//!
//! Journaled batches wait for their lazy segment write in the tail cache, which serves reads of
//! them: a partition that gets a few messages a second does not rewrite a 4 KiB page of its segment
//! each time. When the shard's unwritten bytes exceed `unwritten_bytes_max` the largest logs are
//! written first; a rolled log's finished segment is sealed by that write. Lazy segment writes run
//! only while fewer than `LAZY_WRITES_BESIDE_MAX` segment operations are in flight (its doc says
//! why). A closing log's journaled batches are written unsynced and the close's own sync covers
//! them: one `fdatasync` per log.
//!
//! # Acknowledgement
//! acks=1 (and a replica's "written") is answered when the journal write (or the direct segment
//! write) returned, with no sync; acks=all (a broker alone; in a cluster the replica's "persisted")
//! when the `fdatasync` of the journal or of the segment covering it returned. acks=1 thus never
//! waits for a sync of its own; the *sync* above is why a log whose direct write nobody waited to
//! sync may journal again.
//!
//! # Invariants
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
//!
//! Rooms: this file holds the cycle's shared state and its loop; `planning.rs` decides what
//! each dirty log does (no I/O), `operations.rs` runs the journal and segment operations and
//! applies their outcome.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::path::Path;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures::future::{select, Either, LocalBoxFuture};
use futures::stream::{FuturesUnordered, StreamExt};

mod operations;
mod planning;

use super::{FlushTicket, Shared, UnflushedBatch};
use crate::error::LogError;
use crate::journal::{self, Journal, JournalConfig, WriteSlot};
use planning::{plan, SlotQueues};

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
    /// Journal writes that were their own sync (`RWF_DSYNC`), counted in `journal_writes`
    /// too; their time is in `journal_write_micros`.
    pub journal_durable_writes: u64,
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
        let idle = running.is_empty();
        let turn = poll_fn(|context| {
            let mut progressed = false;
            while let Poll::Ready(Some(())) = running.poll_next_unpin(context) {
                progressed = true;
            }
            if progressed || commit.woken.get() {
                return Poll::Ready(());
            }
            *commit.waker.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        });
        if !idle {
            turn.await;
            continue;
        }
        let mut turn = std::pin::pin!(turn);
        let quiet = glommio::timer::sleep(BOUND_RESTORED_AFTER_IDLE);
        if let Either::Right(((), _)) = select(turn.as_mut(), std::pin::pin!(quiet)).await {
            crate::resources::current().files().restore_bound();
            turn.await;
        }
    }
}

/// How long the cycle has nothing to do before the file cache closes the files its operations
/// let go of beyond the bound (they were in use when it last made room). Not at once: the
/// segment writes of a journal release come in bursts a few milliseconds apart, which would
/// reopen what it closed in between.
const BOUND_RESTORED_AFTER_IDLE: std::time::Duration = std::time::Duration::from_millis(500);
