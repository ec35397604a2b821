//! One segment of a partition log: `<base-offset>.log` plus its offset and time indexes.
//!
//! A segment owns the bookkeeping that ties bytes to offsets: how much was appended (in memory)
//! and how much written (on disk), the last partial page that the next direct-I/O write must
//! repeat, and the sparse indexes. The log decides when to write, seal or delete a segment;
//! this module knows how to scan, index and recover one.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use glommio::io::{DmaFile, OpenOptions};

use crate::batch::BatchHeader;
use crate::config::DMA_ALIGNMENT_BYTES;
use crate::error::LogError;
use crate::index::{OffsetIndex, OffsetIndexEntry, TimeIndex, TimeIndexEntry};
use crate::log::{AbortedTransaction, DamagedRange};
mod scanner;

use crate::resources::{
    CachedFile, Counted, DescriptorCount, FileCache, OpenFile, Preallocation, ReadDescriptor,
};
pub(crate) use scanner::{scan_and_note, Resume, SegmentScanner};

/// How many bytes recovery and the cleaner read at a time when they go through every batch of
/// a segment.
pub(crate) const RECOVERY_WINDOW_BYTES: usize = 1 << 20;

pub(crate) fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

pub(crate) fn offset_index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

pub(crate) fn time_index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.timeindex"))
}

/// The cleaner's output while it is being written; deleted by recovery (the cleaning did not
/// commit).
pub(crate) fn cleaned_log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}{CLEANED_SUFFIX}"))
}

/// The cleaner's committed output, replacing every segment whose base is in
/// `[base_offset, end_offset)`; recovery finishes the swap.
pub(crate) fn swap_log_path(dir: &Path, base_offset: u64, end_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.{end_offset:020}{SWAP_SUFFIX}"))
}

pub(crate) const CLEANED_SUFFIX: &str = ".log.cleaned";
pub(crate) const SWAP_SUFFIX: &str = ".log.swap";

pub(crate) fn align_down(value: u64) -> u64 {
    value - value % DMA_ALIGNMENT_BYTES
}

pub(crate) fn align_up(value: u64) -> u64 {
    value.div_ceil(DMA_ALIGNMENT_BYTES) * DMA_ALIGNMENT_BYTES
}

/// The open files of a segment. Writes and scans go through the direct-I/O file; the buffered
/// descriptor exists so the network layer can splice cold data from the page cache, and is
/// shared with the reads that do (see [`ReadDescriptor`]). Held open by the shard's
/// [`FileCache`](crate::resources::FileCache) through the segment's [`SegmentFile`] handle,
/// which closes it when it has been unused longest and reopens it on demand.
///
/// The buffered descriptor is opened by the first read that sends from the file, not with the
/// file: a segment only written (a journal checkpoint's write and sync of each partition) then
/// costs the cache one descriptor, not two, so it holds twice the partitions, and a reopen is
/// one `openat` and one `close` fewer.
pub(crate) struct SegmentFiles {
    pub dma: DmaFile,
    buffered: std::cell::OnceCell<Arc<ReadDescriptor>>,
    /// The shard's descriptor count, which the buffered descriptor joins when it is opened.
    count: DescriptorCount,
    /// The direct-I/O descriptor (the buffered one counts itself).
    _dma_counted: Counted,
}

/// A segment's file, open or not (see [`CachedFile`]).
pub(crate) type SegmentFile = CachedFile<SegmentFiles>;

/// When the last handle of a deleted segment's files goes, its blocks are freed: for a segment of
/// tens of MiB that is tens of milliseconds of kernel work in whatever call closes the last
/// descriptor, and glommio closes its files through io_uring on the shard's thread, which
/// would stall every request of the shard (measured: ~130 ms at the end of a cleaning that
/// deleted 16 segments of 64 MiB). So when the last holder of a deleted segment's buffered
/// descriptor (the segment's files, or a read in flight) drops it, a duplicate goes to a
/// reclaimer thread, which truncates the file to nothing (freeing the blocks off the shard) and
/// closes it; the shard's own closes are then cheap. Readers never see the truncation: the
/// files of a segment in use by a read are never closed by the cache, so no other copy of its
/// descriptors exists, and this runs when the last of them goes.
pub(crate) fn reclaim_if_deleted(file: &std::fs::File) {
    let unlinked = file
        .metadata()
        .is_ok_and(|metadata| std::os::unix::fs::MetadataExt::nlink(&metadata) == 0);
    if !unlinked {
        return;
    }
    if let Ok(duplicate) = file.try_clone() {
        reclaim_off_shard(duplicate);
    }
}

/// Truncates and closes `file` (already unlinked) on the reclaimer thread, started on first
/// use. If the thread cannot be started the file is closed here, as it would have been.
fn reclaim_off_shard(file: std::fs::File) {
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Mutex, OnceLock};
    static RECLAIMER: OnceLock<Option<Mutex<Sender<std::fs::File>>>> = OnceLock::new();
    let reclaimer = RECLAIMER.get_or_init(|| {
        let (sender, files) = channel::<std::fs::File>();
        std::thread::Builder::new()
            .name("segment-reclaimer".into())
            .spawn(move || {
                for file in files {
                    // Frees the blocks; the close after it is then cheap. Failure changes
                    // nothing: the close frees them anyway.
                    let _ = file.set_len(0);
                }
            })
            .ok()
            .map(|_| Mutex::new(sender))
    });
    if let Some(sender) = reclaimer {
        if let Ok(sender) = sender.lock() {
            // A send fails only if the thread died; the file is then closed here.
            let _ = sender.send(file);
        }
    }
}

impl SegmentFiles {
    /// Creates a segment file at `at` (empty) and opens it through `cache`; the handle reopens
    /// it at `path`, the name it has once in place (a cleaner's output is written under a
    /// temporary name and renamed).
    pub async fn create(
        cache: &Rc<FileCache>,
        at: &Path,
        path: PathBuf,
    ) -> Result<(Rc<SegmentFile>, Rc<SegmentFiles>), LogError> {
        cache.make_room(SegmentFiles::DESCRIPTORS);
        let files = Rc::new(SegmentFiles::open_at(at, true, cache.count()).await?);
        Ok((SegmentFile::adopt(cache, path, files.clone()), files))
    }

    async fn open_at(
        path: &Path,
        create: bool,
        count: &DescriptorCount,
    ) -> Result<SegmentFiles, LogError> {
        let dma = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(|error| LogError::glommio("opening a segment file", error))?;
        Ok(SegmentFiles {
            dma,
            buffered: std::cell::OnceCell::new(),
            count: count.clone(),
            _dma_counted: count.counted(1),
        })
    }

    /// The buffered descriptor, opened on first use (counted in the shard's open files; the
    /// cache makes room for it at its next open).
    pub fn read_descriptor(&self) -> Result<Arc<ReadDescriptor>, LogError> {
        if let Some(descriptor) = self.buffered.get() {
            return Ok(descriptor.clone());
        }
        // Through /proc: the very file of the direct-I/O descriptor, whatever its name is now
        // (a cleaner's output renamed, a deleted segment still read). Writable only so that a
        // deleted segment's blocks can be freed by truncation (see `reclaim_if_deleted`);
        // nothing else writes through it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", self.dma.as_raw_fd()))
            .map_err(|error| LogError::io("opening a segment file for reads", error))?;
        let descriptor = Arc::new(ReadDescriptor::new(file, &self.count));
        Ok(self.buffered.get_or_init(|| descriptor).clone())
    }

    /// Cuts the file to `length_bytes`, durably (`fdatasync`).
    pub async fn cut_durably(
        &self,
        length_bytes: u64,
        operation: &'static str,
    ) -> Result<(), LogError> {
        self.cut(length_bytes, operation).await?;
        self.sync(operation).await
    }

    /// `fdatasync` of the file.
    pub async fn sync(&self, operation: &'static str) -> Result<(), LogError> {
        self.dma
            .fdatasync()
            .await
            .map_err(|error| LogError::glommio(operation, error))
    }

    /// Cuts the file to `length_bytes`, unsynced (journal replay syncs the whole file system
    /// once, after it).
    pub async fn cut(&self, length_bytes: u64, operation: &'static str) -> Result<(), LogError> {
        self.dma
            .truncate(length_bytes)
            .await
            .map_err(|error| LogError::glommio(operation, error))
    }

    pub async fn size_bytes(&self) -> Result<u64, LogError> {
        self.dma
            .file_size()
            .await
            .map_err(|error| LogError::glommio("reading a segment's size", error))
    }
}

impl Drop for SegmentFiles {
    fn drop(&mut self) {
        if self.buffered.get().is_none() {
            // The direct-I/O descriptor is the file's last: a deleted segment's blocks are
            // freed off the shard as its buffered descriptor's would be.
            // SAFETY: the descriptor stays open (owned by `self.dma`) for this borrow; the
            // `File` is never dropped, so it does not close it.
            let file = std::mem::ManuallyDrop::new(unsafe {
                <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(self.dma.as_raw_fd())
            });
            reclaim_if_deleted(&file);
        }
    }
}

impl OpenFile for SegmentFiles {
    /// The direct-I/O descriptor; the buffered one is opened by reads (`read_descriptor`).
    const DESCRIPTORS: usize = 1;

    async fn open(path: &Path, count: &DescriptorCount) -> Result<Self, LogError> {
        SegmentFiles::open_at(path, false, count).await
    }

    /// In use while anyone but the cache holds the files, or a read in flight holds the
    /// buffered descriptor.
    fn in_use(this: &Rc<Self>) -> bool {
        Rc::strong_count(this) > 1
            || this
                .buffered
                .get()
                .is_some_and(|descriptor| Arc::strong_count(descriptor) > 1)
    }
}

/// One segment's state. Offsets are absolute; positions are bytes into the `.log` file.
pub(crate) struct Segment {
    pub base_offset: u64,
    /// One past the last offset appended (written or not).
    pub end_offset: u64,
    /// Bytes appended, including those not yet written.
    pub appended_bytes: u64,
    /// Bytes written to the file by completed flushes.
    pub written_bytes: u64,
    /// Bytes of the file known to have blocks allocated (reserved ahead of writes).
    pub reserved_bytes: u64,
    /// The share of the shard's preallocation budget that the reserved and not yet written
    /// bytes take (`log/preallocate.rs`); `None` when nothing is reserved ahead.
    pub preallocation: Option<Preallocation>,
    /// The bytes of the last, partially filled 4 KiB page on disk: the next direct write starts
    /// at that page's beginning and must repeat them (identical bytes, so a torn rewrite of the
    /// page cannot damage what was already durable, given sector-atomic writes).
    pub tail_page: Vec<u8>,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Largest batch max-timestamp in the segment; `None` while empty.
    pub max_timestamp_ms: Option<i64>,
    pub created_ms: i64,
    /// `None` until the flusher creates the file for the segment's first write.
    pub files: Option<Rc<SegmentFile>>,
    /// Fully written, trimmed, synced and indexed on disk; takes no more appends.
    pub sealed: bool,
    /// Byte ranges that were durable once and no longer hold valid batches, by position: their
    /// offsets are refused to readers. A segment with damage keeps no index files on disk, so
    /// every open scans it in full and finds the damage again.
    pub damaged: Vec<DamagedRange>,
    /// The transactions aborted by markers in this segment, in marker order (its `.txnindex`,
    /// `log/transactions.rs`).
    pub aborted_transactions: Vec<AbortedTransaction>,
}

impl Segment {
    pub fn new_empty(base_offset: u64, created_ms: i64) -> Segment {
        Segment {
            base_offset,
            end_offset: base_offset,
            appended_bytes: 0,
            written_bytes: 0,
            reserved_bytes: 0,
            preallocation: None,
            tail_page: Vec::new(),
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp_ms: None,
            created_ms,
            files: None,
            sealed: false,
            damaged: Vec::new(),
            aborted_transactions: Vec::new(),
        }
    }

    pub fn relative_offset(&self, offset: u64) -> u32 {
        let relative = offset - self.base_offset;
        u32::try_from(relative).expect("segments roll before their offset range exceeds u32")
    }

    /// Accounts for a batch placed at `position`: advances the ends and adds index entries
    /// every `index_interval_bytes`. The same function indexes appends, recovery scans and
    /// the cleaner's output, so all build identical indexes. Offsets may leave a gap before
    /// the batch (compaction removed what was there), never go back.
    pub fn note_batch(&mut self, position: u64, header: &BatchHeader, index_interval_bytes: u32) {
        assert_eq!(
            position, self.appended_bytes,
            "batches are placed back to back"
        );
        assert!(
            header.base_offset as u64 >= self.end_offset,
            "batch offsets increase: batch at {} after end {}",
            header.base_offset,
            self.end_offset
        );
        let max_timestamp_ms = self
            .max_timestamp_ms
            .map_or(header.max_timestamp, |max| max.max(header.max_timestamp));
        self.max_timestamp_ms = Some(max_timestamp_ms);
        let due = match self.offset_index.last() {
            None => true,
            Some(last) => position - u64::from(last.position) >= u64::from(index_interval_bytes),
        };
        if due {
            let relative_offset = self.relative_offset(header.base_offset as u64);
            self.offset_index.push(OffsetIndexEntry {
                relative_offset,
                position: u32::try_from(position).expect("segment positions fit u32"),
            });
            self.time_index.push_if_newer(TimeIndexEntry {
                timestamp_ms: max_timestamp_ms,
                relative_offset,
            });
        }
        self.appended_bytes = position + u64::from(header.size_bytes);
        self.end_offset = header.last_offset() as u64 + 1;
    }

    /// Forgets every batch from the one at `position` on (a batch boundary whose first offset
    /// is `offset`): ends and index entries go back. As in Kafka, the running max timestamp
    /// falls back to the time index's last surviving entry, which may miss a larger timestamp
    /// among the batches after the last index entry.
    pub fn forget_from(&mut self, position: u64, offset: u64) {
        assert!(position <= self.appended_bytes && offset <= self.end_offset);
        self.offset_index
            .truncate_to_position(u32::try_from(position).expect("segment positions fit u32"));
        self.time_index
            .truncate_to_offset(self.relative_offset(offset));
        self.max_timestamp_ms = self.time_index.last().map(|entry| entry.timestamp_ms);
        self.appended_bytes = position;
        self.end_offset = offset;
        self.damaged.retain(|range| range.position < position);
        self.aborted_transactions
            .retain(|aborted| aborted.last_offset < offset);
    }

    /// Accounts for damaged bytes at the end of what was noted so far (recovery found them
    /// between two valid batches): the ends move past them and their offsets.
    pub fn note_damage(&mut self, range: DamagedRange) {
        assert_eq!(range.segment_base_offset, self.base_offset);
        assert_eq!(
            range.position, self.appended_bytes,
            "damage follows the batches noted"
        );
        assert!(range.start_offset <= range.end_offset && range.start_offset >= self.end_offset);
        self.appended_bytes = range.end_position();
        self.end_offset = range.end_offset;
        self.damaged.push(range);
    }

    /// Records damage a read found inside what was noted (the segment's bookkeeping already
    /// covers those bytes); `false` if that damage was recorded already.
    pub fn add_damage(&mut self, range: DamagedRange) -> bool {
        assert_eq!(range.segment_base_offset, self.base_offset);
        if self
            .damaged
            .iter()
            .any(|known| known.position == range.position)
        {
            return false;
        }
        let at = self
            .damaged
            .partition_point(|known| known.position < range.position);
        self.damaged.insert(at, range);
        true
    }

    /// The damaged range holding `offset`, if any.
    pub fn damage_holding(&self, offset: u64) -> Option<&DamagedRange> {
        self.damaged.iter().find(|range| range.holds(offset))
    }

    /// Where a walk of batch headers towards `offset` may start and must stop: from the index
    /// entry at or before it, or after the last damaged range before it if that is later (the
    /// index may point into damaged bytes), up to the next damaged range (or the written end).
    /// Returns the start, the offset of the batch there, and the end.
    pub fn walk_bounds(&self, offset: u64) -> (u64, u64, u64) {
        let (mut scan_from, mut scan_from_offset) = self
            .offset_index
            .floor_by_offset(self.relative_offset(offset.max(self.base_offset)))
            .map_or((0, self.base_offset), |entry| {
                (
                    u64::from(entry.position),
                    self.base_offset + u64::from(entry.relative_offset),
                )
            });
        if let Some(range) = self
            .damaged
            .iter()
            .rev()
            .find(|range| range.end_offset <= offset)
        {
            if range.end_position() >= scan_from {
                (scan_from, scan_from_offset) = (range.end_position(), range.end_offset);
            }
        }
        let limit = self
            .damaged
            .iter()
            .find(|range| range.position >= scan_from)
            .map_or(self.written_bytes, |range| {
                range.position.min(self.written_bytes)
            });
        (scan_from, scan_from_offset, limit)
    }
}

/// A log's segments in base-offset order, with the parts of `BTreeMap<u64, Segment>`'s
/// interface the log uses. A sorted vector rather than a map: most logs have one segment or a
/// few, appended at the end and dropped at the front, and a map's node holds room for eleven
/// (2 KiB per idle partition); the vector holds exactly what it has while small.
#[derive(Default)]
pub(crate) struct Segments {
    bases: Vec<u64>,
    segments: Vec<Segment>,
}

impl Segments {
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    fn position(&self, base_offset: u64) -> Result<usize, usize> {
        self.bases.binary_search(&base_offset)
    }

    pub fn get(&self, base_offset: &u64) -> Option<&Segment> {
        Some(&self.segments[self.position(*base_offset).ok()?])
    }

    pub fn get_mut(&mut self, base_offset: &u64) -> Option<&mut Segment> {
        let at = self.position(*base_offset).ok()?;
        Some(&mut self.segments[at])
    }

    pub fn contains_key(&self, base_offset: &u64) -> bool {
        self.position(*base_offset).is_ok()
    }

    /// Inserts (or replaces) the segment starting at `base_offset`.
    pub fn insert(&mut self, base_offset: u64, segment: Segment) {
        assert_eq!(
            base_offset, segment.base_offset,
            "a segment is keyed by its base"
        );
        match self.position(base_offset) {
            Ok(at) => self.segments[at] = segment,
            Err(at) => {
                if self.segments.len() == self.segments.capacity() {
                    // Doubling, but exactly: one segment takes room for one.
                    let more = self.segments.len().max(1);
                    self.segments.reserve_exact(more);
                    self.bases.reserve_exact(more);
                }
                self.bases.insert(at, base_offset);
                self.segments.insert(at, segment);
            }
        }
    }

    pub fn remove(&mut self, base_offset: &u64) -> Option<Segment> {
        let at = self.position(*base_offset).ok()?;
        self.bases.remove(at);
        Some(self.segments.remove(at))
    }

    pub fn pop_last(&mut self) -> Option<(u64, Segment)> {
        Some((self.bases.pop()?, self.segments.pop()?))
    }

    pub fn clear(&mut self) {
        self.bases.clear();
        self.segments.clear();
    }

    pub fn keys(&self) -> std::slice::Iter<'_, u64> {
        self.bases.iter()
    }

    pub fn values(&self) -> std::slice::Iter<'_, Segment> {
        self.segments.iter()
    }

    pub fn values_mut(&mut self) -> std::slice::IterMut<'_, Segment> {
        self.segments.iter_mut()
    }

    /// The positions of the segments whose base lies in `range`.
    fn span(&self, range: impl std::ops::RangeBounds<u64>) -> std::ops::Range<usize> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&from) => self.bases.partition_point(|&base| base < from),
            Bound::Excluded(&from) => self.bases.partition_point(|&base| base <= from),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&to) => self.bases.partition_point(|&base| base <= to),
            Bound::Excluded(&to) => self.bases.partition_point(|&base| base < to),
            Bound::Unbounded => self.bases.len(),
        };
        start..end.max(start)
    }

    /// The segments whose base lies in `range`, with their bases, in order.
    pub fn range(
        &self,
        range: impl std::ops::RangeBounds<u64>,
    ) -> std::iter::Zip<std::slice::Iter<'_, u64>, std::slice::Iter<'_, Segment>> {
        let span = self.span(range);
        self.bases[span.clone()].iter().zip(&self.segments[span])
    }

    pub fn range_mut(
        &mut self,
        range: impl std::ops::RangeBounds<u64>,
    ) -> std::iter::Zip<std::slice::Iter<'_, u64>, std::slice::IterMut<'_, Segment>> {
        let span = self.span(range);
        self.bases[span.clone()]
            .iter()
            .zip(&mut self.segments[span])
    }
}

impl std::ops::Index<&u64> for Segments {
    type Output = Segment;

    fn index(&self, base_offset: &u64) -> &Segment {
        self.get(base_offset)
            .expect("a segment with that base exists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_segment_is_truncated_off_the_shard_when_its_files_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        // An observer descriptor: it sees the inode's size after the segment's are closed.
        let observer = std::fs::File::open(&path).unwrap();
        let kept_path = dir.path().join("00000000000000000100.log");
        std::fs::write(&kept_path, vec![7u8; 4096]).unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let count = DescriptorCount::default();
                let deleted = SegmentFiles::open(&path, &count).await.unwrap();
                let kept = SegmentFiles::open(&kept_path, &count).await.unwrap();
                std::fs::remove_file(&path).unwrap();
                drop(deleted);
                drop(kept);
            })
            .unwrap()
            .join()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while observer.metadata().unwrap().len() != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the deleted segment was not truncated"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            std::fs::metadata(dir.path().join("00000000000000000100.log"))
                .unwrap()
                .len(),
            4096,
            "a segment still linked is left alone"
        );
    }
}
