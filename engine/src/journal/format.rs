//! The journal's bytes on disk: a file header, records, and the scan that reads them back.
//!
//! A journal file is used over and over. Each use starts with a header at byte 0 (magic,
//! version, shard, the use's sequence number, which orders files, and a random salt); every
//! record repeats the salt and carries a CRC-32C over itself, so a scan accepts only records
//! written during this use of the file, whole. Records of one write lie back to back; each
//! write starts on a 4 KiB page (direct I/O), the rest of its last page is zeros. A scan walks
//! records and, at anything that is not one (the zeros ending a write, a torn write, bytes of
//! an earlier use), goes on at the next page boundary: a later write always starts on one.
//!
//! The salt is what keeps a client's bytes out of the journal: a batch's payload may contain
//! anything, including what looks like a record, but not the salt, which is random per use
//! and never leaves the broker.
//!
//! Pure functions over byte slices, so they are tested without files.

use crate::config::DMA_ALIGNMENT_BYTES;

const FILE_MAGIC: [u8; 8] = *b"FERJRNL1";
const FORMAT_VERSION: u32 = 1;
/// magic (8), version (4), shard (4), sequence (8), salt (8), reserved (4), CRC-32C (4).
pub(crate) const FILE_HEADER_BYTES: usize = 40;
/// CRC-32C (4), kind (1), reserved (1), key length (2), payload length (4), salt (8).
pub(crate) const RECORD_HEADER_BYTES: usize = 20;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// A record batch of the partition named by the key, offsets and epoch already stamped.
    Batch = 1,
    /// Every earlier record of the partition is to be ignored: its log was cut, closed or
    /// removed after everything it needed was in its synced segments.
    Forget = 2,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::Batch),
            2 => Some(RecordKind::Forget),
            _ => None,
        }
    }
}

/// The header of one use of a journal file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileHeader {
    pub shard: u32,
    /// Grows with every use of any file of the journal: replay reads files in this order.
    pub sequence: u64,
    pub salt: u64,
}

impl FileHeader {
    pub fn encode(&self) -> [u8; FILE_HEADER_BYTES] {
        let mut bytes = [0u8; FILE_HEADER_BYTES];
        bytes[0..8].copy_from_slice(&FILE_MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.shard.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..FILE_HEADER_BYTES - 4]);
        bytes[FILE_HEADER_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// The header at the start of `bytes`, if there is a valid one.
    pub fn decode(bytes: &[u8]) -> Option<FileHeader> {
        let bytes = bytes.get(..FILE_HEADER_BYTES)?;
        let crc = u32::from_le_bytes(bytes[FILE_HEADER_BYTES - 4..].try_into().ok()?);
        if bytes[0..8] != FILE_MAGIC
            || crc32c::crc32c(&bytes[..FILE_HEADER_BYTES - 4]) != crc
            || u32::from_le_bytes(bytes[8..12].try_into().ok()?) != FORMAT_VERSION
        {
            return None;
        }
        Some(FileHeader {
            shard: u32::from_le_bytes(bytes[12..16].try_into().ok()?),
            sequence: u64::from_le_bytes(bytes[16..24].try_into().ok()?),
            salt: u64::from_le_bytes(bytes[24..32].try_into().ok()?),
        })
    }
}

/// Bytes a record of a key and payload of these lengths takes.
pub(crate) fn record_bytes(key_bytes: usize, payload_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + key_bytes + payload_bytes
}

/// Writes a record at the start of `out` (which must hold [`record_bytes`]); returns its
/// length. Keys are partition directory names (at most 260 bytes), payloads batches.
pub(crate) fn encode_record(
    out: &mut [u8],
    salt: u64,
    kind: RecordKind,
    key: &[u8],
    payload: &[u8],
) -> usize {
    let length = record_bytes(key.len(), payload.len());
    let key_length = u16::try_from(key.len()).expect("partition names fit 16 bits");
    let payload_length = u32::try_from(payload.len()).expect("batches fit 32 bits");
    let out = &mut out[..length];
    out[4] = kind as u8;
    out[5] = 0;
    out[6..8].copy_from_slice(&key_length.to_le_bytes());
    out[8..12].copy_from_slice(&payload_length.to_le_bytes());
    out[12..20].copy_from_slice(&salt.to_le_bytes());
    out[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + key.len()].copy_from_slice(key);
    out[RECORD_HEADER_BYTES + key.len()..].copy_from_slice(payload);
    let crc = crc32c::crc32c(&out[4..]);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
    length
}

/// A record read back: where it is in the file, and its parts as ranges of the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScannedRecord {
    pub position: usize,
    pub kind: RecordKind,
    pub key: std::ops::Range<usize>,
    pub payload: std::ops::Range<usize>,
}

/// The valid record at `position` of `bytes`, written during the use whose salt is `salt`.
fn record_at(bytes: &[u8], position: usize, salt: u64) -> Option<ScannedRecord> {
    let header = bytes.get(position..position.checked_add(RECORD_HEADER_BYTES)?)?;
    let crc = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let kind = RecordKind::from_byte(header[4])?;
    let key_length = usize::from(u16::from_le_bytes(header[6..8].try_into().ok()?));
    let payload_length = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
    if u64::from_le_bytes(header[12..20].try_into().ok()?) != salt {
        return None;
    }
    let end = position
        .checked_add(RECORD_HEADER_BYTES)?
        .checked_add(key_length)?
        .checked_add(payload_length)?;
    let record = bytes.get(position..end)?;
    if crc32c::crc32c(&record[4..]) != crc {
        return None;
    }
    let key_start = position + RECORD_HEADER_BYTES;
    Some(ScannedRecord {
        position,
        kind,
        key: key_start..key_start + key_length,
        payload: key_start + key_length..end,
    })
}

/// The header and every valid record of one journal file's bytes, in file order (the order
/// they were written); `None` when the file holds no valid header (never used, or released).
pub(crate) fn scan_file(bytes: &[u8]) -> Option<(FileHeader, Vec<ScannedRecord>)> {
    let header = FileHeader::decode(bytes)?;
    let page = DMA_ALIGNMENT_BYTES as usize;
    let mut records = Vec::new();
    let mut position = FILE_HEADER_BYTES;
    while position + RECORD_HEADER_BYTES <= bytes.len() {
        match record_at(bytes, position, header.salt) {
            Some(record) => {
                position = record.payload.end;
                records.push(record);
            }
            // The end of a write (or something that is not a record): the next write starts
            // on the next page boundary.
            None => position = (position / page + 1) * page,
        }
    }
    Some((header, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = DMA_ALIGNMENT_BYTES as usize;

    /// A record to encode: kind, key, payload.
    type TestRecord<'a> = (RecordKind, &'a [u8], &'a [u8]);

    fn file_with(header: FileHeader, writes: &[&[TestRecord]]) -> Vec<u8> {
        let mut bytes = vec![0u8; 8 * PAGE];
        bytes[..FILE_HEADER_BYTES].copy_from_slice(&header.encode());
        let mut position = FILE_HEADER_BYTES;
        for write in writes {
            for (kind, key, payload) in write.iter() {
                position += encode_record(&mut bytes[position..], header.salt, *kind, key, payload);
            }
            position = position.div_ceil(PAGE) * PAGE;
        }
        bytes
    }

    fn contents(bytes: &[u8]) -> Vec<(RecordKind, Vec<u8>, Vec<u8>)> {
        scan_file(bytes)
            .unwrap()
            .1
            .into_iter()
            .map(|r| (r.kind, bytes[r.key].to_vec(), bytes[r.payload].to_vec()))
            .collect()
    }

    #[test]
    fn records_of_several_writes_read_back_in_order() {
        let header = FileHeader {
            shard: 3,
            sequence: 7,
            salt: 0x1234_5678_9abc_def0,
        };
        let bytes = file_with(
            header,
            &[
                &[
                    (RecordKind::Batch, b"t-0", b"one"),
                    (RecordKind::Batch, b"t-1", b"two"),
                ],
                &[(RecordKind::Forget, b"t-0", b"")],
                &[(RecordKind::Batch, b"t-0", &[9u8; 5000])],
            ],
        );
        assert_eq!(FileHeader::decode(&bytes), Some(header));
        let read = contents(&bytes);
        assert_eq!(read.len(), 4);
        assert_eq!(
            read[0],
            (RecordKind::Batch, b"t-0".to_vec(), b"one".to_vec())
        );
        assert_eq!(
            read[1],
            (RecordKind::Batch, b"t-1".to_vec(), b"two".to_vec())
        );
        assert_eq!(read[2], (RecordKind::Forget, b"t-0".to_vec(), Vec::new()));
        assert_eq!(read[3].2.len(), 5000);
    }

    #[test]
    fn a_torn_or_foreign_record_is_skipped_and_the_next_write_still_read() {
        let header = FileHeader {
            shard: 0,
            sequence: 1,
            salt: 42,
        };
        let mut bytes = file_with(
            header,
            &[
                &[(RecordKind::Batch, b"a-0", &[1u8; 100])],
                &[(RecordKind::Batch, b"a-0", &[2u8; 100])],
            ],
        );
        // A flipped payload byte in the first write: that record goes, the second stays.
        bytes[FILE_HEADER_BYTES + RECORD_HEADER_BYTES + 10] ^= 1;
        let read = contents(&bytes);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].2, vec![2u8; 100]);
        // A record of another use of the file (another salt) is not read.
        let mut stale = vec![0u8; 8 * PAGE];
        stale[..FILE_HEADER_BYTES].copy_from_slice(&header.encode());
        encode_record(
            &mut stale[2 * PAGE..],
            43,
            RecordKind::Batch,
            b"a-0",
            b"old",
        );
        assert!(contents(&stale).is_empty());
    }

    #[test]
    fn a_file_without_a_valid_header_holds_nothing() {
        let header = FileHeader {
            shard: 0,
            sequence: 1,
            salt: 5,
        };
        let mut bytes = file_with(header, &[&[(RecordKind::Batch, b"a-0", b"x")]]);
        bytes[..PAGE].fill(0);
        assert!(scan_file(&bytes).is_none());
        let mut bytes = file_with(header, &[&[(RecordKind::Batch, b"a-0", b"x")]]);
        bytes[17] ^= 1;
        assert!(scan_file(&bytes).is_none());
    }
}
