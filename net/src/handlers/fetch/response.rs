//! The Fetch response encoded by hand, versions 4 to 12: the one hot path where
//! kafka-protocol's encoder would need the records in memory, while here they stay memory or
//! file parts (the connection splices the latter). Checked against kafka-protocol's decoder in
//! the tests.

use bytes::{BufMut, BytesMut};
use engine::log::AbortedTransaction;
use engine::shard::SendableData;

use crate::broker::{Header, Reply, ResponsePart};

/// What one partition answers.
#[derive(Debug)]
pub(super) struct PartitionData {
    pub(super) partition: i32,
    pub(super) error_code: i16,
    pub(super) high_watermark: i64,
    pub(super) last_stable_offset: i64,
    pub(super) log_start_offset: i64,
    /// `None` (null in the response) for a `read_uncommitted` fetch, as Kafka answers.
    pub(super) aborted_transactions: Option<Vec<AbortedTransaction>>,
    pub(super) records: SendableData,
}

impl PartitionData {
    pub(super) fn failed(partition: i32, error_code: i16) -> PartitionData {
        PartitionData {
            partition,
            error_code,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted_transactions: None,
            records: SendableData::Empty,
        }
    }

    pub(super) fn records_bytes(&self) -> u64 {
        self.records.length()
    }
}

/// Encodes a framed Fetch response (versions 4 to 12) whose records are memory or file parts.
pub(super) fn encode(
    header: Header,
    error_code: i16,
    topics: Vec<(&str, Vec<PartitionData>)>,
) -> Reply {
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
            head.put_i64(data.last_stable_offset);
            if version >= 5 {
                head.put_i64(data.log_start_offset);
            }
            match &data.aborted_transactions {
                None if flexible => put_unsigned_varint(head, 0),
                None => head.put_i32(-1),
                Some(aborted) => {
                    put_array_length(head, flexible, aborted.len());
                    for transaction in aborted {
                        head.put_i64(transaction.producer_id);
                        head.put_i64(transaction.first_offset as i64);
                        if flexible {
                            put_unsigned_varint(head, 0); // aborted transaction tagged fields
                        }
                    }
                }
            }
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
    use kafka_protocol::ResponseError;

    use crate::errors::{code, NONE};

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
                            last_stable_offset: 8,
                            log_start_offset: 2,
                            aborted_transactions: Some(vec![AbortedTransaction {
                                producer_id: 42,
                                first_offset: 3,
                                last_offset: 6,
                                last_stable_offset: 7,
                            }]),
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
            assert_eq!(first.last_stable_offset, 8);
            let aborted = first.aborted_transactions.as_ref().expect("listed");
            assert_eq!((aborted[0].producer_id.0, aborted[0].first_offset), (42, 3));
            assert!(
                orders.partitions[1].aborted_transactions.is_none(),
                "null when read_uncommitted or failed"
            );
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
