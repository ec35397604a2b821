//! The ACL APIs, one module each: CreateAcls, DescribeAcls and DeleteAcls (v1-v3, the versions
//! Kafka 4 and today's clients speak), and what they share: the refusal when there is no
//! authorizer (SECURITY_DISABLED, as Kafka answers) or the client may not ALTER or DESCRIBE the
//! cluster (CLUSTER_AUTHORIZATION_FAILED), and the reading of a request's filter.

pub mod create_acls;
pub mod delete_acls;
pub mod describe_acls;

use engine::acls::{
    AclBinding, AclFilter, Operation, PatternFilter, Permission, ResourceType, ANY_CODE,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Client};

/// Kafka's codes of resource types it has and Ferrite keeps no ACL of (DELEGATION_TOKEN, USER):
/// a filter of them is valid and matches nothing.
const RESOURCE_TYPES_NOT_KEPT: [i8; 2] = [6, 7];

/// Why a whole request is refused: a Kafka code and its message.
pub(crate) type Refusal = (ResponseError, String);

/// The refusal of an ACL request needing `operation` on the cluster, if it is refused.
pub(crate) fn refusal(broker: &Broker, client: &Client, operation: Operation) -> Option<Refusal> {
    if !broker.config.authorizer.enabled {
        return Some((
            ResponseError::SecurityDisabled,
            "No Authorizer is configured on the broker (--authorizer acl)".to_owned(),
        ));
    }
    (!broker.authorized_on_cluster(client, operation)).then(|| {
        (
            ResponseError::ClusterAuthorizationFailed,
            format!(
                "{} may not {} the cluster",
                client.security.principal,
                operation.name()
            ),
        )
    })
}

/// The fields of a filter as they come in DescribeAcls and DeleteAcls.
pub(crate) struct FilterFields<'a> {
    pub resource_type: i8,
    pub resource_name: Option<&'a StrBytes>,
    pub pattern_type: i8,
    pub principal: Option<&'a StrBytes>,
    pub host: Option<&'a StrBytes>,
    pub operation: i8,
    pub permission: i8,
}

/// A filter read: `None` for one that is valid and matches nothing.
pub(crate) fn read_filter(fields: FilterFields) -> Result<Option<AclFilter>, String> {
    if RESOURCE_TYPES_NOT_KEPT.contains(&fields.resource_type) {
        return Ok(None);
    }
    let any_or = |code: i8, known: Option<()>, what: &str| match (code, known) {
        (ANY_CODE, _) | (_, Some(())) => Ok(()),
        _ => Err(format!("unknown {what} {code}")),
    };
    let resource_type = ResourceType::from_code(fields.resource_type);
    any_or(
        fields.resource_type,
        resource_type.map(|_| ()),
        "resource type",
    )?;
    let operation = Operation::from_code(fields.operation);
    any_or(fields.operation, operation.map(|_| ()), "operation")?;
    let permission = Permission::from_code(fields.permission);
    any_or(fields.permission, permission.map(|_| ()), "permission type")?;
    let pattern = PatternFilter::from_code(fields.pattern_type)
        .ok_or_else(|| format!("unknown pattern type {}", fields.pattern_type))?;
    Ok(Some(AclFilter {
        resource_type,
        resource_name: fields.resource_name.map(|name| name.to_string()),
        pattern,
        principal: fields.principal.map(|principal| principal.to_string()),
        host: fields.host.map(|host| host.to_string()),
        operation,
        permission,
    }))
}

/// Whether `binding` is an ACL Kafka would create (its AclControlManager's checks).
pub(crate) fn validate(binding: &AclBinding) -> Result<(), String> {
    if binding.resource_name.is_empty() {
        return Err("Invalid empty resource name".to_owned());
    }
    if binding.resource_type == ResourceType::Cluster
        && binding.resource_name != engine::acls::CLUSTER_NAME
    {
        return Err(format!(
            "The only valid name for the CLUSTER resource is {}",
            engine::acls::CLUSTER_NAME
        ));
    }
    if !crate::authorizer::is_principal(&binding.principal) {
        return Err(format!(
            "Could not parse principal from `{}` (no colon is present separating the principal \
             type from the principal name)",
            binding.principal
        ));
    }
    if binding.host.is_empty()
        || (binding.host != engine::acls::WILDCARD
            && binding.host.parse::<std::net::IpAddr>().is_err())
    {
        return Err(format!(
            "Invalid host '{}': an IP address or *",
            binding.host
        ));
    }
    Ok(())
}
