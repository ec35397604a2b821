"""Burrow, the consumer-lag monitor operators run beside Kafka, reports the exact lag of a stopped
group, against one broker and against a 3-broker cluster: a kafka-python group consumes what a
topic holds, commits and stops; more is produced; Burrow must list the group and report, partition
by partition, the offset the group committed and a lag of end offset − committed offset, and the
new lag when more is produced again.

Burrow learns all of it from the brokers as it would from Kafka (see burrow_support.py for the
requests it sends): end offsets by ListOffsets v0, commits by reading `__consumer_offsets` and
decoding its records with Kafka's schemas. Burrow drops a commit to a topic it has no end
offsets for yet, so each test first waits until Burrow reports the topic's end offsets.
"""

from kafka import KafkaConsumer

from burrow_support import POLL_INTERVAL_S, start_burrow, zookeeper  # noqa: F401 (fixtures)
from clients import KafkaPython
from clients import created_topic as created_single_broker_topic
from cluster_support import cluster  # noqa: F401 (a fixture)
from cluster_support import created_topic as created_cluster_topic
from support import CLIENT_DEADLINE_S, messages, wait_until

GROUP = "burrow-watched"
PARTITIONS = 3
# Message counts (over enough keys that each partition gets some): read and committed by the
# group, then produced after it stopped, then produced once more.
CONSUMED = 60
LAGGING = 25
MORE = 14
KEY_COUNT = 30
SESSION_TIMEOUT_MS = 6000


def consume_commit_and_stop(bootstrap, topic, ends):
    """A member of GROUP reads `topic` up to `ends` (partition -> end offset: all it holds),
    commits where it got to and leaves; returns partition -> the offset it committed."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=GROUP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        request_timeout_ms=int(CLIENT_DEADLINE_S * 1000),
    )
    try:

        def read_to_the_end():
            consumer.poll(200)
            assigned = consumer.assignment()
            return {tp.partition for tp in assigned} == set(ends) and all(
                consumer.position(tp) >= ends[tp.partition] for tp in assigned
            )

        wait_until(read_to_the_end, f"the group to read {topic} up to {ends}")
        consumer.commit()
        committed = {tp.partition: consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        consumer.close()
    return committed


def lag_expected(committed, ends):
    """partition -> (the offset the group committed, end offset − committed offset)."""
    return {partition: (committed[partition], ends[partition] - committed[partition]) for partition in ends}


def check_burrow_reports_the_lag(burrow, client, bootstrap, topic):
    client.produce(topic, messages(CONSUMED, key_count=KEY_COUNT, label="consumed"), acks="all")
    ends = client.end_offsets(topic)
    assert all(ends.values()), f"every partition has messages: {ends}"
    wait_until(
        lambda: burrow.topic_offsets(topic) == ends,
        f"Burrow to report the end offsets {ends}",
        interval_s=POLL_INTERVAL_S,
    )

    committed = consume_commit_and_stop(bootstrap, topic, ends)
    assert committed == ends, "the group committed the end of every partition"
    client.produce(topic, messages(LAGGING, key_count=KEY_COUNT, label="lagging"), acks="all")
    ends = client.end_offsets(topic)
    expected = lag_expected(committed, ends)

    wait_until(
        lambda: GROUP in burrow.groups(), f"Burrow to list the group {GROUP}", interval_s=POLL_INTERVAL_S
    )
    wait_until(
        lambda: burrow.lag(GROUP, topic) == expected,
        f"Burrow to report (committed offset, lag) per partition {expected}",
        interval_s=POLL_INTERVAL_S,
    )

    client.produce(topic, messages(MORE, key_count=KEY_COUNT, label="more"), acks="all")
    ends = client.end_offsets(topic)
    expected = lag_expected(committed, ends)
    wait_until(
        lambda: burrow.lag(GROUP, topic) == expected,
        f"Burrow to report the lag grown to {expected}",
        interval_s=POLL_INTERVAL_S,
    )


def test_burrow_reports_the_lag_of_a_stopped_group(broker, start_burrow):  # noqa: F811
    burrow = start_burrow([broker.bootstrap])
    client = KafkaPython(broker.bootstrap)
    try:
        topic = created_single_broker_topic(client, "burrow", PARTITIONS)
        check_burrow_reports_the_lag(burrow, client, broker.bootstrap, topic)
    finally:
        client.close()


def test_burrow_reports_the_lag_of_a_stopped_group_in_a_cluster(cluster, start_burrow):  # noqa: F811
    burrow = start_burrow(cluster.bootstrap().split(","))
    client = KafkaPython(cluster.bootstrap())
    try:
        topic = created_cluster_topic(cluster, "burrow", PARTITIONS)
        check_burrow_reports_the_lag(burrow, client, cluster.bootstrap(), topic)
    finally:
        client.close()
