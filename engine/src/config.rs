//! Per-partition log settings. Every buffer and cache the log keeps has its bound here, so a
//! partition's memory is known from its configuration, not from its load.

use crate::batch::BATCH_HEADER_BYTES;

/// What happens to a partition's old data (`cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Whole segments past the retention limits are deleted.
    Delete,
    /// The log cleaner keeps the latest record of each key; retention deletes nothing.
    Compact,
    /// Both: compacted, and segments past the retention limits deleted.
    CompactAndDelete,
}

impl CleanupPolicy {
    /// Whether the retention limits (`retention.ms`, `retention.bytes`) delete segments.
    pub fn deletes(self) -> bool {
        matches!(
            self,
            CleanupPolicy::Delete | CleanupPolicy::CompactAndDelete
        )
    }

    /// Whether the log cleaner compacts the partition.
    pub fn compacts(self) -> bool {
        matches!(
            self,
            CleanupPolicy::Compact | CleanupPolicy::CompactAndDelete
        )
    }
}

/// Settings for one partition log. Field names follow the house style (units last) except
/// where they mirror a Kafka topic config one for one (the compaction settings); the Kafka
/// topic config each one corresponds to is named in its doc.
///
/// A topic's settings (those `topic_config` maps a key to) may change while the log is open
/// ([`crate::log::PartitionLog::set_config`]); the others size the log's memory and are fixed
/// from its open on ([`LogConfig::same_sizing`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Roll to a new segment before the active one would exceed this (`segment.bytes`).
    pub segment_bytes_max: u64,
    /// Roll a non-empty active segment once it is this old (`segment.ms`).
    pub segment_age_ms_max: Option<u64>,
    /// Delete closed segments whose newest timestamp is older than this (`retention.ms`).
    pub retention_age_ms_max: Option<u64>,
    /// Delete the oldest closed segments while the log is larger than this (`retention.bytes`).
    pub retention_bytes_max: Option<u64>,
    /// One sparse index entry per this many log bytes (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Largest batch accepted (`max.message.bytes`).
    pub batch_bytes_max: usize,
    /// Appended but not yet written bytes; appends wait (back-pressure) beyond this.
    pub unflushed_bytes_max: usize,
    /// Recently appended batches kept in memory for tailing readers.
    pub tail_cache_bytes_max: usize,
    /// Size of each direct-I/O write a flush is split into (written concurrently).
    pub write_chunk_bytes: usize,
    /// The most segment space reserved (fallocate) at a time ahead of the writes of a partition
    /// written steadily (Redpanda's `segment_fallocation_step`); reservations start smaller
    /// and grow with the write rate (`log/preallocate.rs`). 0: never.
    pub preallocate_bytes: u64,
    /// Idempotent producers whose sequence state the partition keeps; beyond it the producer
    /// that appended least recently is forgotten (and accepted with any sequence afterwards).
    pub producers_max: usize,
    /// A producer that has not appended for longer than this is forgotten
    /// (`producer.id.expiration.ms`); `None` keeps producers until `producers_max` evicts them.
    pub producer_idle_ms_max: Option<u64>,
    /// Whether old data is deleted by retention, compacted, or both (`cleanup.policy`).
    pub cleanup_policy: CleanupPolicy,
    /// A tombstone (null value) that is its key's latest record is kept by compaction until
    /// its timestamp is this much older than the cleaning's time, so consumers that lag behind
    /// see the delete (`delete.retention.ms`).
    pub delete_retention_ms: u64,
    /// Compaction leaves a segment (and every later one) alone while its newest timestamp is
    /// younger than this (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: u64,
    /// A record becomes eligible for compaction at the latest this long after it was written,
    /// however clean the log (`max.compaction.lag.ms`).
    pub max_compaction_lag_ms: u64,
    /// The cleaner takes on a partition once at least this fraction of its log is uncompacted
    /// (`min.cleanable.dirty.ratio`, 0 to 1).
    pub min_cleanable_dirty_ratio: f64,
    /// Memory the cleaner's map of key → latest offset may use in one cleaning, counted as
    /// each key's bytes plus [`CLEANER_MAP_ENTRY_OVERHEAD_BYTES`]; the segments whose keys do
    /// not fit wait for the next cleaning (Kafka's `log.cleaner.dedupe.buffer.size`).
    pub cleaner_map_bytes_max: usize,
    /// In a cluster, acks=all produces are refused (NOT_ENOUGH_REPLICAS) while fewer replicas
    /// than this, the leader included, are in sync (`min.insync.replicas`).
    pub min_insync_replicas: u32,
    /// Bytes per second a cleaning may read plus write (Kafka's
    /// `log.cleaner.io.max.bytes.per.second`); `None`: as fast as the disk goes.
    pub cleaner_io_bytes_per_second_max: Option<u64>,
    /// The recovery point (what a crash need not rescan, and below which a bad batch is
    /// damage rather than a torn write) moves to the durable end at most this often (Kafka's
    /// `log.flush.offset.checkpoint.interval.ms`); each move writes and syncs a small file.
    pub recovery_point_interval_ms: u64,
}

/// What one key of the cleaner's map costs beyond its bytes: the offset, the hash table's
/// slot and the key's allocation header, rounded up.
pub const CLEANER_MAP_ENTRY_OVERHEAD_BYTES: usize = 48;

/// Direct I/O works in units of this; every write position and length is a multiple of it.
pub const DMA_ALIGNMENT_BYTES: u64 = 4096;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_age_ms_max: Some(7 * 24 * 3600 * 1000),
            retention_age_ms_max: Some(7 * 24 * 3600 * 1000),
            retention_bytes_max: None,
            index_interval_bytes: 4096,
            // Kafka's default max.message.bytes (1 MiB of records plus batch overhead).
            batch_bytes_max: 1_048_588,
            unflushed_bytes_max: 16 << 20,
            tail_cache_bytes_max: 4 << 20,
            write_chunk_bytes: 1 << 20,
            preallocate_bytes: 32 << 20,
            // About 200 bytes each: at most ~2 MiB of producer state per partition.
            producers_max: 10_000,
            // Kafka's default producer.id.expiration.ms: one day.
            producer_idle_ms_max: Some(24 * 3600 * 1000),
            // Kafka's defaults for the topic configs of the same names, and its 128 MiB
            // dedupe buffer (of which Kafka uses 90%).
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX as u64,
            min_cleanable_dirty_ratio: 0.5,
            cleaner_map_bytes_max: 128 << 20,
            min_insync_replicas: 1,
            cleaner_io_bytes_per_second_max: None,
            // Kafka's log.flush.offset.checkpoint.interval.ms.
            recovery_point_interval_ms: 60_000,
        }
    }
}

impl LogConfig {
    /// Checks the relations between bounds that the log relies on; `Err` names the first
    /// violated one.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes_max > u64::from(u32::MAX) {
            return Err("segment_bytes_max must fit the index's 32-bit positions".into());
        }
        if self.segment_bytes_max < BATCH_HEADER_BYTES as u64 {
            return Err("segment_bytes_max is smaller than one batch header".into());
        }
        if self.index_interval_bytes == 0 {
            return Err("index_interval_bytes must be positive".into());
        }
        if self.batch_bytes_max < BATCH_HEADER_BYTES {
            return Err("batch_bytes_max is smaller than one batch header".into());
        }
        if self.unflushed_bytes_max < self.batch_bytes_max {
            return Err("unflushed_bytes_max must hold at least one largest batch".into());
        }
        if self.write_chunk_bytes == 0
            || !(self.write_chunk_bytes as u64).is_multiple_of(DMA_ALIGNMENT_BYTES)
        {
            return Err("write_chunk_bytes must be a positive multiple of 4096".into());
        }
        if !self.preallocate_bytes.is_multiple_of(DMA_ALIGNMENT_BYTES) {
            return Err("preallocate_bytes must be a multiple of 4096 (0: never)".into());
        }
        if self.producers_max == 0 {
            return Err("producers_max must be positive".into());
        }
        if self.min_compaction_lag_ms > self.max_compaction_lag_ms {
            return Err(format!(
                "min.compaction.lag.ms ({}) is greater than max.compaction.lag.ms ({})",
                self.min_compaction_lag_ms, self.max_compaction_lag_ms
            ));
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return Err("min_cleanable_dirty_ratio must lie within 0 to 1".into());
        }
        if self.cleaner_io_bytes_per_second_max == Some(0) {
            return Err("cleaner_io_bytes_per_second_max must be positive".into());
        }
        Ok(())
    }

    /// Whether `other` sizes a log's memory and I/O as this does: the settings an open log
    /// cannot take on (its tail cache, producer table and write buffers were made for them).
    pub fn same_sizing(&self, other: &LogConfig) -> bool {
        self.index_interval_bytes == other.index_interval_bytes
            && self.unflushed_bytes_max == other.unflushed_bytes_max
            && self.tail_cache_bytes_max == other.tail_cache_bytes_max
            && self.write_chunk_bytes == other.write_chunk_bytes
            && self.preallocate_bytes == other.preallocate_bytes
            && self.producers_max == other.producers_max
            && self.producer_idle_ms_max == other.producer_idle_ms_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent_and_violations_are_named() {
        assert_eq!(LogConfig::default().validate(), Ok(()));
        let config = LogConfig {
            unflushed_bytes_max: 10,
            ..LogConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .contains("unflushed_bytes_max"));
        let config = LogConfig {
            write_chunk_bytes: 1000,
            ..LogConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("write_chunk_bytes"));
        let config = LogConfig {
            min_compaction_lag_ms: 10,
            max_compaction_lag_ms: 5,
            ..LogConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .contains("min.compaction.lag.ms"));
        let config = LogConfig {
            min_cleanable_dirty_ratio: f64::NAN,
            ..LogConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .contains("min_cleanable_dirty_ratio"));
        assert!(LogConfig::default().same_sizing(&LogConfig {
            segment_bytes_max: 1 << 20,
            retention_age_ms_max: None,
            cleanup_policy: CleanupPolicy::CompactAndDelete,
            ..LogConfig::default()
        }));
        assert!(!LogConfig::default().same_sizing(&LogConfig {
            tail_cache_bytes_max: 1 << 10,
            ..LogConfig::default()
        }));
    }
}
