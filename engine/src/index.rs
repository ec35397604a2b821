//! Sparse indexes of one segment: offset → file position, and timestamp → offset.
//!
//! Both live in memory (8 and 12 bytes per `index_interval_bytes` of log, 0.3% of the log at
//! the default interval) and are written to `.index` / `.timeindex` files when a segment is
//! sealed or the log is closed cleanly. The files use Kafka's layout (big-endian, offsets
//! relative to the segment's base) so tools that know Kafka's format can read them. They are
//! only hints: on open they are checked against the log and rebuilt when they disagree.

/// Bytes of one offset index entry on disk: relative offset u32 + position u32.
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;
/// Bytes of one time index entry on disk: timestamp i64 + relative offset u32.
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;

/// One offset index entry: the batch whose base offset is `base + relative_offset` starts at
/// byte `position` of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetIndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// Offset → position. Entries are strictly increasing in both fields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetIndexEntry>,
}

impl OffsetIndex {
    pub fn entries(&self) -> &[OffsetIndexEntry] {
        &self.entries
    }

    pub fn last(&self) -> Option<OffsetIndexEntry> {
        self.entries.last().copied()
    }

    pub fn push(&mut self, entry: OffsetIndexEntry) {
        if let Some(last) = self.entries.last() {
            assert!(
                entry.relative_offset > last.relative_offset && entry.position > last.position,
                "offset index entries must increase: {last:?} then {entry:?}"
            );
        }
        self.entries.push(entry);
    }

    /// The last entry at or before `relative_offset`: where a scan for that offset starts.
    pub fn floor_by_offset(&self, relative_offset: u32) -> Option<OffsetIndexEntry> {
        let count = self
            .entries
            .partition_point(|entry| entry.relative_offset <= relative_offset);
        count.checked_sub(1).map(|index| self.entries[index])
    }

    /// The last entry whose batch starts at or before `position`.
    pub fn floor_by_position(&self, position: u32) -> Option<OffsetIndexEntry> {
        let count = self
            .entries
            .partition_point(|entry| entry.position <= position);
        count.checked_sub(1).map(|index| self.entries[index])
    }

    /// Drops every entry for a batch at or after `position` (the log was cut there).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self
            .entries
            .partition_point(|entry| entry.position < position);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_INDEX_ENTRY_BYTES);
        for entry in &self.entries {
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
            out.extend_from_slice(&entry.position.to_be_bytes());
        }
        out
    }

    /// Decodes an index file, or `None` if it is not a well-formed index for a segment of
    /// `segment_bytes` bytes (wrong size, entries out of order, positions past the end).
    pub fn decode(bytes: &[u8], segment_bytes: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_INDEX_ENTRY_BYTES) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
            let entry = OffsetIndexEntry {
                relative_offset: u32::from_be_bytes(chunk[0..4].try_into().ok()?),
                position: u32::from_be_bytes(chunk[4..8].try_into().ok()?),
            };
            if u64::from(entry.position) >= segment_bytes {
                return None;
            }
            if let Some(last) = index.last() {
                if entry.relative_offset <= last.relative_offset || entry.position <= last.position
                {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

/// One time index entry: every batch up to and including the one at `base + relative_offset`
/// has a max timestamp at most `timestamp_ms`, and that batch reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeIndexEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

/// Timestamp → offset. Timestamps and offsets strictly increase.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeIndexEntry>,
}

impl TimeIndex {
    pub fn entries(&self) -> &[TimeIndexEntry] {
        &self.entries
    }

    pub fn last(&self) -> Option<TimeIndexEntry> {
        self.entries.last().copied()
    }

    /// Records a new running maximum; ignored when it does not raise the maximum.
    pub fn push_if_newer(&mut self, entry: TimeIndexEntry) {
        match self.entries.last() {
            Some(last) if entry.timestamp_ms <= last.timestamp_ms => {}
            Some(last) => {
                assert!(
                    entry.relative_offset > last.relative_offset,
                    "time index offsets must increase: {last:?} then {entry:?}"
                );
                self.entries.push(entry);
            }
            None => self.entries.push(entry),
        }
    }

    /// The last entry whose running maximum is below `timestamp_ms`: every batch up to it is
    /// older than the target, so a search for the target starts after it.
    pub fn last_before(&self, timestamp_ms: i64) -> Option<TimeIndexEntry> {
        let count = self
            .entries
            .partition_point(|entry| entry.timestamp_ms < timestamp_ms);
        count.checked_sub(1).map(|index| self.entries[index])
    }

    /// Drops entries for batches at or after `relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|entry| entry.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_INDEX_ENTRY_BYTES);
        for entry in &self.entries {
            out.extend_from_slice(&entry.timestamp_ms.to_be_bytes());
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        out
    }

    /// Decodes a time index file, or `None` if malformed or naming offsets past
    /// `relative_offset_max`.
    pub fn decode(bytes: &[u8], relative_offset_max: u32) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_INDEX_ENTRY_BYTES) {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let entry = TimeIndexEntry {
                timestamp_ms: i64::from_be_bytes(chunk[0..8].try_into().ok()?),
                relative_offset: u32::from_be_bytes(chunk[8..12].try_into().ok()?),
            };
            if entry.relative_offset > relative_offset_max {
                return None;
            }
            if let Some(last) = index.last() {
                if entry.timestamp_ms <= last.timestamp_ms
                    || entry.relative_offset <= last.relative_offset
                {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offset_index(pairs: &[(u32, u32)]) -> OffsetIndex {
        let mut index = OffsetIndex::default();
        for &(relative_offset, position) in pairs {
            index.push(OffsetIndexEntry {
                relative_offset,
                position,
            });
        }
        index
    }

    #[test]
    fn floor_lookups_find_the_entry_at_or_before() {
        let index = offset_index(&[(0, 0), (10, 4096), (25, 9000)]);
        assert_eq!(index.floor_by_offset(0).map(|e| e.position), Some(0));
        assert_eq!(index.floor_by_offset(24).map(|e| e.position), Some(4096));
        assert_eq!(index.floor_by_offset(1000).map(|e| e.position), Some(9000));
        assert_eq!(
            index.floor_by_position(9000).map(|e| e.relative_offset),
            Some(25)
        );
        assert_eq!(
            index.floor_by_position(8999).map(|e| e.relative_offset),
            Some(10)
        );
        assert_eq!(OffsetIndex::default().floor_by_offset(5), None);
    }

    #[test]
    fn decode_rejects_what_cannot_be_an_index() {
        let index = offset_index(&[(0, 0), (10, 4096)]);
        let bytes = index.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 5000), Some(index));
        assert_eq!(OffsetIndex::decode(&bytes[..7], 5000), None, "torn entry");
        assert_eq!(
            OffsetIndex::decode(&bytes, 4096),
            None,
            "position past the log"
        );
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert_eq!(OffsetIndex::decode(&swapped, 5000), None, "out of order");
    }

    #[test]
    fn time_index_keeps_only_new_maxima_and_searches_below_target() {
        let mut index = TimeIndex::default();
        for (timestamp_ms, relative_offset) in [(100, 0), (90, 5), (150, 9), (150, 12), (300, 20)] {
            index.push_if_newer(TimeIndexEntry {
                timestamp_ms,
                relative_offset,
            });
        }
        let offsets: Vec<u32> = index.entries().iter().map(|e| e.relative_offset).collect();
        assert_eq!(offsets, vec![0, 9, 20]);
        assert_eq!(index.last_before(100), None);
        assert_eq!(index.last_before(101).map(|e| e.relative_offset), Some(0));
        assert_eq!(index.last_before(1000).map(|e| e.relative_offset), Some(20));
        let bytes = index.encode();
        assert_eq!(TimeIndex::decode(&bytes, 20), Some(index.clone()));
        assert_eq!(TimeIndex::decode(&bytes, 19), None);
        index.truncate_to_offset(9);
        assert_eq!(index.entries().len(), 1);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(steps in proptest::collection::vec((1u32..100, 1u32..5000), 0..200)) {
            let mut index = OffsetIndex::default();
            let (mut offset, mut position) = (0u32, 0u32);
            for (offset_step, position_step) in steps {
                index.push(OffsetIndexEntry { relative_offset: offset, position });
                offset += offset_step;
                position += position_step;
            }
            let decoded = OffsetIndex::decode(&index.encode(), u64::from(position) + 1);
            prop_assert_eq!(decoded, Some(index));
        }
    }
}
