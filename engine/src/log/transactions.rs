//! A partition's transactions as its reads see them: the last stable offset and the aborted
//! transactions, in Kafka's terms (KIP-98).
//!
//! The producer table (`producers/`) follows each producer's open transaction from the batches
//! the log appends, whichever way they came (a producer's, a broker-written marker, a
//! follower's copy, journal replay, recovery's scan: all go through `PartitionLog::place` or
//! recovery's observer). From it:
//! - the **last stable offset** (LSO): the first offset of the oldest open transaction, or the
//!   high-water mark when that is lower or no transaction is open. A `read_committed` consumer
//!   reads below it only, and ListOffsets LATEST answers it;
//! - an **aborted transaction** for each ABORT marker that closed a transaction: the producer,
//!   the transaction's first offset, the marker's offset, and the LSO once it closed. It is
//!   kept by the segment holding the marker (Kafka's per-segment transaction index), so it
//!   leaves with that segment (retention, truncation of the segment, the cleaner's swap), and a
//!   truncation within the segment drops the entries at or after the cut.
//!
//! A `read_committed` read returns, besides the batches, the aborted transactions that overlap
//! them (Kafka's `LogSegment.collectAbortedTxns`): every entry whose marker is at or after the
//! read's offset and whose transaction starts before the read's end. The consumer skips a
//! producer's batches from an entry's first offset until it meets the producer's ABORT marker.
//!
//! Bounds: the entries live in memory, 32 bytes per aborted transaction, for the whole log
//! (Kafka reads its `.txnindex` files on demand instead). A marker takes at least 78 bytes of
//! log, so they never exceed about 40% of the log's size, and a workload that aborts rarely
//! holds next to nothing; a log of mostly aborted one-record transactions is the case that
//! would call for reading the files on demand.
//!
//! On disk a segment's entries are its `.txnindex` file in Kafka's format
//! ([`encode_index`]/[`decode_index`]: 34-byte entries, big-endian: version i16 0, producer id
//! i64, first offset i64, last offset i64, last stable offset i64).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::batch::{read_transaction_marker, BatchHeader, TransactionMarker};

/// The transaction marker a placed or scanned batch holds, if it is one: a transactional
/// control batch of type COMMIT or ABORT. A control batch whose record does not read as a
/// marker is none (Kafka skips an empty one the same way): it changes no transaction.
pub(crate) fn marker_of(header: &BatchHeader, bytes: &[u8]) -> Option<TransactionMarker> {
    if !(header.is_control() && header.is_transactional()) {
        return None;
    }
    read_transaction_marker(bytes).ok().flatten()
}

/// A transaction an ABORT marker closed (Kafka's `AbortedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTransaction {
    pub producer_id: i64,
    /// The offset of the transaction's first batch in this partition.
    pub first_offset: u64,
    /// The offset of the ABORT marker.
    pub last_offset: u64,
    /// The partition's last stable offset once the marker was written (not above the log end
    /// then): no transaction closed after it started before it.
    pub last_stable_offset: u64,
}

/// The size of one `.txnindex` entry.
pub(crate) const INDEX_ENTRY_BYTES: usize = 2 + 8 + 8 + 8 + 8;
/// The only entry version Kafka writes (`AbortedTxn.CURRENT_VERSION`).
const INDEX_ENTRY_VERSION: i16 = 0;

pub(crate) fn transaction_index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.txnindex"))
}

/// A segment's aborted transactions as its `.txnindex` file holds them.
pub(crate) fn encode_index(entries: &[AbortedTransaction]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * INDEX_ENTRY_BYTES);
    for entry in entries {
        out.extend_from_slice(&INDEX_ENTRY_VERSION.to_be_bytes());
        out.extend_from_slice(&entry.producer_id.to_be_bytes());
        out.extend_from_slice(&(entry.first_offset as i64).to_be_bytes());
        out.extend_from_slice(&(entry.last_offset as i64).to_be_bytes());
        out.extend_from_slice(&(entry.last_stable_offset as i64).to_be_bytes());
    }
    out
}

/// Reads a `.txnindex` file of the segment `[base_offset, end_offset)`, checking every entry
/// (version, a whole number of entries, offsets in order and inside the segment); why not,
/// otherwise (the caller rebuilds the index from a scan).
pub(crate) fn decode_index(
    bytes: &[u8],
    base_offset: u64,
    end_offset: u64,
) -> Result<Vec<AbortedTransaction>, String> {
    if !bytes.len().is_multiple_of(INDEX_ENTRY_BYTES) {
        return Err(format!(
            "{} bytes is not a whole number of entries",
            bytes.len()
        ));
    }
    let mut entries: Vec<AbortedTransaction> = Vec::with_capacity(bytes.len() / INDEX_ENTRY_BYTES);
    for chunk in bytes.chunks_exact(INDEX_ENTRY_BYTES) {
        let field =
            |at: usize| i64::from_be_bytes(chunk[at..at + 8].try_into().expect("an 8-byte field"));
        let version = i16::from_be_bytes([chunk[0], chunk[1]]);
        if version != INDEX_ENTRY_VERSION {
            return Err(format!("unknown entry version {version}"));
        }
        let (producer_id, first, last, stable) = (field(2), field(10), field(18), field(26));
        let impossible = || {
            format!(
                "impossible entry: producer {producer_id}, offsets {first}..={last}, \
                 stable {stable}"
            )
        };
        let (Ok(first_offset), Ok(last_offset), Ok(last_stable_offset)) = (
            u64::try_from(first),
            u64::try_from(last),
            u64::try_from(stable),
        ) else {
            return Err(impossible());
        };
        let in_order = entries
            .last()
            .is_none_or(|previous| previous.last_offset < last_offset);
        let inside = (base_offset..end_offset).contains(&last_offset);
        if producer_id < 0 || first_offset >= last_offset || !inside || !in_order {
            return Err(impossible());
        }
        entries.push(AbortedTransaction {
            producer_id,
            first_offset,
            last_offset,
            last_stable_offset,
        });
    }
    Ok(entries)
}

/// Adds to `found` the entries of `entries` (one segment's, in marker order) that a read of
/// `[offset, offset_end)` must report: marker at or after `offset`, transaction starting before
/// `offset_end`. Returns whether the search is complete: an entry whose last stable offset
/// reaches `offset_end` shows every transaction starting before `offset_end` had ended by its
/// marker, so no later marker can close one (Kafka's `TxnIndexSearchResult.isComplete`), and
/// the search need not read later segments.
pub(crate) fn collect_overlapping(
    entries: &[AbortedTransaction],
    offset: u64,
    offset_end: u64,
    found: &mut Vec<AbortedTransaction>,
) -> bool {
    for entry in entries {
        if entry.last_offset >= offset && entry.first_offset < offset_end {
            found.push(*entry);
        }
        if entry.last_stable_offset >= offset_end {
            return true;
        }
    }
    false
}

/// The cleaner's view of the transactions as it walks the log from its start, in offset order
/// (Kafka's `CleanedTransactionMetadata`): which data batches belong to aborted transactions
/// (left out of the key map and removed, so an aborted record never shadows a committed one
/// and nothing aborted survives a cleaning), and which markers may go.
///
/// A marker may go once no record of its transaction is left: a COMMIT when the walk met no
/// batch of its transaction, an ABORT when it met none of its aborted data (this walk removes
/// what it meets, so the next one meets none). It then goes after `delete.retention.ms`, so a
/// consumer that read the transaction's data before it went still finds the marker: the first
/// cleaning that finds it may go stamps it with a delete horizon (KIP-534, `batch::
/// with_delete_horizon`), a later one past that time removes it. An ABORT marker that stays
/// because its data was met keeps its index entry; the entry of one that may go is dropped at
/// once (no data is left to skip), so no entry ever outlives its marker: a consumer that met an
/// entry without the marker would skip its producer's later transactions. A control batch that
/// is no transaction marker (Raft's own) always stays.
pub(crate) struct CleanedTransactions {
    /// The aborted transactions not yet reached, by first offset.
    pending: std::collections::VecDeque<AbortedTransaction>,
    /// The aborted transactions the walk is inside, by producer, and whether it met their data.
    ongoing_aborted: HashMap<i64, (AbortedTransaction, bool)>,
    /// The producers whose transaction the walk is inside and is not aborted.
    ongoing_committed: HashSet<i64>,
}

/// What a cleaning does with a control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlFate {
    /// It stays; an ABORT marker whose data was met keeps its index entry.
    Keep(Option<AbortedTransaction>),
    /// Its transaction has no data left: it goes once its delete horizon has passed.
    Discardable,
}

impl CleanedTransactions {
    /// For a walk of a log whose aborted-transaction entries are `entries`.
    pub fn of<'a>(entries: impl Iterator<Item = &'a AbortedTransaction>) -> CleanedTransactions {
        let mut pending: Vec<AbortedTransaction> = entries.copied().collect();
        pending.sort_by_key(|entry| entry.first_offset);
        CleanedTransactions {
            pending: pending.into(),
            ongoing_aborted: HashMap::new(),
            ongoing_committed: HashSet::new(),
        }
    }

    /// The walk reached a batch ending at `last_offset`: the aborted transactions begun by
    /// then are under way.
    fn reach(&mut self, last_offset: u64) {
        while let Some(entry) = self
            .pending
            .front()
            .filter(|entry| entry.first_offset <= last_offset)
            .copied()
        {
            self.pending.pop_front();
            self.ongoing_aborted
                .insert(entry.producer_id, (entry, false));
        }
    }

    /// The next data batch of the walk: whether it is data of an aborted transaction.
    pub fn on_data_batch(&mut self, header: &BatchHeader) -> bool {
        debug_assert!(!header.is_control());
        self.reach(header.last_offset() as u64);
        if !header.is_transactional() {
            return false;
        }
        match self.ongoing_aborted.get_mut(&header.producer_id) {
            Some((_, met)) => {
                *met = true;
                true
            }
            None => {
                self.ongoing_committed.insert(header.producer_id);
                false
            }
        }
    }

    /// The next control batch of the walk, and the transaction marker it holds, if it is one.
    pub fn on_control_batch(
        &mut self,
        header: &BatchHeader,
        marker: Option<&TransactionMarker>,
    ) -> ControlFate {
        debug_assert!(header.is_control());
        self.reach(header.last_offset() as u64);
        let Some(marker) = marker else {
            return ControlFate::Keep(None);
        };
        let producer_id = marker.producer_id;
        if marker.committed {
            return match self.ongoing_committed.remove(&producer_id) {
                true => ControlFate::Keep(None),
                false => ControlFate::Discardable,
            };
        }
        match self.ongoing_aborted.remove(&producer_id) {
            Some((entry, true)) => ControlFate::Keep(Some(entry)),
            _ => ControlFate::Discardable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(producer_id: i64, first: u64, last: u64) -> AbortedTransaction {
        AbortedTransaction {
            producer_id,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        }
    }

    #[test]
    fn an_entry_is_kafkas_34_bytes() {
        let bytes = encode_index(&[entry(7, 100, 105)]);
        assert_eq!(bytes.len(), 34);
        assert_eq!(&bytes[..2], &[0, 0], "version 0");
        assert_eq!(&bytes[2..10], &7i64.to_be_bytes());
        assert_eq!(&bytes[10..18], &100i64.to_be_bytes());
        assert_eq!(&bytes[18..26], &105i64.to_be_bytes());
        assert_eq!(&bytes[26..34], &106i64.to_be_bytes());
    }

    #[test]
    fn a_read_reports_the_transactions_it_overlaps_and_stops_once_they_all_ended() {
        // 2's transaction was open when 1's ended: 1's entry has a last stable offset of 3.
        let entries = [
            AbortedTransaction {
                last_stable_offset: 3,
                ..entry(1, 0, 4)
            },
            entry(2, 3, 9),
            entry(3, 12, 15),
        ];
        let found = |offset, end| {
            let mut found = Vec::new();
            let complete = collect_overlapping(&entries, offset, end, &mut found);
            let producers: Vec<i64> = found.iter().map(|entry| entry.producer_id).collect();
            (producers, complete)
        };
        assert_eq!(found(0, 3), (vec![1], true), "stable at 3 once 1 aborted");
        assert_eq!(found(0, 4), (vec![1, 2], true));
        assert_eq!(found(5, 12), (vec![2], true), "3 starts at the read's end");
        assert_eq!(
            found(10, 20),
            (vec![3], false),
            "a later segment may hold more"
        );
        assert_eq!(found(16, 20), (vec![], false));
    }

    /// A one-offset batch header of `producer_id` at `offset`: transactional data, or a
    /// marker (control) batch.
    fn header_at(producer_id: i64, offset: u64, control: bool) -> BatchHeader {
        let bytes = crate::batch::encode_plain(
            &[crate::batch::PlainRecord {
                offset: 0,
                timestamp_ms: 0,
                key: None,
                value: Some(b"v"),
            }],
            crate::batch::ProducerFields {
                producer_id,
                producer_epoch: 0,
                base_sequence: -1,
                attributes: 0,
            }
            .with_transaction_bits(control),
        );
        BatchHeader {
            base_offset: offset as i64,
            ..BatchHeader::parse(&bytes).unwrap()
        }
    }

    proptest! {
        /// Against a model of transactions: over any history of which a cleaning already
        /// removed some data batches, the walk flags exactly the aborted transactions' data,
        /// keeps exactly the markers whose transaction still has a batch (an ABORT with its
        /// index entry), and lets every other marker go.
        #[test]
        fn the_cleaner_keeps_exactly_the_markers_whose_transaction_has_data_left(
            events in proptest::collection::vec((0i64..3, 0u8..4, any::<bool>()), 1..60),
        ) {
            // (offset, producer, Some(committed) for a marker, whether still in the log)
            let mut history: Vec<(u64, i64, Option<bool>, bool)> = Vec::new();
            let mut open: HashMap<i64, u64> = HashMap::new();
            let mut entries = Vec::new();
            for (offset, &(producer_id, kind, present)) in events.iter().enumerate() {
                let offset = offset as u64;
                match kind {
                    0 | 1 => {
                        open.entry(producer_id).or_insert(offset);
                        history.push((offset, producer_id, None, present));
                    }
                    kind => {
                        let committed = kind == 2;
                        if let Some(first_offset) = open.remove(&producer_id) {
                            if !committed {
                                entries.push(entry(producer_id, first_offset, offset));
                            }
                        }
                        history.push((offset, producer_id, Some(committed), true));
                    }
                }
            }
            let mut walk = CleanedTransactions::of(entries.iter());
            for (index, &(offset, producer_id, marker, present)) in history.iter().enumerate() {
                if !present {
                    continue;
                }
                match marker {
                    None => {
                        // A data batch belongs to the transaction its producer's next marker ends.
                        let aborted = history[index..]
                            .iter()
                            .find(|&&(_, producer, marker, _)| producer == producer_id && marker.is_some())
                            .is_some_and(|&(_, _, marker, _)| marker == Some(false));
                        prop_assert_eq!(walk.on_data_batch(&header_at(producer_id, offset, false)), aborted);
                    }
                    Some(committed) => {
                        let data_left = history[..index]
                            .iter()
                            .rev()
                            .take_while(|&&(_, producer, marker, _)| producer != producer_id || marker.is_none())
                            .any(|&(_, producer, _, present)| producer == producer_id && present);
                        let marker = TransactionMarker { producer_id, producer_epoch: 0, coordinator_epoch: 0, committed };
                        let fate = walk.on_control_batch(&header_at(producer_id, offset, true), Some(&marker));
                        let expected = match (data_left, committed) {
                            (false, _) => ControlFate::Discardable,
                            (true, true) => ControlFate::Keep(None),
                            (true, false) => ControlFate::Keep(
                                entries.iter().find(|entry| entry.last_offset == offset).copied(),
                            ),
                        };
                        prop_assert_eq!(fate, expected, "marker at {}", offset);
                    }
                }
            }
        }

        #[test]
        fn the_index_round_trips_and_damage_is_refused(
            spans in proptest::collection::vec((0i64..1000, 1u64..50, 1u64..50), 0..20),
            flip in any::<proptest::sample::Index>(),
        ) {
            let base_offset = 1000;
            let mut next = base_offset;
            let entries: Vec<AbortedTransaction> = spans
                .iter()
                .map(|&(producer_id, gap, length)| {
                    let first = next + gap;
                    next = first + length;
                    entry(producer_id, first, first + length - 1 + 1)
                })
                .collect();
            let end_offset = next + 10;
            let bytes = encode_index(&entries);
            prop_assert_eq!(decode_index(&bytes, base_offset, end_offset), Ok(entries.clone()));
            prop_assert_eq!(decode_index(&bytes, base_offset, u64::MAX), Ok(entries.clone()), "the last segment's");
            prop_assert!(decode_index(&bytes, base_offset, base_offset).is_err() || entries.is_empty());
            if !bytes.is_empty() {
                prop_assert!(decode_index(&bytes[..bytes.len() - 1], base_offset, end_offset).is_err());
                let mut damaged = bytes.clone();
                let at = flip.index(bytes.len() / INDEX_ENTRY_BYTES) * INDEX_ENTRY_BYTES;
                damaged[at] ^= 0x01;
                prop_assert!(decode_index(&damaged, base_offset, end_offset).is_err(), "a bad version");
            }
        }
    }
}
