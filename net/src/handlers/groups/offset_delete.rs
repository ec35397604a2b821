//! OffsetDelete: removes a group's committed offsets of some partitions (refused for
//! partitions the group is still subscribed to), each partition answered on its own.

use engine::acls::Operation;
use std::collections::BTreeMap;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::coordinator::{call, error_code};
use super::partition_results::answer_partitions;
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::groups::shard::DeleteOffsets;
use crate::groups::TopicPartition;

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    // Kafka's checks: DELETE on the group, then READ on each topic.
    if !broker.authorized_on_group(client, Operation::Delete, &group_id) {
        return OffsetDeleteResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let topic_refused: BTreeMap<TopicPartition, i16> = request
        .topics
        .iter()
        .filter(|topic| !broker.authorized_on_topic(client, Operation::Read, &topic.name.0))
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| {
                (
                    TopicPartition {
                        topic: topic.name.0.to_string(),
                        partition: partition.partition_index,
                    },
                    kafka_protocol::ResponseError::TopicAuthorizationFailed.code(),
                )
            })
        })
        .collect();
    let partitions: Vec<TopicPartition> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| TopicPartition {
                topic: topic.name.0.to_string(),
                partition: partition.partition_index,
            })
        })
        .filter(|partition| !topic_refused.contains_key(partition))
        .collect();
    let delete = DeleteOffsets {
        group_id: group_id.clone(),
        partitions,
    };
    let results = match call(broker, &group_id, delete).await {
        Ok(results) => results,
        Err(error) => return OffsetDeleteResponse::default().with_error_code(error.code()),
    };
    let mut codes: BTreeMap<TopicPartition, i16> = results
        .into_iter()
        .map(|(partition, result)| (partition, error_code(&result)))
        .collect();
    codes.extend(topic_refused);
    let topics = request.topics.into_iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|p| p.partition_index).collect();
        (topic.name, partitions)
    });
    OffsetDeleteResponse::default()
        .with_error_code(NONE)
        .with_topics(answer_partitions(
            topics,
            &codes,
            |index, code| {
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(index)
                    .with_error_code(code)
            },
            |name, partitions| {
                OffsetDeleteResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            },
        ))
}
