"""Exactly once through broker failures: a consume-transform-produce loop (transform_worker.py:
confluent-kafka, a `read_committed` consumer reading from the group's committed offsets and a
transactional producer that commits the group's offsets with its output) runs on a 3-broker
cluster (RF=3) while each broker in turn is killed with SIGKILL in the middle of the loop's
transactions and restarted at once: so the transaction coordinator's broker, the group
coordinator's and every partition's leader are each killed at least once. A checker then proves
every input is in the output exactly once and the group's committed offsets are the inputs' end.

The worker runs under a supervisor, as in a real deployment: when it commits nothing for
PROGRESS_DEADLINE_S while inputs remain, it is killed with SIGKILL and started again (the new
producer, with the same transactional.id, fences the old one and aborts its open transaction;
the new consumer starts from the committed offsets). That is for a librdkafka bug, not the
broker's: librdkafka (2.11 and later) destroys the handle of a broker that a Metadata answer
leaves out, and a broker restarted at once is left out while its new registration is fenced
(Kafka's brokers do the same until the controller unfences them). When that broker was the
group coordinator, its destroyed handle stays in librdkafka's coordinator cache, and
send_offsets_to_transaction waits for that handle to come up, which never happens, ignoring its
timeout (confluentinc/librdkafka#5511 and #5456: rd_kafka_coord_req_fsm is re-run only by
broker state changes, and creq_ts_timeout is never checked). The restarts are printed.

What each check catches:
- output == the inputs transformed, as multisets (sorted lists compared): a duplicate (a
  transaction's output committed twice, or an aborted transaction's output visible to
  read_committed, or a zombie's write after it was fenced) makes the output longer and is
  counted; a loss (a committed offset past an input whose output was aborted or lost) leaves an
  output missing, which is listed.
- the group's committed offsets between the inputs' ends (from their delivery reports) and the
  partitions' ends (only control batches lie between): the loop only stops once they are, so
  offsets that stop short (a TxnOffsetCommit lost by a coordinator) fail the run's deadline, and
  offsets past the end never pass; together with the first check, offsets committed without
  their output (or the reverse) show as a loss or a duplicate, since the worker reads on from
  the committed offsets after each restart.
- every broker was killed once, in the order planned, each after TRANSACTIONS_BETWEEN_KILLS
  more committed transactions: the faults happened in the middle of the loop.
"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import confluent_kafka

from cluster_support import NODE_IDS, PARTITIONS, cluster, created_topic  # noqa: F401 (a fixture)
from support import CLIENT_DEADLINE_S, wait_until
from transactions_support import committed_offsets, end_offsets, read_to_end

WORKER_PROGRAM = Path(__file__).with_name("transform_worker.py")
INPUTS_PER_PARTITION = 300
# Committed transactions between one kill and the next.
TRANSACTIONS_BETWEEN_KILLS = 8
# Longer than a transaction can take to end, so that the supervisor only ends hangs: a
# commit's markers in flight to a leader killed meanwhile are sent again (to the new leader)
# once the controller fences the killed broker's run or it registers again (replication's
# cluster/peer_calls.rs, as Kafka's marker channel fails in-flight requests when the connection
# drops), and only after the inter-broker request timeout, 30 s, if neither happens (a broker
# that stopped answering but still heartbeats); until then the coordinator holds or answers
# CONCURRENT_TRANSACTIONS, and the worker's calls time out after 10 s and it starts over with
# a new producer.
PROGRESS_DEADLINE_S = 45.0
RUN_DEADLINE_S = 150.0
# How often the supervisor looks at the worker and at the group's committed offsets.
SUPERVISION_INTERVAL_S = 0.5
STDERR_TAIL_LINES = 40


class SupervisedWorker:
    """transform_worker.py, restarted with SIGKILL when it commits nothing for
    PROGRESS_DEADLINE_S; counts the transactions all its runs committed."""

    name = "transform worker"

    def __init__(self, config, log_dir):
        self.config = config
        self.log_dir = Path(log_dir)
        self.lock = threading.Lock()
        self.committed_transactions = 0
        self.last_progress = time.monotonic()
        self.starts = 0
        self.stderr_paths = []
        self.process = None
        self.reader = None
        self.start()

    def start(self):
        self.starts += 1
        stderr_path = self.log_dir / f"transform-worker-{self.starts}.stderr"
        self.stderr_paths.append(stderr_path)
        with open(stderr_path, "wb") as stderr_file:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER_PROGRAM), json.dumps(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                text=True,
            )
        with self.lock:
            self.last_progress = time.monotonic()
        self.reader = threading.Thread(target=self._count_commits, args=(self.process,), daemon=True)
        self.reader.start()

    def _count_commits(self, process):
        for line in process.stdout:
            if line.strip() == "committed":
                with self.lock:
                    self.committed_transactions += 1
                    self.last_progress = time.monotonic()

    def committed(self):
        with self.lock:
            return self.committed_transactions

    def supervise(self):
        """Restarts the worker if it exited or made no progress for PROGRESS_DEADLINE_S."""
        with self.lock:
            stalled = time.monotonic() - self.last_progress > PROGRESS_DEADLINE_S
        if stalled or self.process.poll() is not None:
            self.stop()
            self.start()

    def stop(self):
        self.process.kill()
        self.process.wait(timeout=CLIENT_DEADLINE_S)
        self.reader.join(timeout=CLIENT_DEADLINE_S)

    def stderr_tail(self):
        lines = []
        for path in self.stderr_paths:
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError as error:
                text = [f"(cannot read {path}: {error})"]
            lines += [f"--- {path.name}", *text[-STDERR_TAIL_LINES:]]
        return "\n".join(lines)


def test_consume_transform_produce_is_exactly_once_through_broker_kills(cluster, request, tmp_path):
    source = created_topic(cluster, "txn-source")
    sink = created_topic(cluster, "txn-sink")
    inputs = [f"in-{p}-{i:05d}".encode() for p in range(PARTITIONS) for i in range(INPUTS_PER_PARTITION)]
    plain = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "linger.ms": 5})
    # Where each partition's inputs end. Once every input is transformed the group's committed
    # offsets are at least that and at most the partition's end: a partition's log is its Raft
    # log, whose leaders each begin their term with a control batch (so the first offset is 1,
    # and a leader elected after the inputs were written adds one past them), and the consumer's
    # position moves past control batches as Kafka's consumers do past transaction markers.
    input_ends = {p: 0 for p in range(PARTITIONS)}

    def on_delivery(error, message):
        assert error is None, f"input not stored: {error}"
        input_ends[message.partition()] = max(input_ends[message.partition()], message.offset() + 1)

    for value in inputs:
        plain.produce(source, value=value, partition=int(value.split(b"-")[1]), on_delivery=on_delivery)
    assert plain.flush(CLIENT_DEADLINE_S) == 0

    group = "txn-transform"
    worker = SupervisedWorker(
        {
            "bootstrap": cluster.bootstrap(NODE_IDS),
            "source": source,
            "sink": sink,
            "group": group,
            "transactional_id": "txn-transform",
            "partitions": PARTITIONS,
        },
        tmp_path,
    )
    request.node.ferrite_clients = [worker]
    kills = []
    fault_errors = []

    def faults():
        try:
            for node in NODE_IDS:
                wait_until(
                    lambda: worker.committed() >= TRANSACTIONS_BETWEEN_KILLS * (len(kills) + 1),
                    f"{TRANSACTIONS_BETWEEN_KILLS} more committed transactions before killing broker {node}",
                    deadline_s=RUN_DEADLINE_S / 2,
                )
                cluster.kill9(node)
                kills.append((node, worker.committed()))
                cluster.restart(node)
        except BaseException as error:  # reported by the main thread
            fault_errors.append(error)

    fault_thread = threading.Thread(target=faults, daemon=True)
    fault_thread.start()

    last_seen = ["nothing yet"]  # the group's committed offsets last read, or why not

    def finished():
        if fault_thread.is_alive():
            return False
        try:
            last_seen[0] = committed_offsets(cluster.bootstrap(), group, source, PARTITIONS)
            ends = end_offsets(cluster.bootstrap(), source, "read_committed", PARTITIONS)
        except confluent_kafka.KafkaException as error:  # a leader moving after a kill
            last_seen[0] = str(error)
            return False
        return all(input_ends[p] <= last_seen[0][p] <= ends[p] for p in range(PARTITIONS))

    deadline = time.monotonic() + RUN_DEADLINE_S
    try:
        while not finished():
            assert time.monotonic() < deadline, (
                f"the loop did not finish within {RUN_DEADLINE_S:.0f} s: {worker.committed()} transactions "
                f"committed, {worker.starts} worker runs, kills {kills}; the group's committed offsets "
                f"{last_seen[0]}, the inputs' ends {input_ends}"
            )
            worker.supervise()
            time.sleep(SUPERVISION_INTERVAL_S)
    finally:
        worker.stop()
    fault_thread.join(timeout=CLIENT_DEADLINE_S)
    assert not fault_errors, f"the fault schedule failed: {fault_errors[0]}"
    assert [node for node, _ in kills] == list(NODE_IDS), f"not every broker was killed: {kills}"
    print(
        f"\ntransactions committed {worker.committed()}, kills (node, transactions before) {kills}, "
        f"worker restarts {worker.starts - 1}"
    )

    outputs = [v for values in read_to_end(cluster.bootstrap(), sink, "read_committed", PARTITIONS).values() for v in values]
    expected = sorted(b"out-" + value for value in inputs)
    duplicated = len(outputs) - len(set(outputs))
    missing = sorted(set(expected) - set(outputs))
    assert duplicated == 0 and not missing and sorted(outputs) == expected, (
        f"{duplicated} duplicate output(s), {len(missing)} missing (first: {missing[:3]})"
    )
