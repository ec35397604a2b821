"""Consumer lag as an operator sees it: a kafka-python group consumes a topic and commits, stops,
and N new messages arrive; `ferrite group describe` and the metrics endpoint must both report a
lag of exactly N, partition by partition."""

import json
import os
import re
import subprocess
import urllib.request

from kafka import KafkaConsumer

from clients import KafkaPython, created_topic
from support import CLIENT_DEADLINE_S, messages, wait_until

GROUP = "lagging"
PARTITIONS = 3
FIRST = 60
NEW = 17
LAG_SERIES = re.compile(
    r'^ferrite_group_lag\{group="' + GROUP + r'",topic="([^"]+)",partition="(\d+)"\} (\d+)$'
)


def describe(broker):
    """`ferrite group describe --json` of the group: partition -> lag."""
    completed = subprocess.run(
        [os.environ["FERRITE_BIN"], "group", "describe", GROUP, "--bootstrap", broker.bootstrap, "--json"],
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr
    (group,) = json.loads(completed.stdout)
    return {row["partition"]: row["lag"] for row in group["partitions"]}


def metrics_lag(broker, topic):
    """The ferrite_group_lag series of the group on `topic`: partition -> lag."""
    with urllib.request.urlopen(broker.metrics_url, timeout=CLIENT_DEADLINE_S) as response:
        text = response.read().decode()
    lags = {}
    for line in text.splitlines():
        match = LAG_SERIES.match(line)
        if match and match.group(1) == topic:
            lags[int(match.group(2))] = int(match.group(3))
    return lags


def test_a_stopped_group_lags_by_exactly_the_messages_produced_since(broker):
    client = KafkaPython(broker.bootstrap)
    try:
        topic = created_topic(client, "lag", PARTITIONS)
        client.produce(topic, messages(FIRST, key_count=30, label="first"), acks="all")
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=GROUP,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
        )
        read = []

        def read_everything():
            read.extend(record for batch in consumer.poll(200).values() for record in batch)
            return len(read) >= FIRST

        wait_until(read_everything, f"the group to read the first {FIRST} messages")
        assert len(read) == FIRST
        consumer.commit()
        consumer.close()
        assert all(lag == 0 for lag in describe(broker).values()), "caught up before the new messages"

        ends_before = client.end_offsets(topic)
        client.produce(topic, messages(NEW, key_count=NEW, label="new"), acks="all")
        ends_after = client.end_offsets(topic)
        added = {partition: ends_after[partition] - ends_before[partition] for partition in ends_after}
        assert sum(added.values()) == NEW

        assert describe(broker) == added
        wait_until(lambda: metrics_lag(broker, topic) == added, f"the metrics to show a lag of {added}")
    finally:
        client.close()
