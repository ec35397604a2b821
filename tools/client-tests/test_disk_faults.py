"""Disk faults in a 3-broker cluster of real `ferrite serve` processes under acks=all traffic
(the idempotent producer and the checker of cluster_checks.py): a segment write or an
`fdatasync` that fails on a partition's leader or on one of its followers, and a follower whose
data directory, a small tmpfs, fills up.

The write and sync failures are injected by the engine's test-only fault layer: these brokers
are a debug build with the `fault-injection` feature (FERRITE_FAULT_BIN, built by
tools/client-tests.sh), and a test arms a fault by writing the file `inject-io-fault` into a
partition's directory (see engine/src/log/injected_faults.rs).

What must hold: no broker aborts; the replica that cannot write reports the partition
unhealthy in /metrics, gives up leadership (a healthy replica takes over) or drops out of the
in-sync replicas Metadata lists, and comes back by itself once the disk works again; nothing
acknowledged is lost, duplicated or reordered; and in the end every broker's copy of the
partition holds the same batches (`ferrite dump-log`), so none skipped what it could not write.
"""

import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

from support import wait_until
from cluster_checks import (
    ContinuousProducer,
    check_acknowledged,
    measured_failover,
    read_to_high_water_marks,
)
from cluster_support import (
    FAILOVER_DEADLINE_S,
    Loopback,
    METADATA_TIMEOUT_S,
    NODE_IDS,
    created_topic,
    running_cluster,
)

FERRITE_FAULT_BIN = os.environ.get("FERRITE_FAULT_BIN", "")
# The file that arms a fault in a partition directory (engine::log::injected_faults).
FAULT_FILE = "inject-io-fault"
# A faulted replica tries to come back after two election timeouts (about a second), longer
# after repeated faults; this is well past a few tries.
RECOVERY_DEADLINE_S = 45.0


class FaultInjectingLoopback(Loopback):
    """Loopback brokers running the fault-injection build."""

    def binary(self, node):
        return FERRITE_FAULT_BIN


@pytest.fixture
def fault_cluster(request, tmp_path):
    assert FERRITE_FAULT_BIN, "FERRITE_FAULT_BIN is not set: run the tests with tools/client-tests.sh"
    yield from running_cluster(
        request,
        tmp_path,
        FaultInjectingLoopback(),
        # A 16 MiB journal (4 files of 4 MiB): the disk-full test's tmpfs holds it beside the
        # metadata log's reserved segment.
        broker_args=("--offsets-partitions", "1", "--journal-file-bytes", "4194304"),
    )


@pytest.fixture
def mounts():
    """Mount points to unmount (lazily) once the brokers using them have stopped: requested
    before the cluster, so it is torn down after it."""
    points = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def partition_dir(cluster, node, topic, partition):
    return cluster.brokers[node].data_dir / f"{topic}-{partition}"


def arm(cluster, node, topic, partition, operation, errno, count=1):
    """Makes the next `count` `operation`s ("write" or "sync") of `topic`/`partition` on broker
    `node` fail with `errno`; returns the fault file, deleted once the fault is used up."""
    path = partition_dir(cluster, node, topic, partition) / FAULT_FILE
    path.write_text(f"{operation} {errno} {count}\n")
    return path


def health(cluster, node, topic):
    """partition -> healthy (bool), as broker `node`'s /metrics reports its replicas of `topic`."""
    with urllib.request.urlopen(cluster.brokers[node].metrics_url, timeout=METADATA_TIMEOUT_S) as response:
        text = response.read().decode()
    pattern = rf'^ferrite_partition_healthy\{{topic="{re.escape(topic)}",partition="(\d+)"\}} (\d+)$'
    return {int(partition): value == "1" for partition, value in re.findall(pattern, text, re.MULTILINE)}


def in_sync_replicas(cluster, topic, partition, node):
    """The in-sync replicas of `topic`/`partition` as broker `node` lists them in Metadata."""
    return sorted(cluster.metadata(topic, node=node).topics[topic].partitions[partition].isrs)


def check_survived(cluster, node):
    """Broker `node` still runs and never panicked."""
    broker = cluster.brokers[node]
    assert broker.running, f"broker {node} exited with {broker.process.returncode}:\n{broker.stderr_tail()}"
    for path in broker.stderr_paths:
        assert "panicked" not in path.read_text(errors="replace"), f"broker {node} panicked:\n{broker.stderr_tail()}"


def stored_batches(directory):
    """The batches in a partition directory as `ferrite dump-log` lists them (offsets, epoch,
    records, timestamps, producer), without their positions in the files."""
    completed = subprocess.run(
        [FERRITE_FAULT_BIN, "dump-log", str(directory)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, f"dump-log {directory}: {completed.stderr[-2000:]}"
    return [
        re.sub(r" position \d+", "", line)
        for line in completed.stdout.splitlines()
        if line.startswith("offset ")
    ]


def check_replicas_agree(cluster, topic, partitions):
    """Stops the cluster, then checks that every broker's copy of each partition of `topic` is
    the same sequence of batches, or a prefix of the longest (a follower a little behind when
    stopped): no replica has a hole where another has batches."""
    cluster.shut_down()
    for partition in partitions:
        copies = {node: stored_batches(partition_dir(cluster, node, topic, partition)) for node in NODE_IDS}
        longest = max(copies.values(), key=len)
        for node, batches in copies.items():
            differs = next((index for index, (a, b) in enumerate(zip(batches, longest)) if a != b), None)
            assert differs is None, (
                f"broker {node}'s copy of {topic}/{partition} differs at batch {differs}: "
                f"{batches[differs]!r}, where another has {longest[differs]!r}"
            )


def checked_run(cluster, topic, capsys, fault):
    """Runs an acks=all producer on `topic`, applies `fault()` once it is under way, and checks
    what it was told against what the partitions hold."""
    producer = ContinuousProducer(cluster.bootstrap(), topic)
    producer.start()
    try:
        producer.wait_for_progress(300, "before the fault")
        fault(producer)
        producer.wait_for_progress(200, "after the disk works again")
    finally:
        producer.stop()
    with capsys.disabled():
        print(f"\n{topic}: {producer.outcome()}")
    assert not producer.failed and not producer.fatal_errors, (
        f"the idempotent producer gave up on messages: {producer.outcome()}"
    )
    check_acknowledged(read_to_high_water_marks(cluster, topic), producer)


def injected_fault(cluster, capsys, operation, errno, on_leader):
    """One failed `operation` of partition 0 on its leader (`on_leader`) or a follower."""
    topic = created_topic(cluster, f"{operation}-fault")
    victims = []

    def fault(producer):
        leader = cluster.leader(topic, 0)
        victim = leader if on_leader else next(node for node in NODE_IDS if node != leader)
        victims.append(victim)
        fault_file = arm(cluster, victim, topic, 0, operation, errno)
        fault_at = time.monotonic()
        wait_until(lambda: not fault_file.exists(), f"the {operation} fault to fire on broker {victim}")
        wait_until(
            lambda: health(cluster, victim, topic).get(0) is False,
            f"broker {victim} to report {topic}/0 unhealthy",
        )
        if on_leader:
            wait_until(
                lambda: cluster.leader(topic, 0) != victim,
                "another broker to lead partition 0",
                deadline_s=FAILOVER_DEADLINE_S,
            )
        else:
            wait_until(
                lambda: victim not in in_sync_replicas(cluster, topic, 0, cluster.leader(topic, 0)),
                f"broker {victim} out of partition 0's in-sync replicas",
            )
        description = f"{operation} fault on broker {victim}"
        seconds = measured_failover(producer, fault_at, [0], description)[0]
        with capsys.disabled():
            print(f"\n{description}: partition 0 acknowledged again {seconds:.2f} s after it")
        wait_until(
            lambda: health(cluster, victim, topic).get(0) is True,
            f"broker {victim} to bring {topic}/0 back by itself",
            deadline_s=RECOVERY_DEADLINE_S,
        )
        wait_until(
            lambda: victim in in_sync_replicas(cluster, topic, 0, cluster.leader(topic, 0)),
            f"broker {victim} back in partition 0's in-sync replicas",
            deadline_s=RECOVERY_DEADLINE_S,
        )

    checked_run(cluster, topic, capsys, fault)
    check_survived(cluster, victims[0])
    check_replicas_agree(cluster, topic, [0])


def test_a_write_error_on_a_leader(fault_cluster, capsys):
    injected_fault(fault_cluster, capsys, "write", "EIO", on_leader=True)


def test_an_fsync_error_on_a_leader(fault_cluster, capsys):
    injected_fault(fault_cluster, capsys, "sync", "EIO", on_leader=True)


def test_a_write_error_on_a_follower(fault_cluster, capsys):
    injected_fault(fault_cluster, capsys, "write", "EIO", on_leader=False)


def test_an_fsync_error_on_a_follower(fault_cluster, capsys):
    injected_fault(fault_cluster, capsys, "sync", "EIO", on_leader=False)


def test_a_follower_whose_disk_fills_up(mounts, fault_cluster, capsys):
    """Broker 3's data directory moves to a tmpfs, which then fills up: its replicas cannot
    write, it neither aborts nor skips what it could not write, and once space is freed it
    catches up by itself. (The topic's small segments make every replica need new space every
    few seconds; segment files reserve space ahead of their writes.)"""
    cluster = fault_cluster
    topic = created_topic(cluster, "full-disk", config={"segment.bytes": "16384"})
    node = 3
    broker = cluster.brokers[node]
    # Broker 3's data, moved onto a tmpfs at the same path. The metadata log's segment reserves
    # 32 MiB ahead of its writes, hence the size.
    cluster.stop(node)
    moved = broker.data_dir.with_name("data-on-disk")
    broker.data_dir.rename(moved)
    broker.data_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(broker.data_dir)], check=True)
    mounts.append(broker.data_dir)
    shutil.copytree(moved, broker.data_dir, dirs_exist_ok=True)
    cluster.restart(node)
    cluster.wait_all_listed()
    filler = broker.data_dir / "filler"

    def fault(producer):
        with open(filler, "wb", buffering=0) as file:
            for chunk_bytes in (1 << 20, 4096):
                try:
                    while True:
                        file.write(b"\0" * chunk_bytes)
                except OSError:
                    pass
        wait_until(
            lambda: False in health(cluster, node, topic).values(),
            f"broker {node} to report a partition of {topic} unhealthy",
        )
        producer.wait_for_progress(100, f"while broker {node}'s disk is full")
        check_survived(cluster, node)
        filler.unlink()
        wait_until(
            lambda: (states := health(cluster, node, topic)) and all(states.values()),
            f"broker {node}'s replicas of {topic} to come back by themselves",
            deadline_s=RECOVERY_DEADLINE_S,
        )

    checked_run(cluster, topic, capsys, fault)
    for partition in range(3):
        wait_until(
            lambda partition=partition: node in in_sync_replicas(cluster, topic, partition, cluster.leader(topic, partition)),
            f"broker {node} back in partition {partition}'s in-sync replicas",
            deadline_s=RECOVERY_DEADLINE_S,
        )
    check_survived(cluster, node)
    check_replicas_agree(cluster, topic, range(3))


def test_a_broker_whose_disk_is_full_at_start_says_so(mounts, tmp_path):
    """A broker that cannot preallocate its shards' journals on a full disk exits at once with
    a non-zero code and a line naming the cause, not a bare 'a shard stopped' (what CI printed
    when a run's disk was full)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data_dir)], check=True)
    mounts.append(data_dir)
    serve = subprocess.run(
        [os.environ["FERRITE_BIN"], "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--cores", "2"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode != 0, serve.stderr
    assert re.search(r"no space left", serve.stderr, re.IGNORECASE), serve.stderr
