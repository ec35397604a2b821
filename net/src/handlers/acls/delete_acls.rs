//! DeleteAcls (v1-v3): deletes every ACL each filter matches, all filters' together (durably
//! on a broker alone, before the answer), and answers each filter with the ACLs it deleted.

use engine::acls::{AclBinding, AclChange, AclFilter, Operation};
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{read_filter, refusal, FilterFields};
use crate::broker::{Broker, Client};

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let refused = |(code, message): (ResponseError, String)| {
        DeleteAclsFilterResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if let Some(refusal) = refusal(broker, client, Operation::Alter) {
        return DeleteAclsResponse::default().with_filter_results(
            request
                .filters
                .iter()
                .map(|_| refused(refusal.clone()))
                .collect(),
        );
    }
    let filters: Vec<Result<Option<AclFilter>, String>> = request
        .filters
        .iter()
        .map(|filter| {
            read_filter(FilterFields {
                resource_type: filter.resource_type_filter,
                resource_name: filter.resource_name_filter.as_ref(),
                pattern_type: filter.pattern_type_filter,
                principal: filter.principal_filter.as_ref(),
                host: filter.host_filter.as_ref(),
                operation: filter.operation,
                permission: filter.permission_type,
            })
        })
        .collect();
    let table = broker.acls.table();
    let matched: Vec<Result<Vec<&AclBinding>, String>> = filters
        .iter()
        .map(|filter| match filter {
            Err(message) => Err(message.clone()),
            Ok(None) => Ok(Vec::new()),
            Ok(Some(filter)) => Ok(table
                .iter()
                .filter(|binding| filter.matches(binding))
                .collect()),
        })
        .collect();
    let changes: Vec<AclChange> = matched
        .iter()
        .flatten()
        .flatten()
        .map(|binding| AclChange::Delete((*binding).clone()))
        .collect();
    let applied = match changes.is_empty() {
        true => Ok(()),
        false => broker.alter_acls(changes).await,
    };
    let results = matched
        .into_iter()
        .map(|matched| match (matched, &applied) {
            (Err(message), _) => refused((ResponseError::InvalidRequest, message)),
            (Ok(_), Err(refusal)) => refused(refusal.clone()),
            (Ok(bindings), Ok(())) => DeleteAclsFilterResult::default().with_matching_acls(
                bindings
                    .into_iter()
                    .map(|binding| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(binding.resource_type.code())
                            .with_resource_name(StrBytes::from_string(
                                binding.resource_name.clone(),
                            ))
                            .with_pattern_type(binding.pattern_type.code())
                            .with_principal(StrBytes::from_string(binding.principal.clone()))
                            .with_host(StrBytes::from_string(binding.host.clone()))
                            .with_operation(binding.operation.code())
                            .with_permission_type(binding.permission.code())
                    })
                    .collect(),
            ),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
