"""What the cluster tests use to prove nothing acknowledged was lost: producers that keep writing
through faults while recording what each message was told (`ContinuousProducer`, a group of
them), the measure of a failover (from a fault to the first acknowledgement of a message sent
after it), the read of every partition up to its high-water mark, and the checks of what was
read against what was acknowledged.
"""
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import confluent_kafka
import confluent_kafka.admin

from cluster_support import FAILOVER_DEADLINE_S, METADATA_TIMEOUT_S, PARTITIONS, rdkafka_debug_config
from support import CLIENT_DEADLINE_S, wait_until


@dataclass(frozen=True)
class Read:
    """One message as the checker read it."""

    key: bytes
    value: bytes


class ContinuousProducer:
    """An idempotent acks=all confluent-kafka producer writing numbered keyed messages at a
    steady rate from its own thread until stopped; it remembers when each was sent and where
    and when each was acknowledged. Its messages name its `number`, so several can write one
    topic (see ProducerGroup)."""

    RATE_PER_S = 250
    KEY_COUNT = 30
    OUTSTANDING_MAX = 500

    def __init__(self, bootstrap, topic, number=0, rate_per_s=RATE_PER_S):
        self.topic = topic
        self.number = number
        self.rate_per_s = rate_per_s
        self.lock = threading.Lock()
        self.sent_at = []  # index -> monotonic time of produce()
        self.acked = {}  # index -> (partition, offset, monotonic time of the acknowledgement)
        self.failed = {}  # index -> error
        self.fatal_errors = []
        self.stopping = threading.Event()
        self.left_unsettled = None
        self.producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                # Long enough to ride out every fault: a message the producer gives up on is a
                # failure of the test, not of the fault.
                "message.timeout.ms": int(CLIENT_DEADLINE_S * 3000),
                # A frozen leader answers nothing, and the producer sends a partition nothing
                # new until its requests in flight to the old leader are over: it should give
                # up on them well before librdkafka's 60 s default (request.timeout.ms is only
                # the broker's to enforce). Measured failovers include this wait.
                "socket.timeout.ms": 3000,
                "topic.metadata.refresh.interval.ms": 1000,
                # One request in flight per broker. With more, a request that times out at a
                # frozen leader makes the next one, sent on to the new leader, get
                # OUT_OF_ORDER_SEQUENCE_NUMBER (its predecessor never arrived: right, as Kafka
                # answers), and librdkafka then bumps the producer epoch and sends every
                # possibly persisted message again under it, on all partitions, where no
                # broker can tell them from new ones: duplicates (librdkafka issue #4953,
                # seen here once in about 20 runs). The checker is to find the broker's
                # faults, not that one.
                "max.in.flight.requests.per.connection": 1,
                "reconnect.backoff.ms": 20,
                "reconnect.backoff.max.ms": 250,
                "error_cb": self._on_error,
                **rdkafka_debug_config(),
            }
        )
        self.thread = threading.Thread(target=self._run, name=f"producer-{number}", daemon=True)

    @property
    def members(self):
        return [self]

    def message(self, index):
        key = f"key-{index % ContinuousProducer.KEY_COUNT}".encode()
        return key, f"cluster-{self.number}-{index:07d}-".encode() + b"x" * (index % 97)

    @staticmethod
    def parse(value):
        """(producer number, index) of a message's value."""
        _, number, index, _ = value.split(b"-", 3)
        return int(number), int(index)

    def _on_error(self, error):
        if error.fatal():
            self.fatal_errors.append(error)

    def _on_delivery(self, error, message):
        _, index = self.parse(message.value())
        with self.lock:
            if error is None:
                self.acked[index] = (message.partition(), message.offset(), time.monotonic())
            else:
                self.failed[index] = error

    def _run(self):
        try:
            self._send_until_stopped()
            self.left_unsettled = self.producer.flush(CLIENT_DEADLINE_S * 2)
        except confluent_kafka.KafkaException as error:
            # A fatal error (produce, poll and flush raise it): the client takes nothing more.
            self.fatal_errors.append(error.args[0])
        # Destroys the client now, so it stops reconnecting before the brokers stop.
        self.producer = None

    def _send_until_stopped(self):
        started = time.monotonic()
        while not self.stopping.is_set():
            due = int((time.monotonic() - started) * self.rate_per_s)
            with self.lock:
                outstanding = len(self.sent_at) - len(self.acked) - len(self.failed)
            while len(self.sent_at) < due and outstanding < self.OUTSTANDING_MAX:
                index = len(self.sent_at)
                key, value = self.message(index)
                with self.lock:
                    self.sent_at.append(time.monotonic())
                self.producer.produce(self.topic, key=key, value=value, on_delivery=self._on_delivery)
                outstanding += 1
            self.producer.poll(1 / self.rate_per_s)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(CLIENT_DEADLINE_S * 3)
        assert not self.thread.is_alive(), "the producer thread did not finish"
        assert not self.fatal_errors, f"the producer stopped on a fatal error: {self.outcome()}"
        assert self.left_unsettled == 0, (
            f"{self.left_unsettled} message(s) neither acknowledged nor failed: {self.outcome()}"
        )

    def outcome(self):
        with self.lock:
            return (
                f"{len(self.sent_at)} sent, {len(self.acked)} acknowledged, {len(self.failed)} failed "
                f"(first: {list(self.failed.items())[:3]}), fatal errors: {self.fatal_errors}"
            )

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def wait_for_progress(self, count, what):
        """Waits until `count` more messages than now are acknowledged (failing at once on a
        fatal error, after which the producer sends nothing)."""
        target = self.acked_count() + count

        def progressed():
            assert not self.fatal_errors, f"producer {self.number} stopped {what}: {self.outcome()}"
            return self.acked_count() >= target

        wait_until(progressed, f"{count} more acknowledgements {what}")

    def first_acks_after(self, moment):
        """partition -> when the first message sent after `moment` to it was acknowledged."""
        firsts = {}
        with self.lock:
            for index, (partition, _, acked_at) in self.acked.items():
                if self.sent_at[index] >= moment and acked_at < firsts.get(partition, float("inf")):
                    firsts[partition] = acked_at
        return firsts


class ProducerGroup:
    """Several ContinuousProducers writing one topic at once, each bootstrapped from its own
    broker (so each asks that broker for its producer id, as applications spread over a
    cluster do), seen as one: the same interface, over all of them."""

    def __init__(self, bootstraps, topic, rate_per_s):
        self.members = [
            ContinuousProducer(bootstrap, topic, number, rate_per_s)
            for number, bootstrap in enumerate(bootstraps)
        ]

    def start(self):
        for member in self.members:
            member.start()

    def stop(self):
        """Stops them all (together: none waits for another to flush), then reports what any
        of them left unsettled."""
        for member in self.members:
            member.stopping.set()
        problems = []
        for member in self.members:
            try:
                member.stop()
            except AssertionError as error:
                problems.append(f"producer {member.number}: {error}")
        assert not problems, "; ".join(problems)

    @property
    def failed(self):
        return {
            (member.number, index): error for member in self.members for index, error in member.failed.items()
        }

    @property
    def fatal_errors(self):
        return [error for member in self.members for error in member.fatal_errors]

    def outcome(self):
        return "; ".join(f"producer {member.number}: {member.outcome()}" for member in self.members)

    def wait_for_progress(self, count, what):
        """Waits until each producer has `count` / (number of producers) more acknowledgements
        than now: none of them may stall."""
        share = -(-count // len(self.members))
        targets = [(member, member.acked_count() + share) for member in self.members]

        def progressed():
            assert not self.fatal_errors, f"a producer stopped {what}: {self.outcome()}"
            return all(member.acked_count() >= target for member, target in targets)

        wait_until(
            progressed,
            f"{share} more acknowledgements for each of {len(self.members)} producers {what}",
        )

    def first_acks_after(self, moment):
        """partition -> when the first message any producer sent after `moment` to it was
        acknowledged."""
        firsts = {}
        for member in self.members:
            for partition, acked_at in member.first_acks_after(moment).items():
                firsts[partition] = min(acked_at, firsts.get(partition, float("inf")))
        return firsts


def measured_failover(producer, fault_at, partitions, fault, deadline_s=FAILOVER_DEADLINE_S):
    """Seconds from `fault_at` to the first acknowledgement of a message sent after it, for
    each of `partitions` (those the faulty broker led), once all have one."""

    def measured():
        firsts = producer.first_acks_after(fault_at)
        if all(partition in firsts for partition in partitions):
            return {partition: firsts[partition] - fault_at for partition in partitions}
        return None

    return wait_until(
        measured,
        f"partitions {sorted(partitions)} to acknowledge again after {fault} ({producer.outcome()})",
        deadline_s=deadline_s,
    )


def read_to_high_water_marks(cluster, topic, partition_count=PARTITIONS):
    """partition -> {offset: Read}: every message from the beginning of each partition up to
    its high-water mark when the read began, fetched from the partitions' leaders."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": cluster.bootstrap(),
            "group.id": "ferrite-cluster-checker",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
        }
    )
    def high_water_mark(partition):
        # Right after a fault or a heal a broker may answer LEADER_NOT_AVAILABLE for a moment
        # (an election, or a returning broker learning the leader); clients ask again.
        def asked():
            try:
                return consumer.get_watermark_offsets(
                    confluent_kafka.TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S
                )[1]
            except confluent_kafka.KafkaException:
                return None

        return wait_until(asked, f"the high-water mark of {topic}/{partition}")

    try:
        ends = {partition: high_water_mark(partition) for partition in range(partition_count)}
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, partition, confluent_kafka.OFFSET_BEGINNING)
                for partition in range(partition_count)
            ]
        )
        read = {partition: {} for partition in range(partition_count)}
        # Offsets the Raft core's own control batches take are never delivered, so a partition
        # is read once a message at or past its last offset arrives, or once it is at its end.
        done = {partition for partition, end in ends.items() if end == 0}
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while len(done) < partition_count:
            assert time.monotonic() < deadline, (
                f"reading {topic}: partitions {sorted(set(range(partition_count)) - done)} did not reach "
                f"their high-water marks {ends} within {CLIENT_DEADLINE_S:.0f} s "
                f"(read up to {[max(offsets, default=None) for offsets in read.values()]})"
            )
            message = consumer.poll(0.2)
            if message is None:
                continue
            partition, offset = message.partition(), message.offset()
            error = message.error()
            if error is not None:
                assert error.code() == confluent_kafka.KafkaError._PARTITION_EOF, f"consume error: {error}"
                if offset >= ends[partition]:
                    done.add(partition)
                continue
            if offset < ends[partition]:
                assert offset not in read[partition], (
                    f"partition {partition}: offset {offset} delivered twice"
                )
                read[partition][offset] = Read(key=message.key(), value=message.value())
            if offset >= ends[partition] - 1:
                done.add(partition)
        return read
    finally:
        consumer.close()


def check_acknowledged(read, producer):
    """Every message `producer` (a ContinuousProducer or a ProducerGroup) was told is stored
    exactly once, at the partition and offset it was acknowledged at (in that partition, for
    librdkafka's implicit acks, which carry no offset), with its key; in each
    partition each producer's messages in the order it sent them; nothing else stored."""
    problems = []
    members = {member.number: member for member in producer.members}
    places = defaultdict(list)  # (producer number, index) -> [(partition, offset)]
    for partition, messages in read.items():
        previous = {}  # producer number -> index of its last message in the partition
        for offset in sorted(messages):
            message = messages[offset]
            number, index = ContinuousProducer.parse(message.value)
            places[(number, index)].append((partition, offset))
            if number not in members or (message.key, message.value) != members[number].message(index):
                problems.append(f"partition {partition} offset {offset}: {message} was never sent")
            if previous.get(number, -1) >= index:
                problems.append(
                    f"partition {partition} offset {offset}: producer {number}'s message {index} "
                    f"after its message {previous[number]}"
                )
            previous[number] = index
    for place, found in places.items():
        if len(found) > 1:
            problems.append(f"message {place} (producer, index) is stored more than once: at {found}")
    acked_count = 0
    for number, member in members.items():
        with member.lock:
            acked = dict(member.acked)
        acked_count += len(acked)
        for index, (partition, offset, _) in sorted(acked.items()):
            found = places.get((number, index))
            if not found:
                problems.append(
                    f"producer {number}'s message {index}, acknowledged at {partition}/{offset}, is missing"
                )
            elif offset is None:
                # Acknowledged without an offset: librdkafka's implicit ack (a request whose answer
                # never came, a timeout or a closed connection, is known stored once a later
                # request of the same idempotent producer succeeds: `rd_kafka_dr_implicit_ack`).
                # It must still be stored, once, in that partition.
                if found[0][0] != partition:
                    problems.append(
                        f"producer {number}'s message {index}, acknowledged in partition {partition}, is at {found}"
                    )
            elif found[0] != (partition, offset):
                problems.append(
                    f"producer {number}'s message {index}, acknowledged at {partition}/{offset}, is at {found}"
                )
    assert not problems, (
        f"{len(problems)} problem(s) in {sum(map(len, read.values()))} message(s) read, "
        f"{acked_count} acknowledged:\n- " + "\n- ".join(problems[:30])
    )


def check_offsets_kept(earlier, later):
    """Every offset read both times holds the same message both times."""
    changed = [
        (partition, offset, message, later[partition][offset])
        for partition, messages in earlier.items()
        for offset, message in messages.items()
        if offset in later[partition] and later[partition][offset] != message
    ]
    assert not changed, (
        f"{len(changed)} offset(s) now hold other data (partition, offset, was, is): {changed[:10]}"
    )
    lost = [
        (partition, offset)
        for partition, messages in earlier.items()
        for offset in messages
        if offset not in later[partition]
    ]
    assert not lost, f"{len(lost)} committed offset(s) read earlier are gone: {lost[:10]}"
