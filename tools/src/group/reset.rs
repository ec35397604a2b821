//! `ferrite group reset-offsets`: moves a group's committed offsets in one topic, for replay
//! or to skip ahead, as Kafka's `kafka-consumer-groups.sh --reset-offsets` does: it prints the
//! plan (each partition's committed offset and the new one) and commits it only with
//! `--execute`.
//!
//! Only a group without members may be reset: an active member would go on committing its own
//! positions over the new ones, and a coordinator refuses a commit from outside the group
//! (a "simple" commit, generation -1) while the group has members anyway. The command checks
//! first and names the members, so the user knows which consumers to stop.

use std::collections::BTreeMap;

use super::requests::{
    commit_offsets, committed_offsets, describe_group, with_coordinator, GroupDescription,
    DEAD_STATE, EMPTY_STATE,
};
use crate::admin::{AdminError, BrokerArguments};
use crate::client::cluster::{known_offsets, Cluster, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("target")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_timestamp"])
))]
pub struct Arguments {
    #[command(flatten)]
    broker: BrokerArguments,
    /// The group whose offsets to move.
    group: String,
    /// The topic whose offsets to move.
    #[arg(long)]
    topic: String,
    /// Only this partition (repeat for more); every partition of the topic by default.
    #[arg(long = "partition", value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    partitions: Vec<i32>,
    /// To the oldest message still in each partition (replay everything).
    #[arg(long)]
    to_earliest: bool,
    /// To the end of each partition (skip everything written so far).
    #[arg(long)]
    to_latest: bool,
    /// To this offset; in a partition whose log starts after it or ends before it, to that
    /// start or end instead.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    to_offset: Option<i64>,
    /// To the first message whose timestamp is at or after MS (milliseconds since the Unix
    /// epoch); partitions without one go to their end.
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
    /// Commit the new offsets. Without it the command only prints them.
    #[arg(long)]
    execute: bool,
}

/// Where the offsets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

impl Arguments {
    fn target(&self) -> Target {
        match (self.to_offset, self.to_timestamp) {
            (Some(offset), _) => Target::Offset(offset),
            (None, Some(timestamp)) => Target::Timestamp(timestamp),
            (None, None) if self.to_earliest => Target::Earliest,
            (None, None) => {
                assert!(self.to_latest, "clap requires one target");
                Target::Latest
            }
        }
    }
}

/// What a partition's log offers to a reset.
#[derive(Debug, Clone, Copy)]
struct PartitionBounds {
    log_start: i64,
    log_end: i64,
    /// The first offset at or after the `--to-timestamp` time, if one was asked and found.
    at_timestamp: Option<i64>,
}

fn new_offset(target: Target, bounds: PartitionBounds) -> i64 {
    match target {
        Target::Earliest => bounds.log_start,
        Target::Latest => bounds.log_end,
        Target::Offset(offset) => {
            offset.clamp(bounds.log_start, bounds.log_end.max(bounds.log_start))
        }
        Target::Timestamp(_) => bounds.at_timestamp.unwrap_or(bounds.log_end),
    }
}

pub fn reset(arguments: &Arguments) -> Result<(), AdminError> {
    let group = arguments.group.as_str();
    let mut cluster = Cluster::connect(&arguments.broker.bootstrap)?;
    let topic = cluster.topic(&arguments.topic)?;
    let mut partitions: Vec<i32> = if arguments.partitions.is_empty() {
        topic
            .partitions
            .iter()
            .map(|partition| partition.index)
            .collect()
    } else {
        for &partition in &arguments.partitions {
            topic.leader_of(partition)?;
        }
        arguments.partitions.clone()
    };
    partitions.sort_unstable();
    partitions.dedup();
    let (description, committed) = with_coordinator(&mut cluster, group, |connection| {
        Ok((
            describe_group(connection, group)?,
            committed_offsets(connection, group, Some((&topic.name, &partitions)))?,
        ))
    })?;
    refuse_unless_empty(&description)?;

    let target = arguments.target();
    let log_starts = known_offsets(cluster.offsets_at(&topic, &partitions, EARLIEST_TIMESTAMP)?);
    let log_ends = known_offsets(cluster.offsets_at(&topic, &partitions, LATEST_TIMESTAMP)?);
    let at_timestamp = match target {
        Target::Timestamp(timestamp) => cluster.offsets_at(&topic, &partitions, timestamp)?,
        _ => BTreeMap::new(),
    };
    let plan: BTreeMap<i32, i64> = partitions
        .iter()
        .map(|&partition| {
            let bounds = PartitionBounds {
                log_start: log_starts[&partition],
                log_end: log_ends[&partition],
                at_timestamp: at_timestamp.get(&partition).copied().flatten(),
            };
            (partition, new_offset(target, bounds))
        })
        .collect();
    if arguments.execute {
        with_coordinator(&mut cluster, group, |connection| {
            commit_offsets(connection, group, &topic.name, &plan)
        })?;
    }
    print!(
        "{}",
        plan_text(group, &topic.name, &committed, &plan, arguments.execute)
    );
    Ok(())
}

/// An error naming the members, unless the group has none.
fn refuse_unless_empty(description: &GroupDescription) -> Result<(), AdminError> {
    let empty = description.members.is_empty()
        && (description.state == EMPTY_STATE || description.state == DEAD_STATE);
    if empty {
        return Ok(());
    }
    let members: Vec<String> = description
        .members
        .iter()
        .map(|member| {
            format!(
                "{} (client-id {}, host {})",
                member.member_id, member.client_id, member.client_host
            )
        })
        .collect();
    Err(AdminError::Cluster(format!(
        "group {} is {} with {} active member(s): {}; offsets can only be reset while the \
         group is empty: stop its consumers, then run the command again",
        description.group_id,
        description.state,
        members.len(),
        members.join(", ")
    )))
}

fn plan_text(
    group: &str,
    topic: &str,
    committed: &super::requests::CommittedOffsets,
    plan: &BTreeMap<i32, i64>,
    executed: bool,
) -> String {
    let mut text = if executed {
        format!("group {group} topic {topic} committed\n")
    } else {
        format!(
            "group {group} topic {topic} dry-run (nothing committed; add --execute to commit)\n"
        )
    };
    for (&partition, new) in plan {
        let old = committed
            .get(&(topic.to_string(), partition))
            .map_or("-".to_string(), i64::to_string);
        text.push_str(&format!(
            "  partition {topic}-{partition} from {old} to {new}\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    use super::super::requests::{CommittedOffsets, GroupMember};

    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        arguments: Arguments,
    }

    fn parse(args: &[&str]) -> Result<Arguments, clap::Error> {
        let mut all = vec!["reset-offsets"];
        all.extend(args);
        Command::try_parse_from(all).map(|command| command.arguments)
    }

    #[test]
    fn exactly_one_target_is_required() {
        let arguments = parse(&["g", "--topic", "t", "--to-offset", "7"]).unwrap();
        assert_eq!(arguments.target(), Target::Offset(7));
        assert!(!arguments.execute);
        let arguments = parse(&[
            "g",
            "--topic",
            "t",
            "--to-timestamp",
            "1700000000000",
            "--partition",
            "2",
            "--partition",
            "0",
            "--execute",
        ])
        .unwrap();
        assert_eq!(arguments.target(), Target::Timestamp(1_700_000_000_000));
        assert_eq!(arguments.partitions, [2, 0]);
        assert!(arguments.execute);
        assert_eq!(
            parse(&["g", "--topic", "t", "--to-earliest"])
                .unwrap()
                .target(),
            Target::Earliest
        );
        assert_eq!(
            parse(&["g", "--topic", "t", "--to-latest"])
                .unwrap()
                .target(),
            Target::Latest
        );

        let usage = |args: &[&str]| parse(args).err().map(|error| error.kind());
        use clap::error::ErrorKind;
        assert_eq!(
            usage(&["g", "--topic", "t"]),
            Some(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            usage(&["g", "--topic", "t", "--to-earliest", "--to-latest"]),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            usage(&["g", "--to-earliest"]),
            Some(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            usage(&["g", "--topic", "t", "--to-offset", "-1"]),
            Some(ErrorKind::UnknownArgument)
        );
        assert_eq!(
            usage(&["g", "--topic", "t", "--to-latest", "--partition", "-1"]),
            Some(ErrorKind::UnknownArgument)
        );
    }

    #[test]
    fn offsets_stay_within_the_log() {
        let bounds = PartitionBounds {
            log_start: 10,
            log_end: 50,
            at_timestamp: Some(30),
        };
        assert_eq!(new_offset(Target::Earliest, bounds), 10);
        assert_eq!(new_offset(Target::Latest, bounds), 50);
        assert_eq!(new_offset(Target::Offset(20), bounds), 20);
        assert_eq!(new_offset(Target::Offset(3), bounds), 10);
        assert_eq!(new_offset(Target::Offset(99), bounds), 50);
        assert_eq!(new_offset(Target::Timestamp(5), bounds), 30);
        let none_after = PartitionBounds {
            at_timestamp: None,
            ..bounds
        };
        assert_eq!(new_offset(Target::Timestamp(5), none_after), 50);
    }

    fn group(state: &str, members: &[&str]) -> GroupDescription {
        GroupDescription {
            group_id: "billing".to_string(),
            state: state.to_string(),
            protocol_type: "consumer".to_string(),
            protocol: String::new(),
            members: members
                .iter()
                .map(|id| GroupMember {
                    member_id: id.to_string(),
                    group_instance_id: None,
                    client_id: "rdkafka".to_string(),
                    client_host: "/10.0.0.7".to_string(),
                    assignment: Ok(Default::default()),
                })
                .collect(),
        }
    }

    #[test]
    fn only_an_empty_or_unknown_group_is_reset() {
        assert!(refuse_unless_empty(&group("Empty", &[])).is_ok());
        assert!(refuse_unless_empty(&group("Dead", &[])).is_ok());
        let refusal = refuse_unless_empty(&group("Stable", &["m-1", "m-2"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            refusal,
            "group billing is Stable with 2 active member(s): m-1 (client-id rdkafka, host \
             /10.0.0.7), m-2 (client-id rdkafka, host /10.0.0.7); offsets can only be reset \
             while the group is empty: stop its consumers, then run the command again"
        );
        assert!(refuse_unless_empty(&group("PreparingRebalance", &[])).is_err());
    }

    #[test]
    fn the_plan_shows_each_partition_s_old_and_new_offset() {
        let committed = CommittedOffsets::from([(("orders".to_string(), 1), 4)]);
        let plan = BTreeMap::from([(0, 0), (1, 0)]);
        assert_eq!(
            plan_text("billing", "orders", &committed, &plan, false),
            "group billing topic orders dry-run (nothing committed; add --execute to commit)\n\
             \x20 partition orders-0 from - to 0\n\
             \x20 partition orders-1 from 4 to 0\n"
        );
        assert!(plan_text("billing", "orders", &committed, &plan, true)
            .starts_with("group billing topic orders committed\n"));
    }
}
