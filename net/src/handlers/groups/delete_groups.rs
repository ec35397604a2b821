//! DeleteGroups: removes empty groups and their committed offsets, each group answered on its
//! own.

use engine::shard::{GroupCall, GroupReply};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::coordinator::{call, error_code};
use crate::broker::Broker;

pub async fn handle(broker: &Broker, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let delete = GroupCall::Delete {
            group_id: group_id.0.to_string(),
        };
        let result = match call(broker, &group_id.0, delete).await {
            GroupReply::Delete(result) => result,
            other => unreachable!("a group deletion is answered with {other:?}"),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(error_code(&result)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
