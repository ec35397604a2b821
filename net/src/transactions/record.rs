//! A transactional id's record in `__transaction_state`, in Kafka's own schemas
//! (transaction-coordinator's `common/message/TransactionLog{Key,Value}.json`), so that a
//! restart or a new coordinator resumes every transaction, and tools that read the topic with
//! Kafka's schemas understand it.
//!
//! Key: int16 version (0) and the transactional id (int16-length string). Value: int16 version
//! and the struct; version 0 is classic (int16 strings, int32 array lengths), version 1 flexible
//! (compact strings and arrays, tagged fields: 0 previous producer id, 1 next producer id, 2
//! client transaction version). We write version 0, as Kafka does for clients of transaction
//! version 0 and 1, and read both; a tombstone (no value) is an expired id. Every length is
//! checked against the bytes left (kafka-protocol's own primitive codecs are private to it).

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::state::{TransactionMetadata, TransactionState, NO_PRODUCER_EPOCH};

/// The versions of the value this broker reads; it writes the first.
const VALUE_VERSION_WRITTEN: i16 = 0;
const VALUE_VERSION_FLEXIBLE: i16 = 1;
const KEY_VERSION: i16 = 0;

/// Kafka's "no producer id" (RecordBatch.NO_PRODUCER_ID).
pub const NO_PRODUCER_ID: i64 = -1;

/// Why a `__transaction_state` record does not decode.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TransactionRecordError {
    #[error("transaction record is truncated")]
    Truncated,
    #[error("transaction record key has unknown version {0}")]
    UnknownKeyVersion(i16),
    #[error("transaction record value has unknown version {0}")]
    UnknownValueVersion(i16),
    #[error("transaction record has unknown state {0}")]
    UnknownState(i8),
    #[error("transaction record is malformed: {0}")]
    Malformed(String),
    #[error("transaction record has {0} bytes after its end")]
    TrailingBytes(usize),
}

/// The key of `transactional_id`'s record.
pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut buffer = BytesMut::with_capacity(4 + transactional_id.len());
    buffer.put_i16(KEY_VERSION);
    put_string(&mut buffer, transactional_id);
    buffer.freeze()
}

/// The transactional id a key names.
pub fn decode_key(key: &[u8]) -> Result<String, TransactionRecordError> {
    let mut reader = Reader { rest: key };
    let version = reader.i16()?;
    if version != KEY_VERSION {
        return Err(TransactionRecordError::UnknownKeyVersion(version));
    }
    let transactional_id = reader.string(false)?;
    reader.end()?;
    Ok(transactional_id)
}

/// The value that records `metadata` (version 0: the producer id, epoch, timeout, state,
/// partitions grouped by topic, and the two timestamps).
pub fn encode_value(metadata: &TransactionMetadata) -> Bytes {
    assert!(
        metadata.state != TransactionState::PrepareEpochFence,
        "an epoch fence is written as the PrepareAbort it leads to"
    );
    let topics = metadata.topics();
    let mut buffer = BytesMut::with_capacity(64);
    buffer.put_i16(VALUE_VERSION_WRITTEN);
    buffer.put_i64(metadata.producer_id);
    buffer.put_i16(metadata.producer_epoch);
    buffer.put_i32(metadata.timeout_ms);
    buffer.put_i8(metadata.state as i8);
    buffer.put_i32(array_length(topics.len()));
    for (topic, partitions) in &topics {
        put_string(&mut buffer, topic);
        buffer.put_i32(array_length(partitions.len()));
        for partition in partitions {
            buffer.put_i32(*partition);
        }
    }
    buffer.put_i64(metadata.last_update_ms);
    buffer.put_i64(metadata.start_ms);
    buffer.freeze()
}

/// The transaction a value records, for `transactional_id`.
pub fn decode_value(
    transactional_id: &str,
    value: &[u8],
) -> Result<TransactionMetadata, TransactionRecordError> {
    let mut reader = Reader { rest: value };
    let flexible = match reader.i16()? {
        VALUE_VERSION_WRITTEN => false,
        VALUE_VERSION_FLEXIBLE => true,
        other => return Err(TransactionRecordError::UnknownValueVersion(other)),
    };
    let producer_id = reader.i64()?;
    let producer_epoch = reader.i16()?;
    let timeout_ms = reader.i32()?;
    let state_id = reader.i8()?;
    let state = TransactionState::from_id(state_id)
        .filter(|state| *state != TransactionState::PrepareEpochFence)
        .ok_or(TransactionRecordError::UnknownState(state_id))?;
    let mut partitions = BTreeSet::new();
    // Null (in both versions) is no partitions.
    for _ in 0..reader.array_length(flexible)?.unwrap_or(0) {
        let topic = reader.string(flexible)?;
        let count = reader
            .array_length(flexible)?
            .ok_or_else(|| TransactionRecordError::Malformed("null partition ids".to_owned()))?;
        for _ in 0..count {
            partitions.insert((topic.clone(), reader.i32()?));
        }
        if flexible {
            reader.tagged_fields(|_, _| Ok(()))?;
        }
    }
    let last_update_ms = reader.i64()?;
    let start_ms = reader.i64()?;
    let mut previous_producer_id = NO_PRODUCER_ID;
    if flexible {
        // Tag 0: the producer id of the last committed transaction; 1 (the next producer id)
        // and 2 (the client's transaction version) belong to transaction version 2, which this
        // coordinator does not speak.
        reader.tagged_fields(|tag, mut field| {
            if tag == 0 {
                previous_producer_id = field.i64()?;
                field.end()?;
            }
            Ok(())
        })?;
    }
    reader.end()?;
    if state == TransactionState::Empty && !partitions.is_empty() {
        return Err(TransactionRecordError::Malformed(
            "an empty transaction with partitions".to_owned(),
        ));
    }
    Ok(TransactionMetadata {
        transactional_id: transactional_id.to_owned(),
        producer_id,
        previous_producer_id,
        producer_epoch,
        last_producer_epoch: NO_PRODUCER_EPOCH,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
    })
}

// Transactional ids and topic names came in int16-length strings, and a transaction's topics
// and partitions are bounded by the partitions that exist: each fits its field.
fn put_string(buffer: &mut BytesMut, value: &str) {
    let length = i16::try_from(value.len()).expect("the string came in a field of the same type");
    buffer.put_i16(length);
    buffer.put_slice(value.as_bytes());
}

fn array_length(length: usize) -> i32 {
    i32::try_from(length).expect("a transaction's partitions are far fewer than 2^31")
}

/// Reads fields off a record, every length checked against the bytes left.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], TransactionRecordError> {
        if self.rest.len() < length {
            return Err(TransactionRecordError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TransactionRecordError> {
        Ok(self.take(N)?.try_into().expect("took exactly N bytes"))
    }

    fn i8(&mut self) -> Result<i8, TransactionRecordError> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    fn i16(&mut self) -> Result<i16, TransactionRecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, TransactionRecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, TransactionRecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// An unsigned varint of at most 32 bits (5 bytes).
    fn unsigned_varint(&mut self) -> Result<u32, TransactionRecordError> {
        let mut value = 0u32;
        for index in 0..5 {
            let byte = self.take(1)?[0];
            if index == 4 && byte > 0x0f {
                return Err(TransactionRecordError::Malformed(
                    "a varint beyond 32 bits".to_owned(),
                ));
            }
            value |= u32::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        unreachable!("the fifth byte ends the varint or is refused")
    }

    /// A length: classic fields have an int16 (strings) or int32 (arrays) length, -1 for null;
    /// flexible ones an unsigned varint of the length plus one, 0 for null.
    fn length(
        &mut self,
        flexible: bool,
        int32: bool,
    ) -> Result<Option<usize>, TransactionRecordError> {
        let length = match (flexible, int32) {
            (true, _) => i64::from(self.unsigned_varint()?) - 1,
            (false, false) => i64::from(self.i16()?),
            (false, true) => i64::from(self.i32()?),
        };
        match length {
            -1 => Ok(None),
            // Every element takes at least one byte: a longer count is a lie.
            length if length >= 0 && length as usize <= self.rest.len() => {
                Ok(Some(length as usize))
            }
            length => Err(TransactionRecordError::Malformed(format!(
                "a length of {length} with {} bytes left",
                self.rest.len()
            ))),
        }
    }

    fn array_length(&mut self, flexible: bool) -> Result<Option<usize>, TransactionRecordError> {
        self.length(flexible, true)
    }

    fn string(&mut self, flexible: bool) -> Result<String, TransactionRecordError> {
        let length = self
            .length(flexible, false)?
            .ok_or_else(|| TransactionRecordError::Malformed("a null string".to_owned()))?;
        String::from_utf8(self.take(length)?.to_vec())
            .map_err(|_| TransactionRecordError::Malformed("a string that is not UTF-8".to_owned()))
    }

    /// A flexible struct's tagged fields, each given to `field` with its bytes.
    fn tagged_fields(
        &mut self,
        mut field: impl FnMut(u32, Reader<'a>) -> Result<(), TransactionRecordError>,
    ) -> Result<(), TransactionRecordError> {
        let count = self.unsigned_varint()?;
        for _ in 0..count {
            let tag = self.unsigned_varint()?;
            let size = self.unsigned_varint()? as usize;
            field(
                tag,
                Reader {
                    rest: self.take(size)?,
                },
            )?;
        }
        Ok(())
    }

    fn end(&self) -> Result<(), TransactionRecordError> {
        match self.rest.len() {
            0 => Ok(()),
            trailing => Err(TransactionRecordError::TrailingBytes(trailing)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn metadata_strategy() -> impl Strategy<Value = TransactionMetadata> {
        // Every state a record holds (PrepareEpochFence is never written).
        let states = prop::sample::select(
            TransactionState::ALL
                .into_iter()
                .filter(|state| *state != TransactionState::PrepareEpochFence)
                .collect::<Vec<_>>(),
        );
        let partitions = prop::collection::btree_set(("[a-z.ü]{1,12}", 0..1000i32), 0..8);
        (
            "[a-zA-Z0-9-]{1,20}",
            any::<i64>(),
            any::<i16>(),
            any::<i32>(),
            states,
            partitions,
            any::<i64>(),
            any::<i64>(),
        )
            .prop_map(
                |(id, producer_id, epoch, timeout_ms, state, partitions, start_ms, update_ms)| {
                    let partitions = match state {
                        TransactionState::Empty => BTreeSet::new(),
                        _ => partitions,
                    };
                    TransactionMetadata {
                        transactional_id: id,
                        producer_id,
                        previous_producer_id: NO_PRODUCER_ID,
                        producer_epoch: epoch,
                        last_producer_epoch: NO_PRODUCER_EPOCH,
                        timeout_ms,
                        state,
                        partitions,
                        start_ms,
                        last_update_ms: update_ms,
                    }
                },
            )
    }

    /// The same transaction as Kafka's version 1 writes it (flexible, with tagged fields).
    fn encode_value_v1(metadata: &TransactionMetadata) -> Bytes {
        // Every count here is below 128: a one-byte varint.
        let varint =
            |buffer: &mut BytesMut, value: usize| buffer.put_u8(u8::try_from(value).unwrap());
        let mut buffer = BytesMut::new();
        buffer.put_i16(1);
        buffer.put_i64(metadata.producer_id);
        buffer.put_i16(metadata.producer_epoch);
        buffer.put_i32(metadata.timeout_ms);
        buffer.put_i8(metadata.state as i8);
        let topics = metadata.topics();
        varint(&mut buffer, topics.len() + 1);
        for (topic, partitions) in &topics {
            varint(&mut buffer, topic.len() + 1);
            buffer.put_slice(topic.as_bytes());
            varint(&mut buffer, partitions.len() + 1);
            for partition in partitions {
                buffer.put_i32(*partition);
            }
            varint(&mut buffer, 0);
        }
        buffer.put_i64(metadata.last_update_ms);
        buffer.put_i64(metadata.start_ms);
        // Tags 0 (previous producer id) and 2 (client transaction version).
        varint(&mut buffer, 2);
        varint(&mut buffer, 0);
        varint(&mut buffer, 8);
        buffer.put_i64(metadata.previous_producer_id);
        varint(&mut buffer, 2);
        varint(&mut buffer, 2);
        buffer.put_i16(1);
        buffer.freeze()
    }

    proptest! {
        #[test]
        fn a_record_reads_back_as_written(metadata in metadata_strategy()) {
            let key = encode_key(&metadata.transactional_id);
            prop_assert_eq!(decode_key(&key).unwrap(), metadata.transactional_id.clone());
            let value = encode_value(&metadata);
            prop_assert_eq!(decode_value(&metadata.transactional_id, &value).unwrap(), metadata);
        }

        #[test]
        fn version_1_reads_with_its_tagged_fields(
            metadata in metadata_strategy(),
            previous in any::<i64>(),
        ) {
            let metadata = TransactionMetadata { previous_producer_id: previous, ..metadata };
            let value = encode_value_v1(&metadata);
            prop_assert_eq!(decode_value(&metadata.transactional_id, &value).unwrap(), metadata);
        }

        #[test]
        fn every_cut_or_damaged_value_is_refused_or_read_without_panic(
            metadata in metadata_strategy(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let value = encode_value(&metadata);
            let cut = cut.index(value.len());
            prop_assert!(decode_value("id", &value[..cut]).is_err());
            let mut damaged = value.to_vec();
            let at = flip.0.index(damaged.len());
            damaged[at] ^= flip.1;
            // Any answer but a panic or a huge allocation.
            let _ = decode_value("id", &damaged);
        }
    }

    #[test]
    fn kafkas_bytes_for_a_known_record() {
        // TransactionLogKey v0 for "tx": version 0, int16 length 2, the bytes.
        assert_eq!(&encode_key("tx")[..], &[0, 0, 0, 2, b't', b'x']);
        let metadata = TransactionMetadata {
            transactional_id: "tx".into(),
            producer_id: 7,
            previous_producer_id: NO_PRODUCER_ID,
            producer_epoch: 3,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms: 60_000,
            state: TransactionState::Ongoing,
            partitions: [("t".to_owned(), 1), ("t".to_owned(), 0)].into(),
            start_ms: 5,
            last_update_ms: 6,
        };
        let mut expected = vec![0, 0]; // version
        expected.extend(7i64.to_be_bytes());
        expected.extend(3i16.to_be_bytes());
        expected.extend(60_000i32.to_be_bytes());
        expected.push(1); // Ongoing
        expected.extend(1i32.to_be_bytes()); // one topic
        expected.extend([0, 1, b't']);
        expected.extend(2i32.to_be_bytes());
        expected.extend(0i32.to_be_bytes());
        expected.extend(1i32.to_be_bytes());
        expected.extend(6i64.to_be_bytes());
        expected.extend(5i64.to_be_bytes());
        assert_eq!(&encode_value(&metadata)[..], &expected[..]);
    }

    #[test]
    fn lying_lengths_and_unknown_states_are_refused() {
        let mut value = encode_value(&TransactionMetadata::new("tx".into(), 1, 1000, 0)).to_vec();
        value[16] = 9; // the state
        assert_eq!(
            decode_value("tx", &value),
            Err(TransactionRecordError::UnknownState(9))
        );
        let mut value = encode_value(&TransactionMetadata::new("tx".into(), 1, 1000, 0)).to_vec();
        value[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decode_value("tx", &value),
            Err(TransactionRecordError::Malformed(_))
        ));
        assert_eq!(
            decode_key(&[0, 1, 0, 0]),
            Err(TransactionRecordError::UnknownKeyVersion(1))
        );
    }
}
