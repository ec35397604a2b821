//! What the partition logs of one shard share, and the bounds that hold over all of them
//! together rather than per partition: open descriptors (the file cache), disk space reserved
//! ahead of writes, and tail-cache memory. A shard with 10 000 partitions must not need 10 000
//! times what one partition needs: the unit of every budget is the shard.
//!
//! The resources of a shard belong to its thread: a glommio executor is one thread, and every
//! partition log of a shard is opened, used and closed there. [`install`] sets the thread's
//! limits when the shard starts; a log opened on a thread with none installed (a test, a
//! benchmark, a tool) gets the defaults. Keeping them per thread rather than passing them to
//! every `PartitionLog::open` keeps the logs of one shard, wherever they are opened (the broker,
//! a replica, the metadata log), under one set of bounds.
//!
//! # Descriptors
//! [`FileCache`]: the segment files and partition directories a shard keeps open, at most
//! `open_files_max` descriptors, the least recently used closed beyond it and reopened on
//! demand (by path: a segment's file keeps its name for life, except a cleaner's output, whose
//! handle is created with its final name). A file in use (a read, a write, a scan holds its
//! [`SegmentFiles`], or a fetch in flight holds its [`ReadDescriptor`], possibly on another
//! shard) is never closed under its user: the cache exceeds its bound only by files in use, and
//! counts them (the count is atomic because a fetch answered from another shard drops its
//! descriptor there). Files let go of after that are closed at the next open, or once the
//! shard's commit cycle has been idle for a moment ([`FileCache::restore_bound`]), so a shard
//! at rest is within its bound. Index files and small state files written by an open, a seal or a close
//! are opened and closed around the write, outside the cache: at most a few per partition
//! being opened or closed at once.
//!
//! A segment holds one descriptor (direct I/O) until a read sends from it; the buffered one the
//! network layer splices from is opened then, through `/proc/self/fd`, so a renamed or deleted file
//! is still the same file, and later reads of a sealed segment share it.
//! `ferrite_files_opened_total` counts the opens on demand, which says when the bound is too low
//! for the working set. The shard journal's files are outside the bound (open for the broker's
//! life, counted in `ferrite serve`'s start-up descriptor estimate).
//!
//! # Tail caches
//! [`TailBudget`]: every tail cache of the shard counts its bytes here; once they exceed
//! `tail_cache_bytes_max`, the written batches of the least recently appended partitions are
//! dropped (a partition appended to once and then idle keeps nothing in memory for long; its
//! readers are served from the file). Unwritten batches are never dropped: they exist nowhere
//! else, and each log bounds them itself (`unflushed_bytes_max`).
//!
//! # Preallocation
//! The disk-space budget, `preallocated_bytes_max`: space reserved ahead of writes and not
//! yet written, over the shard's segments (`log::preallocate` decides who reserves and how much).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::LogError;

/// The bounds of one shard's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Descriptors of segment files and partition directories the shard keeps open; beyond it
    /// the least recently used are closed (files in use excepted).
    pub open_files_max: usize,
    /// Disk space reserved ahead of writes (fallocate) and not yet written, over the shard's
    /// segments together; a reservation that would exceed it is made smaller, or not made.
    pub preallocated_bytes_max: u64,
    /// Memory of the shard's tail caches together: beyond it the written batches of the least
    /// recently appended partitions are dropped (they are read from the files instead).
    pub tail_cache_bytes_max: usize,
}

impl Default for ResourceLimits {
    /// The defaults of one shard of a two-shard broker (see `ferrite serve --open-files-max`).
    fn default() -> Self {
        ResourceLimits {
            open_files_max: 1792,
            preallocated_bytes_max: 256 << 20,
            tail_cache_bytes_max: 64 << 20,
        }
    }
}

impl ResourceLimits {
    /// Checks the limits; `Err` names the first that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        // A log being opened holds its directory and its last segment (three descriptors).
        if self.open_files_max < OPEN_FILES_MIN {
            return Err(format!(
                "open_files_max must be at least {OPEN_FILES_MIN} per shard"
            ));
        }
        Ok(())
    }
}

/// The fewest descriptors a shard can work with: a directory and a segment (two descriptors)
/// of each of a few logs being opened at once.
pub const OPEN_FILES_MIN: usize = 16;

/// One shard's shared resources. Lives on the shard's thread.
pub struct ShardResources {
    limits: ResourceLimits,
    files: Rc<FileCache>,
    /// Bytes reserved ahead of writes and not yet written, over the shard's segments.
    preallocated_bytes: Cell<u64>,
    tail_budget: Rc<TailBudget>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<ShardResources>>> = const { RefCell::new(None) };
}

/// Makes `limits` the bounds of the logs opened on this thread from now on (a shard calls this
/// when it starts, before it opens any log). Logs already open keep the resources they have.
pub fn install(limits: ResourceLimits) -> Rc<ShardResources> {
    let resources = ShardResources::new(limits);
    CURRENT.with(|current| *current.borrow_mut() = Some(resources.clone()));
    resources
}

/// The resources of this thread's shard (the defaults if none were installed).
pub fn current() -> Rc<ShardResources> {
    CURRENT.with(|current| {
        current
            .borrow_mut()
            .get_or_insert_with(|| ShardResources::new(ResourceLimits::default()))
            .clone()
    })
}

impl ShardResources {
    fn new(limits: ResourceLimits) -> Rc<ShardResources> {
        Rc::new(ShardResources {
            files: Rc::new(FileCache::new(limits.open_files_max)),
            preallocated_bytes: Cell::new(0),
            tail_budget: Rc::new(TailBudget::new(limits.tail_cache_bytes_max)),
            limits,
        })
    }

    pub fn limits(&self) -> &ResourceLimits {
        &self.limits
    }

    pub(crate) fn files(&self) -> &Rc<FileCache> {
        &self.files
    }

    /// Descriptors of data files open on this shard now, those held by reads in flight
    /// included.
    pub fn open_files(&self) -> usize {
        self.files.open_descriptors()
    }

    /// Data files opened on demand so far: a file the cache had closed to stay within
    /// `open_files_max` and that was needed again, or one not opened yet.
    pub fn files_opened(&self) -> u64 {
        self.files.opened()
    }

    /// Bytes reserved ahead of writes and not yet written, over the shard's segments.
    pub fn preallocated_bytes(&self) -> u64 {
        self.preallocated_bytes.get()
    }

    pub(crate) fn tail_budget(&self) -> &Rc<TailBudget> {
        &self.tail_budget
    }

    /// Bytes held by the shard's tail caches together.
    pub fn tail_cache_bytes(&self) -> usize {
        self.tail_budget.bytes.get()
    }

    /// Up to `wanted` bytes of the shard's preallocation budget, held until the returned
    /// reservation is dropped or shrunk.
    pub(crate) fn reserve_preallocation(self: &Rc<Self>, wanted: u64) -> Preallocation {
        let available = self
            .limits
            .preallocated_bytes_max
            .saturating_sub(self.preallocated_bytes.get());
        let bytes = wanted.min(available);
        self.preallocated_bytes
            .set(self.preallocated_bytes.get() + bytes);
        Preallocation {
            resources: self.clone(),
            bytes,
        }
    }
}

/// Bytes of the shard's preallocation budget one segment holds: space reserved in its file
/// ahead of the writes and not yet written. Given back as the writes fill it, and in full when
/// the segment is sealed or dropped (sealing trims the file, which frees the space).
pub(crate) struct Preallocation {
    resources: Rc<ShardResources>,
    bytes: u64,
}

impl Preallocation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Keeps at most `bytes` of the reservation (the writes used the rest).
    pub fn shrink_to(&mut self, bytes: u64) {
        let released = self.bytes.saturating_sub(bytes);
        self.bytes -= released;
        let total = &self.resources.preallocated_bytes;
        total.set(total.get() - released);
    }
}

impl Drop for Preallocation {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

/// The shard's tail-cache memory (see the module documentation).
pub(crate) struct TailBudget {
    bytes_max: usize,
    bytes: Cell<usize>,
    /// Logs with cached batches by their last append.
    recency: Recency<dyn TrimTail>,
}

/// A log whose tail cache the budget can ask to drop its written batches.
pub(crate) trait TrimTail {
    /// Drops the cached batches that are written; `false` if the log is busy right now (the
    /// budget then tries the next one).
    fn drop_written(&self) -> bool;
}

impl TailBudget {
    pub fn new(bytes_max: usize) -> TailBudget {
        TailBudget {
            bytes_max,
            bytes: Cell::new(0),
            recency: Recency::new(),
        }
    }

    /// The most one log opening fills its cache with from what its recovery read: a share of
    /// the bound for each of the logs a shard opens at once.
    pub fn seed_bytes_max(&self) -> usize {
        self.bytes_max / 64
    }

    /// A tail cache grew or shrank.
    pub fn add(&self, bytes: usize) {
        self.bytes.set(self.bytes.get() + bytes);
    }

    pub fn remove(&self, bytes: usize) {
        self.bytes.set(self.bytes.get() - bytes);
    }

    /// The log (whose recency stamp was `old`, 0 if none) was just appended to; returns its
    /// new stamp.
    pub fn touch(&self, old: u64, log: Weak<dyn TrimTail>) -> u64 {
        self.recency.touch(old, log)
    }

    /// The log with recency stamp `stamp` holds nothing any more (or is gone).
    pub fn forget(&self, stamp: u64) {
        self.recency.forget(stamp);
    }

    /// Drops the written batches of the least recently appended logs while over the bound.
    /// Call with no log's state borrowed.
    pub fn trim(&self) {
        let mut after_stamp = 0;
        while self.bytes.get() > self.bytes_max {
            let Some((stamp, log)) = self.recency.oldest_from(after_stamp) else {
                return;
            };
            after_stamp = stamp + 1;
            match log {
                Some(log) => {
                    log.drop_written();
                }
                None => self.forget(stamp),
            }
        }
    }
}

/// How many data-file descriptors a shard has open; decremented from whichever thread closes
/// one (a fetch answered by another shard closes its descriptor there).
#[derive(Clone, Default)]
pub(crate) struct DescriptorCount(Arc<AtomicUsize>);

impl DescriptorCount {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts `descriptors` until the returned guard is dropped.
    pub fn counted(&self, descriptors: usize) -> Counted {
        self.0.fetch_add(descriptors, Ordering::Relaxed);
        Counted {
            count: self.clone(),
            descriptors,
        }
    }
}

/// Descriptors counted while they are open (see [`DescriptorCount::counted`]).
pub(crate) struct Counted {
    count: DescriptorCount,
    descriptors: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.count.0.fetch_sub(self.descriptors, Ordering::Relaxed);
    }
}

/// A segment file's buffered descriptor, shared by the segment's open files and the reads
/// that send its bytes with `splice` (on this shard or, once a read's answer
/// crossed the mesh, on another). Counted in its shard's [`FileCache`] until the last holder
/// drops it; when it goes and the file was deleted meanwhile, the file's blocks are freed off
/// the shard (see [`crate::segment::SegmentFiles`]).
pub struct ReadDescriptor {
    file: std::fs::File,
    _counted: Counted,
}

impl ReadDescriptor {
    pub(crate) fn new(file: std::fs::File, count: &DescriptorCount) -> ReadDescriptor {
        ReadDescriptor {
            file,
            _counted: count.counted(1),
        }
    }

    pub fn file(&self) -> &std::fs::File {
        &self.file
    }
}

impl AsRawFd for ReadDescriptor {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for ReadDescriptor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl std::fmt::Debug for ReadDescriptor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReadDescriptor")
            .field("fd", &self.file.as_raw_fd())
            .finish()
    }
}

impl Drop for ReadDescriptor {
    fn drop(&mut self) {
        crate::segment::reclaim_if_deleted(&self.file);
    }
}

/// Something the cache can open by path and close again: a segment's files, a directory.
pub(crate) trait OpenFile: Sized + 'static {
    /// Descriptors one instance holds.
    const DESCRIPTORS: usize;

    /// Opens the existing file at `path`, its descriptors counted in `count`.
    async fn open(path: &Path, count: &DescriptorCount) -> Result<Self, LogError>;

    /// Whether someone besides the cache uses `this` (it must not be closed under them).
    fn in_use(this: &Rc<Self>) -> bool {
        Rc::strong_count(this) > 1
    }
}

/// What the cache's recency list holds: a handle it can ask to close its descriptors.
trait Evictable {
    /// Closes the descriptors unless they are in use; whether it did.
    fn close_if_unused(&self) -> bool;
}

/// The shard's open data files, least recently used first (see the module documentation).
pub(crate) struct FileCache {
    open_files_max: usize,
    count: DescriptorCount,
    /// Files opened on demand so far (closed by the cache earlier, or not opened yet): what a
    /// bound below the files in steady use costs.
    opened: Cell<u64>,
    /// Open handles by their last use.
    recency: Recency<dyn Evictable>,
}

impl FileCache {
    fn new(open_files_max: usize) -> FileCache {
        FileCache {
            open_files_max,
            count: DescriptorCount::default(),
            opened: Cell::new(0),
            recency: Recency::new(),
        }
    }

    pub fn count(&self) -> &DescriptorCount {
        &self.count
    }

    pub fn open_descriptors(&self) -> usize {
        self.count.get()
    }

    /// Files opened on demand so far (see [`CachedFile::get`]).
    pub fn opened(&self) -> u64 {
        self.opened.get()
    }

    /// Closes least recently used files until `descriptors` more fit the bound, or only files
    /// in use are left open (the bound is then exceeded by those).
    pub fn make_room(&self, descriptors: usize) {
        let mut after_stamp = 0;
        while self.count.get() + descriptors > self.open_files_max {
            let Some((stamp, handle)) = self.recency.oldest_from(after_stamp) else {
                return;
            };
            match handle {
                Some(handle) if !handle.close_if_unused() => after_stamp = stamp + 1,
                _ => self.recency.forget(stamp),
            }
        }
    }

    /// Closes least recently used files while the bound is exceeded: files in use when
    /// [`FileCache::make_room`] last ran may have been let go since, and nothing else closes
    /// them before the next open. Nothing to do (one comparison) within the bound.
    pub fn restore_bound(&self) {
        self.make_room(0);
    }

    /// Marks the handle with stamp `old` (0: not listed) as just used; returns its new stamp.
    fn touch(&self, old: u64, handle: Weak<dyn Evictable>) -> u64 {
        self.recency.touch(old, handle)
    }

    fn forget(&self, stamp: u64) {
        self.recency.forget(stamp);
    }
}

/// Entries by the stamp of their last use, the least recently used first: the order in which
/// the file cache closes files and the tail budget trims caches.
struct Recency<T: ?Sized> {
    entries: RefCell<BTreeMap<u64, Weak<T>>>,
    stamp_next: Cell<u64>,
}

impl<T: ?Sized> Recency<T> {
    fn new() -> Recency<T> {
        Recency {
            entries: RefCell::new(BTreeMap::new()),
            // 0 means "not listed".
            stamp_next: Cell::new(1),
        }
    }

    /// Lists `entry` (listed with stamp `old` before, 0 if not) as just used; returns its new
    /// stamp.
    fn touch(&self, old: u64, entry: Weak<T>) -> u64 {
        let stamp = self.stamp_next.get();
        self.stamp_next.set(stamp + 1);
        let mut entries = self.entries.borrow_mut();
        if old != 0 {
            entries.remove(&old);
        }
        entries.insert(stamp, entry);
        stamp
    }

    fn forget(&self, stamp: u64) {
        if stamp != 0 {
            self.entries.borrow_mut().remove(&stamp);
        }
    }

    /// The least recently used entry with a stamp of at least `from_stamp` (`None` inside if
    /// it is gone).
    fn oldest_from(&self, from_stamp: u64) -> Option<(u64, Option<Rc<T>>)> {
        self.entries
            .borrow()
            .range(from_stamp..)
            .next()
            .map(|(&stamp, entry)| (stamp, entry.upgrade()))
    }
}

/// A file of a log, open or not: the log keeps the handle for as long as the file exists, the
/// cache decides when its descriptors are open. `get` opens it if the cache closed it.
pub(crate) struct CachedFile<T: OpenFile> {
    cache: Rc<FileCache>,
    path: PathBuf,
    open: RefCell<Option<Rc<T>>>,
    /// Its place in the cache's recency list; 0 while closed.
    stamp: Cell<u64>,
}

impl<T: OpenFile> CachedFile<T> {
    /// A handle to the existing file at `path`, not opened yet.
    pub fn closed(cache: &Rc<FileCache>, path: PathBuf) -> Rc<CachedFile<T>> {
        Rc::new(CachedFile {
            cache: cache.clone(),
            path,
            open: RefCell::new(None),
            stamp: Cell::new(0),
        })
    }

    /// A handle to a file opened by the caller (just created, perhaps under another name that
    /// becomes `path`).
    pub fn adopt(cache: &Rc<FileCache>, path: PathBuf, open: Rc<T>) -> Rc<CachedFile<T>> {
        let handle = CachedFile::closed(cache, path);
        *handle.open.borrow_mut() = Some(open);
        handle.mark_used();
        handle
    }

    /// The open file, if the cache holds it open now (marked as just used).
    pub fn get_if_open(self: &Rc<Self>) -> Option<Rc<T>> {
        let open = self.open.borrow().clone()?;
        self.mark_used();
        Some(open)
    }

    /// The open file, opened again if the cache closed it.
    pub async fn get(self: &Rc<Self>) -> Result<Rc<T>, LogError> {
        if let Some(open) = self.get_if_open() {
            return Ok(open);
        }
        self.cache.make_room(T::DESCRIPTORS);
        self.cache.opened.set(self.cache.opened.get() + 1);
        let opened = Rc::new(T::open(&self.path, &self.cache.count).await?);
        // Another task may have opened it meanwhile: one copy stays open, the first.
        if let Some(open) = self.get_if_open() {
            return Ok(open);
        }
        *self.open.borrow_mut() = Some(opened.clone());
        self.mark_used();
        Ok(opened)
    }

    /// Whether the cache holds the file open now (using it costs no open).
    pub fn is_open(&self) -> bool {
        self.open.borrow().is_some()
    }

    fn mark_used(self: &Rc<Self>) {
        let weak: Weak<dyn Evictable> = Rc::downgrade(self) as Weak<dyn Evictable>;
        self.stamp.set(self.cache.touch(self.stamp.get(), weak));
    }
}

impl<T: OpenFile> Evictable for CachedFile<T> {
    fn close_if_unused(&self) -> bool {
        let closed = {
            let mut open = self.open.borrow_mut();
            if open.as_ref().is_some_and(T::in_use) {
                return false;
            }
            open.take()
        };
        self.stamp.set(0);
        // Dropped outside the borrow: closing may run other code (the reclaimer hand-off).
        drop(closed);
        true
    }
}

impl<T: OpenFile> Drop for CachedFile<T> {
    fn drop(&mut self) {
        self.cache.forget(self.stamp.get());
    }
}

/// A partition directory, open for `fsync` after its entries change.
pub(crate) struct OpenDirectory {
    pub directory: glommio::io::Directory,
    _counted: Counted,
}

impl OpenFile for OpenDirectory {
    const DESCRIPTORS: usize = 1;

    async fn open(path: &Path, count: &DescriptorCount) -> Result<Self, LogError> {
        let directory = glommio::io::Directory::open(path)
            .await
            .map_err(|error| LogError::glommio("opening the partition directory", error))?;
        Ok(OpenDirectory {
            directory,
            _counted: count.counted(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in file: one descriptor, counted.
    struct Fake {
        _counted: Counted,
    }

    impl OpenFile for Fake {
        const DESCRIPTORS: usize = 1;

        async fn open(_path: &Path, count: &DescriptorCount) -> Result<Self, LogError> {
            Ok(Fake {
                _counted: count.counted(1),
            })
        }
    }

    fn run<Test, Run>(test: Test)
    where
        Test: FnOnce() -> Run + Send + 'static,
        Run: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(test)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn the_least_recently_used_file_is_closed_beyond_the_bound_and_reopened_on_demand() {
        run(|| async {
            let cache = Rc::new(FileCache::new(3));
            let handles: Vec<Rc<CachedFile<Fake>>> = (0..5)
                .map(|index| CachedFile::closed(&cache, PathBuf::from(format!("f{index}"))))
                .collect();
            for handle in &handles {
                drop(handle.get().await.unwrap());
                assert!(cache.open_descriptors() <= 3);
            }
            assert_eq!(cache.open_descriptors(), 3);
            let open: Vec<bool> = handles.iter().map(|h| h.open.borrow().is_some()).collect();
            assert_eq!(
                open,
                [false, false, true, true, true],
                "the oldest two went"
            );
            // Using f2 makes f3 the least recently used.
            drop(handles[2].get().await.unwrap());
            drop(handles[0].get().await.unwrap());
            let open: Vec<bool> = handles.iter().map(|h| h.open.borrow().is_some()).collect();
            assert_eq!(open, [true, false, true, false, true]);
            drop(handles);
            assert_eq!(
                cache.open_descriptors(),
                0,
                "a dropped handle closes its file"
            );
            assert!(cache.recency.entries.borrow().is_empty());
        });
    }

    #[test]
    fn files_in_use_stay_open_and_count_beyond_the_bound_until_released() {
        run(|| async {
            let cache = Rc::new(FileCache::new(2));
            let handles: Vec<Rc<CachedFile<Fake>>> = (0..4)
                .map(|index| CachedFile::closed(&cache, PathBuf::from(format!("f{index}"))))
                .collect();
            // Two reads in flight hold theirs; the cache cannot close them.
            let held = [
                handles[0].get().await.unwrap(),
                handles[1].get().await.unwrap(),
            ];
            let third = handles[2].get().await.unwrap();
            assert_eq!(cache.open_descriptors(), 3, "exceeded by files in use only");
            assert!(handles[0].open.borrow().is_some() && handles[1].open.borrow().is_some());
            drop(third);
            drop(held);
            assert_eq!(cache.open_descriptors(), 3, "released, not closed yet");
            cache.restore_bound();
            assert_eq!(
                cache.open_descriptors(),
                2,
                "the least recently used closed once let go"
            );
            assert!(handles[0].open.borrow().is_none());
            drop(handles[3].get().await.unwrap());
            assert_eq!(
                cache.open_descriptors(),
                2,
                "back within the bound once released"
            );
        });
    }
}
