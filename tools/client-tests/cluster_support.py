"""What the cluster tests share: a cluster of real `ferrite serve` processes (the release build,
as users run it) on loopback addresses or in network namespaces where a broker can be cut off,
with the faults a test inflicts on a broker (SIGKILL, SIGSTOP, SIGTERM, a restart at once on
the same data directory and ports), the pytest fixtures that start one, and topic creation that
waits for every partition's leader.
"""
import logging
import os
import re
import signal
import socket
import subprocess
import urllib.request
from typing import NamedTuple

import confluent_kafka
import confluent_kafka.admin
import kafka
import kafka.errors
import pytest

from conftest import FERRITE_RELEASE_BIN, STOP_DEADLINE_S, Broker
from raw_protocol import RawConnection
from support import CLIENT_DEADLINE_S, topic_name, wait_until

NODE_IDS = (1, 2, 3)
PARTITIONS = 3
REPLICATION_FACTOR = 3
# How often the cluster is started afresh on new ports when one of them was taken between
# choosing it and the broker binding it (another test run on the same machine).
BIND_ATTEMPTS = 3
# How long a broker stays frozen: well past the election timeout (~0.5-1 s), so the others
# elect a new leader while it cannot even notice it was deposed.
FROZEN_S = 3.0
# Metadata requests go to one broker; a frozen or dying one must not hold a wait up for long.
METADATA_TIMEOUT_S = 5.0
# A failover is a few election timeouts plus the client noticing; this much is a hang.
FAILOVER_DEADLINE_S = 20.0
# A produce to a partition whose leader is up is acknowledged within milliseconds.
SERVING_DEADLINE_S = 5.0
# One record of 2 MiB: over the default max.message.bytes (1 MiB and a little).
OVERSIZE_VALUE_BYTES = 2 << 20
MESSAGE_TOO_LARGE = kafka.errors.MessageSizeTooLargeError.errno
CORRUPT_MESSAGE = kafka.errors.CorruptRecordError.errno
NOT_LEADER_OR_FOLLOWER = kafka.errors.NotLeaderForPartitionError.errno


class PartitionMetadata(NamedTuple):
    leader: int
    replicas: list
    isrs: list


class TopicMetadata(NamedTuple):
    error: int
    partitions: dict  # index -> PartitionMetadata


class ClusterMetadata(NamedTuple):
    brokers: dict  # node id -> (host, port)
    controller_id: int
    topics: dict  # name -> TopicMetadata


def metadata_from(address, topic=None):
    """Metadata (of `topic`, or of every topic) as the broker at `address` answers it, read
    the way confluent-kafka's ClusterMetadata is (brokers and topics by key, partitions by
    index with leader, replicas and isrs); None while it answers without brokers (it has just
    started and is not yet live in its own metadata). On a plain socket (raw_protocol), not
    through a confluent-kafka AdminClient: the waits here ask many times a second, and a
    client made and destroyed per question once hung a whole run in librdkafka's destroy
    (its main thread waiting forever for a broker thread, under the GIL, where pytest-timeout
    cannot interrupt it)."""
    from kafka.protocol.metadata.metadata import MetadataRequest

    connection = RawConnection(address, deadline_s=METADATA_TIMEOUT_S)
    try:
        topics = None if topic is None else [MetadataRequest.MetadataRequestTopic(name=topic)]
        answer = connection.request(MetadataRequest(topics=topics, allow_auto_topic_creation=False))
    finally:
        connection.close()
    if not answer.brokers:
        return None
    return ClusterMetadata(
        brokers={broker.node_id: (broker.host, broker.port) for broker in answer.brokers},
        controller_id=answer.controller_id,
        topics={
            listed.name: TopicMetadata(
                error=listed.error_code,
                partitions={
                    partition.partition_index: PartitionMetadata(
                        leader=partition.leader_id,
                        replicas=list(partition.replica_nodes),
                        isrs=list(partition.isr_nodes),
                    )
                    for partition in listed.partitions
                },
            )
            for listed in answer.topics
        },
    )


def rdkafka_debug_config():
    """With RDKAFKA_DEBUG_FILE set, what makes librdkafka log its view of brokers, metadata and
    requests to that file: how a client's stall after a fault is diagnosed."""
    path = os.environ.get("RDKAFKA_DEBUG_FILE")
    if not path:
        return {}
    logger = logging.getLogger("rdkafka")
    if not logger.handlers:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    return {"debug": "broker,topic,metadata,protocol,msg,eos", "logger": logger}


class Cluster:
    """`node_count` brokers, ids 1 up (`--cores N` each, 1 by default; own data directory) on a `network`
    (Loopback or Namespaces); the controller voters are the first three. Each can be stopped,
    killed, frozen and restarted on the same addresses and data directory, and, on Namespaces,
    cut off from the other brokers. `listeners`, on Loopback: each broker's security protocols
    (`--listeners`), the first the one these helpers speak; `before_first_start(node, data_dir)`
    prepares a broker's data directory before it first starts."""

    def __init__(
        self, tmp_path, network, node_count=len(NODE_IDS), cores=1, broker_args=(), secret=True, listeners=(),
        before_first_start=None,
    ):
        self.tmp_path = tmp_path
        self.network = network
        self.cores = cores
        self.broker_args = list(broker_args)  # more `ferrite serve` flags for every broker
        self.listeners = list(listeners)
        self.before_first_start = before_first_start
        # The brokers authenticate each other with a shared secret (`--cluster-secret-file`)
        # unless `secret` is False: the cluster as it should be run, under every fault test.
        self.secret_file = None
        if secret:
            self.secret_file = tmp_path / "cluster.secret"
            self.secret_file.write_text(os.urandom(36).hex() + "\n")
            self.broker_args += ["--cluster-secret-file", str(self.secret_file)]
        self.node_ids = tuple(range(1, node_count + 1))
        self.brokers = {}  # node id -> Broker
        self.rpc_addresses = {}  # node id -> (host, port) of its inter-broker listener
        self.frozen = set()  # node ids stopped with SIGSTOP
        self.cut_off = set()  # node ids the other brokers cannot reach

    def start(self):
        """Starts them all, on new addresses when one was taken between choosing and binding
        it (another test run on the same machine)."""
        for attempt in range(1, BIND_ATTEMPTS + 1):
            addresses = self.network.addresses(self.node_ids)
            self.rpc_addresses = {node: rpc for node, (_, rpc) in addresses.items()}
            peers = ",".join(f"{node}@{host}:{port}" for node, (host, port) in self.rpc_addresses.items())
            self.brokers = {}
            for node, (kafka_listen, (rpc_host, rpc_port)) in addresses.items():
                node_dir = self.tmp_path / f"attempt-{attempt}" / f"node-{node}"
                node_dir.mkdir(parents=True)
                broker = Broker(
                    self.network.binary(node),
                    node_dir / "data",
                    node_dir,
                    cores=self.cores,
                    extra_args=[
                        *("--node-id", str(node)),
                        *("--rpc-listen", f"{rpc_host}:{rpc_port}"),
                        *("--peers", peers),
                        *self.broker_args,
                    ],
                    listeners=self.listeners,
                )
                if self.before_first_start is not None:
                    self.before_first_start(node, broker.data_dir)
                broker.bootstrap = kafka_listen  # None: a free port, chosen at the first start
                self.brokers[node] = broker
            try:
                for broker in self.brokers.values():
                    broker.start()
                return
            except AssertionError:
                taken = any("in use" in broker.stderr_tail() for broker in self.brokers.values())
                self.shut_down(check_exit=False)
                if not taken or attempt == BIND_ATTEMPTS:
                    raise

    def bootstrap(self, nodes=None):
        """The Kafka addresses of `nodes` (default: every broker that answers)."""
        if nodes is None:
            nodes = self.answering()
        return ",".join(self.brokers[node].bootstrap for node in nodes)

    def answering(self):
        """The brokers that are up, not frozen and not cut off."""
        return [
            node
            for node, broker in self.brokers.items()
            if broker.running and node not in self.frozen and node not in self.cut_off
        ]

    def kill9(self, node):
        self.brokers[node].kill()

    def restart(self, node):
        """Starts a stopped or killed broker again on its ports and data directory."""
        self.brokers[node].start()

    def stop(self, node):
        exit_code = self.brokers[node].stop()
        assert exit_code == 0, f"broker {node} exited with {exit_code} after SIGTERM"

    def sigstop(self, node):
        self.brokers[node].process.send_signal(signal.SIGSTOP)
        self.frozen.add(node)

    def sigcont(self, node):
        self.brokers[node].process.send_signal(signal.SIGCONT)
        self.frozen.discard(node)

    def cut(self, node):
        """Cuts `node` off from the other brokers; clients still reach it."""
        self.network.cut(node)
        self.cut_off.add(node)

    def heal(self, node):
        self.network.heal(node)
        self.cut_off.discard(node)

    def metadata(self, topic=None, node=None):
        """Metadata as one broker (`node`, or the first that answers) gives it (see
        `metadata_from`). A broker that has just started answers without brokers until it is
        live in its own metadata: it is asked again."""

        if node is not None:

            def answered_by_node():
                try:
                    return metadata_from(self.brokers[node].bootstrap, topic)
                except ConnectionError:  # restarting: not listening yet
                    return None

            return wait_until(
                answered_by_node,
                f"broker {node} to answer Metadata itself",
                deadline_s=FAILOVER_DEADLINE_S,
            )

        def answered_by_any():
            for asked in self.answering():
                try:
                    answer = metadata_from(self.brokers[asked].bootstrap, topic)
                except (OSError, AssertionError):  # stopping, restarting or frozen
                    continue
                if answer is not None:
                    return answer
            return None

        return wait_until(
            answered_by_any, f"a broker to answer Metadata (answering: {self.answering()})", deadline_s=FAILOVER_DEADLINE_S
        )

    def controller_leader(self, node):
        """The node whose controller leads the metadata log as broker `node` knows it (from its
        /metrics), or None while it knows none."""
        with urllib.request.urlopen(self.brokers[node].metrics_url, timeout=METADATA_TIMEOUT_S) as response:
            text = response.read().decode()
        match = re.search(r"^ferrite_controller_leader (\d+)$", text, re.MULTILINE)
        assert match, "a cluster's broker reports ferrite_controller_leader"
        return int(match.group(1)) or None

    def leaders(self, topic, partition_count=PARTITIONS):
        """partition -> leader, once every partition has a leader that answers, as a broker
        that answers sees it (one may name a dead leader for a moment after it died)."""

        def current():
            partitions = self.metadata(topic).topics[topic].partitions
            leaders = {index: partition.leader for index, partition in partitions.items()}
            if len(leaders) == partition_count and all(leader in self.answering() for leader in leaders.values()):
                return leaders
            return None

        return wait_until(current, f"every partition of {topic} to have a live leader")

    def leader(self, topic, partition):
        return self.leaders(topic)[partition]

    def wait_all_listed(self):
        """Waits until every broker that answers lists all the brokers."""
        for node in self.answering():
            wait_until(
                lambda node=node: sorted(self.metadata(node=node).brokers) == list(self.node_ids),
                f"broker {node} to list brokers {list(self.node_ids)}",
            )

    def shut_down(self, check_exit=True):
        """Thaws the frozen brokers and stops all with SIGTERM at once (a broker alone may wait
        for peers that are already gone, so none is stopped last on its own)."""
        for node in list(self.frozen):
            self.sigcont(node)
        running = {node: broker for node, broker in self.brokers.items() if broker.running}
        for broker in running.values():
            broker.process.send_signal(signal.SIGTERM)
        exit_codes = {}
        for node, broker in running.items():
            try:
                exit_codes[node] = broker.process.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                broker.kill()
                exit_codes[node] = "no exit within the deadline"
        if check_exit:
            assert all(code == 0 for code in exit_codes.values()), (
                f"brokers' exit codes after SIGTERM: {exit_codes}"
            )


class Loopback:
    """Every broker on 127.0.0.1: Kafka on a port the kernel picks at its first start, the
    inter-broker listener on a port chosen beforehand (every broker's --peers names them all):
    one the kernel had free a moment ago, bound and released."""

    def addresses(self, node_ids):
        """node -> (Kafka listen address or None for a free port, inter-broker (host, port))."""
        sockets = [socket.socket() for _ in node_ids]
        try:
            for each in sockets:
                each.bind(("127.0.0.1", 0))
            return {node: (None, each.getsockname()) for node, each in zip(node_ids, sockets, strict=True)}
        finally:
            for each in sockets:
                each.close()

    def binary(self, node):
        return FERRITE_RELEASE_BIN


class Namespaces:
    """Every broker in its own network namespace with two links: one to a bridge its clients
    (this test, in the root namespace) reach it through, one to a bridge the brokers reach each
    other through. Taking a broker's second link down cuts it off from the other brokers while
    its clients still reach it: a leader that cannot know it was deposed, as far as it can tell,
    still serving the producers that know it as the leader.

    Names and addresses are derived from the test process's id so that parallel runs differ:
    10.X.Y.0/25 for clients (the root namespace is 10.X.Y.100), 10.X.Y.128/25 between brokers
    (the root namespace is 10.X.Y.228, to see a killed broker's inter-broker port free)."""

    KAFKA_PORT = 9092
    RPC_PORT = 9093

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        tag = os.getpid()
        self.prefix = f"10.{(tag >> 8) & 0xFF}.{tag & 0xFF}"
        self.client_bridge = f"fk{tag}"
        self.broker_bridge = f"fr{tag}"
        self.namespaces = {node: f"ferrite-test-{tag}-{node}" for node in NODE_IDS}
        self.created = []  # ("netns" | "link", name), to delete in reverse order

    @staticmethod
    def available():
        """Whether this process may create network namespaces (root, with iproute2)."""
        probe = f"ferrite-probe-{os.getpid()}"
        try:
            subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return False
        subprocess.run(["ip", "netns", "del", probe], check=True, capture_output=True)
        return True

    def create(self):
        for bridge, host in ((self.client_bridge, 100), (self.broker_bridge, 228)):
            _ip("link", "add", bridge, "type", "bridge")
            self.created.append(("link", bridge))
            _ip("addr", "add", f"{self.prefix}.{host}/25", "dev", bridge)
            _ip("link", "set", bridge, "up")
        for node, namespace in self.namespaces.items():
            _ip("netns", "add", namespace)
            self.created.append(("netns", namespace))
            _ip("-n", namespace, "link", "set", "lo", "up")
            for bridge, inside, address in (
                (self.client_bridge, "clients", self.kafka_host(node)),
                (self.broker_bridge, "brokers", self.rpc_host(node)),
            ):
                # The root namespace's end of the pair; deleting the namespace deletes both.
                outside = self.link(bridge, node)
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace)
                _ip("link", "set", outside, "master", bridge, "up")
                _ip("-n", namespace, "addr", "add", f"{address}/25", "dev", inside)
                _ip("-n", namespace, "link", "set", inside, "up")
            wrapper = self.tmp_path / f"ferrite-in-namespace-{node}"
            # `ip netns exec` execs the command: the process the test signals is the broker.
            wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {FERRITE_RELEASE_BIN} "$@"\n')
            wrapper.chmod(0o755)

    def destroy(self):
        for kind, name in reversed(self.created):
            command = ["netns", "del", name] if kind == "netns" else ["link", "del", name]
            subprocess.run(["ip", *command], check=False, capture_output=True)
        self.created = []

    def link(self, bridge, node):
        return f"{bridge}n{node}"

    def kafka_host(self, node):
        return f"{self.prefix}.{node}"

    def rpc_host(self, node):
        return f"{self.prefix}.{128 + node}"

    def addresses(self, node_ids):
        assert set(node_ids) <= set(self.namespaces), f"namespaces exist for {NODE_IDS} only"
        return {
            node: (f"{self.kafka_host(node)}:{self.KAFKA_PORT}", (self.rpc_host(node), self.RPC_PORT))
            for node in node_ids
        }

    def binary(self, node):
        return str(self.tmp_path / f"ferrite-in-namespace-{node}")

    def cut(self, node):
        _ip("link", "set", self.link(self.broker_bridge, node), "down")

    def heal(self, node):
        _ip("link", "set", self.link(self.broker_bridge, node), "up")


def _ip(*arguments):
    completed = subprocess.run(["ip", *arguments], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, f"ip {' '.join(arguments)} failed: {completed.stderr.strip()}"


def running_cluster(request, tmp_path, network, node_count=len(NODE_IDS), cores=1, broker_args=(), **cluster_args):
    """`node_count` running brokers of `cores` shards (and `broker_args`, and `Cluster`'s other
    arguments: `secret`, `listeners`, `before_first_start`) on `network` that list each other and
    share a secret (none if `secret=False`); all stopped with SIGTERM at the end, each of which
    must exit 0."""
    assert FERRITE_RELEASE_BIN, "FERRITE_RELEASE_BIN is not set: run the tests with tools/client-tests.sh"
    instance = Cluster(tmp_path, network, node_count, cores, broker_args, **cluster_args)
    try:
        try:
            instance.start()
        finally:
            request.node.ferrite_brokers = instance.brokers
        instance.wait_all_listed()
        yield instance
    except BaseException:
        instance.shut_down(check_exit=False)
        raise
    instance.shut_down()


@pytest.fixture
def cluster(request, tmp_path):
    yield from running_cluster(request, tmp_path, Loopback())


@pytest.fixture
def unauthenticated_cluster(request, tmp_path):
    """Three brokers without a cluster secret: the inter-broker port believes anyone (as
    before secrets)."""
    yield from running_cluster(request, tmp_path, Loopback(), secret=False)


@pytest.fixture
def two_shard_cluster(request, tmp_path):
    """Three brokers of two shards each."""
    yield from running_cluster(request, tmp_path, Loopback(), cores=2)


@pytest.fixture
def rebalancing_cluster(request, tmp_path):
    """Three brokers whose partition leaders hand leadership back to the preferred replica
    every second (Kafka's default check is every 5 minutes)."""
    yield from running_cluster(
        request, tmp_path, Loopback(), broker_args=("--leader-imbalance-check-interval-s", "1")
    )


@pytest.fixture
def five_brokers(request, tmp_path):
    """Five brokers: 1, 2 and 3 the controller voters, 4 and 5 observers of the metadata log."""
    yield from running_cluster(request, tmp_path, Loopback(), node_count=5)


@pytest.fixture
def namespaced_cluster(request, tmp_path):
    """A cluster whose brokers can be cut off from each other (see Namespaces); skipped where
    network namespaces cannot be created."""
    if not Namespaces.available():
        pytest.skip("cannot create network namespaces here (needs root and iproute2)")
    network = Namespaces(tmp_path)
    try:
        network.create()
        yield from running_cluster(request, tmp_path, network)
    finally:
        network.destroy()


def created_topic(cluster, label, partition_count=PARTITIONS, config=None):
    """A new topic of `partition_count` partitions with REPLICATION_FACTOR replicas each (and
    the topic settings in `config`), once every partition has a live leader."""
    topic = topic_name(label)
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap()})
    futures = admin.create_topics(
        [
            confluent_kafka.admin.NewTopic(
                topic,
                num_partitions=partition_count,
                replication_factor=REPLICATION_FACTOR,
                config=config or {},
            )
        ],
        operation_timeout=CLIENT_DEADLINE_S,
    )
    futures[topic].result(timeout=CLIENT_DEADLINE_S)
    cluster.leaders(topic, partition_count)
    return topic
