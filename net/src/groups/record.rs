//! The coordinator's durable state as records of the compacted `__consumer_offsets` log, and
//! the replay that rebuilds the coordinator from them. The records are Kafka's own (`kafka`:
//! its schemas, every version read, Kafka 3.x's written), so tools that read the topic
//! themselves understand them; keys are chosen as Kafka's are, so compaction keeps exactly the
//! latest of each: one key per group (its metadata as of its last completed rebalance) and one
//! per (group, topic, partition) (its committed offset); a tombstone (the key, no value)
//! deletes.
//!
//! Ferrite before Kafka's schemas wrote a format of its own; `legacy` reads it and converts a
//! data directory's partitions once, when they are opened (see there). The replay reads Kafka's
//! records only.
//!
//! `log` ([`LogReplay`]) folds a log's batches into what the replay takes: the latest record of
//! each key, and a transaction's records held until its marker.
//!
//! Record types are told apart by the key's version: the classic ones in
//! [`RecordKey::decode`], the consumer-group records of KIP-848 (key versions 3 to 8) by
//! `consumer::records` (in [`GroupCoordinator::replay`], before the classic ones).

mod kafka;
mod legacy;
mod log;

pub use legacy::LegacyRecordConversion;
pub use log::LogReplay;

use std::collections::BTreeMap;

use bytes::Bytes;
use thiserror::Error;

use super::consumer::records::{consumer_record_type, ConsumerReplay};
use super::group::{
    ClassicGroup, CommittedOffset, GroupProtocol, GroupState, Member, TopicPartition,
};
use super::{GroupConfig, GroupCoordinator};
use kafka::{
    decode_offset_value, encode_offset_value, GroupMetadataValue, MemberMetadata, RecordKey,
};

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
    #[error("group record key has version {0}, of a record type this broker does not know")]
    UnknownKeyVersion(i16),
    #[error("group record value has unknown version {0}")]
    UnknownValueVersion(i16),
    #[error("group record is malformed: {0}")]
    Malformed(String),
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
        GroupRecord {
            key: offset_key(group_id, partition),
            value: Some(encode_offset_value(committed)),
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
        let protocol = group.protocol_name.as_deref().unwrap_or_default();
        let value = GroupMetadataValue {
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            generation: group.generation_id,
            protocol: group.protocol_name.clone(),
            leader: group.leader_id.clone(),
            current_state_timestamp_ms: group.state_since_ms.unwrap_or(-1),
            members: group
                .members
                .iter()
                .map(|member| MemberMetadata {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    session_timeout_ms: member.session_timeout_ms,
                    subscription: member.metadata(protocol).cloned().unwrap_or_default(),
                    assignment: member.assignment.clone().unwrap_or_default(),
                })
                .collect(),
        };
        GroupRecord {
            key: group_key(&group.group_id),
            value: Some(value.encode()),
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
            // KIP-848's consumer groups (key versions 3 to 8) are `consumer::records`'.
            if let Some(record_type) = consumer_record_type(&record.key) {
                consumer_groups.apply(record_type, &record.key[2..], record.value.as_deref())?;
                continue;
            }
            match RecordKey::decode(&record.key)? {
                RecordKey::Offset {
                    group_id,
                    partition,
                } => {
                    let group_offsets = offsets.entry(group_id).or_default();
                    match &record.value {
                        Some(value) => {
                            group_offsets.insert(partition, decode_offset_value(value)?);
                        }
                        None => {
                            group_offsets.remove(&partition);
                        }
                    }
                }
                RecordKey::GroupMetadata { group_id } => {
                    let group = match &record.value {
                        Some(value) => Some(decode_group(
                            group_id.clone(),
                            GroupMetadataValue::decode(value)?,
                            now_ms,
                        )?),
                        None => None,
                    };
                    metadata.insert(group_id, group);
                }
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

/// The group, partition and offset of a transaction's offset record (a TxnOffsetCommit's: an
/// offset key with a value); anything else in a transactional batch is malformed.
pub(super) fn decode_transactional_offset(
    record: &GroupRecord,
) -> Result<(String, TopicPartition, CommittedOffset), RecordError> {
    let RecordKey::Offset {
        group_id,
        partition,
    } = RecordKey::decode(&record.key)?
    else {
        return Err(RecordError::Malformed(
            "a transaction's record is not an offset".into(),
        ));
    };
    let value = record.value.as_ref().ok_or_else(|| {
        RecordError::Malformed("a transaction's offset record has no value".into())
    })?;
    Ok((group_id, partition, decode_offset_value(value)?))
}

fn offset_key(group_id: &str, partition: &TopicPartition) -> Bytes {
    RecordKey::Offset {
        group_id: group_id.to_owned(),
        partition: partition.clone(),
    }
    .encode()
}

fn group_key(group_id: &str) -> Bytes {
    RecordKey::GroupMetadata {
        group_id: group_id.to_owned(),
    }
    .encode()
}

/// The group a `GroupMetadataValue` describes, Stable with its members (whose sessions start
/// at `now_ms`) or Empty, checked as the coordinator asserts it.
fn decode_group(
    group_id: String,
    value: GroupMetadataValue,
    now_ms: i64,
) -> Result<ClassicGroup, RecordError> {
    let mut group = ClassicGroup::new(group_id);
    // Kafka writes "" for a group without a protocol type; a JoinGroup cannot give it "".
    group.protocol_type = Some(value.protocol_type).filter(|protocol| !protocol.is_empty());
    group.generation_id = value.generation;
    group.protocol_name = value.protocol;
    group.leader_id = value.leader;
    group.state_since_ms = Some(value.current_state_timestamp_ms).filter(|&since| since >= 0);
    for member in value.members {
        let protocol = group
            .protocol_name
            .clone()
            .ok_or(RecordError::InconsistentGroup("members but no protocol"))?;
        group.members.push(Member {
            member_id: member.member_id,
            group_instance_id: member.group_instance_id,
            client_id: member.client_id,
            client_host: member.client_host,
            rebalance_timeout_ms: member.rebalance_timeout_ms,
            session_timeout_ms: member.session_timeout_ms,
            protocols: vec![GroupProtocol {
                name: protocol,
                metadata: member.subscription,
            }],
            assignment: Some(member.assignment),
            session_deadline_ms: now_ms + i64::from(member.session_timeout_ms),
            pending_join: None,
            pending_sync: None,
        });
    }
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

#[cfg(test)]
mod tests;
