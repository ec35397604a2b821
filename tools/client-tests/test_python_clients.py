"""kafka-python and confluent-kafka against Ferrite, each test run with both clients: topic
administration, producing with every acks setting, idempotence and compression type, and
consuming by assignment from the earliest offset, from a given offset and from a timestamp."""

import time

import pytest

from clients import (
    INVALID_CONFIG,
    INVALID_PARTITIONS,
    TOPIC_ALREADY_EXISTS,
    UNKNOWN_TOPIC_OR_PARTITION,
    Confluent,
    KafkaPython,
    created_topic,
)
from support import check_log, messages, topic_name, wait_until

PARTITIONS = 3
MESSAGE_COUNT = 2000
KEY_COUNT = 50


@pytest.fixture(params=[Confluent, KafkaPython], ids=lambda client_class: client_class.name)
def client(request, broker):
    instance = request.param(broker.bootstrap)
    yield instance
    instance.close()


def check_spread(consumed):
    partitions = {message.partition for message in consumed}
    assert len(partitions) > 1, f"{KEY_COUNT} keys all went to partitions {partitions}"


def test_admin_creates_lists_and_deletes_topics(client):
    kept = created_topic(client, "kept", 1)
    deleted = created_topic(client, "deleted", PARTITIONS)
    listed = client.topics()
    assert listed.get(kept) == 1 and listed.get(deleted) == PARTITIONS, f"listed: {listed}"

    error = client.delete_topic(deleted)
    assert error == 0, f"deleting {deleted} failed with Kafka error {error}"
    wait_until(lambda: deleted not in client.topics(), f"the metadata to stop listing {deleted}")
    assert client.topics().get(kept) == 1, f"deleting {deleted} changed {kept}: {client.topics()}"


def test_admin_reports_errors_a_user_can_act_on(client):
    topic = created_topic(client, "exists", PARTITIONS)
    assert client.create_topic(topic, PARTITIONS) == TOPIC_ALREADY_EXISTS
    assert client.delete_topic(topic_name("never-created")) == UNKNOWN_TOPIC_OR_PARTITION
    never_created = topic_name("zero-partitions")
    assert client.create_topic(never_created, 0) == INVALID_PARTITIONS
    assert never_created not in client.topics(), "a topic with 0 partitions was created"
    assert client.topics().get(topic) == PARTITIONS, "a failed create changed the existing topic"


def test_admin_alters_topic_settings_and_refused_values_say_why(client):
    topic = created_topic(client, "settings", 1)
    error, message = client.alter_topic_configs(topic, {"retention.ms": "3600000", "max.message.bytes": "2000"})
    assert error == 0, f"altering {topic} failed with Kafka error {error}: {message}"
    configs = client.topic_configs(topic)
    assert configs["retention.ms"] == ("3600000", True), configs["retention.ms"]
    assert configs["max.message.bytes"] == ("2000", True), configs["max.message.bytes"]
    assert configs["segment.bytes"] == ("1073741824", False), configs["segment.bytes"]

    error, message = client.alter_topic_configs(topic, {"retention.ms": "soon"})
    assert error == INVALID_CONFIG, f"a bad value got Kafka error {error}: {message}"
    assert "invalid value 'soon' for topic config 'retention.ms'" in message, message

    error, message = client.alter_topic_configs(topic, {"max.message.bytes": None})
    assert error == 0, f"deleting a setting failed with Kafka error {error}: {message}"
    configs = client.topic_configs(topic)
    assert configs["max.message.bytes"] == ("1048588", False), "the broker's default applies again"
    assert configs["retention.ms"] == ("3600000", True), "neither the refused nor the delete changed it"


def test_kafka_python_s_whole_set_alter_configs_keeps_the_other_settings(broker):
    client = KafkaPython(broker.bootstrap)
    try:
        topic = created_topic(client, "whole-set", 1)
        for name, value in [("retention.ms", "3600000"), ("segment.ms", "600000")]:
            error, message = client.alter_topic_configs(topic, {name: value}, incremental=False)
            assert error == 0, f"AlterConfigs of {name} failed with Kafka error {error}: {message}"
        configs = client.topic_configs(topic)
        assert configs["retention.ms"] == ("3600000", True), configs["retention.ms"]
        assert configs["segment.ms"] == ("600000", True), configs["segment.ms"]
    finally:
        client.close()


@pytest.mark.parametrize("acks", [0, 1, "all"], ids=lambda acks: f"acks={acks}")
def test_produce_and_consume_from_earliest(client, acks):
    topic = created_topic(client, f"acks-{acks}", PARTITIONS)
    sent = messages(MESSAGE_COUNT, KEY_COUNT)
    acked = client.produce(topic, sent, acks=acks)
    if acks == 0:
        # Nothing tells an acks=0 producer that the broker has appended: wait until it has.
        wait_until(
            lambda: sum(client.end_offsets(topic).values()) == len(sent), f"{len(sent)} messages in {topic}"
        )
    else:
        assert len(acked) == len(sent)
    consumed = client.consume(topic)
    check_log(consumed, sent, acked=acked or None)
    check_spread(consumed)


def test_idempotent_producer(client):
    topic = created_topic(client, "idempotent", PARTITIONS)
    sent = messages(MESSAGE_COUNT, KEY_COUNT)
    acked = client.produce(topic, sent, acks="all", idempotent=True)
    assert len(acked) == len(sent)
    check_log(client.consume(topic), sent, acked=acked)


@pytest.mark.parametrize("compression", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches(client, compression):
    topic = created_topic(client, compression, PARTITIONS)
    sent = messages(MESSAGE_COUNT, KEY_COUNT, label=compression)
    acked = client.produce(topic, sent, acks="all", compression=compression)
    assert len(acked) == len(sent)
    check_log(client.consume(topic), sent, acked=acked)


def test_consume_from_an_offset(client):
    topic = created_topic(client, "from-offset", PARTITIONS)
    sent = messages(MESSAGE_COUNT, KEY_COUNT)
    acked = client.produce(topic, sent, acks="all")
    ends = client.end_offsets(topic)
    counts = {
        partition: sum(1 for p, _ in acked.values() if p == partition) for partition in range(PARTITIONS)
    }
    assert ends == counts, f"high watermarks {ends}, but the producer was acknowledged {counts} per partition"

    first_offsets = {partition: end // 2 for partition, end in ends.items()}
    expected = [
        message for message in sent if acked[message.value][1] >= first_offsets[acked[message.value][0]]
    ]
    consumed = client.consume(topic, first_offsets)
    check_log(
        consumed, expected, acked={m.value: acked[m.value] for m in expected}, first_offsets=first_offsets
    )


def test_consume_from_a_timestamp(client):
    topic = created_topic(client, "from-timestamp", PARTITIONS)
    step_ms = 10
    first_ms = int(time.time() * 1000) - 3_600_000
    sent = messages(MESSAGE_COUNT, KEY_COUNT, timestamp_ms_first=first_ms, timestamp_ms_step=step_ms)
    acked = client.produce(topic, sent, acks="all")

    # Between two messages' timestamps: the answer is the later message's offset.
    split = MESSAGE_COUNT // 3
    wanted_ms = first_ms + split * step_ms + step_ms // 2
    expected = sent[split + 1 :]
    expected_offsets = {partition: None for partition in range(PARTITIONS)}
    for message in expected:
        partition, offset = acked[message.value]
        if expected_offsets[partition] is None or offset < expected_offsets[partition]:
            expected_offsets[partition] = offset
    found = client.offsets_for_times(topic, wanted_ms)
    assert found == expected_offsets, (
        f"offsets_for_times({wanted_ms}): got {found}, expected {expected_offsets}"
    )

    assert client.offsets_for_times(topic, first_ms) == {partition: 0 for partition in range(PARTITIONS)}, (
        "the first timestamp should find offset 0 in every partition"
    )
    after_last_ms = sent[-1].timestamp_ms + 1
    assert client.offsets_for_times(topic, after_last_ms) == {
        partition: None for partition in range(PARTITIONS)
    }, "a timestamp after every message should find nothing"

    first_offsets = {partition: offset for partition, offset in found.items() if offset is not None}
    consumed = [m for m in client.consume(topic, first_offsets) if m.partition in first_offsets]
    check_log(
        consumed, expected, acked={m.value: acked[m.value] for m in expected}, first_offsets=first_offsets
    )
