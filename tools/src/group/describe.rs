//! `ferrite group describe`: where a group stands in each partition it has committed an offset
//! for or has assigned to a member: committed offset, log end offset (the high-water mark),
//! lag, and the member that owns the partition.
//!
//! The report is built by a pure function from the broker's answers (DescribeGroups,
//! OffsetFetch, ListOffsets), so its rules are tested without a broker: lag is log end minus
//! committed, unknown (`-`, or `null` in JSON) when either is; a partition's owner is the
//! member whose decoded assignment names it.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;

use super::assignment::Assignment;
use super::requests::{
    committed_offsets, describe_group, with_coordinator, CommittedOffsets, GroupDescription,
    DEAD_STATE,
};
use crate::admin::AdminError;
use crate::client::cluster::{Cluster, LATEST_TIMESTAMP};

/// Log end offsets by topic and partition; a partition whose topic or partition no longer
/// exists is absent.
pub type LogEndOffsets = BTreeMap<(String, i32), i64>;

/// One group, as printed.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct GroupReport {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberReport>,
    pub partitions: Vec<PartitionReport>,
}

#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberReport {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// Partitions by topic.
    pub assignment: Assignment,
    /// Why the member's assignment could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment_error: Option<String>,
}

#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    pub lag: Option<i64>,
    pub member_id: Option<String>,
    pub client_id: Option<String>,
    pub host: Option<String>,
}

/// Describes each group, printing each report as it is ready (text), or all of them as one
/// JSON array at the end. Every failure is reported; the ones that worked are still printed.
pub fn describe(cluster: &mut Cluster, groups: &[String], json: bool) -> Result<(), AdminError> {
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for group in groups {
        match describe_one(cluster, group) {
            Ok(report) if json => reports.push(report),
            Ok(report) => print!("{}", text(&report)),
            Err(error) => failures.push(error),
        }
    }
    if json {
        super::print_json(&reports)?;
    }
    AdminError::all(failures)
}

fn describe_one(cluster: &mut Cluster, group: &str) -> Result<GroupReport, AdminError> {
    let (description, committed) = with_coordinator(cluster, group, |connection| {
        Ok((
            describe_group(connection, group)?,
            committed_offsets(connection, group, None)?,
        ))
    })?;
    if description.state == DEAD_STATE && committed.is_empty() {
        return Err(AdminError::Cluster(format!(
            "group {group} does not exist (no members, no committed offsets); `ferrite group \
             list` lists the groups"
        )));
    }
    let log_ends = log_end_offsets(cluster, &partitions_of(&description, &committed))?;
    Ok(report(description, &committed, &log_ends))
}

/// The partitions a group has committed offsets for or assigned to a member.
fn partitions_of(
    description: &GroupDescription,
    committed: &CommittedOffsets,
) -> BTreeSet<(String, i32)> {
    let assigned = description
        .members
        .iter()
        .filter_map(|member| member.assignment.as_ref().ok())
        .flat_map(|assignment| {
            assignment.iter().flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(move |&partition| (topic.clone(), partition))
            })
        });
    committed.keys().cloned().chain(assigned).collect()
}

/// The log end offset of each of `partitions` that still exists.
fn log_end_offsets(
    cluster: &mut Cluster,
    partitions: &BTreeSet<(String, i32)>,
) -> Result<LogEndOffsets, AdminError> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let mut log_ends = LogEndOffsets::new();
    for (topic, partitions) in by_topic {
        // Offsets committed for a topic since deleted stay in the group: no log end for them.
        let metadata = match cluster.topic(topic) {
            Ok(metadata) => metadata,
            Err(AdminError::Kafka {
                error: ResponseError::UnknownTopicOrPartition,
                ..
            }) => continue,
            Err(error) => return Err(error),
        };
        let existing: Vec<i32> = partitions
            .into_iter()
            .filter(|&partition| metadata.partitions.iter().any(|p| p.index == partition))
            .collect();
        for (partition, offset) in cluster.offsets_at(&metadata, &existing, LATEST_TIMESTAMP)? {
            if let Some(offset) = offset {
                log_ends.insert((topic.to_string(), partition), offset);
            }
        }
    }
    Ok(log_ends)
}

/// The report of one group from the broker's answers.
fn report(
    description: GroupDescription,
    committed: &CommittedOffsets,
    log_ends: &LogEndOffsets,
) -> GroupReport {
    let partitions = partitions_of(&description, committed)
        .into_iter()
        .map(|key| {
            let owner = description.members.iter().find(|member| {
                member.assignment.as_ref().is_ok_and(|assignment| {
                    assignment
                        .get(&key.0)
                        .is_some_and(|partitions| partitions.contains(&key.1))
                })
            });
            let committed_offset = committed.get(&key).copied();
            let log_end_offset = log_ends.get(&key).copied();
            PartitionReport {
                lag: committed_offset
                    .zip(log_end_offset)
                    .map(|(committed, log_end)| log_end - committed),
                committed_offset,
                log_end_offset,
                member_id: owner.map(|member| member.member_id.clone()),
                client_id: owner.map(|member| member.client_id.clone()),
                host: owner.map(|member| member.client_host.clone()),
                topic: key.0,
                partition: key.1,
            }
        })
        .collect();
    let members = description
        .members
        .into_iter()
        .map(|member| {
            let (assignment, assignment_error) = match member.assignment {
                Ok(assignment) => (assignment, None),
                Err(reason) => (Assignment::new(), Some(reason)),
            };
            MemberReport {
                member_id: member.member_id,
                group_instance_id: member.group_instance_id,
                client_id: member.client_id,
                host: member.client_host,
                assignment,
                assignment_error,
            }
        })
        .collect();
    GroupReport {
        group: description.group_id,
        state: description.state,
        protocol_type: description.protocol_type,
        protocol: description.protocol,
        members,
        partitions,
    }
}

/// The report as text: one line for the group, one per member, one per partition.
fn text(report: &GroupReport) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "group {} state {} protocol-type {} protocol {} members {}",
        report.group,
        report.state,
        or_dash(&report.protocol_type),
        or_dash(&report.protocol),
        report.members.len()
    );
    for member in &report.members {
        let assigned: Vec<String> = member
            .assignment
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(move |partition| format!("{topic}-{partition}"))
            })
            .collect();
        let assigned = match &member.assignment_error {
            Some(reason) => format!("? (the assignment does not decode: {reason})"),
            None if assigned.is_empty() => "-".to_string(),
            None => assigned.join(","),
        };
        let _ = writeln!(
            text,
            "  member {} instance-id {} client-id {} host {} assigned {assigned}",
            member.member_id,
            member.group_instance_id.as_deref().unwrap_or("-"),
            or_dash(&member.client_id),
            or_dash(&member.host),
        );
    }
    for partition in &report.partitions {
        let number = |value: Option<i64>| value.map_or("-".to_string(), |value| value.to_string());
        let name = |value: &Option<String>| value.as_deref().map_or("-", or_dash).to_string();
        let _ = writeln!(
            text,
            "  partition {}-{} committed {} log-end {} lag {} member {} client-id {} host {}",
            partition.topic,
            partition.partition,
            number(partition.committed_offset),
            number(partition.log_end_offset),
            number(partition.lag),
            name(&partition.member_id),
            name(&partition.client_id),
            name(&partition.host),
        );
    }
    text
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::requests::GroupMember;

    fn member(id: &str, assignment: Result<Assignment, String>) -> GroupMember {
        GroupMember {
            member_id: id.to_string(),
            group_instance_id: None,
            client_id: format!("client-{id}"),
            client_host: "/127.0.0.1".to_string(),
            assignment,
        }
    }

    fn key(topic: &str, partition: i32) -> (String, i32) {
        (topic.to_string(), partition)
    }

    fn stable_group() -> GroupDescription {
        GroupDescription {
            group_id: "billing".to_string(),
            state: "Stable".to_string(),
            protocol_type: "consumer".to_string(),
            protocol: "range".to_string(),
            members: vec![
                member(
                    "a",
                    Ok(Assignment::from([("orders".to_string(), vec![0, 1])])),
                ),
                member("b", Ok(Assignment::from([("orders".to_string(), vec![2])]))),
                member("c", Err("version -1".to_string())),
            ],
        }
    }

    #[test]
    fn lag_is_log_end_minus_committed_and_unknown_without_either() {
        let committed = CommittedOffsets::from([
            (key("orders", 0), 5),
            (key("orders", 1), 10),
            (key("gone", 0), 3),
        ]);
        let log_ends = LogEndOffsets::from([
            (key("orders", 0), 12),
            (key("orders", 1), 10),
            (key("orders", 2), 7),
        ]);
        let report = report(stable_group(), &committed, &log_ends);
        let rows: Vec<_> = report
            .partitions
            .iter()
            .map(|row| {
                (
                    format!("{}-{}", row.topic, row.partition),
                    row.committed_offset,
                    row.log_end_offset,
                    row.lag,
                    row.member_id.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("gone-0".to_string(), Some(3), None, None, None),
                (
                    "orders-0".to_string(),
                    Some(5),
                    Some(12),
                    Some(7),
                    Some("a")
                ),
                (
                    "orders-1".to_string(),
                    Some(10),
                    Some(10),
                    Some(0),
                    Some("a")
                ),
                ("orders-2".to_string(), None, Some(7), None, Some("b")),
            ]
        );
        assert_eq!(report.members.len(), 3);
        assert_eq!(
            report.members[2].assignment_error.as_deref(),
            Some("version -1")
        );
    }

    #[test]
    fn text_has_one_line_per_group_member_and_partition() {
        let committed = CommittedOffsets::from([(key("orders", 0), 5)]);
        let log_ends = LogEndOffsets::from([(key("orders", 0), 12), (key("orders", 2), 7)]);
        let mut group = stable_group();
        group.members.remove(1);
        group.members[0].group_instance_id = Some("pod-1".to_string());
        let printed = text(&report(group, &committed, &log_ends));
        assert_eq!(
            printed,
            "group billing state Stable protocol-type consumer protocol range members 2\n\
             \x20 member a instance-id pod-1 client-id client-a host /127.0.0.1 assigned \
             orders-0,orders-1\n\
             \x20 member c instance-id - client-id client-c host /127.0.0.1 assigned ? (the \
             assignment does not decode: version -1)\n\
             \x20 partition orders-0 committed 5 log-end 12 lag 7 member a client-id client-a \
             host /127.0.0.1\n\
             \x20 partition orders-1 committed - log-end - lag - member a client-id client-a \
             host /127.0.0.1\n"
        );
    }

    #[test]
    fn an_empty_group_with_offsets_has_no_owners() {
        let group = GroupDescription {
            group_id: "replay".to_string(),
            state: "Empty".to_string(),
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        };
        let committed = CommittedOffsets::from([(key("orders", 1), 4)]);
        let log_ends = LogEndOffsets::from([(key("orders", 1), 4)]);
        let report = report(group, &committed, &log_ends);
        assert_eq!(
            text(&report),
            "group replay state Empty protocol-type - protocol - members 0\n\
             \x20 partition orders-1 committed 4 log-end 4 lag 0 member - client-id - host -\n"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["partitions"][0],
            serde_json::json!({
                "topic": "orders", "partition": 1, "committed_offset": 4, "log_end_offset": 4,
                "lag": 0, "member_id": null, "client_id": null, "host": null
            })
        );
    }
}
