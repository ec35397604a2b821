//! ListOffsets: a partition's earliest offset (-2), its high-water mark (-1; for
//! `read_committed`, version 2 on, the last stable offset), or the first offset whose timestamp
//! is at or after a given one (for `read_committed`, only below the last stable offset); in
//! version 0, up to `max_num_offsets`
//! offsets before a time, newest first (Kafka's "old-style offsets", Sarama's question).

use engine::acls::Operation;
use engine::shard::{IsolationLevel, OffsetQuery, PartitionId};
use futures::StreamExt;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use crate::api_versions::UNSUPPORTED_VERSION;
use crate::broker::{Broker, Client};
use crate::errors::{code, log_error_code, NONE};
use crate::old_versions::{
    ListOffsetsV0Partition, ListOffsetsV0PartitionResponse, ListOffsetsV0Request,
    ListOffsetsV0Response,
};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

/// Partitions of one request asked at once: their owning shards answer concurrently (a
/// consumer of 10 000 partitions asks for all of them in one request, and one shard round trip
/// after another took ~2 s), while the queries in flight stay bounded.
const PARTITIONS_IN_FLIGHT_MAX: usize = 64;

pub async fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let topics = broker.catalog.topics();
    // Version 2 on; 1 is READ_COMMITTED (0 before version 2).
    let isolation = if request.isolation_level == 1 {
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    };
    let mut responses = Vec::with_capacity(request.topics.len());
    for requested in request.topics {
        let authorized = broker.authorized_on_topic(client, Operation::Describe, &requested.name.0);
        let topic = topics.get(&requested.name.0);
        let name = requested.name.0.as_str();
        let partitions = futures::stream::iter(requested.partitions)
            .map(|wanted| async move {
                let index = wanted.partition_index;
                let response = ListOffsetsPartitionResponse::default()
                    .with_partition_index(index)
                    .with_timestamp(-1)
                    .with_offset(-1);
                // The leader epoch exists from version 4.
                let response = if api_version >= 4 {
                    response.with_leader_epoch(0)
                } else {
                    response
                };
                let exists = topic.is_some_and(|topic| topic.has_partition(index));
                let query = match wanted.timestamp {
                    LATEST => Some(OffsetQuery::Latest),
                    EARLIEST => Some(OffsetQuery::Earliest),
                    timestamp if timestamp >= 0 => Some(OffsetQuery::Timestamp(timestamp)),
                    _ => None,
                };
                match (exists, query) {
                    _ if !authorized => {
                        response.with_error_code(code(ResponseError::TopicAuthorizationFailed))
                    }
                    (false, _) => {
                        response.with_error_code(code(ResponseError::UnknownTopicOrPartition))
                    }
                    (true, None) => response.with_error_code(code(ResponseError::InvalidRequest)),
                    (true, Some(query)) => {
                        let partition = PartitionId::new(name, index as u32);
                        match broker
                            .context
                            .list_offset(partition, query, isolation)
                            .await
                        {
                            Ok(listed) => response
                                .with_error_code(NONE)
                                // No record at or after the timestamp: offset -1, as Kafka says.
                                .with_offset(listed.offset.map_or(-1, |offset| offset as i64))
                                .with_timestamp(listed.timestamp_ms.unwrap_or(-1)),
                            Err(error) => response.with_error_code(log_error_code(&error)),
                        }
                    }
                }
            })
            // In the request's order.
            .buffered(PARTITIONS_IN_FLIGHT_MAX)
            .collect::<Vec<_>>()
            .await;
        responses.push(
            ListOffsetsTopicResponse::default()
                .with_name(requested.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(responses)
}

/// Version 0: for each partition, up to `max_num_offsets` of the offsets where segments start
/// and the log end, written at or before the timestamp, newest first (see
/// `engine::log::PartitionLog::offsets_before`). A negative timestamp other than -1 and -2 is
/// answered UNSUPPORTED_VERSION, as Kafka answers it in this version.
pub async fn handle_v0(
    broker: &Broker,
    client: &Client,
    request: ListOffsetsV0Request,
) -> ListOffsetsV0Response {
    let topics = broker.catalog.topics();
    let mut responses = Vec::with_capacity(request.topics.len());
    for (name, partitions) in request.topics {
        let authorized = broker.authorized_on_topic(client, Operation::Describe, &name.0);
        let topic = topics.get(name.0.as_str());
        let topic_name = name.0.as_str();
        let answered = futures::stream::iter(partitions)
            .map(|wanted: ListOffsetsV0Partition| async move {
                let index = wanted.partition_index;
                let answer = |error_code, old_style_offsets| ListOffsetsV0PartitionResponse {
                    partition_index: index,
                    error_code,
                    old_style_offsets,
                };
                if !authorized {
                    return answer(code(ResponseError::TopicAuthorizationFailed), Vec::new());
                }
                if !topic.is_some_and(|topic| topic.has_partition(index)) {
                    return answer(code(ResponseError::UnknownTopicOrPartition), Vec::new());
                }
                if wanted.timestamp_ms < EARLIEST {
                    return answer(UNSUPPORTED_VERSION, Vec::new());
                }
                // Never more than the log has candidates; a count of 0 or less asks for none.
                let count_max = usize::try_from(wanted.max_num_offsets).unwrap_or(0);
                let partition = PartitionId::new(topic_name, index as u32);
                match broker
                    .context
                    .offsets_before(partition, wanted.timestamp_ms, count_max)
                    .await
                {
                    Ok(offsets) => answer(
                        NONE,
                        offsets.into_iter().map(|offset| offset as i64).collect(),
                    ),
                    Err(error) => answer(log_error_code(&error), Vec::new()),
                }
            })
            .buffered(PARTITIONS_IN_FLIGHT_MAX)
            .collect::<Vec<_>>()
            .await;
        responses.push((name, answered));
    }
    ListOffsetsV0Response { topics: responses }
}
