"""Compacted topics and the log start as Kafka's clients rely on them.

A compacted topic is a table: kafka-python writes many updates and some deletes (tombstones),
the broker's cleaner compacts it by itself, and a new consumer reading from the start rebuilds
exactly the table's final state, tombstones included while `delete.retention.ms` keeps them and
gone once it has passed. And when the front of a log is deleted, a consumer positioned below
the new start gets OFFSET_OUT_OF_RANGE and resets as its `auto.offset.reset` says.
"""

import re
import urllib.request

import kafka
import kafka.admin
import pytest
from kafka.structs import TopicPartition

from clients import KafkaPython
from support import CLIENT_DEADLINE_S, topic_name, wait_until

KEYS = 1000
UPDATES = 100_000
# Every tenth key is deleted.
DELETED_KEYS = range(0, KEYS, 10)
SEGMENT_BYTES = 1 << 20
# Values of about 100 bytes: the updates fill a dozen segments.
PADDING = b"x" * 90


def produce(bootstrap, topic, records):
    """Sends (key, value) pairs in order (value None: a tombstone) and waits until every one
    is acknowledged."""
    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=64 * 1024,
        request_timeout_ms=int(CLIENT_DEADLINE_S * 1000),
    )
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        producer.flush(timeout=CLIENT_DEADLINE_S)
        failed = [future.exception for future in futures if future.failed()]
        assert not failed, f"{len(failed)} send error(s), the first: {failed[:3]}"
    finally:
        producer.close(timeout=CLIENT_DEADLINE_S)


def updates(count, first_round, keys):
    """`count` updates cycling over `keys`, each value naming its round."""
    keys = list(keys)
    return [
        (f"key-{keys[index % len(keys)]}".encode(), f"v{first_round + index // len(keys)}-".encode() + PADDING)
        for index in range(count)
    ]


def apply(table, records):
    """The table after `records`: a tombstone removes its key."""
    for key, value in records:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


def partition_size_bytes(broker, topic):
    with urllib.request.urlopen(broker.metrics_url, timeout=CLIENT_DEADLINE_S) as response:
        text = response.read().decode()
    pattern = re.compile(r'^ferrite_partition_size_bytes\{topic="' + re.escape(topic) + r'",partition="0"\} (\d+)$')
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            return int(match.group(1))
    return None


@pytest.mark.serve_args("--log-cleaner-interval-ms", "100")
def test_a_compacted_topic_rebuilds_its_final_state_from_the_start(broker):
    client = KafkaPython(broker.bootstrap)
    try:
        topic = topic_name("table")
        client.admin.create_topics(
            [
                kafka.admin.NewTopic(
                    topic,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={
                        "cleanup.policy": "compact",
                        "segment.bytes": str(SEGMENT_BYTES),
                        "min.cleanable.dirty.ratio": "0.01",
                        # Tombstones stay (for trailing consumers) in the first part.
                        "delete.retention.ms": "3600000",
                    },
                )
            ]
        )
        live_keys = [key for key in range(KEYS) if key not in DELETED_KEYS]
        written = (
            updates(UPDATES, 0, range(KEYS))
            + [(f"key-{key}".encode(), None) for key in DELETED_KEYS]
            # More updates of the live keys, so that the tombstones' segment is sealed too.
            + updates(15_000, 1_000, live_keys)
        )
        produce(broker.bootstrap, topic, written)
        expected = apply({}, written)
        written_bytes = len(written) * (len(PADDING) + 20)

        def shrunk():
            size = partition_size_bytes(broker, topic)
            return size is not None and size < written_bytes / 4 and size

        size = wait_until(shrunk, f"the cleaner to shrink {topic} well below the {written_bytes} bytes written", 40)
        consumed = client.consume(topic)
        assert apply({}, ((message.key, message.value) for message in consumed)) == expected
        tombstones = {message.key for message in consumed if message.value is None}
        assert tombstones == {f"key-{key}".encode() for key in DELETED_KEYS}, (
            "tombstones younger than delete.retention.ms are kept for trailing consumers"
        )
        assert len(consumed) < len(written) / 4, f"{len(consumed)} records left, {size} bytes"

        # Once delete.retention.ms has passed, the next cleaning drops the tombstones.
        assert client.alter_topic_configs(topic, {"delete.retention.ms": "0"}) == (0, None)
        more = updates(15_000, 2_000, live_keys)
        produce(broker.bootstrap, topic, more)
        apply(expected, more)

        def without_tombstones():
            consumed = client.consume(topic)
            return not any(message.value is None for message in consumed) and consumed

        consumed = wait_until(without_tombstones, "the tombstones to be cleaned away", deadline_s=40)
        assert apply({}, ((message.key, message.value) for message in consumed)) == expected
        assert not any(f"key-{key}".encode() in {m.key for m in consumed} for key in DELETED_KEYS)
    finally:
        client.close()


@pytest.mark.parametrize("reset", ["earliest", "latest"])
def test_a_consumer_below_the_log_start_resets_as_auto_offset_reset_says(broker, reset):
    client = KafkaPython(broker.bootstrap)
    try:
        topic = topic_name(f"front-{reset}")
        client.admin.create_topics([kafka.admin.NewTopic(topic, num_partitions=1, replication_factor=1)])
        produce(broker.bootstrap, topic, [(b"k", f"first-{index}".encode()) for index in range(100)])
        partition = TopicPartition(topic, 0)
        client.admin.delete_records({partition: 60})
        consumer = kafka.KafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset=reset,
            fetch_max_wait_ms=100,
            request_timeout_ms=int(CLIENT_DEADLINE_S * 1000),
        )
        try:
            consumer.assign([partition])
            assert consumer.beginning_offsets([partition])[partition] == 60
            consumer.seek(partition, 10)  # below the log start: OFFSET_OUT_OF_RANGE
            if reset == "earliest":
                received = wait_until(
                    lambda: consumer.poll(timeout_ms=200).get(partition), "records from the new log start"
                )
                assert received[0].offset == 60
                assert received[0].value == b"first-60"
            else:
                wait_until(
                    lambda: consumer.poll(timeout_ms=200) == {} and consumer.position(partition) == 100,
                    "the consumer to reset to the log end",
                )
                produce(broker.bootstrap, topic, [(b"k", b"after")])
                received = wait_until(lambda: consumer.poll(timeout_ms=200).get(partition), "the new record")
                assert [(record.offset, record.value) for record in received] == [(100, b"after")]
        finally:
            consumer.close()
    finally:
        client.close()
