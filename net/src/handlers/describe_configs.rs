//! DescribeConfigs: a topic's keys (from `engine::topic_config`, the one table of them) with
//! their effective values and sources (set on the topic, or the broker's default), and a few
//! broker keys.

use engine::acls::Operation;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::config_entries::{topic_entries, RESOURCE_BROKER, RESOURCE_TOPIC, SOURCE_STATIC_BROKER};
use super::fields::str_bytes;
use crate::broker::{Broker, Client};
use crate::errors::{code, NONE};

pub fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let log = &broker.config.log;
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            if let Some(refusal) = broker.config_refusal(
                client,
                Operation::DescribeConfigs,
                resource.resource_type,
                &resource.resource_name,
            ) {
                return result
                    .with_error_code(refusal.code)
                    .with_error_message(Some(str_bytes(refusal.message)));
            }
            let entries = match resource.resource_type {
                RESOURCE_TOPIC => match broker.catalog.topics().get(&resource.resource_name) {
                    Some(topic) => topic_entries(log, &topic.configs),
                    None => {
                        return result
                            .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                            .with_error_message(Some(str_bytes(format!(
                                "topic '{}' does not exist",
                                &*resource.resource_name
                            ))))
                    }
                },
                RESOURCE_BROKER => broker_entries(broker),
                other => {
                    return result
                        .with_error_code(code(ResponseError::InvalidRequest))
                        .with_error_message(Some(str_bytes(format!(
                            "resource type {other} is not described by this broker"
                        ))))
                }
            };
            // Null (or empty) asks for every key.
            let wanted = resource.configuration_keys.filter(|keys| !keys.is_empty());
            let configs = entries
                .into_iter()
                .filter(|(key, ..)| {
                    wanted
                        .as_ref()
                        .is_none_or(|wanted| wanted.iter().any(|name| &**name == *key))
                })
                .map(|(key, value, source, type_code)| {
                    let entry = DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(key))
                        .with_value(Some(str_bytes(value)))
                        .with_read_only(resource.resource_type == RESOURCE_BROKER)
                        .with_config_source(source);
                    if api_version >= 3 {
                        entry.with_config_type(type_code)
                    } else {
                        entry
                    }
                })
                .collect();
            result.with_error_code(NONE).with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn broker_entries(broker: &Broker) -> Vec<(&'static str, String, i8, i8)> {
    let config = &broker.config;
    vec![
        (
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            SOURCE_STATIC_BROKER,
            1,
        ),
        (
            "num.partitions",
            config.default_partitions.to_string(),
            SOURCE_STATIC_BROKER,
            3,
        ),
        (
            "message.max.bytes",
            config.log.batch_bytes_max.to_string(),
            SOURCE_STATIC_BROKER,
            3,
        ),
    ]
}
