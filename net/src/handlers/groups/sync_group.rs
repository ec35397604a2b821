//! SyncGroup: the leader hands over the assignment, and every member receives its own.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use engine::acls::Operation;

use super::coordinator::call;
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::groups::{GroupError, SyncGroup};
use crate::handlers::fields::{optional_string, str_bytes};

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    if !broker.authorized_on_group(client, Operation::Read, &group_id) {
        return SyncGroupResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let sync = SyncGroup {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: optional_string(request.group_instance_id),
        protocol_type: optional_string(request.protocol_type),
        protocol_name: optional_string(request.protocol_name),
        assignments: request
            .assignments
            .into_iter()
            .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
            .collect(),
    };
    let response = call(broker, &group_id, sync).await;
    SyncGroupResponse::default()
        .with_error_code(response.error.map_or(NONE, GroupError::code))
        .with_protocol_type(response.protocol_type.map(str_bytes))
        .with_protocol_name(response.protocol_name.map(str_bytes))
        .with_assignment(response.assignment)
}
