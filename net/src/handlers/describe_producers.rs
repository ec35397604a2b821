//! DescribeProducers (KIP-664): the producers a partition's log remembers (their epoch, last
//! sequence, last marker's coordinator epoch, and the first offset of their open transaction),
//! answered by its leader from the producer table; what `kafka-transactions.sh
//! describe-producers` shows to find a hanging transaction.

use engine::acls::Operation;
use engine::shard::PartitionId;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Client};
use crate::errors::{code, log_error_code, NONE};

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = broker.catalog.topics();
    let mut results = Vec::with_capacity(request.topics.len());
    for requested in request.topics {
        let topic = topics.get(&requested.name.0);
        let authorized = broker.authorized_on_topic(client, Operation::Read, &requested.name.0);
        let mut partitions = Vec::with_capacity(requested.partition_indexes.len());
        for index in requested.partition_indexes {
            let result = PartitionResponse::default().with_partition_index(index);
            if !authorized {
                partitions
                    .push(result.with_error_code(code(ResponseError::TopicAuthorizationFailed)));
                continue;
            }
            if !topic.is_some_and(|topic| topic.has_partition(index)) {
                partitions
                    .push(result.with_error_code(code(ResponseError::UnknownTopicOrPartition)));
                continue;
            }
            let partition = PartitionId::new(requested.name.0.as_str(), index as u32);
            let result = match broker.context.active_producers(partition).await {
                Ok(producers) => result.with_error_code(NONE).with_active_producers(
                    producers
                        .iter()
                        .map(|producer| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(producer.producer_id))
                                .with_producer_epoch(i32::from(producer.producer_epoch))
                                .with_last_sequence(producer.last_sequence)
                                .with_last_timestamp(producer.last_append_ms)
                                .with_coordinator_epoch(producer.coordinator_epoch)
                                .with_current_txn_start_offset(
                                    producer
                                        .transaction_first_offset
                                        .map_or(-1, |offset| offset as i64),
                                )
                        })
                        .collect(),
                ),
                Err(error) => result.with_error_code(log_error_code(&error)),
            };
            partitions.push(result);
        }
        results.push(
            TopicResponse::default()
                .with_name(requested.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(results)
}
