//! CreateTopics, DeleteTopics and CreatePartitions: changes to the catalog. Deleting a topic
//! also closes its partitions' logs on their owning shards and deletes their directories before
//! answering, so a topic re-created under the same name starts empty.

use std::collections::BTreeMap;

use engine::shard::PartitionId;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};
use kafka_protocol::ResponseError;

use super::configs::topic_entries;
use super::{str_bytes, uuid};
use crate::broker::Broker;
use crate::errors::{catalog_error_code, code, log_error_code, NONE};

/// A replication factor this single broker can honour: 1, or -1 for the default.
fn replication_factor_ok(replication_factor: i16) -> bool {
    matches!(replication_factor, 1 | -1)
}

pub fn create(
    broker: &Broker,
    api_version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let catalog = broker.catalog.catalog();
    let log = &broker.config.log;
    let results = request
        .topics
        .into_iter()
        .map(|topic| {
            let result = CreatableTopicResult::default().with_name(topic.name.clone());
            let failed = |error_code: i16, message: String| {
                let failed = result
                    .clone()
                    .with_error_code(error_code)
                    .with_error_message(Some(str_bytes(message)));
                if api_version >= 5 {
                    failed.with_topic_config_error_code(error_code)
                } else {
                    failed
                }
            };
            if !replication_factor_ok(topic.replication_factor) || !topic.assignments.is_empty() {
                return failed(
                    code(ResponseError::InvalidReplicationFactor),
                    format!(
                        "replication factor {} (or a manual assignment) is not possible on a \
                         single broker; use 1",
                        topic.replication_factor
                    ),
                );
            }
            let mut overrides = BTreeMap::new();
            for config in &topic.configs {
                if let Some(value) = &config.value {
                    overrides.insert(config.name.to_string(), value.to_string());
                }
            }
            if let Err(message) = engine::topic_config::validate(log, &overrides) {
                return failed(code(ResponseError::InvalidConfig), message);
            }
            let partitions = match topic.num_partitions {
                -1 => i64::from(broker.config.default_partitions),
                count => i64::from(count),
            };
            match catalog.create_topic(&topic.name, partitions, overrides, request.validate_only) {
                Ok(created) => {
                    let result = result.with_error_code(NONE);
                    if api_version < 5 {
                        return result;
                    }
                    let configs = topic_entries(log, &created.configs)
                        .into_iter()
                        .map(|(key, value, source, _)| {
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(key))
                                .with_value(Some(str_bytes(value)))
                                .with_config_source(source)
                        })
                        .collect();
                    let result = result
                        .with_num_partitions(created.partitions as i32)
                        .with_replication_factor(1)
                        .with_configs(Some(configs));
                    if api_version >= 7 {
                        result.with_topic_id(uuid(created.id))
                    } else {
                        result
                    }
                }
                Err(error) => failed(catalog_error_code(&error), error.to_string()),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete(
    broker: &Broker,
    api_version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // Versions up to 5 name the topics in `topic_names`; 6 in `topics` (we serve up to 5).
    let mut responses = Vec::with_capacity(request.topic_names.len());
    for name in request.topic_names {
        let result = DeletableTopicResult::default().with_name(Some(name.clone()));
        let outcome = match broker.catalog.catalog().delete_topic(&name) {
            Ok(topic) => {
                let mut outcome = Ok(());
                for partition in 0..topic.partitions {
                    let id = PartitionId::new(topic.name.as_str(), partition);
                    if let Err(error) = broker.context.remove_partition(id).await {
                        outcome = Err((log_error_code(&error), error.to_string()));
                    }
                }
                outcome
            }
            Err(error) => Err((catalog_error_code(&error), error.to_string())),
        };
        responses.push(match outcome {
            Ok(()) => result.with_error_code(NONE),
            Err((error_code, message)) if api_version >= 5 => result
                .with_error_code(error_code)
                .with_error_message(Some(str_bytes(message))),
            Err((error_code, _)) => result.with_error_code(error_code),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub fn create_partitions(
    broker: &Broker,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let catalog = broker.catalog.catalog();
    let results = request
        .topics
        .into_iter()
        .map(|topic| {
            let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
            if topic.assignments.is_some() {
                return result
                    .with_error_code(code(ResponseError::InvalidReplicaAssignment))
                    .with_error_message(Some(str_bytes(
                        "manual replica assignment is not possible on a single broker",
                    )));
            }
            match catalog.add_partitions(&topic.name, i64::from(topic.count), request.validate_only)
            {
                Ok(_) => result.with_error_code(NONE),
                Err(error) => result
                    .with_error_code(catalog_error_code(&error))
                    .with_error_message(Some(str_bytes(error.to_string()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
