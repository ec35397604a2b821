//! The consumer-group APIs end to end, over the wire, against a two-shard broker (so a
//! group's coordinator is often on another shard than the connection): the whole life of a
//! group, the error codes misbehaving members get, session expiry, restart, and the guards on
//! the internal `__consumer_offsets` topic.

mod common;

use bytes::Bytes;
use common::{eventually, Client, TestBroker};
use engine::batch::build::batch_of;
use engine::LogConfig;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn join_request(group: &str, member_id: &str, session_timeout_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_member_id(text(member_id))
        .with_session_timeout_ms(session_timeout_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(text("range"))
            .with_metadata(Bytes::from_static(b"subscription"))])
}

/// Joins as a new member (MEMBER_ID_REQUIRED first, as from version 4) and returns the answer
/// to the join with the given member id.
fn join_new(client: &mut Client, group: &str, session_timeout_ms: i32) -> JoinGroupResponse {
    let first: JoinGroupResponse = client.call(
        ApiKey::JoinGroup,
        5,
        &join_request(group, "", session_timeout_ms),
    );
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    assert!(first.member_id.starts_with("net-tests-"), "{first:?}");
    client.call(
        ApiKey::JoinGroup,
        5,
        &join_request(group, &first.member_id, session_timeout_ms),
    )
}

fn sync(
    client: &mut Client,
    group: &str,
    generation_id: i32,
    member_id: &str,
    assignments: &[(&str, &'static [u8])],
) -> SyncGroupResponse {
    client.call(
        ApiKey::SyncGroup,
        5,
        &sync_request(group, generation_id, member_id, assignments),
    )
}

fn sync_request(
    group: &str,
    generation_id: i32,
    member_id: &str,
    assignments: &[(&str, &'static [u8])],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id(generation_id)
        .with_member_id(text(member_id))
        .with_protocol_type(Some(text("consumer")))
        .with_protocol_name(Some(text("range")))
        .with_assignments(
            assignments
                .iter()
                .map(|(member, assignment)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(text(member))
                        .with_assignment(Bytes::from_static(assignment))
                })
                .collect(),
        )
}

fn heartbeat(client: &mut Client, group: &str, generation_id: i32, member_id: &str) -> i16 {
    let response: HeartbeatResponse = client.call(
        ApiKey::Heartbeat,
        4,
        &HeartbeatRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_generation_id(generation_id)
            .with_member_id(text(member_id)),
    );
    response.error_code
}

/// Commits `offsets` of `topic`'s partitions; returns each partition's error code.
fn commit(
    client: &mut Client,
    group: &str,
    generation_id: i32,
    member_id: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let response: OffsetCommitResponse = client.call(
        ApiKey::OffsetCommit,
        8,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_generation_id_or_member_epoch(generation_id)
            .with_member_id(text(member_id))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|&(partition, offset)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(partition)
                                .with_committed_offset(offset)
                                .with_committed_metadata(Some(text("meta")))
                        })
                        .collect(),
                )]),
    );
    response.topics[0]
        .partitions
        .iter()
        .map(|partition| partition.error_code)
        .collect()
}

/// The committed offsets of `topic`'s `partitions` (-1: none), with OffsetFetch v7.
fn committed(client: &mut Client, group: &str, topic: &str, partitions: &[i32]) -> Vec<i64> {
    let response: OffsetFetchResponse = client.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partition_indexes(partitions.to_vec())])),
    );
    assert_eq!(response.error_code, 0);
    response.topics[0]
        .partitions
        .iter()
        .map(|partition| partition.committed_offset)
        .collect()
}

fn describe(client: &mut Client, group: &str) -> describe_groups_response::DescribedGroup {
    let response: DescribeGroupsResponse = client.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(text(group))]),
    );
    response.groups.into_iter().next().unwrap()
}

fn create_topic(client: &mut Client, topic: &str) {
    let response: MetadataResponse = client.call(
        ApiKey::Metadata,
        9,
        &MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(TopicName(text(topic))))]))
            .with_allow_auto_topic_creation(true),
    );
    assert_eq!(response.topics[0].error_code, 0);
}

#[test]
fn a_group_lives_commits_and_comes_back_after_a_restart() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    create_topic(&mut client, "orders");

    let coordinator: FindCoordinatorResponse = client.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(text("billing")),
    );
    assert_eq!(coordinator.error_code, 0);
    assert_eq!(coordinator.port, i32::from(broker.address.port()));
    let batched: FindCoordinatorResponse = client.call(
        ApiKey::FindCoordinator,
        4,
        &FindCoordinatorRequest::default()
            .with_coordinator_keys(vec![text("billing"), text("audit")]),
    );
    assert_eq!(batched.coordinators.len(), 2);
    assert!(batched.coordinators.iter().all(|c| c.error_code == 0));
    let transactions: FindCoordinatorResponse = client.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default()
            .with_key(text("tx"))
            .with_key_type(1),
    );
    assert_eq!(
        (transactions.error_code, transactions.port),
        (0, i32::from(broker.address.port())),
        "a broker alone coordinates transactions too"
    );

    let joined = join_new(&mut client, "billing", 10_000);
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader, joined.member_id, "the only member leads");
    assert_eq!(joined.members.len(), 1);
    let member = joined.member_id.to_string();
    let synced = sync(&mut client, "billing", 1, &member, &[(&member, b"both")]);
    assert_eq!(synced.error_code, 0);
    assert_eq!(&synced.assignment[..], b"both");
    assert_eq!(heartbeat(&mut client, "billing", 1, &member), 0);

    assert_eq!(
        commit(
            &mut client,
            "billing",
            1,
            &member,
            "orders",
            &[(0, 5), (1, 7)]
        ),
        vec![0, 0]
    );
    assert_eq!(
        commit(&mut client, "billing", 1, &member, "nope", &[(0, 1)]),
        vec![UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(
        committed(&mut client, "billing", "orders", &[0, 1]),
        vec![5, 7]
    );
    // Version 8 asks for several groups at once; a group without commits gets -1.
    let fetched: OffsetFetchResponse = client.call(
        ApiKey::OffsetFetch,
        8,
        &OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(text("billing")))
                .with_topics(None),
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(text("nobody")))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(TopicName(text("orders")))
                    .with_partition_indexes(vec![0])])),
        ]),
    );
    let billing = &fetched.groups[0].topics[0];
    assert_eq!(billing.partitions.len(), 2, "every committed partition");
    assert_eq!(
        fetched.groups[1].topics[0].partitions[0].committed_offset,
        -1
    );

    let described = describe(&mut client, "billing");
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.protocol_data.as_str(), "range");
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].client_id.as_str(), "net-tests");
    assert_eq!(described.members[0].client_host.as_str(), "/127.0.0.1");
    assert_eq!(&described.members[0].member_assignment[..], b"both");
    let listed: ListGroupsResponse = client.call(
        ApiKey::ListGroups,
        4,
        &ListGroupsRequest::default().with_states_filter(vec![text("stable")]),
    );
    assert_eq!(listed.groups.len(), 1);
    assert_eq!(listed.groups[0].group_id.as_str(), "billing");
    assert_eq!(listed.groups[0].protocol_type.as_str(), "consumer");
    drop(client);

    let broker = TestBroker::start_in(broker.stop(), 2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(
        committed(&mut client, "billing", "orders", &[0, 1]),
        vec![5, 7],
        "commits survive a restart"
    );
    let described = describe(&mut client, "billing");
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(
        heartbeat(&mut client, "billing", 1, &member),
        0,
        "the member keeps its place and generation"
    );
}

#[test]
fn misbehaving_members_get_the_error_codes_clients_act_on() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut leader = broker.connect();
    create_topic(&mut leader, "events");

    assert_eq!(
        heartbeat(&mut leader, "ghosts", 1, "nobody"),
        UNKNOWN_MEMBER_ID
    );
    let early = sync(&mut leader, "ghosts", 1, "nobody", &[]);
    assert_eq!(early.error_code, UNKNOWN_MEMBER_ID, "sync before join");
    let too_short: JoinGroupResponse =
        leader.call(ApiKey::JoinGroup, 5, &join_request("ghosts", "", 10));
    assert_eq!(too_short.error_code, INVALID_SESSION_TIMEOUT);

    let first = join_new(&mut leader, "team", 30_000);
    assert_eq!(first.error_code, 0);
    let leader_id = first.member_id.to_string();
    assert_eq!(sync(&mut leader, "team", 1, &leader_id, &[]).error_code, 0);
    assert_eq!(
        heartbeat(&mut leader, "team", 7, &leader_id),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        heartbeat(&mut leader, "team", 1, "stranger"),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        commit(
            &mut leader,
            "team",
            7,
            &leader_id,
            "events",
            &[(0, 1), (1, 1)]
        ),
        vec![ILLEGAL_GENERATION, ILLEGAL_GENERATION]
    );
    assert_eq!(
        commit(&mut leader, "team", 1, "stranger", "events", &[(0, 1)]),
        vec![UNKNOWN_MEMBER_ID]
    );

    // A second member's join waits for the first to rejoin; meanwhile the first is told.
    let mut follower = broker.connect();
    let first_join: JoinGroupResponse =
        follower.call(ApiKey::JoinGroup, 5, &join_request("team", "", 30_000));
    assert_eq!(first_join.error_code, MEMBER_ID_REQUIRED);
    let follower_id = first_join.member_id.to_string();
    follower.send(
        ApiKey::JoinGroup,
        5,
        &join_request("team", &follower_id, 30_000),
    );
    eventually("the rebalance to start", || {
        heartbeat(&mut leader, "team", 1, &leader_id) == REBALANCE_IN_PROGRESS
    });
    let rejoined: JoinGroupResponse = leader.call(
        ApiKey::JoinGroup,
        5,
        &join_request("team", &leader_id, 30_000),
    );
    let (_, follower_joined): (i32, JoinGroupResponse) = follower.receive(ApiKey::JoinGroup, 5);
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(follower_joined.error_code, 0);
    assert_eq!(rejoined.generation_id, 2);
    assert_eq!(follower_joined.generation_id, 2);
    assert_eq!(rejoined.leader.as_str(), leader_id);
    assert_eq!(rejoined.members.len(), 2, "the leader sees every member");
    assert!(follower_joined.members.is_empty(), "followers see none");

    // The follower's sync waits for the leader's assignment.
    follower.send(
        ApiKey::SyncGroup,
        5,
        &sync_request("team", 2, &follower_id, &[]),
    );
    assert_eq!(
        commit(&mut leader, "team", 2, &leader_id, "events", &[(0, 1)]),
        vec![REBALANCE_IN_PROGRESS],
        "no commits while the assignment is being decided"
    );
    let leader_synced = sync(
        &mut leader,
        "team",
        2,
        &leader_id,
        &[(&leader_id, b"p0"), (&follower_id, b"p1")],
    );
    let (_, follower_synced): (i32, SyncGroupResponse) = follower.receive(ApiKey::SyncGroup, 5);
    assert_eq!(&leader_synced.assignment[..], b"p0");
    assert_eq!(&follower_synced.assignment[..], b"p1");
    assert_eq!(
        heartbeat(&mut leader, "team", 1, &leader_id),
        ILLEGAL_GENERATION
    );
    assert_eq!(heartbeat(&mut follower, "team", 2, &follower_id), 0);

    // Deleting a group with members is refused; once both leave it can go.
    let refused: DeleteGroupsResponse = leader.call(
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text("team"))]),
    );
    assert_eq!(refused.results[0].error_code, NON_EMPTY_GROUP);
    let left: LeaveGroupResponse = leader.call(
        ApiKey::LeaveGroup,
        4,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(text("team")))
            .with_members(vec![
                MemberIdentity::default().with_member_id(text(&leader_id)),
                MemberIdentity::default().with_member_id(text(&follower_id)),
                MemberIdentity::default().with_member_id(text("stranger")),
            ]),
    );
    assert_eq!(left.error_code, 0);
    let codes: Vec<i16> = left.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![0, 0, UNKNOWN_MEMBER_ID]);
    assert_eq!(describe(&mut leader, "team").group_state.as_str(), "Empty");
    let deleted: DeleteGroupsResponse = leader.call(
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(text("team")), GroupId(text("team"))]),
    );
    let codes: Vec<i16> = deleted.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![0, GROUP_ID_NOT_FOUND]);
    assert_eq!(describe(&mut leader, "team").group_state.as_str(), "Dead");
}

#[test]
fn a_member_that_stops_heartbeating_is_dropped_after_its_session_timeout() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut steady = broker.connect();
    let mut silent = broker.connect();
    let steady_joined = join_new(&mut steady, "crew", 30_000);
    let steady_id = steady_joined.member_id.to_string();
    assert_eq!(sync(&mut steady, "crew", 1, &steady_id, &[]).error_code, 0);
    let first: JoinGroupResponse =
        silent.call(ApiKey::JoinGroup, 5, &join_request("crew", "", 300));
    let silent_id = first.member_id.to_string();
    silent.send(ApiKey::JoinGroup, 5, &join_request("crew", &silent_id, 300));
    eventually("the rebalance to start", || {
        heartbeat(&mut steady, "crew", 1, &steady_id) == REBALANCE_IN_PROGRESS
    });
    let rejoined: JoinGroupResponse = steady.call(
        ApiKey::JoinGroup,
        5,
        &join_request("crew", &steady_id, 30_000),
    );
    assert_eq!(rejoined.members.len(), 2);
    let _: (i32, JoinGroupResponse) = silent.receive(ApiKey::JoinGroup, 5);
    assert_eq!(
        sync(&mut steady, "crew", 2, &steady_id, &[(&steady_id, b"")]).error_code,
        0
    );
    // The silent member never syncs nor heartbeats: its session ends and the group
    // rebalances without it.
    eventually("the silent member's session to end", || {
        heartbeat(&mut steady, "crew", 2, &steady_id) == REBALANCE_IN_PROGRESS
    });
    let alone: JoinGroupResponse = steady.call(
        ApiKey::JoinGroup,
        5,
        &join_request("crew", &steady_id, 30_000),
    );
    assert_eq!(alone.generation_id, 3);
    assert_eq!(alone.members.len(), 1);
    assert_eq!(
        heartbeat(&mut silent, "crew", 2, &silent_id),
        UNKNOWN_MEMBER_ID
    );
}

#[test]
fn offsets_of_an_empty_group_can_be_deleted_and_internal_topics_are_guarded() {
    let broker = TestBroker::start(1, LogConfig::default());
    let mut client = broker.connect();
    create_topic(&mut client, "ledger");
    // A "simple" commit: generation -1, no member (a consumer that assigns itself).
    assert_eq!(
        commit(&mut client, "audit", -1, "", "ledger", &[(0, 3), (1, 4)]),
        vec![0, 0]
    );
    let deleted: OffsetDeleteResponse = client.call(
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(GroupId(text("audit")))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(text("ledger")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])]),
    );
    assert_eq!(deleted.error_code, 0);
    assert_eq!(deleted.topics[0].partitions[0].error_code, 0);
    assert_eq!(
        committed(&mut client, "audit", "ledger", &[0, 1]),
        vec![-1, 4]
    );

    let metadata: MetadataResponse = client.call(
        ApiKey::Metadata,
        9,
        &MetadataRequest::default().with_topics(None),
    );
    let internal = metadata
        .topics
        .iter()
        .find(|topic| topic.name.as_ref().map(|name| name.as_str()) == Some("__consumer_offsets"))
        .expect("the offsets topic is listed");
    assert!(internal.is_internal);
    let produced: ProduceResponse = client.call(
        ApiKey::Produce,
        9,
        &ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(text("__consumer_offsets")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch_of(1, 10, 0))))])]),
    );
    assert_eq!(
        produced.responses[0].partition_responses[0].error_code,
        INVALID_TOPIC_EXCEPTION
    );
    let deleted: DeleteTopicsResponse = client.call(
        ApiKey::DeleteTopics,
        5,
        &DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(text("__consumer_offsets"))])
            .with_timeout_ms(5_000),
    );
    assert_eq!(deleted.responses[0].error_code, INVALID_TOPIC_EXCEPTION);
    assert_eq!(
        committed(&mut client, "audit", "ledger", &[1]),
        vec![4],
        "the group's state is intact"
    );
}

/// The log end offset of `__consumer_offsets` partition `partition` (ListOffsets, latest).
fn offsets_log_end(client: &mut Client, partition: i32) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let response: ListOffsetsResponse = client.call(
        ApiKey::ListOffsets,
        6,
        &ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(text("__consumer_offsets")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(-1)])]),
    );
    let answer = &response.topics[0].partitions[0];
    assert_eq!(answer.error_code, 0);
    answer.offset
}

#[test]
fn groups_and_offsets_load_unchanged_from_a_compacted_offsets_topic() {
    // Segments roll every 20 ms, so commits seal many; tombstones go at the first cleaning.
    let log_config = LogConfig {
        segment_age_ms_max: Some(20),
        delete_retention_ms: 0,
        ..LogConfig::default()
    };
    let broker = TestBroker::start(1, log_config.clone());
    let mut client = broker.connect();
    create_topic(&mut client, "orders");
    let joined = join_new(&mut client, "billing", 30_000);
    let member = joined.member_id.to_string();
    assert_eq!(
        sync(&mut client, "billing", 1, &member, &[(&member, b"both")]).error_code,
        0
    );
    let simple_groups = ["audit", "replay", "backup"];
    let offsets_partitions: std::collections::BTreeSet<i32> = ["billing"]
        .iter()
        .chain(&simple_groups)
        .map(|group| net::groups::offsets_partition_for(group, 16) as i32)
        .collect();
    // Many commits for each group: only the last of each partition counts.
    let commits = 300;
    // Once "audit" has forgotten partition 0, it commits only partition 1.
    let commit_all = |client: &mut Client, round: i64, audit_forgot: bool| {
        assert_eq!(heartbeat(client, "billing", 1, &member), 0);
        let offsets = [(0, round), (1, 2 * round)];
        assert_eq!(
            commit(client, "billing", 1, &member, "orders", &offsets),
            vec![0, 0]
        );
        for group in simple_groups {
            let offsets = match group {
                "audit" if audit_forgot => &offsets[1..],
                _ => &offsets[..],
            };
            let codes = commit(client, group, -1, "", "orders", offsets);
            assert!(codes.iter().all(|&code| code == 0), "{codes:?}");
        }
    };
    for round in 0..commits {
        commit_all(&mut client, round, false);
    }
    // A tombstone: "audit" forgets partition 0.
    let deleted: OffsetDeleteResponse = client.call(
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(GroupId(text("audit")))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(text("orders")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])]),
    );
    assert_eq!(deleted.topics[0].partitions[0].error_code, 0);
    let ends: Vec<(i32, i64)> = offsets_partitions
        .iter()
        .map(|&partition| (partition, offsets_log_end(&mut client, partition)))
        .collect();
    // The same final commits again (nothing changes) until the cleaner has been past the
    // tombstone in every partition the groups use.
    let last = commits - 1;
    eventually("the cleaner to compact the offsets partitions", || {
        commit_all(&mut client, last, true);
        ends.iter().all(|&(partition, end)| {
            let file = broker
                .data
                .path()
                .join(format!("__consumer_offsets-{partition}"))
                .join("compacted-end-offset");
            std::fs::read_to_string(file)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
                .is_some_and(|compacted_end| compacted_end >= end)
        })
    });
    drop(client);
    let data = broker.stop();
    for &partition in &offsets_partitions {
        let dir = data.path().join(format!("__consumer_offsets-{partition}"));
        let compacted_end: u64 = std::fs::read_to_string(dir.join("compacted-end-offset"))
            .unwrap()
            .parse()
            .unwrap();
        // Below the compacted end each key's latest record is left, a few batches; the
        // commits there were a batch each (61 bytes of header alone), hundreds of them.
        let cleaned_bytes: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().unwrap();
                let base: u64 = name.strip_suffix(".log")?.parse().ok()?;
                (base < compacted_end).then(|| entry.metadata().unwrap().len())
            })
            .sum();
        assert!(
            cleaned_bytes < 4096,
            "partition {partition}: {cleaned_bytes} bytes below offset {compacted_end}"
        );
    }

    let broker = TestBroker::start_in(data, 1, log_config);
    let mut client = broker.connect();
    assert_eq!(
        committed(&mut client, "billing", "orders", &[0, 1]),
        vec![last, 2 * last]
    );
    assert_eq!(
        committed(&mut client, "audit", "orders", &[0, 1]),
        vec![-1, 2 * last],
        "the deleted offset stays deleted once its tombstone is gone"
    );
    for group in ["replay", "backup"] {
        assert_eq!(
            committed(&mut client, group, "orders", &[0, 1]),
            vec![last, 2 * last]
        );
    }
    let described = describe(&mut client, "billing");
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(&described.members[0].member_assignment[..], b"both");
    assert_eq!(heartbeat(&mut client, "billing", 1, &member), 0);
}
