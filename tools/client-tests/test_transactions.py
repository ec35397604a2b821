"""Exactly once as a user of Kafka's transactions sees it, on a broker alone: a transactional
producer (confluent-kafka, and kafka-python where it has the feature) commits and aborts,
`read_committed` consumers see all of a transaction or none of it, an open transaction holds
back what follows it until it ends, a second producer with the same transactional.id fences the
first, a transaction its producer abandons is aborted by the broker after its timeout, and a
consume-transform-produce loop commits its group's offsets in the same transaction as its output.

Every check reads the log back through real consumers: what `read_committed` returns, what
`read_uncommitted` returns, the offsets a group fetches, and the end offsets ListOffsets gives
for each isolation level.
"""

import time

import confluent_kafka
import kafka
import pytest

import transactions_support
from clients import Confluent, created_topic
from support import CLIENT_DEADLINE_S, wait_until
from transactions_support import isolated_consumer, transactional_producer

PARTITIONS = 3
# What the broker must have aborted an abandoned transaction within, after its timeout: Kafka
# checks every 10 s (transaction.abort.timed.out.transaction.cleanup.interval.ms).
TIMEOUT_ABORT_DEADLINE_S = 25.0


def produce_all(producer, topic, values, partition=None):
    """Produces `values` (bytes) in order, each to `partition` or round-robin by index, and
    waits for every delivery report; fails on any delivery error."""
    failed = []

    def on_delivery(error, message):
        if error is not None:
            failed.append((message.value(), error))

    for index, value in enumerate(values):
        target = partition if partition is not None else index % PARTITIONS
        producer.produce(topic, value=value, partition=target, on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(CLIENT_DEADLINE_S)
    assert left == 0, f"{left} message(s) undelivered after {CLIENT_DEADLINE_S:.0f} s"
    assert not failed, f"delivery errors: {failed[:3]}"


def read_to_end(bootstrap, topic, isolation):
    return transactions_support.read_to_end(bootstrap, topic, isolation, PARTITIONS)


def end_offsets(bootstrap, topic, isolation):
    return transactions_support.end_offsets(bootstrap, topic, isolation, PARTITIONS)


def all_values(by_partition):
    return sorted(value for values in by_partition.values() for value in values)


def values_of(label, count):
    return [f"{label}-{index:04d}".encode() for index in range(count)]


def test_read_committed_sees_committed_transactions_whole_and_aborted_ones_never(broker):
    client = Confluent(broker.bootstrap)
    topic = created_topic(client, "txn-commit-abort", PARTITIONS)
    producer = transactional_producer(broker.bootstrap, "txn-commit-abort")
    committed_first, aborted, committed_last = values_of("a", 30), values_of("b", 30), values_of("c", 30)

    producer.begin_transaction()
    produce_all(producer, topic, committed_first)
    producer.commit_transaction(CLIENT_DEADLINE_S)
    producer.begin_transaction()
    produce_all(producer, topic, aborted)
    producer.abort_transaction(CLIENT_DEADLINE_S)
    producer.begin_transaction()
    produce_all(producer, topic, committed_last)
    producer.commit_transaction(CLIENT_DEADLINE_S)

    read_committed = read_to_end(broker.bootstrap, topic, "read_committed")
    assert all_values(read_committed) == sorted(committed_first + committed_last)
    for partition, values in read_committed.items():
        # Within a partition, in the order they were produced: the first transaction's, then
        # the last one's.
        assert values == sorted(values), f"partition {partition} out of order: {values}"
    read_uncommitted = read_to_end(broker.bootstrap, topic, "read_uncommitted")
    assert all_values(read_uncommitted) == sorted(committed_first + aborted + committed_last)
    # Nothing is open: both isolation levels end at the same offset (data and markers).
    assert end_offsets(broker.bootstrap, topic, "read_committed") == end_offsets(
        broker.bootstrap, topic, "read_uncommitted"
    )


def test_an_open_transaction_holds_back_what_follows_it_until_it_commits(broker):
    client = Confluent(broker.bootstrap)
    topic = created_topic(client, "txn-open", PARTITIONS)
    producer = transactional_producer(broker.bootstrap, "txn-open")
    open_values = values_of("open", 3)
    producer.begin_transaction()
    produce_all(producer, topic, open_values, partition=0)
    # A plain producer's message after the open transaction's, on the same partition: a
    # read_committed consumer must not see it before the transaction ends either.
    plain = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    plain.produce(topic, value=b"plain-after-open", partition=0)
    assert plain.flush(CLIENT_DEADLINE_S) == 0

    assert read_to_end(broker.bootstrap, topic, "read_committed")[0] == []
    assert end_offsets(broker.bootstrap, topic, "read_committed")[0] == 0
    assert end_offsets(broker.bootstrap, topic, "read_uncommitted")[0] == 4
    assert read_to_end(broker.bootstrap, topic, "read_uncommitted")[0] == open_values + [b"plain-after-open"]

    producer.commit_transaction(CLIENT_DEADLINE_S)
    assert read_to_end(broker.bootstrap, topic, "read_committed")[0] == open_values + [b"plain-after-open"]
    # The marker sits between the transaction's records and the plain one: 3 + 1 + 1.
    assert end_offsets(broker.bootstrap, topic, "read_committed")[0] == 5


def test_a_second_producer_with_the_same_transactional_id_fences_the_first(broker):
    client = Confluent(broker.bootstrap)
    topic = created_topic(client, "txn-fence", PARTITIONS)
    zombie = transactional_producer(broker.bootstrap, "txn-fence")
    zombie.begin_transaction()
    produce_all(zombie, topic, values_of("zombie", 9))

    successor = transactional_producer(broker.bootstrap, "txn-fence")
    with pytest.raises(confluent_kafka.KafkaException) as raised:
        zombie.commit_transaction(CLIENT_DEADLINE_S)
    error = raised.value.args[0]
    assert error.fatal() or error.code() in (
        confluent_kafka.KafkaError._FENCED,
        confluent_kafka.KafkaError.PRODUCER_FENCED,
        confluent_kafka.KafkaError.INVALID_PRODUCER_EPOCH,
    ), f"the zombie's commit failed with {error}, not a fencing error"

    successor.begin_transaction()
    produce_all(successor, topic, values_of("successor", 9))
    successor.commit_transaction(CLIENT_DEADLINE_S)
    # The successor's initialisation aborted the zombie's open transaction.
    assert all_values(read_to_end(broker.bootstrap, topic, "read_committed")) == sorted(values_of("successor", 9))


def test_an_abandoned_transaction_is_aborted_after_its_timeout(broker):
    client = Confluent(broker.bootstrap)
    topic = created_topic(client, "txn-timeout", PARTITIONS)
    abandoned = transactional_producer(
        broker.bootstrap, "txn-timeout", **{"transaction.timeout.ms": 2000, "message.timeout.ms": 2000}
    )
    abandoned.begin_transaction()
    produce_all(abandoned, topic, values_of("abandoned", 6))
    read_uncommitted_end = end_offsets(broker.bootstrap, topic, "read_uncommitted")
    assert end_offsets(broker.bootstrap, topic, "read_committed") == {p: 0 for p in range(PARTITIONS)}

    # The broker aborts it: markers follow the records, and the last stable offset passes them.
    wait_until(
        lambda: all(
            committed_end > read_uncommitted_end[partition]
            for partition, committed_end in end_offsets(broker.bootstrap, topic, "read_committed").items()
        ),
        "the broker to abort the timed-out transaction",
        deadline_s=TIMEOUT_ABORT_DEADLINE_S,
    )
    assert all_values(read_to_end(broker.bootstrap, topic, "read_committed")) == []
    with pytest.raises(confluent_kafka.KafkaException):
        abandoned.commit_transaction(CLIENT_DEADLINE_S)


def test_transactions_survive_a_broker_killed_in_the_middle(broker):
    client = Confluent(broker.bootstrap)
    topic = created_topic(client, "txn-kill", PARTITIONS)
    producer = transactional_producer(broker.bootstrap, "txn-kill")
    producer.begin_transaction()
    produce_all(producer, topic, values_of("committed", 12))
    producer.commit_transaction(CLIENT_DEADLINE_S)
    producer.begin_transaction()
    produce_all(producer, topic, values_of("open-at-kill", 12))
    client.close()

    broker.kill()
    broker.start()

    # The open transaction is still open after the restart (its records are there, hidden);
    # a new producer with the same id aborts it, and the committed one is intact.
    assert all_values(read_to_end(broker.bootstrap, topic, "read_committed")) == sorted(values_of("committed", 12))
    successor = transactional_producer(broker.bootstrap, "txn-kill")
    successor.begin_transaction()
    produce_all(successor, topic, values_of("after", 6))
    successor.commit_transaction(CLIENT_DEADLINE_S)
    assert all_values(read_to_end(broker.bootstrap, topic, "read_committed")) == sorted(
        values_of("committed", 12) + values_of("after", 6)
    )


def test_consume_transform_produce_commits_offsets_with_its_output(broker):
    client = Confluent(broker.bootstrap)
    source = created_topic(client, "txn-source", PARTITIONS)
    sink = created_topic(client, "txn-sink", PARTITIONS)
    inputs = values_of("in", 90)
    plain = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for index, value in enumerate(inputs):
        plain.produce(source, value=value, partition=index % PARTITIONS)
    assert plain.flush(CLIENT_DEADLINE_S) == 0
    group = "txn-transform"

    def transform(aborting_after=None):
        """One run of the loop: consume from the group's committed offsets, produce each
        input's transformation and commit the group's position in the same transaction, 10
        inputs per transaction; with `aborting_after`, that transaction is aborted instead and
        the run stops, as a crashed worker's would."""
        reader = isolated_consumer(broker.bootstrap, "read_committed", group=group)
        producer = transactional_producer(broker.bootstrap, "txn-transform")
        reader.assign([confluent_kafka.TopicPartition(source, p) for p in range(PARTITIONS)])
        transactions = 0
        at_end = set()
        deadline = time.monotonic() + CLIENT_DEADLINE_S * 2
        try:
            while len(at_end) < PARTITIONS:
                assert time.monotonic() < deadline, "the transform loop did not reach the end"
                messages = reader.consume(10, 0.5)
                batch = []
                for message in messages:
                    if message.error() is not None:
                        assert message.error().code() == confluent_kafka.KafkaError._PARTITION_EOF
                        at_end.add(message.partition())
                    else:
                        at_end.discard(message.partition())
                        batch.append(message)
                if not batch:
                    continue
                producer.begin_transaction()
                for message in batch:
                    producer.produce(sink, value=b"out-" + message.value(), partition=message.partition())
                producer.send_offsets_to_transaction(
                    reader.position(reader.assignment()), reader.consumer_group_metadata(), CLIENT_DEADLINE_S
                )
                transactions += 1
                if aborting_after is not None and transactions == aborting_after:
                    producer.abort_transaction(CLIENT_DEADLINE_S)
                    return
                producer.commit_transaction(CLIENT_DEADLINE_S)
        finally:
            reader.close()

    transform(aborting_after=3)
    transform()

    outputs = all_values(read_to_end(broker.bootstrap, sink, "read_committed"))
    assert outputs == sorted(b"out-" + value for value in inputs), "not every input exactly once in the output"
    assert transactions_support.committed_offsets(broker.bootstrap, group, source, PARTITIONS) == {
        p: 30 for p in range(PARTITIONS)
    }


def test_kafka_python_commits_and_aborts_transactions(broker):
    client = Confluent(broker.bootstrap)
    topic = created_topic(client, "txn-kafka-python", PARTITIONS)
    producer = kafka.KafkaProducer(
        bootstrap_servers=broker.bootstrap, transactional_id="txn-kafka-python", linger_ms=0
    )
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for index, value in enumerate(values_of("kept", 12)):
            producer.send(topic, value=value, partition=index % PARTITIONS)
        producer.commit_transaction()
        producer.begin_transaction()
        for index, value in enumerate(values_of("dropped", 12)):
            producer.send(topic, value=value, partition=index % PARTITIONS)
        producer.flush()
        producer.abort_transaction()
    finally:
        producer.close(timeout=CLIENT_DEADLINE_S)

    # kafka-python's read_committed consumer, read to the last stable offset of each partition.
    ends = end_offsets(broker.bootstrap, topic, "read_committed")
    reader = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    seen = []
    try:
        partitions = [kafka.TopicPartition(topic, p) for p in range(PARTITIONS)]
        reader.assign(partitions)
        reader.seek_to_beginning()
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while any(reader.position(tp) < ends[tp.partition] for tp in partitions):
            assert time.monotonic() < deadline, f"kafka-python did not read {topic} to {ends}"
            for records in reader.poll(timeout_ms=200).values():
                seen.extend(record.value for record in records)
    finally:
        reader.close()
    assert sorted(seen) == sorted(values_of("kept", 12))
    assert all_values(read_to_end(broker.bootstrap, topic, "read_committed")) == sorted(values_of("kept", 12))
