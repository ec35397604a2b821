"""A cluster of real `ferrite serve` processes (the release build, as users run it) seen through
real clients: kcat lists the brokers and the partition leaders; a batch the log refuses leaves
the partition serving; new partitions and altered configs reach every broker; brokers beyond
the controller voters; replicas spread over each broker's shards as the metadata log places
them; leadership returns to the preferred replicas; a new topic is led by them; a new topic's
leaders are known at once.
The faults (kills, freezes, cut-offs) are in test_cluster_failover.py.
"""
import re
import subprocess
import time
import urllib.request
from collections import defaultdict

import confluent_kafka
import confluent_kafka.admin
import kafka
import kafka.errors
import pytest

from cluster_checks import ContinuousProducer, check_acknowledged, read_to_high_water_marks
from cluster_support import (  # noqa: F401 (`cluster`, `five_brokers`, `rebalancing_cluster`, `two_shard_cluster` are fixtures)
    CORRUPT_MESSAGE,
    MESSAGE_TOO_LARGE,
    METADATA_TIMEOUT_S,
    NODE_IDS,
    NOT_LEADER_OR_FOLLOWER,
    OVERSIZE_VALUE_BYTES,
    PARTITIONS,
    REPLICATION_FACTOR,
    SERVING_DEADLINE_S,
    cluster,
    created_topic,
    five_brokers,
    rebalancing_cluster,
    two_shard_cluster,
)
from raw_protocol import RawConnection, record_batch
from support import CLIENT_DEADLINE_S, topic_name, wait_until


def test_kcat_lists_three_brokers_and_the_leaders(cluster):
    topic = created_topic(cluster, "listed")
    node = NODE_IDS[0]
    command = ["kcat", "-b", cluster.bootstrap([node]), "-L"]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=CLIENT_DEADLINE_S * 2, check=False
    )
    assert completed.returncode == 0 and "ERROR" not in completed.stderr, (
        f"{' '.join(command)} exited with {completed.returncode}; its stderr:\n{completed.stderr[-4000:]}"
    )
    listing = completed.stdout
    brokers = dict(re.findall(r"^\s+broker (\d+) at (\S+)", listing, re.MULTILINE))
    expected = {str(node): broker.bootstrap for node, broker in cluster.brokers.items()}
    assert brokers == expected, f"kcat -L should list the three brokers {expected}:\n{listing}"
    partitions = re.findall(
        rf'topic "{topic}" with (\d+) partitions:((?:\n\s+partition .*)*)', listing
    )
    assert partitions and int(partitions[0][0]) == PARTITIONS, f"kcat -L should list {topic}:\n{listing}"
    lines = re.findall(
        r"partition (\d+), leader (-?\d+), replicas: ([\d,]+), isrs: ([\d,]*)", partitions[0][1]
    )
    assert sorted(int(index) for index, *_ in lines) == list(range(PARTITIONS)), listing
    for index, leader, replicas, _ in lines:
        assert leader in expected, (
            f"partition {index} of {topic} has leader {leader}, not a broker:\n{listing}"
        )
        assert sorted(replicas.split(",")) == sorted(expected), (
            f"partition {index} of {topic} should have all three brokers as replicas:\n{listing}"
        )


def test_a_batch_the_log_refuses_leaves_the_partition_serving(cluster):
    """A 2 MiB batch (over the default max.message.bytes) and a batch with a bad CRC are
    answered MESSAGE_TOO_LARGE and CORRUPT_MESSAGE by the partition's leader, which takes the
    next produce at once; a follower refuses them as well (or names the leader), and nothing
    refused is stored. The leader used to number the large batch in Raft before its log refused
    it, after which every produce to the partition timed out."""
    topic = created_topic(cluster, "refused", partition_count=1)
    leader = cluster.leaders(topic, 1)[0]
    large = record_batch(b"x" * OVERSIZE_VALUE_BYTES)
    corrupt = bytearray(record_batch(b"flipped"))
    corrupt[-1] ^= 0x01
    refused = ((large, MESSAGE_TOO_LARGE, "a 2 MiB batch"), (bytes(corrupt), CORRUPT_MESSAGE, "a bad CRC"))
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": cluster.bootstrap(),
            "acks": "all",
            "message.timeout.ms": int(SERVING_DEADLINE_S * 1000),
        }
    )
    acknowledged = []

    def produce_acknowledged(value):
        delivered = []
        producer.produce(topic, value, partition=0, on_delivery=lambda error, _: delivered.append(error))
        producer.flush(SERVING_DEADLINE_S * 2)
        assert len(delivered) == 1 and delivered[0] is None, (
            f"{value!r} was not acknowledged within {SERVING_DEADLINE_S:.0f} s: "
            f"{[str(error) for error in delivered]}"
        )
        acknowledged.append(value)

    produce_acknowledged(b"before")
    connection = RawConnection(cluster.bootstrap([leader]))
    try:
        for records, expected, what in refused:
            assert connection.produce(topic, 0, records) == expected, f"the leader, given {what}"
            produce_acknowledged(f"after {what}".encode())
    finally:
        connection.close()
    for follower in (node for node in cluster.node_ids if node != leader):
        connection = RawConnection(cluster.bootstrap([follower]))
        try:
            for records, expected, what in refused:
                code = connection.produce(topic, 0, records)
                assert code in (expected, NOT_LEADER_OR_FOLLOWER), f"follower {follower}, given {what}: {code}"
        finally:
            connection.close()
    produce_acknowledged(b"last")
    read = read_to_high_water_marks(cluster, topic, 1)
    assert [message.value for message in read[0].values()] == acknowledged, "exactly what was acknowledged"


def test_partitions_added_and_configs_altered_through_any_broker_reach_every_broker(cluster):
    topic = created_topic(cluster, "altered")
    # Through broker 2, not necessarily the controller's leader.
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap([NODE_IDS[1]])})
    grown = admin.create_partitions(
        [confluent_kafka.admin.NewPartitions(topic, PARTITIONS + 2)],
        operation_timeout=CLIENT_DEADLINE_S,
    )
    grown[topic].result(timeout=CLIENT_DEADLINE_S)
    resource = confluent_kafka.admin.ConfigResource(
        confluent_kafka.admin.ResourceType.TOPIC,
        topic,
        incremental_configs=[
            confluent_kafka.admin.ConfigEntry(
                "retention.ms",
                "3600000",
                incremental_operation=confluent_kafka.admin.AlterConfigOpType.SET,
            )
        ],
    )
    altered = admin.incremental_alter_configs([resource])
    altered[resource].result(timeout=CLIENT_DEADLINE_S)
    bad = confluent_kafka.admin.ConfigResource(
        confluent_kafka.admin.ResourceType.TOPIC,
        topic,
        incremental_configs=[
            confluent_kafka.admin.ConfigEntry(
                "retention.ms",
                "soon",
                incremental_operation=confluent_kafka.admin.AlterConfigOpType.SET,
            )
        ],
    )
    with pytest.raises(confluent_kafka.KafkaException, match="retention.ms"):
        admin.incremental_alter_configs([bad])[bad].result(timeout=CLIENT_DEADLINE_S)
    # Every broker, asked alone, has the new partitions (with leaders) and the new setting.
    for node in NODE_IDS:
        def grown_here():
            partitions = cluster.metadata(topic, node=node).topics[topic].partitions
            ready = len(partitions) == PARTITIONS + 2 and all(
                partition.leader in NODE_IDS for partition in partitions.values()
            )
            return ready or None

        wait_until(grown_here, f"broker {node} to list {PARTITIONS + 2} led partitions")
        asked = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap([node])})
        described = confluent_kafka.admin.ConfigResource(confluent_kafka.admin.ResourceType.TOPIC, topic)
        configs = asked.describe_configs([described])[described].result(timeout=CLIENT_DEADLINE_S)
        assert configs["retention.ms"].value == "3600000", f"broker {node}"
    # The new partitions take writes.
    producer = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all"})
    delivered = []
    producer.produce(topic, b"to a new partition", partition=PARTITIONS + 1,
                     on_delivery=lambda error, message: delivered.append(error))
    assert producer.flush(CLIENT_DEADLINE_S) == 0
    assert delivered == [None]


def test_five_brokers_beyond_the_controller_voters(five_brokers):
    """More brokers than controller voters: brokers 4 and 5 follow the metadata log as
    observers. kcat lists all five; a topic's replicas are spread evenly over them; a client
    that knows only a non-voter produces with acks=all and reads everything back; and with the
    controller leader killed, a topic is still created through a non-voter."""
    cluster = five_brokers
    partitions, replicas_per_partition = 10, 3
    topic = topic_name("five")
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap([5])})
    created = admin.create_topics(
        [confluent_kafka.admin.NewTopic(topic, partitions, replicas_per_partition)],
        operation_timeout=CLIENT_DEADLINE_S,
    )
    created[topic].result(timeout=CLIENT_DEADLINE_S)

    def led_everywhere():
        """partition -> (leader, replicas) once broker 4 names a live leader for each."""
        listed = cluster.metadata(topic, node=4).topics[topic].partitions
        placed = {index: (p.leader, sorted(p.replicas)) for index, p in listed.items()}
        led = len(placed) == partitions and all(leader in cluster.node_ids for leader, _ in placed.values())
        return placed if led else None

    placed = wait_until(led_everywhere, f"every partition of {topic} to have a leader")
    hosted = defaultdict(int)
    for index, (leader, replicas) in placed.items():
        assert len(set(replicas)) == replicas_per_partition and leader in replicas, (index, leader, replicas)
        for node in replicas:
            hosted[node] += 1
    assert hosted == {node: 6 for node in cluster.node_ids}, f"30 replicas spread over 5 brokers: {placed}"

    def kcat_lists_every_leader():
        """kcat's listing once it names a leader for every partition. kcat, like any
        librdkafka client, may take its answer from another broker it connected to, which
        may learn a leader a moment after broker 4 (in flight)."""
        completed = subprocess.run(
            ["kcat", "-b", cluster.bootstrap([4]), "-L", "-t", topic],
            capture_output=True, text=True, timeout=CLIENT_DEADLINE_S * 2, check=False,
        )
        assert completed.returncode == 0, completed.stderr[-4000:]
        listing = completed.stdout
        leaders = re.findall(r"partition (\d+), leader (\d+), replicas: ([\d,]+), isrs", listing)
        return (listing, leaders) if len(leaders) == partitions else None

    listing, leaders = wait_until(
        kcat_lists_every_leader, f"kcat to list a leader for every partition of {topic}", interval_s=0.2
    )
    brokers = dict(re.findall(r"^\s+broker (\d+) at (\S+)", listing, re.MULTILINE))
    expected = {str(node): broker.bootstrap for node, broker in cluster.brokers.items()}
    assert brokers == expected, f"kcat -L should list the five brokers {expected}:\n{listing}"
    assert {node for _, _, replicas in leaders for node in replicas.split(",")} == set(expected), listing

    # A client that knows only broker 4 (not a controller voter) writes and reads it all.
    sent = [(f"key-{n % 17}".encode(), f"value-{n}".encode()) for n in range(600)]
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": cluster.bootstrap([4]), "acks": "all", "enable.idempotence": True}
    )
    errors = []
    for key, value in sent:
        producer.produce(topic, value, key, on_delivery=lambda error, _: error and errors.append(error))
    assert producer.flush(CLIENT_DEADLINE_S) == 0 and errors == [], errors[:5]
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": cluster.bootstrap([4]), "group.id": topic, "enable.auto.commit": False}
    )
    try:
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(partitions)]
        )
        read = []
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while len(read) < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None:
                assert message.error() is None, message.error()
                read.append((message.key(), message.value()))
    finally:
        consumer.close()
    assert sorted(read) == sorted(sent), f"read {len(read)} of {len(sent)} messages"
    by_key = defaultdict(list)
    for key, value in read:
        by_key[key].append(int(value.split(b"-")[1]))
    assert all(values == sorted(values) for values in by_key.values()), "each key's order kept"

    # The controller leader (a voter) dies; a topic is still created through a non-voter, at
    # once: Metadata names the answering broker as the controller (it forwards), never the dead
    # one, so librdkafka does not wait for it.
    controller = wait_until(lambda: cluster.controller_leader(5), "broker 5 to know the controller leader")
    assert controller in (1, 2, 3), f"the controller leader is a voter, not {controller}"
    cluster.kill9(controller)
    named = {cluster.metadata(node=node).controller_id for node in cluster.answering()}
    assert named <= set(cluster.answering()), f"Metadata names a live broker as the controller, not {named}"
    after = topic_name("after-kill")
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap([5])})
    created = admin.create_topics(
        [confluent_kafka.admin.NewTopic(after, 4, replicas_per_partition)],
        operation_timeout=CLIENT_DEADLINE_S,
    )
    created[after].result(timeout=CLIENT_DEADLINE_S)

    def listed_by(node):
        topics = cluster.metadata(after, node=node).topics
        return (after in topics and len(topics[after].partitions) == 4) or None

    for node in cluster.answering():
        wait_until(lambda node=node: listed_by(node), f"broker {node} to list {after}")


def name_hash_shard(topic, partition, shards):
    """The shard a broker alone puts a partition on (engine::shard::owner_shard: FNV-1a of the
    topic name plus the partition number, modulo the shard count)."""
    value = 0xCBF29CE484222325
    for byte in topic.encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return ((value + partition) & 0xFFFFFFFFFFFFFFFF) % shards


def partition_shards(broker, topics):
    """topic -> the shard of broker's replica of its partition 0, from /metrics, once it
    reports every one of `topics`; else None."""
    with urllib.request.urlopen(broker.metrics_url, timeout=METADATA_TIMEOUT_S) as response:
        text = response.read().decode()
    shards = {}
    for topic in topics:
        match = re.search(
            r'^ferrite_partition_shard\{topic="' + re.escape(topic) + r'",partition="0"\} (\d+)$',
            text,
            re.MULTILINE,
        )
        if not match:
            return None
        shards[topic] = int(match.group(1))
    return shards


def test_replicas_spread_over_each_brokers_shards_as_the_metadata_log_places_them(two_shard_cluster):
    """Four one-partition topics whose names all hash to shard 0 (where a broker alone would
    put them) end up two per shard on every broker, as the controller placed them, and are
    written and read through those shards."""
    cluster = two_shard_cluster
    topics = []
    while len(topics) < 4:
        candidate = topic_name("placed")
        if name_hash_shard(candidate, 0, 2) == 0:
            topics.append(candidate)
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap()})
    futures = admin.create_topics(
        [confluent_kafka.admin.NewTopic(topic, 1, REPLICATION_FACTOR) for topic in topics],
        operation_timeout=CLIENT_DEADLINE_S,
    )
    for future in futures.values():
        future.result(timeout=CLIENT_DEADLINE_S)
    for node, broker in cluster.brokers.items():
        shards = wait_until(
            lambda broker=broker: partition_shards(broker, topics),
            f"broker {node} to report the shards of {topics}",
        )
        per_shard = sorted(list(shards.values()).count(shard) for shard in (0, 1))
        assert per_shard == [2, 2], f"broker {node} put the four replicas on shards {shards}"

    producer = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all"})
    for topic in topics:
        producer.produce(topic, key=b"k", value=topic.encode())
    assert producer.flush(CLIENT_DEADLINE_S) == 0, "every message acknowledged"
    for topic in topics:
        read = read_to_high_water_marks(cluster, topic, 1)
        assert [message.value for message in read[0].values()] == [topic.encode()], read


def test_leadership_returns_to_the_preferred_replicas_after_a_broker_comes_back(rebalancing_cluster):
    """The controller spreads preferred leaders (each partition's first replica) one per
    broker; after a leader is killed its partitions fail over to the others, and once it is
    back and in sync they return to it, while an idempotent producer loses nothing."""
    cluster = rebalancing_cluster
    topic = created_topic(cluster, "preferred")
    partitions = cluster.metadata(topic).topics[topic].partitions
    preferred = {index: partition.replicas[0] for index, partition in partitions.items()}
    assert sorted(preferred.values()) == list(cluster.node_ids), f"preferred leaders spread: {preferred}"

    def led_as_preferred():
        return cluster.leaders(topic) == preferred or None

    wait_until(led_as_preferred, f"every partition of {topic} to be led by its preferred replica {preferred}")
    producer = ContinuousProducer(cluster.bootstrap(), topic)
    producer.start()
    try:
        producer.wait_for_progress(300, "before the kill")
        victim = preferred[0]
        cluster.kill9(victim)
        moved = wait_until(
            lambda: (leaders := cluster.leaders(topic))[0] != victim and leaders,
            f"partition 0 to fail over from broker {victim}",
        )
        assert victim not in moved.values(), f"broker {victim} is dead, yet Metadata names it: {moved}"
        producer.wait_for_progress(200, f"while broker {victim} is down")
        cluster.restart(victim)
        cluster.wait_all_listed()
        wait_until(led_as_preferred, f"broker {victim} to lead partition 0 again ({preferred})")
        producer.wait_for_progress(200, "after leadership returned")
    finally:
        producer.stop()
    assert not producer.failed and not producer.fatal_errors, (
        f"the idempotent producer gave up on messages: {producer.outcome()}"
    )
    check_acknowledged(read_to_high_water_marks(cluster, topic), producer)


def test_a_new_topic_is_led_by_its_preferred_replicas_though_a_broker_was_late_to_host_it(cluster):
    """A new partition is led by its preferred replica (its first), as Kafka's are, which
    spreads a topic's leaderships over the brokers. A broker frozen while the topic is created
    hosts its partitions late, and the others elect leaders without it; once it is back and in
    sync it leads its share within seconds, not at the next periodic check (every 5 minutes).
    Without this, the broker that hosted a 3 000-partition topic first led most of it."""
    controller = cluster.controller_leader(NODE_IDS[0])
    late = next(node for node in NODE_IDS if node != controller)
    partition_count = 2 * len(NODE_IDS)
    cluster.sigstop(late)
    topic = created_topic(cluster, "late-host", partition_count)
    partitions = cluster.metadata(topic).topics[topic].partitions
    preferred = {index: partition.replicas[0] for index, partition in partitions.items()}
    assert sorted(preferred.values()) == sorted(2 * list(NODE_IDS)), f"preferred leaders spread: {preferred}"
    # created_topic waited until every partition had a leader that answers: the late broker's
    # preferred partitions are led by the others now.
    cluster.sigcont(late)
    wait_until(
        lambda: cluster.leaders(topic, partition_count) == preferred or None,
        f"every partition of {topic} to be led by its preferred replica {preferred} once broker {late} is back",
    )


# How long after a topic's creation every broker's Metadata is watched, and how often each is
# asked (a round: every broker once).
LEADER_WATCH_S = 4.0
LEADER_POLL_S = 0.03
LEADER_WATCH_TOPICS = 4
# How many rounds after the last of a partition's replicas' brokers named its leader every
# other broker may still not name it. A leader tells the other brokers as soon as it is
# elected, as it tells its followers; a broker that heard of it only at the leader's next
# periodic report (every 0.5 s, several rounds) answered LEADER_NOT_AVAILABLE meanwhile, which
# was taken for a leader lapsing in CI. Counted in rounds, not seconds: on a loaded machine
# brokers and this watch slow down alike.
LEADER_SPREAD_ROUNDS_MAX = 2
LEADER_NOT_AVAILABLE = kafka.errors.LeaderNotAvailableError.errno


def watch_leaders(cluster, topic, partitions, watch_s):
    """Asks every broker for `topic`'s Metadata every LEADER_POLL_S for `watch_s`. Returns the
    lapses seen, each as (seconds since the watch began, broker, partition, what it said
    before, what it says now):
    - a broker that named a leader for a partition answers LEADER_NOT_AVAILABLE for it;
    - once a leader named itself (a broker names itself only when its replica leads; a broker
      whose replica knows a term but no leader names another replica as a guess, see
      `ShardCluster::placement`), it no longer does so in that term, or another broker
      names itself: the partition was between leaders (but for the handover of a new
      partition to its preferred replica, in a later epoch, when another replica won its first
      election);
    and, per partition, how many rounds after the last broker with a replica of it the last
    broker without one named its leader (None if one never did)."""
    from kafka.protocol.metadata.metadata import MetadataRequest

    connections = {node: RawConnection(cluster.brokers[node].bootstrap) for node in cluster.node_ids}
    named = {}  # (broker, partition) -> (leader, epoch) it last named
    established = {}  # partition -> (leader, epoch), as the leader first named itself
    replicas = {}  # partition -> its replicas' brokers
    known = defaultdict(dict)  # partition -> broker -> the round it first named the leader in
    lapses = []
    began = time.monotonic()
    rounds = 0
    try:
        while time.monotonic() - began < watch_s:
            rounds += 1
            for node, connection in connections.items():
                request = MetadataRequest(
                    topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
                    allow_auto_topic_creation=False,
                )
                listed = [t for t in connection.request(request).topics if t.name == topic]
                at_s = round(time.monotonic() - began, 3)
                for partition in listed[0].partitions if listed else []:
                    index = partition.partition_index
                    replicas[index] = set(partition.replica_nodes)
                    seen = (partition.leader_id, partition.leader_epoch)
                    before = named.get((node, index))
                    if partition.leader_id < 0:
                        assert partition.error_code == LEADER_NOT_AVAILABLE, partition
                        if before is not None:
                            lapses.append((at_s, node, index, before, seen))
                        continue
                    named[(node, index)] = seen
                    if index not in established:
                        if partition.leader_id != node:
                            continue
                        established[index] = seen
                    leader = established[index]
                    preferred = partition.replica_nodes[0]
                    if seen == leader:
                        known[index].setdefault(node, rounds)
                    elif partition.leader_id == node == preferred != leader[0] and seen[1] > leader[1]:
                        # The one move a new partition may make: to its preferred replica,
                        # when another won the first election (see replica/preferred.rs).
                        established[index] = seen
                        known[index] = {node: rounds}
                    elif node == leader[0] or partition.leader_id == node:
                        lapses.append((at_s, node, index, leader, seen))
            time.sleep(LEADER_POLL_S)
    finally:
        for connection in connections.values():
            connection.close()
    assert set(established) == set(range(partitions)), (
        f"{topic}: partitions led within {watch_s} s: {sorted(established)}"
    )

    def spread(index):
        if len(known[index]) < len(cluster.node_ids):
            return None
        by_replicas = [at for node, at in known[index].items() if node in replicas[index]]
        return max(known[index].values()) - max(by_replicas)

    return lapses, {index: spread(index) for index in established}


@pytest.mark.parametrize("brokers", ["cluster", "five_brokers"])
def test_a_new_topics_leaders_are_known_at_once_and_kept(request, brokers):
    """On a fresh cluster nothing fails, so a partition that has a leader keeps it, and every
    broker names it at once: topics of 10 partitions (3 replicas) are created one after
    another, and every broker's Metadata is watched closely for seconds after each creation.
    Once a broker names a leader for a partition it never answers LEADER_NOT_AVAILABLE for it
    again, no second election moves the leadership (a client would see produce errors and an
    election timeout's stall) but a handover to the partition's preferred replica, and brokers
    without a replica name the leader about when those with one do (a client bootstrapped from
    one waits for nothing)."""
    cluster = request.getfixturevalue(brokers)
    partitions = 10
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap()})
    found = []
    for _ in range(LEADER_WATCH_TOPICS):
        topic = topic_name("leaders")
        created = admin.create_topics(
            [confluent_kafka.admin.NewTopic(topic, partitions, REPLICATION_FACTOR)],
            operation_timeout=CLIENT_DEADLINE_S,
        )
        created[topic].result(timeout=CLIENT_DEADLINE_S)
        lapses, spread = watch_leaders(cluster, topic, partitions, LEADER_WATCH_S)
        print(f"{topic}: rounds between the replicas' brokers and the others naming each leader: {spread}")
        late = {index: s for index, s in spread.items() if s is None or s > LEADER_SPREAD_ROUNDS_MAX}
        if lapses or late:
            found.append((topic, lapses[:10], late))
    assert found == [], (
        "partitions between leaders after they had one (s, broker, partition, before, now), or "
        f"named by a broker without a replica more than {LEADER_SPREAD_ROUNDS_MAX} rounds after the "
        "brokers with one (partition: rounds):\n" + "\n".join(f"{topic}: {lapses}; {late}" for topic, lapses, late in found)
    )
