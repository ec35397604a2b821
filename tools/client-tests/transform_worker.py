"""The consume-transform-produce loop of test_cluster_transactions.py as a program of its own:
a confluent-kafka `read_committed` consumer (manually assigned every partition of the source,
starting from the group's committed offsets) and a transactional producer that writes
`b"out-" + value` to the same partition of the sink and commits the group's offsets with it
(send_offsets_to_transaction), at most TRANSACTION_INPUTS inputs a transaction.

It recovers from errors as confluent-kafka documents: a transaction that must be aborted is
aborted, and after any error the producer and the consumer are made anew (a new producer with
the same transactional.id fences the old one and ends its transaction). It is a separate process
so that its supervisor (the test) can kill it with SIGKILL when it makes no progress and start
another, as a real deployment's supervisor does: librdkafka can wait forever inside
send_offsets_to_transaction (see the test's docstring), and a thread cannot be killed.

Usage: transform_worker.py CONFIG_JSON with "bootstrap", "source", "sink", "group",
"transactional_id" and "partitions". It writes "committed" on stdout after each committed
transaction, and the errors it recovered from on stderr; it runs until killed.
"""

import json
import sys

import confluent_kafka

from transactions_support import isolated_consumer, transactional_producer

# Inputs one transaction carries at most.
TRANSACTION_INPUTS = 10
# How long each transactional call may take, and a transaction may stay open: short, so that a
# transaction stuck on a dead broker fails (and is recovered from) well within the test.
API_TIMEOUT_S = 10.0


def transform(config, producer, reader):
    """Transforms forever; raises what the clients raise."""
    while True:
        batch = [m for m in reader.consume(TRANSACTION_INPUTS, 0.2) if m.error() is None]
        if not batch:
            continue
        producer.begin_transaction()
        for message in batch:
            producer.produce(config["sink"], value=b"out-" + message.value(), partition=message.partition())
        producer.send_offsets_to_transaction(
            reader.position(reader.assignment()), reader.consumer_group_metadata(), API_TIMEOUT_S
        )
        producer.commit_transaction(API_TIMEOUT_S)
        sys.stdout.write("committed\n")
        sys.stdout.flush()


def main():
    config = json.loads(sys.argv[1])
    timeouts = {"transaction.timeout.ms": int(API_TIMEOUT_S * 1000), "message.timeout.ms": int(API_TIMEOUT_S * 1000)}
    while True:
        producer = reader = None
        try:
            producer = transactional_producer(config["bootstrap"], config["transactional_id"], **timeouts)
            reader = isolated_consumer(config["bootstrap"], "read_committed", group=config["group"])
            reader.assign([confluent_kafka.TopicPartition(config["source"], p) for p in range(config["partitions"])])
            transform(config, producer, reader)
        except confluent_kafka.KafkaException as exception:
            error = exception.args[0]
            print(f"transform_worker: {error}", file=sys.stderr, flush=True)
            if producer is not None and error.txn_requires_abort():
                try:
                    producer.abort_transaction(API_TIMEOUT_S)
                except confluent_kafka.KafkaException as abort_exception:
                    print(f"transform_worker: abort: {abort_exception.args[0]}", file=sys.stderr, flush=True)
        finally:
            if reader is not None:
                reader.close()


if __name__ == "__main__":
    main()
