"""`__consumer_offsets` as tools that read it themselves see it (Burrow, lag exporters): a plain
kafka-python consumer reads the topic from the start, internal topics included, and every record
is decoded by the reader below, written from Kafka's message specs
(group-coordinator/src/main/resources/common/message/: OffsetCommitKey, OffsetCommitValue,
GroupMetadataKey, GroupMetadataValue), not from the broker's code. A group of two kafka-python
members commits known offsets (with metadata) before and after a rebalance; the records must name
exactly that group, topic, partition, offset and metadata, and the group's members with their
client ids, timeouts, subscriptions and assignments. Deleting one partition's offset
(OffsetDelete) and then the group (DeleteGroups) must show as Kafka's tombstones: the key, no
value.

A data directory the previous binary (fcb44f7, its own record format) wrote is converted at
start-up: the broker says so in its log, the same offsets and group come back, and the topic then
decodes with Kafka's schemas. One such directory is in the repository (PREVIOUS_DATA); with
FERRITE_PREVIOUS_BIN set to a `ferrite` built at fcb44f7, two more tests make their own, with a
broker alone and with a 3-broker cluster.
"""

import json
import os
import struct
import subprocess
import tarfile
import threading
from pathlib import Path

import kafka.errors
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, OffsetAndMetadata, TopicPartition

from clients import KafkaPython, created_topic
from cluster_support import Cluster, Loopback
from cluster_support import created_topic as cluster_created_topic
from conftest import Broker
from support import CLIENT_DEADLINE_S, messages, topic_name, wait_until

OFFSETS_TOPIC = "__consumer_offsets"
# A data directory `ferrite serve` wrote at fcb44f7, the last commit before Kafka's records, shut
# down cleanly: topic `orders` (2 partitions, 20 messages), group `previous-group` (one
# kafka-python member, client id previous-a) committed 5 "old-0" and 6 "old-1", then 7 "old-0b"
# on partition 0, and left. Its journal (pre-zeroed files the broker makes afresh) is left out.
PREVIOUS_DATA = Path(__file__).with_name("data") / "ferrite-fcb44f7-groups.tar.gz"
PARTITIONS = 2
SESSION_TIMEOUT_MS = 10_000
MAX_POLL_INTERVAL_MS = 20_000


class Reader:
    """Kafka's primitive types over a record's bytes; every read checks what is left, and a
    record must be read to its last byte (`end`)."""

    def __init__(self, data):
        self.data = bytes(data)
        self.at = 0

    def take(self, count):
        assert count >= 0 and self.at + count <= len(self.data), "truncated record"
        chunk = self.data[self.at : self.at + count]
        self.at += count
        return chunk

    def int16(self):
        return struct.unpack(">h", self.take(2))[0]

    def int32(self):
        return struct.unpack(">i", self.take(4))[0]

    def int64(self):
        return struct.unpack(">q", self.take(8))[0]

    def uvarint(self):
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def nullable_string(self, flexible):
        length = self.uvarint() - 1 if flexible else self.int16()
        return None if length == -1 else self.take(length).decode("utf-8")

    def string(self, flexible):
        value = self.nullable_string(flexible)
        assert value is not None, "null where a string is required"
        return value

    def bytes(self, flexible):
        length = self.uvarint() - 1 if flexible else self.int32()
        assert length >= 0, "null where bytes are required"
        return self.take(length)

    def array_length(self, flexible):
        length = self.uvarint() - 1 if flexible else self.int32()
        assert length >= 0, "null where an array is required"
        return length

    def tagged_fields(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())

    def end(self):
        assert self.at == len(self.data), f"{len(self.data) - self.at} bytes after the record"


def decode_key(data):
    """('offset', group, topic, partition) or ('group', group)."""
    reader = Reader(data)
    version = reader.int16()
    if version in (0, 1):
        key = ("offset", reader.string(False), reader.string(False), reader.int32())
    elif version == 2:
        key = ("group", reader.string(False))
    else:
        raise AssertionError(f"a key of version {version}: not a classic group's record")
    reader.end()
    return key


def decode_offset_value(data):
    reader = Reader(data)
    version = reader.int16()
    assert 0 <= version <= 4, f"OffsetCommitValue version {version}"
    flexible = version >= 4
    value = {"version": version, "offset": reader.int64()}
    value["leader_epoch"] = reader.int32() if version >= 3 else -1
    value["metadata"] = reader.string(flexible)
    value["commit_timestamp"] = reader.int64()
    if version == 1:
        value["expire_timestamp"] = reader.int64()
    if flexible:
        reader.tagged_fields()
    reader.end()
    return value


def decode_group_value(data):
    reader = Reader(data)
    version = reader.int16()
    assert 0 <= version <= 4, f"GroupMetadataValue version {version}"
    flexible = version >= 4
    value = {
        "version": version,
        "protocol_type": reader.string(flexible),
        "generation": reader.int32(),
        "protocol": reader.nullable_string(flexible),
        "leader": reader.nullable_string(flexible),
        "current_state_timestamp": reader.int64() if version >= 2 else -1,
        "members": [],
    }
    for _ in range(reader.array_length(flexible)):
        member = {"member_id": reader.string(flexible)}
        member["group_instance_id"] = reader.nullable_string(flexible) if version >= 3 else None
        member["client_id"] = reader.string(flexible)
        member["client_host"] = reader.string(flexible)
        member["rebalance_timeout"] = reader.int32() if version >= 1 else None
        member["session_timeout"] = reader.int32()
        member["subscription"] = reader.bytes(flexible)
        member["assignment"] = reader.bytes(flexible)
        if flexible:
            reader.tagged_fields()
        value["members"].append(member)
    if flexible:
        reader.tagged_fields()
    reader.end()
    return value


def subscribed_topics(subscription):
    """ConsumerProtocolSubscription (any version): its topics."""
    reader = Reader(subscription)
    reader.int16()
    return sorted(reader.string(False) for _ in range(reader.int32()))


def assigned_partitions(assignment):
    """ConsumerProtocolAssignment (any version): [(topic, partition)]."""
    reader = Reader(assignment)
    reader.int16()
    assigned = []
    for _ in range(reader.int32()):
        topic = reader.string(False)
        assigned.extend((topic, reader.int32()) for _ in range(reader.int32()))
    return sorted(assigned)


def read_offsets_topic(bootstrap):
    """Every record of __consumer_offsets, oldest first per partition, decoded: a list of
    (key, value or None)."""
    decoded = []
    for record in read_offsets_records(bootstrap):
        key = decode_key(record.key)
        if record.value is None:
            value = None
        elif key[0] == "offset":
            value = decode_offset_value(record.value)
        else:
            value = decode_group_value(record.value)
        decoded.append((key, value))
    return decoded


def read_offsets_records(bootstrap):
    """Every record of __consumer_offsets as kafka-python reads it, oldest first per partition."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        exclude_internal_topics=False,
        auto_offset_reset="earliest",
    )
    try:
        partitions = [TopicPartition(OFFSETS_TOPIC, p) for p in consumer.partitions_for_topic(OFFSETS_TOPIC)]
        assert partitions, "the broker lists no __consumer_offsets partitions"
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        records = []

        def caught_up():
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            return all(consumer.position(partition) >= ends[partition] for partition in partitions)

        wait_until(caught_up, "reading __consumer_offsets to its end")
    finally:
        consumer.close()
    return sorted(records, key=lambda record: (record.partition, record.offset))


def latest(decoded):
    """The latest value of each key (None: its tombstone)."""
    state = {}
    for key, value in decoded:
        state[key] = value
    return state


class PolledMembers:
    """kafka-python group members polled on threads of their own (poll runs the group protocol)
    until `stopped`: each consumer is then used by one thread at a time."""

    def __init__(self):
        self.consumers = []
        self.threads = []
        self.stop = threading.Event()

    def start(self, consumer):
        self.consumers.append(consumer)
        thread = threading.Thread(target=self._poll, args=(consumer,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _poll(self, consumer):
        while not self.stop.is_set():
            consumer.poll(timeout_ms=100)

    def pause(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_DEADLINE_S)
        self.threads = []

    def resume(self):
        self.stop = threading.Event()
        for consumer in self.consumers:
            thread = threading.Thread(target=self._poll, args=(consumer,), daemon=True)
            self.threads.append(thread)
            thread.start()


def member(bootstrap, group, topic, client_id):
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
        heartbeat_interval_ms=1000,
    )
    consumer.subscribe([topic])
    return consumer


def test_records_decode_with_kafkas_schemas_and_name_the_groups_offsets_and_members(broker):
    producer = KafkaPython(broker.bootstrap)
    topic = created_topic(producer, "decoded", PARTITIONS)
    producer.produce(topic, messages(20, key_count=10), acks="all")
    producer.close()
    group = topic_name("decoded-group")
    members = PolledMembers()
    first = member(broker.bootstrap, group, topic, "decoder-a")
    members.start(first)
    wait_until(lambda: len(first.assignment()) == PARTITIONS, "the first member owning every partition")
    members.pause()
    first.commit({TopicPartition(topic, 0): OffsetAndMetadata(3, "a-0", -1), TopicPartition(topic, 1): OffsetAndMetadata(4, "a-1", -1)})

    # A second member joins: a rebalance; each then owns one partition.
    members.resume()
    second = member(broker.bootstrap, group, topic, "decoder-b")
    members.start(second)
    wait_until(
        lambda: len(first.assignment()) == 1 and len(second.assignment()) == 1,
        "the two members splitting the partitions",
    )
    members.pause()
    (second_partition,) = second.assignment()
    second.commit({second_partition: OffsetAndMetadata(6, "b", -1)})
    expected_offsets = {0: (3, "a-0"), 1: (4, "a-1")}
    expected_offsets[second_partition.partition] = (6, "b")

    state = latest(read_offsets_topic(broker.bootstrap))
    for partition, (offset, metadata) in expected_offsets.items():
        value = state[("offset", group, topic, partition)]
        assert (value["offset"], value["metadata"]) == (offset, metadata), value
        assert value["version"] == 3 and value["leader_epoch"] == -1 and value["commit_timestamp"] > 0
    metadata = state[("group", group)]
    assert metadata["version"] == 3
    assert (metadata["protocol_type"], metadata["protocol"]) == ("consumer", "range")
    assert metadata["generation"] >= 2
    assert metadata["current_state_timestamp"] > 0
    by_client = {member["client_id"]: member for member in metadata["members"]}
    assert sorted(by_client) == ["decoder-a", "decoder-b"]
    assert metadata["leader"] in {member["member_id"] for member in metadata["members"]}
    assigned = {}
    for client_id, described in by_client.items():
        assert described["member_id"].startswith(client_id + "-")
        assert described["group_instance_id"] is None
        assert described["client_host"].endswith("127.0.0.1")
        assert described["session_timeout"] == SESSION_TIMEOUT_MS
        assert described["rebalance_timeout"] == MAX_POLL_INTERVAL_MS
        assert subscribed_topics(described["subscription"]) == [topic]
        assigned[client_id] = assigned_partitions(described["assignment"])
    assert assigned["decoder-b"] == [(topic, second_partition.partition)]
    assert sorted(assigned["decoder-a"] + assigned["decoder-b"]) == [(topic, 0), (topic, 1)]

    # Both leave; then one partition's offset is deleted, then the group.
    first.close()
    second.close()
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        errors = admin.delete_group_offsets(group, [TopicPartition(topic, 0)])
        assert all(error.errno == 0 for error in errors.values()), errors
        state = latest(read_offsets_topic(broker.bootstrap))
        assert state[("offset", group, topic, 0)] is None, "OffsetDelete leaves a tombstone"
        assert state[("offset", group, topic, 1)]["offset"] == expected_offsets[1][0]
        assert state[("group", group)]["members"] == [], "the group is empty once both left"
        assert admin.delete_groups([group]) == {group: "OK"}
    finally:
        admin.close()
    state = latest(read_offsets_topic(broker.bootstrap))
    group_keys = [key for key in state if key[1] == group]
    assert sorted(group_keys) == sorted([("group", group)] + [("offset", group, topic, p) for p in range(PARTITIONS)])
    assert all(state[key] is None for key in group_keys), "DeleteGroups leaves tombstones for every key"


@pytest.mark.skipif(not os.environ.get("FERRITE_PREVIOUS_BIN"), reason="FERRITE_PREVIOUS_BIN is not set")
def test_a_data_directory_of_the_previous_binary_is_converted_at_start_up(tmp_path):
    for run in ("previous", "current"):
        (tmp_path / run).mkdir()
    previous = Broker(os.environ["FERRITE_PREVIOUS_BIN"], tmp_path / "data", tmp_path / "previous")
    previous.start()
    group = topic_name("converted-group")
    try:
        producer = KafkaPython(previous.bootstrap)
        topic = created_topic(producer, "converted", PARTITIONS)
        producer.produce(topic, messages(20, key_count=10), acks="all")
        producer.close()
        members = PolledMembers()
        consumer = member(previous.bootstrap, group, topic, "converted-a")
        members.start(consumer)
        wait_until(lambda: len(consumer.assignment()) == PARTITIONS, "the member owning every partition")
        members.pause()
        consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(5 + p, f"old-{p}", -1) for p in range(PARTITIONS)})
        consumer.close(autocommit=False)
    finally:
        assert previous.stop() == 0

    current = Broker(os.environ["FERRITE_BIN"], tmp_path / "data", tmp_path / "current")
    current.start()
    try:
        check_converted(current, group, topic, {p: (5 + p, f"old-{p}") for p in range(PARTITIONS)})
    finally:
        assert current.stop() == 0


def test_the_data_directory_of_the_previous_binary_in_the_repository_is_converted(tmp_path):
    """The same without building the previous binary: a data directory it wrote (the archive
    beside this file; see PREVIOUS_DATA)."""
    with tarfile.open(PREVIOUS_DATA) as archive:
        archive.extractall(tmp_path, filter="data")
    current = Broker(os.environ["FERRITE_BIN"], tmp_path / "data", tmp_path)
    current.start()
    try:
        check_converted(current, "previous-group", "orders", {0: (7, "old-0b"), 1: (6, "old-1")})
    finally:
        assert current.stop() == 0


def check_converted(broker, group, topic, expected):
    """The broker said it converted; the topic decodes with Kafka's schemas and holds `expected`
    (partition -> (offset, metadata)) and the group, empty since its member left; a consumer of
    the group and `ferrite group describe` see the same offsets."""
    said_converted(broker)
    state = latest(read_offsets_topic(broker.bootstrap))
    for partition, (offset, metadata) in expected.items():
        value = state[("offset", group, topic, partition)]
        assert (value["offset"], value["metadata"]) == (offset, metadata), value
    assert state[("group", group)]["members"] == [] and state[("group", group)]["generation"] >= 2
    offsets = {partition: offset for partition, (offset, _) in expected.items()}
    assert committed_offsets(broker.bootstrap, group, topic) == offsets
    described = subprocess.run(
        [os.environ["FERRITE_BIN"], "group", "describe", group, "--bootstrap", broker.bootstrap, "--json"],
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S,
        stdin=subprocess.DEVNULL,
    )
    assert described.returncode == 0, described.stderr
    (report,) = json.loads(described.stdout)
    rows = {row["partition"]: row for row in report["partitions"]}
    assert {partition: rows[partition]["committed_offset"] for partition in offsets} == offsets
    for partition, offset in offsets.items():
        assert rows[partition]["lag"] == rows[partition]["log_end_offset"] - offset


def said_converted(broker):
    """Waits until the broker's log says it converted records of the previous format (its
    partitions open, and convert, in the background of its start-up)."""
    wait_until(
        lambda: "Ferrite's old __consumer_offsets format to Kafka's" in broker.stderr_paths[-1].read_text(),
        "the broker's log to say it converted __consumer_offsets",
    )


class PreviousBinary:
    """Loopback, with every broker on the previous binary until `upgrade`."""

    def __init__(self):
        self.network = Loopback()
        self.current = os.environ["FERRITE_PREVIOUS_BIN"]

    def addresses(self, node_ids):
        return self.network.addresses(node_ids)

    def binary(self, node):
        return self.current


def committed_offsets(bootstrap, group, topic):
    """The group's committed offsets as a consumer of it reads them; asked again while the
    client cannot reach the coordinator it found (a broker just stopped) or reads none (the
    new coordinator still loading)."""

    def ask():
        check = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        try:
            committed = {p: check.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
        except kafka.errors.KafkaConnectionError:
            return None
        finally:
            check.close(autocommit=False)
        return committed if None not in committed.values() else None

    return wait_until(ask, f"the committed offsets of {group}")


@pytest.mark.skipif(not os.environ.get("FERRITE_PREVIOUS_BIN"), reason="FERRITE_PREVIOUS_BIN is not set")
def test_a_cluster_of_the_previous_binary_is_converted_replica_by_replica(request, tmp_path):
    """Every broker converts its own replicas when it starts on the new binary; the replicas
    stay one log: whichever broker coordinates the group afterwards (each is stopped in turn)
    loads the same offsets from its own copy."""
    network = PreviousBinary()
    cluster = Cluster(tmp_path, network)
    try:
        try:
            cluster.start()
        finally:
            request.node.ferrite_brokers = cluster.brokers
        cluster.wait_all_listed()
        topic = cluster_created_topic(cluster, "converted", PARTITIONS)
        group = topic_name("converted-cluster-group")
        members = PolledMembers()
        consumer = member(cluster.bootstrap(), group, topic, "converted-a")
        members.start(consumer)
        wait_until(lambda: len(consumer.assignment()) == PARTITIONS, "the member owning every partition")
        members.pause()
        expected = {p: 11 + p for p in range(PARTITIONS)}
        consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(offset, "", -1) for p, offset in expected.items()})
        consumer.close(autocommit=False)
        cluster.shut_down()

        upgraded = os.environ.get("FERRITE_RELEASE_BIN") or os.environ["FERRITE_BIN"]
        for broker in cluster.brokers.values():
            broker.binary = upgraded
            broker.start()
        cluster.wait_all_listed()
        for broker in cluster.brokers.values():
            said_converted(broker)
        assert committed_offsets(cluster.bootstrap(), group, topic) == expected
        state = latest(read_offsets_topic(cluster.bootstrap()))
        assert {p: state[("offset", group, topic, p)]["offset"] for p in range(PARTITIONS)} == expected
        for node in cluster.node_ids:
            cluster.stop(node)
            assert committed_offsets(cluster.bootstrap(), group, topic) == expected, f"broker {node} stopped"
            cluster.restart(node)
            cluster.wait_all_listed()
    except BaseException:
        cluster.shut_down(check_exit=False)
        raise
    cluster.shut_down()
