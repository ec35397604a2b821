"""Consumer groups with real clients: kafka-python, confluent-kafka and kcat members share a
topic's partitions, take over those of a member that closes or dies, resume from the offsets the
group committed (after the consumers restart, or the broker), keep a static member's partitions
for it while it restarts, and a second group replays the topic independently.

Members run as processes of their own (members.py), so that one can be killed as a crashed
consumer is. Sessions are as short as the broker allows, so that a dead member is noticed in
seconds; even so most of the time here is the broker waiting: its initial rebalance delay (3 s)
before a new group's first generation, and a session timeout (6 s) per killed member.
"""

import subprocess
import threading
import time

import pytest

from clients import Confluent, KafkaPython, created_topic
from members import (
    GroupMember,
    check_group_log,
    commit_all,
    consumed_by,
    describe,
    end_offsets,
    values,
    wait_for,
    wait_for_split,
    wait_for_values,
)
from support import CLIENT_DEADLINE_S, Consumed, messages, topic_name, wait_until

PARTITIONS = 6
MESSAGE_COUNT = 600
# Enough keys that every one of the 6 partitions gets messages (the key names are fixed, so
# where they land is too).
KEY_COUNT = 60
# The broker's group.min.session.timeout.ms: members are declared dead as soon as Kafka allows.
SESSION_TIMEOUT_MS = 6000
SESSION_TIMEOUT_S = SESSION_TIMEOUT_MS / 1000
# After a dead member's session expires the others learn of it at their next heartbeat (every
# second, group_member.HEARTBEAT_INTERVAL_MS), then rejoin and sync.
TAKEOVER_MARGIN_S = 4.0
# The incremental protocol (KIP-429); range and roundrobin are eager.
COOPERATIVE = "cooperative-sticky"

CLIENTS = {client.name: client for client in (KafkaPython, Confluent)}


@pytest.fixture
def start_member(request, broker, tmp_path):
    """start_member(name, client, group, topic, strategy="range", instance_id=None): a new
    member process; every one still running at the end is killed."""
    started = []
    # conftest attaches their stderr to a failure's report.
    request.node.ferrite_clients = started

    def start(name, client, group, topic, strategy="range", instance_id=None):
        member = GroupMember(
            name,
            client,
            broker.bootstrap,
            group,
            topic,
            tmp_path,
            strategy,
            SESSION_TIMEOUT_MS,
            instance_id=instance_id,
        )
        started.append(member)
        return member

    yield start
    for member in started:
        if member.running:
            member.kill()


def produced(client, topic, label, acked):
    """Produces MESSAGE_COUNT new messages (acks=all); adds their offsets to `acked`."""
    sent = messages(MESSAGE_COUNT, KEY_COUNT, label=label)
    acked_now = client.produce(topic, sent, acks="all")
    assert len(acked_now) == len(sent)
    acked.update(acked_now)
    return sent


def uncommitted(members, committed):
    """(partition, offset) of each message the members consumed at or after the committed offset
    of its partition: a member that restarts or takes over may consume these again."""
    return frozenset(
        (message.partition, message.offset)
        for message in consumed_by(members)
        if message.offset >= committed.get(message.partition, 0)
    )


def first_offsets(member, since, partitions):
    """partition -> the offset of the first message `member` consumed from it after its first
    `since` messages, for those of `partitions` it consumed anything from."""
    first = {}
    for message in member.consumed()[since:]:
        if message.partition in partitions:
            first.setdefault(message.partition, message.offset)
    return first


def check_protocol(strategy, survivors, callbacks_before):
    """Checks that a rebalance went as the protocol says: eager members give up every partition
    before they rejoin; cooperative ones keep theirs and only gain the departed member's."""
    for member in survivors:
        callbacks = member.rebalance_events()[callbacks_before[member.name] :]
        taken = [callback for callback in callbacks if callback[0] != "assigned"]
        if strategy == COOPERATIVE:
            assert not taken, f"{member.name} lost partitions in a cooperative rebalance: {callbacks}"
        else:
            assert taken, f"{member.name} kept its partitions through an eager rebalance: {callbacks}"


@pytest.mark.parametrize(
    ("client", "strategy"),
    [
        ("kafka-python", "range"),
        ("kafka-python", COOPERATIVE),
        ("confluent-kafka", "roundrobin"),
        ("confluent-kafka", COOPERATIVE),
    ],
    ids=lambda value: value,
)
def test_members_split_the_partitions_and_take_over_from_a_closed_then_a_killed_member(
    broker, start_member, client, strategy
):
    producer = CLIENTS[client](broker.bootstrap)
    topic = created_topic(producer, "takeover", PARTITIONS)
    group = topic_name("takeover")
    members = [start_member(name, client, group, topic, strategy) for name in ("a", "b", "c")]
    a, b, c = members
    split = wait_for_split(members, PARTITIONS)
    assert all(len(partitions) == 2 for partitions in split.values()), f"unequal split: {split}"

    acked = {}
    first = produced(producer, topic, "first", acked)
    wait_for_values(members, values(first))
    committed = commit_all(members)
    assert committed == end_offsets(acked, PARTITIONS), "each partition's committed offset should be its end"

    # A member that closes leaves the group: the others take over at once, not after its session.
    callbacks_before = {member.name: len(member.rebalance_events()) for member in members}
    c.close()
    wait_for_split([a, b], PARTITIONS, deadline_s=SESSION_TIMEOUT_S)
    check_protocol(strategy, [a, b], callbacks_before)
    after_close = produced(producer, topic, "after-close", acked)
    wait_for_values([a, b], values(after_close))
    committed = commit_all([a, b])
    assert committed == end_offsets(acked, PARTITIONS), "each partition's committed offset should be its end"

    # Consumed, not committed: whoever owns these partitions next starts again at `committed`.
    before_kill = produced(producer, topic, "before-kill", acked)
    wait_for_values([a, b], values(before_kill))
    redelivered = uncommitted([a, b], committed)
    b_partitions = b.assignment()
    a_consumed_before_kill = len(a.consumed())
    callbacks_before = {member.name: len(member.rebalance_events()) for member in members}
    b.kill()
    wait_for_split([a], PARTITIONS, deadline_s=SESSION_TIMEOUT_S + TAKEOVER_MARGIN_S)
    check_protocol(strategy, [a], callbacks_before)
    after_kill = produced(producer, topic, "after-kill", acked)
    wait_for_values([a], values(before_kill) + values(after_kill))

    taken_over_at = first_offsets(a, a_consumed_before_kill, b_partitions)
    assert taken_over_at == {partition: committed[partition] for partition in b_partitions}, (
        f"a should have taken over b's partitions {sorted(b_partitions)} at their committed offsets"
    )
    check_group_log(
        consumed_by(members), first + after_close + before_kill + after_kill, redelivered=redelivered
    )
    a.close()
    producer.close()


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("restarted", ["consumers", "broker"])
def test_the_group_resumes_from_its_committed_offsets_after_a_restart(
    broker, start_member, client, restarted
):
    producer = CLIENTS[client](broker.bootstrap)
    topic = created_topic(producer, "resume", PARTITIONS)
    group = topic_name("resume")
    members = [start_member(name, client, group, topic) for name in ("a", "b", "c")]
    wait_for_split(members, PARTITIONS)
    acked = {}
    first = produced(producer, topic, "first", acked)
    wait_for_values(members, values(first))
    committed = commit_all(members)
    assert committed == end_offsets(acked, PARTITIONS), "each partition's committed offset should be its end"
    # Consumed and never committed: the restarted group must read these again, and only these.
    second = produced(producer, topic, "second", acked)
    wait_for_values(members, values(second))
    for member in members:
        member.close()

    if restarted == "broker":
        producer.close()
        exit_code = broker.stop()
        assert exit_code == 0, f"ferrite serve exited with {exit_code} after SIGTERM"
        broker.start()
        producer = CLIENTS[client](broker.bootstrap)
    third = produced(producer, topic, "third", acked)
    restarted_members = [start_member(name, client, group, topic) for name in ("a2", "b2", "c2")]
    # Another group has committed nothing: it reads the topic from the beginning.
    replay = start_member("replay", client, topic_name("replay"), topic)
    wait_for_split(restarted_members, PARTITIONS)
    wait_for_values(restarted_members, values(second) + values(third))
    check_group_log(consumed_by(restarted_members), second + third, first_offsets=committed)

    wait_for_values([replay], values(first + second + third))
    check_group_log(replay.consumed(), first + second + third)
    for member in [*restarted_members, replay]:
        member.close()
    producer.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_static_member_restarted_within_its_session_gets_its_partitions_back_without_a_rebalance(
    broker, start_member, client
):
    producer = CLIENTS[client](broker.bootstrap)
    topic = created_topic(producer, "static", PARTITIONS)
    group = topic_name("static")
    # a joins last, so that one of the others leads the group: the restart is of a follower.
    b = start_member("b", client, group, topic, instance_id="b")
    c = start_member("c", client, group, topic, instance_id="c")
    wait_for_split([b, c], PARTITIONS)
    a = start_member("a", client, group, topic, instance_id="a")
    wait_for_split([a, b, c], PARTITIONS)
    acked = {}
    first = produced(producer, topic, "first", acked)
    wait_for_values([a, b, c], values(first))
    committed = commit_all([a, b, c])
    others_callbacks = {member.name: member.rebalance_events() for member in (b, c)}
    a_partitions = a.assignment()

    # A static member does not leave the group when it closes: its partitions wait for it.
    closed_at = time.monotonic()
    a.close()
    a_restarted = start_member("a-restarted", client, group, topic, instance_id="a")
    wait_for(
        [a_restarted, b, c],
        lambda: a_restarted.assignment() == a_partitions,
        f"the restarted static member to get its partitions {sorted(a_partitions)} back",
        deadline_s=SESSION_TIMEOUT_S - (time.monotonic() - closed_at),
    )
    second = produced(producer, topic, "second", acked)
    members = [a, a_restarted, b, c]
    wait_for_values([a_restarted, b, c], values(second))

    assert {member.name: member.rebalance_events() for member in (b, c)} == others_callbacks, (
        f"the other members saw a rebalance when the static member restarted\n{describe(members)}"
    )
    assert first_offsets(a_restarted, 0, a_partitions) == {p: committed[p] for p in a_partitions}, (
        "the restarted member should resume at its committed offsets"
    )
    check_group_log(consumed_by(members), first + second)
    for member in (a_restarted, b, c):
        member.close()
    producer.close()


# kcat -C output format: partition, offset, key and value, one message a line.
KCAT_FORMAT = r"%p\t%o\t%k\t%s\n"


def test_a_kcat_balanced_consumer_and_a_kafka_python_member_split_the_partitions(
    broker, start_member, tmp_path
):
    producer = KafkaPython(broker.bootstrap)
    topic = created_topic(producer, "kcat-group", PARTITIONS)
    group = topic_name("kcat-group")
    python_member = start_member("kafka-python", "kafka-python", group, topic)
    kcat_stderr_path = tmp_path / "kcat.stderr"
    with open(kcat_stderr_path, "wb") as kcat_stderr:
        kcat = subprocess.Popen(
            [
                "kcat",
                "-b",
                broker.bootstrap,
                "-G",
                group,
                "-X",
                f"session.timeout.ms={SESSION_TIMEOUT_MS}",
                "-X",
                "partition.assignment.strategy=range",
                "-X",
                "auto.offset.reset=earliest",
                "-f",
                KCAT_FORMAT,
                "-u",
                topic,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=kcat_stderr,
        )
    kcat_consumed = []

    def read_kcat():
        for line in kcat.stdout:
            partition, offset, key, value = line.rstrip(b"\n").split(b"\t")
            kcat_consumed.append(Consumed(int(partition), int(offset), key, value))

    reader = threading.Thread(target=read_kcat, daemon=True)
    reader.start()

    def kcat_state():
        return (
            f"kcat {'running' if kcat.poll() is None else f'exited {kcat.returncode}'}, stderr:\n"
            + (kcat_stderr_path.read_text(errors="replace")[-4000:])
        )

    try:
        # Two members, six partitions: kcat has the three the kafka-python member does not.
        try:
            wait_until(lambda: len(python_member.assignment()) == PARTITIONS // 2, "kcat to join the group")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{python_member.describe()}\n{kcat_state()}") from None
        sent = messages(MESSAGE_COUNT, KEY_COUNT, label="kcat")
        producer.produce(topic, sent, acks="all")
        wanted = set(values(sent))
        try:
            wait_until(
                lambda: wanted <= {m.value for m in [*kcat_consumed, *python_member.consumed()]},
                "kcat and kafka-python to consume every message between them",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{python_member.describe()}\n{kcat_state()}") from None
        kcat_partitions = {message.partition for message in kcat_consumed}
        assert kcat_partitions == set(range(PARTITIONS)) - python_member.assignment(), (
            f"kcat consumed from partitions {sorted(kcat_partitions)}, kafka-python owns "
            f"{sorted(python_member.assignment())}"
        )
        check_group_log([*kcat_consumed, *python_member.consumed()], sent)
    finally:
        kcat.terminate()
        try:
            kcat.wait(timeout=CLIENT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            kcat.kill()
            kcat.wait()
        reader.join(timeout=CLIENT_DEADLINE_S)
    python_member.close()
    producer.close()
