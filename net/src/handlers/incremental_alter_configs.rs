//! IncrementalAlterConfigs: changes a topic's configuration overrides key by key (SET, DELETE,
//! APPEND, SUBTRACT); the change itself is `topic_overrides`.

use engine::acls::Operation as AclOperation;
use engine::topic_config::{self, Operation};
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::{
    incremental_alter_configs_response, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;

use super::topic_overrides::alter_topic;
use crate::broker::{Broker, Client};
use crate::errors::{code, Failure};

/// One IncrementalAlterConfigs change: the key, the operation, the value.
type Change<'a> = (&'a str, Operation, Option<&'a str>);

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let log = &broker.config.log;
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let names: Vec<&str> = resource
            .configs
            .iter()
            .map(|config| &*config.name)
            .collect();
        let refusal = broker.config_refusal(
            client,
            AclOperation::AlterConfigs,
            resource.resource_type,
            &resource.resource_name,
        );
        let outcome = match operations(&resource.configs) {
            _ if refusal.is_some() => Err(refusal.expect("just matched")),
            Ok(operations) => {
                alter_topic(
                    broker,
                    resource.resource_type,
                    &resource.resource_name,
                    &names,
                    request.validate_only,
                    |current| {
                        let mut configs = current.clone();
                        for (name, operation, value) in operations {
                            topic_config::change(log, &mut configs, name, operation, value)?;
                        }
                        Ok(configs)
                    },
                )
                .await
            }
            Err(failure) => Err(failure),
        };
        let (error_code, error_message) = Failure::fields(outcome);
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(error_code)
                .with_error_message(error_message),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The operations of one resource, in request order, with their codes read as Kafka's
/// AlterConfigOp.OpType.
fn operations(configs: &[AlterableConfig]) -> Result<Vec<Change<'_>>, Failure> {
    configs
        .iter()
        .map(|config| {
            let operation = match config.config_operation {
                0 => Operation::Set,
                1 => Operation::Delete,
                2 => Operation::Append,
                3 => Operation::Subtract,
                other => {
                    return Err(Failure::new(
                        code(ResponseError::InvalidRequest),
                        format!(
                            "unknown config operation {other} for '{}' (0 SET, 1 DELETE, 2 \
                             APPEND, 3 SUBTRACT)",
                            &*config.name
                        ),
                    ))
                }
            };
            Ok((&*config.name, operation, config.value.as_deref()))
        })
        .collect()
}
