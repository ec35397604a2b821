//! `ferrite topic create|list|describe|alter|delete|reassign|reassignments`: topic
//! administration over the Kafka protocol (CreateTopics, Metadata, ListOffsets,
//! DescribeConfigs, IncrementalAlterConfigs, DeleteTopics, AlterPartitionReassignments,
//! ListPartitionReassignments), so it works against any Kafka-compatible broker.
//!
//! Output is one line per fact, for people and for `grep`/`awk` alike. A command given several
//! topics handles each one, reports every failure on stderr, and exits 1 if any failed.

use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    ListPartitionReassignmentsRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin::{AdminError, BrokerArguments, ADMIN_TIMEOUT, EXIT_CODES_HELP};
use crate::client::cluster::{
    topic_name, Cluster, TopicMetadata, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};

/// DescribeConfigs' and IncrementalAlterConfigs' resource type for a topic.
const TOPIC_RESOURCE_TYPE: i8 = 2;
/// DescribeConfigs' config source for a value set on the topic itself.
const DYNAMIC_TOPIC_CONFIG_SOURCE: i8 = 1;

#[derive(clap::Args)]
pub struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create a topic.
    #[command(after_help = EXIT_CODES_HELP)]
    Create {
        #[command(flatten)]
        broker: BrokerArguments,
        /// The topic's name.
        name: String,
        /// How many partitions (at least 1).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
        partitions: i32,
        /// How many copies of each partition (at least 1, at most the number of brokers).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i16).range(1..))]
        replication_factor: i16,
        /// A topic setting, e.g. `--config retention.ms=86400000`; repeat for more.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
        configs: Vec<(String, String)>,
    },
    /// Print the name of every topic, one per line, sorted; the broker's internal topics
    /// (`__consumer_offsets`) only with --include-internal.
    #[command(after_help = EXIT_CODES_HELP)]
    List {
        #[command(flatten)]
        broker: BrokerArguments,
        /// List internal topics too.
        #[arg(long)]
        include_internal: bool,
    },
    /// Print each topic's partitions (leader, replicas, in-sync replicas, log start and
    /// high-water offsets) and the settings made on it.
    #[command(after_help = EXIT_CODES_HELP)]
    Describe {
        #[command(flatten)]
        broker: BrokerArguments,
        /// The topics to describe.
        #[arg(required = true)]
        names: Vec<String>,
        /// Print every setting with where its value comes from, not only those set on the topic.
        #[arg(long)]
        all_configs: bool,
    },
    /// Change a topic's settings: set them, delete them (the broker's default applies again),
    /// or add items to and remove items from a list such as cleanup.policy. The changes are
    /// checked together and made together, or none is.
    #[command(after_help = EXIT_CODES_HELP)]
    #[command(group(clap::ArgGroup::new("changes")
        .required(true)
        .multiple(true)
        .args(["set", "delete", "append", "subtract"])))]
    Alter {
        #[command(flatten)]
        broker: BrokerArguments,
        /// The topic's name.
        name: String,
        /// Set a setting, e.g. `--set retention.ms=86400000`; repeat for more.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_config)]
        set: Vec<(String, String)>,
        /// Remove the topic's own value of a setting, e.g. `--delete retention.ms`; repeat for
        /// more.
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
        /// Add items to a list-valued setting, e.g. `--append cleanup.policy=compact`.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_config)]
        append: Vec<(String, String)>,
        /// Remove items from a list-valued setting, e.g. `--subtract cleanup.policy=delete`.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_config)]
        subtract: Vec<(String, String)>,
        /// Have the broker check the changes without making them.
        #[arg(long)]
        validate_only: bool,
    },
    /// Delete topics and all their messages.
    #[command(after_help = EXIT_CODES_HELP)]
    Delete {
        #[command(flatten)]
        broker: BrokerArguments,
        /// The topics to delete.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Move a partition to other brokers (the first named becomes its preferred leader), or
    /// cancel its move. The move goes on in the background; --wait waits until it is done.
    #[command(after_help = EXIT_CODES_HELP)]
    #[command(group(clap::ArgGroup::new("target")
        .required(true)
        .args(["replicas", "cancel"])))]
    Reassign {
        #[command(flatten)]
        broker: BrokerArguments,
        /// The topic's name.
        name: String,
        /// The partition to move.
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        partition: i32,
        /// The brokers to move it to, e.g. `--replicas 2,3`.
        #[arg(long, value_delimiter = ',', value_name = "ID,...")]
        replicas: Vec<i32>,
        /// Cancel the partition's move: it goes back to the brokers it had before.
        #[arg(long)]
        cancel: bool,
        /// Wait until the move (or its cancellation) is complete.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 300)]
        wait_timeout_s: u64,
    },
    /// Print each partition being moved (of TOPIC only, if given): its replicas, and those
    /// being added and removed. Prints nothing if none is moving.
    #[command(after_help = EXIT_CODES_HELP)]
    Reassignments {
        #[command(flatten)]
        broker: BrokerArguments,
        /// Only this topic's partitions.
        name: Option<String>,
    },
}

fn parse_config(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

pub fn run(arguments: Arguments) -> std::process::ExitCode {
    let outcome = match arguments.command {
        Command::Create {
            broker,
            name,
            partitions,
            replication_factor,
            configs,
        } => create(&broker, &name, partitions, replication_factor, &configs),
        Command::List {
            broker,
            include_internal,
        } => list(&broker, include_internal),
        Command::Describe {
            broker,
            names,
            all_configs,
        } => describe(&broker, &names, all_configs),
        Command::Alter {
            broker,
            name,
            set,
            delete,
            append,
            subtract,
            validate_only,
        } => {
            let changes = Changes {
                set,
                delete,
                append,
                subtract,
            };
            alter(&broker, &name, &changes, validate_only)
        }
        Command::Delete { broker, names } => delete(&broker, &names),
        Command::Reassign {
            broker,
            name,
            partition,
            replicas,
            cancel,
            wait,
            wait_timeout_s,
        } => {
            let target = (!cancel).then_some(replicas.as_slice());
            let wait = wait.then(|| Duration::from_secs(wait_timeout_s));
            reassign(&broker, &name, partition, target, wait)
        }
        Command::Reassignments { broker, name } => reassignments(&broker, name.as_deref()),
    };
    crate::admin::exit("topic", outcome)
}

fn create(
    broker: &BrokerArguments,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let connection = cluster.bootstrap()?;
    let version = connection.version::<CreateTopicsRequest>()?;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(timeout_ms(ADMIN_TIMEOUT))
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(key, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(key.clone()))
                            .with_value(Some(StrBytes::from_string(value.clone())))
                    })
                    .collect(),
            )]);
    let response = connection.send(&request, version, ADMIN_TIMEOUT)?;
    let result = response
        .topics
        .iter()
        .find(|result| result.name.as_str() == name);
    topic_outcome("CreateTopics", name, result, |result| {
        (result.error_code, result.error_message.as_ref())
    })?;
    println!("created topic {name} with {partitions} partition(s)");
    Ok(())
}

fn list(broker: &BrokerArguments, include_internal: bool) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let response = cluster.metadata(None)?;
    let mut names: Vec<&str> = response
        .topics
        .iter()
        .filter(|topic| include_internal || !topic.is_internal)
        .filter_map(|topic| topic.name.as_ref().map(|name| name.as_str()))
        .collect();
    names.sort_unstable();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

fn describe(
    broker: &BrokerArguments,
    names: &[String],
    all_configs: bool,
) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let failures: Vec<AdminError> = names
        .iter()
        .filter_map(|name| describe_one(&mut cluster, name, all_configs).err())
        .collect();
    AdminError::all(failures)
}

fn describe_one(cluster: &mut Cluster, name: &str, all_configs: bool) -> Result<(), AdminError> {
    let topic = cluster.topic(name)?;
    let partitions: Vec<i32> = topic
        .partitions
        .iter()
        .map(|partition| partition.index)
        .collect();
    let log_starts = cluster.offsets_at(&topic, &partitions, EARLIEST_TIMESTAMP)?;
    let high_waters = cluster.offsets_at(&topic, &partitions, LATEST_TIMESTAMP)?;
    let replication_factor = topic
        .partitions
        .first()
        .map_or(0, |partition| partition.replicas.len());
    println!(
        "topic {name} partitions {} replication-factor {replication_factor}",
        topic.partitions.len()
    );
    for partition in &topic.partitions {
        let offset = |offsets: &std::collections::BTreeMap<i32, Option<i64>>| {
            offsets
                .get(&partition.index)
                .copied()
                .flatten()
                .map_or("unknown".to_string(), |offset| offset.to_string())
        };
        println!(
            "  partition {} leader {} replicas {} in-sync {} log-start {} high-water {}",
            partition.index,
            partition.leader,
            broker_list(&partition.replicas),
            broker_list(&partition.in_sync_replicas),
            offset(&log_starts),
            offset(&high_waters),
        );
    }
    print_configs(cluster, &topic, all_configs)
}

fn broker_list(brokers: &[i32]) -> String {
    let names: Vec<String> = brokers.iter().map(i32::to_string).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(",")
    }
}

/// Prints `  config KEY=VALUE` lines, if the broker answers DescribeConfigs at all.
fn print_configs(
    cluster: &mut Cluster,
    topic: &TopicMetadata,
    all_configs: bool,
) -> Result<(), AdminError> {
    let connection = cluster.bootstrap()?;
    let Ok(version) = connection.version::<DescribeConfigsRequest>() else {
        println!("  configs unavailable (the broker does not support DescribeConfigs)");
        return Ok(());
    };
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE_TYPE)
            .with_resource_name(StrBytes::from_string(topic.name.clone()))
            .with_configuration_keys(None)]);
    let response: DescribeConfigsResponse = connection.send(&request, version, Duration::ZERO)?;
    for result in &response.results {
        if let Some(error) = AdminError::from_code(
            format!("configs of topic {}", topic.name),
            result.error_code,
            result.error_message.as_ref().map(StrBytes::as_str),
        ) {
            return Err(error);
        }
        let mut configs: Vec<_> = result
            .configs
            .iter()
            .filter(|config| all_configs || config.config_source == DYNAMIC_TOPIC_CONFIG_SOURCE)
            .collect();
        configs.sort_by(|left, right| left.name.as_str().cmp(right.name.as_str()));
        for config in configs {
            let value = match (&config.value, config.is_sensitive) {
                (_, true) => "(sensitive)",
                (Some(value), false) => value.as_str(),
                (None, false) => "(null)",
            };
            if all_configs {
                println!(
                    "  config {}={value} source {}",
                    config.name.as_str(),
                    config_source_name(config.config_source)
                );
            } else {
                println!("  config {}={value}", config.name.as_str());
            }
        }
    }
    Ok(())
}

/// Kafka's names for DescribeConfigs' config sources.
fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "topic",
        2 => "dynamic-broker",
        3 => "dynamic-default-broker",
        4 => "static-broker",
        5 => "default",
        6 => "dynamic-broker-logger",
        7 => "client-metrics",
        8 => "group",
        _ => "unknown",
    }
}

/// What `topic alter` changes, by IncrementalAlterConfigs operation.
struct Changes {
    set: Vec<(String, String)>,
    delete: Vec<String>,
    append: Vec<(String, String)>,
    subtract: Vec<(String, String)>,
}

impl Changes {
    /// Each change as IncrementalAlterConfigs carries it (operations: 0 SET, 1 DELETE,
    /// 2 APPEND, 3 SUBTRACT).
    fn to_configs(&self) -> Vec<AlterableConfig> {
        let config = |name: &str, operation: i8, value: Option<&str>| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(name.to_owned()))
                .with_config_operation(operation)
                .with_value(value.map(|value| StrBytes::from_string(value.to_owned())))
        };
        let with_values = [(0, &self.set), (2, &self.append), (3, &self.subtract)];
        with_values
            .into_iter()
            .flat_map(|(operation, pairs)| {
                pairs
                    .iter()
                    .map(move |(name, value)| config(name, operation, Some(value)))
            })
            .chain(self.delete.iter().map(|name| config(name, 1, None)))
            .collect()
    }
}

fn alter(
    broker: &BrokerArguments,
    name: &str,
    changes: &Changes,
    validate_only: bool,
) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let connection = cluster.bootstrap()?;
    let version = connection.version::<IncrementalAlterConfigsRequest>()?;
    let request = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE_TYPE)
            .with_resource_name(StrBytes::from_string(name.to_owned()))
            .with_configs(changes.to_configs())]);
    let response = connection.send(&request, version, Duration::ZERO)?;
    let result = response
        .responses
        .iter()
        .find(|result| result.resource_name.as_str() == name);
    topic_outcome("IncrementalAlterConfigs", name, result, |result| {
        (result.error_code, result.error_message.as_ref())
    })?;
    if validate_only {
        println!("the changes to topic {name} are valid (nothing was changed)");
    } else {
        println!("altered topic {name}");
    }
    Ok(())
}

fn delete(broker: &BrokerArguments, names: &[String]) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let connection = cluster.bootstrap()?;
    let version = connection.version::<DeleteTopicsRequest>()?;
    let request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms(ADMIN_TIMEOUT));
    // Version 6 names topics in `topics` (by name or id); earlier ones in `topic_names`.
    let request = if version >= 6 {
        request.with_topics(
            names
                .iter()
                .map(|name| DeleteTopicState::default().with_name(Some(topic_name(name))))
                .collect(),
        )
    } else {
        request.with_topic_names(names.iter().map(|name| topic_name(name)).collect())
    };
    let response = connection.send(&request, version, ADMIN_TIMEOUT)?;
    let mut failures = Vec::new();
    for name in names {
        let result = response.responses.iter().find(|result| {
            result
                .name
                .as_ref()
                .is_some_and(|answered| answered.as_str() == name)
        });
        let outcome = topic_outcome("DeleteTopics", name, result, |result| {
            (result.error_code, result.error_message.as_ref())
        });
        match outcome {
            Ok(()) => println!("deleted topic {name}"),
            Err(error) => failures.push(error),
        }
    }
    AdminError::all(failures)
}

/// Sends the move of `partition` to `target` (`None`: its cancellation) and, with `wait`,
/// waits up to that long until it no longer shows in ListPartitionReassignments.
fn reassign(
    broker: &BrokerArguments,
    name: &str,
    partition: i32,
    target: Option<&[i32]>,
    wait: Option<Duration>,
) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let connection = cluster.bootstrap()?;
    let version = connection.version::<AlterPartitionReassignmentsRequest>()?;
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(timeout_ms(ADMIN_TIMEOUT))
        .with_topics(vec![ReassignableTopic::default()
            .with_name(topic_name(name))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(
                    target.map(|ids| ids.iter().copied().map(BrokerId).collect()),
                )])]);
    let response = connection.send(&request, version, ADMIN_TIMEOUT)?;
    if let Some(error) = AdminError::from_code(
        "AlterPartitionReassignments",
        response.error_code,
        response.error_message.as_ref().map(StrBytes::as_str),
    ) {
        return Err(error);
    }
    let result = response
        .responses
        .iter()
        .filter(|topic| topic.name.as_str() == name)
        .flat_map(|topic| &topic.partitions)
        .find(|result| result.partition_index == partition);
    topic_outcome("AlterPartitionReassignments", name, result, |result| {
        (result.error_code, result.error_message.as_ref())
    })?;
    match target {
        Some(ids) => println!(
            "reassigning topic {name} partition {partition} to {}",
            broker_list(ids)
        ),
        None => println!("cancelling the reassignment of topic {name} partition {partition}"),
    }
    let Some(wait) = wait else {
        return Ok(());
    };
    let deadline = Instant::now() + wait;
    while ongoing(&mut cluster)?
        .iter()
        .any(|moving| moving.topic == name && moving.partition == partition)
    {
        if Instant::now() > deadline {
            return Err(AdminError::Cluster(format!(
                "topic {name} partition {partition} is still moving after {} s",
                wait.as_secs()
            )));
        }
        std::thread::sleep(REASSIGNMENT_POLL);
    }
    println!("topic {name} partition {partition} is no longer moving");
    Ok(())
}

/// How often `reassign --wait` asks whether the move is done.
const REASSIGNMENT_POLL: Duration = Duration::from_millis(200);

/// One partition's move, as ListPartitionReassignments gives it.
struct Ongoing {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
    adding: Vec<i32>,
    removing: Vec<i32>,
}

fn ongoing(cluster: &mut Cluster) -> Result<Vec<Ongoing>, AdminError> {
    let connection = cluster.bootstrap()?;
    let version = connection.version::<ListPartitionReassignmentsRequest>()?;
    let request = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(timeout_ms(ADMIN_TIMEOUT))
        .with_topics(None);
    let response = connection.send(&request, version, ADMIN_TIMEOUT)?;
    if let Some(error) = AdminError::from_code(
        "ListPartitionReassignments",
        response.error_code,
        response.error_message.as_ref().map(StrBytes::as_str),
    ) {
        return Err(error);
    }
    let ids = |brokers: &[BrokerId]| brokers.iter().map(|id| id.0).collect::<Vec<i32>>();
    Ok(response
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| Ongoing {
                topic: topic.name.to_string(),
                partition: partition.partition_index,
                replicas: ids(&partition.replicas),
                adding: ids(&partition.adding_replicas),
                removing: ids(&partition.removing_replicas),
            })
        })
        .collect())
}

fn reassignments(broker: &BrokerArguments, name: Option<&str>) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let mut moves = ongoing(&mut cluster)?;
    moves.retain(|moving| name.is_none_or(|name| moving.topic == name));
    moves
        .sort_by(|left, right| (&left.topic, left.partition).cmp(&(&right.topic, right.partition)));
    for moving in moves {
        println!(
            "topic {} partition {} replicas {} adding {} removing {}",
            moving.topic,
            moving.partition,
            broker_list(&moving.replicas),
            broker_list(&moving.adding),
            broker_list(&moving.removing),
        );
    }
    Ok(())
}

/// What a response's result for topic `name` says: `Ok`, the error it names (with the
/// broker's message), or an error saying the `api` response left the topic out.
fn topic_outcome<Answer>(
    api: &str,
    name: &str,
    result: Option<&Answer>,
    error_of: impl Fn(&Answer) -> (i16, Option<&StrBytes>),
) -> Result<(), AdminError> {
    let result = result
        .ok_or_else(|| AdminError::Cluster(format!("the {api} response says nothing of {name}")))?;
    let (code, message) = error_of(result);
    match AdminError::from_code(format!("topic {name}"), code, message.map(StrBytes::as_str)) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn timeout_ms(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_key_equals_value() {
        assert_eq!(
            parse_config("retention.ms=1000"),
            Ok(("retention.ms".to_string(), "1000".to_string()))
        );
        assert_eq!(
            parse_config("cleanup.policy=a=b"),
            Ok(("cleanup.policy".to_string(), "a=b".to_string()))
        );
        assert_eq!(parse_config("x="), Ok(("x".to_string(), String::new())));
        assert!(parse_config("retention.ms").is_err());
        assert!(parse_config("=1").is_err());
    }

    #[test]
    fn alter_sends_each_change_with_its_operation() {
        let changes = Changes {
            set: vec![("retention.ms".into(), "1000".into())],
            delete: vec!["segment.ms".into()],
            append: vec![("cleanup.policy".into(), "compact".into())],
            subtract: vec![("cleanup.policy".into(), "delete".into())],
        };
        let sent: Vec<(String, i8, Option<String>)> = changes
            .to_configs()
            .iter()
            .map(|config| {
                (
                    config.name.to_string(),
                    config.config_operation,
                    config.value.as_ref().map(ToString::to_string),
                )
            })
            .collect();
        assert_eq!(
            sent,
            vec![
                ("retention.ms".into(), 0, Some("1000".into())),
                ("cleanup.policy".into(), 2, Some("compact".into())),
                ("cleanup.policy".into(), 3, Some("delete".into())),
                ("segment.ms".into(), 1, None),
            ]
        );
    }
}
