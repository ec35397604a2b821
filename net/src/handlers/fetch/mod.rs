//! Fetch: whole batches from each requested partition, within the partition and response byte
//! limits, long-polling (`max_wait_ms`, `min_bytes`) on the partitions' own wake-ups rather than
//! a timer loop. Batches still in the tail cache are sent from memory; older ones as ranges of
//! the segment file, which the connection splices to the socket without copying them.
//!
//! A topic the client may not READ is answered TOPIC_AUTHORIZATION_FAILED on each of its
//! partitions, as Kafka answers a consumer's fetch.
//!
//! The response is encoded by hand (`response`). Fetch sessions (KIP-227) are not kept: every
//! response says session 0, which tells the client to keep sending full requests, as the
//! protocol allows.

mod response;

use std::time::{Duration, Instant};

use engine::acls::Operation;
use engine::shard::{IsolationLevel, PartitionId, PartitionRead};
use futures::future::select;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Client, Header, Reply};
use crate::errors::{code, log_error_code, NONE};
use crate::handover::Draining;
use response::{encode, PartitionData};

/// One requested partition.
struct Wanted {
    topic: usize,
    partition: i32,
    /// `Some` while the topic and partition exist (and the client may READ the topic).
    id: Option<PartitionId>,
    /// Whether the client may READ the topic (Kafka answers TOPIC_AUTHORIZATION_FAILED
    /// otherwise, whether it exists or not).
    authorized: bool,
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
    client: &Client,
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
        let authorized = broker.authorized_on_topic(client, Operation::Read, &name);
        let topic = topics_table.get(&name).filter(|_| authorized);
        for fetch_partition in &fetch_topic.partitions {
            let partition = fetch_partition.partition;
            let exists = topic.is_some_and(|topic| topic.has_partition(partition));
            wanted.push(Wanted {
                topic: topic_names.len(),
                partition,
                id: exists.then(|| PartitionId::new(name.as_str(), partition as u32)),
                authorized,
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
    // Versions below 4 (not served here) have no isolation level; 1 is READ_COMMITTED.
    let isolation = if request.isolation_level == 1 {
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    };
    loop {
        forget_deleted_topics(broker, &topic_names, &mut wanted);
        let results = read_all(broker, &wanted, isolation, response_bytes_max).await;
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
        // deadline: one wait per shard owning some of the partitions. What "has now" means
        // follows the isolation: the high-water mark, or the last stable offset.
        let remaining_ms = (deadline - now).as_millis() as u64 + 1;
        let waits: Vec<(PartitionId, u64)> = wanted
            .iter()
            .zip(&results)
            .filter_map(|(wanted, data)| {
                let id = wanted.id.clone()?;
                let visible_end = match isolation {
                    IsolationLevel::ReadUncommitted => data.high_watermark,
                    IsolationLevel::ReadCommitted => data.last_stable_offset,
                };
                Some((id, wanted.fetch_offset.max(visible_end) as u64))
            })
            .collect();
        let data = std::pin::pin!(broker.context.wait_for_data(waits, isolation, remaining_ms));
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
    isolation: IsolationLevel,
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
                isolation,
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
            if !wanted.authorized {
                return PartitionData::failed(
                    wanted.partition,
                    code(ResponseError::TopicAuthorizationFailed),
                );
            }
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
                    last_stable_offset: read.last_stable_offset as i64,
                    log_start_offset: read.log_start_offset as i64,
                    aborted_transactions: read.aborted_transactions,
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
