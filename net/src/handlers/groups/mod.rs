//! The consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and OffsetDelete.
//!
//! Each turns a Kafka request into [`GroupCall`]s for the coordinator of the group's
//! `__consumer_offsets` partition (on whichever shard owns it; see `engine::shard`) and the
//! [`GroupReply`] back into the response of the request's version. What the versions differ in
//! is handled here; the group protocol itself is `engine::groups`. A broker alone is every
//! group's coordinator; in a cluster the leader of a group's `__consumer_offsets` partition
//! is, and the other brokers refuse its group calls with NOT_COORDINATOR.

use std::collections::BTreeMap;

use engine::groups::{
    GroupError, GroupProtocol, GroupState, JoinGroup, LeavingMember, OffsetCommit,
    OffsetCommitPartition, SyncGroup, TopicPartition,
};
use engine::shard::{offsets_partition_for, GroupCall, GroupReply};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::{Broker, Client};
use crate::errors::{code, NONE};

/// FindCoordinator's key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// DescribeGroups' "authorized operations not asked for".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// The only group type this broker runs (ListGroups v5).
const GROUP_TYPE_CLASSIC: &str = "classic";

fn error_code(result: &Result<(), GroupError>) -> i16 {
    result.as_ref().err().map_or(NONE, |error| error.code())
}

fn optional(value: Option<StrBytes>) -> Option<String> {
    value.map(|value| value.to_string())
}

/// A per-partition answer for each requested topic, in the request's order: each partition
/// with its code from `codes` (absent: no error), built with `partition` and `topic`.
fn answer_partitions<Topic, Partition>(
    topics: impl Iterator<Item = (TopicName, Vec<i32>)>,
    codes: &BTreeMap<TopicPartition, i16>,
    partition: impl Fn(i32, i16) -> Partition,
    topic: impl Fn(TopicName, Vec<Partition>) -> Topic,
) -> Vec<Topic> {
    topics
        .map(|(name, indexes)| {
            let partitions = indexes
                .into_iter()
                .map(|index| {
                    let key = TopicPartition {
                        topic: name.0.to_string(),
                        partition: index,
                    };
                    partition(index, codes.get(&key).copied().unwrap_or(NONE))
                })
                .collect();
            topic(name, partitions)
        })
        .collect()
}

/// The `__consumer_offsets` partition of `group_id`.
fn offsets_partition(broker: &Broker, group_id: &str) -> u32 {
    offsets_partition_for(group_id, broker.context.groups_config().offsets_partitions)
}

/// Runs `call` on the coordinator of `group_id`.
async fn call(broker: &Broker, group_id: &str, call: GroupCall) -> GroupReply {
    let partition = offsets_partition(broker, group_id);
    broker.context.group_call(partition, call).await
}

pub fn find_coordinator(
    broker: &Broker,
    api_version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let answer = |key: StrBytes| {
        let coordinator = Coordinator::default().with_key(key.clone());
        match (request.key_type, &broker.cluster) {
            (KEY_TYPE_GROUP, Some(cluster)) => {
                match cluster.group_coordinator(offsets_partition(broker, &key)) {
                    Some(member) => coordinator
                        .with_node_id(member.node_id.into())
                        .with_host(str_bytes(member.host))
                        .with_port(member.port)
                        .with_error_code(NONE),
                    None => coordinator
                        .with_node_id((-1).into())
                        .with_port(-1)
                        .with_error_code(code(ResponseError::CoordinatorNotAvailable))
                        .with_error_message(Some(str_bytes(
                            "the group's coordinator is not known yet",
                        ))),
                }
            }
            (KEY_TYPE_GROUP, None) => coordinator
                .with_node_id(broker.config.node_id.into())
                .with_host(str_bytes(broker.config.advertised_host.clone()))
                .with_port(broker.config.advertised_port)
                .with_error_code(NONE),
            (KEY_TYPE_TRANSACTION, _) => coordinator
                .with_node_id((-1).into())
                .with_port(-1)
                .with_error_code(code(ResponseError::CoordinatorNotAvailable))
                .with_error_message(Some(str_bytes("transactions are not supported"))),
            _ => coordinator
                .with_node_id((-1).into())
                .with_port(-1)
                .with_error_code(code(ResponseError::InvalidRequest))
                .with_error_message(Some(str_bytes("unknown coordinator key type"))),
        }
    };
    if api_version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .cloned()
            .map(answer)
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let coordinator = answer(request.key.clone());
    FindCoordinatorResponse::default()
        .with_error_code(coordinator.error_code)
        .with_error_message(coordinator.error_message)
        .with_node_id(coordinator.node_id)
        .with_host(coordinator.host)
        .with_port(coordinator.port)
}

pub async fn join_group(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    let join = JoinGroup {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        group_instance_id: optional(request.group_instance_id),
        client_id: client.id.clone(),
        client_host: client.host.clone(),
        session_timeout_ms: request.session_timeout_ms,
        // Absent before version 1: the session timeout is used.
        rebalance_timeout_ms: if api_version >= 1 {
            request.rebalance_timeout_ms
        } else {
            -1
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|protocol| GroupProtocol {
                name: protocol.name.to_string(),
                metadata: protocol.metadata,
            })
            .collect(),
        require_known_member_id: api_version >= 4,
    };
    let response = match call(broker, &group_id, GroupCall::Join(join)).await {
        GroupReply::Join(response) => response,
        other => unreachable!("a join is answered with {other:?}"),
    };
    JoinGroupResponse::default()
        .with_error_code(response.error.map_or(NONE, GroupError::code))
        .with_generation_id(response.generation_id)
        .with_protocol_type(response.protocol_type.map(str_bytes))
        .with_protocol_name(response.protocol_name.map(str_bytes))
        .with_leader(str_bytes(response.leader_id))
        .with_skip_assignment(response.skip_assignment)
        .with_member_id(str_bytes(response.member_id))
        .with_members(
            response
                .members
                .into_iter()
                .map(|member| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(member.member_id))
                        .with_group_instance_id(member.group_instance_id.map(str_bytes))
                        .with_metadata(member.metadata)
                })
                .collect(),
        )
}

pub async fn sync_group(broker: &Broker, request: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let sync = SyncGroup {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: optional(request.group_instance_id),
        protocol_type: optional(request.protocol_type),
        protocol_name: optional(request.protocol_name),
        assignments: request
            .assignments
            .into_iter()
            .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
            .collect(),
    };
    let response = match call(broker, &group_id, GroupCall::Sync(sync)).await {
        GroupReply::Sync(response) => response,
        other => unreachable!("a sync is answered with {other:?}"),
    };
    SyncGroupResponse::default()
        .with_error_code(response.error.map_or(NONE, GroupError::code))
        .with_protocol_type(response.protocol_type.map(str_bytes))
        .with_protocol_name(response.protocol_name.map(str_bytes))
        .with_assignment(response.assignment)
}

pub async fn heartbeat(broker: &Broker, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let heartbeat = GroupCall::Heartbeat {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: optional(request.group_instance_id),
    };
    let result = match call(broker, &group_id, heartbeat).await {
        GroupReply::Heartbeat(result) => result,
        other => unreachable!("a heartbeat is answered with {other:?}"),
    };
    HeartbeatResponse::default().with_error_code(error_code(&result))
}

pub async fn leave_group(
    broker: &Broker,
    api_version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    // Before version 3 a request names one member; from 3 on, a batch.
    let members: Vec<LeavingMember> = if api_version >= 3 {
        request
            .members
            .iter()
            .map(|member| LeavingMember {
                member_id: member.member_id.to_string(),
                group_instance_id: optional(member.group_instance_id.clone()),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: request.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let leave = GroupCall::Leave {
        group_id: group_id.clone(),
        members: members.clone(),
    };
    let results = match call(broker, &group_id, leave).await {
        GroupReply::Leave(results) => results,
        other => unreachable!("a leave is answered with {other:?}"),
    };
    let results = match results {
        Ok(results) => results,
        Err(error) => return LeaveGroupResponse::default().with_error_code(error.code()),
    };
    if api_version < 3 {
        let result = results.into_iter().next().unwrap_or(Ok(()));
        return LeaveGroupResponse::default().with_error_code(error_code(&result));
    }
    LeaveGroupResponse::default()
        .with_error_code(NONE)
        .with_members(
            members
                .into_iter()
                .zip(results)
                .map(|(member, result)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(member.member_id))
                        .with_group_instance_id(member.group_instance_id.map(str_bytes))
                        .with_error_code(error_code(&result))
                })
                .collect(),
        )
}

pub async fn offset_commit(broker: &Broker, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let topics = broker.catalog.topics();
    // Partitions of topics that do not exist are answered here; the rest go to the group.
    let mut unknown: Vec<TopicPartition> = Vec::new();
    let mut partitions: Vec<OffsetCommitPartition> = Vec::new();
    for topic in &request.topics {
        let known = topics.get(topic.name.0.as_str());
        for partition in &topic.partitions {
            let topic_partition = TopicPartition {
                topic: topic.name.0.to_string(),
                partition: partition.partition_index,
            };
            if !known.is_some_and(|known| known.has_partition(partition.partition_index)) {
                unknown.push(topic_partition);
                continue;
            }
            partitions.push(OffsetCommitPartition {
                partition: topic_partition,
                offset: partition.committed_offset,
                leader_epoch: partition.committed_leader_epoch,
                metadata: optional(partition.committed_metadata.clone()),
            });
        }
    }
    let mut codes: BTreeMap<TopicPartition, i16> = unknown
        .into_iter()
        .map(|partition| (partition, code(ResponseError::UnknownTopicOrPartition)))
        .collect();
    let requested: Vec<TopicPartition> = partitions
        .iter()
        .map(|commit| commit.partition.clone())
        .collect();
    if !partitions.is_empty() {
        let commit = OffsetCommit {
            group_id: group_id.clone(),
            generation_id: request.generation_id_or_member_epoch,
            member_id: request.member_id.to_string(),
            group_instance_id: optional(request.group_instance_id.clone()),
            partitions,
        };
        match call(broker, &group_id, GroupCall::CommitOffsets(commit)).await {
            GroupReply::CommitOffsets(Ok(results)) => {
                for (partition, result) in results {
                    codes.insert(partition, error_code(&result));
                }
            }
            GroupReply::CommitOffsets(Err(error)) => {
                for partition in requested {
                    codes.insert(partition, error.code());
                }
            }
            other => unreachable!("a commit is answered with {other:?}"),
        }
    }
    let topics = request.topics.into_iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|p| p.partition_index).collect();
        (topic.name, partitions)
    });
    OffsetCommitResponse::default().with_topics(answer_partitions(
        topics,
        &codes,
        |index, code| {
            OffsetCommitResponsePartition::default()
                .with_partition_index(index)
                .with_error_code(code)
        },
        |name, partitions| {
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        },
    ))
}

/// One group's committed offsets as OffsetFetch reports them: for each asked partition (or
/// every committed one), offset, leader epoch, metadata, error code; -1 where nothing was
/// committed.
struct FetchedOffsets {
    error_code: i16,
    /// By topic, in the order asked (or by name when every committed partition is reported).
    topics: Vec<(String, Vec<FetchedOffset>)>,
}

struct FetchedOffset {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
}

impl FetchedOffsets {
    /// The topics in a response's own types (they differ between versions 1–7 and 8).
    fn into_topics<Topic, Partition>(
        self,
        topic: impl Fn(TopicName, Vec<Partition>) -> Topic,
        partition: impl Fn(FetchedOffset) -> Partition,
    ) -> Vec<Topic> {
        self.topics
            .into_iter()
            .map(|(name, fetched)| {
                let partitions = fetched.into_iter().map(&partition).collect();
                topic(TopicName(str_bytes(name)), partitions)
            })
            .collect()
    }
}

async fn fetch_group_offsets(
    broker: &Broker,
    group_id: &str,
    asked: Option<Vec<(String, Vec<i32>)>>,
) -> FetchedOffsets {
    let partitions = asked.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().map(|&partition| TopicPartition {
                    topic: topic.clone(),
                    partition,
                })
            })
            .collect::<Vec<_>>()
    });
    let fetch = GroupCall::FetchOffsets {
        group_id: group_id.to_owned(),
        partitions,
    };
    let offsets = match call(broker, group_id, fetch).await {
        GroupReply::FetchOffsets(Ok(offsets)) => offsets,
        GroupReply::FetchOffsets(Err(error)) => {
            return FetchedOffsets {
                error_code: error.code(),
                topics: Vec::new(),
            }
        }
        other => unreachable!("an offset fetch is answered with {other:?}"),
    };
    let mut topics: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for (partition, committed) in offsets {
        let fetched = FetchedOffset {
            partition: partition.partition,
            offset: committed.as_ref().map_or(-1, |committed| committed.offset),
            leader_epoch: committed
                .as_ref()
                .map_or(-1, |committed| committed.leader_epoch),
            metadata: committed
                .map(|committed| committed.metadata)
                .unwrap_or_default(),
        };
        match topics.last_mut() {
            Some((topic, fetched_offsets)) if *topic == partition.topic => {
                fetched_offsets.push(fetched)
            }
            _ => topics.push((partition.topic, vec![fetched])),
        }
    }
    FetchedOffsets {
        error_code: NONE,
        topics,
    }
}

pub async fn offset_fetch(
    broker: &Broker,
    api_version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if api_version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for group in request.groups {
            let asked = group.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
                    .collect()
            });
            let fetched = fetch_group_offsets(broker, &group.group_id.0, asked).await;
            let error_code = fetched.error_code;
            let topics = fetched.into_topics(
                |name, partitions| {
                    OffsetFetchResponseTopics::default()
                        .with_name(name)
                        .with_partitions(partitions)
                },
                |fetched| {
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(fetched.partition)
                        .with_committed_offset(fetched.offset)
                        .with_committed_leader_epoch(fetched.leader_epoch)
                        .with_metadata(Some(str_bytes(fetched.metadata)))
                        .with_error_code(NONE)
                },
            );
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(group.group_id)
                    .with_error_code(error_code)
                    .with_topics(topics),
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let asked = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
            .collect()
    });
    let fetched = fetch_group_offsets(broker, &request.group_id.0, asked).await;
    // Version 1 has no top-level error code: a group-level error goes on every partition.
    let partition_error = if api_version < 2 {
        fetched.error_code
    } else {
        NONE
    };
    let error_code = fetched.error_code;
    let topics = fetched.into_topics(
        |name, partitions| {
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        },
        |fetched| {
            OffsetFetchResponsePartition::default()
                .with_partition_index(fetched.partition)
                .with_committed_offset(fetched.offset)
                .with_committed_leader_epoch(fetched.leader_epoch)
                .with_metadata(Some(str_bytes(fetched.metadata)))
                .with_error_code(partition_error)
        },
    );
    OffsetFetchResponse::default()
        .with_error_code(error_code)
        .with_topics(topics)
}

pub async fn list_groups(broker: &Broker, request: ListGroupsRequest) -> ListGroupsResponse {
    let wanted_types = &request.types_filter;
    if !wanted_types.is_empty()
        && !wanted_types
            .iter()
            .any(|wanted| wanted.eq_ignore_ascii_case(GROUP_TYPE_CLASSIC))
    {
        return ListGroupsResponse::default().with_error_code(NONE);
    }
    let states: Vec<GroupState> = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ]
    .into_iter()
    .filter(|state| {
        request
            .states_filter
            .iter()
            .any(|wanted| wanted.eq_ignore_ascii_case(state.name()))
    })
    .collect();
    if !request.states_filter.is_empty() && states.is_empty() {
        // Only states no group can be in were asked for.
        return ListGroupsResponse::default().with_error_code(NONE);
    }
    let mut groups = Vec::new();
    let mut error = NONE;
    for partition in 0..broker.context.groups_config().offsets_partitions {
        let list = GroupCall::List {
            states: states.clone(),
        };
        match broker.context.group_call(partition, list).await {
            GroupReply::List(Ok(listed)) => groups.extend(listed),
            // In a cluster: another broker coordinates this partition's groups.
            GroupReply::List(Err(GroupError::NotCoordinator)) => {}
            GroupReply::List(Err(refused)) => error = refused.code(),
            other => unreachable!("a group listing is answered with {other:?}"),
        }
    }
    ListGroupsResponse::default()
        .with_error_code(error)
        .with_groups(
            groups
                .into_iter()
                .map(|group| {
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(group.group_id)))
                        .with_protocol_type(str_bytes(group.protocol_type))
                        .with_group_state(StrBytes::from_static_str(group.state.name()))
                        .with_group_type(StrBytes::from_static_str(GROUP_TYPE_CLASSIC))
                })
                .collect(),
        )
}

pub async fn describe_groups(
    broker: &Broker,
    api_version: i16,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut described = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let describe = GroupCall::Describe {
            group_id: group_id.0.to_string(),
        };
        let group = DescribedGroup::default()
            .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
            .with_group_id(group_id.clone());
        let group = match call(broker, &group_id.0, describe).await {
            GroupReply::Describe(Ok(description)) => group
                .with_error_code(NONE)
                .with_group_state(StrBytes::from_static_str(description.state.name()))
                .with_protocol_type(str_bytes(description.protocol_type))
                .with_protocol_data(str_bytes(description.protocol_name))
                .with_members(
                    description
                        .members
                        .into_iter()
                        .map(|member| {
                            let described = DescribedGroupMember::default()
                                .with_member_id(str_bytes(member.member_id))
                                .with_client_id(str_bytes(member.client_id))
                                .with_client_host(str_bytes(member.client_host))
                                .with_member_metadata(member.metadata)
                                .with_member_assignment(member.assignment);
                            // The instance id exists from version 4.
                            if api_version >= 4 {
                                described
                                    .with_group_instance_id(member.group_instance_id.map(str_bytes))
                            } else {
                                described
                            }
                        })
                        .collect(),
                ),
            GroupReply::Describe(Err(error)) => group
                .with_error_code(error.code())
                .with_group_state(StrBytes::from_static_str(GroupState::Dead.name())),
            other => unreachable!("a group description is answered with {other:?}"),
        };
        described.push(group);
    }
    DescribeGroupsResponse::default().with_groups(described)
}

pub async fn delete_groups(broker: &Broker, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let delete = GroupCall::Delete {
            group_id: group_id.0.to_string(),
        };
        let result = match call(broker, &group_id.0, delete).await {
            GroupReply::Delete(result) => result,
            other => unreachable!("a group deletion is answered with {other:?}"),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(error_code(&result)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

pub async fn offset_delete(broker: &Broker, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    let partitions: Vec<TopicPartition> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| TopicPartition {
                topic: topic.name.0.to_string(),
                partition: partition.partition_index,
            })
        })
        .collect();
    let delete = GroupCall::DeleteOffsets {
        group_id: group_id.clone(),
        partitions,
    };
    let results = match call(broker, &group_id, delete).await {
        GroupReply::DeleteOffsets(Ok(results)) => results,
        GroupReply::DeleteOffsets(Err(error)) => {
            return OffsetDeleteResponse::default().with_error_code(error.code())
        }
        other => unreachable!("an offset deletion is answered with {other:?}"),
    };
    let codes: BTreeMap<TopicPartition, i16> = results
        .into_iter()
        .map(|(partition, result)| (partition, error_code(&result)))
        .collect();
    let topics = request.topics.into_iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|p| p.partition_index).collect();
        (topic.name, partitions)
    });
    OffsetDeleteResponse::default()
        .with_error_code(NONE)
        .with_topics(answer_partitions(
            topics,
            &codes,
            |index, code| {
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(index)
                    .with_error_code(code)
            },
            |name, partitions| {
                OffsetDeleteResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            },
        ))
}
