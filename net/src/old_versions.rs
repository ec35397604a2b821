//! Request versions older than the generated codec reads, which Kafka 3.9 still serves and
//! tools in the wild still send, some without negotiating (Sarama, and so Burrow, asks
//! ListOffsets v0; clients of Kafka 0.8–0.10 commit with OffsetCommit v0/v1 and create topics
//! with CreateTopics v0). kafka-protocol 0.18 is generated from Kafka 4's message specs, which
//! dropped these versions (KIP-896), so its decoders refuse them.
//!
//! Each is read here from its layout in Kafka 3.9's message specs
//! (`clients/src/main/resources/common/message/*.json`) into the crate's type of a later version
//! with the same meaning, so that one handler serves every version, and each answer is written
//! back in the old layout. ListOffsets v0 is the exception: its question (`max_num_offsets`) and
//! answer (a list of offsets) have no later equivalent, so it has types of its own. One module
//! rather than a patch of the vendored crate: the generated code stays as upstream ships it, and
//! these layouts are frozen. Where an old layout equals a later one (OffsetFetch v0 is v1;
//! DeleteTopics v0's request is v1's; OffsetCommit v0/v1 answers are v2's; CreateTopics v1's
//! request is v2's) the crate's codec does the work at that version.
//!
//! Produce v0–2 and Fetch v0–3 carry message formats v0 and v1 (magic 0 and 1), which Ferrite
//! does not store: their partitions are read here only to answer each with UNSUPPORTED_VERSION
//! in the request's own layout ([`RefusedRequest`]), as the issue of old clients asks; Kafka 4
//! closes the connection instead.
//!
//! Semantics that differ from the current versions, per version:
//! - ListOffsets v0: Kafka's `legacyFetchOffsetsBefore` (see `PartitionLog::offsets_before`);
//!   a negative timestamp other than -1 and -2 is answered UNSUPPORTED_VERSION, as Kafka does.
//! - OffsetCommit v0 has no generation or member: it is a simple commit (generation -1), as v1+
//!   commits without a group are. Kafka 3.9 stored v0 commits in ZooKeeper, where they never
//!   expired (and answered UNSUPPORTED_VERSION without ZooKeeper, in KRaft mode); Ferrite has no
//!   ZooKeeper, so v0 commits and fetches use the coordinator's offsets, which v1+ clients see
//!   too and which expire as a simple group's do: offsets.retention.minutes after their commit.
//!   OffsetCommit v1's per-partition commit timestamp is read and not kept: every commit is
//!   stamped on arrival, which is what Kafka does with the -1 clients send (a client's own stamp
//!   would move that expiry; v2–4's retention time is likewise ignored, as before).
//! - OffsetFetch v0 reads the coordinator's offsets like v1 (Kafka 3.9: ZooKeeper, see above).
//! - DescribeConfigs v0 has `is_default` where later versions have a source: true exactly for
//!   a broker default (Kafka 3.x writes false always; the spec's meaning is kept here).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, GroupId, ListOffsetsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    RequestKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::api_versions::UNSUPPORTED_VERSION;

/// A request body, decoded. Moved once per request, never stored: boxing the common variant to
/// shrink the rare ones would cost every request an allocation.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Body {
    /// In the generated codec's types, whatever the version it came in.
    Current(RequestKind),
    /// ListOffsets v0, whose question and answer have shapes of their own.
    ListOffsetsV0(ListOffsetsV0Request),
    /// Produce v0–2 or Fetch v0–3: refused.
    MessageFormatV0V1(RefusedRequest),
}

/// Whether `api_version` of `api_key` is older than the generated codec reads.
pub fn is_older_than_codec(api_key: ApiKey, api_version: i16) -> bool {
    api_version < api_key.valid_versions().min
}

/// Decodes a body of a version older than the generated codec reads (see
/// [`is_older_than_codec`]); the version is one the table admits.
pub fn decode(api_key: ApiKey, api_version: i16, body: Bytes) -> Result<Body, String> {
    let mut reader = Reader { bytes: body };
    let current = |kind: RequestKind| Ok(Body::Current(kind));
    match api_key {
        ApiKey::ListOffsets => Ok(Body::ListOffsetsV0(ListOffsetsV0Request::read(
            &mut reader,
        )?)),
        ApiKey::OffsetCommit => current(RequestKind::OffsetCommit(read_offset_commit(
            &mut reader,
            api_version,
        )?)),
        // Version 0's layout is version 1's; only where Kafka kept the offsets differed.
        ApiKey::OffsetFetch => current(RequestKind::OffsetFetch(
            OffsetFetchRequest::decode(&mut reader.bytes, 1).map_err(|error| error.to_string())?,
        )),
        ApiKey::CreateTopics => current(RequestKind::CreateTopics(read_create_topics(
            &mut reader,
            api_version,
        )?)),
        // Version 0's request is version 1's; only the answer gained a field.
        ApiKey::DeleteTopics => current(RequestKind::DeleteTopics(
            DeleteTopicsRequest::decode(&mut reader.bytes, 1).map_err(|error| error.to_string())?,
        )),
        ApiKey::DescribeConfigs => current(RequestKind::DescribeConfigs(read_describe_configs_v0(
            &mut reader,
        )?)),
        ApiKey::Produce | ApiKey::Fetch => Ok(Body::MessageFormatV0V1(RefusedRequest::read(
            &mut reader,
            api_key,
            api_version,
        )?)),
        other => Err(format!("{other:?} v{api_version} has no decoder")),
    }
}

/// A response that can be written in every version the table serves, the old ones included.
pub trait VersionedResponse {
    fn encode_in(&self, version: i16, out: &mut BytesMut) -> Result<(), String>;
}

/// Encodes with the generated codec at `version`.
fn encode_current(body: &impl Encodable, version: i16, out: &mut BytesMut) -> Result<(), String> {
    body.encode(out, version).map_err(|error| error.to_string())
}

impl VersionedResponse for ListOffsetsResponse {
    /// Version 0 is answered by [`ListOffsetsV0Response`].
    fn encode_in(&self, version: i16, out: &mut BytesMut) -> Result<(), String> {
        encode_current(self, version, out)
    }
}

impl VersionedResponse for OffsetCommitResponse {
    fn encode_in(&self, version: i16, out: &mut BytesMut) -> Result<(), String> {
        // Versions 0 and 1 answer in version 2's layout.
        encode_current(self, version.max(2), out)
    }
}

impl VersionedResponse for OffsetFetchResponse {
    fn encode_in(&self, version: i16, out: &mut BytesMut) -> Result<(), String> {
        // Version 0 answers in version 1's layout.
        encode_current(self, version.max(1), out)
    }
}

impl VersionedResponse for CreateTopicsResponse {
    fn encode_in(&self, version: i16, out: &mut BytesMut) -> Result<(), String> {
        if version >= 2 {
            return encode_current(self, version, out);
        }
        // No throttle time; version 1 adds the error message.
        put_array_length(out, self.topics.len())?;
        for topic in &self.topics {
            put_string(out, &topic.name)?;
            out.put_i16(topic.error_code);
            if version == 1 {
                put_nullable_string(out, topic.error_message.as_deref())?;
            }
        }
        Ok(())
    }
}

impl VersionedResponse for DeleteTopicsResponse {
    fn encode_in(&self, version: i16, out: &mut BytesMut) -> Result<(), String> {
        if version >= 1 {
            return encode_current(self, version, out);
        }
        // Version 1 without its throttle time.
        put_array_length(out, self.responses.len())?;
        for topic in &self.responses {
            put_string(out, topic.name.as_deref().map_or("", |name| name))?;
            out.put_i16(topic.error_code);
        }
        Ok(())
    }
}

/// DescribeConfigs' source of a value that is the broker's default (Kafka's DEFAULT_CONFIG).
const SOURCE_DEFAULT: i8 = 5;

impl VersionedResponse for DescribeConfigsResponse {
    fn encode_in(&self, version: i16, out: &mut BytesMut) -> Result<(), String> {
        if version >= 1 {
            return encode_current(self, version, out);
        }
        out.put_i32(self.throttle_time_ms);
        put_array_length(out, self.results.len())?;
        for result in &self.results {
            out.put_i16(result.error_code);
            put_nullable_string(out, result.error_message.as_deref())?;
            out.put_i8(result.resource_type);
            put_string(out, &result.resource_name)?;
            put_array_length(out, result.configs.len())?;
            for config in &result.configs {
                put_string(out, &config.name)?;
                put_nullable_string(out, config.value.as_deref())?;
                out.put_u8(u8::from(config.read_only));
                out.put_u8(u8::from(config.config_source == SOURCE_DEFAULT));
                out.put_u8(u8::from(config.is_sensitive));
            }
        }
        Ok(())
    }
}

/// ListOffsets v0: for each partition, up to `max_num_offsets` offsets before a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsV0Request {
    /// -1 for a consumer; a broker id for a follower of old Kafka (answered the same here).
    pub replica_id: i32,
    pub topics: Vec<(TopicName, Vec<ListOffsetsV0Partition>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsV0Partition {
    pub partition_index: i32,
    /// -1 for the latest offsets, -2 for the earliest, otherwise milliseconds.
    pub timestamp_ms: i64,
    pub max_num_offsets: i32,
}

impl ListOffsetsV0Request {
    fn read(reader: &mut Reader) -> Result<ListOffsetsV0Request, String> {
        let replica_id = reader.i32()?;
        let topics = reader.array(|reader| {
            let name = TopicName(reader.string()?);
            let partitions = reader.array(|reader| {
                Ok(ListOffsetsV0Partition {
                    partition_index: reader.i32()?,
                    timestamp_ms: reader.i64()?,
                    max_num_offsets: reader.i32()?,
                })
            })?;
            Ok((name, partitions))
        })?;
        Ok(ListOffsetsV0Request { replica_id, topics })
    }
}

/// The answer to a [`ListOffsetsV0Request`]: per partition, an error code and the offsets found
/// (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOffsetsV0Response {
    pub topics: Vec<(TopicName, Vec<ListOffsetsV0PartitionResponse>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsV0PartitionResponse {
    pub partition_index: i32,
    pub error_code: i16,
    pub old_style_offsets: Vec<i64>,
}

impl VersionedResponse for ListOffsetsV0Response {
    fn encode_in(&self, version: i16, out: &mut BytesMut) -> Result<(), String> {
        assert_eq!(version, 0, "ListOffsetsV0Response answers version 0 only");
        put_array_length(out, self.topics.len())?;
        for (name, partitions) in &self.topics {
            put_string(out, name)?;
            put_array_length(out, partitions.len())?;
            for partition in partitions {
                out.put_i32(partition.partition_index);
                out.put_i16(partition.error_code);
                put_array_length(out, partition.old_style_offsets.len())?;
                for &offset in &partition.old_style_offsets {
                    out.put_i64(offset);
                }
            }
        }
        Ok(())
    }
}

/// A Produce v0–2 or Fetch v0–3 request: the partitions it names, each to be answered
/// UNSUPPORTED_VERSION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRequest {
    pub api_key: ApiKey,
    pub api_version: i16,
    /// A produce request's acks; 0 asks for no answer at all.
    pub acks: Option<i16>,
    pub topics: Vec<(StrBytes, Vec<i32>)>,
}

impl RefusedRequest {
    fn read(reader: &mut Reader, api_key: ApiKey, api_version: i16) -> Result<Self, String> {
        let (acks, topics) = if api_key == ApiKey::Produce {
            let acks = reader.i16()?;
            let _timeout_ms = reader.i32()?;
            let topics = reader.array(|reader| {
                let name = reader.string()?;
                let partitions = reader.array(|reader| {
                    let index = reader.i32()?;
                    reader.skip_nullable_bytes()?;
                    Ok(index)
                })?;
                Ok((name, partitions))
            })?;
            (Some(acks), topics)
        } else {
            let _replica_id = reader.i32()?;
            let _max_wait_ms = reader.i32()?;
            let _min_bytes = reader.i32()?;
            if api_version >= 3 {
                let _max_bytes = reader.i32()?;
            }
            let topics = reader.array(|reader| {
                let name = reader.string()?;
                let partitions = reader.array(|reader| {
                    let partition = reader.i32()?;
                    let _fetch_offset = reader.i64()?;
                    let _partition_max_bytes = reader.i32()?;
                    Ok(partition)
                })?;
                Ok((name, partitions))
            })?;
            (None, topics)
        };
        Ok(RefusedRequest {
            api_key,
            api_version,
            acks,
            topics,
        })
    }

    /// Whether the client waits for an answer (not a produce request with acks 0, which Kafka
    /// answers an error by closing the connection).
    pub fn wants_answer(&self) -> bool {
        self.acks != Some(0)
    }

    pub fn partition_count(&self) -> usize {
        self.topics
            .iter()
            .map(|(_, partitions)| partitions.len())
            .sum()
    }
}

impl VersionedResponse for RefusedRequest {
    /// UNSUPPORTED_VERSION for every partition, no offsets (-1), no records.
    fn encode_in(&self, version: i16, out: &mut BytesMut) -> Result<(), String> {
        assert_eq!(version, self.api_version);
        let fetch = self.api_key == ApiKey::Fetch;
        if fetch && version >= 1 {
            out.put_i32(0); // throttle_time_ms, first in a fetch response
        }
        put_array_length(out, self.topics.len())?;
        for (name, partitions) in &self.topics {
            put_string(out, name)?;
            put_array_length(out, partitions.len())?;
            for &partition in partitions {
                out.put_i32(partition);
                out.put_i16(UNSUPPORTED_VERSION);
                out.put_i64(-1); // a fetch's high-water mark, a produce's base offset
                if fetch {
                    out.put_i32(0); // no records
                } else if version >= 2 {
                    out.put_i64(-1); // log_append_time_ms
                }
            }
        }
        if !fetch && version >= 1 {
            out.put_i32(0); // throttle_time_ms, last in a produce response
        }
        Ok(())
    }
}

fn read_offset_commit(
    reader: &mut Reader,
    api_version: i16,
) -> Result<OffsetCommitRequest, String> {
    let group_id = GroupId(reader.string()?);
    // Version 0 has no group membership: a simple commit.
    let (generation_id, member_id) = if api_version >= 1 {
        (reader.i32()?, reader.string()?)
    } else {
        (-1, StrBytes::default())
    };
    let topics = reader.array(|reader| {
        let name = TopicName(reader.string()?);
        let partitions = reader.array(|reader| {
            let partition_index = reader.i32()?;
            let committed_offset = reader.i64()?;
            if api_version == 1 {
                let _commit_timestamp_ms = reader.i64()?;
            }
            let committed_metadata = reader.nullable_string()?;
            Ok(OffsetCommitRequestPartition::default()
                .with_partition_index(partition_index)
                .with_committed_offset(committed_offset)
                .with_committed_metadata(committed_metadata))
        })?;
        Ok(OffsetCommitRequestTopic::default()
            .with_name(name)
            .with_partitions(partitions))
    })?;
    Ok(OffsetCommitRequest::default()
        .with_group_id(group_id)
        .with_generation_id_or_member_epoch(generation_id)
        .with_member_id(member_id)
        .with_topics(topics))
}

fn read_create_topics(
    reader: &mut Reader,
    api_version: i16,
) -> Result<CreateTopicsRequest, String> {
    // Each topic is laid out as in version 2; version 0 lacks the trailing validate_only.
    let topics = reader.array(|reader| {
        CreatableTopic::decode(&mut reader.bytes, 2).map_err(|error| error.to_string())
    })?;
    let timeout_ms = reader.i32()?;
    let validate_only = if api_version >= 1 {
        reader.bool()?
    } else {
        false
    };
    Ok(CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(timeout_ms)
        .with_validate_only(validate_only))
}

fn read_describe_configs_v0(reader: &mut Reader) -> Result<DescribeConfigsRequest, String> {
    let resources = reader.array(|reader| {
        Ok(DescribeConfigsResource::default()
            .with_resource_type(reader.i8()?)
            .with_resource_name(reader.string()?)
            .with_configuration_keys(reader.nullable_array(|reader| reader.string())?))
    })?;
    Ok(DescribeConfigsRequest::default().with_resources(resources))
}

/// Reads the classic (non-flexible) encoding's primitives with bounds checks: a short body is
/// an error, never a panic, and no count read off the wire reserves more than the bytes left.
struct Reader {
    bytes: Bytes,
}

impl Reader {
    fn need(&self, length: usize) -> Result<(), String> {
        if self.bytes.remaining() < length {
            return Err(format!(
                "{length} bytes expected, {} left",
                self.bytes.remaining()
            ));
        }
        Ok(())
    }

    fn i8(&mut self) -> Result<i8, String> {
        self.need(1)?;
        Ok(self.bytes.get_i8())
    }

    fn bool(&mut self) -> Result<bool, String> {
        Ok(self.i8()? != 0)
    }

    fn i16(&mut self) -> Result<i16, String> {
        self.need(2)?;
        Ok(self.bytes.get_i16())
    }

    fn i32(&mut self) -> Result<i32, String> {
        self.need(4)?;
        Ok(self.bytes.get_i32())
    }

    fn i64(&mut self) -> Result<i64, String> {
        self.need(8)?;
        Ok(self.bytes.get_i64())
    }

    fn nullable_string(&mut self) -> Result<Option<StrBytes>, String> {
        let length = self.i16()?;
        if length == -1 {
            return Ok(None);
        }
        let length = usize::try_from(length).map_err(|_| format!("string length {length}"))?;
        self.need(length)?;
        StrBytes::from_utf8(self.bytes.split_to(length))
            .map(Some)
            .map_err(|error| format!("string: {error}"))
    }

    fn string(&mut self) -> Result<StrBytes, String> {
        self.nullable_string()?
            .ok_or_else(|| "null where a string is required".to_owned())
    }

    fn skip_nullable_bytes(&mut self) -> Result<(), String> {
        let length = self.i32()?;
        if length == -1 {
            return Ok(());
        }
        let length = usize::try_from(length).map_err(|_| format!("bytes length {length}"))?;
        self.need(length)?;
        self.bytes.advance(length);
        Ok(())
    }

    fn nullable_array<T>(
        &mut self,
        mut element: impl FnMut(&mut Reader) -> Result<T, String>,
    ) -> Result<Option<Vec<T>>, String> {
        let count = self.i32()?;
        if count == -1 {
            return Ok(None);
        }
        let count = usize::try_from(count).map_err(|_| format!("array length {count}"))?;
        // Every element takes at least a byte (Kafka's own check).
        self.need(count)?;
        let mut elements = Vec::with_capacity(count);
        for _ in 0..count {
            elements.push(element(self)?);
        }
        Ok(Some(elements))
    }

    fn array<T>(
        &mut self,
        element: impl FnMut(&mut Reader) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        self.nullable_array(element)?
            .ok_or_else(|| "null where an array is required".to_owned())
    }
}

fn put_array_length(out: &mut BytesMut, length: usize) -> Result<(), String> {
    out.put_i32(i32::try_from(length).map_err(|_| format!("array of {length} elements"))?);
    Ok(())
}

fn put_nullable_string(out: &mut BytesMut, value: Option<&str>) -> Result<(), String> {
    match value {
        None => out.put_i16(-1),
        Some(value) => {
            out.put_i16(
                i16::try_from(value.len())
                    .map_err(|_| format!("string of {} bytes", value.len()))?,
            );
            out.put_slice(value.as_bytes());
        }
    }
    Ok(())
}

fn put_string(out: &mut BytesMut, value: &str) -> Result<(), String> {
    put_nullable_string(out, Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// ListOffsets v0 as Sarama writes it: replica -1, one topic, partition 3, latest, 1 offset.
    const LIST_OFFSETS_V0: &[u8] = &[
        0xff, 0xff, 0xff, 0xff, // replica_id -1
        0, 0, 0, 1, // one topic
        0, 2, b'l', b'g', // "lg"
        0, 0, 0, 1, // one partition
        0, 0, 0, 3, // partition 3
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // timestamp -1
        0, 0, 0, 1, // max_num_offsets 1
    ];

    #[test]
    fn list_offsets_v0_reads_max_num_offsets() {
        let Body::ListOffsetsV0(request) =
            decode(ApiKey::ListOffsets, 0, Bytes::from_static(LIST_OFFSETS_V0)).unwrap()
        else {
            panic!("a ListOffsets v0 body");
        };
        assert_eq!(request.replica_id, -1);
        assert_eq!(&*request.topics[0].0, "lg");
        assert_eq!(
            request.topics[0].1,
            vec![ListOffsetsV0Partition {
                partition_index: 3,
                timestamp_ms: -1,
                max_num_offsets: 1
            }]
        );
    }

    #[test]
    fn refused_answers_follow_each_versions_layout() {
        let refused = |api_key, api_version| RefusedRequest {
            api_key,
            api_version,
            acks: Some(1),
            topics: vec![(StrBytes::from_static_str("t"), vec![7])],
        };
        // topics(4) name(2+1) partitions(4) index(4) error(2) offset(8)
        let common = 4 + 3 + 4 + 4 + 2 + 8;
        for (api_key, version, length) in [
            (ApiKey::Produce, 0, common),
            (ApiKey::Produce, 1, common + 4),
            (ApiKey::Produce, 2, common + 8 + 4),
            (ApiKey::Fetch, 0, common + 4),
            (ApiKey::Fetch, 3, 4 + common + 4),
        ] {
            let mut out = BytesMut::new();
            refused(api_key, version)
                .encode_in(version, &mut out)
                .unwrap();
            assert_eq!(out.len(), length, "{api_key:?} v{version}");
        }
    }

    proptest! {
        /// Any bytes give a body or an error, never a panic or a huge reservation.
        #[test]
        fn arbitrary_old_bodies_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..128),
            which in 0usize..9,
        ) {
            let (api_key, version) = [
                (ApiKey::ListOffsets, 0),
                (ApiKey::OffsetCommit, 0),
                (ApiKey::OffsetCommit, 1),
                (ApiKey::OffsetFetch, 0),
                (ApiKey::CreateTopics, 0),
                (ApiKey::DeleteTopics, 0),
                (ApiKey::DescribeConfigs, 0),
                (ApiKey::Produce, 2),
                (ApiKey::Fetch, 3),
            ][which];
            let _ = decode(api_key, version, Bytes::from(tail));
        }
    }
}
