//! Kafka RecordBatch v2: the unit the log stores, byte for byte as it travels on the wire.
//!
//! The log never re-encodes a batch. It checks the header and the CRC-32C once (on append and
//! on recovery), writes the broker-owned fields (base offset, partition leader epoch) in place,
//! and afterwards treats the batch as opaque bytes, so a fetch can hand file bytes to a socket.
//!
//! Layout (all integers big-endian), from Kafka's `DefaultRecordBatch`:
//!
//! ```text
//! 0  baseOffset: i64            -- written by the broker
//! 8  batchLength: i32           -- bytes after this field
//! 12 partitionLeaderEpoch: i32  -- written by the broker (the Raft term)
//! 16 magic: i8 (= 2)
//! 17 crc: u32                   -- CRC-32C of bytes [21, end)
//! 21 attributes: i16
//! 23 lastOffsetDelta: i32
//! 27 baseTimestamp: i64
//! 35 maxTimestamp: i64
//! 43 producerId: i64
//! 51 producerEpoch: i16
//! 53 baseSequence: i32
//! 57 recordsCount: i32
//! 61 records...
//! ```
//!
//! Fields before the CRC-covered range (base offset, length, epoch, magic, crc) are not
//! protected by the CRC; the log guards base offsets with an ordering check instead. A flipped
//! partition leader epoch is undetectable, as in Kafka.
//!
//! A batch a client sends is dense: `recordsCount == lastOffsetDelta + 1`. Compaction removes
//! records from stored batches but keeps every kept record's offset delta and the batch's
//! offset range, so a stored batch may be sparse (`recordsCount <= lastOffsetDelta + 1`):
//! [`validate`] checks what clients send, [`validate_stored`] what the log reads back.
//!
//! The log appends only [`CheckedBatch`]es: a batch is checked once, where it enters the broker
//! (a producer's batch on the owning shard, before anything numbers it; a batch copied from a
//! leader, when its fetch response arrives), and never again on its way to the file.
//!
//! [`CheckedBatch::produced`] is a producer's batch as Kafka checks it: exactly one batch, within
//! `max.message.bytes`, not a control batch, no negative sequence; [`CheckedBatch::stored`] is a
//! batch copied from a leader or written by the broker. Control batches ([`encode_control`],
//! [`read_control`]) carry KRaft's LEADER_CHANGE and KRAFT_VOTERS records, the Raft core's own
//! entries in the log, which consumers skip. The [`build`] module encodes batches as a producer
//! would, for tests and benchmarks.

use bytes::BytesMut;
use thiserror::Error;

use crate::log::VerificationGuard;

/// Size of the fixed batch header; the smallest well-formed batch is this plus one record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batchLength`'s coverage starts (base offset + the length field itself).
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;
/// The only record-batch format the log stores.
pub const MAGIC_V2: i8 = 2;

const OFFSET_BASE_OFFSET: usize = 0;
const OFFSET_BATCH_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
/// Where the magic byte is in a batch (what a search for the next batch in damaged bytes looks
/// at first).
pub const OFFSET_MAGIC: usize = 16;
const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORDS_COUNT: usize = 57;

/// Attribute bits 0..2: the compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: the records' timestamps are the broker's append time (the batch's max
/// timestamp), not the producer's.
const ATTRIBUTE_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit 4: the batch is part of a transaction.
const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit 5: the batch is a control batch (transaction markers).
const ATTRIBUTE_CONTROL: i16 = 0x20;
/// Attribute bit 6: the base timestamp is the batch's delete horizon (KIP-534), the time after
/// which the cleaner may remove it; the cleaner sets it on a transaction marker whose
/// transaction has no data left.
const ATTRIBUTE_DELETE_HORIZON: i16 = 0x40;

/// The producer id of a batch written by a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;

/// Why a byte range is not an acceptable record batch. Every variant is a client (or disk)
/// fault; none of them changes the log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("batch is {length_bytes} bytes, shorter than the {BATCH_HEADER_BYTES}-byte header")]
    TooShort { length_bytes: usize },
    #[error("batchLength field says {declared_bytes} bytes follow, but {actual_bytes} do")]
    LengthMismatch {
        declared_bytes: i64,
        actual_bytes: usize,
    },
    #[error("batch is {length_bytes} bytes, over the {limit_bytes}-byte limit")]
    TooLarge {
        length_bytes: usize,
        limit_bytes: usize,
    },
    #[error("unsupported record batch magic {magic} (only v2 is stored)")]
    UnsupportedMagic { magic: i8 },
    #[error("CRC-32C mismatch: batch says {stored:#010x}, bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("records count {records_count} does not match lastOffsetDelta {last_offset_delta}")]
    RecordCountMismatch {
        records_count: i32,
        last_offset_delta: i32,
    },
    #[error("invalid base sequence {base_sequence} in a batch of producer {producer_id}")]
    InvalidSequence {
        producer_id: i64,
        base_sequence: i32,
    },
    /// A producer's request holds more than the one batch a partition takes per request
    /// (Kafka's rule from Produce version 3 on).
    #[error(
        "a produce request holds one record batch per partition: {actual_bytes} bytes where \
         the first batch takes {first_batch_bytes}"
    )]
    SeveralBatches {
        first_batch_bytes: usize,
        actual_bytes: usize,
    },
    /// Control batches (transaction markers, the Raft core's entries) are the broker's to write.
    #[error("control batches may not be produced by clients")]
    ControlBatch,
}

/// The parsed fixed header of a batch. Cheap to copy; holds no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total size of the batch in bytes, header included.
    pub size_bytes: u32,
    pub leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `bytes` without looking at the records or the CRC.
    /// Returns `None` when fewer than [`BATCH_HEADER_BYTES`] bytes are given.
    pub fn parse(bytes: &[u8]) -> Option<BatchHeader> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return None;
        }
        let batch_length = read_i32(bytes, OFFSET_BATCH_LENGTH);
        // A negative or absurd length cannot describe a batch; report it as size 0 so that
        // callers' `size_bytes >= BATCH_HEADER_BYTES` checks reject it.
        let size_bytes =
            u32::try_from(i64::from(batch_length) + BATCH_LENGTH_PREFIX_BYTES as i64).unwrap_or(0);
        Some(BatchHeader {
            base_offset: read_i64(bytes, OFFSET_BASE_OFFSET),
            size_bytes,
            leader_epoch: read_i32(bytes, OFFSET_LEADER_EPOCH),
            magic: bytes[OFFSET_MAGIC] as i8,
            crc: read_u32(bytes, OFFSET_CRC),
            attributes: read_i16(bytes, OFFSET_ATTRIBUTES),
            last_offset_delta: read_i32(bytes, OFFSET_LAST_OFFSET_DELTA),
            base_timestamp: read_i64(bytes, OFFSET_BASE_TIMESTAMP),
            max_timestamp: read_i64(bytes, OFFSET_MAX_TIMESTAMP),
            producer_id: read_i64(bytes, OFFSET_PRODUCER_ID),
            producer_epoch: read_i16(bytes, OFFSET_PRODUCER_EPOCH),
            base_sequence: read_i32(bytes, OFFSET_BASE_SEQUENCE),
            records_count: read_i32(bytes, OFFSET_RECORDS_COUNT),
        })
    }

    /// Offset of the last record in the batch. Saturates instead of overflowing, since headers
    /// are also parsed from damaged files before they are validated.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & ATTRIBUTE_COMPRESSION_MASK
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    /// When the cleaner may remove the batch (KIP-534's delete horizon), if it set one.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & ATTRIBUTE_DELETE_HORIZON != 0).then_some(self.base_timestamp)
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0
    }

    /// Whether an idempotent producer wrote the batch (Kafka's `hasProducerId`).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id > NO_PRODUCER_ID
    }

    /// Sequence number of the last record: the base sequence plus the last offset delta,
    /// wrapping past `i32::MAX` to 0 as producers number them.
    pub fn last_sequence(&self) -> i32 {
        sequence_after(self.base_sequence, self.last_offset_delta)
    }
}

/// Whether `tail`, the bytes of a segment file from `position` to the file's end, is only the
/// zeros a direct write pads its last page with: fewer than a page, ending at that page's end,
/// all zero. A scan of the last segment that stops there has reached the end of its data (zeros
/// never read as a batch: a length of 0), not a torn write; recovery leaves such a tail uncut
/// (`log::recovery`, "The last page's padding") and `ferrite dump-log` reports it as the end.
pub fn is_last_page_padding(position: u64, tail: &[u8]) -> bool {
    let page = crate::config::DMA_ALIGNMENT_BYTES;
    let end = position + tail.len() as u64;
    !tail.is_empty() && end == position.div_ceil(page) * page && tail.iter().all(|&byte| byte == 0)
}

/// The sequence number `increment` places after `sequence`: producers count from 0 to
/// `i32::MAX` and wrap to 0. Total on any input (headers come from untrusted bytes).
pub fn sequence_after(sequence: i32, increment: i32) -> i32 {
    let wrapped = (i64::from(sequence) + i64::from(increment)).rem_euclid(i64::from(i32::MAX) + 1);
    i32::try_from(wrapped).expect("a remainder below 2^31 fits i32")
}

/// Checks that `bytes` is exactly one well-formed v2 batch as a client sends it: length, magic,
/// CRC-32C and a record count that fills the offset range. `batch_bytes_max` bounds the size.
/// Does not look at the base offset or epoch, which the broker owns.
pub fn validate(bytes: &[u8], batch_bytes_max: usize) -> Result<BatchHeader, BatchError> {
    let header = validate_stored(bytes, batch_bytes_max)?;
    if header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::RecordCountMismatch {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// [`validate`] for batches the log reads back: compaction may have removed records, so the
/// record count may be below the offset range's length (at least one record remains).
pub fn validate_stored(bytes: &[u8], batch_bytes_max: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes).ok_or(BatchError::TooShort {
        length_bytes: bytes.len(),
    })?;
    let declared_bytes = i64::from(read_i32(bytes, OFFSET_BATCH_LENGTH));
    if declared_bytes + BATCH_LENGTH_PREFIX_BYTES as i64 != bytes.len() as i64 {
        return Err(BatchError::LengthMismatch {
            declared_bytes,
            actual_bytes: bytes.len() - BATCH_LENGTH_PREFIX_BYTES,
        });
    }
    if bytes.len() > batch_bytes_max {
        return Err(BatchError::TooLarge {
            length_bytes: bytes.len(),
            limit_bytes: batch_bytes_max,
        });
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic {
            magic: header.magic,
        });
    }
    let computed = crc32c::crc32c(&bytes[OFFSET_ATTRIBUTES..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.records_count < 1 || header.last_offset_delta < header.records_count - 1 {
        return Err(BatchError::RecordCountMismatch {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// A record batch that passed the checks of the place it entered the broker, with its parsed
/// header: the only thing the log appends, so nothing the log would refuse for its bytes
/// reaches it (nor the Raft core that numbers a replicated partition's batches before the log
/// sees them). Only the broker-owned fields (offsets, epoch) change afterwards, and they are
/// outside the CRC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedBatch {
    bytes: BytesMut,
    header: BatchHeader,
    /// The guard a transactional producer's request was given for its partition (KIP-890:
    /// `log::VerificationGuard`); `None` where no verification is asked for.
    verification: Option<VerificationGuard>,
}

impl CheckedBatch {
    /// A batch as a producer sends it for one partition, checked as Kafka checks a produced
    /// batch: exactly one batch, [`validate`] (length, magic, CRC-32C, a record count that
    /// fills the offset range) against `batch_bytes_max` (the topic's `max.message.bytes`),
    /// not a control batch, and an idempotent producer's base sequence not negative. The one
    /// check of the produce path: `ShardContext`'s append entry point calls it, on the shard
    /// owning the partition, for a broker alone, a leader and a follower alike.
    pub fn produced(bytes: BytesMut, batch_bytes_max: usize) -> Result<CheckedBatch, BatchError> {
        if let Some(first) = BatchHeader::parse(&bytes) {
            let first_batch_bytes = first.size_bytes as usize;
            if first_batch_bytes >= BATCH_HEADER_BYTES && first_batch_bytes < bytes.len() {
                return Err(BatchError::SeveralBatches {
                    first_batch_bytes,
                    actual_bytes: bytes.len(),
                });
            }
        }
        let header = validate(&bytes, batch_bytes_max)?;
        if header.is_control() {
            return Err(BatchError::ControlBatch);
        }
        if header.has_producer_id() && header.base_sequence < 0 {
            return Err(BatchError::InvalidSequence {
                producer_id: header.producer_id,
                base_sequence: header.base_sequence,
            });
        }
        Ok(CheckedBatch {
            bytes,
            header,
            verification: None,
        })
    }

    /// A batch as another replica's log holds it, or as the broker writes its own (control
    /// batches and compaction's sparse batches included): [`validate_stored`].
    pub fn stored(bytes: BytesMut, batch_bytes_max: usize) -> Result<CheckedBatch, BatchError> {
        let header = validate_stored(&bytes, batch_bytes_max)?;
        Ok(CheckedBatch {
            bytes,
            header,
            verification: None,
        })
    }

    /// The batch appended under a transaction verification: a transactional batch that
    /// would open its producer's transaction must show `guard` (see `log::VerificationGuard`).
    pub fn with_verification(self, guard: VerificationGuard) -> CheckedBatch {
        CheckedBatch {
            verification: Some(guard),
            ..self
        }
    }

    pub fn verification(&self) -> Option<VerificationGuard> {
        self.verification
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Writes the broker-owned fields (see [`assign_offset_and_epoch`]).
    pub fn assign_offset_and_epoch(&mut self, base_offset: i64, leader_epoch: i32) {
        assign_offset_and_epoch(&mut self.bytes, base_offset, leader_epoch);
        self.header.base_offset = base_offset;
        self.header.leader_epoch = leader_epoch;
    }

    pub fn into_bytes(self) -> BytesMut {
        self.bytes
    }
}

/// Writes the broker-owned fields. Neither is covered by the CRC, so the batch stays valid.
pub fn assign_offset_and_epoch(bytes: &mut [u8], base_offset: i64, leader_epoch: i32) {
    assert!(
        bytes.len() >= BATCH_HEADER_BYTES,
        "assigning into a non-batch"
    );
    bytes[OFFSET_BASE_OFFSET..OFFSET_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    bytes[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Walks the records of an uncompressed batch and returns the offset and timestamp of the first
/// record whose timestamp is at or after `timestamp_ms`. `None` when the records are compressed
/// (the caller then answers with the batch's base offset and first timestamp) or no record
/// qualifies, or the records are malformed.
pub fn first_record_at_or_after(bytes: &[u8], timestamp_ms: i64) -> Option<(i64, i64)> {
    let header = BatchHeader::parse(bytes)?;
    if header.compression() != 0 {
        return None;
    }
    PlainRecords::new(bytes, header)
        .map_while(Result::ok)
        .find(|record| record.timestamp_ms >= timestamp_ms)
        .map(|record| (record.offset, record.timestamp_ms))
}

/// One record of a batch, borrowed from the batch's (or its decompressed records') bytes.
/// Headers are skipped: the broker's own logs (`__consumer_offsets`) do not use them, and
/// compaction copies a kept record's bytes whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainRecord<'a> {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    /// `None`: a tombstone.
    pub value: Option<&'a [u8]>,
}

/// The records of a batch the broker wrote itself (uncompressed), in order. A batch that is
/// compressed or whose records do not parse yields [`RecordsError`] once, then ends.
pub fn plain_records(bytes: &[u8]) -> Result<PlainRecords<'_>, RecordsError> {
    let header = BatchHeader::parse(bytes).ok_or(RecordsError::Malformed)?;
    if header.compression() != 0 {
        return Err(RecordsError::Compressed);
    }
    Ok(PlainRecords::new(bytes, header))
}

/// Why [`plain_records`] cannot read a batch's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecordsError {
    #[error("the batch's records are compressed")]
    Compressed,
    #[error("the batch's records are malformed")]
    Malformed,
}

/// The iterator of [`plain_records`].
pub struct PlainRecords<'a> {
    stored: StoredRecords<'a>,
}

impl<'a> PlainRecords<'a> {
    fn new(bytes: &'a [u8], header: BatchHeader) -> PlainRecords<'a> {
        let end = (header.size_bytes as usize).min(bytes.len());
        let body = bytes.get(BATCH_HEADER_BYTES..end).unwrap_or_default();
        PlainRecords {
            stored: StoredRecords::new(body, header),
        }
    }
}

impl<'a> Iterator for PlainRecords<'a> {
    type Item = Result<PlainRecord<'a>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.stored
            .next()
            .map(|stored| stored.map(|stored| stored.record))
    }
}

/// A record and its encoding (length prefix included) as it sits in the records section, so
/// that compaction can copy a kept record without re-encoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRecord<'a> {
    pub record: PlainRecord<'a>,
    pub encoded: &'a [u8],
}

/// The records of a records section (`body`: the bytes after the header, decompressed if the
/// batch is compressed), in order: `header.records_count` of them, then the body must be used
/// up. A record that does not parse (or bytes left over) yields [`RecordsError`] once, then
/// the iterator ends.
pub struct StoredRecords<'a> {
    header: BatchHeader,
    cursor: &'a [u8],
    remaining: i32,
    failed: bool,
}

impl<'a> StoredRecords<'a> {
    pub fn new(body: &'a [u8], header: BatchHeader) -> StoredRecords<'a> {
        StoredRecords {
            header,
            cursor: body,
            remaining: header.records_count.max(0),
            failed: false,
        }
    }

    fn next_record(&mut self) -> Option<StoredRecord<'a>> {
        let start = self.cursor;
        let record_length = usize::try_from(read_varint(&mut self.cursor)?).ok()?;
        let prefix_length = start.len() - self.cursor.len();
        let mut record = self.cursor.get(..record_length)?;
        self.cursor = &self.cursor[record_length..];
        record = record.get(1..)?; // attributes: i8
        let timestamp_delta = read_varint(&mut record)?;
        let offset_delta = read_varint(&mut record)?;
        let key = read_varint_bytes(&mut record)?;
        let value = read_varint_bytes(&mut record)?;
        let timestamp_ms = if self.header.is_log_append_time() {
            self.header.max_timestamp
        } else {
            self.header.base_timestamp.checked_add(timestamp_delta)?
        };
        Some(StoredRecord {
            record: PlainRecord {
                // Deltas come from the batch's bytes: a nonsensical one makes it malformed.
                offset: self.header.base_offset.checked_add(offset_delta)?,
                timestamp_ms,
                key,
                value,
            },
            encoded: &start[..prefix_length + record_length],
        })
    }
}

impl<'a> Iterator for StoredRecords<'a> {
    type Item = Result<StoredRecord<'a>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining == 0 {
            if self.cursor.is_empty() {
                return None;
            }
            self.failed = true;
            return Some(Err(RecordsError::Malformed));
        }
        match self.next_record() {
            Some(record) => {
                self.remaining -= 1;
                Some(Ok(record))
            }
            None => {
                self.failed = true;
                Some(Err(RecordsError::Malformed))
            }
        }
    }
}

/// Reads a varint length and that many bytes (-1: null), advancing `cursor`.
fn read_varint_bytes<'a>(cursor: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let length = read_varint(cursor)?;
    if length < 0 {
        return Some(None);
    }
    let length = usize::try_from(length).ok()?;
    let bytes = cursor.get(..length)?;
    *cursor = &cursor[length..];
    Some(Some(bytes))
}

/// A control record's type (the second field of its key), as Kafka numbers them. Consumers
/// skip control batches, so the broker may keep its own bookkeeping in the log this way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    /// KRaft's LEADER_CHANGE: a new leader's first entry (it lets earlier terms commit).
    LeaderChange,
    /// KRaft's KRAFT_VOTERS: the voter set from this entry on.
    Voters,
    /// A transaction's ABORT marker (Kafka's `ControlRecordType.ABORT`).
    Abort,
    /// A transaction's COMMIT marker (Kafka's `ControlRecordType.COMMIT`).
    Commit,
    /// Any other type (snapshot headers), kept as its number.
    Other(i16),
}

impl ControlType {
    fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
            ControlType::LeaderChange => 2,
            ControlType::Voters => 6,
            ControlType::Other(code) => code,
        }
    }

    fn from_code(code: i16) -> ControlType {
        match code {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            2 => ControlType::LeaderChange,
            6 => ControlType::Voters,
            other => ControlType::Other(other),
        }
    }
}

/// Encodes a control batch of one control record (key: version 0 and `control_type`; value:
/// `value`), base offset 0 and epoch 0 for the caller to assign.
pub fn encode_control(control_type: ControlType, value: &[u8], timestamp_ms: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&control_type.code().to_be_bytes());
    let record = PlainRecord {
        offset: 0,
        timestamp_ms,
        key: Some(&key),
        value: Some(value),
    };
    let producer = ProducerFields {
        attributes: ATTRIBUTE_CONTROL,
        ..ProducerFields::NONE
    };
    encode_plain(&[record], producer)
}

/// The type and value of a control batch's first record; `None` for a data batch.
pub fn read_control(bytes: &[u8]) -> Result<Option<(ControlType, Vec<u8>)>, RecordsError> {
    let header = BatchHeader::parse(bytes).ok_or(RecordsError::Malformed)?;
    if !header.is_control() {
        return Ok(None);
    }
    let record = plain_records(bytes)?
        .next()
        .ok_or(RecordsError::Malformed)??;
    let key = record.key.ok_or(RecordsError::Malformed)?;
    let code = key
        .get(2..4)
        .map(|code| i16::from_be_bytes([code[0], code[1]]))
        .ok_or(RecordsError::Malformed)?;
    Ok(Some((
        ControlType::from_code(code),
        record.value.unwrap_or_default().to_vec(),
    )))
}

/// A transaction marker (Kafka's `EndTransactionMarker`): the control batch a transaction
/// coordinator has written to every partition of a transaction when it ends, which tells the
/// partition (and a `read_committed` consumer) that the producer's batches since its previous
/// marker are committed or aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The coordinator's epoch (its partition's leader epoch), which lets a partition refuse a
    /// marker from a coordinator that has since been replaced.
    pub coordinator_epoch: i32,
    pub committed: bool,
}

/// Version of a marker's value (Kafka's `EndTransactionMarker.CURRENT_END_TXN_MARKER_VERSION`).
const MARKER_VALUE_VERSION: i16 = 0;

/// Encodes `marker` as Kafka writes one: a transactional control batch of one record (key:
/// version 0 and type ABORT or COMMIT; value: version 0 and the coordinator epoch), with the
/// producer's id and epoch, no sequence, base offset 0 for the log to assign.
pub fn encode_transaction_marker(marker: &TransactionMarker, timestamp_ms: i64) -> Vec<u8> {
    let control_type = if marker.committed {
        ControlType::Commit
    } else {
        ControlType::Abort
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&control_type.code().to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&MARKER_VALUE_VERSION.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let record = PlainRecord {
        offset: 0,
        timestamp_ms,
        key: Some(&key),
        value: Some(&value),
    };
    let producer = ProducerFields {
        producer_id: marker.producer_id,
        producer_epoch: marker.producer_epoch,
        base_sequence: -1,
        attributes: ATTRIBUTE_CONTROL | ATTRIBUTE_TRANSACTIONAL,
    };
    encode_plain(&[record], producer)
}

/// The marker a batch holds; `None` for a data batch or another control batch (a Raft
/// entry's). A marker's value is read as Kafka reads it: its version, then the coordinator
/// epoch (later versions may append fields).
pub fn read_transaction_marker(bytes: &[u8]) -> Result<Option<TransactionMarker>, RecordsError> {
    let header = BatchHeader::parse(bytes).ok_or(RecordsError::Malformed)?;
    let committed = match read_control(bytes)? {
        Some((ControlType::Commit, value)) => (true, value),
        Some((ControlType::Abort, value)) => (false, value),
        _ => return Ok(None),
    };
    let (committed, value) = committed;
    let coordinator_epoch = value
        .get(2..6)
        .map(|epoch| i32::from_be_bytes([epoch[0], epoch[1], epoch[2], epoch[3]]))
        .ok_or(RecordsError::Malformed)?;
    Ok(Some(TransactionMarker {
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        coordinator_epoch,
        committed,
    }))
}

/// Encodes `records` as an uncompressed v2 batch with the given producer fields, CRC filled in,
/// base offset 0 (the log assigns offsets) and offset deltas counting from 0: what the broker
/// appends to its own logs, and what `build` makes for tests. Panics on an empty slice.
pub fn encode_plain(records: &[PlainRecord<'_>], producer: ProducerFields) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let base_timestamp = records[0].timestamp_ms;
    let max_timestamp = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
    let mut body = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let mut encoded = vec![0u8]; // attributes
        write_varint(&mut encoded, record.timestamp_ms - base_timestamp);
        write_varint(&mut encoded, index as i64);
        write_varint_bytes(&mut encoded, record.key);
        write_varint_bytes(&mut encoded, record.value);
        write_varint(&mut encoded, 0); // headers
        write_varint(&mut body, encoded.len() as i64);
        body.extend_from_slice(&encoded);
    }
    let header = BatchHeader {
        base_offset: 0,
        size_bytes: 0,
        leader_epoch: 0,
        magic: MAGIC_V2,
        crc: 0,
        attributes: producer.attributes,
        last_offset_delta: records.len() as i32 - 1,
        base_timestamp,
        max_timestamp,
        producer_id: producer.producer_id,
        producer_epoch: producer.producer_epoch,
        base_sequence: producer.base_sequence,
        records_count: records.len() as i32,
    };
    encode_batch(&header, &body)
}

/// Encodes a batch from `header` (every field but the size and the CRC, which are computed)
/// and its records section `body` (already compressed if the attributes say so).
pub fn encode_batch(header: &BatchHeader, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&header.base_offset.to_be_bytes());
    let batch_length = (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES + body.len()) as i32;
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&header.leader_epoch.to_be_bytes());
    out.push(header.magic as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    out.extend_from_slice(&header.attributes.to_be_bytes());
    out.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&header.base_timestamp.to_be_bytes());
    out.extend_from_slice(&header.max_timestamp.to_be_bytes());
    out.extend_from_slice(&header.producer_id.to_be_bytes());
    out.extend_from_slice(&header.producer_epoch.to_be_bytes());
    out.extend_from_slice(&header.base_sequence.to_be_bytes());
    out.extend_from_slice(&header.records_count.to_be_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[OFFSET_ATTRIBUTES..]);
    out[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The batch `bytes` (whole, as stored) with its delete horizon set to `horizon_ms`, as Kafka's
/// cleaner sets one (KIP-534: attribute bit 6, the base timestamp), its records as they were.
/// Kafka also re-encodes the records' timestamp deltas against the new base; the cleaner sets
/// a horizon only on a transaction marker, whose record's timestamp no reader looks at, so the
/// record keeps its bytes (and reads as stamped at the horizon).
pub fn with_delete_horizon(bytes: &[u8], horizon_ms: i64) -> Vec<u8> {
    let header = BatchHeader::parse(bytes).expect("a stored batch has a header");
    encode_batch(
        &BatchHeader {
            attributes: header.attributes | ATTRIBUTE_DELETE_HORIZON,
            base_timestamp: horizon_ms,
            ..header
        },
        &bytes[BATCH_HEADER_BYTES..header.size_bytes as usize],
    )
}

/// A stored record (`encoded`: as [`StoredRecord::encoded`], length prefix included) with
/// another key and value: its attributes, timestamp and offset deltas and headers as they
/// were. `None` if `encoded` does not parse.
pub fn rewrite_record(encoded: &[u8], key: Option<&[u8]>, value: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut cursor = encoded;
    let record_length = usize::try_from(read_varint(&mut cursor)?).ok()?;
    let record = cursor.get(..record_length)?;
    let mut fields = record.get(1..)?; // attributes: i8
    read_varint(&mut fields)?; // timestamp delta
    read_varint(&mut fields)?; // offset delta
    let kept_prefix = &record[..record.len() - fields.len()];
    read_varint_bytes(&mut fields)?; // key
    read_varint_bytes(&mut fields)?; // value
    let headers = fields;
    let mut body = Vec::with_capacity(record_length);
    body.extend_from_slice(kept_prefix);
    write_varint_bytes(&mut body, key);
    write_varint_bytes(&mut body, value);
    body.extend_from_slice(headers);
    let mut rewritten = Vec::with_capacity(body.len() + 5);
    write_varint(&mut rewritten, body.len() as i64);
    rewritten.extend_from_slice(&body);
    Some(rewritten)
}

fn write_varint_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            write_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
        None => write_varint(out, -1),
    }
}

fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        if zigzag < 0x80 {
            out.push(zigzag as u8);
            return;
        }
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
}

/// Reads a zig-zag varlong, advancing `cursor`. `None` on truncation or overflow.
fn read_varint(cursor: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for (index, byte) in cursor.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            *cursor = &cursor[index + 1..];
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

fn read_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(bytes[at..at + 4].try_into().expect("slice of four"))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("slice of four"))
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(bytes[at..at + 8].try_into().expect("slice of eight"))
}

/// The producer-owned header fields: who wrote the batch and where it falls in that
/// producer's sequence, plus the attributes (transactional and control bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub attributes: i16,
}

impl ProducerFields {
    /// A producer that is not idempotent (what `batch` writes).
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: NO_PRODUCER_ID,
        producer_epoch: -1,
        base_sequence: -1,
        attributes: 0,
    };

    /// An idempotent producer's data batch.
    pub fn idempotent(producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        ProducerFields {
            producer_id,
            producer_epoch,
            base_sequence,
            attributes: 0,
        }
    }

    /// The same producer fields on a transactional (`control: false`) or control batch.
    pub fn with_transaction_bits(self, control: bool) -> Self {
        let control_bit = if control { ATTRIBUTE_CONTROL } else { 0 };
        ProducerFields {
            attributes: self.attributes | ATTRIBUTE_TRANSACTIONAL | control_bit,
            ..self
        }
    }
}

#[cfg(any(test, feature = "batch-builder"))]
pub mod build;

#[cfg(test)]
mod tests;
