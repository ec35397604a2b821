//! Fetch: whole batches from each requested partition, within the partition and response byte
//! limits, long-polling (`max_wait_ms`, `min_bytes`) on the partitions' own wake-ups rather than
//! a timer loop. Batches still in the tail cache are sent from memory; older ones as ranges of
//! the segment file, which the connection splices to the socket without copying them.
//!
//! The response is encoded by hand (the one hot path where kafka-protocol's encoder would need
//! the records in memory): versions 4 to 12, checked against kafka-protocol's decoder in the
//! tests. Fetch sessions (KIP-227) are not kept: every response says session 0, which tells the
//! client to keep sending full requests, as the protocol allows.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use engine::shard::{PartitionId, PartitionRead, SendableData};
use futures::future::select;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Header, Reply, ResponsePart};
use crate::errors::{code, log_error_code, NONE};
use crate::handover::Draining;

/// What one partition answers.
#[derive(Debug)]
pub struct PartitionData {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: SendableData,
}

impl PartitionData {
    fn failed(partition: i32, error_code: i16) -> PartitionData {
        PartitionData {
            partition,
            error_code,
            high_watermark: -1,
            log_start_offset: -1,
            records: SendableData::Empty,
        }
    }

    fn records_bytes(&self) -> u64 {
        self.records.length()
    }
}

/// One requested partition.
struct Wanted {
    topic: usize,
    partition: i32,
    /// `Some` while the topic and partition exist.
    id: Option<PartitionId>,
    /// The topic's id when the fetch started: a topic deleted (and perhaps re-created)
    /// while the fetch waits is not read again.
    topic_id: Option<[u8; 16]>,
    fetch_offset: i64,
    partition_max_bytes: i32,
}

/// Answers `request`; a long poll ends early (with what there is) once the connection's
/// `draining` starts: it is about to move to another shard (`crate::handover`).
pub async fn handle(
    broker: &Broker,
    header: Header,
    request: FetchRequest,
    draining: &Draining,
) -> Result<Reply, String> {
    let version = header.api_version;
    if version >= 7 && (request.session_id != 0 || request.session_epoch > 0) {
        let error = if request.session_id != 0 {
            ResponseError::FetchSessionIdNotFound
        } else {
            ResponseError::InvalidFetchSessionEpoch
        };
        return Ok(encode(header, code(error), Vec::new()));
    }
    let topics_table = broker.catalog.topics();
    let mut topic_names = Vec::with_capacity(request.topics.len());
    let mut wanted = Vec::new();
    for fetch_topic in &request.topics {
        let name = fetch_topic.topic.0.to_string();
        let topic = topics_table.get(&name);
        for fetch_partition in &fetch_topic.partitions {
            let partition = fetch_partition.partition;
            let exists = topic.is_some_and(|topic| topic.has_partition(partition));
            wanted.push(Wanted {
                topic: topic_names.len(),
                partition,
                id: exists.then(|| PartitionId::new(name.as_str(), partition as u32)),
                topic_id: topic.map(|topic| topic.id),
                fetch_offset: fetch_partition.fetch_offset,
                partition_max_bytes: fetch_partition.partition_max_bytes,
            });
        }
        topic_names.push(name);
    }
    let wait_ms = (request.max_wait_ms.max(0) as u64).min(broker.config.fetch_wait_ms_max);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let min_bytes = request.min_bytes.max(0) as u64;
    let response_bytes_max = if request.max_bytes > 0 {
        request.max_bytes as u64
    } else {
        i32::MAX as u64
    };
    loop {
        forget_deleted_topics(broker, &topic_names, &mut wanted);
        let results = read_all(broker, &wanted, response_bytes_max).await;
        let total: u64 = results.iter().map(PartitionData::records_bytes).sum();
        let any_error = results.iter().any(|data| data.error_code != NONE);
        let now = Instant::now();
        let stop_waiting = broker.context.is_shutting_down() || draining.is_started();
        if total >= min_bytes || any_error || now >= deadline || stop_waiting {
            let per_topic = group_by_topic(&topic_names, &wanted, results);
            for (topic, partitions) in &per_topic {
                let bytes: u64 = partitions.iter().map(PartitionData::records_bytes).sum();
                if bytes > 0 {
                    broker.metrics.records_fetched(topic, bytes);
                }
            }
            return Ok(encode(header, NONE, per_topic));
        }
        // Wait until any partition gets data past what it has now (not merely past the fetch
        // offset: with min_bytes unmet, data already there must not end the wait), or the
        // deadline: one wait per shard owning some of the partitions.
        let remaining_ms = (deadline - now).as_millis() as u64 + 1;
        let waits: Vec<(PartitionId, u64)> = wanted
            .iter()
            .zip(&results)
            .filter_map(|(wanted, data)| {
                let id = wanted.id.clone()?;
                Some((id, wanted.fetch_offset.max(data.high_watermark) as u64))
            })
            .collect();
        let data = std::pin::pin!(broker.context.wait_for_data(waits, remaining_ms));
        let timeout = std::pin::pin!(glommio::timer::sleep(deadline - now));
        let shutdown = std::pin::pin!(broker.context.shutdown_requested());
        let drain = std::pin::pin!(draining.started());
        select(select(data, timeout), select(shutdown, drain)).await;
    }
}

/// Drops the partitions whose topic is gone (or was re-created) since the fetch started, so
/// that a waiting fetch does not re-open a deleted partition; they answer
/// UNKNOWN_TOPIC_OR_PARTITION.
fn forget_deleted_topics(broker: &Broker, topic_names: &[String], wanted: &mut [Wanted]) {
    let topics = broker.catalog.topics();
    for wanted in wanted.iter_mut().filter(|wanted| wanted.id.is_some()) {
        let current = topics.get(&topic_names[wanted.topic]).map(|topic| topic.id);
        if current != wanted.topic_id {
            wanted.id = None;
        }
    }
}

/// Reads every wanted partition, with the results of reading them in order sharing the
/// response byte limit (see [`engine::shard::ShardContext::read_many`]): the first partition
/// with data returns at least one batch whatever the limits (so a consumer always progresses),
/// later ones only what fits.
async fn read_all(
    broker: &Broker,
    wanted: &[Wanted],
    response_bytes_max: u64,
) -> Vec<PartitionData> {
    let reads: Vec<PartitionRead> = wanted
        .iter()
        .filter(|wanted| wanted.fetch_offset >= 0)
        .filter_map(|wanted| {
            Some(PartitionRead {
                partition: wanted.id.clone()?,
                offset: wanted.fetch_offset as u64,
                bytes_max: wanted.partition_max_bytes.max(0) as usize,
            })
        })
        .collect();
    let mut read = broker
        .context
        .read_many(&reads, response_bytes_max)
        .await
        .into_iter();
    wanted
        .iter()
        .map(|wanted| {
            if wanted.id.is_none() {
                return PartitionData::failed(
                    wanted.partition,
                    code(ResponseError::UnknownTopicOrPartition),
                );
            }
            if wanted.fetch_offset < 0 {
                return PartitionData::failed(
                    wanted.partition,
                    code(ResponseError::OffsetOutOfRange),
                );
            }
            match read.next().expect("one result per read") {
                Ok(read) => PartitionData {
                    partition: wanted.partition,
                    error_code: NONE,
                    high_watermark: read.high_watermark as i64,
                    log_start_offset: read.log_start_offset as i64,
                    records: read.data,
                },
                Err(error) => PartitionData::failed(wanted.partition, log_error_code(&error)),
            }
        })
        .collect()
}

fn group_by_topic<'a>(
    topic_names: &'a [String],
    wanted: &[Wanted],
    results: Vec<PartitionData>,
) -> Vec<(&'a str, Vec<PartitionData>)> {
    let mut grouped: Vec<(&str, Vec<PartitionData>)> = topic_names
        .iter()
        .map(|name| (name.as_str(), Vec::new()))
        .collect();
    for (wanted, data) in wanted.iter().zip(results) {
        grouped[wanted.topic].1.push(data);
    }
    grouped
}

/// Encodes a framed Fetch response (versions 4 to 12) whose records are memory or file parts.
pub fn encode(header: Header, error_code: i16, topics: Vec<(&str, Vec<PartitionData>)>) -> Reply {
    let version = header.api_version;
    debug_assert!(
        (4..=12).contains(&version),
        "Fetch v{version} is not encoded here"
    );
    let flexible = version >= 12;
    let mut encoder = PartsEncoder::default();
    let head = encoder.head();
    head.put_i32(0); // frame length, filled in below
    head.put_i32(header.correlation_id);
    if flexible {
        put_unsigned_varint(head, 0); // response header tagged fields
    }
    head.put_i32(0); // throttle_time_ms
    if version >= 7 {
        head.put_i16(error_code);
        head.put_i32(0); // session_id: no session
    }
    put_array_length(head, flexible, topics.len());
    for (name, partitions) in topics {
        let head = encoder.head();
        put_string(head, flexible, name);
        put_array_length(head, flexible, partitions.len());
        for data in partitions {
            let head = encoder.head();
            head.put_i32(data.partition);
            head.put_i16(data.error_code);
            head.put_i64(data.high_watermark);
            head.put_i64(data.high_watermark); // last_stable_offset: no transactions
            if version >= 5 {
                head.put_i64(data.log_start_offset);
            }
            put_array_length(head, flexible, 0); // aborted_transactions
            if version >= 11 {
                head.put_i32(-1); // preferred_read_replica
            }
            let length = data.records_bytes();
            if flexible {
                put_unsigned_varint(head, length + 1);
            } else {
                head.put_i32(length as i32);
            }
            encoder.records(data.records);
            if flexible {
                put_unsigned_varint(encoder.head(), 0); // partition tagged fields
            }
        }
        if flexible {
            put_unsigned_varint(encoder.head(), 0); // topic tagged fields
        }
    }
    if flexible {
        put_unsigned_varint(encoder.head(), 0); // response tagged fields
    }
    encoder.finish()
}

/// Builds a reply of memory runs with record data (memory or file ranges) between them.
#[derive(Default)]
struct PartsEncoder {
    parts: Vec<ResponsePart>,
    current: BytesMut,
    /// The first run, kept mutable to fill in the frame length at the end.
    first: Option<BytesMut>,
    length: u64,
}

impl PartsEncoder {
    fn head(&mut self) -> &mut BytesMut {
        &mut self.current
    }

    fn flush_head(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let run = std::mem::take(&mut self.current);
        self.length += run.len() as u64;
        if self.first.is_none() && self.parts.is_empty() {
            self.first = Some(run);
        } else {
            self.parts.push(ResponsePart::Memory(run.freeze()));
        }
    }

    fn records(&mut self, records: SendableData) {
        match records {
            SendableData::Empty => {}
            SendableData::Memory(batches) => {
                self.flush_head();
                for batch in batches {
                    self.length += batch.len() as u64;
                    self.parts.push(ResponsePart::Memory(batch));
                }
            }
            SendableData::File {
                file,
                position,
                length,
            } => {
                self.flush_head();
                self.length += length;
                self.parts.push(ResponsePart::File {
                    file,
                    position,
                    length,
                });
            }
        }
    }

    fn finish(mut self) -> Reply {
        self.flush_head();
        let mut first = self.first.take().expect("a response has a header");
        let frame_length = (self.length - 4) as i32;
        first[..4].copy_from_slice(&frame_length.to_be_bytes());
        let mut parts = Vec::with_capacity(self.parts.len() + 1);
        parts.push(ResponsePart::Memory(first.freeze()));
        parts.extend(self.parts);
        parts
    }
}

fn put_unsigned_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn put_array_length(out: &mut BytesMut, flexible: bool, length: usize) {
    if flexible {
        put_unsigned_varint(out, length as u64 + 1);
    } else {
        out.put_i32(length as i32);
    }
}

fn put_string(out: &mut BytesMut, flexible: bool, value: &str) {
    if flexible {
        put_unsigned_varint(out, value.len() as u64 + 1);
    } else {
        out.put_i16(value.len() as i16);
    }
    out.put_slice(value.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Buf, Bytes};
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    fn flatten(reply: Reply) -> Bytes {
        let mut all = Vec::new();
        for part in reply {
            match part {
                ResponsePart::Memory(bytes) => all.extend_from_slice(&bytes),
                ResponsePart::File { .. } => panic!("memory only in this test"),
            }
        }
        Bytes::from(all)
    }

    #[test]
    fn every_version_decodes_as_kafka_protocol_reads_it() {
        let batch_a = Bytes::from(engine::batch::build::batch_of(2, 7, 1));
        let batch_b = Bytes::from(engine::batch::build::batch_of(1, 3, 2));
        for version in 4..=12 {
            let header = Header {
                api_key: ApiKey::Fetch,
                api_version: version,
                correlation_id: 99,
            };
            let topics = vec![
                (
                    "orders",
                    vec![
                        PartitionData {
                            partition: 0,
                            error_code: NONE,
                            high_watermark: 10,
                            log_start_offset: 2,
                            records: SendableData::Memory(vec![batch_a.clone(), batch_b.clone()]),
                        },
                        PartitionData::failed(5, code(ResponseError::UnknownTopicOrPartition)),
                    ],
                ),
                ("empty", vec![]),
            ];
            let mut frame = flatten(encode(header, NONE, topics));
            let length = frame.get_i32();
            assert_eq!(length as usize, frame.len(), "v{version} frame length");
            let response_header =
                ResponseHeader::decode(&mut frame, ApiKey::Fetch.response_header_version(version))
                    .unwrap();
            assert_eq!(response_header.correlation_id, 99);
            let response = FetchResponse::decode(&mut frame, version).unwrap();
            assert!(frame.is_empty(), "v{version}: {} bytes left", frame.len());
            assert_eq!(response.responses.len(), 2);
            let orders = &response.responses[0];
            assert_eq!(&*orders.topic.0, "orders");
            let first = &orders.partitions[0];
            assert_eq!(first.high_watermark, 10);
            if version >= 5 {
                assert_eq!(first.log_start_offset, 2);
            }
            assert_eq!(
                first.records.as_deref(),
                Some(&[batch_a.clone(), batch_b.clone()].concat()[..])
            );
            assert_eq!(orders.partitions[1].error_code, 3);
            assert_eq!(orders.partitions[1].records.as_deref(), Some(&[][..]));
            assert!(response.responses[1].partitions.is_empty());
        }
    }
}
