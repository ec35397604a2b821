"""The transaction coordinator through real clients, in what needs no transaction markers: a
confluent-kafka transactional producer initialises, a second one with the same
transactional.id fences the first (whose next call fails with a fatal fenced error), a
transaction timeout above `--transaction-max-timeout-ms` is refused, open transactions survive a
restart and time out with an abort that fences their producer, a cluster coordinates an id on
the leader of its `__transaction_state` partition and another broker takes over when it dies,
and FindCoordinator
(TRANSACTION), DescribeTransactions and ListTransactions answer as Kafka does (and
`ferrite transactions describe|list`, which asks them)."""

import json
import subprocess

import confluent_kafka
import confluent_kafka.admin
import pytest
from kafka.protocol.admin.transactions import DescribeTransactionsRequest, ListTransactionsRequest
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
from kafka.protocol.producer.transaction import AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest

from cluster_support import cluster  # noqa: F401 (a fixture)
from conftest import FERRITE_BIN
from raw_protocol import RawConnection
from support import CLIENT_DEADLINE_S, topic_name, wait_until
from transactions_support import transactional_producer

TRANSACTION_KEY_TYPE = 1
# COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE (NOT_COORDINATOR is an answer: the
# cluster test asks brokers that are not the coordinator).
RETRIED_COORDINATOR_ERRORS = (14, 15)
TRANSACTIONAL_ID_NOT_FOUND = 105


def ferrite_transactions(broker, *arguments):
    """`ferrite transactions ARGUMENTS --bootstrap BROKER`'s JSON answer."""
    done = subprocess.run(
        [FERRITE_BIN, "transactions", *arguments, "--bootstrap", broker.bootstrap],
        capture_output=True,
        text=True,
        timeout=CLIENT_DEADLINE_S,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def describe(connection, transactional_id):
    """The id's state as DescribeTransactions gives it, once the broker answers: after a start
    each `__transaction_state` partition loads on its own, and until then its ids get
    COORDINATOR_LOAD_IN_PROGRESS or COORDINATOR_NOT_AVAILABLE, which clients retry."""

    def answered():
        (state,) = connection.request(DescribeTransactionsRequest(transactional_ids=[transactional_id])).transaction_states
        return state if state.error_code not in RETRIED_COORDINATOR_ERRORS else None

    return wait_until(answered, f"the coordinator of {transactional_id} to load")


def test_find_coordinator_names_this_broker_for_a_transactional_id(broker):
    connection = RawConnection(broker.bootstrap)
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    batched = connection.request(
        FindCoordinatorRequest(key_type=TRANSACTION_KEY_TYPE, coordinator_keys=["tx-a", "tx-b"])
    )
    assert [(c.key, c.error_code, c.port) for c in batched.coordinators] == [
        ("tx-a", 0, port),
        ("tx-b", 0, port),
    ]
    single = connection.request(FindCoordinatorRequest(key="tx-a", key_type=TRANSACTION_KEY_TYPE), version=3)
    assert (single.error_code, single.port) == (0, port)
    connection.close()


def test_a_second_producer_fences_the_first_and_both_are_described(broker):
    transactional_id = topic_name("fencing")
    topic = topic_name("fencing-topic")
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([confluent_kafka.admin.NewTopic(topic, 1)])[topic].result(CLIENT_DEADLINE_S)
    connection = RawConnection(broker.bootstrap)

    first = transactional_producer(broker.bootstrap, transactional_id)
    described = describe(connection, transactional_id)
    assert (described.error_code, described.transaction_state, described.producer_epoch) == (0, "Empty", 0)
    producer_id = described.producer_id

    second = transactional_producer(broker.bootstrap, transactional_id)
    described = describe(connection, transactional_id)
    assert (described.producer_id, described.producer_epoch) == (producer_id, 1), "same id, next epoch"

    # The zombie's next call to the coordinator (adding the partition it writes to) is fenced.
    first.begin_transaction()
    first.produce(topic, b"from the zombie")
    with pytest.raises(confluent_kafka.KafkaException) as raised:
        first.commit_transaction(CLIENT_DEADLINE_S)
    error = raised.value.args[0]
    assert error.fatal(), error
    assert error.code() in (confluent_kafka.KafkaError._FENCED, confluent_kafka.KafkaError.PRODUCER_FENCED), error

    # The current producer opens a transaction: its partition shows in DescribeTransactions.
    second.begin_transaction()
    second.produce(topic, b"from the current producer")
    second.poll(0)

    def ongoing():
        state = describe(connection, transactional_id)
        return state.transaction_state == "Ongoing" and [(t.topic, t.partitions) for t in state.topics] == [
            (topic, [0])
        ]

    wait_until(ongoing, "the transaction is open with its partition")
    listed = connection.request(ListTransactionsRequest(state_filters=["Ongoing"], producer_id_filters=[]))
    assert listed.error_code == 0
    assert [(t.transactional_id, t.producer_id, t.transaction_state) for t in listed.transaction_states] == [
        (transactional_id, producer_id, "Ongoing")
    ]
    listed = connection.request(ListTransactionsRequest(state_filters=["Nonsense"], producer_id_filters=[]))
    assert (listed.transaction_states, listed.unknown_state_filters) == ([], ["Nonsense"])
    unknown = describe(connection, "never-used")
    assert unknown.error_code == TRANSACTIONAL_ID_NOT_FOUND
    connection.close()


@pytest.mark.serve_args("--transaction-max-timeout-ms", "60000")
def test_a_timeout_above_the_maximum_is_refused(broker):
    producer = transactional_producer(
        broker.bootstrap, topic_name("timeout"), initialised=False, **{"transaction.timeout.ms": 120000}
    )
    with pytest.raises(confluent_kafka.KafkaException) as raised:
        producer.init_transactions(CLIENT_DEADLINE_S)
    assert raised.value.args[0].code() == confluent_kafka.KafkaError.INVALID_TRANSACTION_TIMEOUT


@pytest.mark.serve_args("--transaction-timeout-check-interval-ms", "100")
def test_transactions_survive_a_restart_and_time_out_with_a_fencing_abort(broker):
    """Two open transactions and a committed one (raw requests): after a restart the
    coordinator has them from its log; the one with a short timeout is aborted by the
    coordinator with a bumped epoch, a new producer of another fences it the same way, and the
    commit stays a commit."""
    topic = topic_name("restart-topic")
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([confluent_kafka.admin.NewTopic(topic, 1)])[topic].result(CLIENT_DEADLINE_S)
    long_id, short_id, ended_id = topic_name("long"), topic_name("short"), topic_name("ended")
    connection = RawConnection(broker.bootstrap)
    producers = {}
    for transactional_id, timeout_ms in ((long_id, 60000), (short_id, 1500), (ended_id, 60000)):
        init = connection.request(
            InitProducerIdRequest(transactional_id=transactional_id, transaction_timeout_ms=timeout_ms),
            version=2,
        )
        assert (init.error_code, init.producer_epoch) == (0, 0)
        producers[transactional_id] = init.producer_id
        added = connection.request(
            AddPartitionsToTxnRequest(
                v3_and_below_transactional_id=transactional_id,
                v3_and_below_producer_id=init.producer_id,
                v3_and_below_producer_epoch=0,
                v3_and_below_topics=[(topic, [0])],
            ),
            version=3,
        )
        errors = [p.partition_error_code for t in added.results_by_topic_v3_and_below for p in t.results_by_partition]
        assert errors == [0]
    # EndTxn is answered once the PrepareCommit is durable; the markers follow.
    ended = connection.request(
        EndTxnRequest(transactional_id=ended_id, producer_id=producers[ended_id], producer_epoch=0, committed=True),
        version=3,
    )
    assert ended.error_code == 0
    aborting = connection.request(
        EndTxnRequest(transactional_id=ended_id, producer_id=producers[ended_id], producer_epoch=0, committed=False),
        version=3,
    )
    assert aborting.error_code == 48, "INVALID_TXN_STATE: it is being committed"
    connection.close()
    assert broker.stop() == 0
    broker.start()
    connection = RawConnection(broker.bootstrap)
    described = describe(connection, long_id)
    assert (described.transaction_state, described.producer_id, described.producer_epoch) == (
        "Ongoing",
        producers[long_id],
        0,
    )
    assert [(t.topic, t.partitions) for t in described.topics] == [(topic, [0])]
    # The command line says the same.
    described = ferrite_transactions(broker, "describe", long_id, "--json")
    assert [(d["state"], d["producer_epoch"], d["partitions"]) for d in described] == [("Ongoing", 0, [[topic, 0]])]
    listed = ferrite_transactions(broker, "list", "--state", "Ongoing", "--json")
    assert {t["transactional_id"] for t in listed} >= {long_id}

    def aborted_with_a_bump(transactional_id):
        state = describe(connection, transactional_id)
        return state.transaction_state in ("PrepareAbort", "CompleteAbort") and state.producer_epoch == 1

    committing = describe(connection, ended_id)
    wait_until(lambda: aborted_with_a_bump(short_id), "the timed-out transaction is aborted")
    assert describe(connection, long_id).transaction_state == "Ongoing", "the other has time left"
    fencing = connection.request(
        InitProducerIdRequest(transactional_id=long_id, transaction_timeout_ms=60000), version=2
    )
    assert fencing.error_code == 51, "CONCURRENT_TRANSACTIONS: the open transaction is aborted first"
    assert aborted_with_a_bump(long_id)
    connection.close()
    assert (committing.transaction_state, committing.producer_epoch) in (("PrepareCommit", 0), ("CompleteCommit", 0))


def coordinator_of(cluster, transactional_id):  # noqa: F811 (`cluster` is the fixture's value)
    """The node every answering broker names as `transactional_id`'s coordinator, once they
    agree on a live one."""

    def agreed():
        named = set()
        for node in cluster.answering():
            connection = RawConnection(cluster.brokers[node].bootstrap)
            answer = connection.request(
                FindCoordinatorRequest(key_type=TRANSACTION_KEY_TYPE, coordinator_keys=[transactional_id])
            )
            connection.close()
            (coordinator,) = answer.coordinators
            if coordinator.error_code != 0:
                return None
            named.add(coordinator.node_id)
        (node,) = named if len(named) == 1 else (None,)
        return node if node in cluster.answering() else None

    return wait_until(agreed, f"the brokers to agree on the coordinator of {transactional_id}")


def test_a_cluster_coordinates_an_id_on_its_leader_and_fails_over(cluster):  # noqa: F811
    transactional_id = topic_name("cluster")
    first = transactional_producer(cluster.bootstrap(), transactional_id)
    coordinator = coordinator_of(cluster, transactional_id)
    for node in cluster.answering():
        connection = RawConnection(cluster.brokers[node].bootstrap)
        described = describe(connection, transactional_id)
        connection.close()
        if node == coordinator:
            assert (described.error_code, described.transaction_state, described.producer_epoch) == (0, "Empty", 0)
            producer_id = described.producer_id
        else:
            assert described.error_code == 16, "NOT_COORDINATOR: the id lives on its partition's leader"

    cluster.kill9(coordinator)
    successor = coordinator_of(cluster, transactional_id)
    assert successor != coordinator
    second = transactional_producer(cluster.bootstrap(), transactional_id)
    connection = RawConnection(cluster.brokers[successor].bootstrap)
    described = describe(connection, transactional_id)
    connection.close()
    assert (described.producer_id, described.producer_epoch) == (producer_id, 1), "loaded from the replicated log"
    cluster.restart(coordinator)
