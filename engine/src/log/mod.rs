//! A partition log: an ordered, append-only sequence of record batches in a directory of
//! segments, written with direct I/O and group-committed.
//!
//! # Write path
//! [`PartitionLog::append`] validates a batch, assigns its offsets and epoch, places it in the
//! active segment's bookkeeping and the tail cache, and queues it for the shard's commit cycle
//! ([`Committer`], `commit/`); it returns at once with an [`AppendReceipt`]. The cycle takes
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
//! A duplicate's receipt is the original's: its waits complete when the original batch is written
//! (acks=1) or durable (acks=all), so a retry is never acknowledged before the batch it repeats.
//!
//! # Transactions
//! The producer table also follows each producer's transaction from the batches placed (a
//! transactional data batch opens it, a marker closes it); the log's last stable offset is the
//! first offset of the oldest open transaction, capped by the high-water mark, and each ABORT
//! marker leaves an aborted-transaction entry in its segment (Kafka's `.txnindex`). A
//! `read_committed` read stops at the last stable offset and reports the aborted transactions
//! of what it returns (`transactions.rs`).
//!
//! # Compaction
//! [`PartitionLog::clean`] (`clean/`) rewrites sealed segments keeping each key's latest
//! record; kept records keep their offsets, so the log may have gaps below the compacted end.
//! Reads at an offset in a gap return the next batch; truncation at one ends the log there.
//!
//! # Bounds
//! Every buffer has a configured bound: `unflushed_bytes_max` (appends wait beyond it),
//! `tail_cache_bytes_max` (exceeded only by unwritten data, itself bounded), `write_chunk_bytes`,
//! `producers_max` (entries of about 200 bytes: five batches each). Memory per partition is about
//! those plus 20 bytes of index per `index_interval_bytes` of log.
//!
//! # Rooms
//! This file holds the log's state and what it answers about itself; each way of changing it
//! has its own file: `append.rs` (the hot path, and the calls replication makes), `commit/`
//! and `flush.rs` (the shard's commit cycle and the segment writes it issues), `read.rs`,
//! `truncate.rs` (cuts that move the end back), `retention.rs` (what leaves the front),
//! `clean/` (compaction), `close.rs`, `maintenance.rs` (the exclusive hold the changes other
//! than appends take), `state_files.rs` (the small files recovery trusts), `listing.rs`,
//! `recovery.rs` and `replay.rs` (open after a crash), `damage.rs`, `epochs.rs`, `producers/`,
//! `producer_replay.rs` (the producer table read back from the segments),
//! `transactions.rs`, `preallocate.rs`, `injected_faults.rs`.
//!
//! # Invariants
//! - Appends are contiguous: every appended batch starts where the previous one ended. Above
//!   the compacted end (`compacted-end-offset`) the whole log is contiguous; below it offsets
//!   only increase (compaction removed records and whole batches, never moved one).
//! - A sealed segment's offsets end at the next segment's base, whatever its last batch.
//! - The producer table records no batch at or above the log end (truncation and a failed
//!   flush forget them), and the snapshot file describes a prefix of the log (truncation
//!   replaces it with the table at its new end before it cuts).
//! - `log_start_offset <= durable_end_offset <= written_end_offset <= log_end_offset` (the
//!   durable end can lag the start after `delete_up_to` of unsynced data; it is only a bound).
//!   Written and durable mean in a segment or in the shard's journal; the batches from
//!   `segment_written_end_offset` to the written end are journaled only, kept in the tail
//!   cache (and in `lazy`) until the cycle writes them to their segment.
//! - Before a log is cut (truncation, `reset_to`, `clear_fault`) or closed, everything it holds
//!   is written to its segments and synced, then a Forget record of it made durable in the
//!   journal: replay never re-appends what a cut removed (`commit/`, `replay.rs`).
//! - A segment later in the directory has data only if every earlier one is sealed: trimmed,
//!   synced and indexed. Recovery relies on it.
//! - Data is acknowledged as durable only after the `fdatasync` that covers it returned, and
//!   nothing is written, synced or acknowledged after a failed `fdatasync` (see `flush.rs`).
//! - A read never returns bytes of a known damaged range, and recovery never removes a batch that
//!   follows damage: it cuts only the last segment's torn tail, past the recovery point.
//! - The cleaner never rewrites the active segment, nor the sealed segment before an active segment
//!   that has no file yet.
//! - Offsets whose batches do not check out above the compacted end are a damaged range, never
//!   skipped in silence.

mod append;
mod clean;
mod close;
mod commit;
mod damage;
mod epochs;
mod flush;
pub mod injected_faults;
mod listing;
mod maintenance;
mod preallocate;
mod producer_replay;
mod producers;
mod read;
mod recovery;
mod replay;
mod retention;
mod state_files;
pub(crate) mod transactions;
mod truncate;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::resources::{CachedFile, OpenDirectory, ShardResources, TrimTail};
use crate::segment::{self, Segment, Segments};
use crate::tail_cache::TailCache;
use crate::waiters::Waiters;
use producers::ProducerTable;

pub use clean::{CleanStats, CleanStep, PartitionRecordRewrite, RecordRewrite, RewrittenRecord};
pub use commit::{CommitStats, Committer};
pub use damage::{repair, DamagedRange};
pub use epochs::{EpochRun, EpochRuns, SINGLE_BROKER_EPOCH};
pub use producers::{ActiveProducer, VerificationGuard};
pub use read::{FileRange, OffsetAtTime, ReadData, ReadSlice};
use replay::ReplayedLog;
pub use replay::{replay_journals, ReplayPhases, ReplayReport, Replayed, ReplayedLogs};
pub use transactions::AbortedTransaction;

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
/// atomically when a segment is sealed, on close and by truncation (before its cut).
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
    /// Waits in the commit cycle's queue for a segment operation's slot (`commit/`).
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

    /// What `read_committed` readers may see (Kafka's last stable offset): the high-water mark,
    /// or below it the first offset of the oldest open transaction, never below the log start
    /// (as Kafka's `maybeIncrementFirstUnstableOffset`: a transaction whose start retention
    /// deleted holds back nothing that is still there).
    fn last_stable_offset(&self) -> u64 {
        let high_watermark = self.high_watermark();
        self.producers
            .first_open_transaction_offset()
            .map_or(high_watermark, |first| {
                first.max(self.log_start_offset).min(high_watermark)
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
            self.roll(now_ms);
        }
    }

    /// Starts a new, empty active segment at the log end.
    fn roll(&mut self, now_ms: i64) {
        let log_end_offset = self.log_end_offset;
        assert!(
            self.active_segment().appended_bytes > 0,
            "a roll leaves no empty segment behind"
        );
        self.segments
            .insert(log_end_offset, Segment::new_empty(log_end_offset, now_ms));
        // Even with no producer: a log with sealed segments always has a snapshot, so
        // recovery can tell a lost one (and rebuilds the state from the log start then).
        self.producer_snapshot_due = Some((log_end_offset, self.producers.clone()));
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

    /// Asks the shard's commit cycle to look at this log.
    fn request_commit(&self) {
        self.commit.mark_dirty(self);
    }

    /// How far a segment scanner reads ahead: one index interval, plus the alignment a direct
    /// read needs.
    fn scan_window(&self) -> usize {
        self.config().index_interval_bytes as usize + crate::config::DMA_ALIGNMENT_BYTES as usize
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

    /// What `read_committed` readers may see: the high-water mark, or below it the first offset
    /// of the oldest open transaction (`transactions.rs`).
    pub fn last_stable_offset(&self) -> u64 {
        self.shared.state.borrow().last_stable_offset()
    }

    /// The aborted transactions a `read_committed` read of `[offset, offset_end)` reports
    /// (Kafka's `collectAbortedTxns`): every transaction aborted by a marker at or after
    /// `offset` that started before `offset_end`, in marker order. An entry is kept by the
    /// segment holding its marker, so the search starts at the segment holding `offset`.
    pub fn aborted_transactions(&self, offset: u64, offset_end: u64) -> Vec<AbortedTransaction> {
        let state = self.shared.state.borrow();
        let from = state
            .segments
            .range(..=offset)
            .next_back()
            .map_or(0, |(&base, _)| base);
        let mut found = Vec::new();
        for (_, segment) in state.segments.range(from..) {
            let complete = transactions::collect_overlapping(
                &segment.aborted_transactions,
                offset,
                offset_end,
                &mut found,
            );
            if complete {
                break;
            }
        }
        found
    }

    /// Every producer whose state the log remembers, by producer id (DescribeProducers).
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        self.shared.state.borrow().producers.active_producers()
    }

    /// How many transactions are open (for metrics).
    pub fn open_transaction_count(&self) -> usize {
        self.shared
            .state
            .borrow()
            .producers
            .open_transaction_count()
    }

    /// The open transactions, oldest first: `(producer id, first offset)`.
    pub fn open_transactions(&self) -> Vec<(i64, u64)> {
        self.shared
            .state
            .borrow()
            .producers
            .open_transactions()
            .collect()
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

    /// Kafka's answer to a ListOffsets v0 query (`UnifiedLog.legacyFetchOffsetsBefore` and the
    /// consumer's cap in `Partition.legacyFetchOffsetsForTimestamp`). The candidates are where
    /// each segment starts (never below the log start) and the log end if the newest segment
    /// holds anything, each with the time it was last written to; the answer is up to
    /// `count_max` of them, newest first, from the newest written at or before `timestamp_ms`
    /// (from the log end for -1, latest; only the oldest for -2, earliest). Offsets above the
    /// high-water mark are replaced by it, as Kafka does for consumers. Kafka times a segment by
    /// its file's modification time; a segment here is timed by its largest record timestamp
    /// (its creation while empty), which is that moment for records stamped on arrival.
    pub fn offsets_before(&self, timestamp_ms: i64, now_ms: i64, count_max: usize) -> Vec<u64> {
        const LATEST: i64 = -1;
        const EARLIEST: i64 = -2;
        let state = self.shared.state.borrow();
        let mut candidates: Vec<(u64, i64)> = state
            .segments
            .values()
            .map(|segment| {
                let written_ms = segment.max_timestamp_ms.unwrap_or(segment.created_ms);
                (segment.base_offset.max(state.log_start_offset), written_ms)
            })
            .collect();
        if state
            .segments
            .values()
            .last()
            .is_some_and(|newest| newest.appended_bytes > 0)
        {
            candidates.push((state.log_end_offset, now_ms));
        }
        let newest_taken = match timestamp_ms {
            LATEST => candidates.len(),
            EARLIEST => candidates.len().min(1),
            timestamp_ms => candidates
                .iter()
                .rposition(|&(_, written_ms)| written_ms <= timestamp_ms)
                .map_or(0, |at| at + 1),
        };
        let mut offsets: Vec<u64> = candidates[..newest_taken]
            .iter()
            .rev()
            .take(count_max)
            .map(|&(offset, _)| offset)
            .collect();
        let high_watermark = state.high_watermark();
        if offsets
            .first()
            .is_some_and(|&newest| newest > high_watermark)
        {
            offsets.retain(|&offset| offset <= high_watermark);
            offsets.insert(0, high_watermark);
        }
        debug_assert!(offsets.windows(2).all(|pair| pair[0] >= pair[1]));
        offsets
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

    /// Changes the log's settings while it is open (a topic's configuration was altered; the
    /// log reads them at each use and never keeps them across an `await`):
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
