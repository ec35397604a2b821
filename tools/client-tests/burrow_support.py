"""Burrow (LinkedIn's consumer-lag monitor, Debian's `burrow` 1.2.1) watching the brokers under
test, and the ZooKeeper it keeps its own state in, each a real process on loopback.

Burrow does not ask the broker for a group's lag: its cluster module asks each partition's
leader for the end offset, its consumer module reads `__consumer_offsets` from the start and
decodes the records with Kafka's own schemas, and its HTTP API reports end offset − committed
offset per partition. So its answer is right only if the broker's `__consumer_offsets` records
are Kafka's, byte for byte, and the broker serves the request versions Burrow's Sarama sends.

The client profile's `kafka-version` is, as Burrow's configuration asks, the cluster's Kafka
version; Burrow 1.2.1 refuses to start with any it does not list, the newest being "2.1.0",
which a user of a newer Kafka (and of Ferrite) therefore sets. With it, the Sarama Debian builds
Burrow with (1.22.1) sends, without asking ApiVersions first:
- Metadata v5 (both modules, at start and every `topic-refresh`), all topics, and once naming
  `__consumer_offsets` with auto-creation allowed (Sarama's way of looking up a topic the full
  listing lacked: on a new cluster no group has made it create the topic yet);
- ListOffsets v0, `max_num_offsets` 1, latest offset: the cluster module builds this request
  itself and never sets a version, whatever `kafka-version` says (every `offset-refresh`);
- ListOffsets v1, earliest and latest: the consumer module's starting offset in each partition of
  `__consumer_offsets`;
- Fetch v4 (read uncommitted): the consumer module reading `__consumer_offsets`.
Burrow 1.2.1 decodes offset-commit values of versions 0, 1 and 3 (what Kafka 3.x writes) and
group-metadata values of versions 0 and 1 only; it logs any other group-metadata version as
"failed to decode" and carries on, which costs nothing here: lag needs only the offsets.

Both processes log to files in the test's directory, attached to a failed test's report
(conftest.py: `request.node.ferrite_clients`); ZooKeeper's data directory is removed when it
stops.
"""

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from support import CLIENT_DEADLINE_S, wait_until

BURROW_BIN = "/usr/bin/Burrow"
# The server class of libzookeeper-java's jar, whose manifest names the jars it needs; slf4j-simple
# (a dependency of the same package) makes it log to stderr instead of nowhere.
ZOOKEEPER_CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"
ZOOKEEPER_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"
# A JVM on a busy 2-core machine starts in a few seconds; this much is a failure.
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 15.0
# How often a start is retried on new ports when one was taken between choosing and binding it.
BIND_ATTEMPTS = 3
# The name Burrow's configuration and HTTP API know the brokers under test by.
CLUSTER = "ferrite"
# Burrow's intervals, in whole seconds (its unit), as short as it takes them: how often the
# cluster module asks for end offsets and for metadata (new topics), and how long an evaluated
# group status is cached by the HTTP API.
OFFSET_REFRESH_S = 1
TOPIC_REFRESH_S = 1
EVALUATION_CACHE_S = 1
# Lines of each log shown in a failed test's report.
LOG_TAIL_LINES = 80
# How often a test asks Burrow's API while waiting: Burrow itself updates once a second.
POLL_INTERVAL_S = 0.2


def free_loopback_port():
    """A port the kernel had free a moment ago on 127.0.0.1 (bound and released): for servers
    that cannot be told to pick one and say which (ZooKeeper)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log_tail(path, title, skip=lambda line: False):
    """The last lines of the log at `path` (without those `skip` says are noise), under a
    header naming it."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if not skip(line)]
    except OSError as error:
        lines = [f"(cannot read {path}: {error})"]
    shown = lines[-LOG_TAIL_LINES:]
    header = f"--- {title}, {path.name}"
    if len(shown) < len(lines):
        header += f" (last {len(shown)} of {len(lines)} lines)"
    return "\n".join([header, *shown] if shown else [header, "(empty)"])


def stop_process(process):
    """SIGTERM, then SIGKILL if it does not exit within STOP_DEADLINE_S; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_DEADLINE_S)
    return process.returncode


class ZooKeeper:
    """A standalone ZooKeeper server on 127.0.0.1 with its data under `work_dir`."""

    name = "zookeeper"

    def __init__(self, work_dir):
        self.work_dir = Path(work_dir)
        self.data_dir = self.work_dir / "data"
        self.log_path = self.work_dir / "zookeeper.log"
        self.process = None
        self.address = None  # "127.0.0.1:PORT" once it answers

    def start(self):
        """Starts the server and returns once it answers the `srvr` four-letter word."""
        for attempt in range(1, BIND_ATTEMPTS + 1):
            port = free_loopback_port()
            config_path = self.work_dir / "zoo.cfg"
            config_path.write_text(
                "\n".join(
                    [
                        f"dataDir={self.data_dir}",
                        f"clientPort={port}",
                        "clientPortAddress=127.0.0.1",
                        # Sessions may be as short as two ticks; Burrow asks for 6 s.
                        "tickTime=500",
                        # Its HTTP admin server would take port 8080 on every interface.
                        "admin.enableServer=false",
                        "",
                    ]
                )
            )
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen(
                    [
                        "java",
                        "-Xmx128m",
                        "-XX:+UseSerialGC",
                        # Its start-up alone is 80 lines at INFO.
                        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                        *("-cp", ZOOKEEPER_CLASSPATH, ZOOKEEPER_MAIN, str(config_path)),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self.work_dir,
                )
            if self._answers(port):
                self.address = f"127.0.0.1:{port}"
                return
            taken = "Address already in use" in self.log_path.read_text(errors="replace")
            stop_process(self.process)
            if not taken or attempt == BIND_ATTEMPTS:
                raise AssertionError(f"ZooKeeper did not answer on 127.0.0.1:{port} (see its log)")

    def _answers(self, port):
        """Whether the server answers `srvr` as a standalone server before it exits or the
        start deadline passes."""
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0) as connection:
                    connection.sendall(b"srvr")
                    answer = b""
                    while chunk := connection.recv(4096):
                        answer += chunk
                if b"Mode: standalone" in answer:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self):
        """Stops the server and removes its data (its log stays with the test's directory)."""
        if self.process is not None:
            stop_process(self.process)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def stderr_tail(self):
        return log_tail(self.log_path, "ZooKeeper log")


class Burrow:
    """One Burrow process watching the Kafka brokers at `kafka_servers` ("host:port" each),
    configured by a burrow.toml in `work_dir`; its HTTP API on a port it picks itself."""

    name = "burrow"

    def __init__(self, work_dir, zookeeper_address, kafka_servers):
        self.work_dir = Path(work_dir)
        self.log_path = self.work_dir / "burrow.log"
        self.stderr_path = self.work_dir / "burrow.stderr"
        self.process = None
        self.api_url = None  # "http://127.0.0.1:PORT" once it serves
        servers = json.dumps(list(kafka_servers))
        # TOML strings are JSON strings for these values (ASCII paths and addresses).
        (self.work_dir / "burrow.toml").write_text(
            f"""\
[general]
pidfile = {json.dumps(str(self.work_dir / "burrow.pid"))}

# No file: JSON lines on stdout. Debug level logs every offset commit Burrow decodes.
[logging]
level = "debug"

[zookeeper]
servers = [{json.dumps(zookeeper_address)}]
timeout = 6
root-path = "/burrow"

[client-profile.test]
client-id = "burrow-client-tests"
kafka-version = "2.1.0"

[cluster.{CLUSTER}]
class-name = "kafka"
servers = {servers}
client-profile = "test"
offset-refresh = {OFFSET_REFRESH_S}
topic-refresh = {TOPIC_REFRESH_S}

[consumer.{CLUSTER}]
class-name = "kafka"
cluster = "{CLUSTER}"
servers = {servers}
client-profile = "test"
offsets-topic = "__consumer_offsets"
start-latest = false

# Port 0: the listener says in the log which port it got.
[httpserver.default]
address = "127.0.0.1:0"

[storage.default]
class-name = "inmemory"
workers = 2
intervals = 10
min-distance = 1

[evaluator.default]
class-name = "caching"
expire-cache = {EVALUATION_CACHE_S}
"""
        )

    def start(self):
        """Starts Burrow; returns once its HTTP API answers."""
        with open(self.log_path, "wb") as log_file, open(self.stderr_path, "wb") as stderr_file:
            self.process = subprocess.Popen(
                [BURROW_BIN, "-config-dir", str(self.work_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=stderr_file,
                cwd=self.work_dir,
            )
        listener = wait_until(
            self._listener, "Burrow to start its HTTP listener", deadline_s=START_DEADLINE_S
        )
        self.api_url = f"http://{listener}"
        wait_until(
            lambda: self._get("/burrow/admin", parse=False) == (200, "GOOD"),
            "Burrow's HTTP API to answer",
            deadline_s=START_DEADLINE_S,
        )

    def _listener(self):
        """The address in Burrow's "started listener" log line, if it wrote it; fails if Burrow
        exited."""
        assert self.process.poll() is None, f"Burrow exited with {self.process.returncode} while starting"
        for line in self.log_path.read_text(errors="replace").splitlines():
            if '"started listener"' in line:
                return json.loads(line)["listener"]
        return None

    def _get(self, path, parse=True):
        """(HTTP status, body: parsed JSON unless `parse` is False) of a GET to the API. Fails
        if Burrow exited (it does when a module cannot start, e.g. without the offsets topic's
        metadata)."""
        assert self.process.poll() is None, f"Burrow exited with {self.process.returncode}"
        try:
            with urllib.request.urlopen(self.api_url + path, timeout=CLIENT_DEADLINE_S) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read().decode()
        return status, json.loads(body) if parse else body

    def _path(self, *parts):
        return "/v3/kafka/" + "/".join(urllib.parse.quote(part, safe="") for part in (CLUSTER, *parts))

    def topic_offsets(self, topic):
        """partition -> end offset, as Burrow last learnt them, or None while it does not know
        `topic`."""
        status, body = self._get(self._path("topic", topic))
        if status == 404:
            return None
        assert status == 200 and not body["error"], f"Burrow's topic detail: {status} {body}"
        return dict(enumerate(body["offsets"]))

    def groups(self):
        """The consumer groups Burrow knows in the cluster."""
        status, body = self._get(self._path("consumer"))
        assert status == 200 and not body["error"], f"Burrow's consumer list: {status} {body}"
        return set(body["consumers"])

    def lag(self, group, topic):
        """The group's lag on `topic` as Burrow evaluates it: partition -> (last committed
        offset or None, current lag), or None while Burrow knows no such group (404)."""
        status, body = self._get(self._path("consumer", group, "lag"))
        if status == 404:
            return None
        assert status == 200 and not body["error"], f"Burrow's consumer lag: {status} {body}"
        return {
            partition["partition"]: ((partition["end"] or {}).get("offset"), partition["current_lag"])
            for partition in body["status"]["partitions"]
            if partition["topic"] == topic
        }

    def stop(self):
        if self.process is not None:
            stop_process(self.process)

    def stderr_tail(self):
        return "\n".join(
            [
                log_tail(self.log_path, "Burrow log", skip=_answer_to_a_test_query),
                log_tail(self.stderr_path, "Burrow stderr"),
            ]
        )


def _answer_to_a_test_query(line):
    """Whether a line of Burrow's log is its storage module answering a request of the HTTP
    API (the test's polling) or of the evaluator: lines that would push everything else out of
    a failure's tail."""
    return '"request":"StorageFetch' in line


@pytest.fixture
def zookeeper(request, tmp_path):
    """A running ZooKeeper on loopback; stopped, and its data removed, at the end."""
    work_dir = tmp_path / "zookeeper"
    work_dir.mkdir()
    instance = ZooKeeper(work_dir)
    _report_on_failure(request, instance)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def start_burrow(request, tmp_path, zookeeper):
    """start_burrow(kafka_servers): a running Burrow watching those brokers, keeping its state
    in the `zookeeper` fixture's server; stopped at the end."""
    started = []

    def start(kafka_servers):
        work_dir = tmp_path / f"burrow-{len(started) + 1}"
        work_dir.mkdir()
        instance = Burrow(work_dir, zookeeper.address, kafka_servers)
        started.append(instance)
        _report_on_failure(request, instance)
        instance.start()
        return instance

    try:
        yield start
    finally:
        for instance in started:
            instance.stop()


def _report_on_failure(request, process):
    """Has conftest.py attach `process`'s logs to the report of a failed test."""
    if not hasattr(request.node, "ferrite_clients"):
        request.node.ferrite_clients = []
    request.node.ferrite_clients.append(process)
