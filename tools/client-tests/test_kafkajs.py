"""kafkajs (Node.js), a Kafka client written without librdkafka or Java's code, running Kafka's
transactions against a broker alone: an aborted transaction, a consume-transform-produce loop
committing its group's offsets inside each transaction, a second producer fencing the first,
and kafkajs's own read_committed consumer (it filters aborted records itself, from the fetch
response's aborted-transaction list). `kafkajs/transactions.js` does the client's part; the log
is then read back through confluent-kafka at both isolation levels.

tools/client-tests.sh installs kafkajs (pinned by kafkajs/package-lock.json) under the cargo
target directory and points NODE_PATH at it.
"""

import json
import os
import subprocess
from pathlib import Path

import confluent_kafka

from clients import Confluent, created_topic
from support import CLIENT_DEADLINE_S
from transactions_support import isolated_consumer, read_to_end

SCRIPT = Path(__file__).with_name("kafkajs") / "transactions.js"
PARTITIONS = 3
INPUTS = 60


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
    result_path = tmp_path / "kafkajs-result.json"
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
        "resultPath": str(result_path),
    }
    completed = subprocess.run(
        ["node", str(SCRIPT), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S * 4,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"},
    )
    assert completed.returncode == 0, f"kafkajs failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    result = json.loads(result_path.read_text())
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

    reader = isolated_consumer(broker.bootstrap, "read_committed", group=group)
    try:
        offsets = reader.committed(
            [confluent_kafka.TopicPartition(source, p) for p in range(PARTITIONS)], timeout=CLIENT_DEADLINE_S
        )
    finally:
        reader.close()
    assert {tp.partition: tp.offset for tp in offsets} == {p: INPUTS // PARTITIONS for p in range(PARTITIONS)}
