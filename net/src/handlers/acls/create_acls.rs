//! CreateAcls (v1-v3): adds ACLs, each checked as Kafka checks it and answered on its own; those
//! that pass are made together, durably in the data directory on a broker alone (a failed write
//! fails them all), before the answer, and take effect on every shard at once.

use engine::acls::{AclBinding, AclChange, Operation, PatternType, Permission, ResourceType};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{refusal, validate};
use crate::broker::{Broker, Client};

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    let refused = |(code, message): (ResponseError, String)| {
        AclCreationResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if let Some(refusal) = refusal(broker, client, Operation::Alter) {
        return CreateAclsResponse::default().with_results(
            request
                .creations
                .iter()
                .map(|_| refused(refusal.clone()))
                .collect(),
        );
    }
    let checked: Vec<Result<AclBinding, String>> = request
        .creations
        .iter()
        .map(|creation| binding(creation).and_then(|binding| validate(&binding).map(|()| binding)))
        .collect();
    let changes: Vec<AclChange> = checked
        .iter()
        .filter_map(|checked| checked.as_ref().ok().cloned().map(AclChange::Create))
        .collect();
    let applied = match changes.is_empty() {
        true => Ok(()),
        false => broker.alter_acls(changes).await,
    };
    let results = checked
        .into_iter()
        .map(|checked| match (checked, &applied) {
            (Err(message), _) => refused((ResponseError::InvalidRequest, message)),
            (Ok(_), Err(refusal)) => refused(refusal.clone()),
            (Ok(_), Ok(())) => AclCreationResult::default(),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

/// The ACL `creation` asks for, if its codes are of ones that can be created.
fn binding(creation: &AclCreation) -> Result<AclBinding, String> {
    Ok(AclBinding {
        resource_type: ResourceType::from_code(creation.resource_type)
            .ok_or_else(|| format!("Invalid resource type {}", creation.resource_type))?,
        resource_name: creation.resource_name.to_string(),
        pattern_type: PatternType::from_code(creation.resource_pattern_type)
            .ok_or_else(|| format!("Invalid patternType {}", creation.resource_pattern_type))?,
        principal: creation.principal.to_string(),
        host: creation.host.to_string(),
        operation: Operation::from_code(creation.operation)
            .ok_or_else(|| format!("Invalid operation {}", creation.operation))?,
        permission: Permission::from_code(creation.permission_type)
            .ok_or_else(|| format!("Invalid permissionType {}", creation.permission_type))?,
    })
}
