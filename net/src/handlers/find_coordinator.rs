//! FindCoordinator: which broker coordinates a group or a transactional id. A broker alone is
//! every one's coordinator; in a cluster, the leader of the key's internal partition is: the
//! group's `__consumer_offsets` partition (`Cluster::group_coordinator`), the transactional
//! id's `__transaction_state` partition (`Cluster::transaction_coordinator`), the same
//! partitions the group and transaction APIs call, so the answer and the calls cannot
//! disagree.

use engine::acls::{Operation, ResourceType};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::fields::str_bytes;
use super::groups::coordinator::offsets_partition;
use crate::broker::{Broker, Client};
use crate::errors::{code, NONE};

/// FindCoordinator's key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let listener = &client.security.listener;
    let answer = |key: StrBytes| {
        let coordinator = Coordinator::default().with_key(key.clone());
        // Kafka's check: DESCRIBE on the group or the transactional id.
        let refused = match request.key_type {
            KEY_TYPE_GROUP => (!broker.authorized_on_group(client, Operation::Describe, &key))
                .then_some(ResponseError::GroupAuthorizationFailed),
            KEY_TYPE_TRANSACTION => (!broker.authorized(
                client,
                Operation::Describe,
                ResourceType::TransactionalId,
                &key,
            ))
            .then_some(ResponseError::TransactionalIdAuthorizationFailed),
            _ => None,
        };
        if let Some(refused) = refused {
            return coordinator
                .with_node_id((-1).into())
                .with_port(-1)
                .with_error_code(code(refused));
        }
        let leader = match (request.key_type, &broker.cluster) {
            (KEY_TYPE_GROUP, Some(cluster)) => {
                cluster.group_coordinator(offsets_partition(broker, &key), listener)
            }
            (KEY_TYPE_TRANSACTION, Some(cluster)) => {
                cluster.transaction_coordinator(broker.transactions.state_partition(&key), listener)
            }
            (KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION, None) => {
                return match broker.config.advertised_on(listener) {
                    Some(endpoint) => coordinator
                        .with_node_id(broker.config.node_id.into())
                        .with_host(str_bytes(endpoint.host.clone()))
                        .with_port(i32::from(endpoint.port))
                        .with_error_code(NONE),
                    None => coordinator
                        .with_node_id((-1).into())
                        .with_port(-1)
                        .with_error_code(code(ResponseError::CoordinatorNotAvailable)),
                }
            }
            _ => {
                return coordinator
                    .with_node_id((-1).into())
                    .with_port(-1)
                    .with_error_code(code(ResponseError::InvalidRequest))
                    .with_error_message(Some(str_bytes("unknown coordinator key type")))
            }
        };
        match leader {
            Some(member) => coordinator
                .with_node_id(member.node_id.into())
                .with_host(str_bytes(member.host))
                .with_port(member.port)
                .with_error_code(NONE),
            None => coordinator
                .with_node_id((-1).into())
                .with_port(-1)
                .with_error_code(code(ResponseError::CoordinatorNotAvailable))
                .with_error_message(Some(str_bytes("the coordinator is not known yet"))),
        }
    };
    if api_version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .cloned()
            .map(answer)
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let coordinator = answer(request.key.clone());
    FindCoordinatorResponse::default()
        .with_error_code(coordinator.error_code)
        .with_error_message(coordinator.error_message)
        .with_node_id(coordinator.node_id)
        .with_host(coordinator.host)
        .with_port(coordinator.port)
}
