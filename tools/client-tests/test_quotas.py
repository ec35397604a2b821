"""Client quotas as users meet them: quotas set, listed and deleted with `ferrite quota`
(AlterClientQuotas and DescribeClientQuotas; neither confluent-kafka nor kafka-python has an
admin call for them), a confluent-kafka producer and consumer over their byte rate slowed to it
and told so (librdkafka's throttle callback, from the responses' throttle_time_ms), a client
over its request percentage told so, a client id
without a quota not slowed, full speed back once the quota is deleted, quotas that survive a
restart, and in a cluster a quota set through one broker listed and enforced by every broker.

Rates are bounded from above only where the broker must slow a client (a loaded machine can
only make a client slower); the one lower bound, for the client without a quota, is a small
multiple of the quota that any build reaches. Kafka measures a new client over ten seconds, so
it may first send about ten seconds' worth of its quota at full speed: the throttled rate is
measured from the first throttle the client reports.
"""

import subprocess
import time
import urllib.request

from confluent_kafka import Consumer, Producer

from cluster_support import cluster, created_topic  # noqa: F401 (a fixture)
from conftest import FERRITE_BIN
from support import CLIENT_DEADLINE_S, topic_name, wait_until

KIB = 1024
PRODUCE_QUOTA = 256 * KIB
FETCH_QUOTA = 128 * KIB
# How long a throttled rate is measured.
MEASURE_S = 6.0
# The bound a throttled rate must stay under: the quota and a generous band.
BAND = 1.5
VALUE_BYTES = 8 * KIB


def ferrite_quota(*arguments, check=True):
    done = subprocess.run(
        [FERRITE_BIN, "quota", *arguments],
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S,
    )
    if check:
        assert done.returncode == 0, f"ferrite quota {' '.join(arguments)}: {done.stderr}"
    return done


def listed(bootstrap, *entity):
    return ferrite_quota("list", "--bootstrap", bootstrap, *entity).stdout.splitlines()


def metric(broker, name):
    with urllib.request.urlopen(broker.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


class Throttles:
    """What librdkafka reported through its throttle callback."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event.throttle_time)


def produce_for(broker, topic, client_id, seconds_after_first_throttle=None, seconds=None):
    """Produces as fast as the client can; returns (bytes per second acknowledged, throttle
    events). Measures from the first reported throttle for `seconds_after_first_throttle`, or
    from the start for `seconds`."""
    throttles = Throttles()
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "client.id": client_id,
            "linger.ms": 5,
            # Small requests: the broker throttles after each, so the rate is even.
            "batch.size": 64 * KIB,
            "throttle_cb": throttles,
        }
    )
    acked = [0]

    def delivered(error, message):
        assert error is None, error
        acked[0] += len(message.value())

    value = b"q" * VALUE_BYTES
    started = time.monotonic()
    measured_from = started if seconds is not None else None
    acked_at_start = 0
    first_throttle_deadline = started + CLIENT_DEADLINE_S
    while True:
        now = time.monotonic()
        if measured_from is None:
            if throttles.events:
                measured_from, acked_at_start = now, acked[0]
            else:
                assert now < first_throttle_deadline, "the producer was never told it is throttled"
        if measured_from is not None:
            length = seconds if seconds is not None else seconds_after_first_throttle
            if now - measured_from >= length:
                break
        try:
            producer.produce(topic, value, on_delivery=delivered)
        except BufferError:
            producer.poll(0.05)
        producer.poll(0)
    rate = (acked[0] - acked_at_start) / (time.monotonic() - measured_from)
    producer.flush(CLIENT_DEADLINE_S)
    return rate, throttles.events


def test_a_producer_over_its_byte_rate_is_slowed_to_it_until_the_quota_is_deleted(broker):
    topic = topic_name("quota-produce")
    ferrite_quota("set", "--bootstrap", broker.bootstrap, "--client-id", "slow", "--producer-byte-rate", str(PRODUCE_QUOTA))
    assert listed(broker.bootstrap, "--client-id", "slow") == [f"client-id slow producer_byte_rate {PRODUCE_QUOTA}"]

    throttled_rate, throttles = produce_for(broker, topic, "slow", seconds_after_first_throttle=MEASURE_S)
    assert throttles and max(throttles) > 0
    assert throttled_rate <= BAND * PRODUCE_QUOTA, f"{throttled_rate:.0f} B/s with a quota of {PRODUCE_QUOTA} B/s"
    assert metric(broker, "ferrite_quota_throttled_requests_total") > 0
    assert metric(broker, "ferrite_quota_throttle_time_ms_total") > 0

    # Another client id has no quota: far faster, never throttled.
    free_rate, free_throttles = produce_for(broker, topic, "fast", seconds=3.0)
    assert free_throttles == []
    assert free_rate > 2 * PRODUCE_QUOTA, f"{free_rate:.0f} B/s without a quota"

    # The quota deleted, the same client id goes at full speed again.
    ferrite_quota("delete", "--bootstrap", broker.bootstrap, "--client-id", "slow")
    assert listed(broker.bootstrap) == []
    again_rate, again_throttles = produce_for(broker, topic, "slow", seconds=3.0)
    assert again_throttles == []
    assert again_rate > 2 * PRODUCE_QUOTA, f"{again_rate:.0f} B/s after the quota was deleted"


def test_a_consumer_over_its_byte_rate_is_slowed_to_it(broker):
    topic = topic_name("quota-fetch")
    # Small batches: a fetch response holds at least one whole batch, whatever its limits say.
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "client.id": "loader", "linger.ms": 5, "batch.size": 32 * KIB}
    )
    total = 6 << 20
    for _ in range(total // VALUE_BYTES):
        while True:
            try:
                producer.produce(topic, b"f" * VALUE_BYTES)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(CLIENT_DEADLINE_S) == 0
    ferrite_quota(
        "set", "--bootstrap", broker.bootstrap, "--user", "ANONYMOUS", "--client-id", "reader", "--consumer-byte-rate", str(FETCH_QUOTA)
    )
    throttles = Throttles()
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "client.id": "reader",
            "group.id": topic,
            "auto.offset.reset": "earliest",
            # Small responses: the broker throttles after each, so the rate is even.
            "fetch.max.bytes": 64 * KIB,
            "max.partition.fetch.bytes": 64 * KIB,
            "message.max.bytes": 64 * KIB,
            # Little read ahead: what the application reads is what was fetched just before.
            "queued.max.messages.kbytes": 64,
            "queued.min.messages": 1,
            "fetch.queue.backoff.ms": 10,
            "throttle_cb": throttles,
        }
    )
    consumer.subscribe([topic])
    consumed = 0
    measured_from = None
    consumed_at_start = 0
    deadline = time.monotonic() + CLIENT_DEADLINE_S
    try:
        while True:
            now = time.monotonic()
            if measured_from is None and throttles.events:
                measured_from, consumed_at_start = now, consumed
            if measured_from is not None and now - measured_from >= MEASURE_S:
                break
            assert measured_from is not None or now < deadline, "the consumer was never told it is throttled"
            assert consumed < total, "the consumer read everything without being throttled"
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                consumed += len(message.value())
        rate = (consumed - consumed_at_start) / (time.monotonic() - measured_from)
    finally:
        consumer.close()
    assert rate <= BAND * FETCH_QUOTA, f"{rate:.0f} B/s with a quota of {FETCH_QUOTA} B/s"


def test_a_client_over_its_request_percentage_is_throttled(broker):
    topic = topic_name("quota-requests")
    # A thousandth of a percent of a core: 10 µs of the broker's time per second.
    ferrite_quota("set", "--bootstrap", broker.bootstrap, "--client-id", "busy", "--request-percentage", "0.001")

    def throttled_after_sending(client_id, messages):
        throttles = Throttles()
        producer = Producer({"bootstrap.servers": broker.bootstrap, "client.id": client_id, "throttle_cb": throttles})
        for _ in range(messages):
            producer.produce(topic, b"r")
            assert producer.flush(CLIENT_DEADLINE_S) == 0 or throttles.events
            if throttles.events:
                break
        producer.poll(0)
        producer.purge()
        return throttles.events

    assert throttled_after_sending("busy", 50), "the busy client was never told it is throttled"
    assert throttled_after_sending("idle", 20) == []


def test_quotas_are_described_by_entity_refused_when_invalid_and_survive_a_restart(broker):
    bootstrap = broker.bootstrap
    ferrite_quota("set", "--bootstrap", bootstrap, "--user", "alice", "--producer-byte-rate", "1000")
    ferrite_quota("set", "--bootstrap", bootstrap, "--user", "alice", "--client-id", "app", "--consumer-byte-rate", "2000")
    ferrite_quota("set", "--bootstrap", bootstrap, "--default-user", "--request-percentage", "12.5")
    ferrite_quota("set", "--bootstrap", bootstrap, "--default-client-id", "--producer-byte-rate", "3000", "--consumer-byte-rate", "4000")
    ferrite_quota("set", "--bootstrap", bootstrap, "--user", "bob", "--default-client-id", "--producer-byte-rate", "5000")
    everything = [
        "client-id <default> producer_byte_rate 3000 consumer_byte_rate 4000",
        "user <default> request_percentage 12.5",
        "user alice producer_byte_rate 1000",
        "user alice client-id app consumer_byte_rate 2000",
        "user bob client-id <default> producer_byte_rate 5000",
    ]
    assert sorted(listed(bootstrap)) == sorted(everything)
    # A user filter matches that user's entities, with or without a client id (not strict).
    assert listed(bootstrap, "--user", "alice") == [
        "user alice producer_byte_rate 1000",
        "user alice client-id app consumer_byte_rate 2000",
    ]
    assert listed(bootstrap, "--default-user") == ["user <default> request_percentage 12.5"]
    assert listed(bootstrap, "--default-client-id") == [
        "client-id <default> producer_byte_rate 3000 consumer_byte_rate 4000",
        "user bob client-id <default> producer_byte_rate 5000",
    ]
    assert listed(bootstrap, "--user", "carol") == []

    # Kafka's checks: an unknown key, a value that is not positive, a fractional byte rate.
    unknown = ferrite_quota("delete", "--bootstrap", bootstrap, "--user", "alice", "--key", "bogus_rate", check=False)
    assert unknown.returncode != 0 and "Invalid configuration key bogus_rate" in unknown.stderr
    zero = ferrite_quota("set", "--bootstrap", bootstrap, "--user", "alice", "--request-percentage", "0", check=False)
    assert zero.returncode != 0 and "INVALID_REQUEST" in zero.stderr
    assert sorted(listed(bootstrap)) == sorted(everything), "a refused change changed nothing"

    assert broker.stop() == 0
    broker.start()
    assert sorted(listed(broker.bootstrap)) == sorted(everything)
    ferrite_quota("delete", "--bootstrap", broker.bootstrap, "--user", "alice", "--client-id", "app")
    assert "user alice client-id app consumer_byte_rate 2000" not in listed(broker.bootstrap)
    wait_until(lambda: len(listed(broker.bootstrap)) == 4, "four entities left")


def test_a_quota_set_through_one_broker_of_a_cluster_binds_on_the_others(cluster):  # noqa: F811
    one, two, three = (cluster.brokers[node].bootstrap for node in cluster.node_ids)
    quota = 64 * KIB
    ferrite_quota("set", "--bootstrap", one, "--client-id", "slow", "--producer-byte-rate", str(quota))
    for bootstrap in (one, two, three):
        wait_until(
            lambda: listed(bootstrap) == [f"client-id slow producer_byte_rate {quota}"],
            f"the quota listed by {bootstrap}",
        )
    # Every broker leads some of the partitions; each throttles the producer on its own.
    topic = created_topic(cluster, "quota-cluster")
    throttles = Throttles()
    broker_ids = set()

    def throttled(event):
        throttles(event)
        broker_ids.add(event.broker_id)

    producer = Producer(
        {"bootstrap.servers": one, "client.id": "slow", "linger.ms": 5, "batch.size": 16 * KIB, "throttle_cb": throttled}
    )
    value = b"c" * VALUE_BYTES
    deadline = time.monotonic() + 2 * CLIENT_DEADLINE_S
    while len(broker_ids) < len(cluster.node_ids):
        assert time.monotonic() < deadline, f"throttled only by brokers {sorted(broker_ids)}"
        try:
            producer.produce(topic, value)
        except BufferError:
            producer.poll(0.05)
        producer.poll(0)
    producer.purge()
    producer.flush(CLIENT_DEADLINE_S)
    assert broker_ids == set(cluster.node_ids)

    ferrite_quota("delete", "--bootstrap", three, "--client-id", "slow")
    for bootstrap in (one, two, three):
        wait_until(lambda: listed(bootstrap) == [], f"the quota gone from {bootstrap}")
