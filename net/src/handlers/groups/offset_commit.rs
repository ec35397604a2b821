//! OffsetCommit: a member stores the group's offsets. Partitions of topics that do not exist
//! are answered UNKNOWN_TOPIC_OR_PARTITION here, as in Kafka; the rest go to the coordinator,
//! which checks the member and generation (not the member's assignment, which the broker
//! cannot read in general, as in Kafka's classic protocol).

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::coordinator::{call, error_code};
use super::partition_results::answer_partitions;
use crate::broker::Broker;
use crate::errors::code;
use crate::groups::{OffsetCommit, OffsetCommitPartition, TopicPartition};
use crate::handlers::fields::optional_string;

pub async fn handle(
    broker: &Broker,
    version: i16,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let topics = broker.catalog.topics();
    // Partitions of topics that do not exist are answered here; the rest go to the group.
    let mut unknown: Vec<TopicPartition> = Vec::new();
    let mut partitions: Vec<OffsetCommitPartition> = Vec::new();
    for topic in &request.topics {
        let known = topics.get(topic.name.0.as_str());
        for partition in &topic.partitions {
            let topic_partition = TopicPartition {
                topic: topic.name.0.to_string(),
                partition: partition.partition_index,
            };
            if !known.is_some_and(|known| known.has_partition(partition.partition_index)) {
                unknown.push(topic_partition);
                continue;
            }
            partitions.push(OffsetCommitPartition {
                partition: topic_partition,
                offset: partition.committed_offset,
                leader_epoch: partition.committed_leader_epoch,
                metadata: optional_string(partition.committed_metadata.clone()),
            });
        }
    }
    let mut codes: BTreeMap<TopicPartition, i16> = unknown
        .into_iter()
        .map(|partition| (partition, code(ResponseError::UnknownTopicOrPartition)))
        .collect();
    let requested: Vec<TopicPartition> = partitions
        .iter()
        .map(|commit| commit.partition.clone())
        .collect();
    if !partitions.is_empty() {
        let commit = OffsetCommit {
            api_version: version,
            group_id: group_id.clone(),
            generation_id: request.generation_id_or_member_epoch,
            member_id: request.member_id.to_string(),
            group_instance_id: optional_string(request.group_instance_id.clone()),
            partitions,
        };
        match call(broker, &group_id, commit).await {
            Ok(results) => {
                for (partition, result) in results {
                    codes.insert(partition, error_code(&result));
                }
            }
            Err(error) => {
                for partition in requested {
                    codes.insert(partition, error.code());
                }
            }
        }
    }
    let topics = request.topics.into_iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|p| p.partition_index).collect();
        (topic.name, partitions)
    });
    OffsetCommitResponse::default().with_topics(answer_partitions(
        topics,
        &codes,
        |index, code| {
            OffsetCommitResponsePartition::default()
                .with_partition_index(index)
                .with_error_code(code)
        },
        |name, partitions| {
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        },
    ))
}
