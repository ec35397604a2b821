//! DescribeGroups: each group's state, protocol and members (with their metadata and
//! assignments); a group that does not exist is described as Dead, as Kafka does.

use engine::acls::Operation;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::coordinator::call;
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::groups::shard::DescribeGroup;
use crate::groups::GroupState;
use crate::handlers::fields::str_bytes;

/// DescribeGroups' "authorized operations not asked for".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut described = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let describe = DescribeGroup {
            group_id: group_id.0.to_string(),
        };
        let group = DescribedGroup::default()
            .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
            .with_group_id(group_id.clone());
        if !broker.authorized_on_group(client, Operation::Describe, &group_id.0) {
            described.push(
                group.with_error_code(
                    kafka_protocol::ResponseError::GroupAuthorizationFailed.code(),
                ),
            );
            continue;
        }
        let group = match call(broker, &group_id.0, describe).await {
            Ok(description) => group
                .with_error_code(NONE)
                .with_group_state(StrBytes::from_static_str(description.state.name()))
                .with_protocol_type(str_bytes(description.protocol_type))
                .with_protocol_data(str_bytes(description.protocol_name))
                .with_members(
                    description
                        .members
                        .into_iter()
                        .map(|member| {
                            let described = DescribedGroupMember::default()
                                .with_member_id(str_bytes(member.member_id))
                                .with_client_id(str_bytes(member.client_id))
                                .with_client_host(str_bytes(member.client_host))
                                .with_member_metadata(member.metadata)
                                .with_member_assignment(member.assignment);
                            // The instance id exists from version 4.
                            if api_version >= 4 {
                                described
                                    .with_group_instance_id(member.group_instance_id.map(str_bytes))
                            } else {
                                described
                            }
                        })
                        .collect(),
                ),
            Err(error) => group
                .with_error_code(error.code())
                .with_group_state(StrBytes::from_static_str(GroupState::Dead.name())),
        };
        described.push(group);
    }
    DescribeGroupsResponse::default().with_groups(described)
}
