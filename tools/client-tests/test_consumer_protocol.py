"""Consumer groups of Kafka 4's consumer protocol (KIP-848, `group.protocol=consumer`) with
confluent-kafka (librdkafka 2.10+): the broker assigns the partitions itself (its `uniform` and
`range` assignors), members share a topic, take over from a member that closes (at once) or is
killed (after the broker's session timeout), carry on through a broker restart and resume from
the group's committed offsets afterwards; in a 3-broker cluster the group carries on when its
coordinator is killed, then a member is killed, the other leaves and a new one resumes.

Members run as processes of their own (members.py), and so do the admin calls that a group's
coordinator answers (group_admin.py: librdkafka can abort the process that makes one). The
broker's consumer-protocol session is set short (6 s, heartbeats every 0.5 s) so that a dead
member is noticed in seconds; unlike the classic protocol there is no initial rebalance delay.
"""

import json
import os
import re
import subprocess
import urllib.request

import confluent_kafka
import pytest

from clients import Confluent, created_topic
from group_admin import described_group
from cluster_support import Loopback, created_topic as created_cluster_topic, running_cluster
from members import (
    GroupMember,
    check_group_log,
    commit_all,
    consumed_by,
    end_offsets,
    values,
    wait_for_split,
    wait_for_values,
)
from support import CLIENT_DEADLINE_S, messages, topic_name, wait_until
from test_cluster_groups import committed_offsets, coordinator
from test_consumer_offsets_format import Reader, read_offsets_records

PARTITIONS = 4
MESSAGE_COUNT = 200
KEY_COUNT = 40
SESSION_TIMEOUT_MS = 6000
SESSION_TIMEOUT_S = SESSION_TIMEOUT_MS / 1000
# After a dead member's session expires, the others hear of their new partitions at their next
# heartbeat (every 0.5 s) and must first find the committed offsets.
TAKEOVER_MARGIN_S = 4.0
BROKER_ARGS = (
    *("--group-consumer-session-timeout-ms", str(SESSION_TIMEOUT_MS)),
    *("--group-consumer-heartbeat-interval-ms", "500"),
)


def member_starter(request, bootstrap, tmp_path):
    """start(name, group, topic, assignor="uniform"): a new consumer-protocol member process;
    every one still running at the end is killed (by the returned `stop`)."""
    started = []
    # conftest attaches their stderr to a failure's report.
    request.node.ferrite_clients = started

    def start(name, group, topic, assignor="uniform"):
        member = GroupMember(
            name,
            "confluent-kafka",
            bootstrap(),
            group,
            topic,
            tmp_path,
            assignor,
            SESSION_TIMEOUT_MS,
            protocol="consumer",
        )
        started.append(member)
        return member

    def stop():
        for member in started:
            if member.running:
                member.kill()

    return start, stop


@pytest.fixture
def start_member(request, broker, tmp_path):
    start, stop = member_starter(request, lambda: broker.bootstrap, tmp_path)
    yield start
    stop()


def produced(bootstrap, topic, label, acked):
    """Produces MESSAGE_COUNT new messages (acks=all); adds their offsets to `acked`."""
    sent = messages(MESSAGE_COUNT, KEY_COUNT, label=label)
    producer = Confluent(bootstrap)
    try:
        acked_now = producer.produce(topic, sent, acks="all")
    finally:
        producer.close()
    assert len(acked_now) == len(sent)
    acked.update(acked_now)
    return sent


def described(bootstrap, group):
    """The group as the admin client describes it (ConsumerGroupDescribe for this protocol),
    in a process of its own (group_admin.py)."""
    return described_group(bootstrap, group, request_timeout_s=10)


def lags(broker, group, topic):
    """partition -> lag of `group` on `topic`, as `ferrite group describe --json` and as the
    metrics endpoint's ferrite_group_lag report it (asserted equal)."""
    completed = subprocess.run(
        [os.environ["FERRITE_BIN"], "group", "describe", group, "--bootstrap", broker.bootstrap, "--json"],
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr
    (report,) = json.loads(completed.stdout)
    described_lags = {row["partition"]: row["lag"] for row in report["partitions"]}
    series = re.compile(
        r'^ferrite_group_lag\{group="' + re.escape(group) + r'",topic="' + re.escape(topic)
        + r'",partition="(\d+)"\} (\d+)$'
    )
    with urllib.request.urlopen(broker.metrics_url, timeout=CLIENT_DEADLINE_S) as response:
        matches = (series.match(line) for line in response.read().decode().splitlines())
        metrics_lags = {int(match.group(1)): int(match.group(2)) for match in matches if match}
    return described_lags if described_lags == metrics_lags else None


def consumer_group_records(bootstrap, group):
    """The latest record of each consumer-group key (versions 3 to 8) of `group` in
    __consumer_offsets, decoded with Kafka's schemas (ConsumerGroup*Key/Value) independently
    of the broker: {(key version, member id or None): value or None}."""
    latest = {}
    for record in read_offsets_records(bootstrap):
        key = Reader(record.key)
        version = key.int16()
        if not 3 <= version <= 8:
            continue
        group_id = key.string(False)
        member_id = key.string(False) if version in (5, 7, 8) else None
        key.end()
        if group_id != group:
            continue
        latest[(version, member_id)] = None if record.value is None else decode_consumer_value(version, record.value)
    return latest


def decode_consumer_value(version, data):
    reader = Reader(data)
    assert reader.int16() == 0, "value version 0"

    def topic_partitions():
        partitions = {}
        for _ in range(reader.array_length(True)):
            topic_id = reader.take(16)
            partitions[topic_id] = [reader.int32() for _ in range(reader.array_length(True))]
            reader.tagged_fields()
        return partitions

    if version in (3, 6):  # ConsumerGroupMetadataValue, ...TargetAssignmentMetadataValue
        value = {"epoch": reader.int32()}
    elif version == 4:  # ConsumerGroupPartitionMetadataValue
        value = {}
        for _ in range(reader.array_length(True)):
            reader.take(16)
            name = reader.string(True)
            value[name] = reader.int32()
            for _ in range(reader.array_length(True)):
                reader.int32()
                for _ in range(reader.array_length(True)):
                    reader.string(True)
                reader.tagged_fields()
            reader.tagged_fields()
    elif version == 5:  # ConsumerGroupMemberMetadataValue
        value = {
            "instance_id": reader.nullable_string(True),
            "rack_id": reader.nullable_string(True),
            "client_id": reader.string(True),
            "client_host": reader.string(True),
            "topics": [reader.string(True) for _ in range(reader.array_length(True))],
            "regex": reader.nullable_string(True),
            "rebalance_timeout_ms": reader.int32(),
            "assignor": reader.nullable_string(True),
        }
    elif version == 7:  # ConsumerGroupTargetAssignmentMemberValue
        value = {"partitions": topic_partitions()}
    else:  # ConsumerGroupCurrentMemberAssignmentValue
        value = {
            "epoch": reader.int32(),
            "previous_epoch": reader.int32(),
            "state": reader.take(1)[0],
            "assigned": topic_partitions(),
            "revoking": topic_partitions(),
        }
    reader.tagged_fields()
    reader.end()
    return value


@pytest.mark.serve_args(*BROKER_ARGS)
@pytest.mark.parametrize("assignor", ["uniform", "range"])
def test_members_share_the_partitions_and_take_over_from_a_closed_then_a_killed_member(
    broker, start_member, assignor
):
    admin_client = Confluent(broker.bootstrap)
    topic = created_topic(admin_client, "kip848", PARTITIONS)
    admin_client.close()
    group = topic_name("kip848")
    members = [start_member(name, group, topic, assignor) for name in ("a", "b", "c")]
    a, b, c = members
    split = wait_for_split(members, PARTITIONS)
    assert sorted(len(partitions) for partitions in split.values()) == [1, 1, 2], f"unequal split: {split}"
    if assignor == "range":
        assert all(
            partitions == set(range(min(partitions), max(partitions) + 1)) for partitions in split.values()
        ), f"range hands out contiguous partitions: {split}"
    description = described(broker.bootstrap, group)
    assert description.type == confluent_kafka.ConsumerGroupType.CONSUMER
    assert description.state == confluent_kafka.ConsumerGroupState.STABLE
    assert description.partition_assignor == assignor
    assert len(description.member_ids) == 3
    # The group's records, read back with Kafka's schemas: its epoch, every member with its
    # subscription and the assignor, and their current assignments (stable, at the assignment
    # epoch) holding each partition once.
    records = consumer_group_records(broker.bootstrap, group)
    assert records[(4, None)] == {topic: PARTITIONS}, records
    member_ids = {member_id for version, member_id in records if version == 5 and records[(5, member_id)]}
    assert member_ids == set(description.member_ids)
    assert all(records[(5, member_id)]["topics"] == [topic] for member_id in member_ids)
    assert all(records[(5, member_id)]["assignor"] == assignor for member_id in member_ids)
    assignment_epoch = records[(6, None)]["epoch"]
    assert records[(3, None)]["epoch"] == assignment_epoch
    held = []
    for member_id in member_ids:
        current = records[(8, member_id)]
        assert (current["epoch"], current["state"], current["revoking"]) == (assignment_epoch, 0, {}), current
        held.extend(partition for partitions in current["assigned"].values() for partition in partitions)
    assert sorted(held) == list(range(PARTITIONS)), f"the members' records hold {sorted(held)}"

    acked = {}
    first = produced(broker.bootstrap, topic, "first", acked)
    wait_for_values(members, values(first))
    committed = commit_all(members)
    assert committed == end_offsets(acked, PARTITIONS), "each partition's committed offset should be its end"

    # A member that closes leaves the group (epoch -1): the others take over at once.
    c.close()
    wait_for_split([a, b], PARTITIONS, deadline_s=SESSION_TIMEOUT_S)
    after_close = produced(broker.bootstrap, topic, "after-close", acked)
    wait_for_values([a, b], values(after_close))
    committed = commit_all([a, b])
    assert committed == end_offsets(acked, PARTITIONS)

    # Consumed, not committed: whoever owns b's partitions next starts again at `committed`.
    before_kill = produced(broker.bootstrap, topic, "before-kill", acked)
    wait_for_values([a, b], values(before_kill))
    redelivered = frozenset(
        (message.partition, message.offset)
        for message in consumed_by([a, b])
        if message.offset >= committed.get(message.partition, 0)
    )
    b_partitions = b.assignment()
    a_consumed_before_kill = len(a.consumed())
    b.kill()
    wait_for_split([a], PARTITIONS, deadline_s=SESSION_TIMEOUT_S + TAKEOVER_MARGIN_S)
    after_kill = produced(broker.bootstrap, topic, "after-kill", acked)
    wait_for_values([a], values(before_kill) + values(after_kill))
    taken_over_at = {}
    for message in a.consumed()[a_consumed_before_kill:]:
        if message.partition in b_partitions:
            taken_over_at.setdefault(message.partition, message.offset)
    assert taken_over_at == {partition: committed[partition] for partition in b_partitions}, (
        f"a should have taken over b's partitions {sorted(b_partitions)} at their committed offsets"
    )
    check_group_log(consumed_by(members), first + after_close + before_kill + after_kill, redelivered=redelivered)
    a.close()


@pytest.mark.serve_args(*BROKER_ARGS)
def test_the_group_carries_on_through_a_broker_restart_and_resumes_from_its_offsets(broker, start_member):
    admin_client = Confluent(broker.bootstrap)
    topic = created_topic(admin_client, "kip848-resume", PARTITIONS)
    admin_client.close()
    group = topic_name("kip848-resume")
    members = [start_member(name, group, topic) for name in ("a", "b")]
    wait_for_split(members, PARTITIONS)
    acked = {}
    first = produced(broker.bootstrap, topic, "first", acked)
    wait_for_values(members, values(first))
    committed = commit_all(members)

    # The broker restarts under the members: its coordinator comes back from the group's
    # records with both members, their epochs and their assignment, and they carry on without
    # losing a partition (a member the coordinator did not know would be fenced and lose all).
    callbacks_before = {member.name: len(member.rebalance_events()) for member in members}
    exit_code = broker.stop()
    assert exit_code == 0, f"ferrite serve exited with {exit_code} after SIGTERM"
    broker.start()
    wait_until(lambda: len(described(broker.bootstrap, group).member_ids) == 2, "the group to come back with both members")
    second = produced(broker.bootstrap, topic, "second", acked)
    wait_for_values(members, values(second))
    committed = commit_all(members)
    assert committed == end_offsets(acked, PARTITIONS), "the members commit through the restarted coordinator"
    for member in members:
        callbacks = member.rebalance_events()[callbacks_before[member.name] :]
        assert not callbacks, f"{member.name}'s assignment changed through the restart: {callbacks}"
    # Consumed and never committed: the restarted group must read these again, and only these.
    third = produced(broker.bootstrap, topic, "third", acked)
    wait_for_values(members, values(third))
    for member in members:
        member.close()
    ends = end_offsets(acked, PARTITIONS)
    expected_lags = {partition: ends[partition] - committed[partition] for partition in range(PARTITIONS)}
    wait_until(
        lambda: lags(broker, group, topic) == expected_lags,
        f"`ferrite group describe` and /metrics to report lags {expected_lags}",
    )

    # One member: with no initial rebalance delay in this protocol, a second one joining later
    # would take partitions the first had started on, and read them again from the offsets.
    restarted = [start_member("a2", group, topic)]
    wait_for_split(restarted, PARTITIONS)
    wait_for_values(restarted, values(third))
    check_group_log(consumed_by(restarted), third, first_offsets=committed)
    for member in restarted:
        member.close()


@pytest.fixture
def consumer_cluster(request, tmp_path):
    yield from running_cluster(request, tmp_path, Loopback(), broker_args=BROKER_ARGS)


def test_a_group_carries_on_when_its_coordinator_broker_is_killed(request, consumer_cluster, tmp_path):
    cluster = consumer_cluster
    start, stop = member_starter(request, cluster.bootstrap, tmp_path)
    try:
        topic = created_cluster_topic(cluster, "kip848-cluster", PARTITIONS)
        group = topic_name("kip848-cluster")
        members = [start(name, group, topic) for name in ("a", "b")]
        wait_for_split(members, PARTITIONS)
        acked = {}
        first = produced(cluster.bootstrap(), topic, "first", acked)
        wait_for_values(members, values(first))
        committed_before = commit_all(members)
        assert committed_before == end_offsets(acked, PARTITIONS)

        callbacks_before = {member.name: len(member.rebalance_events()) for member in members}
        killed = coordinator(cluster, group)
        cluster.kill9(killed)
        assert coordinator(cluster, group) != killed
        assert committed_offsets(cluster, group, topic) == committed_before, (
            "the offsets committed before the coordinator died should survive it"
        )
        # The new coordinator has the group's members from the replicated records: both keep
        # consuming and committing through it.
        second = produced(cluster.bootstrap(), topic, "second", acked)
        wait_for_values(members, values(second))
        assert commit_all(members) == end_offsets(acked, PARTITIONS), "the members commit through the new coordinator"
        assert len(described(cluster.bootstrap(), group).member_ids) == 2
        for member in members:
            callbacks = member.rebalance_events()[callbacks_before[member.name] :]
            assert not callbacks, f"{member.name}'s assignment changed through the failover: {callbacks}"
        # Each message once: nothing was taken away and read again. (The logs are not checked
        # for gaps: a partition whose leader was killed has its new leader's entry in between.)
        consumed = consumed_by(members)
        assert sorted(message.value for message in consumed) == sorted(values(first + second))
        assert len({(message.partition, message.offset) for message in consumed}) == len(consumed)

        # A member killed: the other takes over its partitions once the new coordinator times
        # it out; then that one leaves, and a new member resumes from the offsets committed
        # through the new coordinator.
        a, b = members
        b.kill()
        wait_for_split([a], PARTITIONS, deadline_s=SESSION_TIMEOUT_S + TAKEOVER_MARGIN_S)
        third = produced(cluster.bootstrap(), topic, "third", acked)
        wait_for_values([a], values(third))
        committed = commit_all([a])
        assert committed == end_offsets(acked, PARTITIONS)
        a.close()
        fourth = produced(cluster.bootstrap(), topic, "fourth", acked)
        resumed = start("c", group, topic)
        wait_for_split([resumed], PARTITIONS)
        wait_for_values([resumed], values(fourth))
        check_group_log(consumed_by([resumed]), fourth, first_offsets=committed)
        resumed.close()
        cluster.restart(killed)
    finally:
        stop()


@pytest.mark.serve_args(*BROKER_ARGS)
def test_a_member_subscribed_by_regular_expression_gets_the_matching_topics(broker, start_member):
    admin_client = Confluent(broker.bootstrap)
    topic = created_topic(admin_client, "kip848-regex", PARTITIONS)
    admin_client.close()
    # librdkafka sends a subscription starting with ^ as the heartbeat's regular expression.
    member = start_member("a", topic_name("kip848-regex"), f"^{topic[:-2]}.*")
    wait_for_split([member], PARTITIONS)
    acked = {}
    sent = produced(broker.bootstrap, topic, "regex", acked)
    wait_for_values([member], values(sent))
    member.close()
