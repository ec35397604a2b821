//! ListGroups: the groups every `__consumer_offsets` partition's coordinator on this broker
//! holds, filtered by state (v4) and type (v5: "classic" or "consumer", KIP-848). In a cluster
//! the partitions another broker coordinates are skipped, as each broker lists its own.

use engine::acls::Operation;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::groups::shard::ListGroups;
use crate::groups::{GroupError, GroupState};
use crate::handlers::fields::str_bytes;

/// The group types this broker runs (ListGroups v5).
const GROUP_TYPE_CLASSIC: &str = "classic";
const GROUP_TYPE_CONSUMER: &str = "consumer";

fn group_type(consumer_protocol: bool) -> &'static str {
    if consumer_protocol {
        GROUP_TYPE_CONSUMER
    } else {
        GROUP_TYPE_CLASSIC
    }
}

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    // Kafka lists every group to a client that may DESCRIBE the cluster, else those it may
    // DESCRIBE.
    let every_group = broker.authorized_on_cluster(client, Operation::Describe);
    let may_describe = |group_id: &str| {
        every_group || broker.authorized_on_group(client, Operation::Describe, group_id)
    };
    let wanted_types = &request.types_filter;
    let wanted_type = |consumer_protocol: bool| {
        wanted_types.is_empty()
            || wanted_types
                .iter()
                .any(|wanted| wanted.eq_ignore_ascii_case(group_type(consumer_protocol)))
    };
    if !wanted_type(false) && !wanted_type(true) {
        return ListGroupsResponse::default().with_error_code(NONE);
    }
    let states: Vec<GroupState> = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Assigning,
        GroupState::Reconciling,
        GroupState::Dead,
    ]
    .into_iter()
    .filter(|state| {
        request
            .states_filter
            .iter()
            .any(|wanted| wanted.eq_ignore_ascii_case(state.name()))
    })
    .collect();
    if !request.states_filter.is_empty() && states.is_empty() {
        // Only states no group can be in were asked for.
        return ListGroupsResponse::default().with_error_code(NONE);
    }
    let mut groups = Vec::new();
    let mut error = NONE;
    for partition in 0..broker.groups.config().offsets_partitions {
        let list = ListGroups {
            states: states.clone(),
        };
        match broker.groups.call(partition, list).await {
            Ok(listed) => groups.extend(
                listed
                    .into_iter()
                    .filter(|group| wanted_type(group.consumer_protocol))
                    .filter(|group| may_describe(&group.group_id)),
            ),
            // In a cluster: another broker coordinates this partition's groups.
            Err(GroupError::NotCoordinator) => {}
            Err(refused) => error = refused.code(),
        }
    }
    ListGroupsResponse::default()
        .with_error_code(error)
        .with_groups(
            groups
                .into_iter()
                .map(|group| {
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(group.group_id)))
                        .with_protocol_type(str_bytes(group.protocol_type))
                        .with_group_state(StrBytes::from_static_str(group.state.name()))
                        .with_group_type(StrBytes::from_static_str(group_type(
                            group.consumer_protocol,
                        )))
                })
                .collect(),
        )
}
