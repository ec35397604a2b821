//! DeleteRecords: moves partitions' log start offsets up (-1: to the high-water mark);
//! whole segments below the new start are deleted.

use engine::acls::Operation;
use engine::catalog::is_internal_topic;
use engine::shard::PartitionId;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Client};
use crate::errors::{code, log_error_code, NONE};

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let topics = broker.catalog.topics();
    let mut results = Vec::with_capacity(request.topics.len());
    for requested in request.topics {
        let authorized = broker.authorized_on_topic(client, Operation::Delete, &requested.name.0);
        let topic = topics.get(&requested.name.0);
        let mut partitions = Vec::with_capacity(requested.partitions.len());
        for wanted in requested.partitions {
            let index = wanted.partition_index;
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(index)
                .with_low_watermark(-1);
            let exists = topic.is_some_and(|topic| topic.has_partition(index));
            let result = if !authorized {
                result.with_error_code(code(ResponseError::TopicAuthorizationFailed))
            } else if !exists {
                result.with_error_code(code(ResponseError::UnknownTopicOrPartition))
            } else if is_internal_topic(&requested.name.0) {
                result.with_error_code(code(ResponseError::InvalidTopicException))
            } else if wanted.offset < -1 {
                result.with_error_code(code(ResponseError::OffsetOutOfRange))
            } else {
                let partition = PartitionId::new(requested.name.0.as_str(), index as u32);
                let offset = u64::try_from(wanted.offset).ok();
                match broker.context.delete_records(partition, offset).await {
                    Ok(log_start_offset) => result
                        .with_error_code(NONE)
                        .with_low_watermark(log_start_offset as i64),
                    Err(error) => result.with_error_code(log_error_code(&error)),
                }
            };
            partitions.push(result);
        }
        results.push(
            DeleteRecordsTopicResult::default()
                .with_name(requested.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(results)
}
