//! Topic-level configuration with Kafka's names: which keys a topic may override, what values
//! each takes, the broker-wide default of each (from the broker's [`LogConfig`]), and the
//! `LogConfig` a topic's partitions run with once its overrides are applied.
//!
//! One table serves every use: checking overrides at topic creation, describing them
//! (DescribeConfigs, CreateTopics v5+), and opening a partition's log with them.

use std::collections::BTreeMap;

use crate::config::LogConfig;

/// What values a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number, at least the given minimum (-1 meaning "no limit" where allowed).
    Integer { min: i64 },
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// One topic-level key.
struct Key {
    name: &'static str,
    kind: Kind,
    default: fn(&LogConfig) -> String,
    /// Sets the key's (validated) value into a topic's log configuration; keys that do not
    /// change how the log behaves here leave it as it is.
    apply: fn(&mut LogConfig, &str),
}

fn limit(value: Option<u64>) -> String {
    value.map_or(-1, |value| value as i64).to_string()
}

/// A number, with -1 (or any negative) meaning "no limit".
fn parse_limit(value: &str) -> Option<u64> {
    value
        .parse::<i64>()
        .ok()
        .and_then(|number| u64::try_from(number).ok())
}

const KEYS: &[Key] = &[
    Key {
        name: "cleanup.policy",
        // Compaction is not implemented yet: only deletion by retention.
        kind: Kind::OneOf(&["delete"]),
        default: |_| "delete".into(),
        apply: |_, _| {},
    },
    Key {
        name: "compression.type",
        // Batches are stored as the producer compressed them; no re-compression.
        kind: Kind::OneOf(&["producer"]),
        default: |_| "producer".into(),
        apply: |_, _| {},
    },
    Key {
        name: "max.message.bytes",
        kind: Kind::Integer { min: 0 },
        default: |log| log.batch_bytes_max.to_string(),
        apply: |log, value| {
            if let Ok(bytes) = value.parse() {
                log.batch_bytes_max = bytes;
            }
        },
    },
    Key {
        name: "message.timestamp.type",
        kind: Kind::OneOf(&["CreateTime"]),
        default: |_| "CreateTime".into(),
        apply: |_, _| {},
    },
    Key {
        name: "min.insync.replicas",
        kind: Kind::Integer { min: 1 },
        default: |_| "1".into(),
        apply: |_, _| {},
    },
    Key {
        name: "retention.bytes",
        kind: Kind::Integer { min: -1 },
        default: |log| limit(log.retention_bytes_max),
        apply: |log, value| log.retention_bytes_max = parse_limit(value),
    },
    Key {
        name: "retention.ms",
        kind: Kind::Integer { min: -1 },
        default: |log| limit(log.retention_age_ms_max),
        apply: |log, value| log.retention_age_ms_max = parse_limit(value),
    },
    Key {
        name: "segment.bytes",
        kind: Kind::Integer { min: 14 },
        default: |log| log.segment_bytes_max.to_string(),
        apply: |log, value| {
            if let Ok(bytes) = value.parse() {
                log.segment_bytes_max = bytes;
            }
        },
    },
    Key {
        name: "segment.ms",
        kind: Kind::Integer { min: 1 },
        default: |log| limit(log.segment_age_ms_max),
        apply: |log, value| log.segment_age_ms_max = parse_limit(value),
    },
];

/// One key as described to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: &'static str,
    pub value: String,
    pub kind: Kind,
    /// Set on the topic rather than inherited from the broker.
    pub overridden: bool,
}

/// Every key with its effective value for a topic with these overrides.
pub fn entries(broker: &LogConfig, overrides: &BTreeMap<String, String>) -> Vec<Entry> {
    KEYS.iter()
        .map(|key| match overrides.get(key.name) {
            Some(value) => Entry {
                name: key.name,
                value: value.clone(),
                kind: key.kind,
                overridden: true,
            },
            None => Entry {
                name: key.name,
                value: (key.default)(broker),
                kind: key.kind,
                overridden: false,
            },
        })
        .collect()
}

/// Checks a topic's overrides: known keys, values of the right kind, and a resulting log
/// configuration that holds together. `Err` says which key or value is wrong and why.
pub fn validate(broker: &LogConfig, overrides: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in overrides {
        let Some(key) = KEYS.iter().find(|key| key.name == name) else {
            return Err(format!("unknown topic config '{name}'"));
        };
        let valid = match key.kind {
            Kind::Integer { min } => value.parse::<i64>().is_ok_and(|number| number >= min),
            Kind::OneOf(choices) => choices.contains(&value.as_str()),
        };
        if !valid {
            let expected = match key.kind {
                Kind::Integer { min } => format!("a whole number of at least {min}"),
                Kind::OneOf(choices) => format!("one of {}", choices.join(", ")),
            };
            return Err(format!(
                "invalid value '{value}' for topic config '{name}': expected {expected}"
            ));
        }
    }
    apply(broker, overrides)
        .validate()
        .map_err(|reason| format!("these topic configs do not fit together: {reason}"))
}

/// The log configuration of a topic's partitions: the broker's, with the topic's overrides.
pub fn apply(broker: &LogConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut log = broker.clone();
    for key in KEYS {
        if let Some(value) = overrides.get(key.name) {
            (key.apply)(&mut log, value);
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn overrides_are_checked_described_and_applied() {
        let broker = LogConfig::default();
        let set = overrides(&[("retention.ms", "60000"), ("segment.bytes", "1048576")]);
        assert_eq!(validate(&broker, &set), Ok(()));
        let described = entries(&broker, &set);
        let retention = described
            .iter()
            .find(|entry| entry.name == "retention.ms")
            .unwrap();
        assert_eq!(
            (retention.value.as_str(), retention.overridden),
            ("60000", true)
        );
        let size = described
            .iter()
            .find(|entry| entry.name == "retention.bytes")
            .unwrap();
        assert_eq!((size.value.as_str(), size.overridden), ("-1", false));
        let log = apply(&broker, &set);
        assert_eq!(log.retention_age_ms_max, Some(60_000));
        assert_eq!(log.segment_bytes_max, 1 << 20);
        assert_eq!(
            apply(&broker, &overrides(&[("retention.ms", "-1")])).retention_age_ms_max,
            None,
            "-1 is no limit"
        );
    }

    #[test]
    fn bad_overrides_say_what_is_wrong() {
        let broker = LogConfig::default();
        let error = |pairs| validate(&broker, &overrides(pairs)).unwrap_err();
        assert!(error(&[("no.such.key", "1")]).contains("no.such.key"));
        assert!(error(&[("retention.ms", "soon")]).contains("whole number"));
        assert!(error(&[("cleanup.policy", "compact")]).contains("one of delete"));
        assert!(error(&[("compression.type", "gzip")]).contains("producer"));
        // Larger than the broker's unflushed-bytes bound: does not fit.
        assert!(error(&[("max.message.bytes", "1000000000")]).contains("fit together"));
    }
}
