//! The records Ferrite wrote to `__consumer_offsets` before it wrote Kafka's, and their one-time
//! conversion.
//!
//! That format: a key is a u8 version (0), a u8 kind (0 an offset, 1 a group) and the fields
//! of Kafka's keys with u32 lengths; a value is a u8 version (0) then the fields, integers
//! big-endian, strings and bytes u32-length-prefixed, optional strings behind a u8 flag.
//!
//! # Telling the formats apart
//! By strict decoding, record by record, with no marker needed: a record is Kafka's if its key
//! decodes as a Kafka key to the last byte, the old format's if it decodes as an old key to
//! the last byte, and never both. An old key's first two bytes are the int16 0 or 1 (an offset
//! key version), but its u32 group length then reads as an empty group and the group's bytes
//! as the topic, and the lengths never add up: an old offset key is 14 + G + T bytes against
//! the 10 + G a Kafka reading consumes, an old group key 6 + G against at least 10 + G. A Kafka
//! key read as an old one: version 0 and kind 0 to 2 (kind 2, a group key, is no old kind);
//! its group's int16 length and first two bytes make a u32 length of at least 65 536 for any
//! group id that is not empty, longer than the key; with an empty group id the topic is read as
//! the group and the partition as the topic's length, which ends an old offset key one field
//! short (or, read as an old group key, 4 bytes long). `tests` check both directions. So the conversion converts what reads strictly as
//! an old record and leaves everything else as it is: Kafka's records, and anything neither
//! format reads (damage), which the coordinator's load then refuses with a typed error, as any
//! record it cannot read.
//!
//! # The conversion
//! [`LegacyRecordConversion`] is the engine's [`RecordRewrite`] for `__consumer_offsets`: each
//! partition's log is rewritten in place when it is opened, before anyone reads it (the
//! coordinator, a consumer of the topic, a follower), once (a marker file in the partition
//! directory), crash-safely (the cleaner's swap; a crash before the marker leaves a log the
//! next open finishes, records already converted being left as they are). Offsets, batches and
//! epochs stay as they were, so the replicas of a cluster, each converting its own copy of the
//! same batches, keep the same log; a follower that fetches from a converted leader receives
//! Kafka's records, and one that was behind converts what it has and fetches the rest. Old
//! records reaching a converted replica later (from a leader still on the old binary during a
//! rolling upgrade) are not converted: the upgrade must finish (every broker restarted on the
//! new binary) before the group coordinators move; the old binary cannot read Kafka's records
//! either, so there is no downgrade.
//!
//! The compaction that follows is the cleaner's, as for any record: the converted records keep
//! their old records' offsets, and a key maps to one key, so the latest record of each key is
//! the same record before and after.
//!
//! Why in place, in the engine, and not by appending the converted state through the
//! coordinator (a load that finds old records appending Kafka's records and tombstones for the
//! old keys): that leaves the old records in the topic until compaction removes them, and their
//! tombstones for `delete.retention.ms` after, which tools that read the topic from the start
//! decode as garbage, the very thing the conversion is for; and the log would grow by the
//! whole state on the first start.

use std::collections::BTreeSet;

use bytes::Bytes;
use engine::catalog::OFFSETS_TOPIC;
use engine::{PartitionRecordRewrite, RecordRewrite, RewrittenRecord};

use super::kafka::{encode_offset_value, GroupMetadataValue, MemberMetadata, RecordKey};
use super::RecordError;
use crate::groups::{CommittedOffset, TopicPartition};

const VERSION: u8 = 0;
const KIND_OFFSET: u8 = 0;
const KIND_GROUP: u8 = 1;

/// The marker, in a `__consumer_offsets` partition directory, that its records are Kafka's.
const CONVERTED_MARKER: &str = "records-in-kafka-format";

/// The conversion of `__consumer_offsets` from the old format, for the runtime
/// (`RuntimeConfig::record_rewrite`).
#[derive(Debug, Default)]
pub struct LegacyRecordConversion;

impl RecordRewrite for LegacyRecordConversion {
    fn topic(&self) -> &str {
        OFFSETS_TOPIC
    }

    fn done_marker(&self) -> &str {
        CONVERTED_MARKER
    }

    fn start(&self) -> Box<dyn PartitionRecordRewrite> {
        Box::<PartitionConversion>::default()
    }
}

/// The conversion of one partition, counting what it converted.
#[derive(Debug, Default)]
struct PartitionConversion {
    groups: BTreeSet<String>,
    offsets: u64,
    group_metadata: u64,
    tombstones: u64,
}

impl PartitionRecordRewrite for PartitionConversion {
    /// Converts a record that reads strictly as the old format, and leaves anything else as it
    /// is: Kafka's records (never also an old one), and anything the coordinator's load judges
    /// (a record type this binary does not know, damage).
    fn rewrite(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Option<RewrittenRecord> {
        let (key, value) = convert(key?, value).ok()?;
        self.groups.insert(key.group_id().to_owned());
        match (&key, &value) {
            (_, None) => self.tombstones += 1,
            (RecordKey::Offset { .. }, Some(_)) => self.offsets += 1,
            (RecordKey::GroupMetadata { .. }, Some(_)) => self.group_metadata += 1,
        }
        Some(RewrittenRecord {
            key: Some(key.encode().to_vec()),
            value: value.map(|value| value.to_vec()),
        })
    }

    fn summary(&self) -> String {
        format!(
            "Ferrite's old __consumer_offsets format to Kafka's: {} groups, {} committed \
             offsets, {} group metadata, {} tombstones",
            self.groups.len(),
            self.offsets,
            self.group_metadata,
            self.tombstones
        )
    }
}

/// An old record, read strictly, as Kafka's key and value.
pub(super) fn convert(
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(RecordKey, Option<Bytes>), RecordError> {
    let mut reader = Reader::new(key);
    let version = reader.u8()?;
    if version != VERSION {
        return Err(RecordError::UnknownKeyVersion(i16::from(version)));
    }
    let kind = reader.u8()?;
    let group_id = reader.string()?;
    let key = match kind {
        KIND_OFFSET => RecordKey::Offset {
            group_id,
            partition: TopicPartition {
                topic: reader.string()?,
                partition: reader.i32()?,
            },
        },
        KIND_GROUP => RecordKey::GroupMetadata { group_id },
        other => {
            return Err(RecordError::Malformed(format!(
                "an old record of unknown kind {other}"
            )))
        }
    };
    reader.end()?;
    let value = match (&key, value) {
        (_, None) => None,
        (RecordKey::Offset { .. }, Some(value)) => {
            Some(encode_offset_value(&read_offset_value(value)?))
        }
        (RecordKey::GroupMetadata { .. }, Some(value)) => Some(read_group_value(value)?.encode()),
    };
    Ok((key, value))
}

fn read_offset_value(value: &[u8]) -> Result<CommittedOffset, RecordError> {
    let mut reader = Reader::new(value);
    reader.version()?;
    let committed = CommittedOffset {
        offset: reader.i64()?,
        leader_epoch: reader.i32()?,
        metadata: reader.string()?,
        commit_timestamp_ms: reader.i64()?,
    };
    reader.end()?;
    Ok(committed)
}

fn read_group_value(value: &[u8]) -> Result<GroupMetadataValue, RecordError> {
    let mut reader = Reader::new(value);
    reader.version()?;
    let protocol_type = reader.option_string()?.unwrap_or_default();
    let generation = reader.i32()?;
    let protocol = reader.option_string()?;
    let leader = reader.option_string()?;
    let current_state_timestamp_ms = match reader.u8()? {
        0 => -1,
        _ => reader.i64()?,
    };
    let count = reader.u32()?;
    let mut members = Vec::new();
    for _ in 0..count {
        members.push(MemberMetadata {
            member_id: reader.string()?,
            group_instance_id: reader.option_string()?,
            client_id: reader.string()?,
            client_host: reader.string()?,
            rebalance_timeout_ms: reader.i32()?,
            session_timeout_ms: reader.i32()?,
            subscription: reader.bytes()?,
            assignment: reader.bytes()?,
        });
    }
    reader.end()?;
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

/// Reads the old encoding, with every length checked against what is left.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], RecordError> {
        if self.rest.len() < length {
            return Err(RecordError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let bytes = self.take(N)?;
        Ok(bytes.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    fn version(&mut self) -> Result<(), RecordError> {
        match self.u8()? {
            VERSION => Ok(()),
            other => Err(RecordError::UnknownValueVersion(i16::from(other))),
        }
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let length = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(length)?))
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let length = self.u32()? as usize;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| RecordError::Malformed("a string that is not UTF-8".to_owned()))
    }

    fn option_string(&mut self) -> Result<Option<String>, RecordError> {
        match self.u8()? {
            0 => Ok(None),
            _ => Ok(Some(self.string()?)),
        }
    }

    fn end(&self) -> Result<(), RecordError> {
        match self.rest.len() {
            0 => Ok(()),
            trailing => Err(RecordError::TrailingBytes(trailing)),
        }
    }
}

/// The old format as the previous binary wrote it, for the tests that convert it.
#[cfg(test)]
pub(super) mod written {
    use bytes::{BufMut, Bytes, BytesMut};

    use super::{KIND_GROUP, KIND_OFFSET, VERSION};
    use crate::groups::record::kafka::GroupMetadataValue;
    use crate::groups::CommittedOffset;

    pub fn offset_key(group_id: &str, topic: &str, partition: i32) -> Bytes {
        let mut key = BytesMut::new();
        key.put_u8(VERSION);
        key.put_u8(KIND_OFFSET);
        put_bytes(&mut key, group_id.as_bytes());
        put_bytes(&mut key, topic.as_bytes());
        key.put_i32(partition);
        key.freeze()
    }

    pub fn group_key(group_id: &str) -> Bytes {
        let mut key = BytesMut::new();
        key.put_u8(VERSION);
        key.put_u8(KIND_GROUP);
        put_bytes(&mut key, group_id.as_bytes());
        key.freeze()
    }

    pub fn offset_value(committed: &CommittedOffset) -> Bytes {
        let mut value = BytesMut::new();
        value.put_u8(VERSION);
        value.put_i64(committed.offset);
        value.put_i32(committed.leader_epoch);
        put_bytes(&mut value, committed.metadata.as_bytes());
        value.put_i64(committed.commit_timestamp_ms);
        value.freeze()
    }

    /// `group.protocol_type` "" is written as none, as the old coordinator held it.
    pub fn group_value(group: &GroupMetadataValue) -> Bytes {
        let mut value = BytesMut::new();
        value.put_u8(VERSION);
        let protocol_type = Some(group.protocol_type.as_str()).filter(|value| !value.is_empty());
        put_option(&mut value, protocol_type);
        value.put_i32(group.generation);
        put_option(&mut value, group.protocol.as_deref());
        put_option(&mut value, group.leader.as_deref());
        match group.current_state_timestamp_ms {
            -1 => value.put_u8(0),
            since_ms => {
                value.put_u8(1);
                value.put_i64(since_ms);
            }
        }
        value.put_u32(group.members.len() as u32);
        for member in &group.members {
            put_bytes(&mut value, member.member_id.as_bytes());
            put_option(&mut value, member.group_instance_id.as_deref());
            put_bytes(&mut value, member.client_id.as_bytes());
            put_bytes(&mut value, member.client_host.as_bytes());
            value.put_i32(member.rebalance_timeout_ms);
            value.put_i32(member.session_timeout_ms);
            put_bytes(&mut value, &member.subscription);
            put_bytes(&mut value, &member.assignment);
        }
        value.freeze()
    }

    fn put_bytes(buffer: &mut BytesMut, bytes: &[u8]) {
        buffer.put_u32(bytes.len() as u32);
        buffer.put_slice(bytes);
    }

    fn put_option(buffer: &mut BytesMut, value: Option<&str>) {
        match value {
            Some(value) => {
                buffer.put_u8(1);
                put_bytes(buffer, value.as_bytes());
            }
            None => buffer.put_u8(0),
        }
    }
}
