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

use std::collections::HashMap;
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

/// The data of aborted transactions, by producer: what compaction ignores when it maps keys
/// and removes when it rewrites (Kafka's cleaner with `CleanedTransactionMetadata`), so an
/// aborted record never shadows a committed one and nothing aborted survives a cleaning.
/// Markers stay (with their index entries): a consumer skips a marker's batch anyway.
pub(crate) struct AbortedData {
    by_producer: HashMap<i64, Vec<(u64, u64)>>,
}

impl AbortedData {
    pub fn of<'a>(entries: impl Iterator<Item = &'a AbortedTransaction>) -> AbortedData {
        let mut by_producer: HashMap<i64, Vec<(u64, u64)>> = HashMap::new();
        for entry in entries {
            by_producer
                .entry(entry.producer_id)
                .or_default()
                .push((entry.first_offset, entry.last_offset));
        }
        AbortedData { by_producer }
    }

    /// Whether the batch is data of an aborted transaction: a transactional data batch of a
    /// producer inside one of its aborted transactions' offsets.
    pub fn holds(&self, header: &BatchHeader) -> bool {
        if !header.is_transactional() || header.is_control() {
            return false;
        }
        let offset = header.base_offset as u64;
        self.by_producer
            .get(&header.producer_id)
            .is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|&(first, last)| (first..=last).contains(&offset))
            })
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

    proptest! {
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
