//! Kafka's schemas of the classic coordinator's records, as Kafka's group coordinator writes
//! them to `__consumer_offsets` (its message specs `OffsetCommitKey`, `OffsetCommitValue`,
//! `GroupMetadataKey` and `GroupMetadataValue` under `group-coordinator/src/main/resources/
//! common/message/`), so that tools which consume the topic and decode it themselves (Burrow,
//! lag exporters, `kafka-console-consumer` with Kafka's formatters) read what we write.
//!
//! A key is an int16 version, which names the record type, then that type's fields; a value is
//! an int16 version then the fields of that version. We write what Kafka 3.x writes: offset
//! keys at version 1, group keys at version 2, offsets as `OffsetCommitValue` v3 (with the
//! leader epoch), groups as `GroupMetadataValue` v3 (with static members' instance ids and the
//! rebalance timeout); and we read every version Kafka ever wrote: offset keys 0 and 1, both
//! values at 0 to 4 (4 being flexible: compact strings and bytes, tagged fields, which we
//! skip). Every length is checked against the bytes left, and a value must be read to its
//! last byte: a damaged record is a [`RecordError`], never a panic or a guess.
//!
//! The primitives are read here (`kafka-protocol` keeps its encoders and decoders to itself),
//! over `bytes::Bytes` so that subscriptions and assignments are not copied.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::RecordError;
use crate::groups::{CommittedOffset, TopicPartition};

/// The key version Kafka writes for an offset (`OffsetCommitKey`); 0 is read as well.
const OFFSET_KEY_VERSION: i16 = 1;
/// The key version of a group's metadata (`GroupMetadataKey`).
const GROUP_KEY_VERSION: i16 = 2;
/// The `OffsetCommitValue` version written: Kafka 3.x's, the first with the leader epoch.
const OFFSET_VALUE_VERSION: i16 = 3;
/// The `GroupMetadataValue` version written: Kafka 2.3 to 3.x's, the first with static members.
const GROUP_VALUE_VERSION: i16 = 3;
/// The highest value version of either type, and the first flexible one.
const VALUE_VERSION_MAX: i16 = 4;

/// What a `__consumer_offsets` key names, by its version. The one place key versions are told
/// apart: another record type (KIP-848's consumer-group records, key versions 3 to 16) is a
/// variant here and an arm in [`RecordKey::decode`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    /// A group's committed offset of one partition (key versions 0 and 1).
    Offset {
        group_id: String,
        partition: TopicPartition,
    },
    /// A classic group's metadata (key version 2).
    GroupMetadata { group_id: String },
}

impl RecordKey {
    /// Reads a key in any version Kafka wrote; a version of another record type is
    /// [`RecordError::UnknownKeyVersion`].
    pub fn decode(key: &Bytes) -> Result<RecordKey, RecordError> {
        let mut buffer = key.clone();
        let decoded = match read_i16(&mut buffer)? {
            0 | OFFSET_KEY_VERSION => RecordKey::Offset {
                group_id: read_string(&mut buffer, false)?,
                partition: TopicPartition {
                    topic: read_string(&mut buffer, false)?,
                    partition: read_i32(&mut buffer)?,
                },
            },
            GROUP_KEY_VERSION => RecordKey::GroupMetadata {
                group_id: read_string(&mut buffer, false)?,
            },
            other => return Err(RecordError::UnknownKeyVersion(other)),
        };
        read_to_end(&buffer)?;
        Ok(decoded)
    }

    pub fn encode(&self) -> Bytes {
        let mut key = BytesMut::new();
        match self {
            RecordKey::Offset {
                group_id,
                partition,
            } => {
                key.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut key, group_id);
                put_string(&mut key, &partition.topic);
                key.put_i32(partition.partition);
            }
            RecordKey::GroupMetadata { group_id } => {
                key.put_i16(GROUP_KEY_VERSION);
                put_string(&mut key, group_id);
            }
        }
        key.freeze()
    }

    pub fn group_id(&self) -> &str {
        match self {
            RecordKey::Offset { group_id, .. } | RecordKey::GroupMetadata { group_id } => group_id,
        }
    }
}

/// `OffsetCommitValue` v3.
pub fn encode_offset_value(committed: &CommittedOffset) -> Bytes {
    let mut value = BytesMut::new();
    value.put_i16(OFFSET_VALUE_VERSION);
    value.put_i64(committed.offset);
    value.put_i32(committed.leader_epoch);
    put_string(&mut value, &committed.metadata);
    value.put_i64(committed.commit_timestamp_ms);
    value.freeze()
}

/// `OffsetCommitValue` in any version: v1's expire timestamp is dropped (our retention is the
/// group's, as Kafka's since 2.1), versions before 3 have no leader epoch (-1).
pub fn decode_offset_value(value: &Bytes) -> Result<CommittedOffset, RecordError> {
    let mut buffer = value.clone();
    let version = read_value_version(&mut buffer)?;
    let flexible = version >= 4;
    let offset = read_i64(&mut buffer)?;
    let leader_epoch = match version >= 3 {
        true => read_i32(&mut buffer)?,
        false => -1,
    };
    let metadata = read_string(&mut buffer, flexible)?;
    let commit_timestamp_ms = read_i64(&mut buffer)?;
    if version == 1 {
        let _expire_timestamp_ms = read_i64(&mut buffer)?;
    }
    if flexible {
        skip_tagged_fields(&mut buffer)?;
    }
    read_to_end(&buffer)?;
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// `GroupMetadataValue`: a classic group as of its last completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    /// Empty when the group has none (Kafka writes "" for no protocol type).
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// -1 when unknown (versions before 2).
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadata>,
}

/// One member of [`GroupMetadataValue`]: its subscription for the group's protocol and its
/// assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    /// Versions 3 and later; `None` before.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Version 0 has none: the session timeout, as Kafka reads it.
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

impl GroupMetadataValue {
    /// Version 3.
    pub fn encode(&self) -> Bytes {
        let mut value = BytesMut::new();
        value.put_i16(GROUP_VALUE_VERSION);
        put_string(&mut value, &self.protocol_type);
        value.put_i32(self.generation);
        put_nullable_string(&mut value, self.protocol.as_deref());
        put_nullable_string(&mut value, self.leader.as_deref());
        value.put_i64(self.current_state_timestamp_ms);
        value.put_i32(
            i32::try_from(self.members.len()).expect("a group's size is bounded by its config"),
        );
        for member in &self.members {
            put_string(&mut value, &member.member_id);
            put_nullable_string(&mut value, member.group_instance_id.as_deref());
            put_string(&mut value, &member.client_id);
            put_string(&mut value, &member.client_host);
            value.put_i32(member.rebalance_timeout_ms);
            value.put_i32(member.session_timeout_ms);
            put_bytes(&mut value, &member.subscription);
            put_bytes(&mut value, &member.assignment);
        }
        value.freeze()
    }

    /// Any version, 0 to 4.
    pub fn decode(value: &Bytes) -> Result<GroupMetadataValue, RecordError> {
        let mut buffer = value.clone();
        let version = read_value_version(&mut buffer)?;
        let flexible = version >= 4;
        let protocol_type = read_string(&mut buffer, flexible)?;
        let generation = read_i32(&mut buffer)?;
        let protocol = read_nullable_string(&mut buffer, flexible)?;
        let leader = read_nullable_string(&mut buffer, flexible)?;
        let current_state_timestamp_ms = match version >= 2 {
            true => read_i64(&mut buffer)?,
            false => -1,
        };
        let count = read_array_length(&mut buffer, flexible)?;
        // Not reserved from the count: a damaged count must not allocate.
        let mut members = Vec::new();
        for _ in 0..count {
            let member_id = read_string(&mut buffer, flexible)?;
            let group_instance_id = match version >= 3 {
                true => read_nullable_string(&mut buffer, flexible)?,
                false => None,
            };
            let client_id = read_string(&mut buffer, flexible)?;
            let client_host = read_string(&mut buffer, flexible)?;
            let rebalance_timeout_ms = match version >= 1 {
                true => Some(read_i32(&mut buffer)?),
                false => None,
            };
            let session_timeout_ms = read_i32(&mut buffer)?;
            let subscription = read_bytes(&mut buffer, flexible)?;
            let assignment = read_bytes(&mut buffer, flexible)?;
            if flexible {
                skip_tagged_fields(&mut buffer)?;
            }
            members.push(MemberMetadata {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms: rebalance_timeout_ms.unwrap_or(session_timeout_ms),
                session_timeout_ms,
                subscription,
                assignment,
            });
        }
        if flexible {
            skip_tagged_fields(&mut buffer)?;
        }
        read_to_end(&buffer)?;
        Ok(GroupMetadataValue {
            protocol_type,
            generation,
            protocol,
            leader,
            current_state_timestamp_ms,
            members,
        })
    }
}

fn read_value_version(buffer: &mut Bytes) -> Result<i16, RecordError> {
    match read_i16(buffer)? {
        version @ 0..=VALUE_VERSION_MAX => Ok(version),
        other => Err(RecordError::UnknownValueVersion(other)),
    }
}

fn take(buffer: &mut Bytes, length: usize) -> Result<Bytes, RecordError> {
    if buffer.remaining() < length {
        return Err(RecordError::Truncated);
    }
    Ok(buffer.split_to(length))
}

fn read_i16(buffer: &mut Bytes) -> Result<i16, RecordError> {
    Ok(take(buffer, 2)?.get_i16())
}

fn read_i32(buffer: &mut Bytes) -> Result<i32, RecordError> {
    Ok(take(buffer, 4)?.get_i32())
}

fn read_i64(buffer: &mut Bytes) -> Result<i64, RecordError> {
    Ok(take(buffer, 8)?.get_i64())
}

/// An unsigned varint of at most 32 bits (5 bytes).
fn read_unsigned_varint(buffer: &mut Bytes) -> Result<u32, RecordError> {
    let mut value = 0u32;
    for index in 0..5 {
        let byte = take(buffer, 1)?.get_u8();
        if index == 4 && byte > 0x0f {
            return Err(RecordError::Malformed("a varint beyond 32 bits".to_owned()));
        }
        value |= u32::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    unreachable!("the fifth byte ends the varint or is refused")
}

/// The length of a string or bytes: `None` for null. Classic fields have an int16 (strings) or
/// int32 (bytes) length, -1 for null; flexible ones an unsigned varint of the length plus one,
/// 0 for null.
fn read_length(
    buffer: &mut Bytes,
    flexible: bool,
    int32: bool,
) -> Result<Option<usize>, RecordError> {
    let length = match (flexible, int32) {
        (true, _) => i64::from(read_unsigned_varint(buffer)?) - 1,
        (false, false) => i64::from(read_i16(buffer)?),
        (false, true) => i64::from(read_i32(buffer)?),
    };
    match length {
        -1 => Ok(None),
        length if length < 0 => Err(RecordError::Malformed(format!("a length of {length}"))),
        length => Ok(Some(length as usize)),
    }
}

fn read_nullable_string(buffer: &mut Bytes, flexible: bool) -> Result<Option<String>, RecordError> {
    let Some(length) = read_length(buffer, flexible, false)? else {
        return Ok(None);
    };
    let bytes = take(buffer, length)?;
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| RecordError::Malformed("a string that is not UTF-8".to_owned()))
}

fn read_string(buffer: &mut Bytes, flexible: bool) -> Result<String, RecordError> {
    read_nullable_string(buffer, flexible)?
        .ok_or_else(|| RecordError::Malformed("a null string where one is required".to_owned()))
}

fn read_bytes(buffer: &mut Bytes, flexible: bool) -> Result<Bytes, RecordError> {
    let length = read_length(buffer, flexible, true)?
        .ok_or_else(|| RecordError::Malformed("null bytes where they are required".to_owned()))?;
    take(buffer, length)
}

fn read_array_length(buffer: &mut Bytes, flexible: bool) -> Result<usize, RecordError> {
    read_length(buffer, flexible, true)?
        .ok_or_else(|| RecordError::Malformed("a null array where one is required".to_owned()))
}

/// A flexible struct's tagged fields: none of them is ours to read, each is skipped whole.
fn skip_tagged_fields(buffer: &mut Bytes) -> Result<(), RecordError> {
    let count = read_unsigned_varint(buffer)?;
    for _ in 0..count {
        let _tag = read_unsigned_varint(buffer)?;
        let size = read_unsigned_varint(buffer)?;
        take(buffer, size as usize)?;
    }
    Ok(())
}

fn read_to_end(buffer: &Bytes) -> Result<(), RecordError> {
    match buffer.remaining() {
        0 => Ok(()),
        trailing => Err(RecordError::TrailingBytes(trailing)),
    }
}

// Every string written came in through a Kafka request, in a field of the same int16-length
// type (group ids, instance ids, client ids, topics, commit metadata), or is one the broker
// made of them (member ids, whose prefix is bounded, and client hosts): each fits.
fn put_string(buffer: &mut BytesMut, value: &str) {
    let length = i16::try_from(value.len()).expect("the string came in a field of the same type");
    buffer.put_i16(length);
    buffer.put_slice(value.as_bytes());
}

fn put_nullable_string(buffer: &mut BytesMut, value: Option<&str>) {
    match value {
        Some(value) => put_string(buffer, value),
        None => buffer.put_i16(-1),
    }
}

fn put_bytes(buffer: &mut BytesMut, value: &Bytes) {
    let length = i32::try_from(value.len())
        .expect("subscriptions and assignments come in int32-length fields");
    buffer.put_i32(length);
    buffer.put_slice(value);
}
