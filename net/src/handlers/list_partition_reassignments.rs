//! ListPartitionReassignments (KIP-455): the partitions being moved, as the controller records
//! them (`Cluster::reassignments`); on a broker alone nothing is ever moving.

use engine::acls::Operation;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::fields::str_bytes;
use crate::broker::{Broker, Client};
use crate::errors::NONE;

pub fn handle(
    broker: &Broker,
    client: &Client,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    if !broker.authorized_on_cluster(client, Operation::Describe) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(kafka_protocol::ResponseError::ClusterAuthorizationFailed.code());
    }
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
