#!/usr/bin/env python3
"""What one multi-partition acks=all produce request costs a cluster (issue 17): mesh requests
(calls and posts, `ferrite_mesh_requests_total`) and broker CPU (`perf stat -e task-clock` on
every broker: this machine's VM has no instruction counter) per produce request, each also
minus an idle window of the same length (Raft's ticks and heartbeats). Brokers of two shards
each, one topic of PARTITIONS partitions (replication factor min(3, BROKERS)); each broker gets
REQUESTS produce requests, one at a time, each carrying one 100-byte batch for every partition
it leads. On one broker no Raft traffic crosses the mesh, so its count is the produce path's
own: one call per owning shard other than the connection's.

Usage (from the repository root, with the client tests' venv and a release build):
    FERRITE_RELEASE_BIN=target/release/ferrite target/client-venv/bin/python \
        bench/scripts/produce-costs.py REQUESTS PARTITIONS [BROKERS (default 3)]
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "client-tests"))
os.environ.setdefault("FERRITE_BIN", os.environ["FERRITE_RELEASE_BIN"])

import confluent_kafka  # noqa: E402
from kafka.protocol.producer.produce import ProduceRequest  # noqa: E402

import cluster_support  # noqa: E402
from cluster_support import Cluster, Loopback, created_topic  # noqa: E402
from raw_protocol import RawConnection, record_batch  # noqa: E402


def scrape(broker):
    text = urllib.request.urlopen(broker.metrics_url, timeout=5).read().decode()
    mesh = sum(float(v) for v in re.findall(r'^ferrite_mesh_requests_total\{[^}]*\} (\S+)$', text, re.M))
    produce = sum(
        float(v) for v in re.findall(r'^ferrite_requests_total\{[^}]*api="Produce"[^}]*\} (\S+)$', text, re.M)
    )
    return mesh, produce


def totals(cluster):
    mesh = produce = 0.0
    for broker in cluster.brokers.values():
        m, p = scrape(broker)
        mesh += m
        produce += p
    return mesh, produce


def settled(cluster):
    """Totals once the metrics snapshots (published every second or so) stopped moving."""
    last = None
    while True:
        time.sleep(1.5)
        now = totals(cluster)
        if now[1] == (last or (None, None))[1]:
            return now
        last = now


def perf(cluster):
    """Counts the brokers' CPU time until `perf_result`."""
    pids = ",".join(str(b.process.pid) for b in cluster.brokers.values())
    return subprocess.Popen(
        ["perf", "stat", "-x,", "-e", "task-clock", "-p", pids],
        stderr=subprocess.PIPE,
        text=True,
    )


def perf_result(process):
    """The milliseconds of CPU `perf` counted."""
    process.send_signal(2)
    _, err = process.communicate(timeout=30)
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("task-clock"):
            return float(fields[0])
    raise RuntimeError(err)


def main():
    requests = int(sys.argv[1])
    partition_count = int(sys.argv[2])
    node_count = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    cluster_support.REPLICATION_FACTOR = min(3, node_count)
    tmp = Path(tempfile.mkdtemp(prefix="ferrite-produce-costs-"))
    cluster = Cluster(tmp, Loopback(), node_count=node_count, cores=2)
    cluster.start()
    try:
        cluster.wait_all_listed()
        # A broker is listed once it listens, live for the controller a moment later: the
        # topic is refused (INVALID_REPLICATION_FACTOR) until then.
        for attempt in range(60):
            try:
                topic = created_topic(cluster, f"costs{attempt}", partition_count=partition_count)
                break
            except confluent_kafka.KafkaException:
                time.sleep(0.5)
        else:
            raise RuntimeError("the topic was never created")
        leaders = cluster.leaders(topic, partition_count)
        connections = {node: RawConnection(cluster.brokers[node].bootstrap) for node in cluster.brokers}
        by_leader = {}
        for partition, leader in leaders.items():
            by_leader.setdefault(leader, []).append(partition)
        batch = record_batch(b"x" * 100)
        topic_data = ProduceRequest.TopicProduceData

        def request_for(partitions):
            return ProduceRequest(
                acks=-1,
                timeout_ms=30000,
                topic_data=[
                    topic_data(
                        name=topic,
                        partition_data=[topic_data.PartitionProduceData(index=p, records=batch) for p in partitions],
                    )
                ],
            )

        # Warm up (connections, handover, logs open).
        for node, partitions in by_leader.items():
            for _ in range(20):
                connections[node].request(request_for(partitions))
        time.sleep(3)
        before = settled(cluster)
        counter = perf(cluster)
        started = time.monotonic()
        errors = 0
        for _ in range(requests):
            for node, partitions in by_leader.items():
                response = connections[node].request(request_for(partitions))
                errors += sum(
                    p.error_code != 0 for t in response.responses for p in t.partition_responses
                )
        elapsed = time.monotonic() - started
        busy_cpu_ms = perf_result(counter)
        after = settled(cluster)
        # The same length of time, idle: what Raft's ticks and heartbeats cost meanwhile.
        idle_before = settled(cluster)
        counter = perf(cluster)
        time.sleep(elapsed)
        idle_cpu_ms = perf_result(counter)
        idle_after = settled(cluster)
        produce = after[1] - before[1]
        mesh = after[0] - before[0]
        idle_mesh = idle_after[0] - idle_before[0]
        print(
            f"leaders {by_leader}; produce requests {produce:.0f} (errors {errors}) in {elapsed:.1f} s; "
            f"mesh requests {mesh:.0f} (idle window {idle_mesh:.0f}); "
            f"mesh per produce {mesh / produce:.3f}, minus idle {(mesh - idle_mesh) / produce:.3f}; "
            f"CPU-us per produce {busy_cpu_ms * 1000 / produce:.0f}, "
            f"minus idle {(busy_cpu_ms - idle_cpu_ms) * 1000 / produce:.0f} "
            f"(busy {busy_cpu_ms:.0f} ms, idle {idle_cpu_ms:.0f} ms)"
        )
    finally:
        cluster.shut_down(check_exit=False)
        shutil.rmtree(tmp, ignore_errors=True)


main()
