//! The coordinator's durable state as records for the compacted `__consumer_offsets` log, and
//! the replay that rebuilds the coordinator from them. Keys are chosen as Kafka's are, so
//! compaction keeps exactly the latest of each: one key per group (its metadata as of its last
//! completed rebalance) and one per (group, topic, partition) (its committed offset); a
//! tombstone (no value) deletes. The encoding is our own: big-endian integers, u32-length
//! strings and bytes, one leading version byte in keys and values so they can evolve.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::consumer::records::{consumer_record_type, ConsumerReplay};
use super::group::{
    ClassicGroup, CommittedOffset, GroupProtocol, GroupState, Member, TopicPartition,
};
use super::{GroupConfig, GroupCoordinator};

const KEY_VERSION: u8 = 0;
const VALUE_VERSION: u8 = 0;
const KIND_OFFSET: u8 = 0;
const KIND_GROUP: u8 = 1;

/// One change to persist: a key and a value, or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// A record that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("group record is truncated")]
    Truncated,
    #[error("group record has unknown version {0}")]
    UnknownVersion(u8),
    #[error("group record key has unknown kind {0}")]
    UnknownKind(u8),
    #[error("group record holds a string that is not UTF-8")]
    InvalidUtf8,
    #[error("group record has {0} bytes after its end")]
    TrailingBytes(usize),
    /// The record decodes but describes an impossible group (a damaged log).
    #[error("group record describes an inconsistent group: {0}")]
    InconsistentGroup(&'static str),
}

impl GroupRecord {
    pub(super) fn offset(
        group_id: &str,
        partition: &TopicPartition,
        committed: &CommittedOffset,
    ) -> GroupRecord {
        let mut value = BytesMut::new();
        value.put_u8(VALUE_VERSION);
        value.put_i64(committed.offset);
        value.put_i32(committed.leader_epoch);
        put_str(&mut value, &committed.metadata);
        value.put_i64(committed.commit_timestamp_ms);
        GroupRecord {
            key: offset_key(group_id, partition),
            value: Some(value.freeze()),
        }
    }

    pub(super) fn offset_tombstone(group_id: &str, partition: &TopicPartition) -> GroupRecord {
        GroupRecord {
            key: offset_key(group_id, partition),
            value: None,
        }
    }

    /// The group as it must come back after a restart: its generation, protocol, leader, and
    /// each member with its subscription for the chosen protocol and its assignment.
    pub(super) fn group_metadata(group: &ClassicGroup) -> GroupRecord {
        let mut value = BytesMut::new();
        value.put_u8(VALUE_VERSION);
        put_option_str(&mut value, group.protocol_type.as_deref());
        value.put_i32(group.generation_id);
        put_option_str(&mut value, group.protocol_name.as_deref());
        put_option_str(&mut value, group.leader_id.as_deref());
        match group.state_since_ms {
            Some(since_ms) => {
                value.put_u8(1);
                value.put_i64(since_ms);
            }
            None => value.put_u8(0),
        }
        value.put_u32(u32::try_from(group.members.len()).expect("group size is bounded"));
        let protocol = group.protocol_name.as_deref().unwrap_or_default();
        for member in &group.members {
            put_str(&mut value, &member.member_id);
            put_option_str(&mut value, member.group_instance_id.as_deref());
            put_str(&mut value, &member.client_id);
            put_str(&mut value, &member.client_host);
            value.put_i32(member.rebalance_timeout_ms);
            value.put_i32(member.session_timeout_ms);
            put_bytes(&mut value, member.metadata(protocol).map_or(&[][..], |m| m));
            put_bytes(&mut value, member.assignment.as_deref().unwrap_or_default());
        }
        GroupRecord {
            key: group_key(&group.group_id),
            value: Some(value.freeze()),
        }
    }

    pub(super) fn group_tombstone(group_id: &str) -> GroupRecord {
        GroupRecord {
            key: group_key(group_id),
            value: None,
        }
    }
}

impl GroupCoordinator {
    /// Rebuilds a coordinator from the records of `__consumer_offsets`, oldest first. Groups
    /// come back as of their last completed rebalance: Stable with their members (whose
    /// sessions start now) or Empty; a group known only from offsets comes back Empty.
    pub fn replay<'a>(
        config: GroupConfig,
        seed: u64,
        records: impl IntoIterator<Item = &'a GroupRecord>,
        now_ms: i64,
    ) -> Result<GroupCoordinator, RecordError> {
        let mut metadata: BTreeMap<String, Option<ClassicGroup>> = BTreeMap::new();
        let mut offsets: BTreeMap<String, BTreeMap<TopicPartition, CommittedOffset>> =
            BTreeMap::new();
        let mut consumer_groups = ConsumerReplay::default();
        for record in records {
            if let Some(record_type) = consumer_record_type(&record.key) {
                consumer_groups.apply(record_type, &record.key[2..], record.value.as_deref())?;
                continue;
            }
            let mut key = Reader::new(&record.key);
            let version = key.u8()?;
            if version != KEY_VERSION {
                return Err(RecordError::UnknownVersion(version));
            }
            let kind = key.u8()?;
            let group_id = key.string()?;
            match kind {
                KIND_OFFSET => {
                    let partition = TopicPartition {
                        topic: key.string()?,
                        partition: key.i32()?,
                    };
                    key.end()?;
                    let group_offsets = offsets.entry(group_id).or_default();
                    match &record.value {
                        Some(value) => {
                            group_offsets.insert(partition, decode_offset(value)?);
                        }
                        None => {
                            group_offsets.remove(&partition);
                        }
                    }
                }
                KIND_GROUP => {
                    key.end()?;
                    let group = match &record.value {
                        Some(value) => Some(decode_group(group_id.clone(), value, now_ms)?),
                        None => None,
                    };
                    metadata.insert(group_id, group);
                }
                other => return Err(RecordError::UnknownKind(other)),
            }
        }
        let mut coordinator = GroupCoordinator::new(config, seed, now_ms);
        for (group_id, group) in metadata {
            if let Some(group) = group {
                coordinator.groups.insert(group_id, group);
            }
        }
        for (group_id, group_offsets) in offsets {
            if group_offsets.is_empty() {
                continue;
            }
            coordinator
                .groups
                .entry(group_id.clone())
                .or_insert_with(|| ClassicGroup::new(group_id))
                .offsets = group_offsets;
        }
        coordinator.install_consumer_groups(consumer_groups, now_ms)?;
        coordinator.check_invariants();
        Ok(coordinator)
    }
}

fn offset_key(group_id: &str, partition: &TopicPartition) -> Bytes {
    let mut key = BytesMut::new();
    key.put_u8(KEY_VERSION);
    key.put_u8(KIND_OFFSET);
    put_str(&mut key, group_id);
    put_str(&mut key, &partition.topic);
    key.put_i32(partition.partition);
    key.freeze()
}

fn group_key(group_id: &str) -> Bytes {
    let mut key = BytesMut::new();
    key.put_u8(KEY_VERSION);
    key.put_u8(KIND_GROUP);
    put_str(&mut key, group_id);
    key.freeze()
}

fn decode_offset(value: &[u8]) -> Result<CommittedOffset, RecordError> {
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

fn decode_group(group_id: String, value: &[u8], now_ms: i64) -> Result<ClassicGroup, RecordError> {
    let mut reader = Reader::new(value);
    reader.version()?;
    let mut group = ClassicGroup::new(group_id);
    group.protocol_type = reader.option_string()?;
    group.generation_id = reader.i32()?;
    group.protocol_name = reader.option_string()?;
    group.leader_id = reader.option_string()?;
    group.state_since_ms = match reader.u8()? {
        0 => None,
        _ => Some(reader.i64()?),
    };
    let count = reader.u32()?;
    for _ in 0..count {
        let member_id = reader.string()?;
        let group_instance_id = reader.option_string()?;
        let client_id = reader.string()?;
        let client_host = reader.string()?;
        let rebalance_timeout_ms = reader.i32()?;
        let session_timeout_ms = reader.i32()?;
        let subscription = reader.bytes()?;
        let assignment = reader.bytes()?;
        let protocol = group
            .protocol_name
            .clone()
            .ok_or(RecordError::InconsistentGroup("members but no protocol"))?;
        group.members.push(Member {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            protocols: vec![GroupProtocol {
                name: protocol,
                metadata: subscription,
            }],
            assignment: Some(assignment),
            session_deadline_ms: now_ms + i64::from(session_timeout_ms),
            pending_join: None,
            pending_sync: None,
        });
    }
    reader.end()?;
    check_group(&group)?;
    if !group.members.is_empty() {
        group.state = GroupState::Stable;
    }
    Ok(group)
}

/// What the coordinator asserts of a group, checked here so that a damaged record is an error
/// and not a crash.
fn check_group(group: &ClassicGroup) -> Result<(), RecordError> {
    let inconsistent = |why| Err(RecordError::InconsistentGroup(why));
    if group.generation_id < 0 {
        return inconsistent("negative generation");
    }
    let leader_consistent = match group.leader_id.as_deref() {
        None => group.members.is_empty(),
        Some(leader) => group.member_index(leader).is_some(),
    };
    if !leader_consistent {
        return inconsistent("the leader is not one of the members");
    }
    for (index, member) in group.members.iter().enumerate() {
        let earlier = &group.members[..index];
        if earlier.iter().any(|m| m.member_id == member.member_id) {
            return inconsistent("a member id appears twice");
        }
        if member.group_instance_id.is_some()
            && earlier
                .iter()
                .any(|m| m.group_instance_id == member.group_instance_id)
        {
            return inconsistent("a group.instance.id appears twice");
        }
    }
    Ok(())
}

fn put_str(buffer: &mut BytesMut, value: &str) {
    put_bytes(buffer, value.as_bytes());
}

fn put_bytes(buffer: &mut BytesMut, value: &[u8]) {
    buffer.put_u32(u32::try_from(value.len()).expect("request fields are far below 4 GiB"));
    buffer.put_slice(value);
}

fn put_option_str(buffer: &mut BytesMut, value: Option<&str>) {
    match value {
        Some(value) => {
            buffer.put_u8(1);
            put_str(buffer, value);
        }
        None => buffer.put_u8(0),
    }
}

/// Reads the encoding back, with every length checked against what is left.
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
            VALUE_VERSION => Ok(()),
            other => Err(RecordError::UnknownVersion(other)),
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
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::InvalidUtf8)
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
