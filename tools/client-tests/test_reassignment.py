"""Moving a partition to other brokers (KIP-455's reassignment) on a 3-broker cluster of real
`ferrite serve` processes, while an idempotent acks=all producer keeps writing: the move is
asked for and watched with `ferrite topic reassign` and `ferrite topic reassignments`
(AlterPartitionReassignments and ListPartitionReassignments), and carried out as Raft
membership changes of the partition's group. Afterwards the checker of cluster_checks.py finds
every acknowledged message exactly once and in order, the broker moved away from has deleted
its copy, and the broker moved to serves the partition on its own.
"""

import subprocess
import time

import confluent_kafka
import confluent_kafka.admin

from cluster_checks import (
    ContinuousProducer,
    Read,
    check_acknowledged,
    check_offsets_kept,
    measured_failover,
    read_to_high_water_marks,
)
from cluster_support import PARTITIONS, cluster  # noqa: F401 (cluster is a fixture)
from cluster_support import created_topic as created_three_replica_topic
from conftest import FERRITE_BIN
from support import CLIENT_DEADLINE_S, topic_name, wait_until

MOVED = 0  # the partition the tests move
# A move is a few Raft round trips per broker added or removed, plus a learner catching up.
MOVE_DEADLINE_S = 60.0


def ferrite(cluster, *arguments, nodes=None):
    """Runs `ferrite ARGUMENTS --bootstrap B` against one answering broker; its stdout."""
    bootstrap = cluster.bootstrap(nodes).split(",")[0]
    command = [FERRITE_BIN, *arguments, "--bootstrap", bootstrap]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=CLIENT_DEADLINE_S * 2, check=False
    )
    assert completed.returncode == 0, (
        f"{' '.join(command)} exited with {completed.returncode}: {completed.stderr.strip()}"
    )
    return completed.stdout


def created_topic(cluster, label):
    """A new topic of PARTITIONS partitions of 2 replicas each, once every partition has a
    leader."""
    topic = topic_name(label)
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.bootstrap()})
    futures = admin.create_topics(
        [confluent_kafka.admin.NewTopic(topic, num_partitions=PARTITIONS, replication_factor=2)],
        operation_timeout=CLIENT_DEADLINE_S,
    )
    futures[topic].result(timeout=CLIENT_DEADLINE_S)
    cluster.leaders(topic)
    return topic


def replicas_of(cluster, topic, partition=MOVED):
    return list(cluster.metadata(topic).topics[topic].partitions[partition].replicas)


def moving(cluster, topic):
    """The `ferrite topic reassignments TOPIC` lines: the partitions of `topic` being moved."""
    return ferrite(cluster, "topic", "reassignments", topic).splitlines()


def wait_moved(cluster, topic, target):
    """Waits until nothing of `topic` is listed as moving and Metadata shows `target` as the
    moved partition's replicas."""
    wait_until(
        lambda: not moving(cluster, topic) and replicas_of(cluster, topic) == target,
        f"partition {MOVED} of {topic} to move to {target}",
        deadline_s=MOVE_DEADLINE_S,
    )


def reassign(cluster, topic, target):
    listing = ",".join(map(str, target))
    output = ferrite(cluster, "topic", "reassign", topic, "--partition", str(MOVED), "--replicas", listing)
    assert f"reassigning topic {topic} partition {MOVED} to {listing}" in output, output


def on_brokers(cluster, topic, brokers):
    """Moves the partition onto `brokers` unless placement put it there, and waits."""
    if sorted(replicas_of(cluster, topic)) != sorted(brokers):
        reassign(cluster, topic, brokers)
        wait_moved(cluster, topic, brokers)


def partition_dir(cluster, node, topic):
    return cluster.brokers[node].data_dir / f"{topic}-{MOVED}"


def read_partition_from(cluster, node, topic):
    """offset -> (key, value) of the moved partition, read from broker `node` alone up to its
    high-water mark."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": cluster.bootstrap([node]),
            "group.id": "ferrite-reassignment-checker",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        def high_water_mark():
            try:
                partition = confluent_kafka.TopicPartition(topic, MOVED)
                return consumer.get_watermark_offsets(partition, timeout=5.0)[1]
            except confluent_kafka.KafkaException:
                return None

        end = wait_until(high_water_mark, f"the high-water mark of {topic}/{MOVED} on broker {node}")
        consumer.assign([confluent_kafka.TopicPartition(topic, MOVED, confluent_kafka.OFFSET_BEGINNING)])
        read = {}
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while True:
            assert time.monotonic() < deadline, f"reading {topic}/{MOVED} from broker {node} up to {end}"
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                assert message.error().code() == confluent_kafka.KafkaError._PARTITION_EOF, message.error()
                if message.offset() >= end:
                    return read
                continue
            read[message.offset()] = (message.key(), message.value())
            if message.offset() >= end - 1:
                return read
    finally:
        consumer.close()


def test_a_partition_moves_to_other_brokers_while_a_producer_writes(cluster):
    topic = created_topic(cluster, "moved")
    on_brokers(cluster, topic, [1, 2])
    producer = ContinuousProducer(cluster.bootstrap(), topic)
    producer.start()
    try:
        producer.wait_for_progress(300, "before the move")
        reassign(cluster, topic, [2, 3])
        listed = moving(cluster, topic)
        assert not listed or listed[0].startswith(f"topic {topic} partition {MOVED} replicas 2,3"), listed
        wait_moved(cluster, topic, [2, 3])
        producer.wait_for_progress(200, "after the move")
    finally:
        producer.stop()
    assert not producer.failed and not producer.fatal_errors, producer.outcome()
    moved = read_to_high_water_marks(cluster, topic)
    check_acknowledged(moved, producer)
    wait_until(
        lambda: not partition_dir(cluster, 1, topic).exists(),
        f"broker 1 to delete its copy of {topic}/{MOVED}",
    )
    assert partition_dir(cluster, 3, topic).is_dir()

    # Down to one of the two, the one that does not lead: the leader removes itself, then the
    # other serves the partition alone, its copy complete, once the leader's broker is gone.
    leader = cluster.leader(topic, MOVED)
    remaining = ({2, 3} - {leader}).pop()
    reassign(cluster, topic, [remaining])
    wait_moved(cluster, topic, [remaining])
    cluster.kill9(leader)
    alone = read_partition_from(cluster, remaining, topic)
    check_offsets_kept({MOVED: moved[MOVED]}, {MOVED: {o: Read(k, v) for o, (k, v) in alone.items()}})


def test_a_move_completes_through_a_kill_of_the_partitions_leader(cluster):
    # The other partitions have 3 replicas, so they fail over while the killed broker is down
    # (a broker is restarted only after that, as in test_cluster); the moved one has 2, and
    # waits for it. (With 2 replicas everywhere, another partition the killed broker led could
    # not elect a leader either, and the failover below would wait for nothing.)
    topic = created_three_replica_topic(cluster, "killed")
    on_brokers(cluster, topic, [1, 2])
    producer = ContinuousProducer(cluster.bootstrap(), topic)
    producer.start()
    try:
        producer.wait_for_progress(300, "before the move")
        reassign(cluster, topic, [2, 3])
        leaders = cluster.leaders(topic)
        victim = leaders[MOVED]
        others = [p for p, leader in leaders.items() if leader == victim and p != MOVED]
        fault = f"kill -9 of broker {victim} (leader of {MOVED} and {others}) during the move"
        fault_at = time.monotonic()
        cluster.kill9(victim)
        if others:
            measured_failover(producer, fault_at, others, fault)
        cluster.restart(victim)
        cluster.wait_all_listed()
        wait_moved(cluster, topic, [2, 3])
        producer.wait_for_progress(200, "after the move")
    finally:
        producer.stop()
    assert not producer.failed and not producer.fatal_errors, producer.outcome()
    check_acknowledged(read_to_high_water_marks(cluster, topic), producer)
    wait_until(
        lambda: not partition_dir(cluster, 1, topic).exists(),
        f"broker 1 to delete its copy of {topic}/{MOVED}",
    )


def test_refusals_and_a_cancelled_move(cluster):
    topic = created_topic(cluster, "refused")
    bootstrap = cluster.bootstrap().split(",")[0]

    def refused(*arguments):
        command = [FERRITE_BIN, "topic", "reassign", *arguments, "--bootstrap", bootstrap]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=CLIENT_DEADLINE_S, check=False)
        assert completed.returncode == 1, f"{command} should fail: {completed.stdout} {completed.stderr}"
        return completed.stderr

    assert "INVALID_REPLICA_ASSIGNMENT" in refused(topic, "--partition", "0", "--replicas", "1,9")
    assert "INVALID_REPLICA_ASSIGNMENT" in refused(topic, "--partition", "0", "--replicas", "1,1")
    assert "UNKNOWN_TOPIC_OR_PARTITION" in refused(topic, "--partition", "7", "--replicas", "1")
    assert "NO_REASSIGNMENT_IN_PROGRESS" in refused(topic, "--partition", "0", "--cancel")

    # Broker 3 frozen (for less than the session timeout, so it is not fenced): the move to it
    # cannot finish, and is cancelled back to where the partition was.
    on_brokers(cluster, topic, [1, 2])
    cluster.sigstop(3)
    try:
        reassign(cluster, topic, [2, 3])
        assert moving(cluster, topic)[0].startswith(
            f"topic {topic} partition {MOVED} replicas 2,3,1 adding 3 removing 1"
        )
        output = ferrite(cluster, "topic", "reassign", topic, "--partition", str(MOVED), "--cancel", "--wait")
        assert "is no longer moving" in output, output
        wait_moved(cluster, topic, [1, 2])
    finally:
        cluster.sigcont(3)
