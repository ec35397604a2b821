//! AlterConfigs and IncrementalAlterConfigs: changing a topic's configuration overrides.
//!
//! Both work out the topic's new overrides under the catalog's lock (AlterConfigs replaces the
//! whole set; IncrementalAlterConfigs applies SET, DELETE, APPEND and SUBTRACT to it), check
//! them with `engine::topic_config` (INVALID_CONFIG with the reason), persist them in the
//! catalog, and then bring every open log of the topic up to date on its owning shard before
//! answering: once a client has its answer, the new settings are in effect.
//!
//! Only topics can be altered. The broker's own settings are fixed at start-up (`ferrite
//! serve` flags), and internal topics keep the settings the broker gave them.

use std::collections::{BTreeMap, BTreeSet};

use engine::shard::PartitionId;
use engine::topic_config::{self, Operation};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::str_bytes;
use crate::broker::Broker;
use crate::errors::{catalog_error_code, code, log_error_code, NONE};

/// A resource's failure: the Kafka error code and the message saying why.
type Failure = (i16, String);

/// One IncrementalAlterConfigs change: the key, the operation, the value.
type Change<'a> = (&'a str, Operation, Option<&'a str>);

pub async fn alter(broker: &Broker, request: AlterConfigsRequest) -> AlterConfigsResponse {
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
        let outcome = alter_topic(
            broker,
            resource.resource_type,
            &resource.resource_name,
            &names,
            request.validate_only,
            |_| Ok(replacement),
        )
        .await;
        let (error_code, error_message) = answer(outcome);
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

pub async fn incremental_alter(
    broker: &Broker,
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
        let outcome = match operations(&resource.configs) {
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
        let (error_code, error_message) = answer(outcome);
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
fn operations(
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<Vec<Change<'_>>, Failure> {
    configs
        .iter()
        .map(|config| {
            let operation = match config.config_operation {
                0 => Operation::Set,
                1 => Operation::Delete,
                2 => Operation::Append,
                3 => Operation::Subtract,
                other => {
                    return Err((
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

/// Changes the overrides of topic `name` to what `change` makes of them (after checking the
/// resource and the keys named), checks the result, persists it and applies it to the
/// topic's open logs. `validate_only` stops after the check.
async fn alter_topic(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    names: &[&str],
    validate_only: bool,
    change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
) -> Result<(), Failure> {
    let invalid_request = |message: String| (code(ResponseError::InvalidRequest), message);
    match resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return Err(invalid_request(
                "broker settings cannot be altered while the broker runs: set them with \
                 `ferrite serve` flags (or its --config file) and restart"
                    .into(),
            ))
        }
        other => {
            return Err(invalid_request(format!(
                "resource type {other} cannot be altered on this broker; only topics (2) can"
            )))
        }
    }
    let mut seen = BTreeSet::new();
    if let Some(duplicate) = names.iter().find(|name| !seen.insert(**name)) {
        return Err(invalid_request(format!(
            "topic config '{duplicate}' is named more than once"
        )));
    }
    let log = &broker.config.log;
    if let Some(cluster) = &broker.cluster {
        // The controller decides; the result is checked here first so a bad value is refused
        // at once with the same message as on a single broker.
        engine::catalog::refuse_internal(name)
            .map_err(|error| (catalog_error_code(&error), error.to_string()))?;
        let current = broker.catalog.topics().get(name).cloned().ok_or_else(|| {
            let error = engine::catalog::CatalogError::UnknownTopic(name.to_owned());
            (catalog_error_code(&error), error.to_string())
        })?;
        let configs = change(&current.configs)
            .and_then(|configs| topic_config::validate(log, &configs).map(|()| configs))
            .map_err(|message| (code(ResponseError::InvalidConfig), message))?;
        if validate_only {
            return Ok(());
        }
        return cluster
            .alter_topic_configs(name.to_owned(), configs)
            .await
            .map_err(|error| (error.code, error.message));
    }
    let topic = broker
        .catalog
        .catalog()
        .alter_topic_configs(name, validate_only, |current| {
            let configs = change(current)?;
            topic_config::validate(log, &configs)?;
            Ok(configs)
        })
        .map_err(|error| (catalog_error_code(&error), error.to_string()))?;
    if validate_only {
        return Ok(());
    }
    let reloads = (0..topic.partitions).map(|partition| {
        broker
            .context
            .reload_log_config(PartitionId::new(name, partition))
    });
    let failed = futures::future::join_all(reloads)
        .await
        .into_iter()
        .find_map(Result::err);
    match failed {
        None => Ok(()),
        Some(error) => Err((
            log_error_code(&error),
            format!(
                "the new configs of topic '{name}' are saved, but not yet in effect on every \
                 partition ({error}); they will be when the partition is next opened"
            ),
        )),
    }
}

/// The error code and message fields of a resource's answer.
fn answer(outcome: Result<(), Failure>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (NONE, None),
        Err((error_code, message)) => (error_code, Some(str_bytes(message))),
    }
}
