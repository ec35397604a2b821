//! AlterConfigs: replaces a topic's whole set of configuration overrides (a key given without
//! a value is not set, as in Kafka); the change itself is `topic_overrides`.

use engine::acls::Operation;
use std::collections::BTreeMap;

use kafka_protocol::messages::{alter_configs_response, AlterConfigsRequest, AlterConfigsResponse};

use super::topic_overrides::alter_topic;
use crate::broker::{Broker, Client};
use crate::errors::Failure;

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let names: Vec<&str> = resource
            .configs
            .iter()
            .map(|config| &*config.name)
            .collect();
        // The whole set is replaced; a key given without a value is not set (as in Kafka).
        let replacement: BTreeMap<String, String> = resource
            .configs
            .iter()
            .filter_map(|config| {
                Some((config.name.to_string(), config.value.as_ref()?.to_string()))
            })
            .collect();
        let outcome = match broker.config_refusal(
            client,
            Operation::AlterConfigs,
            resource.resource_type,
            &resource.resource_name,
        ) {
            Some(refusal) => Err(refusal),
            None => {
                alter_topic(
                    broker,
                    resource.resource_type,
                    &resource.resource_name,
                    &names,
                    request.validate_only,
                    |_| Ok(replacement),
                )
                .await
            }
        };
        let (error_code, error_message) = Failure::fields(outcome);
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(error_code)
                .with_error_message(error_message),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}
