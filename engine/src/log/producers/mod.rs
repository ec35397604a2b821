//! Idempotent producers' sequence state for one partition: what lets the log answer a retried
//! batch with its original offsets instead of writing it twice, and refuse a batch that skips
//! ahead or comes from a fenced producer instance.
//!
//! An idempotent producer stamps each batch with its producer id, an epoch (bumped when the
//! producer restarts or is fenced) and the sequence number of its first record (per partition,
//! counting from 0 and wrapping from `i32::MAX` to 0). Following Kafka's
//! `ProducerStateManager`/`ProducerAppendInfo`, for each producer the table keeps its current
//! epoch and the metadata of its last [`BATCHES_PER_PRODUCER_MAX`] batches (Kafka's
//! `NUM_BATCHES_TO_RETAIN`: a producer has at most five requests in flight), and checks a batch
//! in this order:
//! 1. same epoch and exactly the sequence range of a remembered batch: a duplicate, answered
//!    with that batch's offsets;
//! 2. an epoch older than the current one: `InvalidProducerEpoch`;
//! 3. a newer epoch must start at sequence 0, the current epoch must continue right after the
//!    last batch: otherwise `OutOfOrderSequence`.
//!
//! A producer the table does not know (new, expired, evicted, or forgotten by a restart, see
//! below) is accepted with any sequence, as Kafka does. Batches without a producer id, and
//! control batches (which carry no sequence), are not tracked.
//!
//! Bounds: at most five batches per producer, at most `producers_max` producers (the one that
//! appended least recently is forgotten first), and a producer idle for longer than
//! `producer_idle_ms_max` is forgotten at the next append of any producer.
//!
//! Durability: the table is pure memory. [`ProducerTable::encode`] and [`ProducerTable::decode`]
//! are the versioned, checksummed snapshot the log writes when it seals a segment or closes;
//! [`ProducerRecovery`] combines that snapshot with the batches recovery scans in the active
//! segment.
//!
//! The snapshot (`producer-state`, version 1, big-endian, a CRC-32C over everything after the
//! checksum; written to a temporary file, synced, renamed, directory synced) holds the log end
//! offset it covers and, per producer, its id, epoch, last append time and up to five batches
//! (sequence range and offsets). It is written when a segment is sealed (the state at that
//! segment's end; skipped while no producer is known) and at close, and deleted by truncation
//! before the log changes and by an open that finds it does not fit, so it always describes a
//! prefix of the log. Defaults: `producer_idle_ms_max` one day (Kafka's
//! `producer.id.expiration.ms`; recovered producers count as having appended at the time of the
//! open), `producers_max` 10 000 per partition. Transactions are out of scope.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::batch::{sequence_after, BatchHeader};
use crate::config::LogConfig;
use crate::error::LogError;

/// Batches remembered per producer (Kafka's `ProducerStateEntry.NUM_BATCHES_TO_RETAIN`).
pub(crate) const BATCHES_PER_PRODUCER_MAX: usize = 5;

/// Version of the snapshot layout written by [`ProducerTable::encode`].
const SNAPSHOT_VERSION: u16 = 1;
/// version u16, crc u32, end offset u64, producer count u32.
const SNAPSHOT_HEADER_BYTES: usize = 2 + 4 + 8 + 4;
/// producer id i64, epoch i16, last append ms i64, batch count u8.
const SNAPSHOT_PRODUCER_BYTES: usize = 8 + 2 + 8 + 1;
/// base sequence i32, last sequence i32, base offset u64, last offset u64.
const SNAPSHOT_BATCH_BYTES: usize = 4 + 4 + 8 + 8;

/// Where one of a producer's batches went: its sequence range and its offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerBatch {
    pub base_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// The shard's clock at the producer's last append (at recovery, for scanned batches).
    last_append_ms: i64,
    /// Oldest first; never empty, at most [`BATCHES_PER_PRODUCER_MAX`], all of `epoch`.
    batches: VecDeque<ProducerBatch>,
}

impl ProducerEntry {
    fn last_batch(&self) -> &ProducerBatch {
        self.batches
            .back()
            .expect("a producer entry holds at least one batch")
    }
}

/// What the log should do with a batch that passed the sequence checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it.
    Append,
    /// A retry of a batch already in the log at these offsets: write nothing.
    Duplicate { base_offset: u64, last_offset: u64 },
}

/// The bounds of a table (from the log's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerLimits {
    pub producers_max: usize,
    pub idle_ms_max: Option<u64>,
}

impl ProducerLimits {
    pub fn of(config: &LogConfig) -> Self {
        ProducerLimits {
            producers_max: config.producers_max,
            idle_ms_max: config.producer_idle_ms_max,
        }
    }
}

/// The sequence state of every producer the partition remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
    /// `(last_append_ms, producer_id)` of every entry, least recently appended first: the
    /// order in which producers expire or are evicted.
    by_last_append: BTreeSet<(i64, i64)>,
    limits: ProducerLimits,
}

/// Whether the table keeps state for this batch.
fn is_tracked(header: &BatchHeader) -> bool {
    header.has_producer_id() && !header.is_control()
}

impl ProducerTable {
    pub fn new(limits: ProducerLimits) -> Self {
        assert!(
            limits.producers_max > 0,
            "a table holds at least one producer"
        );
        ProducerTable {
            producers: HashMap::new(),
            by_last_append: BTreeSet::new(),
            limits,
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides what to do with `header`'s batch before it is given offsets. Changes nothing:
    /// the caller [`record`](Self::record)s the batch once it is placed in the log.
    pub fn check(&self, header: &BatchHeader) -> Result<Verdict, LogError> {
        if !is_tracked(header) {
            return Ok(Verdict::Append);
        }
        let producer_id = header.producer_id;
        // Not negative: `CheckedBatch::produced` refused such a batch.
        let received = header.base_sequence;
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(Verdict::Append);
        };
        let epoch = header.producer_epoch;
        if epoch == entry.epoch {
            let last_sequence = header.last_sequence();
            if let Some(original) = entry
                .batches
                .iter()
                .find(|b| b.base_sequence == received && b.last_sequence == last_sequence)
            {
                return Ok(Verdict::Duplicate {
                    base_offset: original.base_offset,
                    last_offset: original.last_offset,
                });
            }
        }
        if epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id,
                current: entry.epoch,
                received: epoch,
            });
        }
        let expected = if epoch > entry.epoch {
            0
        } else {
            sequence_after(entry.last_batch().last_sequence, 1)
        };
        if received != expected {
            return Err(LogError::OutOfOrderSequence {
                producer_id,
                expected,
                received,
            });
        }
        Ok(Verdict::Append)
    }

    /// Notes a batch placed in the log (its header carries the offsets it was given), at
    /// `now_ms`. Recovery calls it for the batches it scans, without [`check`](Self::check):
    /// what is in the log is the truth.
    pub fn record(&mut self, header: &BatchHeader, now_ms: i64) {
        if !is_tracked(header) || header.base_sequence < 0 {
            return;
        }
        assert!(header.base_offset >= 0, "a placed batch has an offset");
        self.expire_idle(now_ms);
        let producer_id = header.producer_id;
        let batch = ProducerBatch {
            base_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset: header.base_offset as u64,
            last_offset: header.last_offset() as u64,
        };
        if let Some(entry) = self.producers.get_mut(&producer_id) {
            self.by_last_append
                .remove(&(entry.last_append_ms, producer_id));
            debug_assert!(entry.last_batch().last_offset < batch.base_offset);
            if entry.epoch != header.producer_epoch {
                entry.epoch = header.producer_epoch;
                entry.batches.clear();
            }
            if entry.batches.len() == BATCHES_PER_PRODUCER_MAX {
                entry.batches.pop_front();
            }
            entry.batches.push_back(batch);
            entry.last_append_ms = now_ms;
        } else {
            if self.producers.len() == self.limits.producers_max {
                self.forget_least_recent();
            }
            let mut batches = VecDeque::with_capacity(BATCHES_PER_PRODUCER_MAX);
            batches.push_back(batch);
            let entry = ProducerEntry {
                epoch: header.producer_epoch,
                last_append_ms: now_ms,
                batches,
            };
            self.producers.insert(producer_id, entry);
        }
        self.by_last_append.insert((now_ms, producer_id));
        debug_assert_eq!(self.by_last_append.len(), self.producers.len());
        assert!(self.producers.len() <= self.limits.producers_max);
    }

    /// Forgets every batch at or after `offset` (the log was cut there), and the producers
    /// left with no batch: they become unknown, so their next batch is accepted with any
    /// sequence (its predecessor may be older than the five remembered batches).
    pub fn forget_from(&mut self, offset: u64) {
        let by_last_append = &mut self.by_last_append;
        self.producers.retain(|&producer_id, entry| {
            while entry
                .batches
                .back()
                .is_some_and(|batch| batch.last_offset >= offset)
            {
                entry.batches.pop_back();
            }
            let keep = !entry.batches.is_empty();
            if !keep {
                by_last_append.remove(&(entry.last_append_ms, producer_id));
            }
            keep
        });
    }

    pub fn clear(&mut self) {
        self.producers.clear();
        self.by_last_append.clear();
    }

    fn expire_idle(&mut self, now_ms: i64) {
        let Some(idle_ms_max) = self.limits.idle_ms_max else {
            return;
        };
        let idle_ms_max = i64::try_from(idle_ms_max).unwrap_or(i64::MAX);
        while let Some(&(last_append_ms, _)) = self.by_last_append.first() {
            if now_ms.saturating_sub(last_append_ms) <= idle_ms_max {
                break;
            }
            self.forget_least_recent();
        }
    }

    fn forget_least_recent(&mut self) {
        if let Some((_, producer_id)) = self.by_last_append.pop_first() {
            self.producers.remove(&producer_id);
        }
    }

    /// The snapshot of the table for a log ending at `end_offset` (every batch below it has
    /// been recorded, none at or above it): big-endian, versioned, CRC-32C over everything
    /// after the checksum, producers in id order.
    pub fn encode(&self, end_offset: u64) -> Vec<u8> {
        let batch_count: usize = self.producers.values().map(|e| e.batches.len()).sum();
        let mut out = Vec::with_capacity(
            SNAPSHOT_HEADER_BYTES
                + self.producers.len() * SNAPSHOT_PRODUCER_BYTES
                + batch_count * SNAPSHOT_BATCH_BYTES,
        );
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
        out.extend_from_slice(&end_offset.to_be_bytes());
        let producer_count = u32::try_from(self.producers.len()).expect("producers_max fits u32");
        out.extend_from_slice(&producer_count.to_be_bytes());
        let mut producer_ids: Vec<i64> = self.producers.keys().copied().collect();
        producer_ids.sort_unstable();
        for producer_id in producer_ids {
            let entry = &self.producers[&producer_id];
            out.extend_from_slice(&producer_id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.extend_from_slice(&entry.last_append_ms.to_be_bytes());
            out.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                debug_assert!(batch.last_offset < end_offset);
                out.extend_from_slice(&batch.base_sequence.to_be_bytes());
                out.extend_from_slice(&batch.last_sequence.to_be_bytes());
                out.extend_from_slice(&batch.base_offset.to_be_bytes());
                out.extend_from_slice(&batch.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out[6..]);
        out[2..6].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a snapshot written by [`encode`](Self::encode), checking everything (version,
    /// checksum, lengths, batch counts and order); returns the table and the log end offset it
    /// covers, or why the bytes are not a usable snapshot. Keeps at most
    /// `limits.producers_max` producers, the most recently appended.
    pub fn decode(bytes: &[u8], limits: ProducerLimits) -> Result<(ProducerTable, u64), String> {
        let mut reader = SnapshotReader { bytes, at: 0 };
        let version = u16::from_be_bytes(reader.take()?);
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown snapshot version {version}"));
        }
        let stored_crc = u32::from_be_bytes(reader.take()?);
        let computed_crc = crc32c::crc32c(&bytes[reader.at..]);
        if stored_crc != computed_crc {
            return Err(format!(
                "checksum mismatch: stored {stored_crc:#010x}, computed {computed_crc:#010x}"
            ));
        }
        let end_offset = u64::from_be_bytes(reader.take()?);
        let producer_count = u32::from_be_bytes(reader.take()?) as usize;
        let mut entries: Vec<(i64, ProducerEntry)> = Vec::new();
        for _ in 0..producer_count {
            let producer_id = i64::from_be_bytes(reader.take()?);
            let epoch = i16::from_be_bytes(reader.take()?);
            let last_append_ms = i64::from_be_bytes(reader.take()?);
            let [batch_count] = reader.take()?;
            let batch_count = usize::from(batch_count);
            if producer_id < 0 || !(1..=BATCHES_PER_PRODUCER_MAX).contains(&batch_count) {
                return Err(format!(
                    "producer {producer_id} with {batch_count} batches cannot be in a snapshot"
                ));
            }
            let mut batches = VecDeque::with_capacity(BATCHES_PER_PRODUCER_MAX);
            for _ in 0..batch_count {
                let batch = ProducerBatch {
                    base_sequence: i32::from_be_bytes(reader.take()?),
                    last_sequence: i32::from_be_bytes(reader.take()?),
                    base_offset: u64::from_be_bytes(reader.take()?),
                    last_offset: u64::from_be_bytes(reader.take()?),
                };
                let follows_previous = batches.back().is_none_or(|previous: &ProducerBatch| {
                    previous.last_offset < batch.base_offset
                });
                if batch.base_sequence < 0
                    || batch.last_sequence < 0
                    || batch.base_offset > batch.last_offset
                    || batch.last_offset >= end_offset
                    || !follows_previous
                {
                    return Err(format!(
                        "producer {producer_id} has an impossible batch {batch:?}"
                    ));
                }
                batches.push_back(batch);
            }
            let entry = ProducerEntry {
                epoch,
                last_append_ms,
                batches,
            };
            entries.push((producer_id, entry));
        }
        if reader.at != bytes.len() {
            return Err(format!(
                "{} bytes after the last producer",
                bytes.len() - reader.at
            ));
        }
        entries.sort_by_key(|(producer_id, entry)| (entry.last_append_ms, *producer_id));
        let mut table = ProducerTable::new(limits);
        for (producer_id, entry) in entries {
            if table.producers.len() == limits.producers_max {
                table.forget_least_recent();
            }
            table
                .by_last_append
                .insert((entry.last_append_ms, producer_id));
            if table.producers.insert(producer_id, entry).is_some() {
                return Err(format!("producer {producer_id} appears twice"));
            }
        }
        Ok((table, end_offset))
    }
}

/// Bounds-checked reads of fixed-size fields.
struct SnapshotReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl SnapshotReader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let field = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or_else(|| format!("snapshot ends at byte {} inside a field", self.bytes.len()))?;
        self.at += N;
        Ok(field.try_into().expect("a slice of N bytes"))
    }
}

/// A table being brought up to date by scanned batches: it reflects every tracked batch below
/// `next_offset`, as long as no batch was skipped (`gap`).
struct Continuation {
    table: ProducerTable,
    next_offset: u64,
    gap: bool,
}

impl Continuation {
    fn observe(&mut self, header: &BatchHeader, now_ms: i64) {
        let base_offset = header.base_offset as u64;
        if self.gap || base_offset < self.next_offset {
            // Already recorded (a segment scanned again) or before this table's start.
            return;
        }
        if base_offset > self.next_offset {
            self.gap = true;
            return;
        }
        self.table.record(header, now_ms);
        self.next_offset = header.last_offset() as u64 + 1;
    }

    /// The table for a log that ends at `log_end_offset`, if this one covers all of it.
    fn finish(mut self, log_end_offset: u64) -> Option<ProducerTable> {
        if self.gap || self.next_offset < log_end_offset {
            return None;
        }
        if self.next_offset > log_end_offset {
            // The log ends before what the table saw: as if truncated there.
            self.table.forget_from(log_end_offset);
        }
        Some(self.table)
    }
}

/// Rebuilds the table while recovery scans the active segment, from the last snapshot when it
/// reaches into that segment, and from the segment's first batch otherwise (both are kept
/// until the scan is over, since the scan may show the snapshot does not fit). Producers whose
/// last batch is older than both are forgotten.
pub(crate) struct ProducerRecovery {
    limits: ProducerLimits,
    now_ms: i64,
    snapshot_end_offset: Option<u64>,
    from_snapshot: Option<Continuation>,
    from_active_segment: Option<Continuation>,
}

/// What recovery decided about producer state.
pub(crate) struct RecoveredProducers {
    pub table: ProducerTable,
    /// The snapshot file still describes a prefix of the log and may stay; otherwise it must
    /// be deleted before the log changes.
    pub snapshot_still_fits: bool,
}

impl ProducerRecovery {
    /// `snapshot`: the decoded snapshot file and the log end it covers, if there was a valid
    /// one. `now_ms` stands for the last append time of producers found by the scan.
    pub fn new(
        snapshot: Option<(ProducerTable, u64)>,
        limits: ProducerLimits,
        now_ms: i64,
    ) -> Self {
        let snapshot_end_offset = snapshot.as_ref().map(|(_, end_offset)| *end_offset);
        ProducerRecovery {
            limits,
            now_ms,
            snapshot_end_offset,
            from_snapshot: snapshot.map(|(table, end_offset)| Continuation {
                table,
                next_offset: end_offset,
                gap: false,
            }),
            from_active_segment: None,
        }
    }

    /// Recovery is about to scan the last segment, which starts at `base_offset`. Returns
    /// whether the snapshot reaches into it; if not, the whole segment must be scanned.
    pub fn enter_active_segment(&mut self, base_offset: u64) -> bool {
        if self
            .from_snapshot
            .as_ref()
            .is_some_and(|snapshot| snapshot.next_offset < base_offset)
        {
            self.from_snapshot = None;
        }
        self.from_active_segment = Some(Continuation {
            table: ProducerTable::new(self.limits),
            next_offset: base_offset,
            gap: false,
        });
        self.from_snapshot.is_some()
    }

    /// A valid batch of the last segment, in log order (a segment scanned again repeats them).
    pub fn observe(&mut self, header: &BatchHeader) {
        for continuation in [&mut self.from_snapshot, &mut self.from_active_segment]
            .into_iter()
            .flatten()
        {
            continuation.observe(header, self.now_ms);
        }
    }

    /// The table for the recovered log, which ends at `log_end_offset`.
    pub fn finish(self, log_end_offset: u64) -> RecoveredProducers {
        let fits = |end_offset: u64| end_offset <= log_end_offset;
        if let Some(table) = self
            .from_snapshot
            .and_then(|snapshot| snapshot.finish(log_end_offset))
        {
            return RecoveredProducers {
                table,
                snapshot_still_fits: self.snapshot_end_offset.is_some_and(fits),
            };
        }
        let table = self
            .from_active_segment
            .and_then(|segment| segment.finish(log_end_offset))
            .unwrap_or_else(|| ProducerTable::new(self.limits));
        RecoveredProducers {
            table,
            snapshot_still_fits: false,
        }
    }
}

#[cfg(test)]
mod tests;
