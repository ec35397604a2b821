//! The consumer-group requests of the `group` commands, and plain views of their answers.
//!
//! A group lives on one broker, its coordinator, found with FindCoordinator; DescribeGroups,
//! OffsetFetch and OffsetCommit go there. A broker's ListGroups names only the groups it
//! coordinates, so listing asks every broker. A coordinator still loading its groups, or one
//! that has just moved, answers with a retriable error code: [`with_coordinator`] then finds
//! the coordinator again and repeats the request, for at most [`COORDINATOR_WAIT`].
//!
//! Versions: FindCoordinator names one key (0–3) or a batch of keys (4+); OffsetFetch names one
//! group (2–7) or a batch of groups (8+); ListGroups reports group states from version 4 only,
//! so with an older broker the states come from DescribeGroups.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::assignment::{self, Assignment};
use crate::admin::AdminError;
use crate::client::Connection;
use crate::cluster::{topic_name, Cluster};

/// How long to keep retrying while the coordinator is unavailable, loading or moving.
const COORDINATOR_WAIT: Duration = Duration::from_secs(10);
const COORDINATOR_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// FindCoordinator's key type for a consumer group (1 is a transactional id).
const GROUP_KEY_TYPE: i8 = 0;

/// The state DescribeGroups reports for a group that does not exist.
pub const DEAD_STATE: &str = "Dead";
/// The state of a group without members (it may still hold committed offsets).
pub const EMPTY_STATE: &str = "Empty";

/// A group as ListGroups names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
}

/// A group as DescribeGroups describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    /// The assignor the members agreed on (e.g. `range`); empty unless the group is Stable.
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The decoded assignment (empty for groups of another protocol type than `consumer`), or
    /// why it does not decode.
    pub assignment: Result<Assignment, String>,
}

/// Committed offsets by topic and partition.
pub type CommittedOffsets = BTreeMap<(String, i32), i64>;

/// Runs `request` against the coordinator of `group`, finding it first, and again (for at most
/// [`COORDINATOR_WAIT`]) while the answer is a retriable Kafka error.
pub fn with_coordinator<T>(
    cluster: &mut Cluster,
    group: &str,
    mut request: impl FnMut(&mut Connection) -> Result<T, AdminError>,
) -> Result<T, AdminError> {
    let deadline = Instant::now() + COORDINATOR_WAIT;
    loop {
        let outcome = find_coordinator(cluster, group).and_then(|address| {
            let connection = cluster.connection_to_address(address)?;
            request(connection)
        });
        match outcome {
            Err(error) if error.is_retriable() && Instant::now() < deadline => {
                std::thread::sleep(COORDINATOR_RETRY_INTERVAL);
            }
            outcome => return outcome,
        }
    }
}

/// The address (HOST:PORT) of the coordinator of `group`.
fn find_coordinator(cluster: &mut Cluster, group: &str) -> Result<String, AdminError> {
    let connection = cluster.bootstrap()?;
    let version = connection.version::<FindCoordinatorRequest>()?;
    let key = StrBytes::from_string(group.to_string());
    let request = if version >= 4 {
        FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
    } else {
        FindCoordinatorRequest::default().with_key(key)
    }
    .with_key_type(GROUP_KEY_TYPE);
    let response = connection.send(&request, version, Duration::ZERO)?;
    let (error_code, error_message, host, port) = if version >= 4 {
        let coordinator = response
            .coordinators
            .iter()
            .find(|coordinator| coordinator.key.as_str() == group)
            .ok_or_else(|| {
                AdminError::Cluster(format!(
                    "the FindCoordinator response says nothing of group {group}"
                ))
            })?;
        (
            coordinator.error_code,
            coordinator.error_message.clone(),
            coordinator.host.clone(),
            coordinator.port,
        )
    } else {
        (
            response.error_code,
            response.error_message.clone(),
            response.host.clone(),
            response.port,
        )
    };
    if let Some(error) = AdminError::from_code(
        format!("group {group}"),
        error_code,
        error_message.as_ref().map(StrBytes::as_str),
    ) {
        return Err(error);
    }
    Ok(format!("{}:{port}", host.as_str()))
}

/// Every group of every broker, sorted by id.
pub fn list_groups(cluster: &mut Cluster) -> Result<Vec<ListedGroup>, AdminError> {
    let metadata = cluster.metadata(Some(&[]))?;
    let mut broker_ids: Vec<i32> = metadata
        .brokers
        .iter()
        .map(|broker| broker.node_id.0)
        .collect();
    broker_ids.sort_unstable();
    let mut groups = BTreeMap::new();
    for broker_id in broker_ids {
        let connection = cluster.broker(broker_id)?;
        let version = connection.version::<ListGroupsRequest>()?;
        let response = connection.send(&ListGroupsRequest::default(), version, Duration::ZERO)?;
        if let Some(error) = AdminError::from_code(
            format!("groups of broker {broker_id}"),
            response.error_code,
            None,
        ) {
            return Err(error);
        }
        for group in response.groups {
            let group_id = group.group_id.0.to_string();
            // Before version 4 the answer has no state: ask the group itself.
            let state = if version >= 4 {
                group.group_state.to_string()
            } else {
                with_coordinator(cluster, &group_id, |connection| {
                    describe_group(connection, &group_id)
                })?
                .state
            };
            groups.insert(
                group_id.clone(),
                ListedGroup {
                    group_id,
                    state,
                    protocol_type: group.protocol_type.to_string(),
                },
            );
        }
    }
    Ok(groups.into_values().collect())
}

/// DescribeGroups of one group, on its coordinator. A group that does not exist is described
/// as Dead, whichever way the broker says so.
pub fn describe_group(
    connection: &mut Connection,
    group: &str,
) -> Result<GroupDescription, AdminError> {
    let version = connection.version::<DescribeGroupsRequest>()?;
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let response = connection.send(&request, version, Duration::ZERO)?;
    let described = response
        .groups
        .into_iter()
        .find(|described| described.group_id.0.as_str() == group)
        .ok_or_else(|| {
            AdminError::Cluster(format!(
                "the DescribeGroups response says nothing of group {group}"
            ))
        })?;
    // Version 6 (KIP-1043) answers GROUP_ID_NOT_FOUND where earlier ones say Dead.
    if described.error_code == ResponseError::GroupIdNotFound.code() {
        return Ok(GroupDescription {
            group_id: group.to_string(),
            state: DEAD_STATE.to_string(),
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        });
    }
    if let Some(error) = AdminError::from_code(
        format!("group {group}"),
        described.error_code,
        described.error_message.as_ref().map(StrBytes::as_str),
    ) {
        return Err(error);
    }
    let consumer_protocol = described.protocol_type.as_str() == "consumer";
    Ok(GroupDescription {
        group_id: group.to_string(),
        state: described.group_state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        protocol: described.protocol_data.to_string(),
        members: described
            .members
            .into_iter()
            .map(|member| GroupMember {
                member_id: member.member_id.to_string(),
                group_instance_id: member.group_instance_id.map(|id| id.to_string()),
                client_id: member.client_id.to_string(),
                client_host: member.client_host.to_string(),
                assignment: if consumer_protocol {
                    assignment::decode(&member.member_assignment)
                } else {
                    Ok(Assignment::new())
                },
            })
            .collect(),
    })
}

/// The offsets `group` committed: of every partition (`partitions` `None`), or of the given
/// partitions of one topic. Partitions without a committed offset are left out.
pub fn committed_offsets(
    connection: &mut Connection,
    group: &str,
    partitions: Option<(&str, &[i32])>,
) -> Result<CommittedOffsets, AdminError> {
    let version = connection.version::<OffsetFetchRequest>()?;
    let group_id = GroupId(StrBytes::from_string(group.to_string()));
    let subject = format!("committed offsets of group {group}");
    let mut committed = CommittedOffsets::new();
    let mut note = |topic: &str, partition: i32, offset: i64, error_code: i16| {
        let subject = format!("committed offset of group {group} in partition {topic}-{partition}");
        if let Some(error) = AdminError::from_code(subject, error_code, None) {
            return Err(error);
        }
        // -1: nothing committed.
        if offset >= 0 {
            committed.insert((topic.to_string(), partition), offset);
        }
        Ok(())
    };
    if version >= 8 {
        let topics = partitions.map(|(topic, partitions)| {
            vec![OffsetFetchRequestTopics::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(partitions.to_vec())]
        });
        let request =
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(group_id)
                .with_topics(topics)]);
        let response = connection.send(&request, version, Duration::ZERO)?;
        let answer = response
            .groups
            .iter()
            .find(|answer| answer.group_id.0.as_str() == group)
            .ok_or_else(|| {
                AdminError::Cluster(format!(
                    "the OffsetFetch response says nothing of group {group}"
                ))
            })?;
        if let Some(error) = AdminError::from_code(subject, answer.error_code, None) {
            return Err(error);
        }
        for topic in &answer.topics {
            for partition in &topic.partitions {
                note(
                    topic.name.0.as_str(),
                    partition.partition_index,
                    partition.committed_offset,
                    partition.error_code,
                )?;
            }
        }
    } else {
        let topics = partitions.map(|(topic, partitions)| {
            vec![OffsetFetchRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(partitions.to_vec())]
        });
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id)
            .with_topics(topics);
        let response = connection.send(&request, version, Duration::ZERO)?;
        if let Some(error) = AdminError::from_code(subject, response.error_code, None) {
            return Err(error);
        }
        for topic in &response.topics {
            for partition in &topic.partitions {
                note(
                    topic.name.0.as_str(),
                    partition.partition_index,
                    partition.committed_offset,
                    partition.error_code,
                )?;
            }
        }
    }
    Ok(committed)
}

/// Commits `offsets` (by partition of `topic`) for `group` as a "simple" commit: generation -1
/// and no member id, which a coordinator accepts only while the group has no members.
pub fn commit_offsets(
    connection: &mut Connection,
    group: &str,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<(), AdminError> {
    let version = connection.version::<OffsetCommitRequest>()?;
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::default())
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(&partition, &offset)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset)
                    })
                    .collect(),
            )]);
    let response = connection.send(&request, version, Duration::ZERO)?;
    let mut failures = Vec::new();
    for &partition in offsets.keys() {
        let answer = response
            .topics
            .iter()
            .filter(|answer| answer.name.0.as_str() == topic)
            .flat_map(|answer| &answer.partitions)
            .find(|answer| answer.partition_index == partition);
        let subject = format!("commit of group {group} in partition {topic}-{partition}");
        let failure = match answer {
            None => Some(AdminError::Cluster(format!(
                "the OffsetCommit response says nothing of partition {topic}-{partition}"
            ))),
            Some(answer) => AdminError::from_code(subject, answer.error_code, None),
        };
        failures.extend(failure);
    }
    AdminError::all(failures)
}
