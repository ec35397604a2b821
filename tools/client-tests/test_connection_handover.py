"""Connection handover as a real client meets it: confluent-kafka producing to one partition of a
two-shard broker with acks=all and linger.ms=0 (a produce request per message, many in flight).
The kernel puts a producer's connection on either shard; one that lands on the shard that does
not own the partition moves to the one that does (`ferrite_connections_moved_total`), and every
message is acknowledged and read back once, in order, whichever way its connection went."""

import urllib.request

from clients import Confluent, created_topic
from support import CLIENT_DEADLINE_S, check_log, messages

# Producers are started until one's connection landed on the shard that does not own the
# partition, which each does with a chance of one half: 20 all on the owner is one in a million.
PRODUCERS_MAX = 20
MESSAGES_PER_PRODUCER = 500
# linger.ms=0 and a message per batch: librdkafka sends a produce request per message, as many
# in flight as it likes (without the second it packs the messages queued meanwhile together).
ONE_REQUEST_PER_MESSAGE = {"linger.ms": 0, "batch.num.messages": 1}


def metric_total(broker, name):
    """The sum over shards of the per-shard series `name`."""
    with urllib.request.urlopen(broker.metrics_url, timeout=CLIENT_DEADLINE_S) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_a_producer_moves_to_its_partitions_shard_and_every_message_arrives_once_in_order(broker):
    client = Confluent(broker.bootstrap)
    try:
        topic = created_topic(client, "handover", 1)
        sent = []
        acked = {}
        producers = 0
        while metric_total(broker, "ferrite_connections_moved_total") == 0:
            assert producers < PRODUCERS_MAX, f"{producers} producers, and no connection moved"
            produced = messages(MESSAGES_PER_PRODUCER, key_count=1, label=f"producer-{producers}")
            acked.update(client.produce(topic, produced, acks="all", settings=ONE_REQUEST_PER_MESSAGE))
            sent.extend(produced)
            producers += 1
        check_log(client.consume(topic), sent, acked=acked)
    finally:
        client.close()
