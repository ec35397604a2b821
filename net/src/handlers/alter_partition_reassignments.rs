//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455): moving partitions to
//! other brokers, and seeing which are moving. In a cluster the controller records each move
//! and the partition's Raft group carries it out one membership change at a time; the
//! request is answered once the move is recorded, not once it is done, as Kafka's is.
//!
//! A broker running alone has one broker to place replicas on: a move to itself changes
//! nothing, any other is INVALID_REPLICA_ASSIGNMENT, and nothing is ever moving.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::errors::{code, NONE};

pub async fn alter(
    broker: &Broker,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut responses = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let replicas = partition
                .replicas
                .map(|replicas| replicas.into_iter().map(|id| id.0).collect());
            let outcome = reassign(broker, &topic.name, partition.partition_index, replicas).await;
            let response = ReassignablePartitionResponse::default()
                .with_partition_index(partition.partition_index);
            partitions.push(match outcome {
                Ok(()) => response.with_error_code(NONE),
                Err((error_code, message)) => response
                    .with_error_code(error_code)
                    .with_error_message(Some(str_bytes(message))),
            });
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    AlterPartitionReassignmentsResponse::default()
        .with_error_code(NONE)
        .with_responses(responses)
}

/// One partition's move (`None`: its cancellation).
async fn reassign(
    broker: &Broker,
    topic: &str,
    partition: i32,
    replicas: Option<Vec<i32>>,
) -> Result<(), (i16, String)> {
    let unknown = || {
        (
            code(ResponseError::UnknownTopicOrPartition),
            format!("topic '{topic}' has no partition {partition}"),
        )
    };
    let partition = u32::try_from(partition).map_err(|_| unknown())?;
    if let Some(cluster) = &broker.cluster {
        return cluster
            .reassign(topic.to_owned(), partition, replicas)
            .await
            .map_err(|error| (error.code, error.message));
    }
    let known = broker
        .catalog
        .catalog()
        .topics()
        .get(topic)
        .is_some_and(|found| partition < found.partitions);
    if !known {
        return Err(unknown());
    }
    let own = broker.config.node_id;
    match replicas {
        None => Err((
            code(ResponseError::NoReassignmentInProgress),
            format!("partition {partition} of topic '{topic}' is not being moved"),
        )),
        Some(replicas) if replicas == [own] => Ok(()),
        Some(replicas) => Err((
            code(ResponseError::InvalidReplicaAssignment),
            format!(
                "this broker runs alone: its only possible replicas are [{own}], not {replicas:?}"
            ),
        )),
    }
}

pub fn list(
    broker: &Broker,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let moves = broker
        .cluster
        .as_ref()
        .map(|cluster| cluster.reassignments())
        .unwrap_or_default();
    let asked = |topic: &str, partition: u32| match &request.topics {
        None => true,
        Some(topics) => topics.iter().any(|asked| {
            asked.name.as_str() == topic
                && asked
                    .partition_indexes
                    .iter()
                    .any(|index| i64::from(*index) == i64::from(partition))
        }),
    };
    let brokers = |ids: &[i32]| ids.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for moving in moves
        .iter()
        .filter(|moving| asked(&moving.topic, moving.partition))
    {
        let partition = OngoingPartitionReassignment::default()
            .with_partition_index(i32::try_from(moving.partition).unwrap_or(i32::MAX))
            .with_replicas(brokers(&moving.replicas))
            .with_adding_replicas(brokers(&moving.adding))
            .with_removing_replicas(brokers(&moving.removing));
        match topics.last_mut() {
            Some(last) if last.name.as_str() == moving.topic => last.partitions.push(partition),
            _ => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(str_bytes(moving.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default()
        .with_error_code(NONE)
        .with_topics(topics)
}
