"""What the group coordinator answers to group requests no well-behaved client sends: a
heartbeat or a SyncGroup from a member that never joined, a heartbeat or an offset commit from a
stale generation or a stranger. Each must get the Kafka error code that makes a real client
rejoin (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS), promptly, and must change
nothing: the member in good standing stays so, a refused commit is not stored.

The requests are sent on the wire (raw_protocol.py), as the clients' own coordinators would never
send them.
"""

import threading

from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    JoinGroupRequest,
    OffsetCommitRequest,
    OffsetFetchRequest,
    SyncGroupRequest,
)
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment, ConsumerProtocolSubscription
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest

from clients import Confluent, created_topic
from raw_protocol import RawConnection
from support import CLIENT_DEADLINE_S, topic_name, wait_until

SESSION_TIMEOUT_MS = 10_000

# Kafka error codes.
NONE = 0
ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
REBALANCE_IN_PROGRESS = 27
MEMBER_ID_REQUIRED = 79
# FindCoordinator's key type of a consumer group.
GROUP_KEY_TYPE = 0


def coordinator(broker, group):
    """A connection to `group`'s coordinator, found as a client finds it."""
    connection = RawConnection(broker.bootstrap)
    version = connection.version(FindCoordinatorRequest)
    if version >= 4:
        answer = connection.request(FindCoordinatorRequest(key_type=GROUP_KEY_TYPE, coordinator_keys=[group]))
        assert len(answer.coordinators) == 1, f"FindCoordinator: {answer}"
        found = answer.coordinators[0]
    else:
        found = connection.request(FindCoordinatorRequest(key=group, key_type=GROUP_KEY_TYPE))
    assert found.error_code == NONE, f"FindCoordinator for {group}: {found}"
    connection.close()
    return RawConnection(f"{found.host}:{found.port}")


def join(connection, group, topic, member_id=""):
    """The JoinGroup answer for a member subscribed to `topic` (after the retry with the
    member id the broker hands out, KIP-394, when it asks for one)."""

    def join_request(member_id):
        return JoinGroupRequest(
            group_id=group,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            rebalance_timeout_ms=SESSION_TIMEOUT_MS,
            member_id=member_id,
            group_instance_id=None,
            protocol_type="consumer",
            protocols=[
                JoinGroupRequest.JoinGroupRequestProtocol(
                    name="range", metadata=ConsumerProtocolSubscription(0, [topic], b"").encode()
                )
            ],
        )

    joined = connection.request(join_request(member_id))
    if joined.error_code == MEMBER_ID_REQUIRED:
        joined = connection.request(join_request(joined.member_id))
    assert joined.error_code == NONE, f"JoinGroup: {joined}"
    return joined


def sync(connection, group, joined, topic, partitions_of_members):
    """The SyncGroup error code of the member that got `joined`; a leader hands out
    `partitions_of_members` ({member id: partitions of `topic`})."""
    assignments = [
        SyncGroupRequest.SyncGroupRequestAssignment(
            member_id=member_id, assignment=ConsumerProtocolAssignment(0, [(topic, partitions)], b"").encode()
        )
        for member_id, partitions in partitions_of_members.items()
    ]
    return connection.request(
        SyncGroupRequest(
            group_id=group,
            generation_id=joined.generation_id,
            member_id=joined.member_id,
            group_instance_id=None,
            protocol_type="consumer",
            protocol_name="range",
            assignments=assignments,
        )
    ).error_code


def heartbeat(connection, group, generation_id, member_id):
    return connection.request(
        HeartbeatRequest(
            group_id=group, generation_id=generation_id, member_id=member_id, group_instance_id=None
        )
    ).error_code


# OffsetCommit and OffsetFetch name topics by id from version 10 on; these tests name them.
OFFSETS_BY_TOPIC_NAME_VERSION_MAX = 9
# OffsetFetch asks for several groups at once from version 8 on.
OFFSET_FETCH_GROUPS_VERSION_MIN = 8


def commit_offset(connection, group, generation_id, member_id, topic, offset):
    """The error code of an OffsetCommit of `offset` for partition 0 of `topic`."""
    partition = OffsetCommitRequest.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
        partition_index=0,
        committed_offset=offset,
        committed_leader_epoch=-1,
        commit_timestamp=-1,
        committed_metadata="",
    )
    request = OffsetCommitRequest(
        group_id=group,
        generation_id_or_member_epoch=generation_id,
        member_id=member_id,
        group_instance_id=None,
        retention_time_ms=-1,
        topics=[OffsetCommitRequest.OffsetCommitRequestTopic(name=topic, partitions=[partition])],
    )
    answer = connection.request(
        request, connection.version(OffsetCommitRequest, OFFSETS_BY_TOPIC_NAME_VERSION_MAX)
    )
    errors = {p.error_code for t in answer.topics for p in t.partitions}
    assert len(errors) == 1, f"OffsetCommit: {answer}"
    return errors.pop()


def committed_offset(connection, group, topic):
    """The offset committed for partition 0 of `topic` (-1: none)."""
    version = connection.version(OffsetFetchRequest, OFFSETS_BY_TOPIC_NAME_VERSION_MAX)
    if version >= OFFSET_FETCH_GROUPS_VERSION_MIN:
        request = OffsetFetchRequest(
            groups=[
                OffsetFetchRequest.OffsetFetchRequestGroup(
                    group_id=group,
                    member_id=None,
                    member_epoch=-1,
                    topics=[
                        OffsetFetchRequest.OffsetFetchRequestGroup.OffsetFetchRequestTopics(
                            name=topic, partition_indexes=[0]
                        )
                    ],
                )
            ],
            require_stable=False,
        )
    else:
        request = OffsetFetchRequest(
            group_id=group,
            topics=[OffsetFetchRequest.OffsetFetchRequestTopic(name=topic, partition_indexes=[0])],
            require_stable=False,
        )
    answer = connection.request(request, version)
    if version >= OFFSET_FETCH_GROUPS_VERSION_MIN:
        (answer,) = answer.groups
    assert answer.error_code == NONE, f"OffsetFetch: {answer}"
    (partition,) = [p for t in answer.topics for p in t.partitions]
    assert partition.error_code == NONE, f"OffsetFetch: {answer}"
    return partition.committed_offset


def answers(expected, got, request):
    """Fails naming the request and both codes unless the broker answered `expected`."""
    assert got == expected, f"{request}: the broker answered Kafka error {got}, expected {expected}"


def test_group_requests_from_unknown_members_or_stale_generations_get_kafka_errors(broker):
    producer = Confluent(broker.bootstrap)
    topic = created_topic(producer, "raw-group", 1)
    producer.close()
    group = topic_name("raw-group")
    connection = coordinator(broker, group)

    # Before anyone joined, the group does not exist: nobody is a member of it.
    answers(UNKNOWN_MEMBER_ID, heartbeat(connection, group, 0, "nobody"), "Heartbeat before any JoinGroup")
    sync_before_join = SyncGroupRequest(
        group_id=group,
        generation_id=0,
        member_id="nobody",
        group_instance_id=None,
        protocol_type="consumer",
        protocol_name="range",
        assignments=[],
    )
    answers(
        UNKNOWN_MEMBER_ID, connection.request(sync_before_join).error_code, "SyncGroup before any JoinGroup"
    )

    first = join(connection, group, topic)
    assert first.leader == first.member_id, f"the only member should lead: {first}"
    answers(NONE, sync(connection, group, first, topic, {first.member_id: [0]}), "SyncGroup of the leader")
    member_id, generation_id = first.member_id, first.generation_id
    answers(NONE, heartbeat(connection, group, generation_id, member_id), "Heartbeat of the member")
    answers(
        UNKNOWN_MEMBER_ID, heartbeat(connection, group, generation_id, "stranger"), "Heartbeat of a stranger"
    )
    answers(
        ILLEGAL_GENERATION,
        heartbeat(connection, group, generation_id + 1, member_id),
        "Heartbeat with a generation to come",
    )
    answers(
        ILLEGAL_GENERATION,
        commit_offset(connection, group, generation_id + 1, member_id, topic, 5),
        "OffsetCommit with a generation to come",
    )
    answers(
        UNKNOWN_MEMBER_ID,
        commit_offset(connection, group, generation_id, "stranger", topic, 5),
        "OffsetCommit of a stranger",
    )
    assert committed_offset(connection, group, topic) == -1, "a refused commit was stored"

    # A second member joins: its JoinGroup waits for the first member to rejoin, which the
    # first learns from its heartbeat. Once it has, the first generation is stale.
    second_connection = RawConnection(connection.address)
    second = {}
    second_joining = threading.Thread(
        target=lambda: second.update(joined=join(second_connection, group, topic))
    )
    second_joining.start()
    wait_until(
        lambda: heartbeat(connection, group, generation_id, member_id) == REBALANCE_IN_PROGRESS,
        "the first member's heartbeat to say a rebalance is in progress",
    )
    rejoined = join(connection, group, topic, member_id)
    second_joining.join(timeout=CLIENT_DEADLINE_S)
    assert "joined" in second, "the second member's JoinGroup was not answered"
    assert rejoined.generation_id > generation_id, f"a new member, yet no new generation: {rejoined}"
    answers(
        ILLEGAL_GENERATION,
        heartbeat(connection, group, generation_id, member_id),
        "Heartbeat with the previous generation",
    )
    answers(
        ILLEGAL_GENERATION,
        commit_offset(connection, group, generation_id, member_id, topic, 5),
        "OffsetCommit with the previous generation",
    )
    assert committed_offset(connection, group, topic) == -1, "a refused commit was stored"

    leader, follower = (
        (connection, second_connection)
        if rejoined.leader == rejoined.member_id
        else (second_connection, connection)
    )
    leader_joined, follower_joined = (
        (rejoined, second["joined"]) if leader is connection else (second["joined"], rejoined)
    )
    assignment = {member_id: [0], second["joined"].member_id: []}
    answers(NONE, sync(leader, group, leader_joined, topic, assignment), "SyncGroup of the leader")
    answers(NONE, sync(follower, group, follower_joined, topic, {}), "SyncGroup of the follower")
    answers(
        NONE,
        commit_offset(connection, group, rejoined.generation_id, member_id, topic, 7),
        "OffsetCommit of the member",
    )
    assert committed_offset(connection, group, topic) == 7, "the member's commit was not stored"
    answers(
        NONE,
        heartbeat(connection, group, rejoined.generation_id, member_id),
        "Heartbeat of the member, at the end",
    )
    second_connection.close()
    connection.close()
