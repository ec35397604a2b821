//! LeaveGroup: members leave a group at once instead of by session timeout; one member per
//! request before version 3, a batch (each with its own answer) from 3 on.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use engine::acls::Operation;

use super::coordinator::{call, error_code};
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::groups::shard::LeaveGroup;
use crate::groups::LeavingMember;
use crate::handlers::fields::{optional_string, str_bytes};

pub async fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    if !broker.authorized_on_group(client, Operation::Read, &group_id) {
        return LeaveGroupResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    // Before version 3 a request names one member; from 3 on, a batch.
    let members: Vec<LeavingMember> = if api_version >= 3 {
        request
            .members
            .iter()
            .map(|member| LeavingMember {
                member_id: member.member_id.to_string(),
                group_instance_id: optional_string(member.group_instance_id.clone()),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: request.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let leave = LeaveGroup {
        group_id: group_id.clone(),
        members: members.clone(),
    };
    let results = match call(broker, &group_id, leave).await {
        Ok(results) => results,
        Err(error) => return LeaveGroupResponse::default().with_error_code(error.code()),
    };
    if api_version < 3 {
        let result = results.into_iter().next().unwrap_or(Ok(()));
        return LeaveGroupResponse::default().with_error_code(error_code(&result));
    }
    LeaveGroupResponse::default()
        .with_error_code(NONE)
        .with_members(
            members
                .into_iter()
                .zip(results)
                .map(|(member, result)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(member.member_id))
                        .with_group_instance_id(member.group_instance_id.map(str_bytes))
                        .with_error_code(error_code(&result))
                })
                .collect(),
        )
}
