//! A partition log: an ordered, append-only sequence of record batches in a directory of
//! segments, written with direct I/O and group-committed.
//!
//! # Write path
//! [`PartitionLog::append`] validates a batch, assigns its offsets and epoch, places it in the
//! active segment's bookkeeping and the tail cache, and queues it for the shard's commit cycle
//! ([`Committer`], `commit.rs`); it returns at once with an [`AppendReceipt`]. The cycle takes
//! *everything* queued, from every log of the shard at once: small pending runs go into one
//! write of the shard's journal and one `fdatasync` for all of them (the batches reach their
//! segments later, unsynced), large ones straight to their segment, with one direct-I/O write
//! per `write_chunk_bytes` and, if any waiter asked for durability, an `fdatasync`. Appends
//! that arrive while a write is in progress form the next one, so the commit window is exactly
//! the length of the previous write: many appenders share one write and one sync, and an idle
//! log commits a single append immediately.
//!
//! # Idempotent producers
//! Right before offsets are given, in the same synchronous section (no `await` between check
//! and assignment, so concurrent appends of one producer are checked in log order), the batch
//! is checked against the partition's [`producers::ProducerTable`]: a retry of one of a
//! producer's last five batches gets the original offsets back (`duplicate: true`) and nothing
//! is written; a sequence gap or an old epoch is refused. The table is snapshotted to
//! [`PRODUCER_STATE_FILE`] when a segment is sealed and on close, and rebuilt on open from that
//! snapshot plus the batches recovery scans in the active segment.
//!
//! # Compaction
//! [`PartitionLog::clean`] (`clean.rs`) rewrites sealed segments keeping each key's latest
//! record; kept records keep their offsets, so the log may have gaps below the compacted end.
//! Reads at an offset in a gap return the next batch; truncation at one ends the log there.
//!
//! # Invariants
//! - Appends are contiguous: every appended batch starts where the previous one ended. Above
//!   the compacted end (`compacted-end-offset`) the whole log is contiguous; below it offsets
//!   only increase (compaction removed records and whole batches, never moved one).
//! - A sealed segment's offsets end at the next segment's base, whatever its last batch.
//! - The producer table records no batch at or above the log end (truncation and a failed
//!   flush forget them), and the snapshot file describes a prefix of the log (truncation
//!   deletes it).
//! - `log_start_offset <= durable_end_offset <= written_end_offset <= log_end_offset` (the
//!   durable end can lag the start after `delete_up_to` of unsynced data; it is only a bound).
//!   Written and durable mean in a segment or in the shard's journal; the batches from
//!   `segment_written_end_offset` to the written end are journaled only, kept in the tail
//!   cache (and in `lazy`) until the cycle writes them to their segment.
//! - Before a log is cut (truncation, `reset_to`, `clear_fault`) or closed, everything it holds
//!   is written to its segments and synced, then a Forget record of it made durable in the
//!   journal: replay never re-appends what a cut removed (`commit.rs`, `replay.rs`).
//! - A segment later in the directory has data only if every earlier one is sealed: trimmed,
//!   synced and indexed. Recovery relies on it.
//! - Data is acknowledged as durable only after the `fdatasync` that covers it returned, and
//!   nothing is written, synced or acknowledged after a failed `fdatasync` (see `flush.rs`).

mod clean;
mod commit;
mod damage;
mod epochs;
mod flush;
pub mod injected_faults;
mod preallocate;
mod producers;
mod read;
mod recovery;
mod replay;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchError, BatchHeader, CheckedBatch};
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::resources::{CachedFile, OpenDirectory, ShardResources, TrimTail};
use crate::segment::{self, Segment, SegmentFile, SegmentFiles, SegmentScanner, Segments};
use crate::tail_cache::{CachedBatch, TailCache};
use crate::waiters::Waiters;
use producers::{ProducerTable, Verdict};

pub use clean::{CleanStats, CleanStep};
pub use commit::{CommitStats, Committer};
pub use damage::{repair, DamagedRange};
pub use epochs::{EpochRun, EpochRuns};
pub use read::{FileRange, OffsetAtTime, ReadData, ReadSlice};
use replay::ReplayedLog;
pub use replay::{replay_journals, ReplayPhases, ReplayReport, Replayed, ReplayedLogs};

/// Present in a partition directory only after a clean close (holding the log end offset as
/// decimal text), until the files next change; its absence on open means the last segment
/// must be scanned in full. When the files change it becomes the recovery point (renamed): at
/// the close everything up to that offset was durable.
const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// The log start offset, as decimal text, replaced atomically when it moves.
const LOG_START_OFFSET_FILE: &str = "log-start-offset";
/// The end of the offsets the cleaner has rewritten (decimal text, only grows): below it
/// recovery accepts gaps between batches, above it a gap is damage.
const COMPACTED_END_OFFSET_FILE: &str = "compacted-end-offset";
/// The snapshot of the idempotent producers' state and the log end it covers, replaced
/// atomically when a segment is sealed and on close; deleted by truncation.
const PRODUCER_STATE_FILE: &str = "producer-state";
/// An active segment this small keeps no index files and no empty producer snapshot over a
/// clean close (the next open reads it whole in one read, `RECOVERY_WINDOW_BYTES`): a close
/// of a partition written a little then costs one `fdatasync` and one directory sync, not six.
pub(super) const SMALL_SEGMENT_BYTES_MAX: u64 = segment::RECOVERY_WINDOW_BYTES as u64;
/// Kafka's recovery point (decimal text, replaced atomically): every offset below it was made
/// durable by an `fdatasync`. Written at most every `recovery_point_interval_ms` after a sync
/// of the active segment and at close, lowered before a truncation below it. After a crash,
/// a batch below it that does not check out is damage (reported, kept around), one at or after
/// it in the last segment a torn write (cut off).
const RECOVERY_POINT_FILE: &str = "recovery-point";

/// A partition's log, owned by one shard. Not `Send`: every call runs on the shard's reactor,
/// and so must its drop (a log opened alone owns its commit cycle's task, which glommio lets
/// only the executor running it cancel). `close` it there, or drop it there (with its shard's
/// [`Committer`], if it has one) to simulate a crash.
pub struct PartitionLog {
    shared: Rc<Shared>,
    /// The commit cycle of a log opened alone ([`PartitionLog::open`]).
    own_committer: Option<Committer>,
}

/// What [`PartitionLog::append`] hands back: the offsets given to the batch and a handle to
/// wait for it to be written or durable.
#[derive(Clone)]
pub struct AppendReceipt {
    pub base_offset: u64,
    pub last_offset: u64,
    /// The batch was a producer's retry of one already in the log: the offsets are the
    /// original's, nothing was appended, and the waits are for the original.
    pub duplicate: bool,
    ticket: Rc<FlushTicket>,
}

impl std::fmt::Debug for AppendReceipt {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AppendReceipt")
            .field("base_offset", &self.base_offset)
            .field("last_offset", &self.last_offset)
            .field("duplicate", &self.duplicate)
            .finish()
    }
}

/// The outcome of one flush, shared by every append that went into it.
#[derive(Default)]
struct FlushTicket {
    written: RefCell<Option<Result<(), LogError>>>,
    durable: RefCell<Option<Result<(), LogError>>>,
    durable_wanted: Cell<bool>,
    waiters: Waiters,
}

impl FlushTicket {
    /// A ticket for data already written (not yet known to be durable).
    fn written() -> FlushTicket {
        let ticket = FlushTicket::default();
        *ticket.written.borrow_mut() = Some(Ok(()));
        ticket
    }

    /// A ticket for data already durable.
    fn durable() -> FlushTicket {
        let ticket = FlushTicket::written();
        *ticket.durable.borrow_mut() = Some(Ok(()));
        ticket
    }

    /// Records the write's outcome, unless the ticket already has one (it failed: a dropped
    /// log fails its tickets while a write may still complete).
    fn complete_written(&self, result: Result<(), LogError>) {
        let mut written = self.written.borrow_mut();
        if written.is_none() {
            *written = Some(result);
        }
        drop(written);
        self.waiters.wake_all();
    }

    fn complete_durable(&self, result: Result<(), LogError>) {
        let mut durable = self.durable.borrow_mut();
        if durable.is_none() {
            *durable = Some(result);
        }
        drop(durable);
        self.waiters.wake_all();
    }

    /// Fails both stages (data that will never be written).
    fn fail(&self, error: LogError) {
        if self.written.borrow().is_none() {
            *self.written.borrow_mut() = Some(Err(error.clone()));
        }
        *self.durable.borrow_mut() = Some(Err(error));
        self.waiters.wake_all();
    }
}

/// Counters of the writes the commit cycle did for this log, for metrics and for checking
/// group commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Writes (to the journal or a segment) that carried new appends.
    pub flushes: u64,
    /// `fdatasync` calls on the log's segment files by the commit cycle.
    pub syncs: u64,
    /// Bytes of batches written (not counting repeated tail pages or padding).
    pub bytes_written: u64,
}

/// How one try at an append went: done, or the log must first record something on disk.
enum Attempt {
    Appended(AppendReceipt),
    /// The batch would start a new epoch (or follow a gap) at this offset.
    NewEpochAt(u64),
}

/// What a segment operation of a log writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegmentOp {
    /// Journaled batches only: the log's new batches may go to the journal meanwhile.
    Journaled,
    /// New batches (after the journaled ones): nothing else of the log moves meanwhile.
    Direct,
}

/// A batch appended but not yet in its segment (queued, or journaled only).
#[derive(Clone)]
struct UnflushedBatch {
    segment_base_offset: u64,
    last_offset: u64,
    bytes: Bytes,
}

struct Shared {
    dir: PathBuf,
    /// The directory's name: how the journal names the partition (`journal::format`).
    key: String,
    /// The shard's commit cycle, and this log's id there.
    commit: Rc<commit::CommitShared>,
    commit_id: Cell<u64>,
    /// Queued in the commit cycle's dirty list.
    commit_dirty: Cell<bool>,
    /// The cycle asks that the journaled batches go to the segment, synced (the journal needs
    /// the space, or the shard's unwritten bound is exceeded).
    segment_write_wanted: Cell<bool>,
    /// Waits in the commit cycle's queue for a segment operation's slot (`commit.rs`).
    segment_slot_waiting: Cell<bool>,
    /// Replaced whole by [`PartitionLog::set_config`]; read through [`Shared::config`] at each
    /// use, never kept across an `await`, so a change applies from the next append, roll or
    /// retention check on.
    config: RefCell<Rc<LogConfig>>,
    clock: Rc<dyn Clock>,
    /// The shard's budgets and file cache, which this log's files are opened through.
    resources: Rc<ShardResources>,
    /// The partition directory, for `fsync` after its entries change; opened on demand.
    directory: Rc<CachedFile<OpenDirectory>>,
    state: RefCell<LogState>,
    /// Tasks waiting for any state change (back-pressure, maintenance, drains).
    waiters: Waiters,
    /// Tests stop a cleaning after this step, as a crash would (see [`CleanStep`]).
    clean_fault: Cell<Option<CleanStep>>,
    /// The running (or next) cleaning stops at its next batch, before its next commit point
    /// ([`PartitionLog::stop_cleaning`]); cleared when that cleaning ends.
    clean_stop_requested: Cell<bool>,
    /// Opened by journal replay ([`replay_journals`]): no `fsync`/`fdatasync` of the log's
    /// segments or directory, no recovery point written, no clean-shutdown marker at close
    /// (the close hands it back). Replay makes all of it durable with one `syncfs` before the
    /// journal, which holds every batch appended here, is released; see `replay.rs`.
    syncs_deferred: bool,
    /// This log's place among the shard's tail caches, by last append (0: holds nothing).
    tail_stamp: Cell<u64>,
}

impl Shared {
    /// This log's tail cache was just filled: it becomes the last the shard's budget trims.
    fn note_tail_use(this: &Rc<Shared>) {
        let weak: std::rc::Weak<dyn TrimTail> = Rc::downgrade(this) as _;
        let budget = this.resources.tail_budget();
        this.tail_stamp
            .set(budget.touch(this.tail_stamp.get(), weak));
    }
}

impl TrimTail for Shared {
    fn drop_written(&self) -> bool {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return false;
        };
        // Journaled batches not yet in their segment are read from the cache alone: they stay.
        let segment_written_end_offset = state.segment_written_end_offset;
        state.tail_cache.drop_written(segment_written_end_offset);
        if state.tail_cache.is_empty() {
            self.resources
                .tail_budget()
                .forget(self.tail_stamp.replace(0));
        }
        true
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.resources.tail_budget().forget(self.tail_stamp.get());
    }
}

struct LogState {
    /// Base offset → segment; the last one is the active segment.
    segments: Segments,
    log_start_offset: u64,
    log_end_offset: u64,
    /// Below it every batch is written: in the journal or in its segment (acks=1).
    written_end_offset: u64,
    /// Below it every batch is durable: synced in the journal or in its segment (acks=all).
    durable_end_offset: u64,
    /// Below it every batch is in its segment file (maybe unsynced).
    segment_written_end_offset: u64,
    /// Below it every batch is in a synced segment: what the journal may forget, and where
    /// the recovery point may go.
    segment_synced_end_offset: u64,
    /// Appended, not yet written anywhere: the next operation of the commit cycle takes them.
    unflushed: VecDeque<UnflushedBatch>,
    /// Bytes appended whose write has not completed (queued or in flight): the back-pressure
    /// measure, bounded by `unflushed_bytes_max`.
    unflushed_bytes: usize,
    /// Journaled, not yet in the segment (`segment_written_end_offset` to the written end).
    lazy: VecDeque<UnflushedBatch>,
    lazy_bytes: usize,
    /// The log's new batches are in the journal write in flight.
    in_journal_write: bool,
    /// A segment operation of the commit cycle (or maintenance) is writing the log's segment.
    segment_op: Option<SegmentOp>,
    /// After a failed write of journaled batches to the segment, the next try waits until
    /// then (they are safe in the journal meanwhile).
    segment_retry_at_ms: i64,
    /// The segment holds data written straight to it and not yet synced: until it is, the
    /// log does not use the journal (a synced journal record must not follow segment data a
    /// power loss could take).
    direct_unsynced: bool,
    /// Journal records of this log were written since the journal's last sync.
    journal_unsynced: bool,
    /// Counts the cuts of the log: a journal write or sync that completes after a cut says
    /// nothing about the log as it is now.
    cut_generation: u64,
    /// Collects the appends that will go into the next write.
    open_ticket: Rc<FlushTicket>,
    in_flight_ticket: Option<Rc<FlushTicket>>,
    /// Written, not yet covered by an `fdatasync`, with the end offset each covers.
    unsynced_tickets: Vec<(u64, Rc<FlushTicket>)>,
    sync_requested: bool,
    tail_cache: TailCache,
    /// A truncate, deletion or close is reshaping the log; appends wait.
    maintenance: bool,
    /// The cleaner is rewriting sealed segments: maintenance waits (it could delete or cut
    /// them), appends do not (they touch only the active segment).
    cleaning: bool,
    /// Segments that start below this were rewritten by the last cleaning since the log was
    /// opened; the rest is dirty (what [`PartitionLog::dirty_ratio`] measures).
    cleaned_end_offset: u64,
    closing: bool,
    /// Set when an `fdatasync` (or a trim, or a directory sync) failed: what is on disk past
    /// the last good sync is unknown, so nothing more is written or synced and appends are
    /// refused (as Kafka takes a failed log directory offline), until a restart rescans the log
    /// or [`PartitionLog::clear_fault`] cuts it back to the last good sync.
    failed: Option<LogError>,
    /// Set when a write failed and rolled the log end back to the written end. Batches numbered
    /// elsewhere for the end that is gone (`append_replicated`: a replica's Raft core numbered
    /// them) are refused until [`PartitionLog::clear_fault`], so the replica learns of the
    /// rollback instead of the next batch being taken for a compaction gap. The log's own
    /// `append`, which numbers batches itself, clears it.
    write_failure: Option<LogError>,
    /// The files changed in a way memory does not describe (a cleaning failed half-way through
    /// installing its output): only a restart's recovery can bring the log back, not
    /// [`PartitionLog::clear_fault`].
    restart_required: bool,
    stats: LogStats,
    /// The idempotent producers' state: every batch below the log end is accounted for.
    producers: ProducerTable,
    /// The table as it was when the segment ending at this offset was rolled away from, to be
    /// written as the snapshot when that segment is sealed.
    producer_snapshot_due: Option<(u64, ProducerTable)>,
    /// Which epoch wrote which offsets (`epochs.rs`), persisted before an epoch's first batch.
    epochs: EpochRuns,
    /// The epochs file was there at the open, or a write of it was started since: only while
    /// it is surely absent may a write be skipped because absence says the same.
    epochs_file_may_exist: bool,
    /// A producer snapshot, or index files of the active segment, may exist: there at the
    /// open, or written since (a snapshot, a seal's indexes, a cut that made a sealed segment
    /// the active one). Only while none surely exists may a close of a small log skip the
    /// removal of such stale files (at 10 000 partitions replayed after a crash, three failed
    /// unlinks each).
    close_leftovers_may_exist: bool,
    /// Recovery accepts gaps between batches below this offset (`compacted-end-offset`): the
    /// cleaner's, and those a follower copied from its leader's cleaned log.
    gaps_allowed_below: u64,
    /// A replicated log's high-water mark, set by replication (the Raft commit point); `None`
    /// for a log with no replicas, whose high-water mark is its written end.
    replicated_high_watermark: Option<u64>,
    /// The recovery point on disk ([`RECOVERY_POINT_FILE`]), and when it was last written.
    recovery_point: u64,
    recovery_point_written_ms: i64,
    /// Damaged ranges found since the open (for metrics; truncation does not lower it).
    damage_found: u64,
    /// The clean-shutdown marker of the last clean close, kept until the files first change:
    /// a log nobody wrote to since a clean open closes at no cost, its files as they were.
    clean_marker: CleanMarker,
    /// How much the next reservation of segment space ahead of the writes is.
    preallocation_pace: preallocate::PreallocationPace,
}

/// Whether the partition directory holds the clean-shutdown marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CleanMarker {
    /// There since a clean close; the files are exactly as that close left them. It holds the
    /// log end of that close, if its text reads as an offset.
    Present { log_end_offset: Option<u64> },
    /// Not there, but owed: the log was closed by journal replay, whose `syncfs` made its
    /// files durable, and they are still as that close left them (ending at this log end). A
    /// close writes the marker and nothing else; the first change has nothing to remove.
    Owed { log_end_offset: u64 },
    /// Being removed (durably) before a first change; changes wait.
    Removing,
    /// Not there: the files changed since the open, or it was not clean.
    Absent,
}

impl LogState {
    /// Everything below `end_offset` is durable: the tickets it covers complete.
    fn advance_durable_end(&mut self, end_offset: u64) {
        let end_offset = end_offset.min(self.log_end_offset);
        if end_offset > self.durable_end_offset {
            self.durable_end_offset = end_offset;
        }
        let durable_end_offset = self.durable_end_offset;
        self.unsynced_tickets.retain(|(ticket_end, ticket)| {
            let covered = *ticket_end <= durable_end_offset;
            if covered {
                ticket.complete_durable(Ok(()));
            }
            !covered
        });
    }

    /// The segments are synced below `end_offset` (and so durable there).
    fn segment_synced(&mut self, end_offset: u64) {
        self.segment_synced_end_offset = self.segment_synced_end_offset.max(end_offset);
        self.advance_durable_end(end_offset);
    }

    fn active_segment(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_segment_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// The segment holding `offset` (which must be below the log end).
    fn segment_holding(&self, offset: u64) -> &Segment {
        self.segments
            .range(..=offset)
            .next_back()
            .map(|(_, segment)| segment)
            .expect("offsets at or above the log start lie in a segment")
    }

    /// The damaged range holding `offset`, if its bytes are known to be damaged.
    fn damage_holding(&self, offset: u64) -> Option<&DamagedRange> {
        self.segments
            .range(..=offset)
            .next_back()
            .and_then(|(_, segment)| segment.damage_holding(offset))
    }

    /// Appends are refused once the log is closing or has failed.
    fn check_open(&self) -> Result<(), LogError> {
        if self.closing {
            return Err(LogError::Closed);
        }
        match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Whether a batch of `epoch` at `base_offset` is the first of its epoch, which must be on
    /// disk in the epochs file before the batch is appended. An epoch older than the log's
    /// latest is refused: a deposed leader's write.
    fn epoch_needs_recording(&self, epoch: i32, base_offset: u64) -> Result<bool, LogError> {
        match self.epochs.last_epoch() {
            Some(latest) if epoch < latest => Err(LogError::StaleLeaderEpoch { epoch, latest }),
            _ if epoch < 0 => Err(LogError::StaleLeaderEpoch { epoch, latest: 0 }),
            _ => Ok(self.epochs.starts_run(epoch, base_offset)),
        }
    }

    /// What readers may see: the written end, or below it the replicated high-water mark.
    fn high_watermark(&self) -> u64 {
        self.replicated_high_watermark
            .map_or(self.written_end_offset, |high_watermark| {
                high_watermark.min(self.written_end_offset)
            })
    }

    fn check_in_range(&self, offset: u64) -> Result<(), LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        Ok(())
    }

    /// Starts a new active segment if the next batch would overflow the active one (by bytes
    /// or by the 32-bit relative offsets of the index) or the active one is too old.
    fn roll_if_due(&mut self, config: &LogConfig, batch_bytes: u64, records: u64, now_ms: i64) {
        let log_end_offset = self.log_end_offset;
        let active = self.active_segment();
        if active.appended_bytes == 0 {
            return;
        }
        let too_big = active.appended_bytes + batch_bytes > config.segment_bytes_max;
        let too_many_offsets = log_end_offset + records - active.base_offset > u64::from(u32::MAX);
        let too_old = config
            .segment_age_ms_max
            .is_some_and(|age_ms_max| now_ms - active.created_ms >= age_ms_max as i64);
        if too_big || too_many_offsets || too_old {
            self.segments
                .insert(log_end_offset, Segment::new_empty(log_end_offset, now_ms));
            // With no producer to remember, the snapshot would say nothing a rebuild from the
            // new segment does not (an older snapshot cannot reach into it), so skip its syncs.
            self.producer_snapshot_due =
                (!self.producers.is_empty()).then(|| (log_end_offset, self.producers.clone()));
        }
    }

    /// A ticket that completes once every offset below `end_offset` is written, and is durable
    /// once they all are: the flush that carries the last of them, or (when it is already
    /// written) a ticket of its own that the next sync completes.
    fn ticket_covering(&mut self, end_offset: u64) -> Rc<FlushTicket> {
        assert!(end_offset <= self.log_end_offset, "covering appended data");
        if end_offset <= self.durable_end_offset {
            return Rc::new(FlushTicket::durable());
        }
        if end_offset <= self.written_end_offset {
            let ticket = Rc::new(FlushTicket::written());
            self.unsynced_tickets.push((end_offset, ticket.clone()));
            return ticket;
        }
        // Unwritten: queued for the next flush, or in the one running. `end_offset - 1` is the
        // last offset of a batch, so it is queued exactly when it is at or past the first
        // queued batch's last offset.
        let queued = self
            .unflushed
            .front()
            .is_some_and(|first| end_offset > first.last_offset);
        if queued {
            return self.open_ticket.clone();
        }
        self.in_flight_ticket
            .clone()
            .expect("unwritten data that is not queued is being written")
    }

    /// The log now ends at `end_offset` (a truncation, its files already cut): the ends and what
    /// the tail cache and the producer table hold follow.
    fn end_at(&mut self, end_offset: u64) {
        assert!(
            self.lazy.is_empty(),
            "a log is cut with everything in its segments"
        );
        self.cut_generation += 1;
        self.log_end_offset = end_offset;
        self.written_end_offset = end_offset;
        self.segment_written_end_offset = end_offset;
        self.durable_end_offset = self.durable_end_offset.min(end_offset);
        self.segment_synced_end_offset = self.segment_synced_end_offset.min(end_offset);
        self.tail_cache.truncate_from(end_offset);
        self.forget_producers_from(end_offset);
    }

    /// Forgets producer state at or above `end_offset` (the log now ends there).
    fn forget_producers_from(&mut self, end_offset: u64) {
        self.producers.forget_from(end_offset);
        if self
            .producer_snapshot_due
            .as_ref()
            .is_some_and(|(snapshot_end, _)| *snapshot_end > end_offset)
        {
            self.producer_snapshot_due = None;
        }
    }
}

impl Shared {
    /// The log's settings as they are now.
    fn config(&self) -> Rc<LogConfig> {
        self.config.borrow().clone()
    }

    /// Waits until `condition` holds, re-checking on every state change.
    async fn wait_until(&self, condition: impl Fn(&LogState) -> bool) {
        self.waiters.until(|| condition(&self.state.borrow())).await
    }

    /// Takes the maintenance flag (waiting for a running maintenance or cleaning to end) and
    /// waits until every appended batch is written, so the caller sees a quiet log; refused if
    /// the log failed.
    async fn enter_maintenance(&self) -> Result<MaintenanceGuard<'_>, LogError> {
        let guard = self.enter_maintenance_even_failed().await?;
        if let Some(error) = self.state.borrow().failed.clone() {
            return Err(error);
        }
        Ok(guard)
    }

    /// [`Shared::enter_maintenance`], also when the log failed (to repair it).
    async fn enter_maintenance_even_failed(&self) -> Result<MaintenanceGuard<'_>, LogError> {
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

    /// Asks the shard's commit cycle to look at this log.
    fn request_commit(&self) {
        self.commit.mark_dirty(self);
    }

    /// With maintenance held: writes every batch not yet in the segments there and syncs
    /// them, so the log is on its segments alone (the journal holds nothing it needs).
    async fn flush_to_segments(&self) -> Result<(), LogError> {
        self.write_to_segments_before(true).await
    }

    /// [`Shared::flush_to_segments`], the sync left to the caller when not `sync` (a close:
    /// sealing the active segment syncs it, and with it everything unsynced, since earlier
    /// segments were synced when sealed: one `fdatasync` per closing log instead of two).
    async fn write_to_segments_before(&self, sync: bool) -> Result<(), LogError> {
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
    async fn prepare_cut(&self) -> Result<(), LogError> {
        self.flush_to_segments().await?;
        self.forget_in_journal().await
    }

    /// With maintenance held and the log on its segments ([`Shared::flush_to_segments`]):
    /// makes replay ignore every earlier journal record of the log, durably, before the log is
    /// cut or closed (replay would otherwise re-append what the cut removed).
    async fn forget_in_journal(&self) -> Result<(), LogError> {
        if !self.commit.journal_holds(self.commit_id.get()) {
            return Ok(());
        }
        let done = self.commit.request_forget(self);
        done.waiters
            .wait_for(|| done.durable.borrow().clone())
            .await
    }

    async fn sync_directory(&self) -> Result<(), LogError> {
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
    async fn before_change(&self) -> Result<(), LogError> {
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
    async fn replace_file(
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
    async fn replace_file_in_this_turn(
        &self,
        name: &str,
        bytes: &[u8],
        operation: &'static str,
    ) -> Result<(), LogError> {
        self.before_change().await?;
        write_synced_then_rename(&self.dir, name, bytes)
            .map_err(|error| LogError::io(operation, error))?;
        self.sync_directory().await
    }

    /// [`Shared::replace_file`] for several files at once, as a close writes them: their
    /// temporaries written and synced through io_uring (so the syncs of many logs closing
    /// together overlap instead of blocking the shard one after the other), renamed, then one
    /// directory sync for all. A crash leaves each file old or new.
    async fn replace_files(
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
                .map(|((_, bytes), temporary)| flush::write_whole_file(temporary, bytes)),
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
    async fn persist_log_start_offset(&self, log_start_offset: u64) -> Result<(), LogError> {
        self.replace_file(
            LOG_START_OFFSET_FILE,
            log_start_offset.to_string().as_bytes(),
            "recording the log start offset",
        )
        .await
    }

    /// Records `offset` as the recovery point (every offset below it is durable).
    async fn persist_recovery_point(&self, offset: u64) -> Result<(), LogError> {
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
    async fn lower_recovery_point(&self, offset: u64) -> Result<(), LogError> {
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
    async fn record_epoch(&self, epoch: i32, base_offset: u64) -> Result<(), LogError> {
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
    async fn prepare_replicated(&self, epoch: i32, base_offset: u64) -> Result<(), LogError> {
        {
            let _guard = self.enter_maintenance().await?;
            self.allow_gaps_below(base_offset).await?;
        }
        self.record_epoch(epoch, base_offset).await
    }

    /// Makes recovery accept gaps between batches below `offset` (durably, before any batch
    /// after such a gap can be written).
    async fn allow_gaps_below(&self, offset: u64) -> Result<(), LogError> {
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
    async fn persist_epochs(&self) -> Result<(), LogError> {
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
    async fn end_moved_back_to(&self, end_offset: u64) -> Result<(), LogError> {
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
    async fn persist_producers(
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

    /// Deletes sealed segments from the front while `condition(segment, log_bytes)` holds,
    /// moving the log start to the first kept segment. Never deletes the active segment.
    async fn delete_front_segments(
        &self,
        condition: impl Fn(&Segment, u64) -> bool,
    ) -> Result<usize, LogError> {
        let doomed: Vec<u64> = {
            let state = self.state.borrow();
            let mut log_bytes: u64 = state.segments.values().map(|s| s.appended_bytes).sum();
            let mut doomed = Vec::new();
            // Never past the high-water mark: a replicated log keeps what is not committed.
            let high_watermark = state.high_watermark();
            for segment in state.segments.values() {
                if !segment.sealed
                    || segment.end_offset > high_watermark
                    || !condition(segment, log_bytes)
                {
                    break;
                }
                log_bytes -= segment.appended_bytes;
                doomed.push(segment.base_offset);
            }
            doomed
        };
        let Some(&last_doomed) = doomed.last() else {
            return Ok(0);
        };
        let new_start = {
            let state = self.state.borrow();
            let next = state
                .segments
                .range(last_doomed + 1..)
                .next()
                .map(|(&base, _)| base)
                .expect("the active segment is never deleted");
            next.max(state.log_start_offset)
        };
        self.persist_log_start_offset(new_start).await?;
        {
            let mut state = self.state.borrow_mut();
            state.log_start_offset = new_start;
            for base in &doomed {
                state.segments.remove(base);
            }
        }
        for base in &doomed {
            remove_segment_files(&self.dir, *base)?;
        }
        self.sync_directory().await?;
        Ok(doomed.len())
    }
}

/// Writes `bytes` to a temporary file in `dir`, syncs it and renames it over `name`: after a
/// crash the file is the old one or the new one, never a mix. The rename is durable only once
/// the directory is synced.
fn write_synced_then_rename(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))
}

/// Replaces the file `name` in `dir` with `bytes` atomically and durably, blocking the thread
/// (directory synced too): for small files written rarely, such as a replica's Raft state.
pub fn replace_file_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    write_synced_then_rename(dir, name, bytes)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Unlinks a segment's files (those that exist). The caller syncs the directory afterwards.
fn remove_segment_files(dir: &Path, base_offset: u64) -> Result<bool, LogError> {
    remove_existing(
        &[
            segment::log_path(dir, base_offset),
            segment::offset_index_path(dir, base_offset),
            segment::time_index_path(dir, base_offset),
        ],
        "deleting a segment",
    )
}

/// Unlinks those of `paths` that exist; whether there were any.
fn remove_existing(paths: &[PathBuf], operation: &'static str) -> Result<bool, LogError> {
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
fn remove_producer_snapshot(dir: &Path) -> Result<bool, LogError> {
    remove_existing(
        &[dir.join(PRODUCER_STATE_FILE)],
        "deleting the producer state snapshot",
    )
}

/// Clears the maintenance flag however the maintenance ends.
struct MaintenanceGuard<'a> {
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

impl PartitionLog {
    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.shared.state.borrow().log_start_offset
    }

    /// The offset the next appended batch will get.
    pub fn log_end_offset(&self) -> u64 {
        self.shared.state.borrow().log_end_offset
    }

    /// Every offset below this is in the segment files (maybe not yet synced).
    pub fn written_end_offset(&self) -> u64 {
        self.shared.state.borrow().written_end_offset
    }

    /// What consumers may read up to: the written end of a log without replicas; of a
    /// replicated one, the commit point replication last set (never above the written end).
    pub fn high_watermark(&self) -> u64 {
        self.shared.state.borrow().high_watermark()
    }

    /// Makes this a replicated log whose high-water mark is `high_watermark` (the Raft commit
    /// point, as offsets), and wakes readers waiting for data. It only moves forward, except
    /// that it never stays above the log end (a follower truncating its uncommitted tail).
    pub fn set_replicated_high_watermark(&self, high_watermark: u64) {
        let mut state = self.shared.state.borrow_mut();
        let current = state.replicated_high_watermark.unwrap_or(0);
        state.replicated_high_watermark =
            Some(current.max(high_watermark).min(state.log_end_offset));
        drop(state);
        self.shared.waiters.wake_all();
    }

    /// Which epoch wrote which offsets.
    pub fn epochs(&self) -> EpochRuns {
        self.shared.state.borrow().epochs.clone()
    }

    /// Every offset below this has been made durable by an `fdatasync`.
    pub fn durable_end_offset(&self) -> u64 {
        self.shared.state.borrow().durable_end_offset
    }

    /// Why the log cannot take batches numbered elsewhere right now: a failed sync (nothing is
    /// written any more) or a failed write not yet cleared. `None` when it is healthy.
    pub fn fault(&self) -> Option<LogError> {
        let state = self.shared.state.borrow();
        state.failed.clone().or_else(|| state.write_failure.clone())
    }

    /// Brings the log back into service after a failed write or sync, without a restart: after a
    /// failed sync, everything past the last good sync is cut off (the kernel may have dropped
    /// it, whatever a later sync says) and the cut synced; then whatever the log still holds is
    /// synced, so all of it is durable. Fails, leaving the log failed, if the disk fails again.
    ///
    /// A replica calls this before it rebuilds its Raft core from the log, so the core counts
    /// as persisted exactly what is durable. A single broker does not: after a failed sync its
    /// log refuses appends until the broker restarts, and recovery keeps what checks out. Also
    /// refused after a cleaning that failed half-way through installing its output: only the
    /// recovery of a restart finishes that.
    pub async fn clear_fault(&self) -> Result<(), LogError> {
        {
            let _guard = self.shared.enter_maintenance_even_failed().await?;
            let failed = {
                let state = self.shared.state.borrow();
                if state.restart_required {
                    return Err(state.failed.clone().unwrap_or(LogError::Corrupt(
                        "a cleaning failed half-way: restart the broker".into(),
                    )));
                }
                state.failed.is_some()
            };
            if failed {
                if let Err(error) = self.shared.cut_back_to_last_sync().await {
                    self.shared.mark_failed(&error);
                    return Err(error);
                }
            }
            let mut state = self.shared.state.borrow_mut();
            state.failed = None;
            state.write_failure = None;
        }
        self.sync().await
    }

    /// Bytes of batches in the log, including appended but unwritten ones.
    pub fn size_bytes(&self) -> u64 {
        let state = self.shared.state.borrow();
        state.segments.values().map(|s| s.appended_bytes).sum()
    }

    pub fn stats(&self) -> LogStats {
        self.shared.state.borrow().stats
    }

    pub fn segment_count(&self) -> usize {
        self.shared.state.borrow().segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<u64> {
        self.shared
            .state
            .borrow()
            .segments
            .keys()
            .copied()
            .collect()
    }

    /// Bytes held by the tail cache (bounded by `tail_cache_bytes_max` plus unwritten data).
    pub fn tail_cache_bytes(&self) -> usize {
        self.shared.state.borrow().tail_cache.size_bytes()
    }

    /// Idempotent producers whose sequence state the log remembers (bounded by
    /// `producers_max`).
    pub fn producer_count(&self) -> usize {
        self.shared.state.borrow().producers.len()
    }

    pub fn directory(&self) -> &Path {
        &self.shared.dir
    }

    /// The log's settings as they are now.
    pub fn config(&self) -> Rc<LogConfig> {
        self.shared.config()
    }

    /// Changes the log's settings while it is open (a topic's configuration was altered):
    /// the largest batch from the next append on, segment size and age from the next roll,
    /// the retention limits and cleanup policy from the next retention check. Only a topic's
    /// settings may change; those that size the log's memory must stay as they were at the
    /// open (`LogConfig::same_sizing`), or the log would break its own bounds.
    pub fn set_config(&self, config: LogConfig) -> Result<(), LogError> {
        config.validate().map_err(LogError::InvalidConfig)?;
        let mut current = self.shared.config.borrow_mut();
        assert!(
            current.same_sizing(&config),
            "an open log's memory bounds do not change"
        );
        *current = Rc::new(config);
        Ok(())
    }

    /// Checks `batch` as a producer's ([`CheckedBatch::produced`], against this log's
    /// `batch_bytes_max`) and appends it ([`PartitionLog::append_checked`]): for callers that
    /// hold raw bytes (tools, tests, benchmarks). The broker's produce path checks once, at
    /// its edge, and appends the checked batch.
    pub async fn append(
        &self,
        batch: BytesMut,
        leader_epoch: i32,
    ) -> Result<AppendReceipt, LogError> {
        let batch = CheckedBatch::produced(batch, self.shared.config().batch_bytes_max)?;
        self.append_checked(batch, leader_epoch).await
    }

    /// Appends one checked record batch: checks an idempotent producer's epoch and sequence,
    /// gives the batch the next offsets and `leader_epoch`, and queues it for the commit cycle.
    /// Waits only when `unflushed_bytes_max` bytes are already waiting to be written
    /// (back-pressure), a maintenance operation is running, or `leader_epoch` is new to the
    /// log (it is recorded on disk first). A rejected batch leaves the log unchanged; a
    /// producer's retry of a batch already in the log is answered with that batch's offsets
    /// and `duplicate: true`.
    pub async fn append_checked(
        &self,
        batch: CheckedBatch,
        leader_epoch: i32,
    ) -> Result<AppendReceipt, LogError> {
        let header = *batch.header();
        let mut batch = batch.into_bytes();
        loop {
            self.wait_for_room(batch.len()).await?;
            match self.try_append(&mut batch, &header, leader_epoch)? {
                Attempt::Appended(receipt) => {
                    self.shared.resources.tail_budget().trim();
                    return Ok(receipt);
                }
                Attempt::NewEpochAt(base_offset) => {
                    self.shared.record_epoch(leader_epoch, base_offset).await?
                }
            }
        }
    }

    /// [`PartitionLog::append`]'s synchronous part: checks and places the batch at the log
    /// end, unless its epoch must first be recorded.
    fn try_append(
        &self,
        batch: &mut BytesMut,
        header: &BatchHeader,
        leader_epoch: i32,
    ) -> Result<Attempt, LogError> {
        if let Some(receipt) = self.check_duplicate(header)? {
            return Ok(Attempt::Appended(receipt));
        }
        let mut state = self.shared.state.borrow_mut();
        let base_offset = state.log_end_offset;
        if state.epoch_needs_recording(leader_epoch, base_offset)? {
            return Ok(Attempt::NewEpochAt(base_offset));
        }
        // Numbered here, at the end as it is now: a write that failed earlier is behind us.
        state.write_failure = None;
        batch::assign_offset_and_epoch(batch, base_offset as i64, leader_epoch);
        let header = BatchHeader {
            base_offset: base_offset as i64,
            leader_epoch,
            ..*header
        };
        Ok(Attempt::Appended(self.place(
            &mut state,
            std::mem::take(batch),
            &header,
        )))
    }

    /// Appends a batch exactly as another replica's log holds it: its offsets and epoch are
    /// kept (a follower copying its leader, or a leader placing a batch its Raft core
    /// numbered). The batch must start at or after the log end; a start after it is a gap the
    /// leader's cleaner left, recorded first so that recovery accepts it. Producer sequences
    /// are not checked (the leader checked them) but recorded, for when this replica leads.
    /// Its size is bounded only by what the log can hold unwritten, not by `batch_bytes_max`:
    /// a topic's `max.message.bytes` may have been lowered since its leader took the batch.
    pub async fn append_replicated(&self, batch: CheckedBatch) -> Result<AppendReceipt, LogError> {
        let header = *batch.header();
        let mut batch = batch.into_bytes();
        loop {
            self.wait_for_room(batch.len()).await?;
            match self.try_append_replicated(&mut batch, &header)? {
                Attempt::Appended(receipt) => {
                    self.shared.resources.tail_budget().trim();
                    return Ok(receipt);
                }
                Attempt::NewEpochAt(base_offset) => {
                    self.shared
                        .prepare_replicated(header.leader_epoch, base_offset)
                        .await?
                }
            }
        }
    }

    /// [`PartitionLog::append_replicated`]'s synchronous part: places the batch, unless a gap
    /// before it or its epoch must first be recorded (`NewEpochAt` then says to prepare).
    fn try_append_replicated(
        &self,
        batch: &mut BytesMut,
        header: &BatchHeader,
    ) -> Result<Attempt, LogError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_open()?;
        if let Some(error) = &state.write_failure {
            return Err(error.clone());
        }
        let log_end_offset = state.log_end_offset;
        let base_offset = match u64::try_from(header.base_offset) {
            Ok(base_offset) if base_offset >= log_end_offset => base_offset,
            _ => {
                return Err(LogError::BelowLogEnd {
                    base_offset: header.base_offset,
                    log_end_offset,
                })
            }
        };
        let is_gap = base_offset > log_end_offset && base_offset > state.gaps_allowed_below;
        if is_gap || state.epoch_needs_recording(header.leader_epoch, base_offset)? {
            return Ok(Attempt::NewEpochAt(base_offset));
        }
        if base_offset > log_end_offset {
            state.active_segment_mut().end_offset = base_offset;
            state.log_end_offset = base_offset;
        }
        Ok(Attempt::Appended(self.place(
            &mut state,
            std::mem::take(batch),
            header,
        )))
    }

    /// An idempotent producer's retry of a batch the log already holds: its receipt (offsets and
    /// flush handle of the original), so a leader answers it without replicating it again.
    /// `None` for a new batch; an error for one the producer table refuses (sequence gap, old
    /// producer epoch). Synchronous, so a caller that appends right after, with no await in
    /// between, appends exactly what this checked.
    pub fn check_duplicate(&self, header: &BatchHeader) -> Result<Option<AppendReceipt>, LogError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_open()?;
        match state.producers.check(header)? {
            Verdict::Duplicate {
                base_offset,
                last_offset,
            } => {
                let ticket = state.ticket_covering(last_offset + 1);
                Ok(Some(AppendReceipt {
                    base_offset,
                    last_offset,
                    duplicate: true,
                    ticket,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Whether the log can take a batch of `size_bytes` at all: not beyond what it holds
    /// unwritten (`unflushed_bytes_max`, never below `batch_bytes_max`). A replica asks
    /// before its Raft core numbers a batch, since a batch numbered but not placed would leave
    /// the core and the log disagreeing.
    pub fn check_holds(&self, size_bytes: usize) -> Result<(), LogError> {
        let unflushed_bytes_max = self.shared.config().unflushed_bytes_max;
        if size_bytes > unflushed_bytes_max {
            return Err(LogError::InvalidBatch(BatchError::TooLarge {
                length_bytes: size_bytes,
                limit_bytes: unflushed_bytes_max,
            }));
        }
        Ok(())
    }

    /// Waits until a batch of `size_bytes` fits the back-pressure bound and no maintenance runs
    /// (or the log is closing or failed: the caller finds out). A batch larger than the bound
    /// itself would never fit: refused at once.
    async fn wait_for_room(&self, size_bytes: usize) -> Result<(), LogError> {
        self.check_holds(size_bytes)?;
        // Fixed from the open on (`LogConfig::same_sizing`).
        let unflushed_bytes_max = self.shared.config().unflushed_bytes_max;
        self.shared
            .wait_until(|state| {
                state.closing
                    || state.failed.is_some()
                    || (!state.maintenance
                        && state.unflushed_bytes + size_bytes <= unflushed_bytes_max)
            })
            .await;
        Ok(())
    }

    /// Puts a batch whose offsets and epoch are final at the log end: the active segment (rolled
    /// first if due), the producer table, the commit cycle's queue and the tail cache.
    fn place(&self, state: &mut LogState, batch: BytesMut, header: &BatchHeader) -> AppendReceipt {
        // Read at each append: a roll follows the settings of the moment it happens.
        let config = self.shared.config();
        let now_ms = self.shared.clock.now_ms();
        let size_bytes = batch.len();
        let base_offset = header.base_offset as u64;
        let records = header.records_count as u64;
        state.roll_if_due(&config, size_bytes as u64, records, now_ms);
        let active = state.active_segment_mut();
        assert_eq!(
            active.end_offset, base_offset,
            "appends are contiguous: the batch starts at the active segment's end"
        );
        let position = active.appended_bytes;
        active.note_batch(position, header, config.index_interval_bytes);
        let segment_base_offset = active.base_offset;
        let last_offset = header.last_offset() as u64;
        state.producers.record(header, now_ms);
        let bytes = batch.freeze();
        state.log_end_offset = last_offset + 1;
        state.unflushed.push_back(UnflushedBatch {
            segment_base_offset,
            last_offset,
            bytes: bytes.clone(),
        });
        state.unflushed_bytes += size_bytes;
        state.tail_cache.push(CachedBatch {
            base_offset,
            last_offset,
            bytes,
        });
        Shared::note_tail_use(&self.shared);
        self.shared.request_commit();
        AppendReceipt {
            base_offset,
            last_offset,
            duplicate: false,
            ticket: state.open_ticket.clone(),
        }
    }

    /// Waits until the batch is written, in the shard's journal or its segment file (what
    /// Kafka's acks=1 promises: it survives the broker process, not a power loss).
    pub async fn wait_written(&self, receipt: &AppendReceipt) -> Result<(), LogError> {
        let ticket = &receipt.ticket;
        ticket
            .waiters
            .wait_for(|| ticket.written.borrow().clone())
            .await
    }

    /// Waits until the batch is written and covered by an `fdatasync` (acks=all on one node).
    pub async fn wait_durable(&self, receipt: &AppendReceipt) -> Result<(), LogError> {
        let ticket = &receipt.ticket;
        ticket.durable_wanted.set(true);
        ticket
            .waiters
            .wait_for(|| {
                if let Some(result) = &*ticket.durable.borrow() {
                    return Some(result.clone());
                }
                if matches!(&*ticket.written.borrow(), Some(Ok(()))) {
                    // Written by a write that nobody needed synced: ask for a sync now.
                    self.shared.state.borrow_mut().sync_requested = true;
                    self.shared.request_commit();
                }
                None
            })
            .await
    }

    /// Resolves once the high-water mark (what readers may see) is above `offset`, or the log
    /// is closing or failed.
    pub async fn wait_for_high_watermark_above(&self, offset: u64) {
        self.shared
            .wait_until(|state| {
                state.high_watermark() > offset || state.closing || state.failed.is_some()
            })
            .await
    }

    /// Appends and waits for durability: the batch survives a crash once this returns `Ok`.
    pub async fn append_durable(
        &self,
        batch: BytesMut,
        leader_epoch: i32,
    ) -> Result<AppendReceipt, LogError> {
        let receipt = self.append(batch, leader_epoch).await?;
        self.wait_durable(&receipt).await?;
        Ok(receipt)
    }

    /// Makes everything appended so far durable.
    pub async fn sync(&self) -> Result<(), LogError> {
        let ticket = {
            let mut state = self.shared.state.borrow_mut();
            if let Some(error) = &state.failed {
                return Err(error.clone());
            }
            let log_end_offset = state.log_end_offset;
            state.ticket_covering(log_end_offset)
        };
        self.shared.request_commit();
        let receipt = AppendReceipt {
            base_offset: 0,
            last_offset: 0,
            duplicate: false,
            ticket,
        };
        self.wait_durable(&receipt).await
    }

    /// Removes every batch from the one holding `offset` on (Raft: a new leader overrules
    /// uncommitted entries). Cuts at a batch boundary, so the new log end may be below
    /// `offset`; returns it. Appends wait while this runs.
    pub async fn truncate(&self, offset: u64) -> Result<u64, LogError> {
        let _guard = self.shared.enter_maintenance().await?;
        if offset != self.shared.state.borrow().log_end_offset {
            self.shared.prepare_cut().await?;
        }
        self.shared.truncate_quiet(offset).await
    }

    /// Deletes every segment and starts the log empty at `offset`, the offset before it having
    /// been written in `previous_epoch` (a follower told to start over at its leader's log
    /// start: Kafka's truncate-fully-and-start-at, Raft's install-snapshot for a log whose
    /// state is the log itself).
    pub async fn reset_to(&self, offset: u64, previous_epoch: i32) -> Result<(), LogError> {
        let _guard = self.shared.enter_maintenance().await?;
        self.shared.prepare_cut().await?;
        self.shared.restart_empty_at(offset).await?;
        {
            let mut state = self.shared.state.borrow_mut();
            state.epochs = EpochRuns::default();
            if offset > 0 {
                state.epochs.push(previous_epoch, offset - 1);
            }
        }
        self.shared.persist_epochs().await
    }

    /// Moves the log start to `offset` (Kafka's DeleteRecords) and deletes the segments that
    /// now lie wholly below it. Reads below the new start fail with `OffsetOutOfRange`.
    pub async fn delete_up_to(&self, offset: u64) -> Result<(), LogError> {
        let _guard = self.shared.enter_maintenance().await?;
        {
            let state = self.shared.state.borrow();
            state.check_in_range(offset)?;
            if offset <= state.log_start_offset {
                return Ok(());
            }
        }
        // The segments must reach the new start before it is recorded: after a crash, replay
        // would otherwise bring back journaled batches below it.
        self.shared.flush_to_segments().await?;
        self.shared.persist_log_start_offset(offset).await?;
        self.shared.state.borrow_mut().log_start_offset = offset;
        self.shared
            .delete_front_segments(|segment, _| segment.end_offset <= offset)
            .await?;
        Ok(())
    }

    /// Applies the retention bounds: deletes the oldest sealed segments while they are older
    /// than `retention_age_ms_max` (by their newest timestamp) or the log is larger than
    /// `retention_bytes_max`. Whole segments only; the active one never; nothing unless the
    /// cleanup policy includes deletion. Returns how many segments were deleted.
    pub async fn enforce_retention(&self) -> Result<usize, LogError> {
        let _guard = self.shared.enter_maintenance().await?;
        let config = self.shared.config();
        if !config.cleanup_policy.deletes() {
            return Ok(0);
        }
        let now_ms = self.shared.clock.now_ms();
        self.shared
            .delete_front_segments(|segment, log_bytes| {
                let expired = config.retention_age_ms_max.is_some_and(|age_ms_max| {
                    segment
                        .max_timestamp_ms
                        .is_some_and(|newest_ms| now_ms - newest_ms > age_ms_max as i64)
                });
                let oversized = config.retention_bytes_max.is_some_and(|bytes_max| {
                    log_bytes.saturating_sub(segment.appended_bytes) >= bytes_max
                });
                expired || oversized
            })
            .await
    }

    /// Writes and syncs everything to the segments, writes the active segment's indexes and
    /// marks the directory as cleanly closed, so the next open need not scan the log; then the
    /// journal forgets the log. A log whose files did not change since a clean open is left as
    /// it is: it still holds that close's marker.
    pub async fn close(self) -> Result<(), LogError> {
        self.close_as(false).await
    }

    /// [`PartitionLog::close`] at the shard's shutdown: the journal is released whole after
    /// every log closed, so no log's close writes a Forget record to it.
    pub async fn close_at_shutdown(self) -> Result<(), LogError> {
        self.close_as(true).await
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

    async fn close_as(&self, at_shutdown: bool) -> Result<(), LogError> {
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
        // files. A small active segment keeps neither indexes nor an empty snapshot: the next
        // open scans it whole in one read and finds the same.
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
                let stale = leftovers
                    && (remove_producer_snapshot(&self.shared.dir)?
                        | damage::remove_index_files(&self.shared.dir, active_base_offset)?);
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
    async fn forget_unless(&self, at_shutdown: bool) -> Result<(), LogError> {
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

impl Shared {
    /// [`PartitionLog::truncate`] once the log is quiet (maintenance held, nothing unwritten).
    async fn truncate_quiet(&self, offset: u64) -> Result<u64, LogError> {
        let mut from_offset = offset;
        {
            let state = self.state.borrow();
            state.check_in_range(offset)?;
            if offset == state.log_end_offset {
                return Ok(offset);
            }
        }
        self.before_change().await?;
        // The cut is at the first batch holding `offset` or after it (compaction leaves gaps),
        // which may be in a later segment (at most one step per segment); in damaged bytes, at
        // their start.
        let (segment_base_offset, files, is_first, cut_position, cut_base_offset) = loop {
            let (segment_base_offset, files, bounds, is_first, next_base, holding, at_limit) = {
                let state = self.state.borrow();
                let segment = state.segment_holding(from_offset);
                let files = segment.files.clone().ok_or_else(|| {
                    LogError::Corrupt(format!("segment {} has no file", segment.base_offset))
                })?;
                let is_first = state.segments.keys().next() == Some(&segment.base_offset);
                let next_base = state
                    .segments
                    .range(segment.base_offset + 1..)
                    .next()
                    .map(|(&base, _)| base);
                let bounds = segment.walk_bounds(from_offset);
                let cut_at = |range: &DamagedRange| (range.position, range.start_offset);
                let holding = segment.damage_holding(from_offset).map(cut_at);
                // Where a walk that finds nothing stops: a compaction gap runs into damage.
                let at_limit = segment
                    .damaged
                    .iter()
                    .find(|range| range.position == bounds.2)
                    .map(cut_at);
                (
                    segment.base_offset,
                    files,
                    bounds,
                    is_first,
                    next_base,
                    holding,
                    at_limit,
                )
            };
            if let Some((position, start_offset)) = holding {
                break (segment_base_offset, files, is_first, position, start_offset);
            }
            let (scan_from, scan_from_offset, limit_bytes) = bounds;
            let open = files.get().await?;
            let mut scanner = SegmentScanner::new(&open.dma, limit_bytes, self.scan_window());
            let walk = read::walk_to_batch(
                &mut scanner,
                scan_from,
                scan_from_offset,
                limit_bytes,
                from_offset,
            )
            .await?;
            match (walk, next_base) {
                (read::Walk::Found(position, header), _) => {
                    break (
                        segment_base_offset,
                        files,
                        is_first,
                        position,
                        header.base_offset as u64,
                    )
                }
                (read::Walk::Damaged(damage), _) => {
                    self.record_damage(segment_base_offset, &files, damage)
                        .await?;
                }
                (read::Walk::End, _) if at_limit.is_some() => {
                    let (position, start_offset) = at_limit.expect("checked just now");
                    break (segment_base_offset, files, is_first, position, start_offset);
                }
                (read::Walk::End, Some(next_base)) => from_offset = next_base,
                (read::Walk::End, None) => {
                    // Only a gap lies from `offset` to the log end: no batch goes, the end
                    // moves back to `offset`.
                    self.lower_recovery_point(offset).await?;
                    {
                        let mut state = self.state.borrow_mut();
                        state.active_segment_mut().end_offset = offset;
                        state.end_at(offset);
                    }
                    self.end_moved_back_to(offset).await?;
                    return Ok(offset);
                }
            }
        };
        // In a gap, the log ends at `offset`; inside a batch, at that batch's start.
        let new_end = offset.min(cut_base_offset);
        if cut_base_offset < self.state.borrow().log_start_offset {
            // The batch holding `offset` began below the log start: nothing of it may stay,
            // and the log cannot end below its start, so it restarts empty at `offset`.
            return self.restart_empty_at(offset).await;
        }
        self.lower_recovery_point(new_end).await?;
        // Every segment after the cut goes; so does the cut segment when the cut is at its
        // start (unless it is the first), and the previous segment becomes active again.
        let removes_whole_segment = cut_position == 0 && !is_first;
        let first_doomed = if removes_whole_segment {
            segment_base_offset
        } else {
            segment_base_offset + 1
        };
        let doomed: Vec<u64> = {
            let state = self.state.borrow();
            state
                .segments
                .range(first_doomed..)
                .map(|(&b, _)| b)
                .collect()
        };
        // Last segment first, then the cut: a crash midway leaves a prefix of the log, never a
        // segment that does not follow on from the one before it (which recovery would report
        // as damage and keep).
        for base in doomed.iter().rev() {
            remove_segment_files(&self.dir, *base)?;
        }
        remove_producer_snapshot(&self.dir)?;
        self.sync_directory().await?;
        if !removes_whole_segment {
            files
                .get()
                .await?
                .cut_durably(cut_position, "truncating a segment")
                .await?;
        }
        {
            let mut state = self.state.borrow_mut();
            for base in &doomed {
                state.segments.remove(base);
            }
            let active = state.active_segment_mut();
            if removes_whole_segment {
                // The segment before the cut ends where the log now does: its own batches end
                // at or before `new_end` (nothing from `offset` on was found in it).
                active.end_offset = new_end;
            } else {
                active.forget_from(cut_position, new_end);
            }
            active.written_bytes = active.appended_bytes;
            active.sealed = false;
            // It may have index files (it was sealed).
            state.close_leftovers_may_exist = true;
        }
        self.reload_active_tail_page().await?;
        self.state.borrow_mut().end_at(new_end);
        self.end_moved_back_to(new_end).await?;
        Ok(new_end)
    }

    /// After a failed sync (maintenance held): the log ends at its last good sync, its files
    /// cut to what they hold and synced, the directory synced.
    async fn cut_back_to_last_sync(&self) -> Result<(), LogError> {
        self.before_change().await?;
        let (cut, log_end_offset) = {
            let mut state = self.state.borrow_mut();
            let cut = state.durable_end_offset.max(state.log_start_offset);
            let cut = cut.min(state.log_end_offset);
            // Journaled batches at or past the cut were never durable: they go. Those below
            // it are durable in the journal only, and go to the segment next.
            let keep_end = cut
                .max(state.segment_written_end_offset)
                .min(state.written_end_offset);
            let before: usize = state.lazy_bytes;
            state.lazy.retain(|batch| batch.last_offset < keep_end);
            state.lazy_bytes = state.lazy.iter().map(|batch| batch.bytes.len()).sum();
            self.commit.add_unwritten(0, before - state.lazy_bytes);
            state.written_end_offset = keep_end;
            let error = state.failed.take().unwrap_or(LogError::Closed);
            flush::roll_back_unwritten(&mut state, None, error);
            (cut, state.log_end_offset)
        };
        self.prepare_cut().await?;
        if cut < log_end_offset {
            self.truncate_quiet(cut).await?;
        }
        // What a failed write or trim may have left past the written bytes goes too.
        let unsealed: Vec<(Rc<SegmentFile>, u64)> = self
            .state
            .borrow()
            .segments
            .values()
            .filter(|segment| !segment.sealed)
            .filter_map(|segment| Some((segment.files.clone()?, segment.written_bytes)))
            .collect();
        for (files, written_bytes) in unsealed {
            self.trim_and_sync(
                &*files.get().await?,
                written_bytes,
                "cutting a segment back after a failure",
            )
            .await?;
        }
        self.sync_directory().await
    }

    /// Deletes every segment and starts an empty log at `offset` (Kafka's
    /// `truncateFullyAndStartAt`).
    async fn restart_empty_at(&self, offset: u64) -> Result<u64, LogError> {
        self.persist_log_start_offset(offset).await?;
        self.lower_recovery_point(offset).await?;
        let doomed: Vec<u64> = self.state.borrow().segments.keys().copied().collect();
        for base in doomed.iter().rev() {
            remove_segment_files(&self.dir, *base)?;
        }
        remove_producer_snapshot(&self.dir)?;
        self.sync_directory().await?;
        {
            let mut state = self.state.borrow_mut();
            state.segments.clear();
            let now_ms = self.clock.now_ms();
            state
                .segments
                .insert(offset, Segment::new_empty(offset, now_ms));
            assert!(
                state.lazy.is_empty(),
                "a log is reset with everything in its segments"
            );
            state.cut_generation += 1;
            state.log_start_offset = offset;
            state.log_end_offset = offset;
            state.written_end_offset = offset;
            state.durable_end_offset = offset;
            state.segment_written_end_offset = offset;
            state.segment_synced_end_offset = offset;
            state.tail_cache.truncate_from(0);
            state.producers.clear();
            state.producer_snapshot_due = None;
            state.epochs.trim_before(offset);
        }
        self.end_moved_back_to(offset).await?;
        Ok(offset)
    }

    async fn reload_active_tail_page(&self) -> Result<(), LogError> {
        let (files, written_bytes) = {
            let state = self.state.borrow();
            let active = state.active_segment();
            (active.files.clone(), active.written_bytes)
        };
        let tail_page = match files {
            Some(files) => read::last_partial_page(&*files.get().await?, written_bytes).await?,
            None => Vec::new(),
        };
        self.state.borrow_mut().active_segment_mut().tail_page = tail_page;
        Ok(())
    }

    /// The open files of a segment a read planned for (the cache may have closed them since
    /// the plan); `None` if the segment left the log meanwhile (retention, `delete_up_to`, a
    /// cleaning's swap): its name may now be another file's, so the read plans again.
    async fn open_planned(
        &self,
        base_offset: u64,
        handle: &Rc<SegmentFile>,
    ) -> Result<Option<Rc<SegmentFiles>>, LogError> {
        let opened = handle.get().await;
        let still_in_log = self
            .state
            .borrow()
            .segments
            .get(&base_offset)
            .and_then(|segment| segment.files.as_ref())
            .is_some_and(|files| Rc::ptr_eq(files, handle));
        match opened {
            Ok(files) if still_in_log => Ok(Some(files)),
            Ok(_) => Ok(None),
            Err(_) if !still_in_log => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn scan_window(&self) -> usize {
        self.config().index_interval_bytes as usize + crate::config::DMA_ALIGNMENT_BYTES as usize
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // Without `close` this is a crash as far as the disk is concerned: the log leaves its
        // commit cycle (a log opened alone stops its own), unwritten batches are lost, and the
        // next open scans the active segment (after replay, with its shard's journal).
        {
            let state = &mut *self.shared.state.borrow_mut();
            state.closing = true;
            let error = LogError::Closed;
            state.open_ticket.fail(error.clone());
            if let Some(ticket) = &state.in_flight_ticket {
                ticket.fail(error);
            }
        }
        self.shared.commit.unregister(self.shared.commit_id.get());
        self.shared.waiters.wake_all();
    }
}
