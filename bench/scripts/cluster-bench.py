#!/usr/bin/env python3
"""Replication benchmark (issue 7): a 3-broker Ferrite cluster on loopback, replication factor 3,
acks=all, 1 KiB messages.

  1. peak throughput (ferrite-bench --rate 0) and a fixed-rate latency run (--rate N), with the
     bench harness's JSON summary lines;
  2. failover time over K kills: a confluent-kafka producer sends a message every 2 ms to a
     1-partition RF3 topic; the partition's leader is killed with SIGKILL; the failover time is
     from the kill to the first acknowledged (acks=all) message among those sent after it. The
     killed broker is restarted and the next kill waits until it has caught up.

Usage (from the repository root, after `cargo build --release -p ferrite-tools -p ferrite-bench`
and with confluent-kafka importable, e.g. the client tests' venv):
    target/client-venv/bin/python bench/scripts/cluster-bench.py [--kills 20] [--duration-s 15]
        [--rate 20480] [--dir ./bench-data]
Prints one JSON line per result; figures depend on the machine (noted in the first line).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
FERRITE = os.path.join(TARGET, "release", "ferrite")
BENCH = os.path.join(TARGET, "release", "ferrite-bench")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    def __init__(self, root, brokers=3):
        self.root = root
        self.ids = list(range(1, brokers + 1))
        self.kafka = {i: free_port() for i in self.ids}
        self.rpc = {i: free_port() for i in self.ids}
        self.metrics = {i: free_port() for i in self.ids}
        self.processes = {}
        cpus = os.cpu_count() or 1
        self.cpu = {i: (i - 1) % cpus for i in self.ids}

    def peers(self):
        return ",".join(f"{i}@127.0.0.1:{self.rpc[i]}" for i in self.ids)

    def bootstrap(self):
        return ",".join(f"127.0.0.1:{self.kafka[i]}" for i in self.ids)

    def start(self, i):
        data = os.path.join(self.root, f"broker-{i}")
        log = open(os.path.join(self.root, f"broker-{i}.log"), "ab")
        self.processes[i] = subprocess.Popen(
            [FERRITE, "serve", "--node-id", str(i), "--listen", f"127.0.0.1:{self.kafka[i]}",
             "--rpc-listen", f"127.0.0.1:{self.rpc[i]}", "--peers", self.peers(),
             "--data-dir", data, "--cpuset", str(self.cpu[i]),
             "--metrics-listen", f"127.0.0.1:{self.metrics[i]}"],
            stdout=log, stderr=log)

    def kill(self, i):
        self.processes[i].send_signal(signal.SIGKILL)
        self.processes[i].wait()

    def stop_all(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    def metadata(self, topic=None):
        admin = AdminClient({"bootstrap.servers": self.bootstrap()})
        return admin.list_topics(topic=topic, timeout=10)

    def wait_listed(self, count, deadline_s=60):
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                if len(self.metadata().brokers) == count:
                    return
            except Exception:  # brokers still starting
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not list {count} brokers in {deadline_s} s")

    def high_watermark(self, i, topic, partition=0):
        """Broker i's high-water mark of a partition (its own replica's), from its metrics."""
        wanted = f'ferrite_partition_high_watermark{{topic="{topic}",partition="{partition}"}} '
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics[i]}/metrics",
                                        timeout=2) as response:
                for line in response.read().decode().splitlines():
                    if line.startswith(wanted):
                        return int(line.split()[-1])
        except OSError:
            pass
        return None

    def leader(self, topic, partition=0):
        info = self.metadata(topic).topics[topic].partitions[partition]
        return info.leader if info.leader in self.kafka else None


def bench(cluster, name, args, results):
    path = os.path.join(cluster.root, f"{name}.json")
    command = [BENCH, "--bootstrap", cluster.bootstrap(), "--topic", name,
               "--replication-factor", "3", "--message-bytes", "1024", "--acks", "all",
               "--json", path, "--delete-topic"] + args
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                   stderr=open(os.path.join(cluster.root, f"{name}.log"), "w"))
    with open(path) as result:
        summary = json.load(result)
    line = {"run": name, "produce_msgs_per_s": summary["produce_msgs_per_s"],
            "produce_mb_per_s": summary["produce_mb_per_s"],
            "ack_latency_ms": summary["ack_latency_ms"], "produced": summary["produced"],
            "consumed": summary["consumed"]}
    print(json.dumps(line), flush=True)
    results.append(line)


def failovers(cluster, kills):
    topic = "failover"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(30)
    deadline = time.monotonic() + 30
    while cluster.leader(topic) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("no leader for the failover topic")
        time.sleep(0.1)
    acked = []  # (sent_at, acked_at)
    lock = threading.Lock()
    stop = threading.Event()

    def produce():
        producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all",
                             "enable.idempotence": True, "linger.ms": 0,
                             "message.timeout.ms": 60000, "retry.backoff.ms": 20,
                             "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200})

        def delivered(error, message, sent_at):
            if error is None:
                with lock:
                    acked.append((sent_at, time.monotonic()))

        while not stop.is_set():
            sent_at = time.monotonic()
            producer.produce(topic, b"x" * 1024,
                             on_delivery=lambda e, m, s=sent_at: delivered(e, m, s))
            producer.poll(0.002)
        producer.flush(60)

    sender = threading.Thread(target=produce)
    sender.start()
    times = []
    try:
        for _ in range(kills):
            time.sleep(1.0)
            victim = cluster.leader(topic)
            killed_at = time.monotonic()
            cluster.kill(victim)
            deadline = killed_at + 60
            first = None
            while first is None and time.monotonic() < deadline:
                with lock:
                    after = [ack for sent, ack in acked if sent >= killed_at]
                first = min(after) if after else None
                time.sleep(0.005)
            if first is None:
                raise RuntimeError("no acknowledgement within 60 s of a kill")
            times.append((first - killed_at) * 1000)
            # Back in the group before the next kill: the restarted replica has caught up to
            # where the others were when it came back (else the next kill would leave a
            # single healthy replica, and the time measured would be its catching up).
            survivor = next(i for i in cluster.ids if i != victim)
            mark = cluster.high_watermark(survivor, topic) or 0
            cluster.start(victim)
            cluster.wait_listed(3)
            deadline = time.monotonic() + 60
            while (cluster.high_watermark(victim, topic) or -1) < mark:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"broker {victim} did not catch up in 60 s")
                time.sleep(0.05)
    finally:
        stop.set()
        sender.join()
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--duration-s", type=int, default=15)
    parser.add_argument("--warmup-s", type=int, default=3)
    parser.add_argument("--rate", type=int, default=20480)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--dir", default="./bench-data")
    arguments = parser.parse_args()
    root = os.path.abspath(os.path.join(arguments.dir, f"cluster-{int(time.time())}"))
    os.makedirs(root)
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), "?")
    print(json.dumps({"machine": f"{os.cpu_count()} cores, {model}", "results": root}),
          flush=True)
    cluster = Cluster(root)
    for i in cluster.ids:
        cluster.start(i)
    results = []
    try:
        cluster.wait_listed(3)
        common = ["--partitions", str(arguments.partitions), "--duration-s",
                  str(arguments.duration_s), "--warmup-s", str(arguments.warmup_s)]
        bench(cluster, "peak-rf3-acksall", common + ["--rate", "0"], results)
        bench(cluster, "fixed-rf3-acksall", common + ["--rate", str(arguments.rate)], results)
        times = failovers(cluster, arguments.kills)
        line = {"run": "failover", "kills": len(times),
                "failover_ms": {"p50": statistics.median(times), "max": max(times),
                                "min": min(times)},
                "each_ms": [round(t, 1) for t in times]}
        print(json.dumps(line), flush=True)
    finally:
        cluster.stop_all()
        if os.environ.get("KEEP_DATA") != "1":
            for entry in os.listdir(root):
                if entry.startswith("broker-") and not entry.endswith(".log"):
                    shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
