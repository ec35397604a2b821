"""A cluster whose brokers authenticate each other (`--cluster-secret-file`), as an operator
would notice it: it serves acks=all producers and consumers; its brokers agree on a cluster id
drawn at its first start, answer it in Metadata and keep it across restarts; a process started
with `--peers` to it and a wrong secret, or none, cannot join and changes nothing; and a raw
connection claiming broker 1's id on the inter-broker port is closed and counted in /metrics.

The forged hello is written by hand in the inter-broker protocol's layout (version 3: the frame
of `replication/src/transport/frame.rs`, the hello archived by rkyv with an empty cluster id,
which a broker of a new cluster sends): the one place these tests speak a Ferrite-internal wire
format, since no client speaks it.
"""
import re
import socket
import struct
import urllib.request

import confluent_kafka
import pytest

from cluster_support import (  # noqa: F401 (`cluster` and `unauthenticated_cluster` are fixtures)
    FERRITE_RELEASE_BIN,
    METADATA_TIMEOUT_S,
    cluster,
    created_topic,
    unauthenticated_cluster,
)
from conftest import Broker
from kafka.protocol.metadata.metadata import MetadataRequest
from raw_protocol import RawConnection
from support import CLIENT_DEADLINE_S, wait_until

MESSAGES = 300
# Kafka's form: a version-4 UUID in URL-safe base64 without padding.
CLUSTER_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
PROTOCOL_VERSION = 3
HELLO, CHALLENGE, PROOF, MESSAGE = 1, 3, 4, 2


def cluster_id_of(broker):
    """The cluster id `broker` answers in Metadata (None while it knows none, or is down)."""
    try:
        connection = RawConnection(broker.bootstrap, deadline_s=METADATA_TIMEOUT_S)
    except OSError:
        return None
    try:
        return connection.request(MetadataRequest(topics=[], allow_auto_topic_creation=False)).cluster_id
    finally:
        connection.close()


def agreed_cluster_id(cluster):
    """The id every running broker answers, once they all answer the same one."""

    def agreed():
        ids = {cluster_id_of(broker) for broker in cluster.brokers.values() if broker.running}
        return ids.pop() if len(ids) == 1 and None not in ids else None

    return wait_until(agreed, "every broker to answer one cluster id in Metadata")


def metric_total(broker, name):
    with urllib.request.urlopen(broker.metrics_url, timeout=METADATA_TIMEOUT_S) as response:
        text = response.read().decode()
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def produce(cluster, topic, first, count):
    """Writes values `first..first+count` with acks=all; every one must be acknowledged."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": True}
    )
    failures = []
    for sequence in range(first, first + count):
        producer.produce(
            topic,
            key=str(sequence % 7).encode(),
            value=f"value-{sequence}".encode(),
            on_delivery=lambda error, _: error is not None and failures.append(error),
        )
        producer.poll(0)
    assert producer.flush(CLIENT_DEADLINE_S) == 0, "messages left unacknowledged"
    assert not failures, f"refused: {failures[:3]}"


def consumed_values(cluster, topic, partition_count, count):
    """The values of the first `count` messages of `topic`, read from the start of each
    partition (no group)."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": cluster.bootstrap(), "group.id": topic, "enable.auto.commit": False}
    )
    try:
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(partition_count)]
        )
        values = []

        def all_read():
            for message in consumer.consume(num_messages=500, timeout=0.2):
                assert not message.error(), message.error()
                values.append(message.value().decode())
            return len(values) >= count

        wait_until(all_read, f"{count} messages of {topic}")
        return sorted(values)
    finally:
        consumer.close()


def expected_values(count):
    return sorted(f"value-{sequence}" for sequence in range(count))


def frame(kind, header, payload=b""):
    return struct.pack(">IBI", 5 + len(header) + len(payload), kind, len(header)) + header + payload


def forged_hello(node_id):
    """A hello of protocol 3 claiming broker `node_id`, shard 0, with no cluster id yet."""
    header = b"\xff" * 8 + struct.pack("<QI", node_id, 0) + b"\x09" * 32 + b"\x00" * 4
    return frame(HELLO, header, struct.pack(">I", PROTOCOL_VERSION))


def read_frame_kind(stream):
    """The kind of the next frame on `stream` (the rest of it read and dropped); None at EOF."""
    head = b""
    while len(head) < 5:
        chunk = stream.recv(5 - len(head))
        if not chunk:
            return None
        head += chunk
    length, kind = struct.unpack(">IB", head)
    remaining = length - 1
    while remaining:
        chunk = stream.recv(min(remaining, 4096))
        assert chunk, "closed in the middle of a frame"
        remaining -= len(chunk)
    return kind


def closed(stream):
    """Whether the broker closed `stream` (EOF or reset), reading past anything it wrote."""
    try:
        while stream.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def test_a_secured_cluster_serves_and_agrees_on_one_id_it_keeps(cluster):
    assert cluster.secret_file is not None, "the cluster fixture shares a secret"
    cluster_id = agreed_cluster_id(cluster)
    assert CLUSTER_ID.match(cluster_id), cluster_id
    assert cluster_id != "ferrite"
    for broker in cluster.brokers.values():
        assert (broker.data_dir / "cluster.id").read_text().strip() == cluster_id
    topic = created_topic(cluster, "auth-serves")
    produce(cluster, topic, 0, MESSAGES)
    assert consumed_values(cluster, topic, 3, MESSAGES) == expected_values(MESSAGES)
    for node in cluster.node_ids:
        assert metric_total(cluster.brokers[node], "ferrite_transport_authentication_failures_total") == 0

    # A restart keeps the id (read back from the data directory), and the cluster serves.
    cluster.stop(2)
    cluster.restart(2)
    cluster.wait_all_listed()
    assert agreed_cluster_id(cluster) == cluster_id
    produce(cluster, topic, MESSAGES, MESSAGES)
    assert consumed_values(cluster, topic, 3, 2 * MESSAGES) == expected_values(2 * MESSAGES)


@pytest.mark.parametrize("secret", ["wrong", "none"])
def test_a_broker_without_the_secret_cannot_join(cluster, tmp_path, secret):
    cluster_id = agreed_cluster_id(cluster)
    topic = created_topic(cluster, f"auth-impostor-{secret}")
    produce(cluster, topic, 0, MESSAGES)

    # Broker 3 stops; an impostor takes its node id and inter-broker address.
    cluster.stop(3)
    peers = ",".join(f"{node}@{host}:{port}" for node, (host, port) in cluster.rpc_addresses.items())
    host, port = cluster.rpc_addresses[3]
    args = ["--node-id", "3", "--rpc-listen", f"{host}:{port}", "--peers", peers]
    if secret == "wrong":
        wrong_file = tmp_path / "wrong.secret"
        wrong_file.write_text("not the cluster's secret, but long enough to be one\n")
        args += ["--cluster-secret-file", str(wrong_file)]
    impostor_dir = tmp_path / f"impostor-{secret}"
    impostor_dir.mkdir()
    impostor = Broker(FERRITE_RELEASE_BIN, impostor_dir / "data", impostor_dir, cores=1, extra_args=args)
    failures_before = sum(
        metric_total(cluster.brokers[node], "ferrite_transport_authentication_failures_total") for node in (1, 2)
    )
    impostor.start()
    try:
        wait_until(
            lambda: sum(
                metric_total(cluster.brokers[node], "ferrite_transport_authentication_failures_total")
                for node in (1, 2)
            )
            >= failures_before + 2,
            "the brokers to refuse the impostor as unauthenticated",
        )
        # Meanwhile the two brokers serve (a majority of every partition) and the impostor has
        # learned nothing: no cluster id, no topic.
        produce(cluster, topic, MESSAGES, MESSAGES)
        assert cluster_id_of(impostor) is None
        assert not (impostor.data_dir / "cluster.id").exists()
        assert not any(topic in path.name for path in (impostor.data_dir).iterdir())
        if secret == "none":
            assert "no --cluster-secret-file" in impostor.stderr_tail()
    finally:
        impostor.stop()

    # Broker 3 back: the cluster's data is whole, its id unchanged.
    cluster.restart(3)
    cluster.wait_all_listed()
    assert agreed_cluster_id(cluster) == cluster_id
    assert consumed_values(cluster, topic, 3, 2 * MESSAGES) == expected_values(2 * MESSAGES)


def test_a_forged_hello_claiming_broker_1_is_closed(cluster):
    topic = created_topic(cluster, "auth-forged")
    produce(cluster, topic, 0, MESSAGES)
    target = cluster.brokers[2]
    failures_before = metric_total(target, "ferrite_transport_authentication_failures_total")
    refused_before = metric_total(target, "ferrite_transport_connections_refused_total")

    # Hello as broker 1, then an empty proof (what a broker without the secret sends): the
    # broker answers the hello with its challenge and closes the connection at the proof.
    with socket.create_connection(cluster.rpc_addresses[2], timeout=CLIENT_DEADLINE_S) as stream:
        stream.sendall(forged_hello(1))
        assert read_frame_kind(stream) == CHALLENGE
        stream.sendall(frame(PROOF, b"\x00" * 8))
        assert closed(stream)
    # Hello as broker 1 and straight on to a message (no proof): closed too.
    with socket.create_connection(cluster.rpc_addresses[2], timeout=CLIENT_DEADLINE_S) as stream:
        stream.sendall(forged_hello(1) + frame(MESSAGE, b"\x00" * 64))
        assert read_frame_kind(stream) == CHALLENGE
        assert closed(stream)
    wait_until(
        lambda: metric_total(target, "ferrite_transport_authentication_failures_total") >= failures_before + 1
        and metric_total(target, "ferrite_transport_connections_refused_total") >= refused_before + 2,
        "broker 2 to count both refusals",
    )
    # Nothing changed: the cluster serves and holds what it held.
    assert sorted(cluster.metadata(node=2).brokers) == [1, 2, 3]
    produce(cluster, topic, MESSAGES, MESSAGES)
    assert consumed_values(cluster, topic, 3, 2 * MESSAGES) == expected_values(2 * MESSAGES)


def test_a_cluster_without_a_secret_works_and_warns(unauthenticated_cluster):
    cluster = unauthenticated_cluster
    cluster_id = agreed_cluster_id(cluster)
    assert CLUSTER_ID.match(cluster_id), cluster_id
    for broker in cluster.brokers.values():
        assert "no --cluster-secret-file" in broker.stderr_tail()
    topic = created_topic(cluster, "auth-none")
    produce(cluster, topic, 0, MESSAGES)
    assert consumed_values(cluster, topic, 3, MESSAGES) == expected_values(MESSAGES)
