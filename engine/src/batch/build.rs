//! Builds well-formed batches for tests and benchmarks, the way a Kafka producer would
//! (uncompressed, CRC filled in, base offset 0). Only in builds that ask for it (feature
//! `batch-builder`, which the other crates enable for their tests and the bench drivers), never
//! in the broker's: nothing the broker does needs a batch made up from test records.

/// The producer fields every builder takes (kept in `batch`: the broker encodes its own
/// batches with them too).
pub use super::ProducerFields;
use super::{encode_plain, PlainRecord};

/// One record: key (None for a null key), value, and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp_ms: i64,
}

/// Encodes `records` as an uncompressed v2 batch of a producer that is not idempotent.
/// Panics on an empty slice.
pub fn batch(records: &[TestRecord]) -> Vec<u8> {
    batch_from(records, ProducerFields::NONE)
}

/// Encodes `records` as an uncompressed v2 batch with the given producer fields. Panics on
/// an empty slice.
pub fn batch_from(records: &[TestRecord], producer: ProducerFields) -> Vec<u8> {
    let plain: Vec<PlainRecord<'_>> = records
        .iter()
        .map(|record| PlainRecord {
            offset: 0,
            timestamp_ms: record.timestamp_ms,
            key: record.key.as_deref(),
            value: Some(&record.value),
        })
        .collect();
    encode_plain(&plain, producer)
}

/// A batch of `count` records with `value_bytes`-byte values and timestamps from
/// `timestamp_ms` on, one millisecond apart.
pub fn batch_of(count: usize, value_bytes: usize, timestamp_ms: i64) -> Vec<u8> {
    let records: Vec<TestRecord> = (0..count)
        .map(|index| TestRecord {
            key: Some(format!("key-{index}").into_bytes()),
            value: vec![(index % 251) as u8; value_bytes],
            timestamp_ms: timestamp_ms + index as i64,
        })
        .collect();
    batch(&records)
}
