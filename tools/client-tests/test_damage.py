"""Damage in the middle of a partition's log, as the user of a single broker meets it (issue 15,
item 5): 20 000 acknowledged messages over five 1 MiB segments, the broker stopped, one byte
flipped near the end of the second segment and the clean-shutdown marker removed (as after a
crash), the broker started again.

What the user must see: every message outside the damaged batch is still there and readable;
a fetch of the damaged range is answered CORRUPT_MESSAGE (what Kafka answers a read of a
corrupt batch), which reaches a confluent-kafka application as an error it can act on; the
broker says so on stderr, `/metrics` counts the refused offsets, `ferrite dump-log` shows the
range; the partition still takes produces; and `ferrite repair-log`, the operator's decision
that the range is lost, makes consumers skip it.
"""

import fcntl
import os
import re
import signal
import subprocess
import time
import urllib.request

import confluent_kafka
import confluent_kafka.admin
from kafka.protocol.consumer.fetch import FetchRequest

from conftest import FERRITE_BIN
from raw_protocol import RawConnection
from support import CLIENT_DEADLINE_S, topic_name, wait_until

MESSAGE_COUNT = 20_000
SEGMENT_BYTES = 1 << 20
VALUE_BYTES = 200
# Kafka's error code for a batch that fails its CRC or is otherwise corrupt.
CORRUPT_MESSAGE = 2


def value(index):
    return f"damage-{index:06d}-".encode() + b"v" * VALUE_BYTES


def create_topic(bootstrap, topic, replication_factor=1):
    """A topic of one partition with 1 MiB segments."""
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})
    new_topic = confluent_kafka.admin.NewTopic(
        topic,
        num_partitions=1,
        replication_factor=replication_factor,
        config={"segment.bytes": str(SEGMENT_BYTES)},
    )
    admin.create_topics([new_topic], operation_timeout=CLIENT_DEADLINE_S)[topic].result(
        timeout=CLIENT_DEADLINE_S
    )


def produce(bootstrap, topic, indexes, idempotent=True):
    """Produces the messages numbered `indexes` with acks=all; returns offset -> value of the
    acknowledged ones (all of them, or the test fails)."""
    acked = {}
    failed = []

    def on_delivery(error, message):
        if error is None:
            acked[message.offset()] = message.value()
        else:
            failed.append(error)

    # Batches of the Java client's default size (librdkafka's is 1 MB: one batch a segment).
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 16384,
            "enable.idempotence": idempotent,
        }
    )
    for index in indexes:
        producer.produce(topic, value=value(index), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(CLIENT_DEADLINE_S) == 0, "messages left undelivered"
    assert not failed, f"delivery errors: {failed[:3]}"
    return acked


def consume(bootstrap, topic, start, end):
    """offset -> value of the messages from `start` up to `end`, and the error that stopped the
    read first (None when it got to `end`)."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "ferrite-damage-test",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
        }
    )
    read = {}
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, 0, start)])
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while not read or max(read) < end - 1:
            message = consumer.poll(0.2)
            assert time.monotonic() < deadline, f"reading {topic} from {start}: stuck after {len(read)} message(s)"
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    continue
                return read, message.error()
            read[message.offset()] = message.value()
    finally:
        consumer.close()
    return read, None


def fetch_error_code(bootstrap, topic, offset):
    """The error code a plain Fetch at `offset` is answered with."""
    connection = RawConnection(bootstrap)
    try:
        partition = FetchRequest.FetchTopic.FetchPartition(
            partition=0,
            current_leader_epoch=-1,
            fetch_offset=offset,
            log_start_offset=-1,
            partition_max_bytes=1 << 20,
        )
        request = FetchRequest(
            replica_id=-1,
            max_wait_ms=0,
            min_bytes=0,
            max_bytes=1 << 20,
            isolation_level=0,
            session_id=0,
            session_epoch=-1,
            topics=[FetchRequest.FetchTopic(topic=topic, partitions=[partition])],
            forgotten_topics_data=[],
            rack_id="",
        )
        answer = connection.request(request)
        return answer.responses[0].partitions[0].error_code
    finally:
        connection.close()


def partition_metric(broker, name, topic):
    """The value of the series `name` of the topic's partition 0 in `broker`'s /metrics, or
    None while it is not listed."""
    with urllib.request.urlopen(broker.metrics_url, timeout=CLIENT_DEADLINE_S) as response:
        text = response.read().decode()
    match = re.search(
        rf'^{name}{{topic="{re.escape(topic)}",partition="0"}} (\d+)$', text, re.MULTILINE
    )
    return int(match.group(1)) if match else None


def damaged_offsets_metric(broker, topic):
    return partition_metric(broker, "ferrite_partition_damaged_offsets", topic)


def wait_for_line(broker, pattern, what):
    """Waits until the broker's current run wrote a stderr line matching `pattern`."""
    return wait_until(lambda: re.search(pattern, broker.stderr_paths[-1].read_text()), what)


def flip_near_the_end(segment):
    """Flips one byte 100 bytes before the end of a segment file: inside its last batch's
    records, where a bad sector or a flipped bit would go unnoticed until read."""
    data = bytearray(segment.read_bytes())
    data[len(data) - 100] ^= 0x5A
    segment.write_bytes(bytes(data))


def ferrite(*arguments):
    return subprocess.run(
        [FERRITE_BIN, *arguments], capture_output=True, text=True, timeout=CLIENT_DEADLINE_S * 4, check=False
    )


def test_a_flipped_byte_in_a_sealed_segment_loses_only_its_batch_and_says_so(broker):
    topic = topic_name("damage")
    create_topic(broker.bootstrap, topic)
    acked = produce(broker.bootstrap, topic, range(MESSAGE_COUNT))
    assert sorted(acked) == list(range(MESSAGE_COUNT)), "every message acknowledged once, in order"
    assert broker.stop() == 0

    partition_dir = broker.data_dir / f"{topic}-0"
    segments = sorted(partition_dir.glob("*.log"))
    assert len(segments) == 5, f"the scenario's five segments: {[s.name for s in segments]}"
    flip_near_the_end(segments[1])
    (partition_dir / "clean-shutdown").unlink()

    # dump-log, on the files as they are: the damaged range, and every batch after it.
    dumped = ferrite("dump-log", str(partition_dir))
    assert dumped.returncode == 1, f"dump-log should report the damage:\n{dumped.stdout[-2000:]}"
    found = re.search(r"^damaged bytes (\d+)\.\.(\d+) \(offsets (\d+)\.\.(\d+)\): (.+)$", dumped.stdout, re.MULTILINE)
    assert found, f"dump-log names the damaged range:\n{dumped.stdout[-2000:]}"
    start, end = int(found.group(3)), int(found.group(4))
    second_base, third_base = (int(segment.stem) for segment in segments[1:3])
    assert second_base <= start < end <= third_base, f"the range {start}..{end} is in the second segment"
    assert f"offsets {end}..=" in dumped.stdout or str(end) in dumped.stdout
    # Read as operators do, `dump-log DIR | head`: the reader goes away after one line, with
    # far more than the pipe's buffer (shrunk to a page) still to come. dump-log ends by
    # SIGPIPE like other Unix tools, without a panic message.
    reader, writer = os.pipe()
    fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, 4096)
    assert len(dumped.stdout) > 4 * 4096, "enough output to outgrow the pipe's buffer"
    head = subprocess.Popen([FERRITE_BIN, "dump-log", str(partition_dir)], stdout=writer, stderr=subprocess.PIPE)
    os.close(writer)
    with os.fdopen(reader, "rb") as lines:
        assert lines.readline().startswith(b"offset ")
    _, stderr = head.communicate(timeout=CLIENT_DEADLINE_S)
    assert head.returncode == -signal.SIGPIPE, f"dump-log | head: exit {head.returncode}, {stderr.decode()!r}"
    assert b"panicked" not in stderr, stderr.decode()

    broker.start()
    # The broker opens its logs as it starts serving.
    wait_for_line(
        broker,
        rf"partition {re.escape(topic)}-0: damaged data found when the log was opened: "
        rf"offsets {start}\.\.{end} \(segment 0*{second_base}\.log, bytes \d+\.\.\d+\): .+",
        "the broker to say which partition, segment and offsets are damaged",
    )
    assert (
        wait_until(lambda: damaged_offsets_metric(broker, topic), "the damaged offsets in /metrics")
        == end - start
    )

    # The damaged range is refused as Kafka refuses a corrupt batch; nothing else is.
    assert fetch_error_code(broker.bootstrap, topic, start) == CORRUPT_MESSAGE
    before, error = consume(broker.bootstrap, topic, 0, start + 1)
    assert before == {offset: acked[offset] for offset in range(start)}, "every message before the damage"
    assert error is not None and error.code() == CORRUPT_MESSAGE, f"then CORRUPT_MESSAGE, not {error}"
    after, error = consume(broker.bootstrap, topic, end, MESSAGE_COUNT)
    assert error is None, f"nothing after the damaged range is refused: {error}"
    assert after == {offset: acked[offset] for offset in range(end, MESSAGE_COUNT)}, "every message after it"

    # The partition still takes produces, at its old end.
    more = produce(broker.bootstrap, topic, range(MESSAGE_COUNT, MESSAGE_COUNT + 5))
    assert sorted(more) == list(range(MESSAGE_COUNT, MESSAGE_COUNT + 5))

    # The operator decides the range is lost; consumers then skip it.
    assert broker.stop() == 0
    repaired = ferrite("repair-log", str(partition_dir))
    assert repaired.returncode == 0, f"repair-log failed:\n{repaired.stdout}\n{repaired.stderr}"
    assert f"dropped offsets {start}..{end}" in repaired.stdout, repaired.stdout
    broker.start()
    everything, error = consume(broker.bootstrap, topic, 0, MESSAGE_COUNT + 5)
    assert error is None, f"nothing is refused after the repair: {error}"
    kept = {**acked, **more}
    assert everything == {offset: v for offset, v in kept.items() if not start <= offset < end}
    assert wait_until(lambda: damaged_offsets_metric(broker, topic) == 0, "no damaged offsets in /metrics")
