//! The records against Kafka's schemas byte for byte (each version built here field by field
//! from the message specs), the old format told apart from Kafka's in both directions, and its
//! conversion.

use bytes::{BufMut, Bytes, BytesMut};
use engine::RecordRewrite;
use proptest::prelude::*;

use super::kafka::{decode_offset_value, GroupMetadataValue, MemberMetadata, RecordKey};
use super::legacy::{self, written};
use super::{GroupRecord, RecordError};
use crate::groups::{CommittedOffset, TopicPartition};

fn string(buffer: &mut BytesMut, value: &str) {
    buffer.put_i16(value.len() as i16);
    buffer.put_slice(value.as_bytes());
}

fn compact_string(buffer: &mut BytesMut, value: &str) {
    buffer.put_u8(value.len() as u8 + 1);
    buffer.put_slice(value.as_bytes());
}

fn committed() -> CommittedOffset {
    CommittedOffset {
        offset: 42,
        leader_epoch: 7,
        metadata: "meta".to_owned(),
        commit_timestamp_ms: 1_700_000_000_000,
    }
}

fn partition() -> TopicPartition {
    TopicPartition {
        topic: "orders".to_owned(),
        partition: 3,
    }
}

fn group_value() -> GroupMetadataValue {
    GroupMetadataValue {
        protocol_type: "consumer".to_owned(),
        generation: 5,
        protocol: Some("range".to_owned()),
        leader: Some("m1".to_owned()),
        current_state_timestamp_ms: 1_700_000_000_123,
        members: vec![MemberMetadata {
            member_id: "m1".to_owned(),
            group_instance_id: Some("i1".to_owned()),
            client_id: "c1".to_owned(),
            client_host: "/127.0.0.1".to_owned(),
            rebalance_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
            subscription: Bytes::from_static(b"sub"),
            assignment: Bytes::from_static(b"assign"),
        }],
    }
}

#[test]
fn offsets_are_written_as_kafka_writes_them() {
    let record = GroupRecord::offset("g", &partition(), &committed());
    let mut key = BytesMut::new();
    key.put_i16(1);
    string(&mut key, "g");
    string(&mut key, "orders");
    key.put_i32(3);
    assert_eq!(record.key, key);
    let mut value = BytesMut::new();
    value.put_i16(3);
    value.put_i64(42);
    value.put_i32(7);
    string(&mut value, "meta");
    value.put_i64(1_700_000_000_000);
    assert_eq!(record.value.as_deref(), Some(&value[..]));
    let tombstone = GroupRecord::offset_tombstone("g", &partition());
    assert_eq!((tombstone.key, tombstone.value), (key.freeze(), None));
}

#[test]
fn group_metadata_is_written_as_version_3() {
    let value = group_value().encode();
    let mut expected = BytesMut::new();
    expected.put_i16(3);
    string(&mut expected, "consumer");
    expected.put_i32(5);
    string(&mut expected, "range");
    string(&mut expected, "m1");
    expected.put_i64(1_700_000_000_123);
    expected.put_i32(1);
    string(&mut expected, "m1");
    string(&mut expected, "i1");
    string(&mut expected, "c1");
    string(&mut expected, "/127.0.0.1");
    expected.put_i32(30_000);
    expected.put_i32(10_000);
    expected.put_i32(3);
    expected.put_slice(b"sub");
    expected.put_i32(6);
    expected.put_slice(b"assign");
    assert_eq!(value, expected);
    assert_eq!(GroupMetadataValue::decode(&value), Ok(group_value()));
    let mut key = BytesMut::new();
    key.put_i16(2);
    string(&mut key, "g");
    let tombstone = GroupRecord::group_tombstone("g");
    assert_eq!((tombstone.key, tombstone.value), (key.freeze(), None));
}

#[test]
fn every_offset_value_version_reads_back() {
    let mut expected = committed();
    for version in 0..=4i16 {
        let mut value = BytesMut::new();
        value.put_i16(version);
        value.put_i64(42);
        if version >= 3 {
            value.put_i32(7);
        }
        match version {
            4 => compact_string(&mut value, "meta"),
            _ => string(&mut value, "meta"),
        }
        value.put_i64(1_700_000_000_000);
        if version == 1 {
            value.put_i64(1_800_000_000_000); // expireTimestamp
        }
        if version == 4 {
            // One tagged field (tag 9, two bytes), skipped.
            value.put_slice(&[1, 9, 2, 0xAB, 0xCD]);
        }
        expected.leader_epoch = if version >= 3 { 7 } else { -1 };
        assert_eq!(
            decode_offset_value(&value.freeze()),
            Ok(expected.clone()),
            "version {version}"
        );
    }
    let mut future = BytesMut::new();
    future.put_i16(5);
    assert_eq!(
        decode_offset_value(&future.freeze()),
        Err(RecordError::UnknownValueVersion(5))
    );
}

#[test]
fn every_group_value_version_reads_back() {
    for version in 0..=4i16 {
        let flexible = version == 4;
        let text = |buffer: &mut BytesMut, value: &str| match flexible {
            true => compact_string(buffer, value),
            false => string(buffer, value),
        };
        let bytes = |buffer: &mut BytesMut, value: &[u8]| {
            match flexible {
                true => buffer.put_u8(value.len() as u8 + 1),
                false => buffer.put_i32(value.len() as i32),
            }
            buffer.put_slice(value);
        };
        let mut value = BytesMut::new();
        value.put_i16(version);
        text(&mut value, "consumer");
        value.put_i32(5);
        text(&mut value, "range");
        text(&mut value, "m1");
        if version >= 2 {
            value.put_i64(1_700_000_000_123);
        }
        match flexible {
            true => value.put_u8(2),
            false => value.put_i32(1),
        }
        text(&mut value, "m1");
        if version >= 3 {
            text(&mut value, "i1");
        }
        text(&mut value, "c1");
        text(&mut value, "/127.0.0.1");
        if version >= 1 {
            value.put_i32(30_000);
        }
        value.put_i32(10_000);
        bytes(&mut value, b"sub");
        bytes(&mut value, b"assign");
        if flexible {
            value.put_u8(0); // the member's tagged fields
            value.put_slice(&[1, 0, 1, 0xFF]); // the value's: one, skipped
        }
        let mut expected = group_value();
        if version < 2 {
            expected.current_state_timestamp_ms = -1;
        }
        if version < 3 {
            expected.members[0].group_instance_id = None;
        }
        if version == 0 {
            // Kafka reads the session timeout as the rebalance timeout.
            expected.members[0].rebalance_timeout_ms = 10_000;
        }
        assert_eq!(
            GroupMetadataValue::decode(&value.freeze()),
            Ok(expected),
            "version {version}"
        );
    }
}

#[test]
fn keys_are_told_apart_by_their_version() {
    let mut offset_v0 = BytesMut::new();
    offset_v0.put_i16(0);
    string(&mut offset_v0, "g");
    string(&mut offset_v0, "orders");
    offset_v0.put_i32(3);
    assert_eq!(
        RecordKey::decode(&offset_v0.freeze()),
        Ok(RecordKey::Offset {
            group_id: "g".to_owned(),
            partition: partition(),
        })
    );
    // A KIP-848 consumer group's metadata key.
    let mut consumer_group = BytesMut::new();
    consumer_group.put_i16(3);
    string(&mut consumer_group, "g");
    assert_eq!(
        RecordKey::decode(&consumer_group.freeze()),
        Err(RecordError::UnknownKeyVersion(3))
    );
}

#[test]
fn damaged_values_are_errors() {
    let offset = GroupRecord::offset("g", &partition(), &committed())
        .value
        .expect("a value");
    let group = group_value().encode();
    for length in 0..offset.len() {
        assert!(decode_offset_value(&offset.slice(..length)).is_err());
    }
    for length in 0..group.len() {
        assert!(GroupMetadataValue::decode(&group.slice(..length)).is_err());
    }
    let mut longer = BytesMut::from(&offset[..]);
    longer.put_u8(0);
    assert_eq!(
        decode_offset_value(&longer.freeze()),
        Err(RecordError::TrailingBytes(1))
    );
}

#[test]
fn old_records_convert_to_kafkas() {
    let mut conversion = legacy::LegacyRecordConversion.start();
    let old_key = written::offset_key("g", "orders", 3);
    let old_value = written::offset_value(&committed());
    let converted = conversion
        .rewrite(Some(&old_key), Some(&old_value))
        .expect("converted");
    let expected = GroupRecord::offset("g", &partition(), &committed());
    assert_eq!(converted.key.as_deref(), Some(&expected.key[..]));
    assert_eq!(converted.value.as_deref(), expected.value.as_deref());

    let group = group_value();
    let converted = conversion
        .rewrite(
            Some(&written::group_key("g")),
            Some(&written::group_value(&group)),
        )
        .expect("converted");
    assert_eq!(converted.value, Some(group.encode().to_vec()));

    let tombstone = conversion
        .rewrite(Some(&written::group_key("g")), None)
        .expect("converted");
    assert_eq!(
        tombstone.key,
        Some(GroupRecord::group_tombstone("g").key.to_vec())
    );
    assert_eq!(tombstone.value, None);

    // Kafka's records are left as they are, and so is what is neither (the load judges it).
    assert_eq!(
        conversion.rewrite(Some(&expected.key), expected.value.as_deref()),
        None
    );
    assert_eq!(conversion.rewrite(Some(b"\x00\x07junk"), None), None);
    assert_eq!(conversion.rewrite(None, Some(b"no key")), None);
    assert!(conversion
        .summary()
        .contains("1 groups, 1 committed offsets, 1 group metadata, 1 tombstones"));
}

proptest! {
    /// No old key decodes strictly as a Kafka key, and no Kafka key as an old one: the
    /// conversion can tell them apart record by record.
    #[test]
    fn the_formats_never_read_as_each_other(
        group_id in "\\PC{0,40}",
        topic in "[a-zA-Z0-9._-]{0,40}",
        partition in any::<i32>(),
    ) {
        let old_offset = written::offset_key(&group_id, &topic, partition);
        let old_group = written::group_key(&group_id);
        prop_assert!(RecordKey::decode(&old_offset).is_err());
        prop_assert!(RecordKey::decode(&old_group).is_err());
        let kafka_offset = RecordKey::Offset {
            group_id: group_id.clone(),
            partition: TopicPartition { topic: topic.clone(), partition },
        }
        .encode();
        let kafka_group = RecordKey::GroupMetadata { group_id: group_id.clone() }.encode();
        for version in [0i16, 1] {
            let mut key = BytesMut::from(&kafka_offset[..]);
            key[..2].copy_from_slice(&version.to_be_bytes());
            prop_assert!(legacy::convert(&key, None).is_err());
        }
        prop_assert!(legacy::convert(&kafka_group, None).is_err());
        // And each old key converts to the Kafka key of the same thing.
        prop_assert_eq!(legacy::convert(&old_offset, None).map(|(key, _)| key.encode()), Ok(kafka_offset));
        prop_assert_eq!(legacy::convert(&old_group, None).map(|(key, _)| key.encode()), Ok(kafka_group));
    }

    /// Arbitrary bytes never panic either reader.
    #[test]
    fn arbitrary_bytes_are_errors_or_records(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let bytes = Bytes::from(bytes);
        let _ = RecordKey::decode(&bytes);
        let _ = decode_offset_value(&bytes);
        let _ = GroupMetadataValue::decode(&bytes);
        let _ = legacy::convert(&bytes, Some(&bytes));
    }
}
