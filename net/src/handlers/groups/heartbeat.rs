//! Heartbeat: a member says it is alive, and hears whether a rebalance is under way.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use engine::acls::Operation;

use super::coordinator::{call, error_code};
use crate::broker::{Broker, Client};
use crate::groups::shard::Heartbeat;
use crate::handlers::fields::optional_string;

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    if !broker.authorized_on_group(client, Operation::Read, &group_id) {
        return HeartbeatResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let heartbeat = Heartbeat {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: optional_string(request.group_instance_id),
    };
    let result = call(broker, &group_id, heartbeat).await;
    HeartbeatResponse::default().with_error_code(error_code(&result))
}
