"""kafkajs (Node.js), a Kafka client written without librdkafka's or Java's code, against a
broker alone: keyed messages and a consumer group of two members (`kafkajs/group.js`), and
Kafka's transactions (`kafkajs/transactions.js`): an aborted transaction, a
consume-transform-produce loop committing its group's offsets inside each transaction, a second
producer fencing the first, and kafkajs's own read_committed consumer (it filters aborted
records itself, from the fetch response's aborted-transaction list). The scripts do the client's
part and report it; the log is then read back through confluent-kafka.

tools/client-tests.sh installs kafkajs (pinned by kafkajs/package-lock.json) under the cargo
target directory and points NODE_PATH at it.
"""

import json
import os
import subprocess
from pathlib import Path

import confluent_kafka

from clients import Confluent, created_topic
from support import CLIENT_DEADLINE_S, wait_until
from transactions_support import committed_offsets, read_to_end

SCRIPTS = Path(__file__).with_name("kafkajs")
PARTITIONS = 3
INPUTS = 60


def run_kafkajs(script, config, tmp_path):
    """Runs kafkajs/`script` with `config` (plus where to write its result) and returns the
    result it wrote; fails with its output if it failed."""
    result_path = tmp_path / f"{script}.result.json"
    completed = subprocess.run(
        ["node", str(SCRIPTS / script), json.dumps({**config, "resultPath": str(result_path)})],
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S * 4,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"},
    )
    assert completed.returncode == 0, f"kafkajs failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    return json.loads(result_path.read_text())


def test_kafkajs_produces_keyed_messages_and_a_group_of_two_splits_and_commits_them(broker, tmp_path):
    client = Confluent(broker.bootstrap)
    topic = created_topic(client, "kafkajs-group", PARTITIONS)
    group = f"{topic}-group"
    count, keys = 300, 30
    config = {
        "bootstrap": broker.bootstrap,
        "topic": topic,
        "partitions": PARTITIONS,
        "group": group,
        "messages": count,
        "keys": keys,
        "deadlineMs": int(CLIENT_DEADLINE_S * 1000),
    }
    result = run_kafkajs("group.js", config, tmp_path)
    consumed = result["consumed"]
    assert sorted(m["value"] for m in consumed) == sorted(f"value-{i}" for i in range(count)), "each message once"
    partitions_of_key = {}
    for message in consumed:
        partitions_of_key.setdefault(message["key"], set()).add(message["partition"])
    assert all(len(p) == 1 for p in partitions_of_key.values()), "a key's messages all in one partition"
    for partition in range(PARTITIONS):
        in_order = [int(m["value"].split("-")[1]) for m in consumed if m["partition"] == partition]
        offsets = [int(m["offset"]) for m in consumed if m["partition"] == partition]
        assert in_order == sorted(in_order) and offsets == list(range(len(offsets))), f"partition {partition}"
    split = {name: set(partitions) for name, partitions in result["split"].items()}
    assert split["a"] | split["b"] == set(range(PARTITIONS)) and not split["a"] & split["b"], split
    assert result["splitOnceConsumed"] == result["split"], "no rebalance while the members consumed"
    ends = {p: sum(1 for m in consumed if m["partition"] == p) for p in range(PARTITIONS)}
    wait_until(lambda: committed_offsets(broker.bootstrap, group, topic, PARTITIONS) == ends, "the group's commits")


def test_kafkajs_transactions_commit_abort_fence_and_read_committed(broker, tmp_path):
    client = Confluent(broker.bootstrap)
    source = created_topic(client, "kafkajs-source", PARTITIONS)
    sink = created_topic(client, "kafkajs-sink", PARTITIONS)
    inputs = [f"in-{index:03d}" for index in range(INPUTS)]
    plain = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for index, value in enumerate(inputs):
        plain.produce(source, value=value.encode(), partition=index % PARTITIONS)
    assert plain.flush(CLIENT_DEADLINE_S) == 0
    aborted = [f"aborted-{index}" for index in range(9)]
    group = f"{source}-transform"
    config = {
        "bootstrap": broker.bootstrap,
        "source": source,
        "sink": sink,
        "partitions": PARTITIONS,
        "group": group,
        "transactionalId": f"{source}-worker",
        "inputs": INPUTS,
        "abortedValues": aborted,
        "deadlineMs": int(CLIENT_DEADLINE_S * 1000),
    }
    result = run_kafkajs("transactions.js", config, tmp_path)
    expected = sorted(f"out-{value}" for value in inputs)

    assert result["transformed"] == INPUTS, result
    assert result["fenced"] in ("INVALID_PRODUCER_EPOCH", "PRODUCER_FENCED"), (
        f"the fenced producer's transaction failed with {result['fenced']!r}, not a fencing error"
    )
    assert sorted(result["read"]) == expected, "kafkajs's read_committed consumer saw other records"

    committed = read_to_end(broker.bootstrap, sink, "read_committed", PARTITIONS)
    assert sorted(value.decode() for values in committed.values() for value in values) == expected
    uncommitted = read_to_end(broker.bootstrap, sink, "read_uncommitted", PARTITIONS)
    assert sorted(value.decode() for values in uncommitted.values() for value in values) == sorted(
        expected + aborted
    ), "the aborted records are in the log, hidden only from read_committed"

    assert committed_offsets(broker.bootstrap, group, source, PARTITIONS) == {p: INPUTS // PARTITIONS for p in range(PARTITIONS)}
