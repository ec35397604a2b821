//! Consumer-group mode (`--consumer-group NAME`): the consumers subscribe to the topic as the
//! members of a group, or of `--consumer-groups N` independent groups that each read every
//! message, so the broker's group coordination (JoinGroup, SyncGroup, heartbeats, committed
//! offsets) is part of what is measured, as it is in most deployments.
//!
//! Two things keep the figures comparable with the explicit mode's:
//! - Each group starts where the explicit mode does, at every partition's end offset read
//!   before the producers start, committed for the group from outside it (a "simple" commit,
//!   allowed while the group has no members). A name reused from an earlier run therefore does
//!   not resume from that run's offsets, and nothing is left to `auto.offset.reset=latest`,
//!   which librdkafka resolves only after the assignment and could resolve after the first
//!   messages were written.
//! - The clock starts only once every group has settled: each partition assigned to exactly
//!   one member, and each member holding some (so every member has joined the same generation
//!   and no rebalance is pending). The rebalances' time is reported apart (`group_settle_ms`)
//!   instead of polluting the latency figures.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::TopicPartitionList;

use crate::client::PlainContext;
use crate::consumer::ConsumeTally;
use crate::error::BenchError;
use crate::flags::{AssignmentStrategy, RunFlags};

/// How long one member is polled while the groups settle before the next one's turn: short, so
/// a member's rebalance callback waits for at most one round of the others.
const SETTLE_POLL: Duration = Duration::from_millis(10);

/// librdkafka's auto.commit.interval.ms for the members: short (its default is 5 s), so a
/// partition that moves to another member in a rebalance is re-read from not far back.
const AUTO_COMMIT_INTERVAL_MS: &str = "1000";

/// The run's consumer groups: `NAME` alone, or `NAME-0` ... `NAME-(N-1)` with
/// `--consumer-groups N`; none without `--consumer-group`.
pub fn names(flags: &RunFlags) -> Vec<String> {
    match (&flags.consumer_group, flags.consumer_groups) {
        (None, _) => Vec::new(),
        (Some(name), 1) => vec![name.clone()],
        (Some(name), groups) => (0..groups).map(|group| format!("{name}-{group}")).collect(),
    }
}

/// The librdkafka settings of a member of group `name` (before `--consumer-config`).
pub fn member_settings(name: &str, strategy: AssignmentStrategy) -> Vec<(String, String)> {
    [
        ("group.id", name),
        ("partition.assignment.strategy", strategy.config_value()),
        ("enable.auto.commit", "true"),
        ("auto.commit.interval.ms", AUTO_COMMIT_INTERVAL_MS),
        ("auto.offset.reset", "latest"),
        ("enable.partition.eof", "false"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

/// Commits `start` for the group of `member`, which has not joined it yet (see the module
/// comment). Fails if the group has members, e.g. another run's.
pub fn commit_start(
    member: &BaseConsumer<PlainContext>,
    name: &str,
    start: &TopicPartitionList,
) -> Result<(), BenchError> {
    member
        .commit(start, CommitMode::Sync)
        .map_err(BenchError::kafka(format!(
            "cannot commit the start offsets of consumer group {name:?} (is it in use?)"
        )))
}

/// Subscribes every member of every group (`groups[g]` are the members of `names[g]`) to
/// `topic` and polls them in turn until every group is settled at once, or fails at `deadline`.
/// Prints a line when a group first settles. Returns the time from the subscriptions until every
/// group was settled. The producers have not started, so any message polled meanwhile is not
/// this run's: it counts as foreign (and errors as errors) in `tally`.
pub fn settle(
    groups: &[Vec<BaseConsumer<PlainContext>>],
    names: &[String],
    topic: &str,
    partitions: u32,
    deadline: Instant,
    tally: &mut ConsumeTally,
) -> Result<Duration, BenchError> {
    assert_eq!(groups.len(), names.len());
    for (members, name) in groups.iter().zip(names) {
        for member in members {
            member
                .subscribe(&[topic])
                .map_err(BenchError::kafka(format!(
                    "cannot subscribe to {topic:?} in consumer group {name:?}"
                )))?;
        }
    }
    let subscribed = Instant::now();
    let mut settled_once = vec![false; groups.len()];
    loop {
        for member in groups.iter().flatten() {
            match member.poll(SETTLE_POLL) {
                None => {}
                Some(Ok(_)) => tally.note_foreign(),
                Some(Err(error)) => tally.note_error(error.to_string()),
            }
        }
        let mut unsettled = Vec::new();
        for ((members, name), settled_before) in groups.iter().zip(names).zip(&mut settled_once) {
            let held = members
                .iter()
                .map(|member| assigned_partitions(member, topic))
                .collect::<Result<Vec<_>, _>>()?;
            match unsettled_reason(&held, partitions) {
                Some(reason) => unsettled.push(format!("group {name:?}: {reason}")),
                None if !*settled_before => {
                    *settled_before = true;
                    eprintln!(
                        "ferrite-bench: consumer group {name:?}: {partitions} partitions \
                         assigned to {} members after {} ms",
                        members.len(),
                        subscribed.elapsed().as_millis()
                    );
                }
                None => {}
            }
        }
        if unsettled.is_empty() {
            return Ok(subscribed.elapsed());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Groups(format!(
                "no stable assignment {:.1} s after subscribing (--setup-timeout-s): {}",
                subscribed.elapsed().as_secs_f64(),
                unsettled.join("; ")
            )));
        }
    }
}

/// The partitions of `topic` assigned to `member` now.
fn assigned_partitions(
    member: &BaseConsumer<PlainContext>,
    topic: &str,
) -> Result<Vec<i32>, BenchError> {
    let assignment = member
        .assignment()
        .map_err(BenchError::kafka("cannot read a member's assignment"))?;
    Ok(assignment
        .elements_for_topic(topic)
        .iter()
        .map(|element| element.partition())
        .collect())
}

/// Why a group whose members hold `held` (`held[m]`: member m's partitions) is not settled, or
/// None when it is: each of the `partitions` held by exactly one member, and every member
/// holding some.
fn unsettled_reason(held: &[Vec<i32>], partitions: u32) -> Option<String> {
    let mut holders = vec![0u32; partitions as usize];
    let mut reasons = Vec::new();
    for (member, owned) in held.iter().enumerate() {
        if owned.is_empty() {
            reasons.push(format!("member {member} holds no partition"));
        }
        for &partition in owned {
            match usize::try_from(partition)
                .ok()
                .and_then(|index| holders.get_mut(index))
            {
                Some(count) => *count += 1,
                None => reasons.push(format!(
                    "member {member} holds unknown partition {partition}"
                )),
            }
        }
    }
    let partitions_where = |predicate: fn(u32) -> bool| -> Vec<usize> {
        (0..holders.len())
            .filter(|&index| predicate(holders[index]))
            .collect()
    };
    let unassigned = partitions_where(|count| count == 0);
    if !unassigned.is_empty() {
        reasons.push(format!("partitions {unassigned:?} unassigned"));
    }
    let shared = partitions_where(|count| count > 1);
    if !shared.is_empty() {
        reasons.push(format!("partitions {shared:?} held by several members"));
    }
    (!reasons.is_empty()).then(|| reasons.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        flags: RunFlags,
    }

    fn flags(arguments: &[&str]) -> RunFlags {
        Command::parse_from(["ferrite-bench"].iter().chain(arguments)).flags
    }

    #[test]
    fn one_group_keeps_its_name_and_several_are_numbered() {
        assert!(names(&flags(&[])).is_empty());
        assert_eq!(names(&flags(&["--consumer-group", "g"])), ["g"]);
        assert_eq!(
            names(&flags(&["--consumer-group", "g", "--consumer-groups", "3"])),
            ["g-0", "g-1", "g-2"]
        );
    }

    #[test]
    fn a_group_is_settled_when_each_partition_has_one_member_and_each_member_some() {
        assert_eq!(unsettled_reason(&[vec![0, 1], vec![3, 2]], 4), None);
        assert_eq!(unsettled_reason(&[vec![0, 1, 2, 3]], 4), None);
        // The first member joined alone and holds everything; the second is not in yet.
        assert_eq!(
            unsettled_reason(&[vec![0, 1, 2, 3], vec![]], 4).as_deref(),
            Some("member 1 holds no partition")
        );
        // Cooperative rebalancing, first round: partitions 2 and 3 given up, not yet moved.
        assert_eq!(
            unsettled_reason(&[vec![0, 1], vec![]], 4).as_deref(),
            Some("member 1 holds no partition, partitions [2, 3] unassigned")
        );
        assert_eq!(
            unsettled_reason(&[vec![0, 1, 2], vec![2, 3]], 4).as_deref(),
            Some("partitions [2] held by several members")
        );
        assert_eq!(
            unsettled_reason(&[vec![0, 1, 2, 3, 4]], 4).as_deref(),
            Some("member 0 holds unknown partition 4")
        );
    }
}
