//! Reads: whole batches from an offset, as memory (the tail cache) or as a file range the
//! network layer can `splice`; and the offset for a timestamp.
//!
//! A file read costs at most a few direct-I/O reads of `index_interval_bytes` each: one to find
//! the batch holding the offset (the sparse index puts it within one interval of an entry), and
//! one to find how far whole batches fit the byte limit (an index entry near the limit, then
//! the headers after it). The data itself is not read at all when it is spliced.
//!
//! Only bytes below the active segment's last partial page are spliced from the page cache; that
//! page is read with direct I/O (why: `flush.rs`, "The durable page").

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::{PartitionLog, Shared};
use crate::batch::{self, BatchHeader};
use crate::error::LogError;
use crate::resources::ReadDescriptor;
use crate::segment::{align_down, SegmentFile, SegmentFiles, SegmentScanner};

/// The answer to a search by timestamp: the first record at or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAtTime {
    pub offset: u64,
    /// That record's timestamp (for a compressed batch, the batch's first timestamp).
    pub timestamp_ms: i64,
}

/// The result of a read: whole batches, and the offset a follow-up read would start at.
#[derive(Debug)]
pub struct ReadSlice {
    pub data: ReadData,
    /// One past the last offset returned (or further, up to the next batch, when compaction
    /// left a gap there); the requested offset when nothing was returned.
    pub offset_next: u64,
}

#[derive(Debug)]
pub enum ReadData {
    /// Nothing at or after the offset below the requested end.
    Empty,
    /// Batches from memory, in order.
    Memory(Vec<Bytes>),
    /// A byte range of a segment file holding whole batches.
    File(FileRange),
}

/// Whole batches in a segment file. Holds the file open (the shard's file cache does not close
/// it meanwhile), so the range stays readable even if retention deletes the segment.
pub struct FileRange {
    /// Keeps the cache from closing the file under the range.
    _files: Rc<SegmentFiles>,
    descriptor: Arc<ReadDescriptor>,
    pub position: u64,
    pub length: u64,
}

impl std::fmt::Debug for FileRange {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FileRange")
            .field("position", &self.position)
            .field("length", &self.length)
            .finish()
    }
}

impl FileRange {
    /// A buffered descriptor of the segment file, for `splice(2)` into a socket.
    /// Valid while this `FileRange` lives.
    pub fn raw_fd(&self) -> RawFd {
        self.descriptor.as_raw_fd()
    }

    /// The segment file's buffered descriptor, shared: lets the range cross to another thread
    /// (shard) and still be spliced, counted in this shard's open files (and kept
    /// open by the cache) until the last holder drops it.
    pub fn descriptor(&self) -> Arc<ReadDescriptor> {
        self.descriptor.clone()
    }

    /// Copies the range into memory (tools and tests; the broker splices it).
    pub fn read_to_vec(&self) -> Result<Vec<u8>, LogError> {
        let mut bytes = vec![0u8; self.length as usize];
        self.descriptor
            .file()
            .read_exact_at(&mut bytes, self.position)
            .map_err(|error| LogError::io("reading a file range", error))?;
        Ok(bytes)
    }
}

impl ReadData {
    /// The batches' bytes, concatenated (tools and tests).
    pub fn to_vec(&self) -> Result<Vec<u8>, LogError> {
        match self {
            ReadData::Empty => Ok(Vec::new()),
            ReadData::Memory(batches) => Ok(batches.concat()),
            ReadData::File(range) => range.read_to_vec(),
        }
    }
}

/// Where a file read starts: the segment, and the position of the index entry to scan from.
struct FilePlan {
    files: Rc<SegmentFile>,
    segment_base_offset: u64,
    scan_from: u64,
    /// The offset of the batch at `scan_from`.
    scan_from_offset: u64,
    /// Where the readable bytes end: the written end, or the next damaged range.
    readable_bytes: u64,
    written_bytes: u64,
    /// Below this, the file's pages are never rewritten, so the page cache (and `splice`)
    /// may hold them; the active segment's last partial page is read with direct I/O instead.
    sendable_bytes: u64,
    /// Where to look next when compaction left nothing at or after the offset in this one.
    next_segment_base_offset: Option<u64>,
}

impl PartitionLog {
    /// Whole batches starting with the one holding `offset` (or the first after it, when
    /// compaction removed the records there), as many as fit in `bytes_max`
    /// (at least one, as Kafka returns an oversized first batch) and end below `offset_end`
    /// (the caller's visibility bound: the high-water mark). `OffsetOutOfRange` outside
    /// `[log_start_offset, log_end_offset]`.
    pub async fn read(
        &self,
        offset: u64,
        bytes_max: usize,
        offset_end: u64,
    ) -> Result<ReadSlice, LogError> {
        loop {
            match self.read_once(offset, bytes_max, offset_end).await? {
                Ok(slice) => return Ok(slice),
                Err((segment_base_offset, files, damage)) => {
                    // Damage nobody knew of: recorded, then the read is planned again around it.
                    let range = self
                        .shared
                        .record_damage(segment_base_offset, &files, damage)
                        .await?;
                    if range.holds(offset) {
                        return Err(range.error());
                    }
                }
            }
        }
    }

    /// [`PartitionLog::read`], or the damage the read met on its way to `offset`.
    async fn read_once(
        &self,
        offset: u64,
        bytes_max: usize,
        offset_end: u64,
    ) -> Result<Result<ReadSlice, DamageMet>, LogError> {
        let shared = &self.shared;
        let empty = ReadSlice {
            data: ReadData::Empty,
            offset_next: offset,
        };
        self.shared.state.borrow().check_in_range(offset)?;
        // Compaction leaves gaps: an offset in one is served from the next batch after it,
        // which may be in a later segment (at most one step per segment).
        let mut from_offset = offset;
        let (plan, open, start, first) = loop {
            let plan = {
                let state = shared.state.borrow();
                // Again on a new plan: a segment planned for may have been deleted since.
                state.check_in_range(from_offset)?;
                let offset_end = offset_end.min(state.log_end_offset);
                if from_offset >= offset_end {
                    return Ok(Ok(empty));
                }
                if let Some(range) = state.damage_holding(from_offset) {
                    return Err(range.error());
                }
                if state.tail_cache.covers(from_offset) {
                    let batches = state.tail_cache.read(from_offset, bytes_max, offset_end);
                    return Ok(Ok(match batches.last() {
                        None => empty,
                        Some(last) => ReadSlice {
                            offset_next: last.last_offset + 1,
                            data: ReadData::Memory(batches.into_iter().map(|b| b.bytes).collect()),
                        },
                    }));
                }
                let segment = state.segment_holding(from_offset);
                let files = segment.files.clone().ok_or_else(|| {
                    LogError::Corrupt(format!(
                        "offset {from_offset} is neither cached nor in a segment file"
                    ))
                })?;
                let (scan_from, scan_from_offset, readable_bytes) =
                    segment.walk_bounds(from_offset);
                FilePlan {
                    files,
                    segment_base_offset: segment.base_offset,
                    scan_from,
                    scan_from_offset,
                    readable_bytes,
                    written_bytes: segment.written_bytes,
                    sendable_bytes: if segment.sealed {
                        segment.written_bytes
                    } else {
                        align_down(segment.written_bytes)
                    },
                    next_segment_base_offset: state
                        .segments
                        .range(segment.base_offset + 1..)
                        .next()
                        .map(|(&base, _)| base),
                }
            };
            let Some(open) = shared
                .open_planned(plan.segment_base_offset, &plan.files)
                .await?
            else {
                continue;
            };
            let mut scanner =
                SegmentScanner::new(&open.dma, plan.readable_bytes, shared.scan_window());
            let walk = walk_to_batch(
                &mut scanner,
                plan.scan_from,
                plan.scan_from_offset,
                plan.readable_bytes,
                from_offset,
            )
            .await?;
            match (walk, plan.next_segment_base_offset) {
                (Walk::Found(start, first), _) => break (plan, open, start, first),
                (Walk::Damaged(damage), _) => {
                    return Ok(Err((plan.segment_base_offset, plan.files, damage)))
                }
                // The offset is in a compaction gap that runs into damaged bytes.
                (Walk::End, _) if plan.readable_bytes < plan.written_bytes => {
                    let state = shared.state.borrow();
                    let damaged = state
                        .segments
                        .get(&plan.segment_base_offset)
                        .and_then(|segment| {
                            segment
                                .damaged
                                .iter()
                                .find(|range| range.position == plan.readable_bytes)
                        })
                        .map(|range| range.error());
                    return Err(damaged.unwrap_or(LogError::Closed));
                }
                (Walk::End, Some(next_base)) => from_offset = next_base,
                (Walk::End, None) => return Ok(Ok(empty)),
            }
        };
        let offset_end = offset_end.min(self.log_end_offset());
        let window = shared.scan_window();
        let mut scanner = SegmentScanner::new(&open.dma, plan.readable_bytes, window);
        if first.last_offset() as u64 >= offset_end {
            return Ok(Ok(empty));
        }
        let mut end = start + u64::from(first.size_bytes);
        let mut offset_next = first.last_offset() as u64 + 1;
        // Jump towards the byte limit with the index, then walk the headers after the jump.
        let limit = start.saturating_add(bytes_max as u64);
        // Only while the segment is still the one planned for: the cleaner may have swapped in
        // a rewritten one with the same base, whose index describes another file.
        if let Some(segment) = shared
            .state
            .borrow()
            .segments
            .get(&plan.segment_base_offset)
            .filter(|segment| {
                segment
                    .files
                    .as_ref()
                    .is_some_and(|files| Rc::ptr_eq(files, &plan.files))
            })
        {
            // Not past the readable bytes (damage starts there) nor the sendable ones: the
            // index also has entries for batches appended but not yet in the file, and a jump
            // past the last sendable batch would leave nothing to send from the file.
            let limit_u32 = u32::try_from(limit.min(plan.readable_bytes).min(plan.sendable_bytes))
                .unwrap_or(u32::MAX);
            if let Some(entry) = segment.offset_index.floor_by_position(limit_u32) {
                let entry_offset = plan.segment_base_offset + u64::from(entry.relative_offset);
                let entry_position = u64::from(entry.position);
                if entry_position > end && entry_offset <= offset_end {
                    end = entry_position;
                    offset_next = entry_offset;
                }
            }
        }
        // The last whole batch that ends within the sendable bytes, so that a read reaching
        // into the active segment's partial last page still sends its bulk from the file.
        let mut sendable_end = (end <= plan.sendable_bytes).then_some((end, offset_next));
        while end < plan.readable_bytes {
            let Some(header) = scanner.header_at(end).await? else {
                break;
            };
            let batch_end = end + u64::from(header.size_bytes);
            if header.last_offset() as u64 >= offset_end || batch_end > limit {
                break;
            }
            end = batch_end;
            offset_next = header.last_offset() as u64 + 1;
            if end <= plan.sendable_bytes {
                sendable_end = Some((end, offset_next));
            }
        }
        if end > plan.sendable_bytes {
            if let Some((file_end, file_offset_next)) = sendable_end {
                end = file_end;
                offset_next = file_offset_next;
            }
        }
        let data = if end <= plan.sendable_bytes {
            ReadData::File(FileRange {
                descriptor: open.read_descriptor()?,
                _files: open.clone(),
                position: start,
                length: end - start,
            })
        } else {
            let bytes = scanner
                .bytes_at(start, (end - start) as usize)
                .await?
                .ok_or_else(|| LogError::Corrupt("written range shorter than indexed".into()))?;
            ReadData::Memory(vec![Bytes::copy_from_slice(bytes)])
        };
        Ok(Ok(ReadSlice { data, offset_next }))
    }

    /// [`PartitionLog::read`] for a follower: the batches' bytes, each batch's CRC-32C checked
    /// (a client checks its own; a follower would store what it is sent). A batch that fails
    /// is recorded as damage and ends the read; a read that starts with one fails with
    /// [`LogError::Damaged`].
    pub async fn read_verified(
        &self,
        offset: u64,
        bytes_max: usize,
        offset_end: u64,
    ) -> Result<Vec<u8>, LogError> {
        let mut bytes = self
            .read(offset, bytes_max, offset_end)
            .await?
            .data
            .to_vec()?;
        let mut valid = 0;
        while valid < bytes.len() {
            let rest = &bytes[valid..];
            let header = BatchHeader::parse(rest)
                .filter(|header| header.size_bytes as usize <= rest.len())
                .ok_or_else(|| LogError::Corrupt("a read returned a partial batch".into()))?;
            let size = header.size_bytes as usize;
            if let Err(error) = batch::validate_stored(&rest[..size], usize::MAX) {
                let range = self
                    .shared
                    .record_damage_at_offset(header.base_offset.max(0) as u64, error.to_string())
                    .await?;
                if valid == 0 {
                    return Err(range.error());
                }
                break;
            }
            valid += size;
        }
        bytes.truncate(valid);
        Ok(bytes)
    }

    /// The first offset whose record timestamp is at or after `timestamp_ms` (Kafka's
    /// ListOffsets by time), or `None` when every record is older. Exact for uncompressed
    /// batches; for a compressed batch it is the batch's first offset, since finding the
    /// record would mean decompressing it.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<OffsetAtTime>, LogError> {
        let shared = &self.shared;
        let (candidates, written_end_offset, log_start_offset) = {
            let state = shared.state.borrow();
            let candidates: Vec<Candidate> = state
                .segments
                .values()
                .filter(|segment| {
                    segment
                        .max_timestamp_ms
                        .is_some_and(|newest_ms| newest_ms >= timestamp_ms)
                })
                .filter_map(|segment| {
                    let files = segment.files.clone()?;
                    let from_relative = segment
                        .time_index
                        .last_before(timestamp_ms)
                        .map_or(0, |entry| entry.relative_offset);
                    let scan_from = segment
                        .offset_index
                        .floor_by_offset(from_relative)
                        .map_or(0, |entry| u64::from(entry.position));
                    let damaged = segment
                        .damaged
                        .iter()
                        .map(|range| (range.position, range.end_position()))
                        .collect();
                    Some((
                        segment.base_offset,
                        files,
                        scan_from,
                        segment.written_bytes,
                        damaged,
                    ))
                })
                .collect();
            (
                candidates,
                state.segment_written_end_offset,
                state.log_start_offset,
            )
        };
        let answer = |bytes: &[u8], header: &BatchHeader| -> OffsetAtTime {
            // A compressed batch is answered with its first record (its base offset and first
            // timestamp), as far as we can tell without decompressing it.
            let (offset, timestamp_ms) = batch::first_record_at_or_after(bytes, timestamp_ms)
                .unwrap_or((header.base_offset, header.base_timestamp));
            OffsetAtTime {
                offset: (offset as u64).max(log_start_offset),
                timestamp_ms,
            }
        };
        for (base_offset, files, scan_from, written_bytes, damaged) in candidates {
            // A segment deleted since (retention) holds nothing at or after the log start.
            let Some(files) = shared.open_planned(base_offset, &files).await? else {
                continue;
            };
            let mut scanner = SegmentScanner::new(&files.dma, written_bytes, shared.scan_window());
            let mut position = scan_from;
            loop {
                // Damaged bytes are stepped over (the index may point into them).
                if let Some(&(_, end)) = damaged
                    .iter()
                    .find(|(from, to)| (*from..*to).contains(&position))
                {
                    position = end;
                    continue;
                }
                let Some(header) = scanner.header_at(position).await? else {
                    break;
                };
                if header.max_timestamp >= timestamp_ms
                    && header.last_offset() as u64 >= log_start_offset
                {
                    let bytes = scanner
                        .bytes_at(position, header.size_bytes as usize)
                        .await?
                        .ok_or_else(|| LogError::Corrupt("batch shorter than its header".into()))?;
                    return Ok(Some(answer(bytes, &header)));
                }
                position += u64::from(header.size_bytes);
            }
        }
        // Not yet in a segment (queued, or journaled only): only the tail cache has these.
        let state = shared.state.borrow();
        for cached in state.tail_cache.batches_from(written_end_offset) {
            let header = BatchHeader::parse(&cached.bytes).expect("cached batches were validated");
            if header.max_timestamp >= timestamp_ms {
                return Ok(Some(answer(&cached.bytes, &header)));
            }
        }
        Ok(None)
    }
}

/// A segment a search by time looks in: its base offset, its file, where to start, its written
/// end, and its damaged byte ranges (stepped over).
type Candidate = (u64, Rc<SegmentFile>, u64, u64, Vec<(u64, u64)>);

/// Where a walk of batch headers towards an offset ended.
pub(super) enum Walk {
    /// The first batch that holds the offset or comes after it: its position and header.
    Found(u64, BatchHeader),
    /// The walk reached its limit first (compaction removed everything from the offset on).
    End,
    /// Bytes on the way are not a batch header.
    Damaged(DamageAt),
}

/// Damaged bytes met in a segment: at `position`, where a batch starting at `expected_offset`
/// (or after it, below the compacted end) should be, and why they are not one.
pub(super) struct DamageAt {
    pub position: u64,
    pub expected_offset: u64,
    pub reason: String,
}

/// Damage a read met on its way: the segment (its base offset and files), and where.
type DamageMet = (u64, Rc<SegmentFile>, DamageAt);

/// Walks batch headers from `scan_from` (a batch boundary, holding `scan_from_offset`) to the
/// first batch that holds `offset` or comes after it, never reading at or past `limit_bytes`.
pub(super) async fn walk_to_batch(
    scanner: &mut SegmentScanner<'_>,
    scan_from: u64,
    scan_from_offset: u64,
    limit_bytes: u64,
    offset: u64,
) -> Result<Walk, LogError> {
    let mut position = scan_from;
    let mut expected_offset = scan_from_offset;
    while position < limit_bytes {
        let header = match scanner.header_at(position).await? {
            Some(header) if header.base_offset >= expected_offset as i64 => header,
            found => {
                let reason = match found {
                    Some(header) => format!(
                        "a batch at offset {} where offset {expected_offset} or later was \
                         expected",
                        header.base_offset
                    ),
                    None => "bytes that are not a record batch header".into(),
                };
                return Ok(Walk::Damaged(DamageAt {
                    position,
                    expected_offset,
                    reason,
                }));
            }
        };
        if header.last_offset() as u64 >= offset {
            return Ok(Walk::Found(position, header));
        }
        expected_offset = header.last_offset() as u64 + 1;
        position += u64::from(header.size_bytes);
    }
    Ok(Walk::End)
}

/// The bytes of the partial last page of the first `written_bytes` bytes of a file.
pub(super) async fn last_partial_page(
    files: &SegmentFiles,
    written_bytes: u64,
) -> Result<Vec<u8>, LogError> {
    let page_start = align_down(written_bytes);
    let partial = (written_bytes - page_start) as usize;
    if partial == 0 {
        return Ok(Vec::new());
    }
    let page = files
        .dma
        .read_at(page_start, partial)
        .await
        .map_err(|error| LogError::glommio("reading a segment's last page", error))?;
    if page.len() != partial {
        return Err(LogError::Corrupt(format!(
            "segment file is shorter than its {written_bytes} written bytes"
        )));
    }
    Ok(page.to_vec())
}

impl Shared {
    /// The open files of a segment a read planned for (the cache may have closed them since
    /// the plan); `None` if the segment left the log meanwhile (retention, `delete_up_to`, a
    /// cleaning's swap): its name may now be another file's, so the read plans again.
    pub(super) async fn open_planned(
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
}
