"""A 3-broker cluster of real `ferrite serve` processes (the release build, as users run it)
under faults, seen through real clients: kcat lists the brokers and the partition leaders;
idempotent acks=all producers keep writing while a batch over max.message.bytes is refused and
leaders are killed with SIGKILL, frozen with SIGSTOP past the election timeout, stopped with
SIGTERM and restarted, or (where network namespaces can be created) cut off from the other
brokers, and a checker then proves that nothing they were told is stored was lost, duplicated,
reordered or moved to another offset; kafka-python follows a leader change by itself.

How long each failover took (from the fault to the first acknowledgement of a message sent
after it to a partition the faulty broker led) is printed on the terminal: it is what a user of
the cluster waits when a broker fails.
"""

import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

import confluent_kafka
import confluent_kafka.admin
import kafka
import kafka.errors
import pytest

from conftest import FERRITE_RELEASE_BIN, STOP_DEADLINE_S, Broker
from raw_protocol import RawConnection, record_batch
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
    cut off from the other brokers."""

    def __init__(self, tmp_path, network, node_count=len(NODE_IDS), cores=1, broker_args=()):
        self.tmp_path = tmp_path
        self.network = network
        self.cores = cores
        self.broker_args = list(broker_args)  # more `ferrite serve` flags for every broker
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
                )
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
        """Metadata as one broker (`node`, or the first that answers) gives it, through a fresh
        AdminClient bootstrapped from that broker alone. librdkafka sends list_topics to any
        broker it is connected to, and it connects to others it learnt of (seen with a topic
        named, on five brokers): an answer from another broker is asked again, so that the
        answer is `node`'s (brokers that do not host a partition learn its leader a moment
        after those that do)."""

        def ask(asked):
            admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": self.bootstrap([asked])})
            return admin.list_topics(topic, timeout=METADATA_TIMEOUT_S)

        if node is not None:
            address = self.bootstrap([node])

            def answered_by_node():
                answer = ask(node)
                return answer if answer.orig_broker_name.split("/")[0] == address else None

            return wait_until(
                answered_by_node, f"broker {node} to answer Metadata itself", deadline_s=METADATA_TIMEOUT_S
            )
        for asked in self.answering():
            try:
                return ask(asked)
            except confluent_kafka.KafkaException:
                pass
        raise AssertionError(f"no broker answered a Metadata request (answering: {self.answering()})")

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


def running_cluster(request, tmp_path, network, node_count=len(NODE_IDS), cores=1, broker_args=()):
    """`node_count` running brokers of `cores` shards (and `broker_args`) on `network` that list
    each other; all stopped with SIGTERM at the end, each of which must exit 0."""
    assert FERRITE_RELEASE_BIN, "FERRITE_RELEASE_BIN is not set: run the tests with tools/client-tests.sh"
    instance = Cluster(tmp_path, network, node_count, cores, broker_args)
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


def test_kcat_lists_three_brokers_and_the_leaders(cluster):
    topic = created_topic(cluster, "listed")
    node = NODE_IDS[0]
    command = ["kcat", "-b", cluster.bootstrap([node]), "-L"]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=CLIENT_DEADLINE_S * 2, check=False
    )
    assert completed.returncode == 0 and "ERROR" not in completed.stderr, (
        f"{' '.join(command)} exited with {completed.returncode}; its stderr:\n{completed.stderr[-4000:]}"
    )
    listing = completed.stdout
    brokers = dict(re.findall(r"^\s+broker (\d+) at (\S+)", listing, re.MULTILINE))
    expected = {str(node): broker.bootstrap for node, broker in cluster.brokers.items()}
    assert brokers == expected, f"kcat -L should list the three brokers {expected}:\n{listing}"
    partitions = re.findall(
        rf'topic "{topic}" with (\d+) partitions:((?:\n\s+partition .*)*)', listing
    )
    assert partitions and int(partitions[0][0]) == PARTITIONS, f"kcat -L should list {topic}:\n{listing}"
    lines = re.findall(
        r"partition (\d+), leader (-?\d+), replicas: ([\d,]+), isrs: ([\d,]*)", partitions[0][1]
    )
    assert sorted(int(index) for index, *_ in lines) == list(range(PARTITIONS)), listing
    for index, leader, replicas, _ in lines:
        assert leader in expected, (
            f"partition {index} of {topic} has leader {leader}, not a broker:\n{listing}"
        )
        assert sorted(replicas.split(",")) == sorted(expected), (
            f"partition {index} of {topic} should have all three brokers as replicas:\n{listing}"
        )


def test_a_batch_the_log_refuses_leaves_the_partition_serving(cluster):
    """A 2 MiB batch (over the default max.message.bytes) and a batch with a bad CRC are
    answered MESSAGE_TOO_LARGE and CORRUPT_MESSAGE by the partition's leader, which takes the
    next produce at once; a follower refuses them as well (or names the leader), and nothing
    refused is stored. The leader used to number the large batch in Raft before its log refused
    it, after which every produce to the partition timed out."""
    topic = created_topic(cluster, "refused", partition_count=1)
    leader = cluster.leaders(topic, 1)[0]
    large = record_batch(b"x" * OVERSIZE_VALUE_BYTES)
    corrupt = bytearray(record_batch(b"flipped"))
    corrupt[-1] ^= 0x01
    refused = ((large, MESSAGE_TOO_LARGE, "a 2 MiB batch"), (bytes(corrupt), CORRUPT_MESSAGE, "a bad CRC"))
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": cluster.bootstrap(),
            "acks": "all",
            "message.timeout.ms": int(SERVING_DEADLINE_S * 1000),
        }
    )
    acknowledged = []

    def produce_acknowledged(value):
        delivered = []
        producer.produce(topic, value, partition=0, on_delivery=lambda error, _: delivered.append(error))
        producer.flush(SERVING_DEADLINE_S * 2)
        assert len(delivered) == 1 and delivered[0] is None, (
            f"{value!r} was not acknowledged within {SERVING_DEADLINE_S:.0f} s: "
            f"{[str(error) for error in delivered]}"
        )
        acknowledged.append(value)

    produce_acknowledged(b"before")
    connection = RawConnection(cluster.bootstrap([leader]))
    try:
        for records, expected, what in refused:
            assert connection.produce(topic, 0, records) == expected, f"the leader, given {what}"
            produce_acknowledged(f"after {what}".encode())
    finally:
        connection.close()
    for follower in (node for node in cluster.node_ids if node != leader):
        connection = RawConnection(cluster.bootstrap([follower]))
        try:
            for records, expected, what in refused:
                code = connection.produce(topic, 0, records)
                assert code in (expected, NOT_LEADER_OR_FOLLOWER), f"follower {follower}, given {what}: {code}"
        finally:
            connection.close()
    produce_acknowledged(b"last")
    read = read_to_high_water_marks(cluster, topic, 1)
    assert [message.value for message in read[0].values()] == acknowledged, "exactly what was acknowledged"


@dataclass(frozen=True)
class Read:
    """One message as the checker read it."""

    key: bytes
    value: bytes


class ContinuousProducer:
    """An idempotent acks=all confluent-kafka producer writing numbered keyed messages at a
    steady rate from its own thread until stopped; it remembers when each was sent and where
    and when each was acknowledged. Its messages name its `number`, so several can write one
    topic (see ProducerGroup)."""

    RATE_PER_S = 250
    KEY_COUNT = 30
    OUTSTANDING_MAX = 500

    def __init__(self, bootstrap, topic, number=0, rate_per_s=RATE_PER_S):
        self.topic = topic
        self.number = number
        self.rate_per_s = rate_per_s
        self.lock = threading.Lock()
        self.sent_at = []  # index -> monotonic time of produce()
        self.acked = {}  # index -> (partition, offset, monotonic time of the acknowledgement)
        self.failed = {}  # index -> error
        self.fatal_errors = []
        self.stopping = threading.Event()
        self.left_unsettled = None
        self.producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                # Long enough to ride out every fault: a message the producer gives up on is a
                # failure of the test, not of the fault.
                "message.timeout.ms": int(CLIENT_DEADLINE_S * 3000),
                # A frozen leader answers nothing, and the producer sends a partition nothing
                # new until its requests in flight to the old leader are over: it should give
                # up on them well before librdkafka's 60 s default (request.timeout.ms is only
                # the broker's to enforce). Measured failovers include this wait.
                "socket.timeout.ms": 3000,
                "topic.metadata.refresh.interval.ms": 1000,
                # One request in flight per broker. With more, a request that times out at a
                # frozen leader makes the next one, sent on to the new leader, get
                # OUT_OF_ORDER_SEQUENCE_NUMBER (its predecessor never arrived: right, as Kafka
                # answers), and librdkafka then bumps the producer epoch and sends every
                # possibly persisted message again under it, on all partitions, where no
                # broker can tell them from new ones: duplicates (librdkafka issue #4953,
                # seen here once in about 20 runs). The checker is to find the broker's
                # faults, not that one.
                "max.in.flight.requests.per.connection": 1,
                "reconnect.backoff.ms": 20,
                "reconnect.backoff.max.ms": 250,
                "error_cb": self._on_error,
                **rdkafka_debug_config(),
            }
        )
        self.thread = threading.Thread(target=self._run, name=f"producer-{number}", daemon=True)

    @property
    def members(self):
        return [self]

    def message(self, index):
        key = f"key-{index % ContinuousProducer.KEY_COUNT}".encode()
        return key, f"cluster-{self.number}-{index:07d}-".encode() + b"x" * (index % 97)

    @staticmethod
    def parse(value):
        """(producer number, index) of a message's value."""
        _, number, index, _ = value.split(b"-", 3)
        return int(number), int(index)

    def _on_error(self, error):
        if error.fatal():
            self.fatal_errors.append(error)

    def _on_delivery(self, error, message):
        _, index = self.parse(message.value())
        with self.lock:
            if error is None:
                self.acked[index] = (message.partition(), message.offset(), time.monotonic())
            else:
                self.failed[index] = error

    def _run(self):
        try:
            self._send_until_stopped()
            self.left_unsettled = self.producer.flush(CLIENT_DEADLINE_S * 2)
        except confluent_kafka.KafkaException as error:
            # A fatal error (produce, poll and flush raise it): the client takes nothing more.
            self.fatal_errors.append(error.args[0])
        # Destroys the client now, so it stops reconnecting before the brokers stop.
        self.producer = None

    def _send_until_stopped(self):
        started = time.monotonic()
        while not self.stopping.is_set():
            due = int((time.monotonic() - started) * self.rate_per_s)
            with self.lock:
                outstanding = len(self.sent_at) - len(self.acked) - len(self.failed)
            while len(self.sent_at) < due and outstanding < self.OUTSTANDING_MAX:
                index = len(self.sent_at)
                key, value = self.message(index)
                with self.lock:
                    self.sent_at.append(time.monotonic())
                self.producer.produce(self.topic, key=key, value=value, on_delivery=self._on_delivery)
                outstanding += 1
            self.producer.poll(1 / self.rate_per_s)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(CLIENT_DEADLINE_S * 3)
        assert not self.thread.is_alive(), "the producer thread did not finish"
        assert not self.fatal_errors, f"the producer stopped on a fatal error: {self.outcome()}"
        assert self.left_unsettled == 0, (
            f"{self.left_unsettled} message(s) neither acknowledged nor failed: {self.outcome()}"
        )

    def outcome(self):
        with self.lock:
            return (
                f"{len(self.sent_at)} sent, {len(self.acked)} acknowledged, {len(self.failed)} failed "
                f"(first: {list(self.failed.items())[:3]}), fatal errors: {self.fatal_errors}"
            )

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def wait_for_progress(self, count, what):
        """Waits until `count` more messages than now are acknowledged (failing at once on a
        fatal error, after which the producer sends nothing)."""
        target = self.acked_count() + count

        def progressed():
            assert not self.fatal_errors, f"producer {self.number} stopped {what}: {self.outcome()}"
            return self.acked_count() >= target

        wait_until(progressed, f"{count} more acknowledgements {what}")

    def first_acks_after(self, moment):
        """partition -> when the first message sent after `moment` to it was acknowledged."""
        firsts = {}
        with self.lock:
            for index, (partition, _, acked_at) in self.acked.items():
                if self.sent_at[index] >= moment and acked_at < firsts.get(partition, float("inf")):
                    firsts[partition] = acked_at
        return firsts


class ProducerGroup:
    """Several ContinuousProducers writing one topic at once, each bootstrapped from its own
    broker (so each asks that broker for its producer id, as applications spread over a
    cluster do), seen as one: the same interface, over all of them."""

    def __init__(self, bootstraps, topic, rate_per_s):
        self.members = [
            ContinuousProducer(bootstrap, topic, number, rate_per_s)
            for number, bootstrap in enumerate(bootstraps)
        ]

    def start(self):
        for member in self.members:
            member.start()

    def stop(self):
        """Stops them all (together: none waits for another to flush), then reports what any
        of them left unsettled."""
        for member in self.members:
            member.stopping.set()
        problems = []
        for member in self.members:
            try:
                member.stop()
            except AssertionError as error:
                problems.append(f"producer {member.number}: {error}")
        assert not problems, "; ".join(problems)

    @property
    def failed(self):
        return {
            (member.number, index): error for member in self.members for index, error in member.failed.items()
        }

    @property
    def fatal_errors(self):
        return [error for member in self.members for error in member.fatal_errors]

    def outcome(self):
        return "; ".join(f"producer {member.number}: {member.outcome()}" for member in self.members)

    def wait_for_progress(self, count, what):
        """Waits until each producer has `count` / (number of producers) more acknowledgements
        than now: none of them may stall."""
        share = -(-count // len(self.members))
        targets = [(member, member.acked_count() + share) for member in self.members]

        def progressed():
            assert not self.fatal_errors, f"a producer stopped {what}: {self.outcome()}"
            return all(member.acked_count() >= target for member, target in targets)

        wait_until(
            progressed,
            f"{share} more acknowledgements for each of {len(self.members)} producers {what}",
        )

    def first_acks_after(self, moment):
        """partition -> when the first message any producer sent after `moment` to it was
        acknowledged."""
        firsts = {}
        for member in self.members:
            for partition, acked_at in member.first_acks_after(moment).items():
                firsts[partition] = min(acked_at, firsts.get(partition, float("inf")))
        return firsts


def measured_failover(producer, fault_at, partitions, fault, deadline_s=FAILOVER_DEADLINE_S):
    """Seconds from `fault_at` to the first acknowledgement of a message sent after it, for
    each of `partitions` (those the faulty broker led), once all have one."""

    def measured():
        firsts = producer.first_acks_after(fault_at)
        if all(partition in firsts for partition in partitions):
            return {partition: firsts[partition] - fault_at for partition in partitions}
        return None

    return wait_until(
        measured,
        f"partitions {sorted(partitions)} to acknowledge again after {fault} ({producer.outcome()})",
        deadline_s=deadline_s,
    )


def oversize_refused(cluster, topic, partition):
    """Sends one record of OVERSIZE_VALUE_BYTES to `partition` through a client allowed to
    send one that large (a plain acks=all producer, whose refused message costs no other
    message anything) and returns the code of the error it was refused with."""
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": cluster.bootstrap(),
            "acks": "all",
            "message.max.bytes": 2 * OVERSIZE_VALUE_BYTES,
            "message.timeout.ms": int(SERVING_DEADLINE_S * 2000),
        }
    )
    delivered = []
    producer.produce(
        topic,
        b"x" * OVERSIZE_VALUE_BYTES,
        partition=partition,
        on_delivery=lambda error, _: delivered.append(error),
    )
    assert producer.flush(SERVING_DEADLINE_S * 4) == 0, "the oversize message was neither refused nor stored"
    assert len(delivered) == 1 and delivered[0] is not None, "a message over max.message.bytes was stored"
    return delivered[0].code()


def read_to_high_water_marks(cluster, topic, partition_count=PARTITIONS):
    """partition -> {offset: Read}: every message from the beginning of each partition up to
    its high-water mark when the read began, fetched from the partitions' leaders."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": cluster.bootstrap(),
            "group.id": "ferrite-cluster-checker",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
        }
    )
    def high_water_mark(partition):
        # Right after a fault or a heal a broker may answer LEADER_NOT_AVAILABLE for a moment
        # (an election, or a returning broker learning the leader); clients ask again.
        def asked():
            try:
                return consumer.get_watermark_offsets(
                    confluent_kafka.TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S
                )[1]
            except confluent_kafka.KafkaException:
                return None

        return wait_until(asked, f"the high-water mark of {topic}/{partition}")

    try:
        ends = {partition: high_water_mark(partition) for partition in range(partition_count)}
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, partition, confluent_kafka.OFFSET_BEGINNING)
                for partition in range(partition_count)
            ]
        )
        read = {partition: {} for partition in range(partition_count)}
        # Offsets the Raft core's own control batches take are never delivered, so a partition
        # is read once a message at or past its last offset arrives, or once it is at its end.
        done = {partition for partition, end in ends.items() if end == 0}
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while len(done) < partition_count:
            assert time.monotonic() < deadline, (
                f"reading {topic}: partitions {sorted(set(range(partition_count)) - done)} did not reach "
                f"their high-water marks {ends} within {CLIENT_DEADLINE_S:.0f} s "
                f"(read up to {[max(offsets, default=None) for offsets in read.values()]})"
            )
            message = consumer.poll(0.2)
            if message is None:
                continue
            partition, offset = message.partition(), message.offset()
            error = message.error()
            if error is not None:
                assert error.code() == confluent_kafka.KafkaError._PARTITION_EOF, f"consume error: {error}"
                if offset >= ends[partition]:
                    done.add(partition)
                continue
            if offset < ends[partition]:
                assert offset not in read[partition], (
                    f"partition {partition}: offset {offset} delivered twice"
                )
                read[partition][offset] = Read(key=message.key(), value=message.value())
            if offset >= ends[partition] - 1:
                done.add(partition)
        return read
    finally:
        consumer.close()


def check_acknowledged(read, producer):
    """Every message `producer` (a ContinuousProducer or a ProducerGroup) was told is stored
    exactly once, at the partition and offset it was acknowledged at (in that partition, for
    librdkafka's implicit acks, which carry no offset), with its key; in each
    partition each producer's messages in the order it sent them; nothing else stored."""
    problems = []
    members = {member.number: member for member in producer.members}
    places = defaultdict(list)  # (producer number, index) -> [(partition, offset)]
    for partition, messages in read.items():
        previous = {}  # producer number -> index of its last message in the partition
        for offset in sorted(messages):
            message = messages[offset]
            number, index = ContinuousProducer.parse(message.value)
            places[(number, index)].append((partition, offset))
            if number not in members or (message.key, message.value) != members[number].message(index):
                problems.append(f"partition {partition} offset {offset}: {message} was never sent")
            if previous.get(number, -1) >= index:
                problems.append(
                    f"partition {partition} offset {offset}: producer {number}'s message {index} "
                    f"after its message {previous[number]}"
                )
            previous[number] = index
    for place, found in places.items():
        if len(found) > 1:
            problems.append(f"message {place} (producer, index) is stored more than once: at {found}")
    acked_count = 0
    for number, member in members.items():
        with member.lock:
            acked = dict(member.acked)
        acked_count += len(acked)
        for index, (partition, offset, _) in sorted(acked.items()):
            found = places.get((number, index))
            if not found:
                problems.append(
                    f"producer {number}'s message {index}, acknowledged at {partition}/{offset}, is missing"
                )
            elif offset is None:
                # Acknowledged without an offset: librdkafka's implicit ack (a request whose answer
                # never came, a timeout or a closed connection, is known stored once a later
                # request of the same idempotent producer succeeds: `rd_kafka_dr_implicit_ack`).
                # It must still be stored, once, in that partition.
                if found[0][0] != partition:
                    problems.append(
                        f"producer {number}'s message {index}, acknowledged in partition {partition}, is at {found}"
                    )
            elif found[0] != (partition, offset):
                problems.append(
                    f"producer {number}'s message {index}, acknowledged at {partition}/{offset}, is at {found}"
                )
    assert not problems, (
        f"{len(problems)} problem(s) in {sum(map(len, read.values()))} message(s) read, "
        f"{acked_count} acknowledged:\n- " + "\n- ".join(problems[:30])
    )


def check_offsets_kept(earlier, later):
    """Every offset read both times holds the same message both times."""
    changed = [
        (partition, offset, message, later[partition][offset])
        for partition, messages in earlier.items()
        for offset, message in messages.items()
        if offset in later[partition] and later[partition][offset] != message
    ]
    assert not changed, (
        f"{len(changed)} offset(s) now hold other data (partition, offset, was, is): {changed[:10]}"
    )
    lost = [
        (partition, offset)
        for partition, messages in earlier.items()
        for offset in messages
        if offset not in later[partition]
    ]
    assert not lost, f"{len(lost)} committed offset(s) read earlier are gone: {lost[:10]}"


def failed_over(producer, leaders, broker, fault_name, fault):
    """Applies `fault` to `broker` (which leads some partitions in `leaders`), waits for each of
    those to acknowledge again, and returns (description, {partition: seconds})."""
    led = [partition for partition, leader in leaders.items() if leader == broker]
    description = f"{fault_name} of broker {broker} (leader of {led})"
    fault_at = time.monotonic()
    fault(broker)
    return description, measured_failover(producer, fault_at, led, description)


def restarted(cluster, producer, broker):
    """Starts `broker` again and waits until every broker is listed and the producer goes on."""
    cluster.restart(broker)
    cluster.wait_all_listed()
    producer.wait_for_progress(200, f"after broker {broker} restarted")


def test_idempotent_producers_through_an_oversize_batch_kills_and_freezes(cluster, capsys):
    """Three idempotent producers, each bootstrapped from another broker, write three
    partitions while one batch over max.message.bytes is refused and leaders are killed,
    frozen and stopped; nothing any of them was told is stored may be lost, duplicated,
    reordered or moved."""
    topic = created_topic(cluster, "faults")
    producer = ProducerGroup(
        [cluster.bootstrap([node]) for node in cluster.node_ids],
        topic,
        rate_per_s=ContinuousProducer.RATE_PER_S // len(cluster.node_ids),
    )
    producer.start()
    failovers = []  # (fault, {partition: seconds})
    try:
        producer.wait_for_progress(300, "before the first fault")

        # (0) One batch over max.message.bytes, amid the producers' own: refused, and every
        # partition goes on taking their messages at once.
        refused_at = time.monotonic()
        assert oversize_refused(cluster, topic, partition=0) == MESSAGE_TOO_LARGE
        fault = "a refused oversize batch to partition 0"
        failovers.append(
            (fault, measured_failover(producer, refused_at, range(PARTITIONS), fault, SERVING_DEADLINE_S))
        )

        # (a) kill -9 the leader of partition 0, then restart it.
        leaders = cluster.leaders(topic)
        victim = leaders[0]
        failovers.append(failed_over(producer, leaders, victim, "kill -9", cluster.kill9))
        restarted(cluster, producer, victim)

        middle = read_to_high_water_marks(cluster, topic)

        # (b) SIGSTOP a leader past the election timeout, then SIGCONT it.
        leaders = cluster.leaders(topic)
        frozen = leaders[1]
        frozen_at = time.monotonic()
        fault = f"SIGSTOP for {FROZEN_S:.0f} s"
        failovers.append(failed_over(producer, leaders, frozen, fault, cluster.sigstop))
        # The fault is the freeze itself: it lasts FROZEN_S whatever the others do meanwhile.
        time.sleep(max(0.0, frozen_at + FROZEN_S - time.monotonic()))
        cluster.sigcont(frozen)
        cluster.wait_all_listed()
        producer.wait_for_progress(200, f"after broker {frozen} was thawed")

        # (c) kill -9 another leader (not the first victim, when another leads), then restart it.
        leaders = cluster.leaders(topic)
        candidates = sorted(set(leaders.values()) - {victim}) or sorted(set(leaders.values()))
        second = candidates[0]
        failovers.append(failed_over(producer, leaders, second, "kill -9", cluster.kill9))
        restarted(cluster, producer, second)

        # (d) stop the leader of partition 2 as an operator does (SIGTERM), then restart it.
        leaders = cluster.leaders(topic)
        stopped = leaders[2]
        failovers.append(failed_over(producer, leaders, stopped, "SIGTERM", cluster.stop))
        restarted(cluster, producer, stopped)
    finally:
        producer.stop()
    with capsys.disabled():
        print(f"\nfailover times ({producer.outcome()}):")
        for fault, seconds in failovers:
            per_partition = ", ".join(f"partition {p}: {s:.2f} s" for p, s in sorted(seconds.items()))
            print(f"  {fault}: {per_partition}")

    assert not producer.failed and not producer.fatal_errors, (
        f"the idempotent producer gave up on messages: {producer.outcome()}"
    )
    final = read_to_high_water_marks(cluster, topic)
    for partition, messages in final.items():
        assert messages, f"partition {partition} got no messages: the keys should cover every partition"
    check_acknowledged(final, producer)
    check_offsets_kept(middle, final)


def test_rolling_restart_at_once_after_kill_9(cluster):
    """Each broker in turn killed with SIGKILL and started again at once on its Kafka,
    inter-broker and metrics ports, as a supervisor restarts it, while its predecessor's
    listening sockets may linger: every broker comes back, and nothing acknowledged is lost."""
    topic = created_topic(cluster, "rolling")
    producer = ContinuousProducer(cluster.bootstrap(), topic)
    producer.start()
    try:
        producer.wait_for_progress(200, "before the rolling restart")
        for node in cluster.node_ids:
            cluster.kill9(node)
            restarted(cluster, producer, node)
    finally:
        producer.stop()
    assert all(broker.starts == 2 for broker in cluster.brokers.values())
    assert not producer.failed and not producer.fatal_errors, (
        f"the idempotent producer gave up on messages: {producer.outcome()}"
    )
    check_acknowledged(read_to_high_water_marks(cluster, topic), producer)


def test_kafka_python_follows_a_leader_change(cluster, capsys):
    topic = created_topic(cluster, "follow")
    partition = 0
    producer = kafka.KafkaProducer(
        bootstrap_servers=cluster.bootstrap().split(","),
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=5000,
        retry_backoff_ms=100,
        reconnect_backoff_ms=20,
        reconnect_backoff_max_ms=250,
        linger_ms=5,
        delivery_timeout_ms=int(CLIENT_DEADLINE_S * 3000),
    )
    futures = []  # (value, future)
    acked_at = {}  # value -> monotonic time of the acknowledgement

    def send(count, pause_s=0.0):
        for _ in range(count):
            value = f"follow-{len(futures):06d}".encode()
            future = producer.send(topic, key=b"k", value=value, partition=partition)
            future.add_callback(lambda _metadata, value=value: acked_at.setdefault(value, time.monotonic()))
            futures.append((value, future))
            time.sleep(pause_s)  # pacing the sends, not waiting for anything

    try:
        send(200)
        producer.flush(CLIENT_DEADLINE_S)
        victim = cluster.leader(topic, partition)
        send(100)  # in flight while the leader dies
        killed_at = time.monotonic()
        sent_before_kill = len(futures)
        cluster.kill9(victim)
        send(300, pause_s=0.005)
        producer.flush(CLIENT_DEADLINE_S * 2)
    finally:
        producer.close(timeout=CLIENT_DEADLINE_S)
    assert all(future.is_done for _, future in futures), "sends neither succeeded nor failed after flush"
    failed = [(value, future.exception) for value, future in futures if future.failed()]
    stored = {value: future.value.offset for value, future in futures if future.succeeded()}
    assert not failed, (
        f"{len(failed)} of {len(futures)} send(s) failed across the leader change: {failed[:5]}"
    )
    new_leader = cluster.leader(topic, partition)
    assert new_leader != victim, f"broker {victim} was killed, yet it leads partition {partition}"
    after_kill = [acked_at[value] for value, _ in futures[sent_before_kill:]]
    with capsys.disabled():
        print(
            f"\nkafka-python: partition {partition} moved from broker {victim} to {new_leader}; the first "
            f"send after the kill was acknowledged {min(after_kill) - killed_at:.2f} s after it"
        )

    consumer = kafka.KafkaConsumer(
        bootstrap_servers=cluster.bootstrap().split(","), enable_auto_commit=False, fetch_max_wait_ms=100
    )
    try:
        topic_partition = kafka.TopicPartition(topic, partition)
        consumer.assign([topic_partition])
        consumer.seek_to_beginning(topic_partition)
        end = consumer.end_offsets([topic_partition])[topic_partition]
        read = defaultdict(list)  # value -> offsets
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while consumer.position(topic_partition) < end:
            assert time.monotonic() < deadline, (
                f"reading partition {partition} did not reach its end {end} within {CLIENT_DEADLINE_S:.0f} s"
            )
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    read[record.value].append(record.offset)
    finally:
        consumer.close()
    duplicated = {value: offsets for value, offsets in read.items() if len(offsets) > 1}
    assert not duplicated, (
        f"{len(duplicated)} message(s) stored more than once: {list(duplicated.items())[:5]}"
    )
    misplaced = [
        (value, offset, read.get(value)) for value, offset in stored.items() if read.get(value) != [offset]
    ]
    assert not misplaced, (
        f"{len(misplaced)} of {len(stored)} acknowledged message(s) not at their offset "
        f"(value, acknowledged at, read at): {misplaced[:10]}"
    )


def test_a_leader_cut_off_from_the_other_brokers(namespaced_cluster, capsys):
    cluster = namespaced_cluster
    # One partition: the broker cut off leads every partition the producer writes to, so the
    # producer may be connected to it alone (librdkafka connects only to the brokers it needs),
    # the hardest case for a client to find the new leader in.
    topic = created_topic(cluster, "cutoff", partition_count=1)
    producer = ContinuousProducer(cluster.bootstrap(), topic)
    producer.start()
    try:
        producer.wait_for_progress(300, "before the cut")
        leaders = cluster.leaders(topic, 1)
        victim = leaders[0]
        fault, failover = failed_over(producer, leaders, victim, "the cut-off", cluster.cut)
        new_leaders = cluster.leaders(topic, 1)
        assert all(new_leaders[partition] != victim for partition in failover), (
            f"the brokers it was cut off from still name broker {victim} as a leader: {new_leaders}"
        )
        producer.wait_for_progress(200, f"while broker {victim} is cut off")
        middle = read_to_high_water_marks(cluster, topic, 1)
        cluster.heal(victim)
        cluster.wait_all_listed()
        producer.wait_for_progress(200, f"after broker {victim} was reconnected")
    finally:
        producer.stop()
    with capsys.disabled():
        per_partition = ", ".join(f"partition {p}: {s:.2f} s" for p, s in sorted(failover.items()))
        print(f"\nfailover after {fault}: {per_partition} ({producer.outcome()})")
    assert not producer.failed and not producer.fatal_errors, (
        f"the idempotent producer gave up on messages: {producer.outcome()}"
    )
    final = read_to_high_water_marks(cluster, topic, 1)
    check_acknowledged(final, producer)
    check_offsets_kept(middle, final)


def test_partitions_added_and_configs_altered_through_any_broker_reach_every_broker(cluster):
    topic = created_topic(cluster, "altered")
    # Through broker 2, not necessarily the controller's leader.
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap([NODE_IDS[1]])})
    grown = admin.create_partitions(
        [confluent_kafka.admin.NewPartitions(topic, PARTITIONS + 2)],
        operation_timeout=CLIENT_DEADLINE_S,
    )
    grown[topic].result(timeout=CLIENT_DEADLINE_S)
    resource = confluent_kafka.admin.ConfigResource(
        confluent_kafka.admin.ResourceType.TOPIC,
        topic,
        incremental_configs=[
            confluent_kafka.admin.ConfigEntry(
                "retention.ms",
                "3600000",
                incremental_operation=confluent_kafka.admin.AlterConfigOpType.SET,
            )
        ],
    )
    altered = admin.incremental_alter_configs([resource])
    altered[resource].result(timeout=CLIENT_DEADLINE_S)
    bad = confluent_kafka.admin.ConfigResource(
        confluent_kafka.admin.ResourceType.TOPIC,
        topic,
        incremental_configs=[
            confluent_kafka.admin.ConfigEntry(
                "retention.ms",
                "soon",
                incremental_operation=confluent_kafka.admin.AlterConfigOpType.SET,
            )
        ],
    )
    with pytest.raises(confluent_kafka.KafkaException, match="retention.ms"):
        admin.incremental_alter_configs([bad])[bad].result(timeout=CLIENT_DEADLINE_S)
    # Every broker, asked alone, has the new partitions (with leaders) and the new setting.
    for node in NODE_IDS:
        def grown_here():
            partitions = cluster.metadata(topic, node=node).topics[topic].partitions
            ready = len(partitions) == PARTITIONS + 2 and all(
                partition.leader in NODE_IDS for partition in partitions.values()
            )
            return ready or None

        wait_until(grown_here, f"broker {node} to list {PARTITIONS + 2} led partitions")
        asked = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap([node])})
        described = confluent_kafka.admin.ConfigResource(confluent_kafka.admin.ResourceType.TOPIC, topic)
        configs = asked.describe_configs([described])[described].result(timeout=CLIENT_DEADLINE_S)
        assert configs["retention.ms"].value == "3600000", f"broker {node}"
    # The new partitions take writes.
    producer = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all"})
    delivered = []
    producer.produce(topic, b"to a new partition", partition=PARTITIONS + 1,
                     on_delivery=lambda error, message: delivered.append(error))
    assert producer.flush(CLIENT_DEADLINE_S) == 0
    assert delivered == [None]


def test_five_brokers_beyond_the_controller_voters(five_brokers):
    """More brokers than controller voters: brokers 4 and 5 follow the metadata log as
    observers. kcat lists all five; a topic's replicas are spread evenly over them; a client
    that knows only a non-voter produces with acks=all and reads everything back; and with the
    controller leader killed, a topic is still created through a non-voter."""
    cluster = five_brokers
    partitions, replicas_per_partition = 10, 3
    topic = topic_name("five")
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap([5])})
    created = admin.create_topics(
        [confluent_kafka.admin.NewTopic(topic, partitions, replicas_per_partition)],
        operation_timeout=CLIENT_DEADLINE_S,
    )
    created[topic].result(timeout=CLIENT_DEADLINE_S)

    def led_everywhere():
        """partition -> (leader, replicas) once broker 4 names a live leader for each."""
        listed = cluster.metadata(topic, node=4).topics[topic].partitions
        placed = {index: (p.leader, sorted(p.replicas)) for index, p in listed.items()}
        led = len(placed) == partitions and all(leader in cluster.node_ids for leader, _ in placed.values())
        return placed if led else None

    placed = wait_until(led_everywhere, f"every partition of {topic} to have a leader")
    hosted = defaultdict(int)
    for index, (leader, replicas) in placed.items():
        assert len(set(replicas)) == replicas_per_partition and leader in replicas, (index, leader, replicas)
        for node in replicas:
            hosted[node] += 1
    assert hosted == {node: 6 for node in cluster.node_ids}, f"30 replicas spread over 5 brokers: {placed}"

    def kcat_lists_every_leader():
        """kcat's listing once it names a leader for every partition. kcat, like any
        librdkafka client, may take its answer from another broker it connected to, which
        may learn a leader a moment after broker 4 (in flight)."""
        completed = subprocess.run(
            ["kcat", "-b", cluster.bootstrap([4]), "-L", "-t", topic],
            capture_output=True, text=True, timeout=CLIENT_DEADLINE_S * 2, check=False,
        )
        assert completed.returncode == 0, completed.stderr[-4000:]
        listing = completed.stdout
        leaders = re.findall(r"partition (\d+), leader (\d+), replicas: ([\d,]+), isrs", listing)
        return (listing, leaders) if len(leaders) == partitions else None

    listing, leaders = wait_until(
        kcat_lists_every_leader, f"kcat to list a leader for every partition of {topic}", interval_s=0.2
    )
    brokers = dict(re.findall(r"^\s+broker (\d+) at (\S+)", listing, re.MULTILINE))
    expected = {str(node): broker.bootstrap for node, broker in cluster.brokers.items()}
    assert brokers == expected, f"kcat -L should list the five brokers {expected}:\n{listing}"
    assert {node for _, _, replicas in leaders for node in replicas.split(",")} == set(expected), listing

    # A client that knows only broker 4 (not a controller voter) writes and reads it all.
    sent = [(f"key-{n % 17}".encode(), f"value-{n}".encode()) for n in range(600)]
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": cluster.bootstrap([4]), "acks": "all", "enable.idempotence": True}
    )
    errors = []
    for key, value in sent:
        producer.produce(topic, value, key, on_delivery=lambda error, _: error and errors.append(error))
    assert producer.flush(CLIENT_DEADLINE_S) == 0 and errors == [], errors[:5]
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": cluster.bootstrap([4]), "group.id": topic, "enable.auto.commit": False}
    )
    try:
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(partitions)]
        )
        read = []
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while len(read) < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None:
                assert message.error() is None, message.error()
                read.append((message.key(), message.value()))
    finally:
        consumer.close()
    assert sorted(read) == sorted(sent), f"read {len(read)} of {len(sent)} messages"
    by_key = defaultdict(list)
    for key, value in read:
        by_key[key].append(int(value.split(b"-")[1]))
    assert all(values == sorted(values) for values in by_key.values()), "each key's order kept"

    # The controller leader (a voter) dies; a topic is still created through a non-voter, at
    # once: Metadata names the answering broker as the controller (it forwards), never the dead
    # one, so librdkafka does not wait for it.
    controller = wait_until(lambda: cluster.controller_leader(5), "broker 5 to know the controller leader")
    assert controller in (1, 2, 3), f"the controller leader is a voter, not {controller}"
    cluster.kill9(controller)
    named = {cluster.metadata(node=node).controller_id for node in cluster.answering()}
    assert named <= set(cluster.answering()), f"Metadata names a live broker as the controller, not {named}"
    after = topic_name("after-kill")
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap([5])})
    created = admin.create_topics(
        [confluent_kafka.admin.NewTopic(after, 4, replicas_per_partition)],
        operation_timeout=CLIENT_DEADLINE_S,
    )
    created[after].result(timeout=CLIENT_DEADLINE_S)

    def listed_by(node):
        topics = cluster.metadata(after, node=node).topics
        return (after in topics and len(topics[after].partitions) == 4) or None

    for node in cluster.answering():
        wait_until(lambda node=node: listed_by(node), f"broker {node} to list {after}")


def name_hash_shard(topic, partition, shards):
    """The shard a broker alone puts a partition on (engine::shard::owner_shard: FNV-1a of the
    topic name plus the partition number, modulo the shard count)."""
    value = 0xCBF29CE484222325
    for byte in topic.encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return ((value + partition) & 0xFFFFFFFFFFFFFFFF) % shards


def partition_shards(broker, topics):
    """topic -> the shard of broker's replica of its partition 0, from /metrics, once it
    reports every one of `topics`; else None."""
    with urllib.request.urlopen(broker.metrics_url, timeout=METADATA_TIMEOUT_S) as response:
        text = response.read().decode()
    shards = {}
    for topic in topics:
        match = re.search(
            r'^ferrite_partition_shard\{topic="' + re.escape(topic) + r'",partition="0"\} (\d+)$',
            text,
            re.MULTILINE,
        )
        if not match:
            return None
        shards[topic] = int(match.group(1))
    return shards


def test_replicas_spread_over_each_brokers_shards_as_the_metadata_log_places_them(two_shard_cluster):
    """Four one-partition topics whose names all hash to shard 0 (where a broker alone would
    put them) end up two per shard on every broker, as the controller placed them, and are
    written and read through those shards."""
    cluster = two_shard_cluster
    topics = []
    while len(topics) < 4:
        candidate = topic_name("placed")
        if name_hash_shard(candidate, 0, 2) == 0:
            topics.append(candidate)
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap()})
    futures = admin.create_topics(
        [confluent_kafka.admin.NewTopic(topic, 1, REPLICATION_FACTOR) for topic in topics],
        operation_timeout=CLIENT_DEADLINE_S,
    )
    for future in futures.values():
        future.result(timeout=CLIENT_DEADLINE_S)
    for node, broker in cluster.brokers.items():
        shards = wait_until(
            lambda broker=broker: partition_shards(broker, topics),
            f"broker {node} to report the shards of {topics}",
        )
        per_shard = sorted(list(shards.values()).count(shard) for shard in (0, 1))
        assert per_shard == [2, 2], f"broker {node} put the four replicas on shards {shards}"

    producer = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all"})
    for topic in topics:
        producer.produce(topic, key=b"k", value=topic.encode())
    assert producer.flush(CLIENT_DEADLINE_S) == 0, "every message acknowledged"
    for topic in topics:
        read = read_to_high_water_marks(cluster, topic, 1)
        assert [message.value for message in read[0].values()] == [topic.encode()], read


def test_leadership_returns_to_the_preferred_replicas_after_a_broker_comes_back(rebalancing_cluster):
    """The controller spreads preferred leaders (each partition's first replica) one per
    broker; after a leader is killed its partitions fail over to the others, and once it is
    back and in sync they return to it, while an idempotent producer loses nothing."""
    cluster = rebalancing_cluster
    topic = created_topic(cluster, "preferred")
    partitions = cluster.metadata(topic).topics[topic].partitions
    preferred = {index: partition.replicas[0] for index, partition in partitions.items()}
    assert sorted(preferred.values()) == list(cluster.node_ids), f"preferred leaders spread: {preferred}"

    def led_as_preferred():
        return cluster.leaders(topic) == preferred or None

    wait_until(led_as_preferred, f"every partition of {topic} to be led by its preferred replica {preferred}")
    producer = ContinuousProducer(cluster.bootstrap(), topic)
    producer.start()
    try:
        producer.wait_for_progress(300, "before the kill")
        victim = preferred[0]
        cluster.kill9(victim)
        moved = wait_until(
            lambda: (leaders := cluster.leaders(topic))[0] != victim and leaders,
            f"partition 0 to fail over from broker {victim}",
        )
        assert victim not in moved.values(), f"broker {victim} is dead, yet Metadata names it: {moved}"
        producer.wait_for_progress(200, f"while broker {victim} is down")
        cluster.restart(victim)
        cluster.wait_all_listed()
        wait_until(led_as_preferred, f"broker {victim} to lead partition 0 again ({preferred})")
        producer.wait_for_progress(200, "after leadership returned")
    finally:
        producer.stop()
    assert not producer.failed and not producer.fatal_errors, (
        f"the idempotent producer gave up on messages: {producer.outcome()}"
    )
    check_acknowledged(read_to_high_water_marks(cluster, topic), producer)


# How long after a topic's creation every broker's Metadata is watched, and how often each is
# asked (a round: every broker once).
LEADER_WATCH_S = 4.0
LEADER_POLL_S = 0.03
LEADER_WATCH_TOPICS = 4
# How many rounds after the last of a partition's replicas' brokers named its leader every
# other broker may still not name it. A leader tells the other brokers as soon as it is
# elected, as it tells its followers; a broker that heard of it only at the leader's next
# periodic report (every 0.5 s, several rounds) answered LEADER_NOT_AVAILABLE meanwhile, which
# was taken for a leader lapsing in CI. Counted in rounds, not seconds: on a loaded machine
# brokers and this watch slow down alike.
LEADER_SPREAD_ROUNDS_MAX = 2
LEADER_NOT_AVAILABLE = kafka.errors.LeaderNotAvailableError.errno


def watch_leaders(cluster, topic, partitions, watch_s):
    """Asks every broker for `topic`'s Metadata every LEADER_POLL_S for `watch_s`. Returns the
    lapses seen, each as (seconds since the watch began, broker, partition, what it said
    before, what it says now):
    - a broker that named a leader for a partition answers LEADER_NOT_AVAILABLE for it;
    - once a leader named itself (a broker names itself only when its replica leads; a broker
      whose replica knows a term but no leader names another replica as a guess, see
      `ShardCluster::placement`), it no longer does so in that term, or another broker
      names itself: the partition was between leaders;
    and, per partition, how many rounds after the last broker with a replica of it the last
    broker without one named its leader (None if one never did)."""
    from kafka.protocol.metadata.metadata import MetadataRequest

    connections = {node: RawConnection(cluster.brokers[node].bootstrap) for node in cluster.node_ids}
    named = {}  # (broker, partition) -> (leader, epoch) it last named
    established = {}  # partition -> (leader, epoch), as the leader first named itself
    replicas = {}  # partition -> its replicas' brokers
    known = defaultdict(dict)  # partition -> broker -> the round it first named the leader in
    lapses = []
    began = time.monotonic()
    rounds = 0
    try:
        while time.monotonic() - began < watch_s:
            rounds += 1
            for node, connection in connections.items():
                request = MetadataRequest(
                    topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
                    allow_auto_topic_creation=False,
                )
                listed = [t for t in connection.request(request).topics if t.name == topic]
                at_s = round(time.monotonic() - began, 3)
                for partition in listed[0].partitions if listed else []:
                    index = partition.partition_index
                    replicas[index] = set(partition.replica_nodes)
                    seen = (partition.leader_id, partition.leader_epoch)
                    before = named.get((node, index))
                    if partition.leader_id < 0:
                        assert partition.error_code == LEADER_NOT_AVAILABLE, partition
                        if before is not None:
                            lapses.append((at_s, node, index, before, seen))
                        continue
                    named[(node, index)] = seen
                    if index not in established:
                        if partition.leader_id != node:
                            continue
                        established[index] = seen
                    leader = established[index]
                    if seen == leader:
                        known[index].setdefault(node, rounds)
                    elif node == leader[0] or partition.leader_id == node:
                        lapses.append((at_s, node, index, leader, seen))
            time.sleep(LEADER_POLL_S)
    finally:
        for connection in connections.values():
            connection.close()
    assert set(established) == set(range(partitions)), (
        f"{topic}: partitions led within {watch_s} s: {sorted(established)}"
    )

    def spread(index):
        if len(known[index]) < len(cluster.node_ids):
            return None
        by_replicas = [at for node, at in known[index].items() if node in replicas[index]]
        return max(known[index].values()) - max(by_replicas)

    return lapses, {index: spread(index) for index in established}


@pytest.mark.parametrize("brokers", ["cluster", "five_brokers"])
def test_a_new_topics_leaders_are_known_at_once_and_kept(request, brokers):
    """On a fresh cluster nothing fails, so a partition that has a leader keeps it, and every
    broker names it at once: topics of 10 partitions (3 replicas) are created one after
    another, and every broker's Metadata is watched closely for seconds after each creation.
    Once a broker names a leader for a partition it never answers LEADER_NOT_AVAILABLE for it
    again, no second election moves the leadership (a client would see produce errors and an
    election timeout's stall), and brokers without a replica name the leader about when those
    with one do (a client bootstrapped from one waits for nothing)."""
    cluster = request.getfixturevalue(brokers)
    partitions = 10
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap()})
    found = []
    for _ in range(LEADER_WATCH_TOPICS):
        topic = topic_name("leaders")
        created = admin.create_topics(
            [confluent_kafka.admin.NewTopic(topic, partitions, REPLICATION_FACTOR)],
            operation_timeout=CLIENT_DEADLINE_S,
        )
        created[topic].result(timeout=CLIENT_DEADLINE_S)
        lapses, spread = watch_leaders(cluster, topic, partitions, LEADER_WATCH_S)
        print(f"{topic}: rounds between the replicas' brokers and the others naming each leader: {spread}")
        late = {index: s for index, s in spread.items() if s is None or s > LEADER_SPREAD_ROUNDS_MAX}
        if lapses or late:
            found.append((topic, lapses[:10], late))
    assert found == [], (
        "partitions between leaders after they had one (s, broker, partition, before, now), or "
        f"named by a broker without a replica more than {LEADER_SPREAD_ROUNDS_MAX} rounds after the "
        "brokers with one (partition: rounds):\n" + "\n".join(f"{topic}: {lapses}; {late}" for topic, lapses, late in found)
    )
