//! Produce: validate each partition's record batches, append them (the batches are stored as
//! sent, compressed or not; the broker fills in offsets and leader epoch), and answer as acks
//! asks: acks=0 gets no response at all, acks=1 once the batch is in the segment file,
//! acks=all once an `fdatasync` covers it.
//!
//! Appends are submitted while the request is started, in request order, and awaited
//! afterwards (see [`crate::broker`]): a connection's pipelined produce requests land in each
//! partition in the order they were sent, which the idempotent producer's sequence numbers rely
//! on; the engine checks those sequences in the same step that assigns offsets.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use engine::batch::{self, BatchHeader};
use engine::catalog::is_internal_topic;
use engine::shard::{AppendPending, Durability, PartitionId};
use engine::topic_config;
use futures::future::join_all;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::{Broker, Header, PendingReply, Reply};
use crate::errors::{batch_error_code, code, log_error_code, NONE};

/// Where one partition's answer comes from.
enum Outcome {
    Failed {
        error_code: i16,
        message: String,
    },
    /// Each batch's size and its append.
    Appending(Vec<(usize, AppendPending)>),
}

pub async fn start(broker: Rc<Broker>, header: Header, request: ProduceRequest) -> PendingReply {
    let acks = request.acks;
    let durability = match acks {
        0 => Some(Durability::Assigned),
        1 => Some(Durability::Written),
        -1 => Some(Durability::Durable),
        _ => None,
    };
    let transactional = request.transactional_id.is_some();
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let name = topic_data.name.0;
        let topic = broker.topic_or_create(&name, true);
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for partition_data in topic_data.partition_data {
            let index = partition_data.index;
            let failed = |error_code: i16, message: String| Outcome::Failed {
                error_code,
                message,
            };
            let outcome = match (&topic, durability) {
                (_, None) => failed(
                    code(ResponseError::InvalidRequiredAcks),
                    format!("acks={acks} is not one of 0, 1, -1 (all)"),
                ),
                _ if transactional => failed(
                    code(ResponseError::TransactionalIdAuthorizationFailed),
                    "transactions are not supported by this broker".into(),
                ),
                (Err(error), _) => failed(error.code(), error.to_string()),
                (Ok(_), Some(_)) if is_internal_topic(&name) => failed(
                    code(ResponseError::InvalidTopicException),
                    format!("topic '{name}' is internal to the broker: clients cannot write it"),
                ),
                (Ok(topic), Some(_)) if !topic.has_partition(index) => failed(
                    code(ResponseError::UnknownTopicOrPartition),
                    format!("topic '{name}' has no partition {index}"),
                ),
                (Ok(topic), Some(durability)) => {
                    let partition = PartitionId::new(name.as_str(), index as u32);
                    let batch_bytes_max =
                        || topic_config::apply(&broker.config.log, &topic.configs).batch_bytes_max;
                    match split_batches(partition_data.records.unwrap_or_default(), batch_bytes_max)
                    {
                        Err((error_code, message)) => failed(error_code, message),
                        Ok(batches) => {
                            let mut pending = Vec::with_capacity(batches.len());
                            for batch in batches {
                                let size = batch.len();
                                let append = broker
                                    .context
                                    .submit_append(partition.clone(), batch, 0, durability)
                                    .await;
                                pending.push((size, append));
                            }
                            Outcome::Appending(pending)
                        }
                    }
                }
            };
            partitions.push((index, outcome));
        }
        topics.push((name, partitions));
    }
    Box::pin(async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let mut partition_responses = Vec::with_capacity(partitions.len());
            for (index, outcome) in partitions {
                partition_responses
                    .push(answer(&broker, header.api_version, &name, index, outcome).await);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(kafka_protocol::messages::TopicName(name))
                    .with_partition_responses(partition_responses),
            );
        }
        if acks == 0 {
            return Ok(Reply::new());
        }
        header.reply(&ProduceResponse::default().with_responses(responses))
    })
}

async fn answer(
    broker: &Broker,
    api_version: i16,
    topic: &str,
    index: i32,
    outcome: Outcome,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_log_append_time_ms(-1);
    let failed = |error_code: i16, message: String| {
        let failed = response
            .clone()
            .with_error_code(error_code)
            .with_base_offset(-1);
        // The message field exists from version 8.
        if api_version >= 8 {
            failed.with_error_message(Some(str_bytes(message)))
        } else {
            failed
        }
    };
    match outcome {
        Outcome::Failed {
            error_code,
            message,
        } => failed(error_code, message),
        Outcome::Appending(pending) => {
            let mut first = None;
            let mut log_start_offset = -1;
            let (sizes, appends): (Vec<usize>, Vec<AppendPending>) = pending.into_iter().unzip();
            for (size, result) in sizes.into_iter().zip(join_all(appends).await) {
                match result {
                    Ok(appended) => {
                        let records = appended.last_offset - appended.base_offset + 1;
                        broker.metrics.batch_produced(topic, size as u64, records);
                        first.get_or_insert(appended.base_offset as i64);
                        log_start_offset = appended.log_start_offset as i64;
                    }
                    Err(error) => return failed(log_error_code(&error), error.to_string()),
                }
            }
            let response = response
                .with_error_code(NONE)
                .with_base_offset(first.unwrap_or(-1));
            // The log start offset exists from version 5.
            if api_version >= 5 {
                response.with_log_start_offset(log_start_offset)
            } else {
                response
            }
        }
    }
}

/// Splits a partition's records into batches, each an owned buffer the engine can stamp. A
/// single batch (what clients send) is validated by the append itself; several are all
/// validated first, against the topic's largest batch (`batch_bytes_max`, asked for only
/// then), so that a bad one leaves the partition untouched.
fn split_batches(
    records: Bytes,
    batch_bytes_max: impl FnOnce() -> usize,
) -> Result<Vec<BytesMut>, (i16, String)> {
    let corrupt = |message: String| (code(ResponseError::CorruptMessage), message);
    if records.is_empty() {
        return Err(corrupt("the partition's records are empty".into()));
    }
    let mut pieces = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let header = BatchHeader::parse(&rest).ok_or_else(|| {
            corrupt(format!(
                "{} trailing bytes do not hold a batch header",
                rest.len()
            ))
        })?;
        let size = header.size_bytes as usize;
        if size < batch::BATCH_HEADER_BYTES || size > rest.len() {
            return Err(corrupt(format!(
                "a batch claims {size} bytes where {} remain",
                rest.len()
            )));
        }
        if header.is_control() {
            // Commit and abort markers are the broker's to write, never a client's.
            return Err((
                code(ResponseError::InvalidRecord),
                "control batches may not be produced by clients".into(),
            ));
        }
        pieces.push(rest.split_to(size));
    }
    if pieces.len() > 1 {
        let batch_bytes_max = batch_bytes_max();
        for piece in &pieces {
            batch::validate(piece, batch_bytes_max)
                .map_err(|error| (batch_error_code(&error), error.to_string()))?;
        }
    }
    // The engine stamps offsets in place, so it needs the bytes to itself.
    Ok(pieces
        .into_iter()
        .map(|piece| BytesMut::from(&piece[..]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::batch::build::batch_of;

    #[test]
    fn records_split_into_whole_batches_or_are_refused() {
        let one = batch_of(3, 10, 1);
        let two = batch_of(2, 5, 2);
        let both = Bytes::from([one.clone(), two.clone()].concat());
        let split = split_batches(both.clone(), || 1 << 20).unwrap();
        assert_eq!(split.len(), 2);
        assert_eq!(&split[0][..], &one[..]);
        assert_eq!(&split[1][..], &two[..]);

        let corrupt = code(ResponseError::CorruptMessage);
        assert_eq!(
            split_batches(Bytes::new(), || 1 << 20).unwrap_err().0,
            corrupt
        );
        assert_eq!(
            split_batches(both.slice(..both.len() - 1), || 1 << 20)
                .unwrap_err()
                .0,
            corrupt,
            "a cut batch"
        );
        let mut flipped = both.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            split_batches(Bytes::from(flipped), || 1 << 20)
                .unwrap_err()
                .0,
            corrupt,
            "a bad CRC in the second batch refuses both"
        );
        assert_eq!(
            split_batches(both, || 20).unwrap_err().0,
            code(ResponseError::MessageTooLarge)
        );
    }
}
