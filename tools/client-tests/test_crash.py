"""Crash safety as a user sees it: what an acks=all producer was told is stored survives the
broker being killed with SIGKILL mid-stream, exactly once and in order, once it is restarted on
the same data directory — while the producer (idempotent, so its retries of batches that were
stored but not acknowledged must not duplicate them) keeps going across the crash; and a broker
restarted at once after SIGKILL, as a supervisor does, comes up on the same ports every time."""

import socket
import subprocess
import time
import urllib.request

import confluent_kafka

from clients import Confluent, created_topic
from conftest import FERRITE_BIN
from support import CLIENT_DEADLINE_S, check_log, messages

PARTITIONS = 3
MESSAGE_COUNT = 6000
KILL_AFTER_ACKED = 1500
# Produced while the broker is down: they wait in the producer and go out after the restart.
PRODUCED_WHILE_DOWN = 500
CHUNK = 50
# Unacknowledged messages allowed before the loop waits: keeps requests in flight without
# queueing the whole run before the broker has answered anything.
OUTSTANDING_MAX = 400


def test_acknowledged_messages_survive_kill_9(broker):
    client = Confluent(broker.bootstrap)
    topic = created_topic(client, "crash", PARTITIONS)
    acked = {}  # value -> (partition, offset)
    failed = {}  # value -> error
    fatal_errors = []

    def on_delivery(error, message):
        if error is None:
            acked[message.value()] = (message.partition(), message.offset())
        else:
            failed[message.value()] = error

    def on_error(error):
        if error.fatal():
            fatal_errors.append(error)

    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": int(CLIENT_DEADLINE_S * 2000),
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 250,
            "error_cb": on_error,
        }
    )
    sent = messages(MESSAGE_COUNT, key_count=30, label="crash")

    def outcome():
        return (
            f"{len(acked)} acknowledged, {len(failed)} failed (first: {list(failed.values())[:3]}), "
            f"fatal producer errors: {fatal_errors}"
        )

    def wait_for_acknowledgements(produced):
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while produced - len(acked) - len(failed) > OUTSTANDING_MAX:
            assert time.monotonic() < deadline, f"the producer stalled after {produced} sent: {outcome()}"
            producer.poll(0.05)

    killed_at = None
    for first in range(0, MESSAGE_COUNT, CHUNK):
        for message in sent[first : first + CHUNK]:
            producer.produce(topic, key=message.key, value=message.value, on_delivery=on_delivery)
        producer.poll(0)
        produced = first + CHUNK
        if killed_at is None:
            if len(acked) >= KILL_AFTER_ACKED:
                broker.kill()
                killed_at = produced
            else:
                wait_for_acknowledgements(produced)
        elif broker.running:
            wait_for_acknowledgements(produced)
        elif produced >= killed_at + PRODUCED_WHILE_DOWN:
            broker.start()
    assert killed_at is not None and broker.starts == 2, (
        f"the broker was never killed and restarted mid-stream ({outcome()})"
    )

    left = producer.flush(CLIENT_DEADLINE_S * 2)
    assert left == 0, f"{left} message(s) neither acknowledged nor failed after the restart: {outcome()}"

    consumed = client.consume(topic)
    check_log(consumed, sent, acked=acked, exact=False)
    assert not failed and not fatal_errors, (
        f"the broker came back, yet the idempotent producer gave up on messages: {outcome()}"
    )


IMMEDIATE_RESTARTS = 5
PER_RESTART = 200


def test_restarted_at_once_after_kill_9_on_the_same_ports(broker):
    """A supervisor (systemd `Restart=always`, a script) starts a killed broker again at once,
    on the same Kafka and metrics ports, while the dead one's listening sockets may still
    linger: it must come up every time, with everything acknowledged before each kill."""
    client = Confluent(broker.bootstrap)
    topic = created_topic(client, "restart", PARTITIONS)
    sent = messages(IMMEDIATE_RESTARTS * PER_RESTART, key_count=10, label="restart")
    acked = {}
    for restart in range(IMMEDIATE_RESTARTS):
        acked.update(
            client.produce(topic, sent[restart * PER_RESTART : (restart + 1) * PER_RESTART], acks="all")
        )
        # A client connection open at the moment of the kill, besides the admin client's.
        host, port = broker.bootstrap.rsplit(":", 1)
        live = socket.create_connection((host, int(port)), timeout=CLIENT_DEADLINE_S)
        broker.kill()
        broker.start()
        live.close()
    assert broker.starts == IMMEDIATE_RESTARTS + 1
    with urllib.request.urlopen(broker.metrics_url, timeout=CLIENT_DEADLINE_S) as response:
        assert response.status == 200, "metrics are served on the same port after the restarts"
    check_log(client.consume(topic), sent, acked=acked)


def test_a_second_process_on_a_running_broker_s_data_directory_is_refused(broker):
    """A second `ferrite serve` on the same data directory (another port, an operator's slip or
    a supervisor starting a new process before the old one has gone) would write the same
    files: it is refused at once, and so is `ferrite repair-log` on one of the running broker's
    partitions; the running broker serves on as before."""
    client = Confluent(broker.bootstrap)
    topic = created_topic(client, "locked", PARTITIONS)
    sent = messages(100, key_count=10, label="locked")
    acked = client.produce(topic, sent, acks="all")
    second = subprocess.run(
        [FERRITE_BIN, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", str(broker.data_dir)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S * 2,
    )
    assert second.returncode == 2, f"a second broker on the directory: exit {second.returncode}\n{second.stderr}"
    assert "is in use by another process" in second.stderr, second.stderr
    repair = subprocess.run(
        [FERRITE_BIN, "repair-log", str(broker.data_dir / f"{topic}-0")],
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S * 2,
    )
    assert repair.returncode == 1 and "stop the broker first" in repair.stderr, repair.stderr
    check_log(client.consume(topic), sent, acked=acked)
