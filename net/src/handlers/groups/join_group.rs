//! JoinGroup: a member joins (or rejoins) a group and, once the rebalance completes, learns
//! the generation, the leader and (the leader only) every member's subscription. Versions
//! differ in the rebalance timeout (from 1) and KIP-394's required known member id (from 4).

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use engine::acls::Operation;

use super::coordinator::call;
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::groups::{GroupError, GroupProtocol, JoinGroup};
use crate::handlers::fields::{optional_string, str_bytes};

pub async fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    if !broker.authorized_on_group(client, Operation::Read, &group_id) {
        return JoinGroupResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let join = JoinGroup {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        group_instance_id: optional_string(request.group_instance_id),
        client_id: client.id.clone(),
        client_host: client.host.clone(),
        session_timeout_ms: request.session_timeout_ms,
        // Absent before version 1: the session timeout is used.
        rebalance_timeout_ms: if api_version >= 1 {
            request.rebalance_timeout_ms
        } else {
            -1
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|protocol| GroupProtocol {
                name: protocol.name.to_string(),
                metadata: protocol.metadata,
            })
            .collect(),
        require_known_member_id: api_version >= 4,
    };
    let response = call(broker, &group_id, join).await;
    JoinGroupResponse::default()
        .with_error_code(response.error.map_or(NONE, GroupError::code))
        .with_generation_id(response.generation_id)
        .with_protocol_type(response.protocol_type.map(str_bytes))
        .with_protocol_name(response.protocol_name.map(str_bytes))
        .with_leader(str_bytes(response.leader_id))
        .with_skip_assignment(response.skip_assignment)
        .with_member_id(str_bytes(response.member_id))
        .with_members(
            response
                .members
                .into_iter()
                .map(|member| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(member.member_id))
                        .with_group_instance_id(member.group_instance_id.map(str_bytes))
                        .with_metadata(member.metadata)
                })
                .collect(),
        )
}
