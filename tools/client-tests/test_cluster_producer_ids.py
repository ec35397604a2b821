"""Idempotent producers in a 3-broker cluster of real `ferrite serve` processes: producer ids
must be unique in the cluster for its whole life, or a partition leader takes one producer's
batch for a retry of another's and acknowledges it without storing it.

Three confluent-kafka producers, each bootstrapped from a different broker, take turns writing
to one partition replicated on all three brokers (three times over, with new producers): every
acknowledged message is read back exactly once. Raw InitProducerId requests to every broker
then show that no id is handed out twice: not by different brokers, nor after a broker
restarts, the controller leader is killed, or a broker comes back with its data directory
wiped.
"""

import shutil
import threading

import confluent_kafka
from kafka.protocol.producer.transaction import InitProducerIdRequest

from cluster_checks import ContinuousProducer, check_acknowledged, read_to_high_water_marks
from cluster_support import NODE_IDS, cluster, created_topic  # noqa: F401 (`cluster` is a fixture)
from raw_protocol import RawConnection
from support import CLIENT_DEADLINE_S, wait_until

MESSAGES_PER_PRODUCER = 20
# Which broker a client asks for its producer id is the client's choice (librdkafka asks the
# first one it has a connection to); three producers that all asked the same broker would have
# distinct ids even where brokers hand out the same ones. Three rounds of three new producers
# make that coincidence unlikely to hide a fault.
ROUNDS = 3
# Kafka's COORDINATOR_LOAD_IN_PROGRESS: a broker without producer ids at hand (it is fetching a
# block from the controller); clients retry.
COORDINATOR_LOAD_IN_PROGRESS = 14
IDS_PER_ASK = 5


class TurnTakingProducers:
    """Where each message of several producers taking turns was acknowledged, in the shape
    `check_acknowledged` reads: one sequence of messages numbered in the order they were sent
    (each acknowledged before the next is sent), written as ContinuousProducer number 0 writes
    them."""

    number = 0

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}  # index -> (partition, offset, None)
        self.failed = {}  # index -> error
        self.fatal_errors = []

    def on_error(self, error):
        if error.fatal():
            self.fatal_errors.append(error)

    def wait_settled(self, producer, index):
        """Serves `producer`'s callbacks until message `index` is acknowledged or failed."""

        def settled():
            producer.poll(0.05)
            assert not self.fatal_errors, f"message {index}: {self.fatal_errors}"
            with self.lock:
                return index in self.acked or index in self.failed

        wait_until(settled, f"message {index} to be acknowledged or fail")

    @property
    def members(self):
        return [self]

    def message(self, index):
        return ContinuousProducer.message(self, index)

    def on_delivery(self, error, message):
        _, index = ContinuousProducer.parse(message.value())
        with self.lock:
            if error is None:
                self.acked[index] = (message.partition(), message.offset(), None)
            else:
                self.failed[index] = error


def test_idempotent_producers_bootstrapped_from_different_brokers_lose_nothing(cluster):  # noqa: F811
    topic = created_topic(cluster, "three-producers", partition_count=1)
    outcome = TurnTakingProducers()
    for round_number in range(ROUNDS):
        producers = [
            confluent_kafka.Producer(
                {
                    "bootstrap.servers": cluster.bootstrap([node]),
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 0,
                    "message.timeout.ms": int(CLIENT_DEADLINE_S * 1000),
                    "error_cb": outcome.on_error,
                }
            )
            for node in NODE_IDS
        ]
        # In turn, one message each, each acknowledged before the next is sent: a producer
        # sharing another's id sends that one's batches again, sequence for sequence.
        for turn in range(MESSAGES_PER_PRODUCER):
            for number, producer in enumerate(producers):
                index = (round_number * MESSAGES_PER_PRODUCER + turn) * len(producers) + number
                key, value = outcome.message(index)
                producer.produce(topic, key=key, value=value, on_delivery=outcome.on_delivery)
                outcome.wait_settled(producer, index)
        del producers
    assert not outcome.failed, f"messages failed: {outcome.failed}"
    assert len(outcome.acked) == ROUNDS * MESSAGES_PER_PRODUCER * len(NODE_IDS)
    check_acknowledged(read_to_high_water_marks(cluster, topic, partition_count=1), outcome)


def producer_ids(cluster, node, count=IDS_PER_ASK):
    """`count` producer ids broker `node` hands out to InitProducerId (no transactional id),
    asking again while it answers COORDINATOR_LOAD_IN_PROGRESS."""
    connection = RawConnection(cluster.brokers[node].bootstrap)
    try:

        def one():
            answer = connection.request(
                InitProducerIdRequest(
                    transactional_id=None,
                    transaction_timeout_ms=60_000,
                    producer_id=-1,
                    producer_epoch=-1,
                )
            )
            if answer.error_code == COORDINATOR_LOAD_IN_PROGRESS:
                return None
            assert answer.error_code == 0, f"broker {node}: InitProducerId failed with {answer.error_code}"
            assert answer.producer_epoch == 0
            return answer.producer_id

        return [wait_until(one, f"a producer id from broker {node}") for _ in range(count)]
    finally:
        connection.close()


class HandedOut:
    """Every producer id seen so far, and which broker handed it out at which step."""

    def __init__(self):
        self.seen = {}  # id -> (node, step)

    def add(self, cluster, node, step):
        for producer_id in producer_ids(cluster, node):
            assert producer_id >= 0
            earlier = self.seen.get(producer_id)
            assert earlier is None, (
                f"broker {node} ({step}) handed out producer id {producer_id}, which broker "
                f"{earlier[0]} handed out before ({earlier[1]})"
            )
            self.seen[producer_id] = (node, step)


def answering_controller_leader(cluster):
    """The controller leader, once a broker that answers knows one that answers."""

    def known():
        for node in cluster.answering():
            leader = cluster.controller_leader(node)
            if leader in cluster.answering():
                return leader
        return None

    return wait_until(known, "a live controller leader")


def test_producer_ids_are_never_handed_out_twice(cluster):  # noqa: F811
    handed_out = HandedOut()
    for node in NODE_IDS:
        handed_out.add(cluster, node, "at the start")

    leader = answering_controller_leader(cluster)
    follower = next(node for node in NODE_IDS if node != leader)
    cluster.kill9(follower)
    cluster.restart(follower)
    handed_out.add(cluster, follower, "restarted after SIGKILL")

    cluster.kill9(leader)
    for node in cluster.answering():
        handed_out.add(cluster, node, f"controller leader {leader} killed")
    cluster.restart(leader)
    handed_out.add(cluster, leader, "the killed controller leader restarted")

    wiped = next(node for node in NODE_IDS if node != answering_controller_leader(cluster))
    cluster.kill9(wiped)
    shutil.rmtree(cluster.brokers[wiped].data_dir)
    cluster.restart(wiped)
    handed_out.add(cluster, wiped, "restarted with its data directory wiped")
    for node in NODE_IDS:
        handed_out.add(cluster, node, "at the end")
    cluster.wait_all_listed()
