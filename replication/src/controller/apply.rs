//! Metadata entries as record batches, and the applying of committed ones to the image.
//!
//! An entry is one ordinary (uncompressed, non-transactional) record batch holding one record
//! whose value is [`metadata::encode`] of the records the leader proposed, so the metadata log
//! is a partition log like any other and the Raft driver needs nothing special for it. The
//! control batches the Raft core writes (LEADER_CHANGE, voter sets) are skipped: they change
//! no metadata, but applying moves past them all the same.

use std::cell::{Cell, RefCell};

use bytes::BytesMut;
use engine::batch::{self, BatchHeader, PlainRecord};
use engine::{LogError, PartitionLog};

use crate::message::Index;
use crate::metadata::{self, Applied, MetadataError, MetadataImage, MetadataRecord};

/// Bytes of committed batches read from the log at a time.
const APPLY_READ_BYTES_MAX: usize = 1 << 20;

/// Why the image cannot follow the log: the controller stops, since an image that skipped a
/// committed entry would answer differently from the other brokers'.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApplyError {
    #[error("reading the metadata log: {0}")]
    Log(#[from] LogError),
    #[error("metadata entry at index {index}: {reason}")]
    Malformed { index: Index, reason: String },
}

/// The batch that carries `records` as one metadata entry.
pub(super) fn entry_batch(records: &[MetadataRecord], now_ms: i64) -> BytesMut {
    assert!(!records.is_empty(), "an entry changes something");
    let value = metadata::encode(records);
    let record = PlainRecord {
        offset: 0,
        timestamp_ms: now_ms,
        key: None,
        value: Some(&value),
    };
    BytesMut::from(&batch::encode_plain(&[record], batch::ProducerFields::NONE)[..])
}

/// Applies every committed entry after `applied_index` (the last index applied) to `image`, in
/// log order, moving `applied_index` past each. Returns once it reaches the high-water mark.
pub(super) async fn apply_committed(
    log: &PartitionLog,
    image: &RefCell<MetadataImage>,
    applied_index: &Cell<Index>,
) -> Result<(), ApplyError> {
    loop {
        // Index i is offset i - 1: the next offset to apply is the last applied index.
        let offset_next = applied_index.get();
        let high_watermark = log.high_watermark();
        if offset_next >= high_watermark {
            return Ok(());
        }
        let slice = log
            .read(offset_next, APPLY_READ_BYTES_MAX, high_watermark)
            .await?;
        let bytes = slice.data.to_vec()?;
        if bytes.is_empty() {
            return Err(ApplyError::Malformed {
                index: offset_next + 1,
                reason: "no batch below the high-water mark".into(),
            });
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let malformed = |reason: String| ApplyError::Malformed {
                index: applied_index.get() + 1,
                reason,
            };
            let header = BatchHeader::parse(rest)
                .ok_or_else(|| malformed("a truncated batch header".into()))?;
            let size = usize::try_from(header.size_bytes)
                .ok()
                .filter(|size| *size <= rest.len())
                .ok_or_else(|| malformed("a truncated batch".into()))?;
            let (entry, after) = rest.split_at(size);
            rest = after;
            if !header.is_control() {
                apply_entry(entry, image).map_err(|error| malformed(error.to_string()))?;
            }
            let last_index = u64::try_from(header.last_offset() + 1)
                .map_err(|_| malformed("a negative offset".into()))?;
            assert!(last_index > applied_index.get(), "entries apply in order");
            applied_index.set(last_index);
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error("records: {0:?}")]
    Records(batch::RecordsError),
    #[error("a record without a value")]
    NoValue,
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

fn apply_entry(entry: &[u8], image: &RefCell<MetadataImage>) -> Result<(), EntryError> {
    for record in batch::plain_records(entry).map_err(EntryError::Records)? {
        let record = record.map_err(EntryError::Records)?;
        let records = metadata::decode(record.value.ok_or(EntryError::NoValue)?)?;
        let index = record.offset as u64 + 1;
        let mut image = image.borrow_mut();
        for change in &records {
            if let Applied::Stale(why) = image.apply(index, change) {
                engine::log_rate_limited!(
                    "metadata entry {index}: stale {change:?} changed nothing ({why})"
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{BrokerRegistration, ListenerEndpoint};

    #[test]
    fn an_entry_batch_carries_its_records() {
        let records = vec![
            MetadataRecord::RegisterBroker(Box::new(BrokerRegistration {
                node_id: 1,
                incarnation: 2,
                endpoints: vec![ListenerEndpoint {
                    listener: Some("PLAINTEXT".to_owned()),
                    host: "h".into(),
                    port: 9092,
                }],
                rpc_address: "h:9093".into(),
                shard_count: 1,
            })),
            MetadataRecord::UnfenceBroker { node_id: 1 },
        ];
        let mut bytes = entry_batch(&records, 5);
        batch::assign_offset_and_epoch(&mut bytes, 41, 3);
        let image = RefCell::new(MetadataImage::default());
        apply_entry(&bytes, &image).unwrap();
        let image = image.into_inner();
        assert_eq!(image.last_applied_index(), 42);
        assert_eq!(image.broker(1).map(|broker| broker.fenced), Some(false));
    }
}
