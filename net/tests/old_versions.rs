//! The request versions older than the generated codec reads (`net::old_versions`), end to end
//! over TCP. Each request is written byte by byte from its layout in Kafka 3.9's message specs,
//! as an old client sends it, and each answer is read the same way, so neither side leans on
//! the encoder under test: ListOffsets v0's old-style offsets, OffsetCommit v0/v1 read back by
//! OffsetFetch v0 and by a current client, CreateTopics v0/v1 and DeleteTopics v0 seen in
//! Metadata, DescribeConfigs v0's defaults, and Produce v2 / Fetch v3 (message format v1)
//! answered UNSUPPORTED_VERSION on a connection that stays usable.

mod common;

use bytes::{Buf, Bytes};
use common::{create_topic, create_topic_with, name, produce, Client, TestBroker};
use engine::batch::build::batch_of;
use engine::LogConfig;
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::*;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const UNSUPPORTED_VERSION: i16 = 35;

/// A request body in the classic (non-flexible) encoding, written by hand.
#[derive(Default)]
struct Wire(Vec<u8>);

impl Wire {
    fn i8(mut self, value: i8) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn i16(mut self, value: i16) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn i32(mut self, value: i32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn i64(mut self, value: i64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn string(self, value: &str) -> Self {
        let mut wire = self.i16(value.len() as i16);
        wire.0.extend_from_slice(value.as_bytes());
        wire
    }
    fn bytes(self, value: &[u8]) -> Self {
        let mut wire = self.i32(value.len() as i32);
        wire.0.extend_from_slice(value);
        wire
    }
}

/// Sends `body` as `api_key` v`version` with request header v1 (every version here predates
/// flexible headers) and returns the answer's body after checking its correlation id.
fn exchange(client: &mut Client, api_key: ApiKey, version: i16, body: Wire) -> Bytes {
    const CORRELATION_ID: i32 = 1818;
    let mut frame = Wire::default()
        .i16(api_key as i16)
        .i16(version)
        .i32(CORRELATION_ID)
        .string("old-client")
        .0;
    frame.extend_from_slice(&body.0);
    client.send_raw_frame(&frame);
    let mut answer = client
        .read_frame()
        .unwrap_or_else(|| panic!("{api_key:?} v{version}: connection closed"));
    assert_eq!(answer.get_i32(), CORRELATION_ID, "{api_key:?} v{version}");
    answer
}

/// Reads the classic encoding off an answer, the way an old client does.
fn string(answer: &mut Bytes) -> Option<String> {
    let length = answer.get_i16();
    (length >= 0).then(|| String::from_utf8(answer.split_to(length as usize).to_vec()).unwrap())
}

fn array<T>(answer: &mut Bytes, mut element: impl FnMut(&mut Bytes) -> T) -> Vec<T> {
    let count = answer.get_i32();
    (0..count).map(|_| element(answer)).collect()
}

fn assert_read_whole(answer: &Bytes) {
    assert!(answer.is_empty(), "{} bytes left over", answer.len());
}

#[test]
fn list_offsets_v0_answers_up_to_max_num_offsets_newest_first() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    // Every batch after the first starts a segment: segments at 0, 2 and 4, log end 6. Kept
    // whatever their records' age (timestamps of 1970).
    assert_eq!(
        create_topic_with(
            &mut client,
            "lg",
            1,
            &[("segment.bytes", "100"), ("retention.ms", "-1")]
        ),
        0
    );
    for (index, timestamp_ms) in [1_000, 2_000, 3_000].into_iter().enumerate() {
        let (error, base_offset) = produce(&mut client, "lg", 0, batch_of(2, 8, timestamp_ms));
        assert_eq!((error, base_offset), (0, 2 * index as i64));
    }
    // (timestamp, max_num_offsets) as partition 0 asks them, one request each (a partition
    // appears once per request in Kafka's answers).
    for (timestamp_ms, max_num_offsets, expected) in [
        (-1, 1, vec![6]),
        (-1, 2, vec![6, 4]),
        (-1, 10, vec![6, 4, 2, 0]),
        (-2, 10, vec![0]),
        // Segments whose newest record is at or before the time.
        (2_500, 10, vec![2, 0]),
        (2_500, 1, vec![2]),
        (500, 10, vec![]),
    ] {
        let request = Wire::default()
            .i32(-1) // replica_id: a consumer
            .i32(1)
            .string("lg")
            .i32(2)
            .i32(0)
            .i64(timestamp_ms)
            .i32(max_num_offsets)
            .i32(9) // a partition the topic does not have
            .i64(-1)
            .i32(1);
        let mut answer = exchange(&mut client, ApiKey::ListOffsets, 0, request);
        let topics = array(&mut answer, |answer| {
            let name = string(answer).unwrap();
            let partitions = array(answer, |answer| {
                let partition = answer.get_i32();
                let error = answer.get_i16();
                let offsets = array(answer, |answer| answer.get_i64());
                (partition, error, offsets)
            });
            (name, partitions)
        });
        assert_read_whole(&answer);
        assert_eq!(
            topics,
            vec![(
                "lg".to_owned(),
                vec![(0, 0, expected), (9, UNKNOWN_TOPIC_OR_PARTITION, vec![])]
            )],
            "timestamp {timestamp_ms}, max_num_offsets {max_num_offsets}"
        );
    }
    // A negative timestamp other than latest and earliest has no meaning in version 0.
    let request = Wire::default()
        .i32(-1)
        .i32(1)
        .string("lg")
        .i32(1)
        .i32(0)
        .i64(-3)
        .i32(1);
    let mut answer = exchange(&mut client, ApiKey::ListOffsets, 0, request);
    assert_eq!(answer.get_i32(), 1);
    assert_eq!(string(&mut answer).as_deref(), Some("lg"));
    assert_eq!(answer.get_i32(), 1);
    assert_eq!(
        (answer.get_i32(), answer.get_i16(), answer.get_i32()),
        (0, UNSUPPORTED_VERSION, 0)
    );
    assert_read_whole(&answer);
}

#[test]
fn offsets_committed_with_v0_and_v1_are_read_by_offset_fetch_v0_and_a_current_client() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "oc", 2), 0);
    // OffsetCommit v0: group, topics[name, partitions[index, offset, metadata]].
    let commit_v0 = Wire::default()
        .string("old-group")
        .i32(1)
        .string("oc")
        .i32(1)
        .i32(0)
        .i64(42)
        .string("from v0");
    // v1 adds generation and member (-1 and "": no group membership) and a commit timestamp.
    let commit_v1 = Wire::default()
        .string("old-group")
        .i32(-1)
        .string("")
        .i32(2)
        .string("oc")
        .i32(1)
        .i32(1)
        .i64(7)
        .i64(-1)
        .string("from v1")
        .string("missing")
        .i32(1)
        .i32(0)
        .i64(1)
        .i64(-1)
        .string("");
    for (version, commit, expected) in [
        (0, commit_v0, vec![("oc".to_owned(), vec![(0, 0)])]),
        (
            1,
            commit_v1,
            vec![
                ("oc".to_owned(), vec![(1, 0)]),
                ("missing".to_owned(), vec![(0, UNKNOWN_TOPIC_OR_PARTITION)]),
            ],
        ),
    ] {
        let mut answer = exchange(&mut client, ApiKey::OffsetCommit, version, commit);
        let topics = array(&mut answer, |answer| {
            let name = string(answer).unwrap();
            (
                name,
                array(answer, |answer| (answer.get_i32(), answer.get_i16())),
            )
        });
        assert_read_whole(&answer);
        assert_eq!(topics, expected, "OffsetCommit v{version}");
    }
    // OffsetFetch v0: group, topics[name, partitions[index]]; partition 1 of "oc" too.
    let fetch_v0 = Wire::default()
        .string("old-group")
        .i32(1)
        .string("oc")
        .i32(2)
        .i32(0)
        .i32(1);
    let mut answer = exchange(&mut client, ApiKey::OffsetFetch, 0, fetch_v0);
    let topics = array(&mut answer, |answer| {
        let name = string(answer).unwrap();
        let partitions = array(answer, |answer| {
            (
                answer.get_i32(),
                answer.get_i64(),
                string(answer),
                answer.get_i16(),
            )
        });
        (name, partitions)
    });
    assert_read_whole(&answer);
    assert_eq!(
        topics,
        vec![(
            "oc".to_owned(),
            vec![
                (0, 42, Some("from v0".to_owned()), 0),
                (1, 7, Some("from v1".to_owned()), 0)
            ]
        )]
    );
    // A current client sees the same offsets.
    let request =
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(
                kafka_protocol::protocol::StrBytes::from_static_str("old-group"),
            ))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(name("oc"))
                .with_partition_indexes(vec![0, 1])]))]);
    let response: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 8, &request);
    let partitions = &response.groups[0].topics[0].partitions;
    let offsets: Vec<(i32, i64, i16)> = partitions
        .iter()
        .map(|partition| {
            (
                partition.partition_index,
                partition.committed_offset,
                partition.error_code,
            )
        })
        .collect();
    assert_eq!(offsets, vec![(0, 42, 0), (1, 7, 0)]);
}

/// The topics (not internal) Metadata v1 reports, with their partition counts.
fn topics_in_metadata(client: &mut Client) -> Vec<(String, usize)> {
    let response: MetadataResponse = client.call(
        ApiKey::Metadata,
        1,
        &MetadataRequest::default().with_topics(None),
    );
    let mut topics: Vec<(String, usize)> = response
        .topics
        .iter()
        .filter(|topic| topic.error_code == 0 && !topic.is_internal)
        .map(|topic| {
            (
                topic.name.as_ref().unwrap().0.to_string(),
                topic.partitions.len(),
            )
        })
        .collect();
    topics.sort();
    topics
}

/// A CreateTopics v0/v1 request for one topic with `partitions` partitions and replication 1.
fn create_topics(version: i16, topic: &str, partitions: i32, validate_only: bool) -> Wire {
    let request = Wire::default()
        .i32(1)
        .string(topic)
        .i32(partitions)
        .i16(1)
        .i32(0) // no assignments
        .i32(1) // one config
        .string("retention.ms")
        .string("3600000")
        .i32(10_000); // timeout_ms
    if version >= 1 {
        request.i8(i8::from(validate_only))
    } else {
        request
    }
}

#[test]
fn topics_created_with_v0_and_v1_and_deleted_with_v0_show_in_metadata() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    // v0 answers topics[name, error]; v1 adds the error message.
    let mut answer = exchange(
        &mut client,
        ApiKey::CreateTopics,
        0,
        create_topics(0, "made-by-v0", 3, false),
    );
    let topics = array(&mut answer, |answer| {
        (string(answer).unwrap(), answer.get_i16())
    });
    assert_read_whole(&answer);
    assert_eq!(topics, vec![("made-by-v0".to_owned(), 0)]);
    let mut answer = exchange(
        &mut client,
        ApiKey::CreateTopics,
        0,
        create_topics(0, "made-by-v0", 3, false),
    );
    let topics = array(&mut answer, |answer| {
        (string(answer).unwrap(), answer.get_i16())
    });
    assert_read_whole(&answer);
    assert_eq!(
        topics,
        vec![("made-by-v0".to_owned(), TOPIC_ALREADY_EXISTS)]
    );
    for (topic, validate_only, expected_error) in [
        ("checked-by-v1", true, 0),
        ("made-by-v1", false, 0),
        ("made-by-v0", false, TOPIC_ALREADY_EXISTS),
    ] {
        let mut answer = exchange(
            &mut client,
            ApiKey::CreateTopics,
            1,
            create_topics(1, topic, 2, validate_only),
        );
        let topics = array(&mut answer, |answer| {
            (string(answer).unwrap(), answer.get_i16(), string(answer))
        });
        assert_read_whole(&answer);
        assert_eq!(topics.len(), 1);
        assert_eq!((topics[0].0.as_str(), topics[0].1), (topic, expected_error));
        assert_eq!(
            topics[0].2.is_some(),
            expected_error != 0,
            "{topic}: message"
        );
    }
    assert_eq!(
        topics_in_metadata(&mut client),
        vec![("made-by-v0".to_owned(), 3), ("made-by-v1".to_owned(), 2)]
    );
    // DeleteTopics v0: topic names and a timeout; answered without a throttle time.
    let request = Wire::default()
        .i32(2)
        .string("made-by-v0")
        .string("never-made")
        .i32(10_000);
    let mut answer = exchange(&mut client, ApiKey::DeleteTopics, 0, request);
    let topics = array(&mut answer, |answer| {
        (string(answer).unwrap(), answer.get_i16())
    });
    assert_read_whole(&answer);
    assert_eq!(
        topics,
        vec![
            ("made-by-v0".to_owned(), 0),
            ("never-made".to_owned(), UNKNOWN_TOPIC_OR_PARTITION)
        ]
    );
    assert_eq!(
        topics_in_metadata(&mut client),
        vec![("made-by-v1".to_owned(), 2)]
    );
}

#[test]
fn describe_configs_v0_tells_defaults_from_topic_settings() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(
        create_topic_with(&mut client, "dc", 1, &[("retention.ms", "3600000")]),
        0
    );
    // resources[type (2: topic), name, keys]; no include_synonyms in version 0.
    let request = Wire::default()
        .i32(1)
        .i8(2)
        .string("dc")
        .i32(2)
        .string("retention.ms")
        .string("cleanup.policy");
    let mut answer = exchange(&mut client, ApiKey::DescribeConfigs, 0, request);
    assert_eq!(answer.get_i32(), 0, "throttle time");
    let results = array(&mut answer, |answer| {
        let error = answer.get_i16();
        let _message = string(answer);
        let resource = (answer.get_i8(), string(answer).unwrap());
        let configs = array(answer, |answer| {
            let name = string(answer).unwrap();
            let value = string(answer);
            let read_only = answer.get_i8();
            let is_default = answer.get_i8();
            let is_sensitive = answer.get_i8();
            (name, value, read_only, is_default, is_sensitive)
        });
        (error, resource, configs)
    });
    assert_read_whole(&answer);
    let mut configs = results[0].2.clone();
    configs.sort();
    assert_eq!((results[0].0, &results[0].1), (0, &(2, "dc".to_owned())));
    assert_eq!(
        configs,
        vec![
            (
                "cleanup.policy".to_owned(),
                Some("delete".to_owned()),
                0,
                1,
                0
            ),
            (
                "retention.ms".to_owned(),
                Some("3600000".to_owned()),
                0,
                0,
                0
            ),
        ]
    );
}

#[test]
fn message_format_v0_v1_versions_are_answered_unsupported_version_on_a_connection_that_stays() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "mf", 2), 0);
    // Produce v2 (message format v1): acks, timeout, topics[name, partitions[index, records]].
    let message_set_v1 = [0u8; 34];
    let request = Wire::default()
        .i16(1)
        .i32(1_000)
        .i32(1)
        .string("mf")
        .i32(2)
        .i32(0)
        .bytes(&message_set_v1)
        .i32(1)
        .bytes(&message_set_v1);
    let mut answer = exchange(&mut client, ApiKey::Produce, 2, request);
    let topics = array(&mut answer, |answer| {
        let name = string(answer).unwrap();
        let partitions = array(answer, |answer| {
            (
                answer.get_i32(),
                answer.get_i16(),
                answer.get_i64(),
                answer.get_i64(),
            )
        });
        (name, partitions)
    });
    assert_eq!(answer.get_i32(), 0, "throttle time, last in version 1+");
    assert_read_whole(&answer);
    assert_eq!(
        topics,
        vec![(
            "mf".to_owned(),
            vec![
                (0, UNSUPPORTED_VERSION, -1, -1),
                (1, UNSUPPORTED_VERSION, -1, -1)
            ]
        )]
    );
    // Fetch v3: replica, max wait, min bytes, max bytes, topics[name, partitions[index,
    // offset, max bytes]].
    let request = Wire::default()
        .i32(-1)
        .i32(500)
        .i32(1)
        .i32(1 << 20)
        .i32(1)
        .string("mf")
        .i32(1)
        .i32(1)
        .i64(0)
        .i32(1 << 20);
    let mut answer = exchange(&mut client, ApiKey::Fetch, 3, request);
    assert_eq!(answer.get_i32(), 0, "throttle time, first in version 1+");
    let topics = array(&mut answer, |answer| {
        let name = string(answer).unwrap();
        let partitions = array(answer, |answer| {
            let partition = (answer.get_i32(), answer.get_i16(), answer.get_i64());
            let records = answer.get_i32();
            (partition, records)
        });
        (name, partitions)
    });
    assert_read_whole(&answer);
    assert_eq!(
        topics,
        vec![("mf".to_owned(), vec![((1, UNSUPPORTED_VERSION, -1), 0)])]
    );
    // The connection still serves, and nothing was stored.
    assert_eq!(common::list_offset(&mut client, "mf", 0, -1), (0, 0));
    let advertised: ApiVersionsResponse =
        client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let range = |api_key: ApiKey| {
        advertised
            .api_keys
            .iter()
            .find(|entry| entry.api_key == api_key as i16)
            .map(|entry| (entry.min_version, entry.max_version))
            .unwrap()
    };
    assert_eq!(
        range(ApiKey::Produce).0,
        0,
        "as Kafka 4, for librdkafka before 2.8"
    );
    assert_eq!(range(ApiKey::Fetch).0, 4);
    for api_key in [
        ApiKey::ListOffsets,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::DescribeConfigs,
    ] {
        assert_eq!(range(api_key).0, 0, "{api_key:?} from version 0");
    }
    // A produce request with acks=0 reads no answer: refused by closing, as Kafka does.
    let frame = Wire::default()
        .i16(ApiKey::Produce as i16)
        .i16(0)
        .i32(99)
        .string("old-client")
        .i16(0)
        .i32(1_000)
        .i32(1)
        .string("mf")
        .i32(1)
        .i32(0)
        .bytes(&message_set_v1)
        .0;
    client.send_raw_frame(&frame);
    assert!(client.closed_by_broker());
}
