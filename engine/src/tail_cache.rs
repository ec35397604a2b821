//! The most recent batches of a partition, in memory, for readers that follow the tail.
//!
//! Consumers of a latency-sensitive pipeline read what was just produced; serving them from
//! memory keeps their fetches off the disk and lets the flusher write without readers in the
//! way. The cache always holds a suffix of the log: every batch from the first one it holds on,
//! in offset order (with the gaps between batches a follower copies from a compacted leader).
//! Batches that are not yet written are never evicted (they exist nowhere else), so the cache
//! may exceed its byte bound by at most the log's `unflushed_bytes_max`.
//!
//! Every cache of a shard also counts its bytes in the shard's [`TailBudget`], which drops the
//! written batches of the least recently appended partitions when they exceed the shard's
//! bound: the per-partition bound alone would let 10 000 idle partitions keep their last
//! batches forever.

use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

use crate::resources::TailBudget;

#[derive(Debug, Clone)]
pub(crate) struct CachedBatch {
    pub base_offset: u64,
    pub last_offset: u64,
    pub bytes: Bytes,
}

pub(crate) struct TailCache {
    batches: VecDeque<CachedBatch>,
    size_bytes: usize,
    size_bytes_max: usize,
    budget: Rc<TailBudget>,
}

impl TailCache {
    pub fn new(size_bytes_max: usize, budget: Rc<TailBudget>) -> Self {
        TailCache {
            batches: VecDeque::new(),
            size_bytes: 0,
            size_bytes_max,
            budget,
        }
    }

    /// A cache holding `batches` (a suffix of the log, in order) from the start.
    pub fn seeded(
        size_bytes_max: usize,
        budget: Rc<TailBudget>,
        batches: impl IntoIterator<Item = CachedBatch>,
    ) -> Self {
        let mut cache = TailCache::new(size_bytes_max, budget);
        for batch in batches {
            cache.push(batch);
        }
        cache
    }

    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    fn pop_front(&mut self) {
        if let Some(front) = self.batches.pop_front() {
            self.shrunk(front.bytes.len());
        }
    }

    fn pop_back(&mut self) {
        if let Some(back) = self.batches.pop_back() {
            self.shrunk(back.bytes.len());
        }
    }

    fn shrunk(&mut self, bytes: usize) {
        self.size_bytes -= bytes;
        self.budget.remove(bytes);
        if self.batches.is_empty() {
            // An idle partition's cache holds no buffer either.
            self.batches = VecDeque::new();
        }
    }

    /// Drops every written batch (the shard's budget is spent and this partition was appended
    /// to least recently): only what is not yet on disk stays.
    pub fn drop_written(&mut self, written_end_offset: u64) {
        while self
            .batches
            .front()
            .is_some_and(|front| front.last_offset < written_end_offset)
        {
            self.pop_front();
        }
    }

    /// Adds the batch that follows the cached suffix (right after it, or after a gap).
    pub fn push(&mut self, batch: CachedBatch) {
        if let Some(last) = self.batches.back() {
            assert!(
                batch.base_offset > last.last_offset,
                "the tail cache holds a suffix of the log, in order: batch at {} after {}",
                batch.base_offset,
                last.last_offset
            );
        }
        self.size_bytes += batch.bytes.len();
        self.budget.add(batch.bytes.len());
        self.batches.push_back(batch);
    }

    /// Evicts the oldest batches while over the bound, keeping every batch at or after
    /// `written_end_offset` (not yet on disk).
    pub fn evict(&mut self, written_end_offset: u64) {
        while self.size_bytes > self.size_bytes_max {
            match self.batches.front() {
                Some(front) if front.last_offset < written_end_offset => self.pop_front(),
                _ => break,
            }
        }
    }

    /// Drops every batch that starts below `offset` (the cleaner rewrote those segments, so
    /// the cached copies are stale). Only written batches lie there.
    pub fn drop_below(&mut self, offset: u64) {
        while let Some(front) = self.batches.front() {
            if front.base_offset >= offset {
                break;
            }
            self.pop_front();
        }
    }

    /// Drops every batch at or after `offset` (the log was truncated or rolled back there).
    pub fn truncate_from(&mut self, offset: u64) {
        while let Some(back) = self.batches.back() {
            if back.base_offset < offset {
                break;
            }
            self.pop_back();
        }
    }

    /// Whether the batch holding `offset` is cached.
    pub fn covers(&self, offset: u64) -> bool {
        match (self.batches.front(), self.batches.back()) {
            (Some(front), Some(back)) => front.base_offset <= offset && offset <= back.last_offset,
            _ => false,
        }
    }

    /// Whole batches from the one holding `offset`, while they end below `offset_end` and fit
    /// in `bytes_max` (the first batch is always returned, as Kafka does for fetches).
    pub fn read(&self, offset: u64, bytes_max: usize, offset_end: u64) -> Vec<CachedBatch> {
        let first = self
            .batches
            .partition_point(|batch| batch.last_offset < offset);
        let mut out = Vec::new();
        let mut size_bytes = 0usize;
        for batch in self.batches.range(first..) {
            if batch.last_offset >= offset_end {
                break;
            }
            if !out.is_empty() && size_bytes + batch.bytes.len() > bytes_max {
                break;
            }
            size_bytes += batch.bytes.len();
            out.push(batch.clone());
        }
        out
    }

    /// The cached batches at or after `offset`, oldest first.
    pub fn batches_from(&self, offset: u64) -> impl Iterator<Item = &CachedBatch> {
        let first = self
            .batches
            .partition_point(|batch| batch.last_offset < offset);
        self.batches.range(first..)
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        self.budget.remove(self.size_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(size_bytes_max: usize) -> TailCache {
        TailCache::new(size_bytes_max, Rc::new(TailBudget::new(usize::MAX)))
    }

    fn batch(base_offset: u64, count: u64, size: usize) -> CachedBatch {
        CachedBatch {
            base_offset,
            last_offset: base_offset + count - 1,
            bytes: Bytes::from(vec![0u8; size]),
        }
    }

    #[test]
    fn eviction_keeps_unwritten_batches_and_the_bound_otherwise() {
        let mut cache = cache(250);
        for index in 0..5 {
            cache.push(batch(index * 10, 10, 100));
        }
        cache.evict(0);
        assert_eq!(cache.size_bytes(), 500, "nothing written: nothing evicted");
        cache.evict(30);
        assert_eq!(cache.size_bytes(), 200);
        assert!(!cache.covers(29) && cache.covers(30) && cache.covers(49) && !cache.covers(50));
    }

    #[test]
    fn a_gap_a_follower_copies_is_kept_and_a_read_in_it_gets_the_next_batch() {
        let mut cache = cache(1 << 20);
        cache.push(batch(0, 10, 100));
        cache.push(batch(25, 5, 100));
        assert!(cache.covers(12), "the gap is part of the cached suffix");
        let read = cache.read(12, 1000, 100);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].base_offset, 25);
    }

    #[test]
    fn reads_return_whole_batches_within_bounds() {
        let mut cache = cache(1 << 20);
        for index in 0..5 {
            cache.push(batch(index * 10, 10, 100));
        }
        let offsets = |batches: Vec<CachedBatch>| -> Vec<u64> {
            batches.iter().map(|batch| batch.base_offset).collect()
        };
        assert_eq!(offsets(cache.read(15, 250, 100)), vec![10, 20]);
        assert_eq!(
            offsets(cache.read(15, 1, 100)),
            vec![10],
            "first batch always"
        );
        assert_eq!(offsets(cache.read(15, 1000, 30)), vec![10, 20]);
        assert_eq!(offsets(cache.read(15, 1000, 29)), vec![10]);
        cache.truncate_from(20);
        assert_eq!(offsets(cache.read(0, 1000, 100)), vec![0, 10]);
    }
}
