//! A data directory whose `__consumer_offsets` holds the records the previous Ferrite wrote (its
//! own format: u8 version and kind, u32 lengths) is converted to Kafka's records when the
//! broker starts, once, and its groups come back: their committed offsets and members, over
//! the wire; and a fetch of the topic then returns Kafka's records only. A conversion stopped
//! at any step of a segment's swap (as a crash would stop it) is finished by the next start.

mod common;

use std::path::Path;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use common::{Client, TestBroker};
use engine::batch::{self, PlainRecord, ProducerFields};
use engine::catalog::OFFSETS_TOPIC;
use engine::log::PartitionLog;
use engine::{CleanStep, LogConfig, RecordRewrite, SystemClock};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use net::groups::{offsets_partition_for, LegacyRecordConversion};

const GROUP: &str = "legacy-group";
const TOPIC: &str = "orders";
const MEMBER: &str = "client-1-0000";
/// As the test broker makes the topic.
const OFFSETS_PARTITIONS: u32 = 16;
const MARKER: &str = "records-in-kafka-format";

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// The previous binary's encoding, written here from its source (fcb44f7's
/// `net/src/groups/record.rs`).
mod old_format {
    use super::*;

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

    pub fn offset(
        group: &str,
        topic: &str,
        partition: i32,
        offset: Option<i64>,
    ) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        key.put_u8(0);
        key.put_u8(0);
        put_bytes(&mut key, group.as_bytes());
        put_bytes(&mut key, topic.as_bytes());
        key.put_i32(partition);
        let value = offset.map(|offset| {
            let mut value = BytesMut::new();
            value.put_u8(0);
            value.put_i64(offset);
            value.put_i32(-1);
            put_bytes(&mut value, format!("meta-{offset}").as_bytes());
            value.put_i64(1_700_000_000_000);
            value.freeze()
        });
        (key.freeze(), value)
    }

    /// A stable group of one member, `MEMBER`, at `generation`.
    pub fn group(group: &str, generation: i32) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        key.put_u8(0);
        key.put_u8(1);
        put_bytes(&mut key, group.as_bytes());
        let mut value = BytesMut::new();
        value.put_u8(0);
        put_option(&mut value, Some("consumer"));
        value.put_i32(generation);
        put_option(&mut value, Some("range"));
        put_option(&mut value, Some(MEMBER));
        value.put_u8(1);
        value.put_i64(1_700_000_000_000);
        value.put_u32(1);
        put_bytes(&mut value, MEMBER.as_bytes());
        put_option(&mut value, None);
        put_bytes(&mut value, b"client-1");
        put_bytes(&mut value, b"/10.0.0.1");
        value.put_i32(30_000);
        value.put_i32(45_000);
        put_bytes(&mut value, b"subscription");
        put_bytes(&mut value, b"assignment");
        (key.freeze(), Some(value.freeze()))
    }
}

/// What the previous binary left: offsets committed over three generations, one of them
/// deleted, in batches of their own (each in a segment of its own, with this segment size).
fn old_records() -> Vec<Vec<(Bytes, Option<Bytes>)>> {
    vec![
        vec![old_format::group(GROUP, 1)],
        vec![
            old_format::offset(GROUP, TOPIC, 0, Some(5)),
            old_format::offset(GROUP, TOPIC, 1, Some(9)),
        ],
        vec![old_format::group(GROUP, 2)],
        vec![
            old_format::offset(GROUP, TOPIC, 0, Some(7)),
            old_format::offset(GROUP, TOPIC, 2, Some(3)),
        ],
        vec![old_format::offset(GROUP, TOPIC, 2, None)],
        vec![old_format::group(GROUP, 3)],
    ]
}

/// Writes the old records into the group's `__consumer_offsets` partition of a stopped
/// broker's data directory, as the previous binary left it (no conversion marker); then, with
/// `crash_after`, starts the conversion and stops it after that step of its first segment's
/// swap, leaving the files as a crash there would.
fn write_old_partition(data: &Path, crash_after: Option<CleanStep>) {
    let partition = offsets_partition_for(GROUP, OFFSETS_PARTITIONS);
    let dir = data.join(format!("{OFFSETS_TOPIC}-{partition}"));
    std::fs::remove_file(dir.join(MARKER)).expect("the broker marked the partition");
    let config = LogConfig {
        segment_bytes_max: 256,
        ..LogConfig::default()
    };
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .make()
        .expect("an executor")
        .run(async move {
            let log = PartitionLog::open(&dir, config, Rc::new(SystemClock))
                .await
                .expect("opens");
            for batch_records in old_records() {
                let plain: Vec<PlainRecord<'_>> = batch_records
                    .iter()
                    .map(|(key, value)| PlainRecord {
                        offset: 0,
                        timestamp_ms: 1_700_000_000_000,
                        key: Some(key),
                        value: value.as_deref(),
                    })
                    .collect();
                let bytes = batch::encode_plain(&plain, ProducerFields::NONE);
                log.append_durable(BytesMut::from(&bytes[..]), 0)
                    .await
                    .expect("appends");
            }
            assert!(log.segment_count() > 3, "the records span segments");
            match crash_after {
                None => log.close().await.expect("closes"),
                Some(step) => {
                    log.inject_clean_fault(Some(step));
                    let mut conversion = LegacyRecordConversion.start();
                    assert!(log
                        .rewrite_records(conversion.as_mut(), 1_700_000_001_000)
                        .await
                        .is_err());
                    // Dropped without a close: a crash.
                    drop(log);
                }
            }
        });
}

fn committed(client: &mut Client) -> Vec<(i32, i64, String)> {
    let response: OffsetFetchResponse = client.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(text(TOPIC)))
                .with_partition_indexes(vec![0, 1, 2])])),
    );
    assert_eq!(response.error_code, 0);
    response.topics[0]
        .partitions
        .iter()
        .map(|partition| {
            let metadata = partition.metadata.as_ref().map(|m| m.to_string());
            (
                partition.partition_index,
                partition.committed_offset,
                metadata.unwrap_or_default(),
            )
        })
        .collect()
}

/// The group's offsets and members are the old records', and the partition holds Kafka's
/// records only: every key is an offset key (version 1) or a group key (version 2) to its
/// last byte.
fn check_converted(broker: &TestBroker) {
    let mut client = broker.connect();
    assert_eq!(
        committed(&mut client),
        vec![
            (0, 7, "meta-7".to_owned()),
            (1, 9, "meta-9".to_owned()),
            (2, -1, String::new()),
        ]
    );
    let response: DescribeGroupsResponse = client.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(text(GROUP))]),
    );
    let group = &response.groups[0];
    assert_eq!(group.error_code, 0);
    assert_eq!(group.group_state.as_str(), "Stable");
    assert_eq!(group.protocol_data.as_str(), "range");
    assert_eq!(group.members.len(), 1);
    let member = &group.members[0];
    assert_eq!(member.member_id.as_str(), MEMBER);
    assert_eq!(member.client_id.as_str(), "client-1");
    assert_eq!(member.client_host.as_str(), "/10.0.0.1");
    assert_eq!(&member.member_assignment[..], b"assignment");

    let partition = offsets_partition_for(GROUP, OFFSETS_PARTITIONS) as i32;
    let (error, high_watermark, bytes) = common::fetch(&mut client, OFFSETS_TOPIC, partition, 0, 0);
    assert_eq!(error, 0);
    assert_eq!(high_watermark, 8, "offsets stay where they were");
    let mut rest = &bytes[..];
    let mut keys = 0;
    while let Some(header) = batch::BatchHeader::parse(rest) {
        let size = header.size_bytes as usize;
        for record in batch::plain_records(&rest[..size]).expect("plain records") {
            let key = record.expect("a record").key.expect("a key");
            let version = i16::from_be_bytes([key[0], key[1]]);
            let group_length = i16::from_be_bytes([key[2], key[3]]) as usize;
            assert_eq!(&key[4..4 + group_length], GROUP.as_bytes());
            let after_group = &key[4 + group_length..];
            match version {
                1 => {
                    let topic_length =
                        i16::from_be_bytes([after_group[0], after_group[1]]) as usize;
                    assert_eq!(&after_group[2..2 + topic_length], TOPIC.as_bytes());
                    assert_eq!(after_group.len(), 2 + topic_length + 4);
                }
                2 => assert!(after_group.is_empty()),
                other => panic!("a key of version {other}"),
            }
            keys += 1;
        }
        rest = &rest[size..];
    }
    assert!(keys > 0);
}

#[test]
fn an_old_data_directory_is_converted_at_start_up() {
    let data = TestBroker::start(1, LogConfig::default()).stop();
    write_old_partition(data.path(), None);
    let broker = TestBroker::start_in(data, 1, LogConfig::default());
    check_converted(&broker);
    // Once: the marker is back, and a restart reads Kafka's records as they are.
    let data = broker.stop();
    let partition = offsets_partition_for(GROUP, OFFSETS_PARTITIONS);
    assert!(data
        .path()
        .join(format!("{OFFSETS_TOPIC}-{partition}"))
        .join(MARKER)
        .exists());
    let broker = TestBroker::start_in(data, 1, LogConfig::default());
    check_converted(&broker);
}

#[test]
fn a_conversion_stopped_at_any_step_is_finished_at_the_next_start() {
    for step in [
        CleanStep::OutputWritten,
        CleanStep::SwapCommitted,
        CleanStep::InputsDeleted,
        CleanStep::SwapInstalled,
    ] {
        let data = TestBroker::start(1, LogConfig::default()).stop();
        write_old_partition(data.path(), Some(step));
        let broker = TestBroker::start_in(data, 1, LogConfig::default());
        check_converted(&broker);
    }
}
