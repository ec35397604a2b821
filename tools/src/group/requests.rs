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
use crate::client::cluster::{topic_name, Cluster};
use crate::client::Connection;

/// How long to keep retrying while the coordinator is unavailable, loading or moving.
const COORDINATOR_WAIT: Duration = Duration::from_secs(10);
const COORDINATOR_RETRY_INTERVAL: Duration = Duration::from_millis(100);

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

/// FindCoordinator's key types.
pub const GROUP_KEY_TYPE: i8 = 0;
pub const TRANSACTION_KEY_TYPE: i8 = 1;

/// Runs `request` against the coordinator of `group`, finding it first, and again (for at most
/// [`COORDINATOR_WAIT`]) while the answer is a retriable Kafka error.
pub fn with_coordinator<T>(
    cluster: &mut Cluster,
    group: &str,
    request: impl FnMut(&mut Connection) -> Result<T, AdminError>,
) -> Result<T, AdminError> {
    with_coordinator_of(cluster, GROUP_KEY_TYPE, group, request)
}

/// Runs `request` against the coordinator of `key` (a group or a transactional id, as
/// `key_type` says), finding it first, and again (for at most [`COORDINATOR_WAIT`]) while the
/// answer is a retriable Kafka error.
pub fn with_coordinator_of<T>(
    cluster: &mut Cluster,
    key_type: i8,
    key: &str,
    mut request: impl FnMut(&mut Connection) -> Result<T, AdminError>,
) -> Result<T, AdminError> {
    let deadline = Instant::now() + COORDINATOR_WAIT;
    loop {
        let outcome = find_coordinator(cluster, key_type, key).and_then(|address| {
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

/// The address (HOST:PORT) of the coordinator of `key`.
fn find_coordinator(cluster: &mut Cluster, key_type: i8, key: &str) -> Result<String, AdminError> {
    let subject = match key_type {
        GROUP_KEY_TYPE => format!("group {key}"),
        _ => format!("transactional id {key}"),
    };
    let connection = cluster.bootstrap()?;
    let version = connection.version::<FindCoordinatorRequest>()?;
    let key_bytes = StrBytes::from_string(key.to_string());
    let request = if version >= 4 {
        FindCoordinatorRequest::default().with_coordinator_keys(vec![key_bytes])
    } else {
        FindCoordinatorRequest::default().with_key(key_bytes)
    }
    .with_key_type(key_type);
    let response = connection.send(&request, version, Duration::ZERO)?;
    let (error_code, error_message, host, port) = if version >= 4 {
        let coordinator = response
            .coordinators
            .iter()
            .find(|coordinator| coordinator.key.as_str() == key)
            .ok_or_else(|| {
                AdminError::Cluster(format!(
                    "the FindCoordinator response says nothing of {subject}"
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
        subject,
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

#[cfg(test)]
mod tests {
    //! The layouts of older protocol versions (FindCoordinator with one key, OffsetFetch and
    //! OffsetCommit before batching, ListGroups without states), which Ferrite does not answer
    //! in but older Kafka-compatible brokers do: checked against a scripted broker.

    use super::*;

    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::describe_groups_response::DescribedGroup;
    use kafka_protocol::messages::list_groups_response::ListedGroup as Listed;
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponsePartition, OffsetFetchResponseTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeGroupsResponse,
        FindCoordinatorResponse, ListGroupsResponse, MetadataRequest, MetadataResponse,
        OffsetCommitResponse, OffsetFetchResponse, RequestHeader, ResponseHeader,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request};

    /// The highest version of each API the scripted broker speaks: before the layout changes.
    const OLD_VERSIONS: [(i16, i16); 6] = [
        (MetadataRequest::KEY, 1),
        (FindCoordinatorRequest::KEY, 3),
        (ListGroupsRequest::KEY, 3),
        (DescribeGroupsRequest::KEY, 4),
        (OffsetFetchRequest::KEY, 7),
        (OffsetCommitRequest::KEY, 7),
    ];

    /// What the scripted broker was asked: the decoded OffsetFetch and OffsetCommit requests.
    #[derive(Default)]
    struct Seen {
        offset_fetches: Vec<OffsetFetchRequest>,
        offset_commits: Vec<OffsetCommitRequest>,
    }

    fn encode_response<T: Encodable + HeaderVersion>(
        correlation_id: i32,
        response: &T,
        version: i16,
    ) -> Vec<u8> {
        let mut body = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut body, T::header_version(version))
            .unwrap();
        response.encode(&mut body, version).unwrap();
        [&(body.len() as i32).to_be_bytes()[..], &body].concat()
    }

    /// A broker (node 0) coordinating one group, `billing`, Stable with no members' assignments
    /// and offsets committed in `orders-0` (5) and `orders-1` (none), on one connection.
    fn scripted_broker(seen: Arc<Mutex<Seen>>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            loop {
                let mut length = [0u8; 4];
                if stream.read_exact(&mut length).is_err() {
                    return;
                }
                let mut request = vec![0u8; i32::from_be_bytes(length) as usize];
                stream.read_exact(&mut request).unwrap();
                let mut request = Bytes::from(request);
                let key = i16::from_be_bytes([request[0], request[1]]);
                let version = i16::from_be_bytes([request[2], request[3]]);
                let api = ApiKey::try_from(key).unwrap();
                let header =
                    RequestHeader::decode(&mut request, api.request_header_version(version))
                        .unwrap();
                let id = header.correlation_id;
                let answer = match api {
                    // KIP-511's fallback: version 0, UNSUPPORTED_VERSION and the table.
                    ApiKey::ApiVersions => {
                        let mut table = vec![ApiVersion::default()
                            .with_api_key(ApiVersionsRequest::KEY)
                            .with_max_version(0)];
                        table.extend(OLD_VERSIONS.iter().map(|&(key, max)| {
                            ApiVersion::default()
                                .with_api_key(key)
                                .with_max_version(max)
                        }));
                        let response = ApiVersionsResponse::default()
                            .with_error_code(35)
                            .with_api_keys(table);
                        encode_response(id, &response, 0)
                    }
                    ApiKey::Metadata => {
                        let response = MetadataResponse::default().with_brokers(vec![
                            MetadataResponseBroker::default()
                                .with_node_id(0.into())
                                .with_host(StrBytes::from_string(address.ip().to_string()))
                                .with_port(i32::from(address.port())),
                        ]);
                        encode_response(id, &response, version)
                    }
                    ApiKey::FindCoordinator => {
                        let response = FindCoordinatorResponse::default()
                            .with_node_id(0.into())
                            .with_host(StrBytes::from_string(address.ip().to_string()))
                            .with_port(i32::from(address.port()));
                        encode_response(id, &response, version)
                    }
                    ApiKey::ListGroups => {
                        let response =
                            ListGroupsResponse::default().with_groups(vec![Listed::default()
                                .with_group_id(GroupId(StrBytes::from_static_str("billing")))
                                .with_protocol_type(StrBytes::from_static_str("consumer"))]);
                        encode_response(id, &response, version)
                    }
                    ApiKey::DescribeGroups => {
                        let response = DescribeGroupsResponse::default().with_groups(vec![
                            DescribedGroup::default()
                                .with_group_id(GroupId(StrBytes::from_static_str("billing")))
                                .with_group_state(StrBytes::from_static_str("Stable"))
                                .with_protocol_type(StrBytes::from_static_str("consumer")),
                        ]);
                        encode_response(id, &response, version)
                    }
                    ApiKey::OffsetFetch => {
                        let decoded = OffsetFetchRequest::decode(&mut request, version).unwrap();
                        seen.lock().unwrap().offset_fetches.push(decoded);
                        let partition = |index, offset| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(offset)
                        };
                        let response = OffsetFetchResponse::default().with_topics(vec![
                            OffsetFetchResponseTopic::default()
                                .with_name(topic_name("orders"))
                                .with_partitions(vec![partition(0, 5), partition(1, -1)]),
                        ]);
                        encode_response(id, &response, version)
                    }
                    ApiKey::OffsetCommit => {
                        let decoded = OffsetCommitRequest::decode(&mut request, version).unwrap();
                        let answers = decoded.topics[0]
                            .partitions
                            .iter()
                            .map(|partition| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(partition.partition_index)
                                    // UNKNOWN_MEMBER_ID for partition 1, as if a member joined.
                                    .with_error_code(if partition.partition_index == 1 {
                                        25
                                    } else {
                                        0
                                    })
                            })
                            .collect();
                        seen.lock().unwrap().offset_commits.push(decoded);
                        let response = OffsetCommitResponse::default().with_topics(vec![
                            OffsetCommitResponseTopic::default()
                                .with_name(topic_name("orders"))
                                .with_partitions(answers),
                        ]);
                        encode_response(id, &response, version)
                    }
                    other => panic!("unexpected {other:?}"),
                };
                stream.write_all(&answer).unwrap();
            }
        });
        address.to_string()
    }

    #[test]
    fn older_brokers_are_spoken_to_in_their_own_layouts() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let address = scripted_broker(Arc::clone(&seen));
        let mut cluster = Cluster::connect(&address).unwrap();

        // ListGroups 3 has no states: DescribeGroups, via FindCoordinator 3, supplies it.
        assert_eq!(
            list_groups(&mut cluster).unwrap(),
            [ListedGroup {
                group_id: "billing".to_string(),
                state: "Stable".to_string(),
                protocol_type: "consumer".to_string(),
            }]
        );

        let (all, some) = with_coordinator(&mut cluster, "billing", |connection| {
            Ok((
                committed_offsets(connection, "billing", None)?,
                committed_offsets(connection, "billing", Some(("orders", &[0, 1])))?,
            ))
        })
        .unwrap();
        let expected = CommittedOffsets::from([(("orders".to_string(), 0), 5)]);
        assert_eq!(all, expected);
        assert_eq!(some, expected);

        let failure = with_coordinator(&mut cluster, "billing", |connection| {
            commit_offsets(
                connection,
                "billing",
                "orders",
                &BTreeMap::from([(0, 3), (1, 4)]),
            )
        })
        .unwrap_err()
        .to_string();
        assert!(
            failure.starts_with(
                "commit of group billing in partition orders-1: UNKNOWN_MEMBER_ID (Kafka error \
                 25) — the group has active members"
            ),
            "{failure}"
        );

        let seen = seen.lock().unwrap();
        let fetches = &seen.offset_fetches;
        assert_eq!(fetches.len(), 2);
        assert_eq!(fetches[0].group_id.0.as_str(), "billing");
        assert_eq!(fetches[0].topics, None, "every partition");
        let topics = fetches[1].topics.as_ref().unwrap();
        assert_eq!(topics[0].name.0.as_str(), "orders");
        assert_eq!(topics[0].partition_indexes, [0, 1]);
        let commit = &seen.offset_commits[0];
        assert_eq!(commit.group_id.0.as_str(), "billing");
        assert_eq!(commit.generation_id_or_member_epoch, -1, "a simple commit");
        assert_eq!(commit.member_id.as_str(), "");
        let committed: Vec<(i32, i64)> = commit.topics[0]
            .partitions
            .iter()
            .map(|partition| (partition.partition_index, partition.committed_offset))
            .collect();
        assert_eq!(committed, [(0, 3), (1, 4)]);
    }
}
