//! CreateTopics: new topics in the catalog (in a cluster, through the controller, after the
//! same checks here), with their configuration overrides checked first. From version 5 the
//! answer carries the topic's effective configuration.

use std::collections::BTreeMap;

use engine::acls::Operation;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

use super::config_entries::topic_entries;
use super::fields::{str_bytes, uuid};
use crate::broker::{Broker, Client};
use crate::errors::{code, Failure, NONE};

pub async fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let log = &broker.config.log;
    // Kafka's check: CREATE on the cluster, or else on each topic.
    let cluster_authorized = broker.authorized_on_cluster(client, Operation::Create);
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let failed = |failure: Failure| {
            let failed = result
                .clone()
                .with_error_code(failure.code)
                .with_error_message(Some(str_bytes(failure.message)));
            if api_version >= 5 {
                failed.with_topic_config_error_code(failure.code)
            } else {
                failed
            }
        };
        if !(cluster_authorized
            || broker.authorized_on_topic(client, Operation::Create, &topic.name))
        {
            results.push(failed(Failure::new(
                code(ResponseError::TopicAuthorizationFailed),
                format!("not authorized to create topic '{}'", topic.name.as_str()),
            )));
            continue;
        }
        let replication_factor = match (&broker.cluster, topic.replication_factor) {
            (_, _) if !topic.assignments.is_empty() => {
                results.push(failed(Failure::new(
                    code(ResponseError::InvalidReplicaAssignment),
                    "manual replica assignments are not supported; give a replication factor",
                )));
                continue;
            }
            (_, -1) => None,
            (Some(_), factor) if factor > 0 => Some(factor as u16),
            (None, 1) => Some(1),
            (_, factor) => {
                results.push(failed(Failure::new(
                    code(ResponseError::InvalidReplicationFactor),
                    if broker.cluster.is_some() {
                        format!("replication factor {factor} is not positive")
                    } else {
                        format!(
                            "replication factor {factor} is not possible on a single broker; \
                             use 1"
                        )
                    },
                )));
                continue;
            }
        };
        let mut overrides = BTreeMap::new();
        for config in &topic.configs {
            if let Some(value) = &config.value {
                overrides.insert(config.name.to_string(), value.to_string());
            }
        }
        if let Err(message) = engine::topic_config::validate(log, &overrides) {
            results.push(failed(Failure::new(
                code(ResponseError::InvalidConfig),
                message,
            )));
            continue;
        }
        let partitions = match topic.num_partitions {
            -1 => i64::from(broker.config.default_partitions),
            count => i64::from(count),
        };
        // In a cluster the catalog mirrors the metadata log, so it checks the request here
        // too (as CreatePartitions below), and the controller creates the topic.
        let checked = broker.catalog.create_topic(
            &topic.name,
            partitions,
            overrides.clone(),
            request.validate_only || broker.cluster.is_some(),
        );
        let created = match (&broker.cluster, checked) {
            (Some(cluster), Ok(checked)) if !request.validate_only => {
                let asked = cluster
                    .create_topic(
                        topic.name.to_string(),
                        checked.partitions,
                        replication_factor,
                        overrides,
                    )
                    .await;
                if let Err(error) = asked {
                    results.push(failed(Failure::from(error)));
                    continue;
                }
                broker
                    .catalog
                    .topics()
                    .get(&topic.name)
                    .cloned()
                    .ok_or_else(|| {
                        engine::catalog::CatalogError::UnknownTopic(topic.name.to_string())
                    })
            }
            (_, checked) => checked,
        };
        let created = match created {
            Ok(created) => created,
            Err(error) => {
                results.push(failed(Failure::from(error)));
                continue;
            }
        };
        // No message on success, as Kafka (the generated default is an empty one).
        let result = result.with_error_code(NONE).with_error_message(None);
        if api_version < 5 {
            results.push(result);
            continue;
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
        let replicas = broker
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.placement(&created.name, 0))
            .map_or(1, |placement| placement.replicas.len() as i16);
        let result = result
            .with_num_partitions(created.partitions as i32)
            .with_replication_factor(replicas)
            .with_configs(Some(configs));
        results.push(if api_version >= 7 {
            result.with_topic_id(uuid(created.id))
        } else {
            result
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}
