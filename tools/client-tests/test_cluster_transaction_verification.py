"""KIP-890 part 1 in a 3-broker cluster: a partition's leader verifies a transactional batch
with the transaction coordinator on another broker before it lets the batch open the
producer's transaction there. A batch for a partition that is not in the transaction is
refused (INVALID_TXN_STATE) and not written; once AddPartitionsToTxn added it, it is taken; a
late batch of a transaction that was aborted is refused and opens nothing that would hold the
last stable offset back. A confluent-kafka transaction across every partition commits as
before (it adds its partitions first)."""

import time

from kafka.protocol.producer.produce import ProduceRequest
from kafka.protocol.producer.transaction import AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

from cluster_support import cluster, created_topic  # noqa: F401 (`cluster` is a fixture)
from raw_protocol import BATCH_OVERHEAD_BYTES_MAX, RawConnection
from support import topic_name, wait_until
from test_transactions_coordinator import coordinator_of
from transactions_support import end_offsets, read_to_end, transactional_producer

PARTITIONS = 3
INVALID_TXN_STATE = 48
# Retried, as clients do: COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE,
# CONCURRENT_TRANSACTIONS (the previous transaction's markers are being written).
RETRIED = (14, 15, 51)


def answered(call, code=lambda answer: answer.error_code):
    """The first answer of `call()` whose error code (`code` of it) is not one clients retry."""

    def settled():
        answer = call()
        return None if code(answer) in RETRIED else answer

    return wait_until(settled, "an answer clients do not retry")


def produce_transactional(connection, topic, partition, transactional_id, producer, sequence, value):
    """`producer`'s (id, epoch) transactional batch, as its transactional id; the error code."""
    producer_id, epoch = producer
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=True,
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
        batch_size=len(value) + BATCH_OVERHEAD_BYTES_MAX,
    )
    builder.append(0, timestamp=int(time.time() * 1000), key=None, value=value, headers=[])
    topic_data = ProduceRequest.TopicProduceData
    request = ProduceRequest(
        transactional_id=transactional_id,
        acks=-1,
        timeout_ms=10_000,
        topic_data=[
            topic_data(
                name=topic,
                partition_data=[topic_data.PartitionProduceData(index=partition, records=bytes(builder.build()))],
            )
        ],
    )
    return connection.request(request).responses[0].partition_responses[0].error_code


def test_a_leader_verifies_a_transactional_batch_with_a_coordinator_on_another_broker(cluster):  # noqa: F811
    topic = created_topic(cluster, "verified", partition_count=PARTITIONS)
    leaders = cluster.leaders(topic, PARTITIONS)
    # A transactional id whose coordinator does not lead some partition of the topic.
    for _ in range(20):
        transactional_id = topic_name("verified")
        coordinator = coordinator_of(cluster, transactional_id)
        elsewhere = [partition for partition, leader in leaders.items() if leader != coordinator]
        if elsewhere:
            break
    partition = elsewhere[0]
    at_coordinator = RawConnection(cluster.brokers[coordinator].bootstrap)
    at_leader = RawConnection(cluster.brokers[leaders[partition]].bootstrap)
    init = answered(
        lambda: at_coordinator.request(
            InitProducerIdRequest(transactional_id=transactional_id, transaction_timeout_ms=60000), version=2
        )
    )
    assert init.error_code == 0
    producer = (init.producer_id, init.producer_epoch)
    ends = end_offsets(cluster.bootstrap(), topic, "read_uncommitted", PARTITIONS)

    def produced(sequence, value):
        return produce_transactional(at_leader, topic, partition, transactional_id, producer, sequence, value)

    assert produced(0, b"not added") == INVALID_TXN_STATE
    assert end_offsets(cluster.bootstrap(), topic, "read_uncommitted", PARTITIONS) == ends, "nothing written"

    add = AddPartitionsToTxnRequest(
        v3_and_below_transactional_id=transactional_id,
        v3_and_below_producer_id=producer[0],
        v3_and_below_producer_epoch=producer[1],
        v3_and_below_topics=[(topic, [partition])],
    )
    result = answered(
        lambda: at_coordinator.request(add, version=3).results_by_topic_v3_and_below[0].results_by_partition[0],
        code=lambda result: result.partition_error_code,
    )
    assert result.partition_error_code == 0
    assert produced(0, b"aborted") == 0

    end = EndTxnRequest(transactional_id=transactional_id, producer_id=producer[0], producer_epoch=producer[1], committed=False)
    assert answered(lambda: at_coordinator.request(end, version=3)).error_code == 0

    def stable():
        # Asked one after the other: only the expected end says the marker is in.
        committed = end_offsets(cluster.bootstrap(), topic, "read_committed", PARTITIONS)
        uncommitted = end_offsets(cluster.bootstrap(), topic, "read_uncommitted", PARTITIONS)
        return uncommitted if committed == uncommitted else None

    def marker_in():
        # The batch and its ABORT marker, stable.
        now = stable()
        return now if now and now[partition] == ends[partition] + 2 else None

    aborted = wait_until(marker_in, "the ABORT marker")
    assert produced(1, b"late") == INVALID_TXN_STATE, "the late batch of the aborted transaction"
    assert stable() == aborted, "not written, and no transaction holds the last stable offset back"
    at_leader.close()
    at_coordinator.close()

    client = transactional_producer(cluster.bootstrap(), topic_name("client"))
    client.begin_transaction()
    for each in range(PARTITIONS):
        client.produce(topic, value=b"committed %d" % each, partition=each)
    client.commit_transaction(30)
    values = read_to_end(cluster.bootstrap(), topic, "read_committed", PARTITIONS)
    assert sorted(v for vs in values.values() for v in vs) == [b"committed %d" % each for each in range(PARTITIONS)]
