//! Topic and broker configuration as Kafka names it: the keys a topic may override at
//! creation, each with the broker-wide default, and DescribeConfigs over them.
//!
//! Overrides are checked and stored with the topic (the catalog), and described back with
//! their source; the log applies the broker-wide settings (per-topic retention and segment
//! settings are the topic-configuration issue's work).

use std::collections::BTreeMap;

use engine::LogConfig;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::errors::{code, NONE};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// What values a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A whole number, at least the given minimum.
    Integer(i64),
    OneOf(&'static [&'static str]),
}

/// Kafka's config type codes (DescribeConfigs v3+): 5 LONG, 2 STRING.
fn type_code(kind: Kind) -> i8 {
    match kind {
        Kind::Integer(_) => 5,
        Kind::OneOf(_) => 2,
    }
}

/// The topic-level keys this broker knows, with their broker-wide defaults.
fn topic_keys(log: &LogConfig) -> Vec<(&'static str, Kind, String)> {
    let optional = |value: Option<u64>| value.map_or(-1, |value| value as i64).to_string();
    vec![
        ("cleanup.policy", Kind::OneOf(&["delete"]), "delete".into()),
        (
            "compression.type",
            Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
            "producer".into(),
        ),
        (
            "max.message.bytes",
            Kind::Integer(0),
            log.batch_bytes_max.to_string(),
        ),
        (
            "message.timestamp.type",
            Kind::OneOf(&["CreateTime"]),
            "CreateTime".into(),
        ),
        ("min.insync.replicas", Kind::Integer(1), "1".into()),
        (
            "retention.bytes",
            Kind::Integer(-1),
            optional(log.retention_bytes_max),
        ),
        (
            "retention.ms",
            Kind::Integer(-1),
            optional(log.retention_age_ms_max),
        ),
        (
            "segment.bytes",
            Kind::Integer(14),
            log.segment_bytes_max.to_string(),
        ),
        (
            "segment.ms",
            Kind::Integer(1),
            optional(log.segment_age_ms_max),
        ),
    ]
}

/// Checks topic overrides given at creation; `Err` says which key or value is wrong.
pub fn validate_topic_overrides(
    log: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<(), String> {
    let keys = topic_keys(log);
    for (key, value) in overrides {
        let Some((_, kind, _)) = keys.iter().find(|(known, _, _)| known == key) else {
            return Err(format!("unknown topic config '{key}'"));
        };
        let valid = match kind {
            Kind::Integer(min) => value.parse::<i64>().is_ok_and(|number| number >= *min),
            Kind::OneOf(choices) => choices.contains(&value.as_str()),
        };
        if !valid {
            return Err(format!("invalid value '{value}' for topic config '{key}'"));
        }
    }
    Ok(())
}

/// Every topic key with its effective value and source, as DescribeConfigs and CreateTopics
/// (v5+) report them.
pub fn topic_entries(
    log: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<(&'static str, String, i8, i8)> {
    topic_keys(log)
        .into_iter()
        .map(|(key, kind, default)| match overrides.get(key) {
            Some(value) => (key, value.clone(), SOURCE_TOPIC, type_code(kind)),
            None => (key, default, SOURCE_DEFAULT, type_code(kind)),
        })
        .collect()
}

pub fn describe(
    broker: &Broker,
    api_version: i16,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_checked_and_reported_with_their_source() {
        let log = LogConfig::default();
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "60000".to_string());
        assert_eq!(validate_topic_overrides(&log, &overrides), Ok(()));
        let entries = topic_entries(&log, &overrides);
        let retention = entries
            .iter()
            .find(|entry| entry.0 == "retention.ms")
            .unwrap();
        assert_eq!((retention.1.as_str(), retention.2), ("60000", SOURCE_TOPIC));
        let segment = entries
            .iter()
            .find(|entry| entry.0 == "segment.bytes")
            .unwrap();
        assert_eq!(
            (segment.1.as_str(), segment.2),
            ("1073741824", SOURCE_DEFAULT)
        );

        overrides.insert("retention.ms".into(), "soon".into());
        assert!(validate_topic_overrides(&log, &overrides).is_err());
        let mut unknown = BTreeMap::new();
        unknown.insert("no.such.key".to_string(), "1".to_string());
        assert!(validate_topic_overrides(&log, &unknown)
            .unwrap_err()
            .contains("no.such.key"));
    }
}
