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
//! control batches (which carry no sequence), are not tracked. A batch the broker writes with a
//! producer id and no sequence (a group coordinator's transactional offsets, as Kafka writes
//! them) has only its epoch checked, and its transaction followed.
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
//! segment's end, even of no producer, so that a log with sealed segments always has one and
//! recovery can tell a lost one) and at close (unless it would be empty and the active segment
//! is small), replaced by a truncation before it cuts (with the table reloaded at the new end),
//! and deleted by an open that finds it does not fit, so it always describes a prefix of the
//! log. Defaults: `producer_idle_ms_max` one day (Kafka's
//! `producer.id.expiration.ms`; recovered producers count as having appended at the time of the
//! open), `producers_max` 10 000 per partition.
//!
//! # Transactions
//! The table also holds each producer's transaction state, as Kafka's `ProducerStateEntry`
//! does: the first offset of its open transaction (opened by its first transactional data
//! batch, closed by its next marker, `batch::read_transaction_marker`), the coordinator epoch
//! of its last marker, and that marker's place (so a truncation that removes the marker opens
//! the transaction again). From it the log computes its last stable offset (the first offset
//! of the oldest open transaction, [`ProducerTable::first_open_transaction_offset`]), and an
//! ABORT marker yields the [`AbortedTransaction`] the log indexes. The rules of Kafka's
//! `ProducerAppendInfo`: a marker whose producer epoch is older than the producer's is refused
//! (`InvalidProducerEpoch`), as is one whose coordinator epoch is older than the last marker's
//! (`TransactionCoordinatorFenced`); a marker of a newer epoch makes it the producer's epoch
//! (its next batch starts at sequence 0); a non-transactional batch from a producer with an
//! open transaction is refused (`InvalidTransactionState`). Producers with an open transaction
//! never expire, and are evicted for room only when every producer has one (the bound holds;
//! the transaction's records then count as stable, which `producers_max` makes a matter of ten
//! thousand concurrent transactions on one partition).
//!
//! Before a transactional batch opens its producer's transaction, the producer's request must
//! have been verified with the transaction coordinator (KIP-890 part 1, `verification`): the
//! table hands out the guard such a request shows ([`ProducerTable::start_verification`]) and
//! [`ProducerTable::check`] asks for it.
//!
//! A truncation (a Raft follower overruled by its leader) reloads the table as Kafka's
//! `truncateAndReload` does: the latest snapshot at or below the new end, with the batches after
//! it replayed (`producer_replay.rs`), so an epoch, sequence or transaction only the cut batches
//! gave is gone. [`ProducerTable::forget_from`] serves the one cut that has no snapshot to
//! reload: recovery's table that saw past where the log now ends. For it the table keeps each
//! producer's last marker offset and the first offset of the transaction it closed, and reopens
//! that transaction when the marker is cut.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::batch::{sequence_after, BatchHeader, TransactionMarker};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::log::transactions::AbortedTransaction;

mod verification;

pub use verification::VerificationGuard;
use verification::Verifications;

/// Batches remembered per producer (Kafka's `ProducerStateEntry.NUM_BATCHES_TO_RETAIN`).
pub(crate) const BATCHES_PER_PRODUCER_MAX: usize = 5;

/// Version of the snapshot layout written by [`ProducerTable::encode`] (version 1, without the
/// transaction fields, is still read).
const SNAPSHOT_VERSION: u16 = 2;
/// version u16, crc u32, end offset u64, producer count u32.
const SNAPSHOT_HEADER_BYTES: usize = 2 + 4 + 8 + 4;
/// producer id i64, epoch i16, last append ms i64, coordinator epoch i32, open transaction's
/// first offset i64, last marker's offset i64, the first offset of the transaction it closed
/// i64 (-1: none, each), batch count u8.
const SNAPSHOT_PRODUCER_BYTES: usize = 8 + 2 + 8 + 4 + 8 + 8 + 8 + 1;
/// No coordinator epoch seen yet (Kafka's `RecordBatch.NO_PARTITION_LEADER_EPOCH`).
const NO_COORDINATOR_EPOCH: i32 = -1;
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

/// Where a producer's last marker is, and the transaction it closed (`None`: it closed none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MarkerPlace {
    offset: u64,
    transaction_first_offset: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// The shard's clock at the producer's last append (at recovery, for scanned batches).
    last_append_ms: i64,
    /// Oldest first; at most [`BATCHES_PER_PRODUCER_MAX`], all of `epoch`. Empty only after a
    /// marker (a new epoch forgets the old epoch's batches); an entry always has batches, a
    /// marker or an open transaction.
    batches: VecDeque<ProducerBatch>,
    /// The coordinator epoch of the producer's last marker ([`NO_COORDINATOR_EPOCH`]: none).
    coordinator_epoch: i32,
    /// The first offset of the producer's open transaction.
    transaction_first_offset: Option<u64>,
    last_marker: Option<MarkerPlace>,
}

impl ProducerEntry {
    fn new(epoch: i16, now_ms: i64) -> ProducerEntry {
        ProducerEntry {
            epoch,
            last_append_ms: now_ms,
            batches: VecDeque::with_capacity(BATCHES_PER_PRODUCER_MAX),
            coordinator_epoch: NO_COORDINATOR_EPOCH,
            transaction_first_offset: None,
            last_marker: None,
        }
    }

    /// The sequence the producer's next batch of `epoch` must start at: 0 for a new epoch or
    /// after a marker emptied the batches, else right after the last batch.
    fn expected_sequence(&self, epoch: i16) -> i32 {
        match self.batches.back() {
            Some(last) if epoch == self.epoch => sequence_after(last.last_sequence, 1),
            _ => 0,
        }
    }

    /// The verdict on a retry of one of the remembered batches (same epoch, same sequence
    /// range): its offsets.
    fn duplicate_of(&self, header: &BatchHeader) -> Option<Verdict> {
        let received = header.base_sequence;
        if header.producer_epoch != self.epoch || received < 0 {
            return None;
        }
        let last_sequence = header.last_sequence();
        self.batches
            .iter()
            .find(|b| b.base_sequence == received && b.last_sequence == last_sequence)
            .map(|original| Verdict::Duplicate {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
            })
    }

    /// Whether the entry still says anything (see `batches`).
    fn holds_state(&self) -> bool {
        !self.batches.is_empty()
            || self.last_marker.is_some()
            || self.transaction_first_offset.is_some()
    }
}

/// What the table knows of one producer (Kafka's DescribeProducers answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The last sequence of its last batch; -1 when it has none (only markers).
    pub last_sequence: i32,
    /// When it last appended, by the broker's clock (Kafka reports its last batch's
    /// timestamp; the table keeps the append time, which is that for a producer's records
    /// stamped on arrival).
    pub last_append_ms: i64,
    /// The coordinator epoch of its last marker; -1 when none.
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction.
    pub transaction_first_offset: Option<u64>,
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

/// The sequence and transaction state of every producer the partition remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
    /// `(last_append_ms, producer_id)` of every entry, least recently appended first: the
    /// order in which producers expire or are evicted.
    by_last_append: BTreeSet<(i64, i64)>,
    /// `(first_offset, producer_id)` of every open transaction, oldest first.
    open_transactions: BTreeSet<(u64, i64)>,
    /// The producers whose requests are being verified (pure memory, not in the snapshot).
    verifications: Verifications,
    limits: ProducerLimits,
}

/// Whether the table keeps sequence state for this batch (a data batch of a producer).
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
            open_transactions: BTreeSet::new(),
            verifications: Verifications::default(),
            limits,
        }
    }

    /// The first offset of the oldest open transaction: the log's last stable offset, unless
    /// the high-water mark is lower.
    pub fn first_open_transaction_offset(&self) -> Option<u64> {
        self.open_transactions
            .first()
            .map(|&(first_offset, _)| first_offset)
    }

    /// Every producer the table remembers, by producer id.
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        let mut producers: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, entry)| ActiveProducer {
                producer_id,
                producer_epoch: entry.epoch,
                last_sequence: entry.batches.back().map_or(-1, |batch| batch.last_sequence),
                last_append_ms: entry.last_append_ms,
                coordinator_epoch: entry.coordinator_epoch,
                transaction_first_offset: entry.transaction_first_offset,
            })
            .collect();
        producers.sort_unstable_by_key(|producer| producer.producer_id);
        producers
    }

    pub fn open_transaction_count(&self) -> usize {
        self.open_transactions.len()
    }

    /// The open transactions, oldest first: `(producer id, first offset)`.
    pub fn open_transactions(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.open_transactions
            .iter()
            .map(|&(first_offset, producer_id)| (producer_id, first_offset))
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides what to do with `header`'s batch before it is given offsets. Changes nothing:
    /// the caller [`record`](Self::record)s the batch once it is placed in the log. With
    /// `verification` (a producer's request under KIP-890, with the guard it was given), a
    /// transactional batch that would open a transaction is refused unless the guard still
    /// holds (see `verification`).
    pub fn check(
        &self,
        header: &BatchHeader,
        verification: Option<VerificationGuard>,
    ) -> Result<Verdict, LogError> {
        if !is_tracked(header) {
            return Ok(Verdict::Append);
        }
        let producer_id = header.producer_id;
        // Negative only for a batch the broker writes (`CheckedBatch::produced` refuses one):
        // a group coordinator's transactional offsets carry no sequence, and only their epoch
        // and transaction are checked, as Kafka checks a coordinator's append.
        let received = header.base_sequence;
        let known = self.producers.get(&producer_id);
        let epoch = header.producer_epoch;
        if let Some(original) = known.and_then(|entry| entry.duplicate_of(header)) {
            return Ok(original);
        }
        if let Some(guard) = verification {
            let transaction_open =
                known.is_some_and(|entry| entry.transaction_first_offset.is_some());
            self.verifications.check(header, transaction_open, guard)?;
        }
        let Some(entry) = known else {
            return Ok(Verdict::Append);
        };
        if epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id,
                current: entry.epoch,
                received: epoch,
            });
        }
        let expected = entry.expected_sequence(epoch);
        if received >= 0 && received != expected {
            return Err(LogError::OutOfOrderSequence {
                producer_id,
                expected,
                received,
            });
        }
        if entry.transaction_first_offset.is_some() && !header.is_transactional() {
            return Err(LogError::InvalidTransactionState {
                producer_id,
                reason: "a non-transactional batch while its transaction is open",
            });
        }
        Ok(Verdict::Append)
    }

    /// Kafka's checks of a transaction marker before it is written: not from an older
    /// producer epoch than the producer's (`InvalidProducerEpoch`), nor from an older
    /// coordinator than the last marker's (`TransactionCoordinatorFenced`). A marker for a
    /// producer the table does not know is accepted.
    pub fn check_marker(&self, marker: &TransactionMarker) -> Result<(), LogError> {
        let producer_id = marker.producer_id;
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if marker.producer_epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id,
                current: entry.epoch,
                received: marker.producer_epoch,
            });
        }
        if marker.coordinator_epoch < entry.coordinator_epoch {
            return Err(LogError::TransactionCoordinatorFenced {
                producer_id,
                current: entry.coordinator_epoch,
                received: marker.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Notes a batch placed in the log (its header carries the offsets it was given), at
    /// `now_ms`; `marker` is the transaction marker it holds, if it is one. Recovery calls it
    /// for the batches it scans, without [`check`](Self::check): what is in the log is the
    /// truth. Returns the transaction an ABORT marker closed, for the log's index.
    pub fn record(
        &mut self,
        header: &BatchHeader,
        marker: Option<&TransactionMarker>,
        now_ms: i64,
    ) -> Option<AbortedTransaction> {
        assert!(header.base_offset >= 0, "a placed batch has an offset");
        if header.has_producer_id() && header.is_transactional() {
            // Its transaction is open here now, or over: either way verified no longer.
            self.verifications.remove(header.producer_id);
        }
        if let Some(marker) = marker {
            return self.record_marker(header, marker, now_ms);
        }
        // Without a sequence (a coordinator's batch) only a transaction is followed.
        let sequenced = header.base_sequence >= 0;
        if !is_tracked(header) || !(sequenced || header.is_transactional()) {
            return None;
        }
        let base_offset = header.base_offset as u64;
        let producer_id = header.producer_id;
        let entry = self.touch(producer_id, header.producer_epoch, now_ms);
        if sequenced {
            let batch = ProducerBatch {
                base_sequence: header.base_sequence,
                last_sequence: header.last_sequence(),
                base_offset,
                last_offset: header.last_offset() as u64,
            };
            debug_assert!(entry
                .batches
                .back()
                .is_none_or(|last| last.last_offset < batch.base_offset));
            if entry.batches.len() == BATCHES_PER_PRODUCER_MAX {
                entry.batches.pop_front();
            }
            entry.batches.push_back(batch);
        }
        let opened = header.is_transactional() && entry.transaction_first_offset.is_none();
        if opened {
            entry.transaction_first_offset = Some(base_offset);
            self.open_transactions.insert((base_offset, producer_id));
        }
        None
    }

    /// [`record`](Self::record) of a marker: the producer's epoch and coordinator epoch become
    /// the marker's, and its open transaction (if any) closes.
    fn record_marker(
        &mut self,
        header: &BatchHeader,
        marker: &TransactionMarker,
        now_ms: i64,
    ) -> Option<AbortedTransaction> {
        let producer_id = marker.producer_id;
        let offset = header.base_offset as u64;
        let entry = self.touch(producer_id, marker.producer_epoch, now_ms);
        entry.coordinator_epoch = marker.coordinator_epoch;
        let closed = entry.transaction_first_offset.take();
        entry.last_marker = Some(MarkerPlace {
            offset,
            transaction_first_offset: closed,
        });
        let first_offset = closed?;
        self.open_transactions.remove(&(first_offset, producer_id));
        (!marker.committed).then(|| AbortedTransaction {
            producer_id,
            first_offset,
            last_offset: offset,
            last_stable_offset: self.first_open_transaction_offset().unwrap_or(offset + 1),
        })
    }

    /// The producer's entry, made the most recently appended at `now_ms` (created if new, its
    /// batches forgotten if `epoch` is not its epoch).
    fn touch(&mut self, producer_id: i64, epoch: i16, now_ms: i64) -> &mut ProducerEntry {
        self.expire_idle(now_ms);
        match self.producers.get(&producer_id) {
            Some(entry) => {
                self.by_last_append
                    .remove(&(entry.last_append_ms, producer_id));
            }
            None => {
                if self.producers.len() == self.limits.producers_max {
                    self.evict_one();
                }
            }
        }
        self.by_last_append.insert((now_ms, producer_id));
        self.producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch, now_ms));
        debug_assert_eq!(self.by_last_append.len(), self.producers.len());
        assert!(self.producers.len() <= self.limits.producers_max);
        let entry = self
            .producers
            .get_mut(&producer_id)
            .expect("inserted above");
        if entry.epoch != epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.last_append_ms = now_ms;
        entry
    }

    /// Forgets every batch and marker at or after `offset` (the log was cut there), and the
    /// producers left with nothing: they become unknown, so their next batch is accepted with
    /// any sequence (its predecessor may be older than the five remembered batches). A
    /// transaction opened at or after `offset` is forgotten; one whose marker was cut opens
    /// again.
    pub fn forget_from(&mut self, offset: u64) {
        let by_last_append = &mut self.by_last_append;
        let open_transactions = &mut self.open_transactions;
        self.producers.retain(|&producer_id, entry| {
            while entry
                .batches
                .back()
                .is_some_and(|batch| batch.last_offset >= offset)
            {
                entry.batches.pop_back();
            }
            if let Some(first_offset) = entry.transaction_first_offset {
                if first_offset >= offset {
                    open_transactions.remove(&(first_offset, producer_id));
                    entry.transaction_first_offset = None;
                }
            }
            if let Some(marker) = entry.last_marker {
                if marker.offset >= offset {
                    entry.last_marker = None;
                    let reopened = marker
                        .transaction_first_offset
                        .filter(|&first_offset| first_offset < offset);
                    if let Some(first_offset) = reopened {
                        debug_assert!(entry.transaction_first_offset.is_none());
                        entry.transaction_first_offset = Some(first_offset);
                        open_transactions.insert((first_offset, producer_id));
                    }
                }
            }
            let keep = entry.holds_state();
            if !keep {
                by_last_append.remove(&(entry.last_append_ms, producer_id));
            }
            keep
        });
    }

    /// The guard a request of the producer must show to open a transaction here (see
    /// `verification`); [`VerificationGuard::SENTINEL`] while its transaction is open here,
    /// when none is needed.
    pub fn start_verification(
        &mut self,
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        now_ms: i64,
    ) -> VerificationGuard {
        let open = self
            .producers
            .get(&producer_id)
            .is_some_and(|entry| entry.transaction_first_offset.is_some());
        if open {
            return VerificationGuard::SENTINEL;
        }
        self.verifications.start(
            producer_id,
            epoch,
            sequence,
            now_ms,
            self.limits.producers_max,
            self.limits.idle_ms_max,
        )
    }

    pub fn clear(&mut self) {
        self.verifications.clear();
        self.producers.clear();
        self.by_last_append.clear();
        self.open_transactions.clear();
    }

    /// Forgets the producers idle for longer than `idle_ms_max`, except those with an open
    /// transaction (the coordinator aborts it when it times out; until then its records must
    /// stay unstable).
    fn expire_idle(&mut self, now_ms: i64) {
        let Some(idle_ms_max) = self.limits.idle_ms_max else {
            return;
        };
        let idle_ms_max = i64::try_from(idle_ms_max).unwrap_or(i64::MAX);
        let expired: Vec<(i64, i64)> = self
            .by_last_append
            .iter()
            .take_while(|&&(last_append_ms, _)| now_ms.saturating_sub(last_append_ms) > idle_ms_max)
            .filter(|(_, producer_id)| {
                self.producers[producer_id]
                    .transaction_first_offset
                    .is_none()
            })
            .copied()
            .collect();
        for key in expired {
            self.forget(key);
        }
    }

    /// Makes room for one producer: forgets the least recently appended one without an open
    /// transaction, or the least recent of all when every producer has one.
    fn evict_one(&mut self) {
        let victim = self
            .by_last_append
            .iter()
            .find(|(_, producer_id)| {
                self.producers[producer_id]
                    .transaction_first_offset
                    .is_none()
            })
            .or_else(|| self.by_last_append.first())
            .copied();
        if let Some(key) = victim {
            self.forget(key);
        }
    }

    fn forget(&mut self, (last_append_ms, producer_id): (i64, i64)) {
        self.by_last_append.remove(&(last_append_ms, producer_id));
        if let Some(entry) = self.producers.remove(&producer_id) {
            if let Some(first_offset) = entry.transaction_first_offset {
                self.open_transactions.remove(&(first_offset, producer_id));
            }
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
            out.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            let marker = entry.last_marker;
            for offset in [
                entry.transaction_first_offset,
                marker.map(|marker| marker.offset),
                marker.and_then(|marker| marker.transaction_first_offset),
            ] {
                debug_assert!(offset.is_none_or(|offset| offset < end_offset));
                out.extend_from_slice(&offset.map_or(-1, |offset| offset as i64).to_be_bytes());
            }
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
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
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
            let mut entry = ProducerEntry::new(epoch, last_append_ms);
            if version >= 2 {
                entry.coordinator_epoch = i32::from_be_bytes(reader.take()?);
                let mut offset = || -> Result<Option<u64>, String> {
                    let offset = i64::from_be_bytes(reader.take()?);
                    match offset {
                        -1 => Ok(None),
                        offset if (0..end_offset as i64).contains(&offset) => {
                            Ok(Some(offset as u64))
                        }
                        offset => Err(format!(
                            "producer {producer_id} has an impossible offset {offset}"
                        )),
                    }
                };
                entry.transaction_first_offset = offset()?;
                let marker_offset = offset()?;
                let closed = offset()?;
                entry.last_marker = match (marker_offset, closed) {
                    (Some(offset), closed) if closed.is_none_or(|first| first < offset) => {
                        Some(MarkerPlace {
                            offset,
                            transaction_first_offset: closed,
                        })
                    }
                    (None, None) => None,
                    _ => {
                        return Err(format!(
                            "producer {producer_id} has an impossible marker {marker_offset:?}"
                        ))
                    }
                };
            }
            let [batch_count] = reader.take()?;
            let batch_count = usize::from(batch_count);
            let batches_min = if version >= 2 { 0 } else { 1 };
            if producer_id < 0 || !(batches_min..=BATCHES_PER_PRODUCER_MAX).contains(&batch_count) {
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
            entry.batches = batches;
            if !entry.holds_state() {
                return Err(format!("producer {producer_id} holds nothing"));
            }
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
                table.evict_one();
            }
            table
                .by_last_append
                .insert((entry.last_append_ms, producer_id));
            if let Some(first_offset) = entry.transaction_first_offset {
                table.open_transactions.insert((first_offset, producer_id));
            }
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
    /// The transactions aborted by the markers observed, in log order.
    aborted: Vec<AbortedTransaction>,
}

impl Continuation {
    fn new(table: ProducerTable, next_offset: u64) -> Continuation {
        Continuation {
            table,
            next_offset,
            gap: false,
            aborted: Vec::new(),
        }
    }

    fn observe(&mut self, header: &BatchHeader, marker: Option<&TransactionMarker>, now_ms: i64) {
        let base_offset = header.base_offset as u64;
        if self.gap || base_offset < self.next_offset {
            // Already recorded (a segment scanned again) or before this table's start.
            return;
        }
        if base_offset > self.next_offset {
            self.gap = true;
            return;
        }
        self.aborted
            .extend(self.table.record(header, marker, now_ms));
        self.next_offset = header.last_offset() as u64 + 1;
    }

    /// The table for a log that ends at `log_end_offset` and the transactions aborted in what
    /// it observed, if this one covers all of it.
    fn finish(mut self, log_end_offset: u64) -> Option<(ProducerTable, Vec<AbortedTransaction>)> {
        if self.gap || self.next_offset < log_end_offset {
            return None;
        }
        if self.next_offset > log_end_offset {
            // The log ends before what the table saw: as if truncated there.
            self.table.forget_from(log_end_offset);
            self.aborted
                .retain(|aborted| aborted.last_offset < log_end_offset);
        }
        Some((self.table, self.aborted))
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
    /// The transactions aborted by the markers the scan met after the table's start, in log
    /// order (the scanned segment's aborted-transaction index is made of them).
    pub aborted: Vec<AbortedTransaction>,
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
            from_snapshot: snapshot.map(|(table, end_offset)| Continuation::new(table, end_offset)),
            from_active_segment: None,
        }
    }

    /// Continues from `table`, the state of the log up to `end_offset` that recovery rebuilt
    /// itself (the snapshot was lost or did not check out) and wrote as the snapshot.
    pub fn resume_from(&mut self, table: ProducerTable, end_offset: u64) {
        self.snapshot_end_offset = Some(end_offset);
        self.from_snapshot = Some(Continuation::new(table, end_offset));
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
        self.from_active_segment = Some(Continuation::new(
            ProducerTable::new(self.limits),
            base_offset,
        ));
        self.from_snapshot.is_some()
    }

    /// A valid batch of the last segment, in log order (a segment scanned again repeats them),
    /// and the transaction marker it holds, if it is one.
    pub fn observe(&mut self, header: &BatchHeader, marker: Option<&TransactionMarker>) {
        for continuation in [&mut self.from_snapshot, &mut self.from_active_segment]
            .into_iter()
            .flatten()
        {
            continuation.observe(header, marker, self.now_ms);
        }
    }

    /// The table for the recovered log, which ends at `log_end_offset`.
    pub fn finish(self, log_end_offset: u64) -> RecoveredProducers {
        let fits = |end_offset: u64| end_offset <= log_end_offset;
        if let Some((table, aborted)) = self
            .from_snapshot
            .and_then(|snapshot| snapshot.finish(log_end_offset))
        {
            return RecoveredProducers {
                table,
                aborted,
                snapshot_still_fits: self.snapshot_end_offset.is_some_and(fits),
            };
        }
        let (table, aborted) = self
            .from_active_segment
            .and_then(|segment| segment.finish(log_end_offset))
            .unwrap_or_else(|| (ProducerTable::new(self.limits), Vec::new()));
        RecoveredProducers {
            table,
            aborted,
            snapshot_still_fits: false,
        }
    }
}

#[cfg(test)]
mod tests;
