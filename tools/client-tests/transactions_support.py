"""What the transaction tests share: a confluent-kafka transactional producer, a consumer of a
chosen isolation level, and reading a topic to the end that isolation level sees (the last
stable offset for read_committed, the high watermark otherwise)."""

import time

import confluent_kafka

from support import CLIENT_DEADLINE_S


def transactional_producer(bootstrap, transactional_id, initialised=True, **settings):
    """A confluent-kafka transactional producer (`settings`: further librdkafka settings),
    initialised (InitProducerId through the transaction coordinator) unless told otherwise."""
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "linger.ms": 0,
            "message.timeout.ms": int(CLIENT_DEADLINE_S * 1000),
            **settings,
        }
    )
    if initialised:
        producer.init_transactions(CLIENT_DEADLINE_S)
    return producer


def isolated_consumer(bootstrap, isolation, group="ferrite-client-tests", **settings):
    """A consumer reading at `isolation` ("read_committed" or "read_uncommitted"), committing
    nothing unless told to, reporting each partition's end."""
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            **settings,
        }
    )


def read_to_end(bootstrap, topic, isolation, partition_count):
    """Every value of `topic` from the start to each partition's end for `isolation`, as
    partition -> values in offset order."""
    reader = isolated_consumer(bootstrap, isolation)
    partitions = set(range(partition_count))
    try:
        reader.assign(
            [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in sorted(partitions)]
        )
        values = {partition: [] for partition in partitions}
        at_end = set()
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while at_end != partitions:
            assert time.monotonic() < deadline, f"{topic} ({isolation}): no end reached on {partitions - at_end}"
            message = reader.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                assert message.error().code() == confluent_kafka.KafkaError._PARTITION_EOF, message.error()
                at_end.add(message.partition())
                continue
            at_end.discard(message.partition())
            values[message.partition()].append(message.value())
        return values
    finally:
        reader.close()


def end_offsets(bootstrap, topic, isolation, partition_count):
    """partition -> the end offset ListOffsets answers for `isolation`."""
    reader = isolated_consumer(bootstrap, isolation)
    try:
        return {
            partition: reader.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, partition), timeout=CLIENT_DEADLINE_S, cached=False
            )[1]
            for partition in range(partition_count)
        }
    finally:
        reader.close()


def committed_offsets(bootstrap, group, topic, partition_count):
    """partition -> the offset `group` committed on `topic` (read_committed: a transaction's
    offsets count once it committed)."""
    reader = isolated_consumer(bootstrap, "read_committed", group=group)
    try:
        offsets = reader.committed(
            [confluent_kafka.TopicPartition(topic, p) for p in range(partition_count)], timeout=CLIENT_DEADLINE_S
        )
    finally:
        reader.close()
    return {tp.partition: tp.offset for tp in offsets}
