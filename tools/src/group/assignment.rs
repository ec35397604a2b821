//! A consumer group member's assignment as the consumer protocol encodes it: the partitions the
//! group leader's assignor gave that member, which the coordinator only stores and hands out
//! (DescribeGroups' `member_assignment`). `group describe` decodes it to say which member owns
//! which partition.
//!
//! Layout: an i16 version, then `ConsumerProtocolAssignment` in that version (an array of
//! topic, partitions; then user data). A version newer than the crate knows is decoded as the
//! newest it knows, as Kafka's own `ConsumerProtocol` does: versions only add fields at the end.
//! The bytes come from whichever client leads the group, so nothing here may trust them: the
//! decoder (kafka-protocol, with the vendored bound on array counts) reports short or lying
//! input as an error instead of allocating for it.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::{Decodable, Message};

/// Partitions by topic, each list sorted.
pub type Assignment = BTreeMap<String, Vec<i32>>;

/// Decodes a member's assignment. No bytes means no assignment (a member that has not been
/// given one yet, or a group that is rebalancing).
pub fn decode(bytes: &Bytes) -> Result<Assignment, String> {
    if bytes.is_empty() {
        return Ok(Assignment::new());
    }
    let mut body = bytes.clone();
    let version = match body.get(..2) {
        Some(prefix) => i16::from_be_bytes([prefix[0], prefix[1]]),
        None => return Err("1 byte, too short for the version".to_string()),
    };
    if version < ConsumerProtocolAssignment::VERSIONS.min {
        return Err(format!("version {version}"));
    }
    body.advance(2);
    let decoded = ConsumerProtocolAssignment::decode(
        &mut body,
        version.min(ConsumerProtocolAssignment::VERSIONS.max),
    )
    .map_err(|error| format!("version {version}: {error}"))?;
    let mut assignment = Assignment::new();
    for topic in decoded.assigned_partitions {
        let partitions = assignment.entry(topic.topic.0.to_string()).or_default();
        partitions.extend(topic.partitions);
        partitions.sort_unstable();
        partitions.dedup();
    }
    Ok(assignment)
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::BytesMut;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn encoded(version: i16, topics: &[(&str, &[i32])], user_data: Option<&[u8]>) -> Bytes {
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&version.to_be_bytes());
        ConsumerProtocolAssignment::default()
            .with_assigned_partitions(
                topics
                    .iter()
                    .map(|(topic, partitions)| {
                        TopicPartition::default()
                            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partitions(partitions.to_vec())
                    })
                    .collect(),
            )
            .with_user_data(user_data.map(Bytes::copy_from_slice))
            .encode(&mut bytes, version.min(3))
            .unwrap();
        bytes.freeze()
    }

    #[test]
    fn partitions_are_read_by_topic_in_every_version() {
        for version in 0..=3 {
            let bytes = encoded(
                version,
                &[("orders", &[2, 0]), ("audit", &[1]), ("orders", &[1])],
                Some(b"sticky"),
            );
            let assignment = decode(&bytes).unwrap();
            assert_eq!(
                assignment,
                Assignment::from([
                    ("audit".to_string(), vec![1]),
                    ("orders".to_string(), vec![0, 1, 2]),
                ]),
                "version {version}"
            );
        }
    }

    #[test]
    fn a_newer_version_is_read_as_the_newest_known_one() {
        let mut bytes = encoded(4, &[("orders", &[0])], None).to_vec();
        // A field a future version might add.
        bytes.extend_from_slice(&[0, 0, 0, 7]);
        let assignment = decode(&Bytes::from(bytes)).unwrap();
        assert_eq!(assignment["orders"], vec![0]);
    }

    #[test]
    fn no_bytes_is_no_assignment() {
        assert_eq!(decode(&Bytes::new()), Ok(Assignment::new()));
    }

    #[test]
    fn malformed_assignments_are_errors_not_allocations() {
        assert!(decode(&Bytes::from_static(&[0])).is_err());
        assert!(decode(&Bytes::from_static(&[0xff, 0xff, 0, 0, 0, 0]))
            .unwrap_err()
            .contains("version -1"));
        // Two billion topics claimed in six bytes.
        assert!(decode(&Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff])).is_err());
        // A topic whose partition array is cut short.
        let whole = encoded(0, &[("orders", &[0, 1, 2])], None);
        for end in 2..whole.len() {
            assert!(decode(&whole.slice(..end)).is_err(), "cut at {end}");
        }
    }
}
