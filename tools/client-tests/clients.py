"""kafka-python and confluent-kafka behind one small interface, so that each behaviour is
tested once (test_python_clients.py) and run with both clients.

Each method does what a user of that client would write: admin calls through the client's
admin API, produce with delivery reports, consume by assignment (`assign()` with explicit
offsets, never committing; consumer groups are members.py's). Errors from the broker come
back as Kafka error codes, the one naming both clients share.
"""

import re
import time
from collections import defaultdict

import confluent_kafka
import confluent_kafka.admin
import kafka
import kafka.admin
import kafka.errors
from kafka.structs import TopicPartition as KafkaPythonTopicPartition

from support import CLIENT_DEADLINE_S, Consumed, topic_name, wait_until

# Kafka error codes the tests expect from the broker.
UNKNOWN_TOPIC_OR_PARTITION = 3
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_CONFIG = 40

# confluent-kafka insists on a group.id for a Consumer even when it is only assigned
# partitions; with assign() and no commits it never needs the group coordinator.
CONFLUENT_GROUP_ID = "ferrite-client-tests"


def created_topic(client, label, partitions):
    """A new topic, created through `client`'s admin API, once the cluster metadata lists it
    with all its partitions."""
    topic = topic_name(label)
    error = client.create_topic(topic, partitions)
    assert error == 0, f"creating {topic} with {partitions} partitions failed with Kafka error {error}"
    wait_until(
        lambda: client.topics().get(topic) == partitions,
        f"the metadata to list {topic} with {partitions} partitions",
    )
    return topic


class Confluent:
    name = "confluent-kafka"

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})

    def close(self):
        # AdminClient has no close(): dropping it destroys the handle, so it stops reconnecting
        # to a broker the test has stopped.
        self.admin = None

    def topics(self):
        """name -> partition count, as the cluster metadata lists them."""
        metadata = self.admin.list_topics(timeout=CLIENT_DEADLINE_S)
        return {name: len(topic.partitions) for name, topic in metadata.topics.items() if topic.error is None}

    def create_topic(self, topic, partitions):
        """Creates `topic`; returns the Kafka error code (0 on success)."""
        new_topic = confluent_kafka.admin.NewTopic(topic, num_partitions=partitions, replication_factor=1)
        futures = self.admin.create_topics([new_topic], operation_timeout=CLIENT_DEADLINE_S)
        return _confluent_error_code(futures[topic])

    def delete_topic(self, topic):
        """Deletes `topic`; returns the Kafka error code (0 on success)."""
        futures = self.admin.delete_topics([topic], operation_timeout=CLIENT_DEADLINE_S)
        return _confluent_error_code(futures[topic])

    def alter_topic_configs(self, topic, changes):
        """Changes `topic`'s settings (IncrementalAlterConfigs): `changes` maps a name to the
        value to set, or to None to delete the topic's own value. Returns (Kafka error code,
        the broker's message)."""
        entries = [
            confluent_kafka.admin.ConfigEntry(
                name,
                value,
                incremental_operation=confluent_kafka.admin.AlterConfigOpType.SET
                if value is not None
                else confluent_kafka.admin.AlterConfigOpType.DELETE,
            )
            for name, value in changes.items()
        ]
        resource = confluent_kafka.admin.ConfigResource(
            confluent_kafka.admin.ResourceType.TOPIC, topic, incremental_configs=entries
        )
        future = self.admin.incremental_alter_configs([resource])[resource]
        try:
            future.result(timeout=CLIENT_DEADLINE_S)
        except confluent_kafka.KafkaException as exception:
            error = exception.args[0]
            return error.code(), error.str()
        return 0, None

    def topic_configs(self, topic):
        """name -> (value, whether it is set on the topic) of every setting of `topic`."""
        resource = confluent_kafka.admin.ConfigResource(confluent_kafka.admin.ResourceType.TOPIC, topic)
        entries = self.admin.describe_configs([resource])[resource].result(timeout=CLIENT_DEADLINE_S)
        topic_source = confluent_kafka.admin.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        return {name: (entry.value, entry.source == topic_source) for name, entry in entries.items()}

    def produce(self, topic, sent, acks, compression="none", idempotent=False, settings=None):
        """Produces `sent` in order; returns value -> (partition, offset) from the delivery
        reports (empty with acks=0, which learns no offsets). Fails on any delivery error.
        `settings`: further librdkafka settings, which win over these."""
        config = {
            "bootstrap.servers": self.bootstrap,
            "acks": str(acks),
            "enable.idempotence": idempotent,
            "compression.type": compression,
            "linger.ms": 5,
            "message.timeout.ms": int(CLIENT_DEADLINE_S * 1000),
            **(settings or {}),
        }
        producer = confluent_kafka.Producer(config)
        acked = {}
        failed = []

        def on_delivery(error, message):
            if error is not None:
                failed.append((message.value(), error))
            elif acks != 0:
                acked[message.value()] = (message.partition(), message.offset())

        for message in sent:
            extra = {} if message.timestamp_ms is None else {"timestamp": message.timestamp_ms}
            producer.produce(topic, key=message.key, value=message.value, on_delivery=on_delivery, **extra)
            producer.poll(0)
        left = producer.flush(CLIENT_DEADLINE_S)
        assert left == 0, f"{left} message(s) still undelivered after {CLIENT_DEADLINE_S:.0f} s"
        assert not failed, f"{len(failed)} delivery error(s), the first: {failed[:3]}"
        return acked

    def _consumer(self):
        return confluent_kafka.Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": CONFLUENT_GROUP_ID,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 100,
            }
        )

    def partitions(self, consumer, topic):
        metadata = consumer.list_topics(topic, timeout=CLIENT_DEADLINE_S).topics[topic]
        assert metadata.error is None, f"metadata of {topic}: {metadata.error}"
        return sorted(metadata.partitions)

    def end_offsets(self, topic):
        """partition -> high watermark."""
        consumer = self._consumer()
        try:
            return {
                partition: consumer.get_watermark_offsets(
                    confluent_kafka.TopicPartition(topic, partition), timeout=CLIENT_DEADLINE_S
                )[1]
                for partition in self.partitions(consumer, topic)
            }
        finally:
            consumer.close()

    def offsets_for_times(self, topic, timestamp_ms):
        """partition -> the first offset with a timestamp >= timestamp_ms, or None."""
        consumer = self._consumer()
        try:
            wanted = [
                confluent_kafka.TopicPartition(topic, partition, timestamp_ms)
                for partition in self.partitions(consumer, topic)
            ]
            found = consumer.offsets_for_times(wanted, timeout=CLIENT_DEADLINE_S)
        finally:
            consumer.close()
        result = {}
        for topic_partition in found:
            assert topic_partition.error is None, f"offsets_for_times: {topic_partition}"
            result[topic_partition.partition] = (
                topic_partition.offset if topic_partition.offset >= 0 else None
            )
        return result

    def consume(self, topic, first_offsets=None):
        """Every message from `first_offsets` (partition -> offset; the earliest where absent)
        to the end of each partition, in the order received."""
        first_offsets = first_offsets or {}
        consumer = self._consumer()
        try:
            partitions = self.partitions(consumer, topic)
            consumer.assign(
                [
                    confluent_kafka.TopicPartition(
                        topic, partition, first_offsets.get(partition, confluent_kafka.OFFSET_BEGINNING)
                    )
                    for partition in partitions
                ]
            )
            consumed = []
            at_end = set()
            deadline = time.monotonic() + CLIENT_DEADLINE_S
            while len(at_end) < len(partitions):
                assert time.monotonic() < deadline, (
                    f"consuming {topic}: partitions {sorted(set(partitions) - at_end)} did not reach "
                    f"their end within {CLIENT_DEADLINE_S:.0f} s ({len(consumed)} message(s) so far)"
                )
                message = consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    assert error.code() == confluent_kafka.KafkaError._PARTITION_EOF, (
                        f"consume error: {error}"
                    )
                    at_end.add(message.partition())
                    continue
                consumed.append(
                    Consumed(
                        partition=message.partition(),
                        offset=message.offset(),
                        key=message.key(),
                        value=message.value(),
                        timestamp_ms=message.timestamp()[1],
                    )
                )
            return consumed
        finally:
            consumer.close()


def _confluent_error_code(future):
    try:
        future.result(timeout=CLIENT_DEADLINE_S)
    except TimeoutError:
        raise AssertionError(f"the admin request had no answer within {CLIENT_DEADLINE_S:.0f} s") from None
    except confluent_kafka.KafkaException as exception:
        error = exception.args[0]
        assert isinstance(error, confluent_kafka.KafkaError), f"not a Kafka error: {exception!r}"
        return error.code()
    return 0


class KafkaPython:
    name = "kafka-python"

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.admin = kafka.admin.KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(CLIENT_DEADLINE_S * 1000)
        )

    def close(self):
        self.admin.close()

    def topics(self):
        """name -> partition count, as the cluster metadata lists them."""
        return {
            topic["name"]: len(topic["partitions"])
            for topic in self.admin.describe_topics()
            if topic["error_code"] == 0
        }

    def create_topic(self, topic, partitions):
        """Creates `topic`; returns the Kafka error code (0 on success)."""
        try:
            self.admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}})
        except kafka.errors.BrokerResponseError as error:
            return error.errno
        return 0

    def delete_topic(self, topic):
        """Deletes `topic`; returns the Kafka error code (0 on success)."""
        try:
            self.admin.delete_topics([topic])
        except kafka.errors.BrokerResponseError as error:
            return error.errno
        return 0

    def alter_topic_configs(self, topic, changes, incremental=True):
        """Changes `topic`'s settings: `changes` maps a name to the value to set, or to None to
        delete the topic's own value. IncrementalAlterConfigs, or with `incremental=False`
        AlterConfigs (kafka-python then sends the topic's other settings along, since that API
        replaces the whole set; SET only). Returns (Kafka error code, the broker's message)."""
        configs = {name: value if value is not None else ("DELETE", None) for name, value in changes.items()}
        resource = kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.TOPIC, topic, configs=configs)
        result = self.admin.alter_configs([resource], incremental=incremental)["topic"][topic]
        if result == "OK":
            return 0, None
        # "[Error 40] InvalidConfigurationError: <the broker's message>"
        matched = re.match(r"\[Error (\d+)\] \w+: (.*)", str(result), re.DOTALL)
        assert matched, f"an alter_configs result kafka-python did not format as expected: {result!r}"
        return int(matched.group(1)), matched.group(2)

    def topic_configs(self, topic):
        """name -> (value, whether it is set on the topic) of every setting of `topic`."""
        resource = kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.TOPIC, topic)
        described = self.admin.describe_configs([resource], config_filter="all")["topic"][topic]
        return {
            name: (entry["value"], entry["config_source"] == "DYNAMIC_TOPIC_CONFIG")
            for name, entry in described.items()
        }

    def produce(self, topic, sent, acks, compression="none", idempotent=False):
        """Produces `sent` in order; returns value -> (partition, offset) from the send
        futures (empty with acks=0, which learns no offsets). Fails on any send error."""
        producer = kafka.KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks=acks,
            enable_idempotence=idempotent,
            compression_type=None if compression == "none" else compression,
            linger_ms=5,
            request_timeout_ms=int(CLIENT_DEADLINE_S * 1000),
        )
        try:
            futures = [
                (
                    message,
                    producer.send(
                        topic, key=message.key, value=message.value, timestamp_ms=message.timestamp_ms
                    ),
                )
                for message in sent
            ]
            producer.flush(timeout=CLIENT_DEADLINE_S)
            acked = {}
            failed = []
            for message, future in futures:
                try:
                    metadata = future.get(timeout=CLIENT_DEADLINE_S)
                except kafka.errors.KafkaError as error:
                    failed.append((message.value, error))
                    continue
                if acks != 0:
                    acked[message.value] = (metadata.partition, metadata.offset)
            assert not failed, f"{len(failed)} send error(s), the first: {failed[:3]}"
            return acked
        finally:
            producer.close(timeout=CLIENT_DEADLINE_S)

    def _consumer(self):
        return kafka.KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            request_timeout_ms=int(CLIENT_DEADLINE_S * 1000),
        )

    def _topic_partitions(self, consumer, topic):
        partitions = wait_until(
            lambda: consumer.partitions_for_topic(topic), f"kafka-python to learn the partitions of {topic}"
        )
        return [KafkaPythonTopicPartition(topic, partition) for partition in sorted(partitions)]

    def end_offsets(self, topic):
        """partition -> high watermark."""
        consumer = self._consumer()
        try:
            ends = consumer.end_offsets(self._topic_partitions(consumer, topic))
            return {topic_partition.partition: offset for topic_partition, offset in ends.items()}
        finally:
            consumer.close()

    def offsets_for_times(self, topic, timestamp_ms):
        """partition -> the first offset with a timestamp >= timestamp_ms, or None."""
        consumer = self._consumer()
        try:
            found = consumer.offsets_for_times(
                {topic_partition: timestamp_ms for topic_partition in self._topic_partitions(consumer, topic)}
            )
        finally:
            consumer.close()
        return {
            topic_partition.partition: None if found_offset is None else found_offset.offset
            for topic_partition, found_offset in found.items()
        }

    def consume(self, topic, first_offsets=None):
        """Every message from `first_offsets` (partition -> offset; the earliest where absent)
        to the end of each partition, in the order received."""
        first_offsets = first_offsets or {}
        consumer = self._consumer()
        try:
            topic_partitions = self._topic_partitions(consumer, topic)
            consumer.assign(topic_partitions)
            for topic_partition in topic_partitions:
                if topic_partition.partition in first_offsets:
                    consumer.seek(topic_partition, first_offsets[topic_partition.partition])
                else:
                    consumer.seek_to_beginning(topic_partition)
            ends = consumer.end_offsets(topic_partitions)
            consumed_by_partition = defaultdict(list)
            deadline = time.monotonic() + CLIENT_DEADLINE_S
            while True:
                behind = [tp.partition for tp in topic_partitions if consumer.position(tp) < ends[tp]]
                if not behind:
                    break
                assert time.monotonic() < deadline, (
                    f"consuming {topic}: partitions {behind} did not reach their end offsets {ends} "
                    f"within {CLIENT_DEADLINE_S:.0f} s"
                )
                for records in consumer.poll(timeout_ms=200).values():
                    for record in records:
                        consumed_by_partition[record.partition].append(
                            Consumed(
                                partition=record.partition,
                                offset=record.offset,
                                key=record.key,
                                value=record.value,
                                timestamp_ms=record.timestamp,
                            )
                        )
            return [
                message
                for partition in sorted(consumed_by_partition)
                for message in consumed_by_partition[partition]
            ]
        finally:
            consumer.close()
