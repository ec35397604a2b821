//! Rebuilding a partition's producer table, and the aborted transactions its markers closed, by
//! reading the batches back from the segments. Two callers need it, as in Kafka:
//! - a truncation (Kafka's `ProducerStateManager.truncateAndReload`): the state at the new end
//!   is the latest snapshot at or below it with the batches after it replayed, so an epoch, a
//!   sequence or a transaction that only a cut batch gave a producer is gone (the table in
//!   memory cannot take back what a cut batch overwrote: an older epoch, the batches a newer
//!   epoch cleared);
//! - recovery of a segment whose `.txnindex` is missing or does not check out, or whose other
//!   indexes were (Kafka's `LogLoader.recoverSegment`): its entries are rebuilt from its
//!   markers, with the producer state at its start, replayed from the log start (a
//!   transaction's first offset may lie in any earlier segment).
//!
//! The walk reads batch headers as a read does (from an offset index entry, stepping over
//! damaged ranges, which stop nothing but hide their batches) and reads each batch whole only
//! for a control batch's marker. It costs one read of the replayed range: for a truncation,
//! usually the tail of the active segment after the snapshot taken at its start; for recovery,
//! the log up to the last segment to rebuild, once (after which the rebuilt files are there).

use std::rc::Rc;

use super::producers::ProducerTable;
use super::transactions::{self, AbortedTransaction};
use crate::error::LogError;
use crate::segment::{Segment, SegmentFile, SegmentScanner};

/// One segment of a replay, taken out of the log's state so the walk holds no borrow of it.
pub(super) struct ReplayedSegment {
    base_offset: u64,
    files: Rc<SegmentFile>,
    /// Where the walk starts, and the end of the segment's batches.
    position_from: u64,
    written_bytes: u64,
    /// `(position, end position)` of each damaged range.
    damaged: Vec<(u64, u64)>,
}

impl ReplayedSegment {
    /// `segment`, walked from its batch at or before `offset_from`; `None` if it has no file.
    pub fn of(segment: &Segment, offset_from: u64) -> Option<ReplayedSegment> {
        let damaged: Vec<(u64, u64)> = segment
            .damaged
            .iter()
            .map(|range| (range.position, range.end_position()))
            .collect();
        // From the index entry at or before the offset; a walk inside damaged bytes starts
        // after them (the index may point into them).
        let (position_from, _, _) = segment.walk_bounds(offset_from);
        Some(ReplayedSegment {
            base_offset: segment.base_offset,
            files: segment.files.clone()?,
            position_from,
            written_bytes: segment.written_bytes,
            damaged,
        })
    }
}

/// Feeds `table` every batch of `segments` (in log order) whose offsets lie in
/// `[offset_from, offset_end)`, as the log placed them (at `now_ms`); returns the transactions
/// their ABORT markers closed, each with the base offset of the segment holding its marker.
pub(super) async fn replay(
    segments: &[ReplayedSegment],
    offset_from: u64,
    offset_end: u64,
    table: &mut ProducerTable,
    now_ms: i64,
    window_bytes: usize,
) -> Result<Vec<(u64, AbortedTransaction)>, LogError> {
    let mut aborted = Vec::new();
    for segment in segments {
        let open = segment.files.get().await?;
        let mut scanner = SegmentScanner::new(&open.dma, segment.written_bytes, window_bytes);
        let mut position = segment.position_from;
        while position < segment.written_bytes {
            if let Some(&(_, end)) = segment.damaged.iter().find(|(at, _)| *at == position) {
                position = end.max(position + 1);
                continue;
            }
            let Some(header) = scanner.header_at(position).await? else {
                // Damage nobody found yet (a sealed segment is checked only after its last
                // index entry at an open): what it hides cannot be replayed, the rest can.
                eprintln!(
                    "ferrite: segment {} has no batch at byte {position}: its batches from \
                     there on are left out of the producer state",
                    segment.base_offset
                );
                break;
            };
            let base_offset = header.base_offset as u64;
            if base_offset >= offset_end {
                return Ok(aborted);
            }
            if base_offset >= offset_from {
                let marker = match header.is_control() {
                    true => {
                        let bytes = scanner
                            .bytes_at(position, header.size_bytes as usize)
                            .await?
                            .ok_or_else(|| {
                                LogError::Corrupt("a segment shrank while replayed".into())
                            })?;
                        transactions::marker_of(&header, bytes)
                    }
                    false => None,
                };
                aborted.extend(
                    table
                        .record(&header, marker.as_ref(), now_ms)
                        .map(|entry| (segment.base_offset, entry)),
                );
            }
            position += u64::from(header.size_bytes);
        }
    }
    Ok(aborted)
}
