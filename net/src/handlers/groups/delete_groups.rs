//! DeleteGroups: removes empty groups and their committed offsets, each group answered on its
//! own.

use engine::acls::Operation;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::ResponseError;

use super::coordinator::{call, error_code};
use crate::broker::{Broker, Client};
use crate::groups::shard::DeleteGroup;

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        if !broker.authorized_on_group(client, Operation::Delete, &group_id.0) {
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
            );
            continue;
        }
        let delete = DeleteGroup {
            group_id: group_id.0.to_string(),
        };
        let result = call(broker, &group_id.0, delete).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(error_code(&result)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
