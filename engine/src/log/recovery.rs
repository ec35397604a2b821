//! Opening a partition directory: find the segments, trust what can be trusted, scan what
//! cannot, cut off a torn tail, and keep (and report) damage anywhere else.
//!
//! - After a clean close (marker present) every segment's indexes were written and its file
//!   trimmed: the indexes are checked (well-formed, within the file) and only the batches after
//!   the last index entry are scanned.
//! - After a crash the last segment is scanned in full, every batch's length, magic, CRC-32C
//!   and offset contiguity checked. Earlier segments were sealed before the next one received
//!   data, so they get the same cheap check as after a clean close.
//! - Indexes that disagree with the log, or are missing, are rebuilt from a full scan.
//! - A batch that does not check out is cut off with the rest of its segment only in the last
//!   segment at or after the recovery point (`recovery-point`: below it everything was synced),
//!   where a crash may have torn a write. Anywhere else it is damage (`damage`): the scan steps
//!   over the damaged bytes to the next valid batch, notes the range in its segment, and keeps
//!   everything after it; the range is reported once the log is open.
//! - Offsets must be contiguous, within and across segments, except below the compacted end
//!   (`compacted-end-offset`, written by the cleaner before it commits a swap), where
//!   compaction leaves gaps: there they must only increase. Offsets between segments with no
//!   file above the compacted end are damage too; a segment overlapping the previous one fails
//!   the open. A sealed segment's end is the next segment's base, not its last batch's end, so
//!   the log end never moves back when the cleaner removed a segment's last batches.
//! - A cleaning interrupted by a crash is finished or forgotten first (see `clean`): its
//!   `.cleaned` output is deleted, a `.swap` output (committed) replaces the segments of its
//!   range.
//! - Idempotent producers' state comes from the producer snapshot if it is valid and reaches
//!   into the last segment, continued with the batches of that segment the scan shows;
//!   otherwise from every batch of the last segment, which is then scanned in full even after
//!   a clean close. Producers whose last batch is older than both are forgotten (accepted
//!   with any sequence next time, as Kafka treats unknown producers). Every seal writes a
//!   snapshot (even of no producer) durably before the next segment gets data, and a
//!   truncation replaces it atomically with one at its new end, so a log with sealed segments
//!   always has one that reaches the last segment; when it is lost or damaged, the state at the
//!   last segment's start is rebuilt, as Kafka does, by a replay of the log from its start
//!   (`producer_replay.rs`: an open transaction may have begun in any segment) and written as
//!   the snapshot.
//! - A sealed segment's aborted-transaction index (`.txnindex`; every seal writes one) that is
//!   missing or does not check out, or whose segment's other indexes were (a crash between the
//!   segment and its indexes, or a cleaner's swap finished here), is rebuilt from its markers
//!   with the producer state at its start, by the same replay (Kafka's `recoverSegment`).
//! - Recovery seeds the tail cache with the last batches it read of the last segment (a 64th of the
//!   shard's tail budget each, kept only if they end at the log end and follow any damage), so
//!   consumers that followed the tail still read from memory after a restart.
//!
//! # What is checked when
//! Each entry: when, what is checked, and what a batch that does not check out is.
//! - *Open, a sealed segment* (any but the last; the last after a clean close): the index files are
//!   well-formed and within the file, and every batch after the last index entry is checked in full
//!   (length, magic, CRC-32C, offsets following on; the last one may end in its last page's
//!   padding); if that fails, or the index files are missing, the whole segment in full. A bad
//!   batch: damage.
//! - *Open after a crash, the last segment*: every batch in full. A bad batch at or past the
//!   recovery point: a torn write, cut off there with everything after it (as Kafka's recovery
//!   truncates), unless it is only the last page's padding (below); below it: damage.
//! - *Open, the segment list*: each segment starts where the previous one ends (gaps only below the
//!   compacted end). A missing file: damage (its offsets, 0 bytes); a segment overlapping the
//!   previous one: the open fails.
//! - *A read* (a client's fetch, ListOffsets by time, truncation): the headers it walks from an
//!   index entry to the batch it wants; what it sends is not checked (as in Kafka, the client
//!   checks CRCs; the bytes are spliced from the page cache). A bad header: damage.
//! - *A follower's fetch* (`read_verified`): every batch sent, CRC included. A bad batch: damage
//!   (the good batches before it are sent).
//! - *The cleaner*: stops before a segment with damage.
//! - *`ferrite dump-log`*: every batch, CRC included, of every file, without recovering anything. A
//!   bad batch is reported; the last segment's padding is its end (`batch::is_last_page_padding`,
//!   the rule recovery uses).
//!
//! "Follows on" means the next offset exactly, or any later one below `compacted-end-offset`
//! (compaction's gaps); a batch may be sparse (fewer records than its offset range) anywhere.
//! Missing or inconsistent indexes are rebuilt by a full scan, and written back unless the segment
//! is damaged. A batch's size is judged against `unflushed_bytes_max`, which bounds every batch the
//! log ever accepted, not against `max.message.bytes`: that may have been lowered since the batch
//! was written, and such a batch is not a torn one.
//!
//! # The last page's padding
//! A direct write pads its last page with zeros; a seal trims them, a close does not (the active
//! segment is synced, not trimmed), and a crash leaves them. When the scan of the last segment, at
//! or past the recovery point, stops where the rest of the file is zeros up to the end of that page
//! and no further (`SegmentScanner::only_padding_from`), recovery takes that for the data's end and
//! leaves it (synced, as a cut would be, unless a clean close or replay's `syncfs` covers it). It
//! is not trimmed because an `ftruncate` inside a page makes ext4 read that page back from the disk
//! first, once per partition at every restart after a crash.
//!
//! Why this never serves or keeps a torn write: zeros never parse as a batch (a length of 0), so
//! nothing past the data is served or counted in the log end; the file is exactly what every write
//! leaves until its seal (a failed write is cut off at once, or fails the log, which then closes
//! without a marker), so the next write starts at that page with its valid bytes and overwrites the
//! zeros, and a crash after it is recovered as any crash after a write. Anything else after the
//! data (non-zero bytes in the page, or a file longer than the page, as a torn write that grew the
//! file leaves) is cut off. A crash that tore a write into exactly "the old bytes, then zeros to
//! the page end" loses only what was never acknowledged: the batches after the old bytes were not
//! durable, and the journal replays any it acknowledged.
//!
//! # Limits of what is detected
//! The partition leader epoch and the base offset are outside Kafka's CRC (`batch`): a flipped base
//! offset shows only as offsets that do not follow on. A flipped byte inside a sealed segment
//! before its last index entry is found only by a read that walks onto it, a follower's fetch of
//! it, `ferrite dump-log`, or a client's own CRC check (which the client reports; the broker never
//! hears of it): there is no background scrubbing. In the last segment, a byte flipped after the
//! recovery point is taken for a torn write and cut off with what follows. A lost first segment
//! file moves the log start instead of being reported.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::clean;
use super::commit::Committer;
use super::damage::{self, DamagedRange};
use super::epochs;
use super::listing::{read_offset_file, read_producer_snapshot, segment_base_offsets, Listing};
use super::producer_replay::{self, ReplayedSegment};
use super::producers::{ProducerLimits, ProducerRecovery, ProducerTable};
use super::state_files::{remove_producer_snapshot, remove_segment_files};
use super::transactions::{self, AbortedTransaction};
use super::{
    CleanMarker, FlushTicket, LogState, PartitionLog, ReplayedLog, ReplayedLogs, Shared,
    CLEAN_SHUTDOWN_FILE, COMPACTED_END_OFFSET_FILE, LOG_START_OFFSET_FILE, PRODUCER_STATE_FILE,
    RECOVERY_POINT_FILE,
};
use crate::durable_file::{write_synced_then_rename, write_whole_file};
use bytes::Bytes;
use std::io::Write;

use crate::batch::BatchHeader;
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::index::{OffsetIndex, TimeIndex};
use crate::resources::{self, CachedFile, FileCache, OpenDirectory};
use crate::segment::{
    self, scan_and_note, Resume, Segment, SegmentFile, SegmentScanner, Segments,
    RECOVERY_WINDOW_BYTES,
};
use crate::tail_cache::{CachedBatch, TailCache};

impl PartitionLog {
    /// Opens (creating if needed) the partition log in `dir`, recovering it as described in
    /// this module's documentation, with a commit cycle of its own (no journal: every write
    /// goes to the segments). Must run on a glommio executor: it starts the cycle's task there.
    pub async fn open(
        dir: impl Into<PathBuf>,
        config: LogConfig,
        clock: Rc<dyn Clock>,
    ) -> Result<PartitionLog, LogError> {
        let committer = Committer::new();
        let mut log = PartitionLog::open_in(&committer, dir, config, clock).await?;
        log.own_committer = Some(committer);
        Ok(log)
    }

    /// Opens the partition log in `dir` as [`PartitionLog::open`] does, committed by the
    /// shard's `committer` (with its journal, if it has one) along with the shard's other logs.
    pub async fn open_in(
        committer: &Committer,
        dir: impl Into<PathBuf>,
        config: LogConfig,
        clock: Rc<dyn Clock>,
    ) -> Result<PartitionLog, LogError> {
        PartitionLog::open_with(committer, dir.into(), config, clock, Opening::Normal).await
    }

    /// [`PartitionLog::open_in`] for a shard's opens after journal replay ran at start-up: a
    /// log replay closed (its entry in `replayed`, taken here: only the first open after the
    /// replay may use it) is read as after a clean close, with no marker file (see
    /// `replay.rs`), provided its last segment is still the one replay closed.
    pub async fn open_in_after_replay(
        committer: &Committer,
        dir: impl Into<PathBuf>,
        config: LogConfig,
        clock: Rc<dyn Clock>,
        replayed: &ReplayedLogs,
    ) -> Result<PartitionLog, LogError> {
        let dir = dir.into();
        let opening = match dir
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|key| replayed.take(key))
        {
            Some(replayed) => Opening::AfterReplay(replayed),
            None => Opening::Normal,
        };
        PartitionLog::open_with(committer, dir, config, clock, opening).await
    }

    /// [`PartitionLog::open`] for journal replay: nothing of the log is synced, neither by the
    /// open nor later (see `Shared::syncs_deferred`); close it with
    /// [`PartitionLog::close_for_replay`].
    pub(crate) async fn open_for_replay(
        dir: PathBuf,
        config: LogConfig,
        clock: Rc<dyn Clock>,
    ) -> Result<PartitionLog, LogError> {
        let committer = Committer::new();
        let mut log =
            PartitionLog::open_with(&committer, dir, config, clock, Opening::ForReplay).await?;
        log.own_committer = Some(committer);
        Ok(log)
    }

    async fn open_with(
        committer: &Committer,
        dir: PathBuf,
        config: LogConfig,
        clock: Rc<dyn Clock>,
        opening: Opening,
    ) -> Result<PartitionLog, LogError> {
        let syncs_deferred = opening == Opening::ForReplay;
        // Absolute: glommio opens a directory relative to no directory descriptor, so a
        // relative path (`--data-dir ferrite-data`, the default) fails with EBADF.
        let dir = std::path::absolute(dir)
            .map_err(|error| LogError::io("resolving the partition directory", error))?;
        config.validate().map_err(LogError::InvalidConfig)?;
        let mut listing = Listing::of_creating(&dir)?;
        crate::dma::probe_device_with_real_data(&dir).await?;
        let resources = resources::current();
        let directory = CachedFile::<OpenDirectory>::closed(resources.files(), dir.clone());
        if clean::finish_interrupted(&dir, listing.names())? {
            listing = Listing::of_creating(&dir)?;
        }
        // The marker holds the log end of the clean close (an older marker holds nothing).
        let clean_marker = listing
            .read_to_string(
                &dir,
                CLEAN_SHUTDOWN_FILE,
                "reading the clean-shutdown marker",
            )?
            .map(|text| text.trim().parse::<u64>().ok());
        // Replay closed the log and its `syncfs` made the files durable, but wrote no marker:
        // taken as one, if the files are those replay closed (its active segment is still the
        // last; a directory emptied and made again since holds none).
        let marker_owed = match opening {
            Opening::AfterReplay(replayed)
                if clean_marker.is_none()
                    && last_segment_base_offset(&listing) == Some(replayed.active_base_offset) =>
            {
                Some(replayed.log_end_offset)
            }
            _ => None,
        };
        let clean = clean_marker.is_some() || marker_owed.is_some();
        let log_start_checkpoint = read_offset_file(&dir, &listing, LOG_START_OFFSET_FILE)?;
        let now_ms = clock.now_ms();
        let producer_limits = ProducerLimits::of(&config);
        let snapshot = read_producer_snapshot(&dir, &listing, producer_limits)?;
        // Unusable: damaged, or lost (a log with sealed segments always has one; the state
        // is then rebuilt from the log start, see `recover_segments`).
        let snapshot_unusable = match &snapshot {
            Some(Err(reason)) => Some(format!("it does not check out: {reason}")),
            Some(Ok(_)) => None,
            None => Some("it is missing".to_owned()),
        };
        let mut producers =
            ProducerRecovery::new(snapshot.and_then(Result::ok), producer_limits, now_ms);
        let compacted_end_offset =
            read_offset_file(&dir, &listing, COMPACTED_END_OFFSET_FILE)?.unwrap_or(0);
        // After a clean close everything up to its log end was durable. A recovery point file
        // whose text a crash lost reads as none (recovery then scans more).
        let recovery_point_on_disk = match clean_marker.flatten() {
            Some(log_end_offset) => Some(log_end_offset),
            None => read_offset_file(&dir, &listing, RECOVERY_POINT_FILE).unwrap_or(None),
        };
        // Replay's `syncfs` made everything up to the log end durable; the file still says
        // what it said before the crash (replay never moves it), which stays the log's recovery
        // point on disk (lower, so a later crash only scans more) until it is next moved.
        let recovery_point_checkpoint = marker_owed.or(recovery_point_on_disk);
        // Whether the open removed or wrote files whose fate must be durable before the log
        // changes further (a crash must not bring them back under a newer log).
        let mut directory_changed = false;
        let tail_seed = RefCell::new(TailSeed {
            batches: VecDeque::new(),
            bytes: 0,
            bytes_max: config
                .tail_cache_bytes_max
                .min(resources.tail_budget().seed_bytes_max()),
        });
        let segments = recover_segments(
            &mut directory_changed,
            resources.files(),
            &dir,
            &listing,
            &config,
            clean,
            now_ms,
            compacted_end_offset,
            recovery_point_checkpoint,
            &mut producers,
            snapshot_unusable.as_deref(),
            &tail_seed,
            syncs_deferred,
        )
        .await?;
        let mut segments = segments;
        if segments.is_empty() {
            let base_offset = log_start_checkpoint.unwrap_or(0);
            segments.insert(base_offset, Segment::new_empty(base_offset, now_ms));
        }
        let mut active = segments
            .pop_last()
            .map(|(_, segment)| segment)
            .expect("at least one segment");
        active.sealed = false;
        active.created_ms = now_ms;
        let log_end_offset = active.end_offset;
        let active_base_offset = active.base_offset;
        segments.insert(active.base_offset, active);
        let first_base_offset = *segments.keys().next().expect("at least one segment");
        let log_start_offset = log_start_checkpoint
            .unwrap_or(0)
            .max(first_base_offset)
            .min(log_end_offset);
        let producers = producers.finish(log_end_offset);
        // The active segment's aborted transactions: those its index file held (a clean close
        // wrote it) below the log end, and those the scan met after the producer state's start.
        {
            let active = segments
                .values_mut()
                .next_back()
                .expect("at least one segment");
            let active_base_offset = active.base_offset;
            let aborted = &mut active.aborted_transactions;
            aborted.retain(|entry| entry.last_offset < log_end_offset);
            for entry in &producers.aborted {
                if entry.last_offset >= active_base_offset
                    && !aborted
                        .iter()
                        .any(|known| known.last_offset == entry.last_offset)
                {
                    aborted.push(*entry);
                }
            }
            aborted.sort_by_key(|entry| entry.last_offset);
        }
        let damaged: Vec<DamagedRange> = segments
            .values()
            .flat_map(|segment| segment.damaged.iter().cloned())
            .collect();
        for range in &damaged {
            damage::report(&dir, range, "when the log was opened");
        }
        let epochs_text = listing.read_to_string(
            &dir,
            epochs::LEADER_EPOCHS_FILE,
            "reading the leader epochs",
        )?;
        let epochs = epochs::read_epochs(
            &dir,
            epochs_text.as_deref(),
            log_start_offset,
            log_end_offset,
        )?;
        let epochs_file = epochs::check_text(epochs_text.as_deref(), &epochs);
        if !producers.snapshot_still_fits
            && listing.has(PRODUCER_STATE_FILE)
            && remove_producer_snapshot(&dir)?
        {
            directory_changed = true;
        }
        // A clean log keeps its marker until its files first change (`Shared::before_change`),
        // so opening it writes and syncs nothing, and closing it unchanged costs nothing.
        if (directory_changed || !clean) && !syncs_deferred {
            directory
                .get()
                .await?
                .directory
                .sync()
                .await
                .map_err(|error| LogError::glommio("syncing the partition directory", error))?;
        }
        let state = LogState {
            segments,
            log_start_offset,
            log_end_offset,
            written_end_offset: log_end_offset,
            durable_end_offset: log_end_offset,
            segment_written_end_offset: log_end_offset,
            segment_synced_end_offset: log_end_offset,
            unflushed: Default::default(),
            unflushed_bytes: 0,
            lazy: Default::default(),
            lazy_bytes: 0,
            in_journal_write: false,
            segment_op: None,
            segment_retry_at_ms: i64::MIN,
            direct_unsynced: false,
            journal_unsynced: false,
            cut_generation: 0,
            open_ticket: Rc::new(FlushTicket::default()),
            in_flight_ticket: None,
            unsynced_tickets: Vec::new(),
            sync_requested: false,
            tail_cache: TailCache::seeded(
                config.tail_cache_bytes_max,
                resources.tail_budget().clone(),
                tail_seed
                    .into_inner()
                    .suffix_ending_at(log_start_offset, log_end_offset),
            ),
            maintenance: false,
            cleaning: false,
            cleaned_end_offset: compacted_end_offset,
            closing: false,
            failed: None,
            write_failure: None,
            restart_required: false,
            stats: Default::default(),
            producers: producers.table,
            producer_snapshot_due: None,
            epochs,
            epochs_file_may_exist: epochs_file.exists,
            close_leftovers_may_exist: listing.has(PRODUCER_STATE_FILE)
                || listing.has_path(&segment::offset_index_path(&dir, active_base_offset))
                || listing.has_path(&segment::time_index_path(&dir, active_base_offset)),
            gaps_allowed_below: compacted_end_offset,
            replicated_high_watermark: None,
            recovery_point: recovery_point_on_disk.unwrap_or(0).min(log_end_offset),
            recovery_point_written_ms: now_ms,
            damage_found: damaged.len() as u64,
            preallocation_pace: super::preallocate::PreallocationPace::new(),
            clean_marker: match (clean_marker, marker_owed) {
                (Some(log_end_offset), _) => CleanMarker::Present { log_end_offset },
                // The files end where replay closed them (anything else is damage found since,
                // and the close seals the log again).
                (None, Some(replayed_end_offset)) if replayed_end_offset == log_end_offset => {
                    CleanMarker::Owed { log_end_offset }
                }
                (None, _) => CleanMarker::Absent,
            },
        };
        let key = dir
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| {
                LogError::InvalidConfig(format!(
                    "the partition directory {} has no name the journal can record",
                    dir.display()
                ))
            })?
            .to_owned();
        let shared = Rc::new(Shared {
            dir,
            key,
            commit: committer.shared().clone(),
            commit_id: Default::default(),
            commit_dirty: Default::default(),
            segment_write_wanted: Default::default(),
            segment_slot_waiting: Default::default(),
            config: RefCell::new(Rc::new(config)),
            clock,
            resources,
            directory,
            state: RefCell::new(state),
            waiters: Default::default(),
            clean_fault: Default::default(),
            clean_stop_requested: Default::default(),
            tail_stamp: Default::default(),
            syncs_deferred,
        });
        // Replay appends, right after, the batches whose epochs the file names (it wrote the
        // file before journaling them); what stays stale is rewritten by the shard's open.
        if epochs_file.stale && !syncs_deferred {
            // A crash lost the batches of an epoch the file names: rewrite it before anything
            // is appended at those offsets.
            shared.persist_epochs().await?;
        }
        if !shared.state.borrow().tail_cache.is_empty() {
            Shared::note_tail_use(&shared);
            shared.resources.tail_budget().trim();
        }
        shared.commit_id.set(shared.commit.register(&shared));
        Ok(PartitionLog {
            shared,
            own_committer: None,
        })
    }
}

/// What an open is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    Normal,
    /// By journal replay: nothing synced (`Shared::syncs_deferred`).
    ForReplay,
    /// A shard's first open of a log replay closed at start-up.
    AfterReplay(ReplayedLog),
}

/// The base offset of the last segment file the listing has.
fn last_segment_base_offset(listing: &Listing) -> Option<u64> {
    listing.names().filter_map(segment_base_offset_of).max()
}

/// The base offset a segment file's name gives (`<base offset, 20 digits>.log`).
pub(super) fn segment_base_offset_of(name: &str) -> Option<u64> {
    name.strip_suffix(".log")?.parse().ok()
}

/// Recovers every segment in `dir`, in offset order. Segments are returned sealed, each one's
/// end extended to the next one's base; the caller reopens the last one. Batches that do not
/// check out are cut off only as the last segment's torn tail (at or after `recovery_point`);
/// anywhere else they are damage, noted in their segment and kept (with everything after).
#[allow(clippy::too_many_arguments)]
async fn recover_segments(
    directory_changed: &mut bool,
    cache: &Rc<FileCache>,
    dir: &Path,
    listing: &Listing,
    config: &LogConfig,
    clean: bool,
    now_ms: i64,
    gaps_end_offset: u64,
    recovery_point: Option<u64>,
    producers: &mut ProducerRecovery,
    snapshot_unusable: Option<&str>,
    tail: &RefCell<TailSeed>,
    syncs_deferred: bool,
) -> Result<Segments, LogError> {
    let base_offsets = segment_base_offsets(dir, listing)?;
    // Not `batch_bytes_max`: that limit may have been lowered since the log's batches were
    // accepted (max.message.bytes altered, or a restart with a smaller --max-message-bytes),
    // and a batch it no longer admits is not a torn one. No batch ever accepted was larger
    // than the unflushed-bytes bound, which every batch limit must fit under.
    let batch_bytes_max = config.unflushed_bytes_max;
    // Every segment before the last was sealed (synced) before the next one got data: what
    // lies below the last one's base was durable, whatever the checkpoint says.
    let last_base_offset = base_offsets.last().copied().unwrap_or(0);
    let recovery_point = recovery_point.unwrap_or(0).max(last_base_offset);
    let mut segments = Segments::default();
    let mut transaction_indexes_lost = Vec::new();
    for (index, &base_offset) in base_offsets.iter().enumerate() {
        let is_last = index + 1 == base_offsets.len();
        let next_base_offset = base_offsets.get(index + 1).copied();
        if let Some(previous) = segments.values_mut().next_back() {
            follow_on(previous, base_offset, gaps_end_offset)?;
        }
        let handle = SegmentFile::closed(cache, segment::log_path(dir, base_offset));
        let files = handle.get().await?;
        let file_bytes = files.size_bytes().await?;
        let mut scanner = SegmentScanner::new(&files.dma, file_bytes, RECOVERY_WINDOW_BYTES);
        let mut segment = Segment::new_empty(base_offset, now_ms);
        let mut checked = false;
        let state_rebuilt = match snapshot_unusable {
            Some(reason) if is_last && !segments.is_empty() => {
                // Without a usable snapshot, the state at the last segment's start is rebuilt
                // from the log start, as Kafka does (an open transaction may have begun in
                // any earlier segment, and would otherwise count as stable), and written as
                // the snapshot, so the next open need not.
                eprintln!(
                    "ferrite: {}: rebuilding the producer state from the log: its snapshot {reason}",
                    dir.display()
                );
                let limits = ProducerLimits::of(config);
                let (table, _) =
                    replay_from_log_start(&segments, base_offset, limits, now_ms).await?;
                let bytes = table.encode(base_offset);
                write_synced_then_rename(dir, PRODUCER_STATE_FILE, |file| file.write_all(&bytes))
                    .map_err(|error| LogError::io("writing the producer state snapshot", error))?;
                *directory_changed = true;
                producers.resume_from(table, base_offset);
                true
            }
            _ => false,
        };
        // Sealed segments are checked cheaply; the last one only after a clean close, and only
        // when the producer snapshot covers what precedes its unscanned tail (a rebuilt state
        // ends at its start).
        let trust_indexes =
            !is_last || (producers.enter_active_segment(base_offset) && clean && !state_rebuilt);
        let mut observe = |position: u64, header: &BatchHeader, bytes: &[u8]| {
            if is_last {
                producers.observe(header, transactions::marker_of(header, bytes).as_ref());
                if position + bytes.len() as u64 + tail.borrow().bytes_max as u64 > file_bytes {
                    tail.borrow_mut().push(header, bytes);
                }
            }
        };
        if trust_indexes {
            if let Some((offset_index, time_index)) =
                load_indexes(dir, listing, base_offset, file_bytes)
            {
                // Resume from the last index entry: it and everything after it is re-scanned.
                segment.offset_index = offset_index;
                segment.time_index = time_index;
                let resume = segment.offset_index.last().map_or((0, 0), |entry| {
                    (u64::from(entry.position), u64::from(entry.relative_offset))
                });
                segment.appended_bytes = resume.0;
                segment.end_offset = base_offset + resume.1;
                segment.forget_from(resume.0, base_offset + resume.1);
                let stopped = scan_and_note(
                    &mut segment,
                    &mut scanner,
                    file_bytes,
                    config.index_interval_bytes,
                    batch_bytes_max,
                    gaps_end_offset,
                    &mut observe,
                )
                .await?;
                // A closed active segment keeps its last page's padding (see below).
                checked = stopped.is_none()
                    || (is_last
                        && segment.end_offset >= recovery_point
                        && scanner.only_padding_from(segment.appended_bytes).await?);
            }
        }
        let rebuilt = !checked;
        if !checked {
            // The indexes were missing or wrong, or the tail did not check out: a full scan
            // decides what is valid, what is damaged, and where a torn tail starts.
            segment = Segment::new_empty(base_offset, now_ms);
            tail.borrow_mut().clear();
            while let Some(reason) = scan_and_note(
                &mut segment,
                &mut scanner,
                file_bytes,
                config.index_interval_bytes,
                batch_bytes_max,
                gaps_end_offset,
                &mut observe,
            )
            .await?
            {
                let (position, offset) = (segment.appended_bytes, segment.end_offset);
                if is_last && offset >= recovery_point {
                    if scanner.only_padding_from(position).await? {
                        // Zeros from the data's end to the end of its page, and nothing
                        // after: the padding of the last direct write, as every write leaves
                        // it until a seal trims it (a close does not: it costs an `ftruncate`
                        // inside a page, which reads the page back from the disk). It stays:
                        // never served (the log ends here), overwritten by the next write
                        // (which starts at this page with its valid bytes), and found the
                        // same way by the next scan. Synced as a cut would have been, unless
                        // a clean close or replay's `syncfs` covers it.
                        if !clean && !syncs_deferred {
                            files.sync("syncing a recovered segment").await?;
                        }
                        break;
                    }
                    // Past the recovery point the last segment may end in a write a crash cut
                    // short: its tail goes (as Kafka's recovery truncates there).
                    let operation = "cutting a torn segment";
                    if syncs_deferred {
                        files.cut(position, operation).await?;
                    } else {
                        files.cut_durably(position, operation).await?;
                    }
                    break;
                }
                let resume = scanner
                    .resume_after_damage(position, offset, next_base_offset, batch_bytes_max)
                    .await?;
                let (end_position, end_offset) = match resume {
                    Some(Resume::At(at, header)) => (at, header.base_offset as u64),
                    // Nothing valid follows: the offsets up to the next segment (or, in the
                    // last one, up to the recovery point) were in the damaged bytes.
                    Some(Resume::End) | None => {
                        (file_bytes, next_base_offset.unwrap_or(recovery_point))
                    }
                };
                // The cache holds only batches after the last damage: a read from memory
                // cannot step over damaged offsets as a read from the file stops at them.
                tail.borrow_mut().clear();
                segment.note_damage(DamagedRange {
                    segment_base_offset: base_offset,
                    position,
                    length_bytes: end_position - position,
                    start_offset: offset,
                    end_offset: end_offset.max(offset),
                    reason,
                });
            }
        }
        if is_last {
            // The last partial page, which the next write repeats: the scan just read it.
            let page_start = segment::align_down(segment.appended_bytes);
            let partial = (segment.appended_bytes - page_start) as usize;
            if partial > 0 {
                let page = scanner
                    .bytes_at(page_start, partial)
                    .await?
                    .ok_or_else(|| {
                        LogError::Corrupt(format!(
                            "segment file is shorter than its {} scanned bytes",
                            segment.appended_bytes
                        ))
                    })?;
                segment.tail_page = page.to_vec();
            }
        }
        drop(scanner);
        if segment.appended_bytes == 0 && !is_last {
            // A file that never received a batch: nothing to keep (if offsets were meant to be
            // in it, the next segment does not follow on and they are reported as damage).
            drop((files, handle));
            *directory_changed |= remove_segment_files(dir, base_offset)?;
            continue;
        }
        if !segment.damaged.is_empty() {
            // No index files for a damaged segment: the next open scans it in full again.
            *directory_changed |= damage::remove_index_files(dir, base_offset)?;
        } else if rebuilt && !is_last {
            write_whole_file(
                &segment::offset_index_path(dir, base_offset),
                &segment.offset_index.encode(),
            )
            .await?;
            write_whole_file(
                &segment::time_index_path(dir, base_offset),
                &segment.time_index.encode(),
            )
            .await?;
        }
        let loaded = load_transaction_index(
            dir,
            listing,
            base_offset,
            next_base_offset.unwrap_or(u64::MAX),
        )?;
        // A sealed segment's `.txnindex` is rebuilt when it is lost (every seal writes one) or
        // does not check out, or when the segment's other indexes were (a crash between the
        // segment and its indexes, or a cleaner's swap finished here): Kafka's recovery of a
        // segment. The last segment's entries come from its file and the scan, unless the file
        // is damaged.
        match loaded {
            TransactionIndex::Loaded(entries) => {
                segment.aborted_transactions = entries;
                // Not for damage: a damaged segment keeps no other indexes, so it is scanned
                // in full at every open; its `.txnindex` is there all the same.
                if rebuilt && !is_last && segment.damaged.is_empty() {
                    transaction_indexes_lost.push(base_offset);
                }
            }
            TransactionIndex::Missing if is_last => {}
            TransactionIndex::Missing | TransactionIndex::Damaged => {
                transaction_indexes_lost.push(base_offset);
            }
        }
        segment.written_bytes = segment.appended_bytes;
        segment.files = Some(handle);
        segment.sealed = true;
        segments.insert(base_offset, segment);
    }
    rebuild_transaction_indexes(
        dir,
        &mut segments,
        &transaction_indexes_lost,
        ProducerLimits::of(config),
        now_ms,
    )
    .await?;
    *directory_changed |= !transaction_indexes_lost.is_empty();
    Ok(segments)
}

/// What a segment's `.txnindex` file held at the open.
enum TransactionIndex {
    Loaded(Vec<AbortedTransaction>),
    Missing,
    /// It does not check out (reported): it is rebuilt.
    Damaged,
}

/// The segment's aborted transactions from its `.txnindex` file (written when it was sealed or
/// the log closed).
fn load_transaction_index(
    dir: &Path,
    listing: &Listing,
    base_offset: u64,
    end_offset: u64,
) -> Result<TransactionIndex, LogError> {
    let path = transactions::transaction_index_path(dir, base_offset);
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return Ok(TransactionIndex::Missing);
    };
    let Some(bytes) = listing.read(dir, name, "reading a transaction index")? else {
        return Ok(TransactionIndex::Missing);
    };
    Ok(
        match transactions::decode_index(&bytes, base_offset, end_offset) {
            Ok(entries) => TransactionIndex::Loaded(entries),
            Err(reason) => {
                eprintln!(
                    "ferrite: rebuilding the transaction index {}: {reason}",
                    path.display()
                );
                TransactionIndex::Damaged
            }
        },
    )
}

/// Rebuilds the `.txnindex` of the segments in `lost` (base offsets, in order) from their
/// markers, with the producer state at each one's start: a replay of the log from its first
/// segment up to the last of them (`producer_replay.rs`), written back whole.
async fn rebuild_transaction_indexes(
    dir: &Path,
    segments: &mut Segments,
    lost: &[u64],
    limits: ProducerLimits,
    now_ms: i64,
) -> Result<(), LogError> {
    let Some(&last_lost) = lost.last() else {
        return Ok(());
    };
    let offset_end = segments
        .range(last_lost..)
        .next()
        .map_or(u64::MAX, |(_, segment)| segment.end_offset);
    let (_, aborted) = replay_from_log_start(segments, offset_end, limits, now_ms).await?;
    for &base_offset in lost {
        let entries: Vec<AbortedTransaction> = aborted
            .iter()
            .filter(|(segment_base, _)| *segment_base == base_offset)
            .map(|(_, entry)| *entry)
            .collect();
        write_whole_file(
            &transactions::transaction_index_path(dir, base_offset),
            &transactions::encode_index(&entries),
        )
        .await?;
        if let Some(segment) = segments.get_mut(&base_offset) {
            segment.aborted_transactions = entries;
        }
    }
    Ok(())
}

/// The producer table and the aborted transactions of every batch of `segments` below
/// `offset_end`, replayed from the first segment (`producer_replay.rs`).
async fn replay_from_log_start(
    segments: &Segments,
    offset_end: u64,
    limits: ProducerLimits,
    now_ms: i64,
) -> Result<(ProducerTable, Vec<(u64, AbortedTransaction)>), LogError> {
    let mut table = ProducerTable::new(limits);
    let Some(&first_base) = segments.keys().next() else {
        return Ok((table, Vec::new()));
    };
    let replayed: Vec<ReplayedSegment> = segments
        .range(..offset_end)
        .filter_map(|(_, segment)| ReplayedSegment::of(segment, first_base))
        .collect();
    let aborted = producer_replay::replay(
        &replayed,
        first_base,
        offset_end,
        &mut table,
        now_ms,
        RECOVERY_WINDOW_BYTES,
    )
    .await?;
    Ok((table, aborted))
}

/// The last batches of the last segment, as recovery scans them (the last `bytes_max` bytes of
/// them, after any damage): they go into the tail cache, so consumers that followed the tail
/// before a restart read from memory after it instead of from the disk, one partition after
/// another. The bytes were read by the scan anyway.
struct TailSeed {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
    bytes_max: usize,
}

impl TailSeed {
    fn push(&mut self, header: &BatchHeader, bytes: &[u8]) {
        self.batches.push_back(CachedBatch {
            base_offset: header.base_offset as u64,
            last_offset: header.last_offset() as u64,
            bytes: Bytes::copy_from_slice(bytes),
        });
        self.bytes += bytes.len();
        while self.bytes > self.bytes_max {
            let Some(oldest) = self.batches.pop_front() else {
                break;
            };
            self.bytes -= oldest.bytes.len();
        }
    }

    fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// The batches, if they are the log's last ones (ending at `log_end_offset`, none below
    /// `log_start_offset`); none otherwise: the cache must hold a suffix of the log, and a
    /// seed that recovery's later steps cut short or moved past is not one.
    fn suffix_ending_at(
        mut self,
        log_start_offset: u64,
        log_end_offset: u64,
    ) -> VecDeque<CachedBatch> {
        self.batches
            .retain(|batch| batch.base_offset >= log_start_offset);
        match self.batches.back() {
            Some(last) if last.last_offset + 1 == log_end_offset => self.batches,
            _ => VecDeque::new(),
        }
    }
}

/// Joins `previous` to the segment starting at `base_offset`: offsets between its last batch
/// and that base were compacted away below the compacted end and still belong to it; above
/// it they have no segment file (lost), which is damage, not the log's end.
fn follow_on(
    previous: &mut Segment,
    base_offset: u64,
    gaps_end_offset: u64,
) -> Result<(), LogError> {
    if previous.end_offset > base_offset {
        return Err(LogError::Corrupt(format!(
            "segment {} holds offsets up to {}, past the next segment's base {base_offset}",
            previous.base_offset, previous.end_offset
        )));
    }
    if previous.end_offset < base_offset && base_offset > gaps_end_offset {
        previous.note_damage(DamagedRange {
            segment_base_offset: previous.base_offset,
            position: previous.appended_bytes,
            length_bytes: 0,
            start_offset: previous.end_offset,
            end_offset: base_offset,
            reason: "no segment file holds them (a segment file is missing)".into(),
        });
    }
    previous.end_offset = base_offset;
    Ok(())
}

/// Both index files of a segment, if listed and plausible for a log of `file_bytes`.
fn load_indexes(
    dir: &Path,
    listing: &Listing,
    base_offset: u64,
    file_bytes: u64,
) -> Option<(OffsetIndex, TimeIndex)> {
    let offset_path = segment::offset_index_path(dir, base_offset);
    let time_path = segment::time_index_path(dir, base_offset);
    if !listing.has_path(&offset_path) || !listing.has_path(&time_path) {
        return None;
    }
    let offset_bytes = std::fs::read(offset_path).ok()?;
    let time_bytes = std::fs::read(time_path).ok()?;
    let offset_index = OffsetIndex::decode(&offset_bytes, file_bytes)?;
    let time_index = TimeIndex::decode(&time_bytes, u32::MAX)?;
    if offset_index.entries().is_empty() && file_bytes > 0 {
        return None;
    }
    Some((offset_index, time_index))
}
