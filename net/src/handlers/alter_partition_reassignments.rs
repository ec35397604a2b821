//! AlterPartitionReassignments (KIP-455): moving partitions to other brokers. In a cluster the
//! controller records each move (`Cluster::reassign`) and the partition's Raft group carries
//! it out one membership change at a time; the request is answered once the move is recorded,
//! not once it is done, as Kafka's is.
//!
//! A broker running alone has one broker to place replicas on: a move to itself changes
//! nothing, any other is INVALID_REPLICA_ASSIGNMENT.

use engine::acls::Operation;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Client};
use crate::errors::{code, Failure, NONE};

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    if !broker.authorized_on_cluster(client, Operation::Alter) {
        return AlterPartitionReassignmentsResponse::default()
            .with_error_code(code(ResponseError::ClusterAuthorizationFailed));
    }
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
            let (error_code, error_message) = Failure::fields(outcome);
            partitions.push(
                response
                    .with_error_code(error_code)
                    .with_error_message(error_message),
            );
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
) -> Result<(), Failure> {
    let unknown = || {
        Failure::new(
            code(ResponseError::UnknownTopicOrPartition),
            format!("topic '{topic}' has no partition {partition}"),
        )
    };
    let partition = u32::try_from(partition).map_err(|_| unknown())?;
    if let Some(cluster) = &broker.cluster {
        return Ok(cluster
            .reassign(topic.to_owned(), partition, replicas)
            .await?);
    }
    let known = broker
        .catalog
        .topics()
        .get(topic)
        .is_some_and(|found| partition < found.partitions);
    if !known {
        return Err(unknown());
    }
    let own = broker.config.node_id;
    match replicas {
        None => Err(Failure::new(
            code(ResponseError::NoReassignmentInProgress),
            format!("partition {partition} of topic '{topic}' is not being moved"),
        )),
        Some(replicas) if replicas == [own] => Ok(()),
        Some(replicas) => Err(Failure::new(
            code(ResponseError::InvalidReplicaAssignment),
            format!(
                "this broker runs alone: its only possible replicas are [{own}], not {replicas:?}"
            ),
        )),
    }
}
