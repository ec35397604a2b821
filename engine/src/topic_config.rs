//! Topic-level configuration with Kafka's names: which keys a topic may override, what values
//! each takes, the broker-wide default of each (from the broker's [`LogConfig`]), how
//! IncrementalAlterConfigs' operations change a topic's overrides, and the `LogConfig` a
//! topic's partitions run with once its overrides are applied.
//!
//! One table serves every use: checking overrides at topic creation and when they are altered,
//! describing them (DescribeConfigs, CreateTopics v5+), and opening (or re-configuring) a
//! partition's log with them.
//!
//! Each key has a kind (Kafka's INT, LONG, DOUBLE, STRING, LIST); a refused value's message names
//! the key, the value and what was expected. IncrementalAlterConfigs' SET, DELETE, APPEND and
//! SUBTRACT work as in Kafka: a list is appended to (or subtracted from) as it is in effect, the
//! broker's default if the topic has no value of its own. The cleanup policy decides both
//! background jobs, as in Kafka: retention deletes segments only when it includes `delete`, the
//! cleaner compacts only when it includes `compact`. The shard applies the `LogConfig` made here
//! (`shard::TopicLogConfig::from_catalog`).

use std::collections::BTreeMap;

use crate::config::{CleanupPolicy, LogConfig};

/// What values a key takes (Kafka's config types).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A 32-bit whole number (Kafka's INT), at least `min`.
    Int { min: i64 },
    /// A 64-bit whole number (Kafka's LONG), at least `min` (-1 meaning "no limit" where
    /// allowed).
    Long { min: i64 },
    /// A number within `min..=max` (Kafka's DOUBLE).
    Double { min: f64, max: f64 },
    /// One of these words (Kafka's STRING).
    OneOf(&'static [&'static str]),
    /// A comma-separated list of at least one of these words (Kafka's LIST).
    ListOf(&'static [&'static str]),
}

impl Kind {
    fn admits(self, value: &str) -> bool {
        match self {
            Kind::Int { min } => value
                .parse::<i32>()
                .is_ok_and(|number| i64::from(number) >= min),
            Kind::Long { min } => value.parse::<i64>().is_ok_and(|number| number >= min),
            Kind::Double { min, max } => value
                .parse::<f64>()
                .is_ok_and(|number| (min..=max).contains(&number)),
            Kind::OneOf(choices) => choices.contains(&value),
            Kind::ListOf(choices) => {
                let mut items = list_items(value).peekable();
                items.peek().is_some() && items.all(|item| choices.contains(&item))
            }
        }
    }

    fn expected(self) -> String {
        match self {
            Kind::Int { min } => format!("a whole number from {min} to {}", i32::MAX),
            Kind::Long { min } => format!("a whole number of at least {min}"),
            Kind::Double { min, max } => format!("a number from {min} to {max}"),
            Kind::OneOf(choices) => format!("one of {}", choices.join(", ")),
            Kind::ListOf(choices) => {
                format!(
                    "a comma-separated list of at least one of {}",
                    choices.join(", ")
                )
            }
        }
    }
}

/// The items of a list value, as Kafka reads them: split at commas, blanks trimmed, empty
/// items dropped.
fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
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

fn cleanup_policy_name(policy: CleanupPolicy) -> &'static str {
    match policy {
        CleanupPolicy::Delete => "delete",
        CleanupPolicy::Compact => "compact",
        CleanupPolicy::CompactAndDelete => "compact,delete",
    }
}

/// A (validated) `cleanup.policy` list as the policy it names; the words' order and repeats do
/// not matter.
fn parse_cleanup_policy(value: &str) -> Option<CleanupPolicy> {
    let has = |word| list_items(value).any(|item| item == word);
    match (has("compact"), has("delete")) {
        (true, true) => Some(CleanupPolicy::CompactAndDelete),
        (true, false) => Some(CleanupPolicy::Compact),
        (false, true) => Some(CleanupPolicy::Delete),
        (false, false) => None,
    }
}

const KEYS: &[Key] = &[
    Key {
        name: "cleanup.policy",
        kind: Kind::ListOf(&["delete", "compact"]),
        default: |log| cleanup_policy_name(log.cleanup_policy).into(),
        apply: |log, value| {
            if let Some(policy) = parse_cleanup_policy(value) {
                log.cleanup_policy = policy;
            }
        },
    },
    Key {
        name: "compression.type",
        // Batches are stored as the producer compressed them; no re-compression.
        kind: Kind::OneOf(&["producer"]),
        default: |_| "producer".into(),
        apply: |_, _| {},
    },
    Key {
        name: "delete.retention.ms",
        kind: Kind::Long { min: 0 },
        default: |log| log.delete_retention_ms.to_string(),
        apply: |log, value| {
            if let Ok(ms) = value.parse() {
                log.delete_retention_ms = ms;
            }
        },
    },
    Key {
        name: "max.compaction.lag.ms",
        kind: Kind::Long { min: 1 },
        default: |log| log.max_compaction_lag_ms.to_string(),
        apply: |log, value| {
            if let Ok(ms) = value.parse() {
                log.max_compaction_lag_ms = ms;
            }
        },
    },
    Key {
        name: "max.message.bytes",
        kind: Kind::Int { min: 0 },
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
        name: "min.cleanable.dirty.ratio",
        kind: Kind::Double { min: 0.0, max: 1.0 },
        default: |log| log.min_cleanable_dirty_ratio.to_string(),
        apply: |log, value| {
            if let Ok(ratio) = value.parse() {
                log.min_cleanable_dirty_ratio = ratio;
            }
        },
    },
    Key {
        name: "min.compaction.lag.ms",
        kind: Kind::Long { min: 0 },
        default: |log| log.min_compaction_lag_ms.to_string(),
        apply: |log, value| {
            if let Ok(ms) = value.parse() {
                log.min_compaction_lag_ms = ms;
            }
        },
    },
    Key {
        name: "min.insync.replicas",
        kind: Kind::Int { min: 1 },
        default: |log| log.min_insync_replicas.to_string(),
        apply: |log, value| {
            if let Ok(replicas) = value.parse() {
                log.min_insync_replicas = replicas;
            }
        },
    },
    Key {
        name: "retention.bytes",
        kind: Kind::Long { min: -1 },
        default: |log| limit(log.retention_bytes_max),
        apply: |log, value| log.retention_bytes_max = parse_limit(value),
    },
    Key {
        name: "retention.ms",
        kind: Kind::Long { min: -1 },
        default: |log| limit(log.retention_age_ms_max),
        apply: |log, value| log.retention_age_ms_max = parse_limit(value),
    },
    Key {
        name: "segment.bytes",
        kind: Kind::Int { min: 14 },
        default: |log| log.segment_bytes_max.to_string(),
        apply: |log, value| {
            if let Ok(bytes) = value.parse() {
                log.segment_bytes_max = bytes;
            }
        },
    },
    Key {
        name: "segment.ms",
        kind: Kind::Long { min: 1 },
        default: |log| limit(log.segment_age_ms_max),
        apply: |log, value| log.segment_age_ms_max = parse_limit(value),
    },
    Key {
        name: "unclean.leader.election.enable",
        // Consistency over availability, and not negotiable: a partition's new leader is always
        // elected by a majority and holds everything committed (Raft), so no acknowledged write
        // is ever given up to bring a partition back sooner.
        kind: Kind::OneOf(&["false"]),
        default: |_| "false".into(),
        apply: |_, _| {},
    },
];

fn key(name: &str) -> Result<&'static Key, String> {
    KEYS.iter()
        .find(|key| key.name == name)
        .ok_or_else(|| format!("unknown topic config '{name}'"))
}

/// One key as described to a client.
#[derive(Debug, Clone, PartialEq)]
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
/// configuration that holds together. `Err` says which key or
/// value is wrong and why.
pub fn validate(broker: &LogConfig, overrides: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in overrides {
        let key = key(name)?;
        if !key.kind.admits(value) {
            return Err(format!(
                "invalid value '{value}' for topic config '{name}': expected {}",
                key.kind.expected()
            ));
        }
    }
    let log = apply(broker, overrides);
    log.validate().map_err(|reason| {
        let given: Vec<String> = overrides
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        format!(
            "topic configs {} do not fit together: {reason}",
            given.join(", ")
        )
    })
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

/// IncrementalAlterConfigs' operations on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Override the key with the value.
    Set,
    /// Remove the override: the key takes the broker's default again.
    Delete,
    /// Add the value's items to a list-valued key (those it does not hold yet).
    Append,
    /// Remove the value's items from a list-valued key.
    Subtract,
}

impl Operation {
    /// Kafka's name for it (AlterConfigOp.OpType).
    pub fn name(self) -> &'static str {
        match self {
            Operation::Set => "SET",
            Operation::Delete => "DELETE",
            Operation::Append => "APPEND",
            Operation::Subtract => "SUBTRACT",
        }
    }
}

/// Applies one operation to a topic's `overrides`. A list is appended to or subtracted from as
/// it is in effect (the override, or else the broker's default). `Err` says why the operation
/// cannot apply; the values themselves are checked afterwards, by [`validate`], on the whole
/// result.
pub fn change(
    broker: &LogConfig,
    overrides: &mut BTreeMap<String, String>,
    name: &str,
    operation: Operation,
    value: Option<&str>,
) -> Result<(), String> {
    let key = key(name)?;
    let new_value = match (operation, value) {
        (Operation::Delete, _) => {
            overrides.remove(name);
            return Ok(());
        }
        (_, None) => {
            return Err(format!(
                "{} of topic config '{name}' needs a value",
                operation.name()
            ))
        }
        (Operation::Set, Some(value)) => value.to_owned(),
        (Operation::Append | Operation::Subtract, Some(value)) => {
            if !matches!(key.kind, Kind::ListOf(_)) {
                return Err(format!(
                    "{} applies to list-valued topic configs only; '{name}' is {}",
                    operation.name(),
                    key.kind.expected()
                ));
            }
            let current = overrides
                .get(name)
                .cloned()
                .unwrap_or_else(|| (key.default)(broker));
            let mut items: Vec<&str> = list_items(&current).collect();
            for item in list_items(value) {
                if operation == Operation::Append && !items.contains(&item) {
                    items.push(item);
                }
                if operation == Operation::Subtract {
                    items.retain(|kept| *kept != item);
                }
            }
            items.join(",")
        }
    };
    overrides.insert(name.to_owned(), new_value);
    Ok(())
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

    fn check(name: &str, value: &str) -> Result<(), String> {
        validate(&LogConfig::default(), &overrides(&[(name, value)]))
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
    fn every_key_has_kafkas_default() {
        let defaults: BTreeMap<&str, String> = entries(&LogConfig::default(), &BTreeMap::new())
            .into_iter()
            .map(|entry| {
                assert!(!entry.overridden);
                (entry.name, entry.value)
            })
            .collect();
        let expected = [
            ("cleanup.policy", "delete"),
            ("compression.type", "producer"),
            ("delete.retention.ms", "86400000"),
            ("max.compaction.lag.ms", "9223372036854775807"),
            ("max.message.bytes", "1048588"),
            ("message.timestamp.type", "CreateTime"),
            ("min.cleanable.dirty.ratio", "0.5"),
            ("min.compaction.lag.ms", "0"),
            ("min.insync.replicas", "1"),
            ("retention.bytes", "-1"),
            ("retention.ms", "604800000"),
            ("segment.bytes", "1073741824"),
            ("segment.ms", "604800000"),
            ("unclean.leader.election.enable", "false"),
        ];
        assert_eq!(defaults.len(), expected.len());
        for (name, value) in expected {
            assert_eq!(defaults[name], value, "{name}");
            assert_eq!(check(name, value), Ok(()), "a default is a valid override");
        }
    }

    #[test]
    fn every_key_takes_good_values_and_says_why_it_refuses_bad_ones() {
        let good: &[(&str, &[&str])] = &[
            ("cleanup.policy", &["delete", " delete ", "delete,delete"]),
            ("compression.type", &["producer"]),
            (
                "delete.retention.ms",
                &["0", "86400000", "9223372036854775807"],
            ),
            ("max.compaction.lag.ms", &["1", "60000"]),
            ("max.message.bytes", &["100", "1048588"]),
            ("message.timestamp.type", &["CreateTime"]),
            (
                "min.cleanable.dirty.ratio",
                &["0", "0.01", "0.5", "1", "1.0"],
            ),
            ("min.compaction.lag.ms", &["0", "3600000"]),
            ("min.insync.replicas", &["1", "2"]),
            ("retention.bytes", &["-1", "0", "1073741824"]),
            ("retention.ms", &["-1", "0", "60000"]),
            ("segment.bytes", &["1024", "2147483647"]),
            ("segment.ms", &["1", "3600000"]),
            ("unclean.leader.election.enable", &["false"]),
        ];
        for (name, values) in good {
            for value in *values {
                assert_eq!(check(name, value), Ok(()), "{name}={value}");
            }
        }
        let bad: &[(&str, &str, &str)] = &[
            (
                "cleanup.policy",
                "",
                "a comma-separated list of at least one of delete, compact",
            ),
            (
                "cleanup.policy",
                "remove",
                "a comma-separated list of at least one of delete",
            ),
            (
                "cleanup.policy",
                "delete,nothing",
                "list of at least one of delete, compact",
            ),
            ("compression.type", "gzip", "expected one of producer"),
            ("delete.retention.ms", "-1", "a whole number of at least 0"),
            ("delete.retention.ms", "1.5", "a whole number of at least 0"),
            ("max.compaction.lag.ms", "0", "a whole number of at least 1"),
            (
                "max.message.bytes",
                "-1",
                "a whole number from 0 to 2147483647",
            ),
            (
                "max.message.bytes",
                "2147483648",
                "a whole number from 0 to 2147483647",
            ),
            (
                "message.timestamp.type",
                "LogAppendTime",
                "expected one of CreateTime",
            ),
            ("min.cleanable.dirty.ratio", "1.5", "a number from 0 to 1"),
            ("min.cleanable.dirty.ratio", "-0.1", "a number from 0 to 1"),
            ("min.cleanable.dirty.ratio", "NaN", "a number from 0 to 1"),
            ("min.cleanable.dirty.ratio", "half", "a number from 0 to 1"),
            (
                "min.compaction.lag.ms",
                "-5",
                "a whole number of at least 0",
            ),
            (
                "min.insync.replicas",
                "0",
                "a whole number from 1 to 2147483647",
            ),
            ("retention.bytes", "-2", "a whole number of at least -1"),
            ("unclean.leader.election.enable", "true", "one of false"),
            ("retention.ms", "soon", "a whole number of at least -1"),
            (
                "segment.bytes",
                "13",
                "a whole number from 14 to 2147483647",
            ),
            // A valid INT, but smaller than one batch header: the log could not hold a batch.
            (
                "segment.bytes",
                "20",
                "do not fit together: segment_bytes_max is smaller",
            ),
            ("segment.ms", "0", "a whole number of at least 1"),
        ];
        for (name, value, reason) in bad {
            let error = check(name, value).unwrap_err();
            assert!(
                error.contains(name) && error.contains(reason),
                "{name}={value}: {error}"
            );
        }
        let error = check("no.such.key", "1").unwrap_err();
        assert_eq!(error, "unknown topic config 'no.such.key'");
        // Larger than the broker's unflushed-bytes bound: does not fit.
        let error = check("max.message.bytes", "1000000000").unwrap_err();
        assert!(error.contains("fit together"), "{error}");
        let error = validate(
            &LogConfig::default(),
            &overrides(&[
                ("min.compaction.lag.ms", "10"),
                ("max.compaction.lag.ms", "5"),
            ]),
        )
        .unwrap_err();
        assert!(
            error.contains("min.compaction.lag.ms (10) is greater than max.compaction.lag.ms (5)"),
            "{error}"
        );
    }

    #[test]
    fn every_cleanup_policy_is_accepted_and_applied() {
        for value in [
            "delete",
            "compact",
            "compact,delete",
            "delete,compact",
            "delete, compact",
        ] {
            assert_eq!(check("cleanup.policy", value), Ok(()), "{value}");
        }
        let broker = LogConfig::default();
        for (value, policy) in [
            ("delete", CleanupPolicy::Delete),
            ("compact", CleanupPolicy::Compact),
            ("compact,delete", CleanupPolicy::CompactAndDelete),
            ("delete,compact", CleanupPolicy::CompactAndDelete),
        ] {
            let log = apply(&broker, &overrides(&[("cleanup.policy", value)]));
            assert_eq!(log.cleanup_policy, policy, "{value}");
        }
    }

    #[test]
    fn every_key_reaches_the_log_config() {
        let log = apply(
            &LogConfig::default(),
            &overrides(&[
                ("delete.retention.ms", "1000"),
                ("max.compaction.lag.ms", "9000"),
                ("max.message.bytes", "5000"),
                ("min.cleanable.dirty.ratio", "0.25"),
                ("min.compaction.lag.ms", "2000"),
                ("retention.bytes", "123456"),
                ("segment.bytes", "65536"),
                ("segment.ms", "60000"),
            ]),
        );
        assert_eq!(log.delete_retention_ms, 1000);
        assert_eq!(log.max_compaction_lag_ms, 9000);
        assert_eq!(log.batch_bytes_max, 5000);
        assert_eq!(log.min_cleanable_dirty_ratio, 0.25);
        assert_eq!(log.min_compaction_lag_ms, 2000);
        assert_eq!(log.retention_bytes_max, Some(123_456));
        assert_eq!(log.segment_bytes_max, 65_536);
        assert_eq!(log.segment_age_ms_max, Some(60_000));
    }

    #[test]
    fn incremental_operations_change_overrides_and_lists() {
        let broker = LogConfig::default();
        let mut set = overrides(&[("retention.ms", "1000")]);
        change(
            &broker,
            &mut set,
            "segment.ms",
            Operation::Set,
            Some("5000"),
        )
        .unwrap();
        change(&broker, &mut set, "retention.ms", Operation::Delete, None).unwrap();
        // Deleting what is not overridden changes nothing.
        change(
            &broker,
            &mut set,
            "retention.bytes",
            Operation::Delete,
            None,
        )
        .unwrap();
        assert_eq!(set, overrides(&[("segment.ms", "5000")]));

        // APPEND starts from the broker's default when the topic has no override.
        change(
            &broker,
            &mut set,
            "cleanup.policy",
            Operation::Append,
            Some("compact"),
        )
        .unwrap();
        assert_eq!(set["cleanup.policy"], "delete,compact");
        change(
            &broker,
            &mut set,
            "cleanup.policy",
            Operation::Append,
            Some("delete"),
        )
        .unwrap();
        assert_eq!(set["cleanup.policy"], "delete,compact", "no repeats");
        change(
            &broker,
            &mut set,
            "cleanup.policy",
            Operation::Subtract,
            Some("delete"),
        )
        .unwrap();
        assert_eq!(set["cleanup.policy"], "compact");
        change(
            &broker,
            &mut set,
            "cleanup.policy",
            Operation::Subtract,
            Some("compact"),
        )
        .unwrap();
        assert_eq!(set["cleanup.policy"], "");
        let error = validate(&broker, &set).unwrap_err();
        assert!(error.contains("at least one of delete, compact"), "{error}");

        let error = change(
            &broker,
            &mut set,
            "retention.ms",
            Operation::Append,
            Some("1"),
        )
        .unwrap_err();
        assert_eq!(
            error,
            "APPEND applies to list-valued topic configs only; 'retention.ms' is a whole \
             number of at least -1"
        );
        let error = change(&broker, &mut set, "segment.ms", Operation::Set, None).unwrap_err();
        assert_eq!(error, "SET of topic config 'segment.ms' needs a value");
        let error = change(&broker, &mut set, "bogus", Operation::Delete, None).unwrap_err();
        assert_eq!(error, "unknown topic config 'bogus'");
    }
}
