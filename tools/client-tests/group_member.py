"""One consumer-group member as a program of its own, run by members.py: a kafka-python or
confluent-kafka consumer subscribed to one topic, as an application would write it.

It is a separate process so that a test can do to it what happens to real consumers: close it
(it leaves the group), or kill it with SIGKILL (it vanishes without a word and the broker must
notice by the session timeout), and restart it. Neither client can be made to vanish in-process:
both heartbeat from a background thread until closed.

Usage: group_member.py CONFIG_JSON. It writes one JSON object a line on stdout, each an event
with an "event" field:
- {"event": "assigned", "partitions": [...]}: partitions added to its assignment;
- {"event": "revoked", "partitions": [...], "lost": bool}: partitions taken away (lost: the
  client found itself no longer a member, so it could not give them up cleanly);
- {"event": "message", "partition", "offset", "key", "value", "timestamp_ms"}: one consumed
  message (key and value as latin-1 text, which round-trips any bytes);
- {"event": "committed", "offsets": {partition: offset}} or
  {"event": "commit_failed", "error": text}: the answer to a "commit" command.
It reads commands, one a line, on stdin: "commit" commits the position after the last consumed
message of each partition it owns (synchronously), "close" closes the consumer and exits 0.
It commits nothing on its own: a test knows exactly what is committed, and when.
"""

import json
import logging
import queue
import sys
import threading

POLL_TIMEOUT_S = 0.1
HEARTBEAT_INTERVAL_MS = 1000
# The rebalance timeout: how long the broker waits for known members to rejoin. Short, so that
# a rebalance waiting for a member that will never come back is bounded by this (or by its
# session timeout), not by the clients' default of 5 minutes.
MAX_POLL_INTERVAL_MS = 10_000

_output_lock = threading.Lock()
# partition -> the offset after the last message consumed from it since it was last assigned
# here. Assignment callbacks run on the clients' own threads, hence the lock.
_positions_lock = threading.Lock()
_positions = {}


def emit(event, **fields):
    line = json.dumps({"event": event, **fields})
    with _output_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def assigned(partitions):
    forget(partitions)
    emit("assigned", partitions=partitions)


def revoked(partitions, lost):
    forget(partitions)
    emit("revoked", partitions=partitions, lost=lost)


def forget(partitions):
    """A partition's position is forgotten when it moves, so that a commit never rewinds what
    the member that owned it meanwhile committed."""
    with _positions_lock:
        for partition in partitions:
            _positions.pop(partition, None)


def text(data):
    return None if data is None else data.decode("latin-1")


def consumed(partition, offset, key, value, timestamp_ms):
    with _positions_lock:
        _positions[partition] = offset + 1
    emit(
        "message",
        partition=partition,
        offset=offset,
        key=text(key),
        value=text(value),
        timestamp_ms=timestamp_ms,
    )


class ConfluentMember:
    def __init__(self, config):
        import confluent_kafka

        self.kafka = confluent_kafka
        self.topic = config["topic"]
        settings = {
            "bootstrap.servers": config["bootstrap"],
            "group.id": config["group"],
            "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        }
        if config.get("protocol") == "consumer":
            # KIP-848: the broker assigns (the strategy names its assignor) and sets the session
            # timeout and heartbeat interval; librdkafka refuses the classic settings.
            settings["group.protocol"] = "consumer"
            settings["group.remote.assignor"] = config["strategy"]
        else:
            settings["partition.assignment.strategy"] = config["strategy"]
            settings["session.timeout.ms"] = config["session_timeout_ms"]
            settings["heartbeat.interval.ms"] = HEARTBEAT_INTERVAL_MS
        if config.get("instance_id") is not None:
            settings["group.instance.id"] = config["instance_id"]
        self.consumer = confluent_kafka.Consumer(settings)
        self.consumer.subscribe(
            [self.topic],
            on_assign=lambda _, partitions: assigned(numbers(partitions)),
            on_revoke=lambda _, partitions: revoked(numbers(partitions), lost=False),
            on_lost=lambda _, partitions: revoked(numbers(partitions), lost=True),
        )

    def poll(self):
        message = self.consumer.poll(POLL_TIMEOUT_S)
        if message is None:
            return
        error = message.error()
        if error is not None:
            # Transient errors (a broker restart, a rebalance) are the client's to retry; the
            # test judges by what is consumed and assigned, the error goes to the log.
            print(f"consumer error: {error}", file=sys.stderr, flush=True)
            return
        consumed(
            message.partition(), message.offset(), message.key(), message.value(), message.timestamp()[1]
        )

    def owned(self):
        return {topic_partition.partition for topic_partition in self.consumer.assignment()}

    def commit(self, positions):
        offsets = [self.kafka.TopicPartition(self.topic, p, offset) for p, offset in positions.items()]
        results = self.consumer.commit(offsets=offsets, asynchronous=False)
        failed = [str(result) for result in results or [] if result.error is not None]
        if failed:
            raise RuntimeError(f"partitions not committed: {failed}")

    def close(self):
        self.consumer.close()


class KafkaPythonMember:
    def __init__(self, config):
        import kafka
        from kafka.consumer.subscription_state import ConsumerRebalanceListener
        from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        self.kafka = kafka
        self.topic = config["topic"]
        assignor = {
            "range": RangePartitionAssignor,
            "roundrobin": RoundRobinPartitionAssignor,
            "cooperative-sticky": CooperativeStickyAssignor,
        }[config["strategy"]]

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, partitions):
                revoked(numbers(partitions), lost=False)

            def on_partitions_assigned(self, partitions):
                assigned(numbers(partitions))

            def on_partitions_lost(self, partitions):
                revoked(numbers(partitions), lost=True)

        self.consumer = kafka.KafkaConsumer(
            bootstrap_servers=config["bootstrap"],
            group_id=config["group"],
            group_instance_id=config.get("instance_id"),
            partition_assignment_strategy=[assignor],
            session_timeout_ms=config["session_timeout_ms"],
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        self.consumer.subscribe([self.topic], listener=Listener())

    def poll(self):
        for records in self.consumer.poll(timeout_ms=int(POLL_TIMEOUT_S * 1000)).values():
            for record in records:
                consumed(record.partition, record.offset, record.key, record.value, record.timestamp)

    def owned(self):
        return {topic_partition.partition for topic_partition in self.consumer.assignment()}

    def commit(self, positions):
        self.consumer.commit(
            {
                self.kafka.TopicPartition(self.topic, partition): self.kafka.OffsetAndMetadata(offset, "", -1)
                for partition, offset in positions.items()
            }
        )

    def close(self):
        self.consumer.close()


def numbers(topic_partitions):
    return sorted(topic_partition.partition for topic_partition in topic_partitions)


def read_commands(commands):
    for line in sys.stdin:
        commands.put(line.strip())
    commands.put("eof")


def main():
    config = json.loads(sys.argv[1])
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    member = {"confluent-kafka": ConfluentMember, "kafka-python": KafkaPythonMember}[config["client"]](config)
    commands = queue.Queue()
    threading.Thread(target=read_commands, args=(commands,), daemon=True).start()
    while True:
        member.poll()
        try:
            command = commands.get_nowait()
        except queue.Empty:
            continue
        if command == "commit":
            owned = member.owned()
            with _positions_lock:
                positions = {p: offset for p, offset in _positions.items() if p in owned}
            try:
                if positions:
                    member.commit(positions)
            except Exception as error:  # the test reports whatever the client raised
                emit("commit_failed", error=repr(error))
            else:
                emit("committed", offsets=positions)
        elif command in ("close", "eof"):
            # eof: the test that started this member has gone; leave rather than linger.
            member.close()
            return
        else:
            raise ValueError(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
