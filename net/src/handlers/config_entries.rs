//! Kafka's words for configurations, shared by the APIs that name or report them
//! (DescribeConfigs, CreateTopics v5+, AlterConfigs, IncrementalAlterConfigs): resource types,
//! config sources and type codes, and a topic's entries as Kafka reports them.

use std::collections::BTreeMap;

use engine::topic_config::{self, Kind};
use engine::LogConfig;

/// Kafka's ConfigResource types.
pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;
pub(crate) const SOURCE_TOPIC: i8 = 1;
pub(crate) const SOURCE_STATIC_BROKER: i8 = 4;
pub(crate) const SOURCE_DEFAULT: i8 = 5;

/// Kafka's config type code (DescribeConfigs v3+).
fn type_code(kind: Kind) -> i8 {
    match kind {
        Kind::OneOf(_) => 2,
        Kind::Int { .. } => 3,
        Kind::Long { .. } => 5,
        Kind::Double { .. } => 6,
        Kind::ListOf(_) => 7,
    }
}

/// Every topic key with its effective value, source and type, as DescribeConfigs and
/// CreateTopics (v5+) report them.
pub fn topic_entries(
    log: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<(&'static str, String, i8, i8)> {
    topic_config::entries(log, overrides)
        .into_iter()
        .map(|entry| {
            let source = if entry.overridden {
                SOURCE_TOPIC
            } else {
                SOURCE_DEFAULT
            };
            (entry.name, entry.value, source, type_code(entry.kind))
        })
        .collect()
}
