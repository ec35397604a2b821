//! DescribeAcls (v1-v3): the ACLs a filter matches, grouped by resource pattern as Kafka
//! answers them.

use std::collections::BTreeMap;

use engine::acls::{Operation, PatternType, ResourceType};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{read_filter, refusal, FilterFields};
use crate::broker::{Broker, Client};

pub fn handle(
    broker: &Broker,
    client: &Client,
    request: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let refused = |code: ResponseError, message: String| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if let Some((code, message)) = refusal(broker, client, Operation::Describe) {
        return refused(code, message);
    }
    let filter = match read_filter(FilterFields {
        resource_type: request.resource_type_filter,
        resource_name: request.resource_name_filter.as_ref(),
        pattern_type: request.pattern_type_filter,
        principal: request.principal_filter.as_ref(),
        host: request.host_filter.as_ref(),
        operation: request.operation,
        permission: request.permission_type,
    }) {
        Ok(filter) => filter,
        Err(message) => return refused(ResponseError::InvalidRequest, message),
    };
    let table = broker.acls.table();
    let mut resources: BTreeMap<(ResourceType, &str, PatternType), Vec<AclDescription>> =
        BTreeMap::new();
    for binding in table.iter().filter(|binding| {
        filter
            .as_ref()
            .is_some_and(|filter| filter.matches(binding))
    }) {
        resources
            .entry((
                binding.resource_type,
                binding.resource_name.as_str(),
                binding.pattern_type,
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(binding.principal.clone()))
                    .with_host(StrBytes::from_string(binding.host.clone()))
                    .with_operation(binding.operation.code())
                    .with_permission_type(binding.permission.code()),
            );
    }
    DescribeAclsResponse::default().with_resources(
        resources
            .into_iter()
            .map(|((resource_type, name, pattern_type), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(resource_type.code())
                    .with_resource_name(StrBytes::from_string(name.to_owned()))
                    .with_pattern_type(pattern_type.code())
                    .with_acls(acls)
            })
            .collect(),
    )
}
