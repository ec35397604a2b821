//! The shard's journal: where the small appends of all the shard's partitions become durable
//! together, with one write and one `fdatasync`.
//!
//! Why it exists: a durable append costs a write and an `fdatasync`, and the disk (and the
//! kernel's io-wq wake-ups, the virtio submissions) charge per operation, not per byte. With
//! one segment file per partition, N partitions written in one window cost N writes and N
//! syncs, each of them an `fdatasync` that changes the file size (a journal commit of its
//! own); measured here, latency grew 70-145 times from 1 to 16 partitions at the same 20 MiB/s.
//! The journal gathers every partition's pending small batches into one write to one file that
//! was written once before (so the sync changes no metadata: the cheapest sync there is) and
//! one `fdatasync`, whatever the number of partitions. The batches reach their segments later,
//! in large unsynced writes, and the journal's space is reused once they are there and synced.
//! Large pending runs skip the journal and go straight to their segment (written once, not
//! twice), as ScyllaDB's commitlog, BookKeeper's journal and BlueStore's deferred writes do.
//!
//! The journal is a ring of `files` files of `file_bytes` each, filled with zeros when first
//! created and overwritten in place from then on (`format` says what a file holds). One file
//! is written at a time, each write starting on a page. A file in use is *live*; the oldest
//! live file is *released* (its header zeroed and synced, so neither replay nor anyone else
//! reads it again) once every batch it holds is in a synced segment, which the commit cycle
//! (`log::commit`) arranges before the ring runs out. Which partitions a live file holds
//! batches of, and up to which offset, is kept here (`holdings`); the commit cycle decides.
//!
//! # Reclaiming the ring
//! When fewer than two files are free, the logs holding batches in the oldest live file are asked
//! to write and sync their segments up to those batches; once none needs it, the file is released
//! and free. The logs asked queue for the shard's slots of lazy segment operations (`log::commit`),
//! those whose segment file the file cache holds open first: with more partitions in one journal
//! file than the cache holds, any fixed order makes nearly every write reopen its file, since the
//! least recently used file is always the next one needed. A log that is cut (truncation,
//! `reset_to`, `clear_fault`), removed or closed first writes everything to its segments and syncs
//! them, then has a Forget record of it made durable in the journal; from then on it needs nothing
//! of its earlier records, and nothing a cut removed is ever replayed (`log::replay`).
//!
//! Defaults ([`JournalConfig`]): 4 files of 32 MiB (`ferrite serve --journal-file-bytes`, 0 for no
//! journal), writes of at most 1 MiB, runs of 128 KiB or more bypass it, lazy segment writes at 64
//! KiB gathered, at most 48 MiB journaled but not in segments per shard. A journal sync changes no
//! file metadata because its files are pre-zeroed and overwritten in place: an `fdatasync` that
//! extends a file or converts `fallocate`d extents costs a metadata journal commit, several times
//! an overwrite's. For the same reason a write can be its own sync: when a sync is wanted as the
//! write starts and nothing else is unsynced, the commit cycle writes with `RWF_DSYNC`
//! (`log::commit::operations`), one disk operation and one completion instead of a write, then
//! an `fdatasync` punted to io_uring's worker threads (the broker's mean Produce latency at 1
//! and 16 partitions, acks=all, fell by about a quarter and a tenth; bench/README.md).
//!
//! At start-up, before any partition serves, every journal of the data directory is read
//! ([`read_journal`]) and its batches appended to their logs where missing (`log::replay`),
//! then released: a journal holds nothing once its shard is open.

pub(crate) mod format;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::config::DMA_ALIGNMENT_BYTES;
use crate::error::LogError;
use format::{FileHeader, RecordKind, FILE_HEADER_BYTES};

/// Where the journals of a data directory live: one directory per shard inside it.
pub const JOURNAL_DIRECTORY: &str = "journal";

/// The journal directory of shard `shard` in `data_dir`.
pub fn shard_journal_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir
        .join(JOURNAL_DIRECTORY)
        .join(format!("shard-{shard}"))
}

/// The journal's sizes and the thresholds that send a partition's data to it or past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Bytes of each file of the ring (a multiple of 4 KiB).
    pub file_bytes: u64,
    /// Files in the ring (at least 3: one being written, one being released, one free).
    pub files: usize,
    /// The largest write of one commit cycle; what does not fit waits for the next cycle.
    pub write_bytes_max: usize,
    /// A partition whose pending bytes reach this skips the journal: its data is written to
    /// its segment and synced there (written once instead of twice).
    pub bypass_bytes: usize,
    /// A partition's journaled batches are written to its segment (unsynced) once this many
    /// bytes of them have gathered: one large write instead of many small page rewrites.
    pub segment_write_bytes: usize,
    /// Journaled bytes of all the shard's partitions not yet in their segments (held in their
    /// tail caches); beyond it the largest are written to their segments first.
    pub unwritten_bytes_max: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            file_bytes: 32 << 20,
            files: 4,
            write_bytes_max: 1 << 20,
            bypass_bytes: 128 << 10,
            segment_write_bytes: 64 << 10,
            unwritten_bytes_max: 48 << 20,
        }
    }
}

impl JournalConfig {
    /// A journal of small files (4 x 256 KiB), so that a few hundred kilobytes go round its
    /// ring: for tests.
    pub fn small() -> JournalConfig {
        JournalConfig {
            file_bytes: 256 * 1024,
            files: 4,
            write_bytes_max: 64 * 1024,
            bypass_bytes: 16 * 1024,
            segment_write_bytes: 16 * 1024,
            unwritten_bytes_max: 256 * 1024,
        }
    }

    /// Checks the relations the journal relies on; `Err` names the first violated one.
    pub fn validate(&self) -> Result<(), String> {
        if self.files < 3 {
            return Err("a journal has at least 3 files".into());
        }
        if !self.file_bytes.is_multiple_of(DMA_ALIGNMENT_BYTES)
            || self.file_bytes < 4 * DMA_ALIGNMENT_BYTES
        {
            return Err("journal files are a multiple of 4 KiB, at least 16 KiB".into());
        }
        if self.write_bytes_max as u64 + DMA_ALIGNMENT_BYTES > self.file_bytes {
            return Err("a journal write must fit in one journal file".into());
        }
        if self.bypass_bytes > self.write_bytes_max {
            return Err("journal bypass_bytes must not exceed write_bytes_max".into());
        }
        Ok(())
    }
}

/// One file of the ring.
struct RingFile {
    dma: Rc<DmaFile>,
    /// The header of its current use; `None` while free.
    header: Option<FileHeader>,
    /// Written since its last `fdatasync`.
    unsynced: bool,
    /// Per log (the commit cycle's id), the end offset of its last batch in this file.
    holdings: HashMap<u64, u64>,
}

/// Where a planned write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteSlot {
    pub file: usize,
    /// Page-aligned position in the file.
    pub position: u64,
    /// Whether the write starts the file's use (and so begins with its header).
    pub starts_file: bool,
    pub salt: u64,
}

/// The ring of one shard. Owned by the commit cycle; every method is synchronous except the
/// I/O, which takes what it needs out first so no borrow is held across an `await`.
pub(crate) struct Journal {
    shard: u32,
    config: JournalConfig,
    files: Vec<RingFile>,
    /// Live files, oldest first; the last is the one being written.
    live: VecDeque<usize>,
    /// Next write position in the last live file (page aligned).
    position: u64,
    sequence_next: u64,
    /// Set after a failed write or sync: the next write starts a new file, so nothing is ever
    /// written after bytes whose fate is unknown.
    abandon_current: bool,
}

impl Journal {
    /// Opens the journal in `dir`, creating its files (filled with zeros) where missing. Every
    /// file is taken as free: replay released them before the shard opened it.
    pub async fn open(dir: &Path, shard: u32, config: JournalConfig) -> Result<Journal, LogError> {
        config.validate().map_err(LogError::InvalidConfig)?;
        std::fs::create_dir_all(dir)
            .map_err(|error| LogError::io("creating the journal directory", error))?;
        crate::dma::probe_device_with_real_data(dir).await?;
        let mut files = Vec::with_capacity(config.files);
        let mut created = false;
        for index in 0..config.files {
            let path = journal_file_path(dir, index);
            let size = std::fs::metadata(&path).map(|metadata| metadata.len()).ok();
            let dma = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .dma_open(&path)
                .await
                .map_err(|error| LogError::glommio("opening a journal file", error))?;
            if size != Some(config.file_bytes) {
                fill_with_zeros(&dma, config.file_bytes).await?;
                created = true;
            }
            files.push(RingFile {
                dma: Rc::new(dma),
                header: None,
                unsynced: false,
                holdings: HashMap::new(),
            });
        }
        if created {
            std::fs::File::open(dir)
                .and_then(|directory| directory.sync_all())
                .map_err(|error| LogError::io("syncing the journal directory", error))?;
        }
        Ok(Journal {
            shard,
            config,
            files,
            live: VecDeque::new(),
            position: 0,
            sequence_next: 1,
            abandon_current: false,
        })
    }

    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// Files neither live nor being written.
    pub fn free_files(&self) -> usize {
        self.files.len() - self.live.len()
    }

    /// Whether a write of `bytes` of records fits in the current file or a free one.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.fits_current(bytes)
            || (self.free_files() > 0
                && (FILE_HEADER_BYTES + bytes) as u64 <= self.config.file_bytes)
    }

    fn fits_current(&self, bytes: usize) -> bool {
        !self.live.is_empty()
            && !self.abandon_current
            && self.position + bytes as u64 <= self.config.file_bytes
    }

    /// A place for a write of `bytes` (records only; a header is added when the write starts
    /// a file), in the current file or a free one; `None` when the ring is full.
    pub fn plan_write(&mut self, bytes: usize) -> Option<WriteSlot> {
        if let Some(&current) = self.live.back() {
            if self.fits_current(bytes) {
                let header = self.files[current]
                    .header
                    .expect("a live file has a header");
                return Some(WriteSlot {
                    file: current,
                    position: self.position,
                    starts_file: false,
                    salt: header.salt,
                });
            }
        }
        let free = (0..self.files.len()).find(|index| self.files[*index].header.is_none())?;
        if (FILE_HEADER_BYTES + bytes) as u64 > self.config.file_bytes {
            return None;
        }
        let header = FileHeader {
            shard: self.shard,
            sequence: self.sequence_next,
            salt: random_salt(self.sequence_next),
        };
        self.sequence_next += 1;
        self.files[free].header = Some(header);
        self.live.push_back(free);
        self.position = 0;
        self.abandon_current = false;
        Some(WriteSlot {
            file: free,
            position: 0,
            starts_file: true,
            salt: header.salt,
        })
    }

    /// Bytes a write of records of `records_bytes` takes in its slot (header, page padding).
    pub fn slot_bytes(slot: &WriteSlot, records_bytes: usize) -> usize {
        let header = if slot.starts_file {
            FILE_HEADER_BYTES
        } else {
            0
        };
        (header + records_bytes).next_multiple_of(DMA_ALIGNMENT_BYTES as usize)
    }

    /// A buffer for a write of `records_bytes` into `slot`, with the file's header already in
    /// it when the write starts the file; returns it and where the records go in it.
    pub fn buffer_for(&self, slot: &WriteSlot, records_bytes: usize) -> (DmaBuffer, usize) {
        let mut buffer = self.files[slot.file]
            .dma
            .alloc_dma_buffer(Self::slot_bytes(slot, records_bytes));
        buffer.as_bytes_mut().fill(0);
        let records_at = if slot.starts_file {
            let header = self.files[slot.file]
                .header
                .expect("a planned file has a header");
            buffer.as_bytes_mut()[..FILE_HEADER_BYTES].copy_from_slice(&header.encode());
            FILE_HEADER_BYTES
        } else {
            0
        };
        (buffer, records_at)
    }

    /// The file a slot writes to, for the I/O.
    pub fn file(&self, index: usize) -> Rc<DmaFile> {
        self.files[index].dma.clone()
    }

    /// A write to `slot` of `length` bytes completed: the next one goes after it.
    pub fn wrote(&mut self, slot: &WriteSlot, length: usize) {
        self.files[slot.file].unsynced = true;
        if self.live.back() == Some(&slot.file) {
            self.position = self.position.max(slot.position + length as u64);
        }
    }

    /// A write or sync failed: nothing more goes into the current file.
    pub fn abandon_current(&mut self) {
        self.abandon_current = true;
    }

    /// The files written since their last sync (to sync now), marked synced.
    pub fn take_unsynced(&mut self) -> Vec<Rc<DmaFile>> {
        self.files
            .iter_mut()
            .filter_map(|file| std::mem::take(&mut file.unsynced).then(|| file.dma.clone()))
            .collect()
    }

    /// Whether any file was written since its last sync.
    pub fn has_unsynced(&self) -> bool {
        self.files.iter().any(|file| file.unsynced)
    }

    /// Records that `log_id`'s batches up to `end_offset` are in `file`.
    pub fn note_holding(&mut self, file: usize, log_id: u64, end_offset: u64) {
        let end = self.files[file].holdings.entry(log_id).or_insert(0);
        *end = (*end).max(end_offset);
    }

    /// Whether any live file holds batches of `log_id`.
    pub fn holds(&self, log_id: u64) -> bool {
        self.live
            .iter()
            .any(|&file| self.files[file].holdings.contains_key(&log_id))
    }

    /// `log_id` needs nothing of the journal any more (its log was closed, or a Forget record
    /// of it is durable).
    pub fn drop_holdings(&mut self, log_id: u64) {
        for file in &mut self.files {
            file.holdings.remove(&log_id);
        }
    }

    /// The oldest live file, unless it is the one being written.
    pub fn oldest_releasable(&self) -> Option<usize> {
        (self.live.len() > 1).then(|| self.live[0])
    }

    /// How many of the oldest releasable file's holdings (log id, end offset) are still
    /// `needed`. They are kept until the file is released: a log whose batches there are all
    /// in synced segments still has records replay would read, which a cut must forget.
    pub fn oldest_needs(&self, mut needed: impl FnMut(u64, u64) -> bool) -> usize {
        let Some(file) = self.oldest_releasable() else {
            return 0;
        };
        self.files[file]
            .holdings
            .iter()
            .filter(|(&log_id, &end)| needed(log_id, end))
            .count()
    }

    /// The oldest file's batches are all in synced segments and its header is zeroed on disk:
    /// it is free.
    pub fn released(&mut self, file: usize) {
        assert_eq!(
            self.live.front(),
            Some(&file),
            "files are released oldest first"
        );
        self.live.pop_front();
        let ring_file = &mut self.files[file];
        ring_file.header = None;
        ring_file.holdings.clear();
    }

    /// Files still live (their headers valid on disk), for the shard's clean close.
    pub fn live_files(&self) -> Vec<usize> {
        self.live.iter().copied().collect()
    }

    /// Forgets every live file (their headers were zeroed): the journal is empty.
    pub fn all_released(&mut self) {
        for file in self.live.drain(..) {
            self.files[file].header = None;
            self.files[file].holdings.clear();
        }
        self.position = 0;
    }
}

/// Writes zeros over a released file's header page and syncs it: the file holds nothing
/// replay would read.
pub(crate) async fn release_file(file: &DmaFile) -> Result<(), LogError> {
    zero_range(file, 0, DMA_ALIGNMENT_BYTES as usize).await?;
    file.fdatasync()
        .await
        .map_err(|error| LogError::glommio("syncing a released journal file", error))
}

/// Writes zeros over `length` bytes at `position` (page aligned).
pub(crate) async fn zero_range(
    file: &DmaFile,
    position: u64,
    length: usize,
) -> Result<(), LogError> {
    let mut buffer = file.alloc_dma_buffer(length);
    buffer.as_bytes_mut().fill(0);
    crate::dma::write_whole_at(
        file,
        buffer,
        position,
        crate::dma::WriteSync::Later,
        "zeroing journal bytes",
        "zeroing journal bytes (short write)",
    )
    .await
}

/// Gives a new file its whole size in written zeros, synced: later writes overwrite blocks
/// that exist, so their syncs change no metadata.
async fn fill_with_zeros(file: &DmaFile, file_bytes: u64) -> Result<(), LogError> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let mut position = 0;
    while position < file_bytes {
        let length = CHUNK_BYTES.min(file_bytes - position) as usize;
        zero_range(file, position, length).await?;
        position += length as u64;
    }
    file.truncate(file_bytes)
        .await
        .map_err(|error| LogError::glommio("sizing a journal file", error))?;
    file.fdatasync()
        .await
        .map_err(|error| LogError::glommio("syncing a new journal file", error))
}

fn journal_file_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("{index:02}.journal"))
}

/// A salt nobody outside the process can predict: the standard library's per-process random
/// hash keys, mixed with the sequence number.
fn random_salt(sequence: u64) -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(sequence);
    hasher.finish()
}

/// What a journal holds for one partition, in the order it was written: its batches after
/// its last Forget record.
#[derive(Debug, Default)]
pub(crate) struct JournaledPartition {
    pub batches: Vec<bytes::Bytes>,
}

/// Reads every live file of the journal in `dir` (blocking reads: start-up only) and returns,
/// per partition directory name, the batches replay must consider, in write order.
pub(crate) fn read_journal(dir: &Path) -> Result<HashMap<String, JournaledPartition>, LogError> {
    let mut files = Vec::new();
    for path in journal_files(dir)? {
        let bytes = bytes::Bytes::from(
            std::fs::read(&path).map_err(|error| LogError::io("reading a journal file", error))?,
        );
        if let Some((header, records)) = format::scan_file(&bytes) {
            files.push((header.sequence, bytes, records));
        }
    }
    files.sort_by_key(|(sequence, _, _)| *sequence);
    let mut partitions: HashMap<String, JournaledPartition> = HashMap::new();
    for (_, bytes, records) in files {
        for record in records {
            let Ok(key) = std::str::from_utf8(&bytes[record.key.clone()]) else {
                continue;
            };
            let partition = partitions.entry(key.to_owned()).or_default();
            match record.kind {
                RecordKind::Batch => partition.batches.push(bytes.slice(record.payload)),
                RecordKind::Forget => partition.batches.clear(),
            }
        }
    }
    partitions.retain(|_, partition| !partition.batches.is_empty());
    Ok(partitions)
}

/// Zeroes the header of every file of the journal in `dir` and syncs them (blocking: start-up
/// only, after replay): the journal holds nothing.
pub(crate) fn release_journal(dir: &Path) -> Result<(), LogError> {
    use std::os::unix::fs::FileExt;
    let release = |path: &Path| -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.write_all_at(&[0u8; FILE_HEADER_BYTES], 0)?;
        file.sync_data()
    };
    for path in journal_files(dir)? {
        release(&path).map_err(|error| LogError::io("releasing a journal file", error))?;
    }
    Ok(())
}

/// The files of the journal in `dir` (none if it does not exist).
fn journal_files(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(LogError::io("listing a journal", error)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| LogError::io("listing a journal", error))?
            .path();
        if path
            .extension()
            .is_some_and(|extension| extension == "journal")
        {
            files.push(path);
        }
    }
    Ok(files)
}
