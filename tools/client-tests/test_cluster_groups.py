"""Consumer groups in a 3-broker cluster of real `ferrite serve` processes: a group of two
members (kafka-python or confluent-kafka, each its own process) consumes a topic of
replication factor 3 and commits; the broker coordinating the group is killed with SIGKILL;
the members carry on with the coordinator another broker became, which still has the offsets
committed before the kill, and commits through it count: a group restarted afterwards reads
exactly what was never committed, nothing twice and nothing lost. `ferrite group describe`
answers through every broker, whichever coordinates the group.
"""

import json
import os
import subprocess

import confluent_kafka
import pytest

import group_admin
from clients import Confluent
from group_admin import AdminCallFailed, described_group
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
from cluster_support import NODE_IDS, cluster, created_topic  # noqa: F401 (`cluster` is a fixture)

PARTITIONS = 4
# `ferrite serve`'s default --offsets-partitions (the cluster fixture leaves it).
OFFSETS_PARTITIONS = 16
OFFSETS_TOPIC = "__consumer_offsets"
MESSAGE_COUNT = 200
# Enough keys that every partition gets messages (the key names are fixed, so where they land is
# too).
KEY_COUNT = 40
# The broker's group.min.session.timeout.ms: a member cut off from every coordinator for longer
# than the takeover would be declared dead, which this test must not need.
SESSION_TIMEOUT_MS = 6000


@pytest.fixture
def start_member(request, cluster, tmp_path):  # noqa: F811 (the fixture imported above)
    """start_member(name, client, group, topic): a new member process bootstrapped from every
    broker; every one still running at the end is killed."""
    started = []
    # conftest attaches their stderr to a failure's report.
    request.node.ferrite_clients = started

    def start(name, client, group, topic):
        member = GroupMember(
            name, client, cluster.bootstrap(), group, topic, tmp_path, "range", SESSION_TIMEOUT_MS
        )
        started.append(member)
        return member

    yield start
    for member in started:
        if member.running:
            member.kill()


def produced(cluster, topic, label, acked):  # noqa: F811
    """Produces MESSAGE_COUNT new messages with acks=all through the brokers that answer; adds
    their offsets to `acked`."""
    sent = messages(MESSAGE_COUNT, KEY_COUNT, label=label)
    producer = Confluent(cluster.bootstrap())
    try:
        acked_now = producer.produce(topic, sent, acks="all")
    finally:
        producer.close()
    assert len(acked_now) == len(sent)
    acked.update(acked_now)
    return sent


def coordinator(cluster, group):  # noqa: F811
    """The node id of the broker coordinating `group`, as the admin client's DescribeGroups
    reports it (found with FindCoordinator), once it is one that answers. Each call in a process
    of its own (group_admin.py: librdkafka can abort one made while the coordinator moves)."""

    def current():
        try:
            node = described_group(cluster.bootstrap(), group, request_timeout_s=5).coordinator_id
        except AdminCallFailed:
            return None
        return node if node in cluster.answering() else None

    return wait_until(current, f"a live coordinator of group {group}")


def committed_offsets(cluster, group, topic):  # noqa: F811
    """partition -> offset the group has committed, through the admin client's OffsetFetch
    (retried while the coordinator moves; each call in a process of its own, as above)."""

    def current():
        try:
            return group_admin.committed_offsets(cluster.bootstrap(), group, topic, PARTITIONS, request_timeout_s=5)
        except AdminCallFailed:
            return None

    return wait_until(current, f"the committed offsets of group {group}")


def described_through(cluster, node, group):  # noqa: F811
    """`ferrite group describe --json` bootstrapped from broker `node` alone."""
    completed = subprocess.run(
        [
            os.environ["FERRITE_BIN"],
            *("group", "describe", group),
            *("--bootstrap", cluster.bootstrap([node]), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S,
        check=False,
    )
    assert completed.returncode == 0, (
        f"ferrite group describe through broker {node} exited with {completed.returncode}:\n"
        f"{completed.stderr}"
    )
    (report,) = json.loads(completed.stdout)
    return report


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_a_group_carries_on_with_its_offsets_when_its_coordinator_is_killed(
    cluster, start_member, client  # noqa: F811
):
    topic = created_topic(cluster, "cluster-groups", PARTITIONS)
    group = topic_name("cluster-group")
    members = [start_member(name, client, group, topic) for name in ("a", "b")]
    wait_for_split(members, PARTITIONS)
    acked = {}
    first = produced(cluster, topic, "first", acked)
    wait_for_values(members, values(first))
    committed_before = commit_all(members)
    assert committed_before == end_offsets(acked, PARTITIONS), "each partition's committed offset should be its end"
    for node in cluster.answering():
        report = described_through(cluster, node, group)
        assert report["state"] == "Stable" and len(report["members"]) == 2, report
        described = {each["partition"]: each["committed_offset"] for each in report["partitions"]}
        assert described == committed_before, f"broker {node} describes the group as {report}"

    killed = coordinator(cluster, group)
    cluster.kill9(killed)

    # Another broker takes the group over from its copy of the offsets topic.
    assert coordinator(cluster, group) != killed
    assert committed_offsets(cluster, group, topic) == committed_before, (
        "the offsets committed before the coordinator died should survive it"
    )
    second = produced(cluster, topic, "second", acked)
    wait_for_values(members, values(second))
    committed_after = commit_all(members)
    assert committed_after == end_offsets(acked, PARTITIONS), "the members commit through the new coordinator"
    # Consumed and never committed: the restarted group must read these again, and only these.
    third = produced(cluster, topic, "third", acked)
    wait_for_values(members, values(third))
    for member in members:
        member.close()

    cluster.restart(killed)
    restarted = [start_member(name, client, group, topic) for name in ("a2", "b2")]
    wait_for_split(restarted, PARTITIONS)
    wait_for_values(restarted, values(third))
    check_group_log(consumed_by(restarted), third, first_offsets=committed_after)
    for node in NODE_IDS:
        wait_until(
            lambda node=node: described_through(cluster, node, group)["state"] == "Stable",
            f"broker {node} to describe the restarted group as Stable",
        )
    for member in restarted:
        member.close()


def test_the_offsets_topic_asked_for_by_name_first_is_made_for_groups(cluster):  # noqa: F811
    """Sarama-based tools (Burrow) ask a fresh cluster's Metadata for `__consumer_offsets` by
    name, auto-creation allowed, before any group made it: it must be created as groups need it
    (the broker's offsets partition count, not --default-partitions), and groups coordinated."""
    producer = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap()})

    def partition_count():
        topic = producer.list_topics(OFFSETS_TOPIC, timeout=5).topics[OFFSETS_TOPIC]
        return len(topic.partitions) if topic.error is None and topic.partitions else None

    assert wait_until(partition_count, f"{OFFSETS_TOPIC} created") == OFFSETS_PARTITIONS
    assert coordinator(cluster, "a-group-after-the-offsets-topic") in NODE_IDS
