//! Damage in the middle of a log: bytes that were durable once and no longer hold valid
//! batches (a flipped bit on the device, a torn sector, a segment file lost). Unlike a torn
//! tail after a crash (the unsynced end of the last segment, which recovery cuts off), such
//! damage is never cut with everything after it: the batches after it were acknowledged too.
//!
//! A [`DamagedRange`] is the offsets from the end of the last good batch before the damage to
//! the first good batch after it (the next segment's base, or the recovery point, when none
//! follows). The log keeps every other batch, refuses reads of the range with
//! [`LogError::Damaged`] (Kafka's CORRUPT_MESSAGE), says so on stderr once per range, and counts
//! it for `/metrics`. What happens next is someone else's decision: a replicated partition
//! fetches the range again from its leader (it truncates there); a partition with no other
//! copy waits for an operator, who can drop the range with [`repair`] (`ferrite repair-log`).
//!
//! Damage is found when the log is opened (see `recovery`) or when a read meets it (a batch
//! header that does not parse, or a batch whose CRC-32C fails when read for a follower). A
//! segment with damage keeps no index files on disk, so every later open scans it in full and
//! finds the damage again. Found once, a range is thus reported at every start until it is gone.
//!
//! How a range is found: the damaged batch's own length field leads past it if that batch is valid
//! (only its CRC failed), else the bytes are searched for the next valid batch (a plausible header
//! with offsets in range, then its CRC); with none, the range runs to the next segment's base (or,
//! in the last segment, to the recovery point). The range is noted in its segment: reads of it
//! fail, reads around it stop before it or start after it. The report on stderr names the
//! partition, the segment file, the bytes, the offsets and what was wrong; the count is
//! `damage_found` (`ferrite_partition_damage_found_total` in `/metrics`).
//!
//! Why CORRUPT_MESSAGE: clients hand it to the application, as Kafka answers a corrupt batch read;
//! on KAFKA_STORAGE_ERROR librdkafka retries in silence (the mapping is `net::errors`).
//!
//! A range goes by truncation (a replica fetching the range again truncates at it), by retention or
//! `DeleteRecords` past it, or by [`repair`] (broker stopped): the damaged segments are rewritten
//! without the damaged bytes (temporary file, `fdatasync`, rename, directory `fsync`) after
//! `compacted-end-offset` is raised past the ranges, so they read as compaction's gaps (a reader is
//! given the next batch); a range that ran to the end of the last segment keeps its offsets used,
//! with an empty segment file at its end, so the log end never moves back.

use std::path::Path;
use std::rc::Rc;

use super::read::{walk_to_batch, DamageAt, Walk};
use super::{PartitionLog, Shared, COMPACTED_END_OFFSET_FILE};
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::durable_file;
use crate::error::LogError;
use crate::segment::{self, Resume, SegmentFile, SegmentScanner, RECOVERY_WINDOW_BYTES};

/// Offsets of a partition whose bytes on disk are damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// The segment holding the damaged bytes (for a missing segment file: the one before it).
    pub segment_base_offset: u64,
    /// Where the damaged bytes start in that segment's file.
    pub position: u64,
    /// How many bytes are damaged (0: the offsets' segment file is missing).
    pub length_bytes: u64,
    /// The first offset the damaged bytes held: the end of the last valid batch before them.
    pub start_offset: u64,
    /// One past the last: the first offset of the next valid batch (or of the next segment).
    pub end_offset: u64,
    /// What was wrong, for people.
    pub reason: String,
}

impl DamagedRange {
    pub fn end_position(&self) -> u64 {
        self.position + self.length_bytes
    }

    pub fn holds(&self, offset: u64) -> bool {
        (self.start_offset..self.end_offset).contains(&offset)
    }

    pub fn offsets(&self) -> u64 {
        self.end_offset - self.start_offset
    }

    /// The error a read of the range gets.
    pub fn error(&self) -> LogError {
        LogError::Damaged {
            start_offset: self.start_offset,
            end_offset: self.end_offset,
            reason: self.reason.clone(),
        }
    }
}

impl std::fmt::Display for DamagedRange {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "offsets {}..{} (segment {}, bytes {}..{}): {}",
            self.start_offset,
            self.end_offset,
            segment::log_path(Path::new(""), self.segment_base_offset).display(),
            self.position,
            self.end_position(),
            self.reason
        )
    }
}

/// Says on stderr that `range` of the partition in `dir` is damaged, and what happens to it.
pub(super) fn report(dir: &Path, range: &DamagedRange, found: &str) {
    let partition = dir.file_name().map_or_else(
        || dir.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    eprintln!(
        "ferrite: partition {partition}: damaged data found {found}: {range}; those offsets are \
         refused to readers (CORRUPT_MESSAGE) until a replica fetches them again from its \
         leader or an operator drops them with `ferrite repair-log`; every other offset stays \
         readable"
    );
}

impl Shared {
    /// Records damage a read met in the segment at `segment_base_offset` (whose files are
    /// `files`): where valid batches resume after it decides the range. Reports it once, and
    /// removes the segment's index files so that the next open scans the segment in full and
    /// finds the damage again. Returns the range.
    pub(super) async fn record_damage(
        &self,
        segment_base_offset: u64,
        files: &Rc<SegmentFile>,
        damage: DamageAt,
    ) -> Result<DamagedRange, LogError> {
        let DamageAt {
            position,
            expected_offset: offset,
            reason,
        } = damage;
        let (limit_bytes, next_base_offset, written_end_offset) = {
            let state = self.state.borrow();
            let segment = state
                .segments
                .get(&segment_base_offset)
                .filter(|segment| segment.files.as_ref().is_some_and(|f| Rc::ptr_eq(f, files)))
                .ok_or(LogError::Closed)?;
            let next_base_offset = state
                .segments
                .range(segment_base_offset + 1..)
                .next()
                .map(|(&base, _)| base);
            (
                segment.written_bytes,
                next_base_offset,
                state.segment_written_end_offset,
            )
        };
        let batch_bytes_max = self.config().unflushed_bytes_max;
        let open = files.get().await?;
        let mut scanner = SegmentScanner::new(&open.dma, limit_bytes, RECOVERY_WINDOW_BYTES);
        let resume = scanner
            .resume_after_damage(position, offset, next_base_offset, batch_bytes_max)
            .await?;
        let (end_position, end_offset) = match resume {
            Some(Resume::At(at, header)) => (at, header.base_offset as u64),
            Some(Resume::End) | None => (
                limit_bytes,
                next_base_offset.unwrap_or(written_end_offset).max(offset),
            ),
        };
        let range = DamagedRange {
            segment_base_offset,
            position,
            length_bytes: end_position - position,
            start_offset: offset,
            end_offset,
            reason,
        };
        let added = {
            let mut state = self.state.borrow_mut();
            let added = state
                .segments
                .get_mut(&segment_base_offset)
                .filter(|segment| segment.files.as_ref().is_some_and(|f| Rc::ptr_eq(f, files)))
                .is_some_and(|segment| segment.add_damage(range.clone()));
            if added {
                state.damage_found += 1;
            }
            added
        };
        if added {
            report(&self.dir, &range, "on read");
            self.before_change().await?;
            remove_index_files(&self.dir, segment_base_offset)?;
        }
        Ok(range)
    }

    /// [`Shared::record_damage`] for the batch holding `offset`, wherever it is: a read that
    /// checked batches after the fact (their CRC) knows only their offsets.
    pub(super) async fn record_damage_at_offset(
        &self,
        offset: u64,
        reason: String,
    ) -> Result<DamagedRange, LogError> {
        let (segment_base_offset, files, scan_from, scan_from_offset, limit_bytes) = {
            let state = self.state.borrow();
            if let Some(range) = state.damage_holding(offset) {
                return Ok(range.clone());
            }
            let segment = state.segment_holding(offset);
            let files = segment.files.clone().ok_or(LogError::Closed)?;
            let (scan_from, scan_from_offset, limit_bytes) = segment.walk_bounds(offset);
            (
                segment.base_offset,
                files,
                scan_from,
                scan_from_offset,
                limit_bytes,
            )
        };
        let open = files.get().await?;
        let mut scanner = SegmentScanner::new(&open.dma, limit_bytes, self.scan_window());
        let walk = walk_to_batch(
            &mut scanner,
            scan_from,
            scan_from_offset,
            limit_bytes,
            offset,
        )
        .await?;
        let damage = match walk {
            Walk::Found(position, header) => DamageAt {
                position,
                expected_offset: header.base_offset as u64,
                reason,
            },
            Walk::Damaged(damage) => damage,
            Walk::End => {
                return Err(LogError::Corrupt(format!(
                    "no batch holds offset {offset}, which a read returned"
                )))
            }
        };
        self.record_damage(segment_base_offset, &files, damage)
            .await
    }
}

impl PartitionLog {
    /// The damaged ranges of the log at or after its start, in offset order.
    pub fn damaged_ranges(&self) -> Vec<DamagedRange> {
        let state = self.shared.state.borrow();
        if state.damage_found == 0 {
            // The common case, asked about at every replica tick: no walk over the segments.
            return Vec::new();
        }
        state
            .segments
            .values()
            .flat_map(|segment| segment.damaged.iter())
            .filter(|range| range.end_offset > state.log_start_offset)
            .cloned()
            .collect()
    }

    /// The first offset readers are refused because its bytes are damaged.
    pub fn first_damaged_offset(&self) -> Option<u64> {
        let log_start_offset = self.log_start_offset();
        self.damaged_ranges()
            .first()
            .map(|range| range.start_offset.max(log_start_offset))
    }

    /// How many offsets readers are refused because their bytes are damaged.
    pub fn damaged_offsets(&self) -> u64 {
        let log_start_offset = self.log_start_offset();
        self.damaged_ranges()
            .iter()
            .map(|range| range.end_offset - range.start_offset.max(log_start_offset))
            .sum()
    }

    /// Damaged ranges found since the log was opened (when it was opened, or by reads),
    /// including those since truncated away (a replica that fetched them again).
    pub fn damage_found(&self) -> u64 {
        self.shared.state.borrow().damage_found
    }
}

/// Removes a segment's index files (those that exist); whether there were any.
pub(super) fn remove_index_files(dir: &Path, base_offset: u64) -> Result<bool, LogError> {
    super::state_files::remove_existing(
        &[
            segment::offset_index_path(dir, base_offset),
            segment::time_index_path(dir, base_offset),
        ],
        "deleting a segment's index",
    )
}

/// Drops the damaged ranges of the partition log in `dir` for good: the operator's decision
/// that their offsets are lost (`ferrite repair-log`). The log must not be open anywhere else
/// (the broker stopped). Opens the log (finding the damage as the broker would), then, for each
/// damaged segment, writes a copy without the damaged bytes and puts it in the segment's place
/// (temporary file, `fdatasync`, rename, directory `fsync`) after recording the ranges as gaps
/// in `compacted-end-offset`, so they read as compaction's gaps do: a consumer is given the
/// next batch after them. A damaged range at the very end of the last segment keeps its
/// offsets used through an empty segment at its end. Returns the ranges dropped; a crash
/// midway leaves each segment either as it was or repaired, and a second run finishes.
pub async fn repair(
    dir: &Path,
    config: LogConfig,
    clock: Rc<dyn Clock>,
) -> Result<Vec<DamagedRange>, LogError> {
    let log = PartitionLog::open(dir, config.clone(), clock.clone()).await?;
    let damaged = log.damaged_ranges();
    let dir = log.directory().to_path_buf();
    let segment_bases = log.segment_base_offsets();
    let compacted_end_offset = log.shared.state.borrow().gaps_allowed_below;
    log.close().await?;
    let Some(gaps_end_offset) = damaged.iter().map(|range| range.end_offset).max() else {
        return Ok(damaged);
    };
    if gaps_end_offset > compacted_end_offset {
        durable_file::replace_file_durably(
            &dir,
            COMPACTED_END_OFFSET_FILE,
            gaps_end_offset.to_string().as_bytes(),
        )
        .map_err(|error| LogError::io("recording the dropped ranges as gaps", error))?;
    }
    let last_base_offset = segment_bases.last().copied();
    for &base_offset in &segment_bases {
        let ranges: Vec<&DamagedRange> = damaged
            .iter()
            .filter(|range| range.segment_base_offset == base_offset && range.length_bytes > 0)
            .collect();
        if ranges.is_empty() {
            continue;
        }
        let file_bytes = copy_without(&dir, base_offset, &ranges)
            .map_err(|error| LogError::io("rewriting a damaged segment", error))?;
        remove_index_files(&dir, base_offset)?;
        let end_offset = ranges
            .last()
            .filter(|range| range.end_position() == file_bytes)
            .map(|range| range.end_offset);
        if let Some(end_offset) = end_offset.filter(|_| Some(base_offset) == last_base_offset) {
            // Nothing follows the dropped bytes: an empty segment at their end keeps the log's
            // end where it was, so their offsets are never handed out again.
            std::fs::File::create(segment::log_path(&dir, end_offset))
                .and_then(|file| file.sync_all())
                .and_then(|()| std::fs::File::open(&dir)?.sync_all())
                .map_err(|error| {
                    LogError::io("creating the segment after a dropped range", error)
                })?;
        }
    }
    // Open once more, so that what is left is checked and indexed as the broker will see it.
    let log = PartitionLog::open(&dir, config, clock).await?;
    let left = log.damaged_ranges();
    log.close().await?;
    if let Some(range) = left.first() {
        return Err(LogError::Corrupt(format!(
            "damage is left after the repair: {range}"
        )));
    }
    Ok(damaged)
}

/// Replaces the segment file at `base_offset` with a copy that leaves out the bytes of
/// `ranges` (in position order): written to a temporary file, synced, renamed over the
/// segment, directory synced. Returns the old file's size.
fn copy_without(dir: &Path, base_offset: u64, ranges: &[&DamagedRange]) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let path = segment::log_path(dir, base_offset);
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .expect("a segment's file name is its base offset, in ASCII");
    let mut source = std::fs::File::open(&path)?;
    let file_bytes = source.metadata()?.len();
    durable_file::replace_durably_with(dir, name, |copy| {
        let mut from = 0u64;
        let kept = ranges
            .iter()
            .map(|range| (range.position, range.end_position()))
            .chain([(file_bytes, file_bytes)]);
        for (damaged_from, damaged_to) in kept {
            source.seek(SeekFrom::Start(from))?;
            std::io::copy(&mut (&mut source).take(damaged_from - from), copy)?;
            from = damaged_to;
        }
        Ok(())
    })?;
    Ok(file_bytes)
}
