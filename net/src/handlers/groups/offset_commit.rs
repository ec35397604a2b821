//! OffsetCommit: a member stores the group's offsets. Partitions of topics that do not exist
//! are answered UNKNOWN_TOPIC_OR_PARTITION here, as in Kafka; the rest go to the coordinator,
//! which checks the member and generation (not the member's assignment, which the broker
//! cannot read in general, as in Kafka's classic protocol). TxnOffsetCommit shares this
//! ([`commit_partitions`]).

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use engine::acls::Operation;

use super::coordinator::{call, error_code};
use super::partition_results::answer_partitions;
use crate::broker::{Broker, Client};
use crate::errors::code;
use crate::groups::shard::GroupRequest;
use crate::groups::{OffsetCommit, OffsetCommitPartition, PartitionResults, TopicPartition};
use crate::handlers::fields::optional_string;

pub async fn handle(
    broker: &Broker,
    version: i16,
    client: &Client,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let commits = request.topics.iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|partition| {
            (
                partition.partition_index,
                partition.committed_offset,
                partition.committed_leader_epoch,
                optional_string(partition.committed_metadata.clone()),
            )
        });
        (topic.name.0.as_str(), partitions.collect())
    });
    let codes = commit_partitions(broker, client, &group_id, commits, |partitions| {
        OffsetCommit {
            api_version: version,
            group_id: group_id.clone(),
            generation_id: request.generation_id_or_member_epoch,
            member_id: request.member_id.to_string(),
            group_instance_id: optional_string(request.group_instance_id.clone()),
            partitions,
        }
    })
    .await;
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

/// One partition's commit as a request carries it: index, offset, leader epoch, metadata.
pub(super) type RequestedCommit = (i32, i64, i32, Option<String>);

/// The commits of an OffsetCommit or a TxnOffsetCommit, by topic: those of topics or
/// partitions that do not exist are answered UNKNOWN_TOPIC_OR_PARTITION here, the rest go to
/// the group's coordinator as the request `request` makes of them. Returns each partition's
/// code.
pub(super) async fn commit_partitions<'a, Request>(
    broker: &Broker,
    client: &Client,
    group_id: &str,
    commits: impl Iterator<Item = (&'a str, Vec<RequestedCommit>)>,
    request: impl FnOnce(Vec<OffsetCommitPartition>) -> Request,
) -> BTreeMap<TopicPartition, i16>
where
    Request: GroupRequest<Answer = PartitionResults>,
{
    let topics = broker.catalog.topics();
    let mut codes: BTreeMap<TopicPartition, i16> = BTreeMap::new();
    let mut partitions: Vec<OffsetCommitPartition> = Vec::new();
    // Kafka's order: the group's READ, then each topic's.
    let group_authorized = broker.authorized_on_group(client, Operation::Read, group_id);
    for (topic, commits) in commits {
        let known = topics.get(topic);
        let topic_authorized = broker.authorized_on_topic(client, Operation::Read, topic);
        for (index, offset, leader_epoch, metadata) in commits {
            let topic_partition = TopicPartition {
                topic: topic.to_owned(),
                partition: index,
            };
            let refused = match (group_authorized, topic_authorized) {
                (false, _) => Some(ResponseError::GroupAuthorizationFailed),
                (true, false) => Some(ResponseError::TopicAuthorizationFailed),
                (true, true) => None,
            };
            if let Some(refused) = refused {
                codes.insert(topic_partition, code(refused));
                continue;
            }
            if !known.is_some_and(|known| known.has_partition(index)) {
                codes.insert(
                    topic_partition,
                    code(ResponseError::UnknownTopicOrPartition),
                );
                continue;
            }
            partitions.push(OffsetCommitPartition {
                partition: topic_partition,
                offset,
                leader_epoch,
                metadata,
            });
        }
    }
    if partitions.is_empty() {
        return codes;
    }
    let requested: Vec<TopicPartition> = partitions
        .iter()
        .map(|commit| commit.partition.clone())
        .collect();
    match call(broker, group_id, request(partitions)).await {
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
    codes
}
