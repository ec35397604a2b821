"""A 3-broker cluster under faults, seen through real clients: idempotent acks=all producers keep
writing while a batch over max.message.bytes is refused and leaders are killed with SIGKILL,
frozen with SIGSTOP past the election timeout, stopped with SIGTERM and restarted (at once, as a
supervisor does), or (where network namespaces can be created) cut off from the other brokers,
and a checker then proves that nothing they were told is stored was lost, duplicated, reordered
or moved to another offset; kafka-python follows a leader change by itself.

How long each failover took (from the fault to the first acknowledgement of a message sent
after it to a partition the faulty broker led) is printed on the terminal: it is what a user of
the cluster waits when a broker fails.
"""
import time
from collections import defaultdict

import confluent_kafka
import confluent_kafka.admin
import kafka
import kafka.errors

from cluster_checks import (
    ContinuousProducer,
    ProducerGroup,
    check_acknowledged,
    check_offsets_kept,
    measured_failover,
    read_to_high_water_marks,
)
from cluster_support import (  # noqa: F401 (`cluster` and `namespaced_cluster` are fixtures)
    FROZEN_S,
    MESSAGE_TOO_LARGE,
    OVERSIZE_VALUE_BYTES,
    PARTITIONS,
    SERVING_DEADLINE_S,
    cluster,
    created_topic,
    namespaced_cluster,
)
from support import CLIENT_DEADLINE_S


def oversize_refused(cluster, topic, partition):
    """Sends one record of OVERSIZE_VALUE_BYTES to `partition` through a client allowed to
    send one that large (a plain acks=all producer, whose refused message costs no other
    message anything) and returns the code of the error it was refused with."""
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": cluster.bootstrap(),
            "acks": "all",
            "message.max.bytes": 2 * OVERSIZE_VALUE_BYTES,
            "message.timeout.ms": int(SERVING_DEADLINE_S * 2000),
        }
    )
    delivered = []
    producer.produce(
        topic,
        b"x" * OVERSIZE_VALUE_BYTES,
        partition=partition,
        on_delivery=lambda error, _: delivered.append(error),
    )
    assert producer.flush(SERVING_DEADLINE_S * 4) == 0, "the oversize message was neither refused nor stored"
    assert len(delivered) == 1 and delivered[0] is not None, "a message over max.message.bytes was stored"
    return delivered[0].code()


def failed_over(producer, leaders, broker, fault_name, fault):
    """Applies `fault` to `broker` (which leads some partitions in `leaders`), waits for each of
    those to acknowledge again, and returns (description, {partition: seconds})."""
    led = [partition for partition, leader in leaders.items() if leader == broker]
    description = f"{fault_name} of broker {broker} (leader of {led})"
    fault_at = time.monotonic()
    fault(broker)
    return description, measured_failover(producer, fault_at, led, description)


def restarted(cluster, producer, broker):
    """Starts `broker` again and waits until every broker is listed and the producer goes on."""
    cluster.restart(broker)
    cluster.wait_all_listed()
    producer.wait_for_progress(200, f"after broker {broker} restarted")


def test_idempotent_producers_through_an_oversize_batch_kills_and_freezes(cluster, capsys):
    """Three idempotent producers, each bootstrapped from another broker, write three
    partitions while one batch over max.message.bytes is refused and leaders are killed,
    frozen and stopped; nothing any of them was told is stored may be lost, duplicated,
    reordered or moved."""
    topic = created_topic(cluster, "faults")
    producer = ProducerGroup(
        [cluster.bootstrap([node]) for node in cluster.node_ids],
        topic,
        rate_per_s=ContinuousProducer.RATE_PER_S // len(cluster.node_ids),
    )
    producer.start()
    failovers = []  # (fault, {partition: seconds})
    try:
        producer.wait_for_progress(300, "before the first fault")

        # (0) One batch over max.message.bytes, amid the producers' own: refused, and every
        # partition goes on taking their messages at once.
        refused_at = time.monotonic()
        assert oversize_refused(cluster, topic, partition=0) == MESSAGE_TOO_LARGE
        fault = "a refused oversize batch to partition 0"
        failovers.append(
            (fault, measured_failover(producer, refused_at, range(PARTITIONS), fault, SERVING_DEADLINE_S))
        )

        # (a) kill -9 the leader of partition 0, then restart it.
        leaders = cluster.leaders(topic)
        victim = leaders[0]
        failovers.append(failed_over(producer, leaders, victim, "kill -9", cluster.kill9))
        restarted(cluster, producer, victim)

        middle = read_to_high_water_marks(cluster, topic)

        # (b) SIGSTOP a leader past the election timeout, then SIGCONT it.
        leaders = cluster.leaders(topic)
        frozen = leaders[1]
        frozen_at = time.monotonic()
        fault = f"SIGSTOP for {FROZEN_S:.0f} s"
        failovers.append(failed_over(producer, leaders, frozen, fault, cluster.sigstop))
        # The fault is the freeze itself: it lasts FROZEN_S whatever the others do meanwhile.
        time.sleep(max(0.0, frozen_at + FROZEN_S - time.monotonic()))
        cluster.sigcont(frozen)
        cluster.wait_all_listed()
        producer.wait_for_progress(200, f"after broker {frozen} was thawed")

        # (c) kill -9 another leader (not the first victim, when another leads), then restart it.
        leaders = cluster.leaders(topic)
        candidates = sorted(set(leaders.values()) - {victim}) or sorted(set(leaders.values()))
        second = candidates[0]
        failovers.append(failed_over(producer, leaders, second, "kill -9", cluster.kill9))
        restarted(cluster, producer, second)

        # (d) stop the leader of partition 2 as an operator does (SIGTERM), then restart it.
        leaders = cluster.leaders(topic)
        stopped = leaders[2]
        failovers.append(failed_over(producer, leaders, stopped, "SIGTERM", cluster.stop))
        restarted(cluster, producer, stopped)
    finally:
        producer.stop()
    with capsys.disabled():
        print(f"\nfailover times ({producer.outcome()}):")
        for fault, seconds in failovers:
            per_partition = ", ".join(f"partition {p}: {s:.2f} s" for p, s in sorted(seconds.items()))
            print(f"  {fault}: {per_partition}")

    assert not producer.failed and not producer.fatal_errors, (
        f"the idempotent producer gave up on messages: {producer.outcome()}"
    )
    final = read_to_high_water_marks(cluster, topic)
    for partition, messages in final.items():
        assert messages, f"partition {partition} got no messages: the keys should cover every partition"
    check_acknowledged(final, producer)
    check_offsets_kept(middle, final)


def test_rolling_restart_at_once_after_kill_9(cluster):
    """Each broker in turn killed with SIGKILL and started again at once on its Kafka,
    inter-broker and metrics ports, as a supervisor restarts it, while its predecessor's
    listening sockets may linger: every broker comes back, and nothing acknowledged is lost."""
    topic = created_topic(cluster, "rolling")
    producer = ContinuousProducer(cluster.bootstrap(), topic)
    producer.start()
    try:
        producer.wait_for_progress(200, "before the rolling restart")
        for node in cluster.node_ids:
            cluster.kill9(node)
            restarted(cluster, producer, node)
    finally:
        producer.stop()
    assert all(broker.starts == 2 for broker in cluster.brokers.values())
    assert not producer.failed and not producer.fatal_errors, (
        f"the idempotent producer gave up on messages: {producer.outcome()}"
    )
    check_acknowledged(read_to_high_water_marks(cluster, topic), producer)


def test_kafka_python_follows_a_leader_change(cluster, capsys):
    topic = created_topic(cluster, "follow")
    partition = 0
    producer = kafka.KafkaProducer(
        bootstrap_servers=cluster.bootstrap().split(","),
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=5000,
        retry_backoff_ms=100,
        reconnect_backoff_ms=20,
        reconnect_backoff_max_ms=250,
        linger_ms=5,
        delivery_timeout_ms=int(CLIENT_DEADLINE_S * 3000),
    )
    futures = []  # (value, future)
    acked_at = {}  # value -> monotonic time of the acknowledgement

    def send(count, pause_s=0.0):
        for _ in range(count):
            value = f"follow-{len(futures):06d}".encode()
            future = producer.send(topic, key=b"k", value=value, partition=partition)
            future.add_callback(lambda _metadata, value=value: acked_at.setdefault(value, time.monotonic()))
            futures.append((value, future))
            time.sleep(pause_s)  # pacing the sends, not waiting for anything

    try:
        send(200)
        producer.flush(CLIENT_DEADLINE_S)
        victim = cluster.leader(topic, partition)
        send(100)  # in flight while the leader dies
        killed_at = time.monotonic()
        sent_before_kill = len(futures)
        cluster.kill9(victim)
        send(300, pause_s=0.005)
        producer.flush(CLIENT_DEADLINE_S * 2)
    finally:
        producer.close(timeout=CLIENT_DEADLINE_S)
    assert all(future.is_done for _, future in futures), "sends neither succeeded nor failed after flush"
    failed = [(value, future.exception) for value, future in futures if future.failed()]
    stored = {value: future.value.offset for value, future in futures if future.succeeded()}
    assert not failed, (
        f"{len(failed)} of {len(futures)} send(s) failed across the leader change: {failed[:5]}"
    )
    new_leader = cluster.leader(topic, partition)
    assert new_leader != victim, f"broker {victim} was killed, yet it leads partition {partition}"
    after_kill = [acked_at[value] for value, _ in futures[sent_before_kill:]]
    with capsys.disabled():
        print(
            f"\nkafka-python: partition {partition} moved from broker {victim} to {new_leader}; the first "
            f"send after the kill was acknowledged {min(after_kill) - killed_at:.2f} s after it"
        )

    consumer = kafka.KafkaConsumer(
        bootstrap_servers=cluster.bootstrap().split(","), enable_auto_commit=False, fetch_max_wait_ms=100
    )
    try:
        topic_partition = kafka.TopicPartition(topic, partition)
        consumer.assign([topic_partition])
        consumer.seek_to_beginning(topic_partition)
        end = consumer.end_offsets([topic_partition])[topic_partition]
        read = defaultdict(list)  # value -> offsets
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while consumer.position(topic_partition) < end:
            assert time.monotonic() < deadline, (
                f"reading partition {partition} did not reach its end {end} within {CLIENT_DEADLINE_S:.0f} s"
            )
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    read[record.value].append(record.offset)
    finally:
        consumer.close()
    duplicated = {value: offsets for value, offsets in read.items() if len(offsets) > 1}
    assert not duplicated, (
        f"{len(duplicated)} message(s) stored more than once: {list(duplicated.items())[:5]}"
    )
    misplaced = [
        (value, offset, read.get(value)) for value, offset in stored.items() if read.get(value) != [offset]
    ]
    assert not misplaced, (
        f"{len(misplaced)} of {len(stored)} acknowledged message(s) not at their offset "
        f"(value, acknowledged at, read at): {misplaced[:10]}"
    )


def test_a_leader_cut_off_from_the_other_brokers(namespaced_cluster, capsys):
    cluster = namespaced_cluster
    # One partition: the broker cut off leads every partition the producer writes to, so the
    # producer may be connected to it alone (librdkafka connects only to the brokers it needs),
    # the hardest case for a client to find the new leader in.
    topic = created_topic(cluster, "cutoff", partition_count=1)
    producer = ContinuousProducer(cluster.bootstrap(), topic)
    producer.start()
    try:
        producer.wait_for_progress(300, "before the cut")
        leaders = cluster.leaders(topic, 1)
        victim = leaders[0]
        fault, failover = failed_over(producer, leaders, victim, "the cut-off", cluster.cut)
        new_leaders = cluster.leaders(topic, 1)
        assert all(new_leaders[partition] != victim for partition in failover), (
            f"the brokers it was cut off from still name broker {victim} as a leader: {new_leaders}"
        )
        producer.wait_for_progress(200, f"while broker {victim} is cut off")
        middle = read_to_high_water_marks(cluster, topic, 1)
        cluster.heal(victim)
        cluster.wait_all_listed()
        producer.wait_for_progress(200, f"after broker {victim} was reconnected")
    finally:
        producer.stop()
    with capsys.disabled():
        per_partition = ", ".join(f"partition {p}: {s:.2f} s" for p, s in sorted(failover.items()))
        print(f"\nfailover after {fault}: {per_partition} ({producer.outcome()})")
    assert not producer.failed and not producer.fatal_errors, (
        f"the idempotent producer gave up on messages: {producer.outcome()}"
    )
    final = read_to_high_water_marks(cluster, topic, 1)
    check_acknowledged(final, producer)
    check_offsets_kept(middle, final)
