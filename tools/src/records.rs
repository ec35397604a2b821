//! Record batches as the admin commands write and read them: `produce` turns lines into one
//! batch per partition; `consume` turns the bytes of a fetched partition back into records
//! with their offsets. The codec itself (varints, CRC, compression, and bounds on what a
//! stated record count may reserve: see vendor/README.md) is `kafka-protocol`'s; this module
//! adds the framing it does not do (where one batch ends, a partial batch at the end of a
//! fetch, the offset after a batch) and the producer's fixed choices.

use bytes::{Bytes, BytesMut};
use engine::batch::{BatchHeader, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES, MAGIC_V2};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

/// One message to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub key: Option<Bytes>,
    pub value: Bytes,
}

impl Message {
    /// Roughly what the message adds to a batch, for the batch size limit.
    pub fn batch_bytes(&self) -> usize {
        // Record overhead is at most ~21 bytes of varints and attributes.
        self.key.as_ref().map_or(0, Bytes::len) + self.value.len() + 21
    }
}

/// Encodes `messages` as one record batch, as a non-idempotent producer writes it: no producer
/// id, offsets from 0, every record stamped with `timestamp_ms`.
pub fn encode_batch(
    messages: &[Message],
    compression: Compression,
    timestamp_ms: i64,
) -> Result<Bytes, String> {
    assert!(!messages.is_empty(), "a batch holds at least one record");
    let records: Vec<Record> = messages
        .iter()
        .zip(0i64..)
        .map(|(message, offset)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset,
            // The encoder starts a new batch wherever `offset - sequence` changes, and writes
            // the first record's sequence as the batch's base sequence: one less than the
            // offset keeps one batch and gives the base sequence -1 (no sequence).
            sequence: (offset as i32) - 1,
            timestamp: timestamp_ms,
            key: message.key.clone(),
            value: Some(message.value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut batch, &records, &options)
        .map_err(|error| error.to_string())?;
    let batch = batch.freeze();
    debug_assert_eq!(
        batch_count(&batch),
        1,
        "one batch per partition and request"
    );
    Ok(batch)
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// The records of the complete batches in `bytes` (a fetched partition's `records`), in
/// offset order, and the offset after the last complete batch (`None` if there is none).
/// Control records (transaction markers) are left out. A trailing partial batch, which a broker
/// may send when it cuts a response at its size limit, is ignored: the next fetch starts there.
pub fn decode_batches(bytes: &Bytes) -> Result<(Vec<FetchedRecord>, Option<i64>), String> {
    let mut records = Vec::new();
    let mut offset_next = None;
    let mut rest = bytes.clone();
    while rest.len() >= BATCH_LENGTH_PREFIX_BYTES {
        let base_offset = i64::from_be_bytes(array(&rest[0..8]));
        let batch_length = i32::from_be_bytes(array(&rest[8..12]));
        let batch_bytes = usize::try_from(batch_length)
            .ok()
            .and_then(|length| length.checked_add(BATCH_LENGTH_PREFIX_BYTES))
            .filter(|&bytes| bytes >= BATCH_HEADER_BYTES)
            .ok_or_else(|| format!("batch at offset {base_offset}: length {batch_length}"))?;
        if rest.len() < batch_bytes {
            break;
        }
        let mut batch = rest.split_to(batch_bytes);
        let header = BatchHeader::parse(&batch).expect("the batch is at least a header long");
        if header.magic != MAGIC_V2 {
            return Err(format!(
                "batch at offset {base_offset}: magic {} (only record batches v2 are read)",
                header.magic
            ));
        }
        let last_offset_delta = header.last_offset_delta;
        if last_offset_delta < 0 {
            return Err(format!(
                "batch at offset {base_offset}: last offset delta {last_offset_delta}"
            ));
        }
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|error| format!("batch at offset {base_offset}: {error}"))?;
        records.extend(
            set.records
                .into_iter()
                .filter(|record| !record.control)
                .map(|record| FetchedRecord {
                    offset: record.offset,
                    timestamp_ms: record.timestamp,
                    key: record.key,
                    value: record.value,
                }),
        );
        offset_next = Some(base_offset + i64::from(last_offset_delta) + 1);
    }
    Ok((records, offset_next))
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().expect("callers slice exactly N bytes")
}

/// How many complete batches `bytes` holds (for the encoder's postcondition).
fn batch_count(bytes: &Bytes) -> usize {
    let mut count = 0;
    let mut rest = &bytes[..];
    while rest.len() >= BATCH_LENGTH_PREFIX_BYTES {
        let length = i32::from_be_bytes(array(&rest[8..12])) as usize;
        rest = &rest[(BATCH_LENGTH_PREFIX_BYTES + length).min(rest.len())..];
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: Option<&str>, value: &str) -> Message {
        Message {
            key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    #[test]
    fn batches_round_trip_with_every_codec() {
        let messages = vec![
            message(Some("k1"), "first"),
            message(None, ""),
            message(Some(""), "tab\tinside"),
        ];
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encode_batch(&messages, compression, 1_700_000_000_000).unwrap();
            assert_eq!(batch_count(&batch), 1);
            let (records, offset_next) = decode_batches(&batch).unwrap();
            assert_eq!(offset_next, Some(3), "{compression:?}");
            let read: Vec<Message> = records
                .iter()
                .map(|record| Message {
                    key: record.key.clone(),
                    value: record.value.clone().unwrap(),
                })
                .collect();
            assert_eq!(read, messages, "{compression:?}");
            assert_eq!(
                records
                    .iter()
                    .map(|record| record.offset)
                    .collect::<Vec<_>>(),
                [0, 1, 2]
            );
            assert!(records
                .iter()
                .all(|record| record.timestamp_ms == 1_700_000_000_000));
        }
    }

    #[test]
    fn a_trailing_partial_batch_is_left_for_the_next_fetch() {
        let first = encode_batch(&[message(None, "a")], Compression::None, 0).unwrap();
        let second = encode_batch(&[message(None, "b")], Compression::None, 0).unwrap();
        let mut bytes = BytesMut::from(&first[..]);
        bytes.extend_from_slice(&second[..second.len() - 1]);
        let (records, offset_next) = decode_batches(&bytes.freeze()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(offset_next, Some(1));
        assert_eq!(decode_batches(&Bytes::new()).unwrap(), (vec![], None));
    }

    #[test]
    fn nonsense_is_an_error_not_a_panic() {
        const RECORD_COUNT_AT: usize = 57;
        let mut batch =
            BytesMut::from(&encode_batch(&[message(None, "a")], Compression::None, 0).unwrap()[..]);
        batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_batches(&batch.clone().freeze()).is_err());
        batch[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(decode_batches(&batch.freeze()).is_err());
        assert!(decode_batches(&Bytes::from(vec![0xff; 100])).is_err());
    }
}
