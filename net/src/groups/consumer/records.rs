//! A consumer group's records in `__consumer_offsets`, in Kafka's own schemas (group-coordinator's
//! `common/message/ConsumerGroup*.json`), so that a restart or a new coordinator resumes every
//! group, and tools that read the topic with Kafka's schemas understand it. Keys are an int16
//! record type and a non-flexible struct (group id, and member id where the record is a
//! member's); values an int16 version (0) and a flexible struct (compact strings and arrays,
//! tagged fields, of which we write none and skip any on reading):
//!
//! | key | record                          | value                                          |
//! |-----|---------------------------------|------------------------------------------------|
//! | 3   | ConsumerGroupMetadata           | group epoch                                    |
//! | 4   | ConsumerGroupPartitionMetadata  | subscribed topics (id, name, partitions)       |
//! | 5   | ConsumerGroupMemberMetadata     | a member's instance, client, subscription      |
//! | 6   | ConsumerGroupTargetAssignmentMetadata | assignment epoch                         |
//! | 7   | ConsumerGroupTargetAssignmentMember   | a member's target partitions             |
//! | 8   | ConsumerGroupCurrentMemberAssignment  | a member's epochs, state, partitions     |
//!
//! Kafka 4.1 stops writing record 4 (it hashes the topics' metadata into record 3's tagged
//! field instead); we write it as 4.0 does, since a coordinator that takes over must know the
//! partition counts the target was computed from. [`ConsumerReplay`] reads records back in log
//! order and builds the groups at the end.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use super::reconcile::MemberAssignment;
use super::{
    Assignment, ConsumerGroup, ConsumerMember, MemberState, SubscribedTopic, TopicId, TopicRegex,
};
use crate::groups::{GroupCoordinator, GroupRecord, RecordError};

pub const GROUP_METADATA: i16 = 3;
pub const PARTITION_METADATA: i16 = 4;
pub const MEMBER_METADATA: i16 = 5;
pub const TARGET_ASSIGNMENT_METADATA: i16 = 6;
pub const TARGET_ASSIGNMENT_MEMBER: i16 = 7;
pub const CURRENT_MEMBER_ASSIGNMENT: i16 = 8;

/// The record types (key versions) this module reads.
pub const KEY_VERSIONS: std::ops::RangeInclusive<i16> = GROUP_METADATA..=CURRENT_MEMBER_ASSIGNMENT;

const VALUE_VERSION: i16 = 0;

fn key(record_type: i16, group_id: &str, member_id: Option<&str>) -> Bytes {
    let mut key = BytesMut::new();
    key.put_i16(record_type);
    put_string(&mut key, group_id);
    if let Some(member_id) = member_id {
        put_string(&mut key, member_id);
    }
    key.freeze()
}

fn record(key: Bytes, value: Writer) -> GroupRecord {
    GroupRecord {
        key,
        value: Some(value.finish()),
    }
}

pub(super) fn group_metadata(group: &ConsumerGroup) -> GroupRecord {
    let mut value = Writer::new();
    value.i32(group.group_epoch);
    record(key(GROUP_METADATA, &group.group_id, None), value)
}

pub(super) fn partition_metadata(group: &ConsumerGroup) -> GroupRecord {
    let mut value = Writer::new();
    value.array_len(group.subscribed_topics.len());
    for topic in group.subscribed_topics.values() {
        value.uuid(&topic.id);
        value.string(&topic.name);
        value.i32(topic.partitions);
        value.array_len(0); // PartitionMetadata: no racks.
        value.no_tags();
    }
    record(key(PARTITION_METADATA, &group.group_id, None), value)
}

pub(super) fn member_metadata(group_id: &str, member: &ConsumerMember) -> GroupRecord {
    let mut value = Writer::new();
    value.nullable_string(member.instance_id.as_deref());
    value.nullable_string(member.rack_id.as_deref());
    value.string(&member.client_id);
    value.string(&member.client_host);
    value.array_len(member.subscribed_topic_names.len());
    for name in &member.subscribed_topic_names {
        value.string(name);
    }
    value.nullable_string(
        member
            .subscribed_topic_regex
            .as_ref()
            .map(TopicRegex::pattern),
    );
    value.i32(member.rebalance_timeout_ms);
    value.nullable_string(member.server_assignor.as_deref());
    record(
        key(MEMBER_METADATA, group_id, Some(&member.member_id)),
        value,
    )
}

pub(super) fn target_metadata(group: &ConsumerGroup) -> GroupRecord {
    let mut value = Writer::new();
    value.i32(group.assignment_epoch);
    record(
        key(TARGET_ASSIGNMENT_METADATA, &group.group_id, None),
        value,
    )
}

pub(super) fn target_member(group_id: &str, member_id: &str, target: &Assignment) -> GroupRecord {
    let mut value = Writer::new();
    value.assignment(target);
    record(
        key(TARGET_ASSIGNMENT_MEMBER, group_id, Some(member_id)),
        value,
    )
}

pub(super) fn current_assignment(group_id: &str, member: &ConsumerMember) -> GroupRecord {
    let assignment = &member.assignment;
    let mut value = Writer::new();
    value.i32(assignment.member_epoch);
    value.i32(assignment.previous_member_epoch);
    value.buffer.put_i8(assignment.state.code());
    value.assignment(&assignment.assigned);
    value.assignment(&assignment.pending_revocation);
    record(
        key(CURRENT_MEMBER_ASSIGNMENT, group_id, Some(&member.member_id)),
        value,
    )
}

/// A member's records deleted, in Kafka's order.
pub(super) fn member_tombstones(group_id: &str, member_id: &str) -> [GroupRecord; 3] {
    [
        CURRENT_MEMBER_ASSIGNMENT,
        TARGET_ASSIGNMENT_MEMBER,
        MEMBER_METADATA,
    ]
    .map(|record_type| GroupRecord {
        key: key(record_type, group_id, Some(member_id)),
        value: None,
    })
}

/// An empty group's records deleted, in Kafka's order.
pub(super) fn group_tombstones(group_id: &str) -> [GroupRecord; 3] {
    [
        TARGET_ASSIGNMENT_METADATA,
        PARTITION_METADATA,
        GROUP_METADATA,
    ]
    .map(|record_type| GroupRecord {
        key: key(record_type, group_id, None),
        value: None,
    })
}

/// A ConsumerProtocolSubscription v0 (the classic protocol's member metadata) for `topics`.
pub(super) fn classic_subscription(topics: &[&str]) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(0);
    buffer.put_i32(i32::try_from(topics.len()).expect("subscriptions are bounded"));
    for topic in topics {
        put_string(&mut buffer, topic);
    }
    buffer.put_i32(-1); // user data: null
    buffer.freeze()
}

/// A ConsumerProtocolAssignment v0 (the classic protocol's assignment) of `partitions`.
pub(super) fn classic_assignment(partitions: &[(&str, Vec<i32>)]) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(0);
    buffer.put_i32(i32::try_from(partitions.len()).expect("assignments are bounded"));
    for (topic, indexes) in partitions {
        put_string(&mut buffer, topic);
        buffer.put_i32(i32::try_from(indexes.len()).expect("assignments are bounded"));
        for index in indexes {
            buffer.put_i32(*index);
        }
    }
    buffer.put_i32(-1); // user data: null
    buffer.freeze()
}

/// A non-flexible string (int16 length), as keys and the classic encodings have it.
fn put_string(buffer: &mut BytesMut, value: &str) {
    buffer.put_i16(i16::try_from(value.len()).expect("group, member and topic names are short"));
    buffer.put_slice(value.as_bytes());
}

/// A flexible value being written.
struct Writer {
    buffer: BytesMut,
}

impl Writer {
    fn new() -> Writer {
        let mut buffer = BytesMut::new();
        buffer.put_i16(VALUE_VERSION);
        Writer { buffer }
    }

    fn finish(mut self) -> Bytes {
        self.no_tags();
        self.buffer.freeze()
    }

    fn unsigned_varint(&mut self, mut value: u32) {
        while value >= 0x80 {
            self.buffer.put_u8((value as u8) | 0x80);
            value >>= 7;
        }
        self.buffer.put_u8(value as u8);
    }

    fn length(&mut self, length: usize) {
        self.unsigned_varint(u32::try_from(length + 1).expect("record fields are far below 4 GiB"));
    }

    fn array_len(&mut self, length: usize) {
        self.length(length);
    }

    fn no_tags(&mut self) {
        self.unsigned_varint(0);
    }

    fn i32(&mut self, value: i32) {
        self.buffer.put_i32(value);
    }

    fn uuid(&mut self, id: &TopicId) {
        self.buffer.put_slice(id);
    }

    fn string(&mut self, value: &str) {
        self.length(value.len());
        self.buffer.put_slice(value.as_bytes());
    }

    fn nullable_string(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.string(value),
            None => self.unsigned_varint(0),
        }
    }

    /// `[]TopicPartitions` (topic id, partitions).
    fn assignment(&mut self, assignment: &Assignment) {
        self.array_len(assignment.len());
        for (topic, partitions) in assignment {
            self.uuid(topic);
            self.array_len(partitions.len());
            for partition in partitions {
                self.i32(*partition);
            }
            self.no_tags();
        }
    }
}

/// Reads keys and values back, every length checked against what is left.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], RecordError> {
        if self.rest.len() < length {
            return Err(RecordError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(taken)
    }

    fn i8(&mut self) -> Result<i8, RecordError> {
        Ok(i8::from_be_bytes(
            self.take(1)?.try_into().expect("one byte"),
        ))
    }

    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("two bytes"),
        ))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("four bytes"),
        ))
    }

    fn uuid(&mut self) -> Result<TopicId, RecordError> {
        Ok(self.take(16)?.try_into().expect("sixteen bytes"))
    }

    fn unsigned_varint(&mut self) -> Result<u32, RecordError> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u32::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(RecordError::InconsistentGroup(
            "a varint longer than five bytes",
        ))
    }

    /// A compact length: `None` for null.
    fn length(&mut self) -> Result<Option<usize>, RecordError> {
        let encoded = self.unsigned_varint()?;
        Ok(encoded.checked_sub(1).map(|length| length as usize))
    }

    fn utf8(bytes: &[u8]) -> Result<String, RecordError> {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| RecordError::Malformed("a string that is not UTF-8".to_owned()))
    }

    /// A key's non-flexible string.
    fn key_string(&mut self) -> Result<String, RecordError> {
        let length = usize::try_from(self.i16()?)
            .map_err(|_| RecordError::InconsistentGroup("a null string in a key"))?;
        Reader::utf8(self.take(length)?)
    }

    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        match self.length()? {
            None => Ok(None),
            Some(length) => Ok(Some(Reader::utf8(self.take(length)?)?)),
        }
    }

    fn string(&mut self) -> Result<String, RecordError> {
        self.nullable_string()?
            .ok_or(RecordError::InconsistentGroup(
                "a null string where one is required",
            ))
    }

    fn array_len(&mut self) -> Result<usize, RecordError> {
        let length = self.length()?.ok_or(RecordError::InconsistentGroup(
            "a null array where one is required",
        ))?;
        // Every element takes at least a byte: a damaged length cannot make us allocate.
        if length > self.rest.len() {
            return Err(RecordError::Truncated);
        }
        Ok(length)
    }

    /// Skips a struct's tagged fields (later versions' additions).
    fn tags(&mut self) -> Result<(), RecordError> {
        let count = self.unsigned_varint()?;
        for _ in 0..count {
            self.unsigned_varint()?;
            let size = self.unsigned_varint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }

    fn value_version(&mut self) -> Result<(), RecordError> {
        match self.i16()? {
            VALUE_VERSION => Ok(()),
            other => Err(RecordError::UnknownValueVersion(other)),
        }
    }

    fn assignment(&mut self) -> Result<Assignment, RecordError> {
        let mut assignment = Assignment::new();
        for _ in 0..self.array_len()? {
            let topic = self.uuid()?;
            let mut partitions = BTreeSet::new();
            for _ in 0..self.array_len()? {
                partitions.insert(self.i32()?);
            }
            self.tags()?;
            if !partitions.is_empty() {
                assignment.entry(topic).or_default().extend(partitions);
            }
        }
        Ok(assignment)
    }

    fn end(mut self) -> Result<(), RecordError> {
        self.tags()?;
        match self.rest.len() {
            0 => Ok(()),
            trailing => Err(RecordError::TrailingBytes(trailing)),
        }
    }
}

/// One member as its records say so far.
#[derive(Debug, Default)]
struct ReplayedMember {
    metadata: Option<ConsumerMember>,
    assignment: Option<MemberAssignment>,
}

/// One group as its records say so far.
#[derive(Debug, Default)]
struct ReplayedGroup {
    group_epoch: Option<i32>,
    assignment_epoch: Option<i32>,
    subscribed_topics: BTreeMap<String, SubscribedTopic>,
    members: BTreeMap<String, ReplayedMember>,
    target: BTreeMap<String, Assignment>,
}

/// The consumer groups being rebuilt from `__consumer_offsets`, record by record in log order.
#[derive(Debug, Default)]
pub(crate) struct ConsumerReplay {
    groups: BTreeMap<String, ReplayedGroup>,
}

impl ConsumerReplay {
    /// Takes one record whose key version (`record_type`) is in [`KEY_VERSIONS`]; `key` is the
    /// key after its version.
    pub fn apply(
        &mut self,
        record_type: i16,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), RecordError> {
        let mut key = Reader { rest: key };
        let group_id = key.key_string()?;
        let member_id = match record_type {
            MEMBER_METADATA | TARGET_ASSIGNMENT_MEMBER | CURRENT_MEMBER_ASSIGNMENT => {
                Some(key.key_string()?)
            }
            GROUP_METADATA | PARTITION_METADATA | TARGET_ASSIGNMENT_METADATA => None,
            other => return Err(RecordError::UnknownKeyVersion(other)),
        };
        if !key.rest.is_empty() {
            return Err(RecordError::TrailingBytes(key.rest.len()));
        }
        let group = self.groups.entry(group_id).or_default();
        let Some(value) = value else {
            match (record_type, member_id) {
                (GROUP_METADATA, _) => group.group_epoch = None,
                (PARTITION_METADATA, _) => group.subscribed_topics.clear(),
                (TARGET_ASSIGNMENT_METADATA, _) => group.assignment_epoch = None,
                (TARGET_ASSIGNMENT_MEMBER, Some(member_id)) => {
                    group.target.remove(&member_id);
                }
                (MEMBER_METADATA, Some(member_id)) => {
                    if let Some(member) = group.members.get_mut(&member_id) {
                        member.metadata = None;
                    }
                }
                (_, Some(member_id)) => {
                    if let Some(member) = group.members.get_mut(&member_id) {
                        member.assignment = None;
                    }
                }
                (_, None) => unreachable!("member records have a member id"),
            }
            return Ok(());
        };
        let mut value = Reader { rest: value };
        value.value_version()?;
        match (record_type, member_id) {
            (GROUP_METADATA, _) => group.group_epoch = Some(value.i32()?),
            (TARGET_ASSIGNMENT_METADATA, _) => group.assignment_epoch = Some(value.i32()?),
            (PARTITION_METADATA, _) => {
                let mut topics = BTreeMap::new();
                for _ in 0..value.array_len()? {
                    let id = value.uuid()?;
                    let name = value.string()?;
                    let partitions = value.i32()?;
                    for _ in 0..value.array_len()? {
                        value.i32()?;
                        for _ in 0..value.array_len()? {
                            value.string()?;
                        }
                        value.tags()?;
                    }
                    value.tags()?;
                    topics.insert(
                        name.clone(),
                        SubscribedTopic {
                            id,
                            name,
                            partitions,
                        },
                    );
                }
                group.subscribed_topics = topics;
            }
            (TARGET_ASSIGNMENT_MEMBER, Some(member_id)) => {
                group.target.insert(member_id, value.assignment()?);
            }
            (MEMBER_METADATA, Some(member_id)) => {
                let mut member = ConsumerMember::new(member_id.clone(), 0, 0);
                member.instance_id = value.nullable_string()?;
                member.rack_id = value.nullable_string()?;
                member.client_id = value.string()?;
                member.client_host = value.string()?;
                for _ in 0..value.array_len()? {
                    member.subscribed_topic_names.insert(value.string()?);
                }
                if let Some(pattern) = value.nullable_string()? {
                    member.subscribed_topic_regex =
                        Some(TopicRegex::new(&pattern).map_err(|_| {
                            RecordError::InconsistentGroup("an invalid regular expression")
                        })?);
                }
                member.rebalance_timeout_ms = value.i32()?;
                member.server_assignor = value.nullable_string()?;
                group.members.entry(member_id).or_default().metadata = Some(member);
            }
            (_, Some(member_id)) => {
                let member_epoch = value.i32()?;
                let previous_member_epoch = value.i32()?;
                let state = MemberState::from_code(value.i8()?)
                    .ok_or(RecordError::InconsistentGroup("an unknown member state"))?;
                let assigned = value.assignment()?;
                let pending_revocation = value.assignment()?;
                group.members.entry(member_id).or_default().assignment = Some(MemberAssignment {
                    state,
                    member_epoch,
                    previous_member_epoch,
                    assigned,
                    pending_revocation,
                });
            }
            (_, None) => unreachable!("member records have a member id"),
        }
        value.end()
    }

    /// The groups the records describe: those whose metadata record is live, members that
    /// have their metadata (a member without an assignment record starts with nothing), each
    /// with a fresh session from `now_ms`.
    pub fn finish(
        self,
        now_ms: i64,
        session_timeout_ms: i32,
    ) -> Result<BTreeMap<String, ConsumerGroup>, RecordError> {
        let mut groups = BTreeMap::new();
        for (group_id, replayed) in self.groups {
            let Some(group_epoch) = replayed.group_epoch else {
                continue;
            };
            let mut group = ConsumerGroup::new(group_id.clone(), now_ms);
            group.group_epoch = group_epoch;
            group.assignment_epoch = replayed.assignment_epoch.unwrap_or(0);
            group.subscribed_topics = replayed.subscribed_topics;
            for (member_id, member) in replayed.members {
                let Some(mut metadata) = member.metadata else {
                    continue;
                };
                metadata.session_deadline_ms = now_ms + i64::from(session_timeout_ms);
                if let Some(assignment) = member.assignment {
                    if assignment.state == MemberState::UnrevokedPartitions {
                        metadata.revocation_deadline_ms =
                            Some(now_ms + i64::from(metadata.rebalance_timeout_ms.max(0)));
                    }
                    metadata.assignment = assignment;
                }
                group.members.insert(member_id, metadata);
            }
            group.target = replayed
                .target
                .into_iter()
                .filter(|(member_id, _)| group.members.contains_key(member_id))
                .collect();
            if !group.members.is_empty() {
                group.empty_since_ms = None;
            }
            if let Some(why) = group.inconsistency() {
                return Err(RecordError::InconsistentGroup(why));
            }
            groups.insert(group_id, group);
        }
        Ok(groups)
    }
}

/// The record type of a consumer group's record (its key's int16 version), if `key` is one.
pub(crate) fn consumer_record_type(key: &[u8]) -> Option<i16> {
    let version = i16::from_be_bytes(key.get(..2)?.try_into().ok()?);
    KEY_VERSIONS.contains(&version).then_some(version)
}

impl GroupCoordinator {
    /// Puts the replayed consumer groups in place, each with the offsets the replay of the
    /// offset records gave a group of the same id (a group id has one protocol: its offsets
    /// belong to its consumer group).
    pub(crate) fn install_consumer_groups(
        &mut self,
        replay: ConsumerReplay,
        now_ms: i64,
    ) -> Result<(), RecordError> {
        let mut groups = replay.finish(now_ms, self.config.consumer.session_timeout_ms)?;
        for (group_id, group) in &mut groups {
            if let Some(classic) = self.groups.remove(group_id) {
                group.offsets = classic.offsets;
            }
        }
        self.consumer_groups = groups;
        Ok(())
    }
}
