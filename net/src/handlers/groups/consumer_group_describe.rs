//! ConsumerGroupDescribe (KIP-848): each consumer-protocol group's epochs, assignor and members
//! with their current and target assignments. A classic group, or none, is answered
//! GROUP_ID_NOT_FOUND, as Kafka does.

use engine::acls::Operation;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::coordinator::call;
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::groups::consumer::TopicId;
use crate::groups::shard::DescribeConsumerGroup;
use crate::groups::GroupError;
use crate::handlers::fields::{str_bytes, uuid};

/// "Authorized operations not asked for".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// Member type (version 1): a member of the consumer protocol.
const MEMBER_TYPE_CONSUMER: i8 = 1;

fn assignment(partitions: Vec<(TopicId, String, Vec<i32>)>) -> Assignment {
    Assignment::default().with_topic_partitions(
        partitions
            .into_iter()
            .map(|(id, name, partitions)| {
                TopicPartitions::default()
                    .with_topic_id(uuid(id))
                    .with_topic_name(TopicName(str_bytes(name)))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut groups = Vec::with_capacity(request.group_ids.len());
    for group_id in request.group_ids {
        let describe = DescribeConsumerGroup {
            group_id: group_id.0.to_string(),
        };
        let group = DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
        if !broker.authorized_on_group(client, Operation::Describe, &group_id.0) {
            groups.push(
                group.with_error_code(
                    kafka_protocol::ResponseError::GroupAuthorizationFailed.code(),
                ),
            );
            continue;
        }
        let described = match call(broker, &group_id.0, describe).await {
            Ok(Some(description)) => description,
            Ok(None) => {
                groups.push(
                    group
                        .with_error_code(GroupError::GroupIdNotFound.code())
                        .with_error_message(Some(str_bytes(format!(
                            "group {} is not a consumer group",
                            group_id.0.as_str()
                        )))),
                );
                continue;
            }
            Err(error) => {
                groups.push(group.with_error_code(error.code()));
                continue;
            }
        };
        let members = described
            .members
            .into_iter()
            .map(|member| {
                Member::default()
                    .with_member_id(str_bytes(member.member_id))
                    .with_instance_id(member.instance_id.map(str_bytes))
                    .with_rack_id(member.rack_id.map(str_bytes))
                    .with_member_epoch(member.member_epoch)
                    .with_client_id(str_bytes(member.client_id))
                    .with_client_host(str_bytes(member.client_host))
                    .with_subscribed_topic_names(
                        member
                            .subscribed_topic_names
                            .into_iter()
                            .map(|name| TopicName(str_bytes(name)))
                            .collect(),
                    )
                    .with_subscribed_topic_regex(member.subscribed_topic_regex.map(str_bytes))
                    .with_assignment(assignment(member.assignment))
                    .with_target_assignment(assignment(member.target_assignment))
                    .with_member_type(MEMBER_TYPE_CONSUMER)
            })
            .collect();
        groups.push(
            group
                .with_error_code(NONE)
                .with_group_state(StrBytes::from_static_str(described.state.name()))
                .with_group_epoch(described.group_epoch)
                .with_assignment_epoch(described.assignment_epoch)
                .with_assignor_name(str_bytes(described.assignor_name))
                .with_members(members),
        );
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
