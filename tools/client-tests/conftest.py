"""The broker under test: a real `ferrite serve` process per test, as a user starts it.

Each test gets its own broker on a free loopback port with its own data directory, so a test
sees only its own topics and a broker that a test crashed cannot disturb the next one. When a
test fails, the broker's stderr (and that of any client process the test started) is attached
to the report: what the client saw is half of a failure, what the broker said is the other half
(failure messages therefore leave it out).

The suite's invariant: nothing in these tests knows Ferrite's internals besides `/metrics`,
`ferrite dump-log` and the disk-fault file of the `fault-injection` build
(`ferrite-fault-injection`, which `client-tests.sh` builds beside `ferrite`); the tests expect
only what Kafka documents for these clients, and use kcat, kafka-python and confluent-kafka
through their public APIs only. A broker alone runs the debug build, a cluster's brokers the
release build (see `FERRITE_BIN` below). Python packages are pinned in `requirements.txt`.
"""

import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest


# Set by tools/client-tests.sh to the binaries it just built: the debug build (a broker alone
# and the admin commands: debug assertions and overflow checks on) and the release build (the
# brokers of a cluster, whose fault tests must see the broker as users run it: optimised, and
# `panic = "abort"`, so a panic on any shard ends the whole process).
FERRITE_BIN = os.environ.get("FERRITE_BIN", "")
FERRITE_RELEASE_BIN = os.environ.get("FERRITE_RELEASE_BIN", "")
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0
LISTENING_PREFIX = "ferrite: listening on "
STDERR_TAIL_LINES = 80


class Broker:
    """One `ferrite serve` on one data directory; it can be killed and restarted on the same
    data directory and port, as an operator restarts a crashed broker."""

    def __init__(self, binary, data_dir, log_dir, cores=2, extra_args=(), listeners=()):
        self.binary = binary
        # Security protocols of listeners on loopback (`--listeners`), the first the bootstrap;
        # none: one PLAINTEXT listener (`--listen`).
        self.listeners = list(listeners)
        self.addresses = {}  # listener name -> "127.0.0.1:PORT" once the first start printed it
        self.extra_args = list(extra_args)  # further `ferrite serve` flags, e.g. intervals
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.cores = cores
        self.process = None
        self.bootstrap = None  # "127.0.0.1:PORT" once the first start printed it
        self.metrics_url = None  # "http://127.0.0.1:PORT/metrics" of the running broker
        self.starts = 0
        self.stderr_paths = []

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def start(self):
        """Starts the broker (on free ports the first time, on the same ports afterwards) and
        returns once it says it accepts connections."""
        assert not self.running, "the broker is already running"
        if self.listeners:
            listen_flags = [
                "--listeners",
                ",".join(f"{name}://{self.addresses.get(name, '127.0.0.1:0')}" for name in self.listeners),
            ]
        elif {"--listeners", "--config"} & set(self.extra_args):
            # Given its listeners in its flags or a config file (whose listeners `--listen`
            # would override): no `--listen` too.
            listen_flags = []
        else:
            listen_flags = ["--listen", self.bootstrap or "127.0.0.1:0"]
        # Several brokers may run at once (other tests, other checkouts): a free port.
        metrics_listen = self.metrics_url.split("/")[2] if self.metrics_url else "127.0.0.1:0"
        self.starts += 1
        stderr_path = self.log_dir / f"ferrite-{self.starts}.stderr"
        self.stderr_paths.append(stderr_path)
        with open(stderr_path, "wb") as stderr_file:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "serve",
                    *listen_flags,
                    "--data-dir",
                    str(self.data_dir),
                    "--cores",
                    str(self.cores),
                    "--metrics-listen",
                    metrics_listen,
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                text=True,
            )
        lines = queue.Queue()
        threading.Thread(target=_forward_lines, args=(self.process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AssertionError(
                    f"ferrite serve printed no '{LISTENING_PREFIX}ADDR' line within {START_DEADLINE_S:.0f} s"
                )
            try:
                line = lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"ferrite serve exited with {self.process.returncode} before listening"
                    )
                continue
            if line is None:
                continue  # stdout closed: the poll above reports the exit
            if line.startswith(LISTENING_PREFIX):
                address = line[len(LISTENING_PREFIX) :].split(" ", 1)[0]
                if self.bootstrap is not None:
                    assert address == self.bootstrap, f"restarted on {address}, not on {self.bootstrap}"
                assert not address.endswith(":0"), f"the printed address has no port: {line}"
                self.bootstrap = address
                self.addresses = dict(
                    (name, found) for found, name in re.findall(r"(\S+) \(Kafka (\w+),", line)
                )
                self.metrics_url = "http://" + line.split("metrics on http://", 1)[1].split(";")[0].strip()
                return

    def kill(self):
        """SIGKILL: the broker gets no chance to flush or close anything. Returns once the
        process is reaped; its listening sockets may linger a moment longer (the kernel tears
        down a killed process's io_uring instances afterwards), which a restart at once must
        cope with, as under a supervisor."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=STOP_DEADLINE_S)

    def stop(self):
        """SIGTERM, as an operator stops the broker; returns the exit code."""
        assert self.running, "the broker is not running"
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ferrite serve did not exit within {STOP_DEADLINE_S:.0f} s of SIGTERM")

    def stderr_tail(self):
        """The last lines each run of the broker wrote to stderr."""
        parts = []
        for path in self.stderr_paths:
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError as error:
                lines = [f"(cannot read {path}: {error})"]
            shown = lines[-STDERR_TAIL_LINES:]
            skipped = len(lines) - len(shown)
            header = f"--- ferrite stderr, {path.name}"
            if skipped:
                header += f" (last {len(shown)} of {len(lines)} lines)"
            parts.append("\n".join([header, *shown] if shown else [header, "(empty)"]))
        return "\n".join(parts)


def _forward_lines(stream, lines):
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "serve_args(*flags): further `ferrite serve` flags for the test's broker"
    )
    config.addinivalue_line(
        "markers",
        "listeners(*protocols): the test's broker listens on loopback with these security "
        "protocols (`--listeners`), the first its bootstrap",
    )


@pytest.fixture
def broker(request, tmp_path):
    """A running broker with 2 shards; stopped with SIGTERM at the end, which must exit 0.
    A test marked `@pytest.mark.serve_args("--flag", "value", ...)` starts it with those flags."""
    assert FERRITE_BIN, "FERRITE_BIN is not set: run the tests with tools/client-tests.sh"
    marker = request.node.get_closest_marker("serve_args")
    extra_args = marker.args if marker is not None else ()
    listeners = request.node.get_closest_marker("listeners")
    instance = Broker(
        FERRITE_BIN,
        tmp_path / "data",
        tmp_path,
        extra_args=extra_args,
        listeners=listeners.args if listeners is not None else (),
    )
    request.node.ferrite_broker = instance
    instance.start()
    yield instance
    if instance.running:
        exit_code = instance.stop()
        assert exit_code == 0, f"ferrite serve exited with {exit_code} after SIGTERM"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    instance = getattr(item, "ferrite_broker", None)
    if instance is not None:
        report.sections.append((f"ferrite stderr ({report.when})", instance.stderr_tail()))
    # A cluster's brokers (node id -> Broker), when the test started several.
    for node, instance in sorted(getattr(item, "ferrite_brokers", {}).items()):
        report.sections.append((f"broker {node} stderr ({report.when})", instance.stderr_tail()))
    # Client processes a test started (each with a name and a stderr_tail()), e.g. group members.
    for client in getattr(item, "ferrite_clients", []):
        report.sections.append((f"{client.name} stderr ({report.when})", client.stderr_tail()))
