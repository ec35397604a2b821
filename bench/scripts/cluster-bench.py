#!/usr/bin/env python3
"""Replication benchmark (issues 7 and 16): a 3-broker Ferrite cluster on loopback (one shard
each, pinned round-robin to the CPUs), replication factor 3, acks=all, 1 KiB messages.

  1. peak throughput (ferrite-bench --rate 0, on the first of --partitions) and a fixed-rate
     latency run (--rate N, linger.ms=0) for each of --partitions, with the bench harness's
     ack and end-to-end latencies;
  2. failover time over K kills: a confluent-kafka producer sends a message every 2 ms to a
     1-partition RF3 topic; the partition's leader is killed with SIGKILL; the failover time is
     from the kill to the first acknowledged (acks=all) message among those sent after it. The
     killed broker is restarted and the next kill waits until it has caught up;
  3. idle: an idle topic of --idle-partitions partitions (RF3, 3 000 by default): each
     broker's CPU (user + system, from /proc/PID/stat) over --idle-s, then the broker leading
     the most killed with SIGKILL and the time until every surviving broker's Metadata names a
     live leader for every partition, and until an acks=all produce was acknowledged on every
     partition (one message per partition, sent right after the kill, retried by librdkafka),
     with the times at which 50, 90 and 99 % of the partitions got there (where the time goes),
     then the survivors' CPU over --idle-s while the killed broker is still down;
  4. transactions (issue 19): at the fixed rate, on the first of --partitions, --repeats pairs
     of runs, each a transactional producer (--transaction-messages a transaction, commit
     latency reported) and beside it the same workload from an idempotent producer without
     transactions; both read by a read_committed consumer; --producers of each kind, sharing
     the rate.

--runs picks which (default: peak,fixed,failover; add idle, transactions). --ferrite and --bench pick the
binaries (e.g. a baseline build to compare with); --kafka-port-base and --rpc-port-base put
the brokers on fixed ports (base + node id; metrics on the Kafka base + 100 + node id; default:
free ones).

Usage (from the repository root, after `cargo build --release -p ferrite-tools --bin ferrite`
and `cargo build --release -p ferrite-bench`, and with confluent-kafka importable, e.g. the
client tests' venv):
    target/client-venv/bin/python bench/scripts/cluster-bench.py [--kills 20] [--duration-s 15]
        [--rate 20480] [--partitions 3,16,256] [--runs peak,fixed,failover,idle]
        [--idle-partitions 3000] [--idle-s 30] [--segment-bytes 4194304] [--dir ./bench-data]
        [--transaction-messages 100] [--producers 1] [--repeats 1]
Prints one JSON line per result; figures depend on the machine (noted in the first line, with
the load average). A run's line also says where the brokers' time went over it (their metrics,
summed over the brokers): each stage of a replicated write and how late the shards' replication
clocks ticked (`replication`: count, mean, and the bucket bounds holding the median and the
99th percentile), each broker's CPU in cores, and the busy share of the machine's CPU (the
client's included): a machine near 1.0 makes every broker wait for its core.
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
# Kernel clock ticks per second: the unit of utime and stime in /proc/PID/stat.
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    def __init__(self, root, ferrite, segment_bytes, brokers=3, kafka_port_base=0,
                 rpc_port_base=0):
        self.root = root
        self.ferrite = ferrite
        self.segment_bytes = segment_bytes
        self.ids = list(range(1, brokers + 1))

        def ports(base, offset=0):
            return {i: base + offset + i if base else free_port() for i in self.ids}

        self.kafka = ports(kafka_port_base)
        self.rpc = ports(rpc_port_base)
        self.metrics = ports(kafka_port_base, 100)
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
            [self.ferrite, "serve", "--node-id", str(i), "--listen", f"127.0.0.1:{self.kafka[i]}",
             "--rpc-listen", f"127.0.0.1:{self.rpc[i]}", "--peers", self.peers(),
             "--data-dir", data, "--cpuset", str(self.cpu[i]),
             "--metrics-listen", f"127.0.0.1:{self.metrics[i]}",
             "--segment-bytes", str(self.segment_bytes)],
            stdout=log, stderr=log)

    def cpu_s(self, i):
        """CPU time broker i has used so far (user + system), in seconds."""
        with open(f"/proc/{self.processes[i].pid}/stat") as stat:
            # The command name (field 2) is in parentheses; utime and stime are fields 14, 15.
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S

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

    def samples(self, brokers=None):
        """The metrics of `brokers` (default: every broker) summed: {"name{labels}": value}."""
        totals = {}
        for i in brokers or self.ids:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics[i]}/metrics",
                                        timeout=5) as response:
                for line in response.read().decode().splitlines():
                    if line and not line.startswith("#"):
                        sample, value = line.rsplit(" ", 1)
                        totals[sample] = totals.get(sample, 0.0) + float(value)
        return totals

    def election_counters(self, i):
        """Broker i's election messages sent and received, by kind, and the messages its
        transport dropped, since it started (its metrics)."""
        counters = {}
        for sample, value in self.samples([i]).items():
            for family, direction in (("ferrite_replication_messages_sent_total", "sent"),
                                      ("ferrite_replication_messages_received_total", "received")):
                if sample.startswith(family + '{kind="'):
                    kind = sample.split('"')[1]
                    if "vote" in kind or kind in ("begin_epoch", "timeout_now"):
                        counters[f"{direction}_{kind}"] = int(value)
            if sample == "ferrite_transport_messages_dropped_total":
                counters["transport_dropped"] = int(value)
        return counters

    def request_totals(self, apis, samples):
        """Requests answered and their summed latency in seconds, per API in `apis`, over
        every broker, since each started (its metrics' ferrite_request_latency_seconds), from
        `samples` (`Cluster.samples`)."""
        return {api: [samples.get(f'ferrite_request_latency_seconds{field}{{api="{api}"}}', 0.0)
                      for field in ("_count", "_sum")] for api in apis}

    def leader(self, topic, partition=0):
        info = self.metadata(topic).topics[topic].partitions[partition]
        return info.leader if info.leader in self.kafka else None


# The APIs whose broker-side latency a kill-one run reports (where a failover's time goes).
FAILOVER_APIS = ("Produce", "Metadata")

# The APIs whose broker-side latency a transactions run reports (where a commit's time goes).
TRANSACTION_APIS = ("Produce", "AddPartitionsToTxn", "EndTxn", "InitProducerId")


def machine_ticks():
    """The machine's CPU time so far, in clock ticks: (all, idle or waiting for I/O)."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


def histogram_summary(before, after, name, labels=""):
    """One histogram's observations between two `Cluster.samples`: count, mean and the upper
    bounds of the buckets holding the median and the 99th percentile, in ms."""
    separator = "," if labels else ""
    buckets = []
    for sample, value in after.items():
        prefix = f"{name}_bucket{{{labels}{separator}le=\""
        if sample.startswith(prefix):
            bound = sample[len(prefix):-2]
            bound = float("inf") if bound == "+Inf" else float(bound)
            buckets.append((bound, value - before.get(sample, 0.0)))
    buckets.sort()
    count = buckets[-1][1] if buckets else 0
    if not count:
        return None
    key = f"{{{labels}}}" if labels else ""
    total = after.get(f"{name}_sum{key}", 0.0) - before.get(f"{name}_sum{key}", 0.0)

    def bound_ms(share):
        return next(bound for bound, seen in buckets if seen >= share * count) * 1000

    return {"count": int(count), "mean_ms": round(1000 * total / count, 2),
            "p50_at_most_ms": bound_ms(0.5), "p99_at_most_ms": bound_ms(0.99)}


# Where an acks=all produce's time goes in the brokers (ferrite_replication_stage_seconds).
STAGES = ("place", "leader_durable", "commit", "follower_round", "follower_durable")


def bench(cluster, bench_binary, name, args, results):
    path = os.path.join(cluster.root, f"{name}.json")
    before = cluster.samples()
    cpu_before = {i: cluster.cpu_s(i) for i in cluster.ids}
    machine_before, started = machine_ticks(), time.monotonic()
    command = [bench_binary, "--bootstrap", cluster.bootstrap(), "--topic", name,
               "--replication-factor", "3", "--message-bytes", "1024", "--acks", "all",
               "--json", path, "--delete-topic"] + args
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                   stderr=open(os.path.join(cluster.root, f"{name}.log"), "w"))
    elapsed = time.monotonic() - started
    machine_after = machine_ticks()
    cpu = {i: round((cluster.cpu_s(i) - cpu_before[i]) / elapsed, 3) for i in cluster.ids}
    after = cluster.samples()
    with open(path) as result:
        summary = json.load(result)
    # Requests answered during the run (set-up and drain included), and their mean time from
    # decoding to the reply being ready, in ms, over every broker.
    broker_requests = {}
    requests_before = cluster.request_totals(TRANSACTION_APIS, before)
    requests_after = cluster.request_totals(TRANSACTION_APIS, after)
    for api in TRANSACTION_APIS:
        count = requests_after[api][0] - requests_before[api][0]
        if count:
            broker_requests[api] = {
                "count": int(count),
                "mean_ms": round(1000 * (requests_after[api][1] - requests_before[api][1])
                                 / count, 3)}
    # Where the brokers' time went over the run: each stage of a replicated write, how late
    # the shards' replication clocks ticked (the wait for a shard's turn), each broker's CPU in
    # cores, and the share of the machine's CPU time that was busy (the client's included).
    replication = {stage: histogram_summary(before, after, "ferrite_replication_stage_seconds",
                                            f'stage="{stage}"') for stage in STAGES}
    replication["tick_lateness"] = histogram_summary(
        before, after, "ferrite_replication_tick_lateness_seconds")
    machine_busy = 1 - (machine_after[1] - machine_before[1]) / max(
        1, machine_after[0] - machine_before[0])
    line = {"run": name, "produce_msgs_per_s": summary["produce_msgs_per_s"],
            "produce_mb_per_s": summary["produce_mb_per_s"],
            "ack_latency_ms": summary["ack_latency_ms"],
            "e2e_latency_ms": summary["e2e_latency_ms"], "produced": summary["produced"],
            "consumed": summary["consumed"],
            # The client's own queue against the round trip to the brokers (ferrite-bench's
            # reading of librdkafka's statistics; absent from older ferrite-bench builds).
            "producer_latency_split": summary.get("producer_latency_split"),
            # With --transactional-id: commits and their latency (null without).
            "transactions": summary.get("transactions"), "problems": summary.get("problems"),
            "broker_requests": broker_requests, "replication": replication,
            "broker_cores": cpu, "machine_busy_share": round(machine_busy, 3),
            "load": os.getloadavg()}
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


def live_leaders(admin, topic, count, alive):
    """How many of the topic's partitions the broker behind `admin` names a live leader for
    (one of `alive`); 0 while it does not list them all."""
    try:
        partitions = admin.list_topics(topic=topic, timeout=5).topics[topic].partitions
    except Exception:  # the broker is busy or restarting: nothing known yet
        return 0
    return sum(1 for p in partitions.values() if p.leader in alive) if len(partitions) == count \
        else 0


def idle_cpu(cluster, ids, idle_s):
    """Each of brokers `ids`'s CPU (user + system) over `idle_s`, in percent of one core, and
    the seconds it was measured over."""
    before = {i: cluster.cpu_s(i) for i in ids}
    started = time.monotonic()
    time.sleep(idle_s)
    elapsed = time.monotonic() - started
    return elapsed, {i: round(100 * (cluster.cpu_s(i) - before[i]) / elapsed, 2) for i in ids}


def idle_then_kill(cluster, partitions, idle_s):
    """The idle CPU of each broker hosting `partitions` RF3 partitions, then the time until a
    killed broker's leaderships have moved (see the module documentation)."""
    topic = "idle"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    # Small segments: each written segment reserves min(32 MiB, segment.bytes) of disk ahead of
    # its writes, and every partition is written (its leaders' LEADER_CHANGE batches).
    admin.create_topics([NewTopic(topic, partitions, 3, config={"segment.bytes": "65536"})],
                        operation_timeout=120)[topic].result(180)
    # One admin client per broker, each asking only its own broker (a client per question
    # would load the machine while it measures).
    admins = {i: AdminClient({"bootstrap.servers": f"127.0.0.1:{cluster.kafka[i]}",
                              "log_level": 0}) for i in cluster.ids}
    deadline = time.monotonic() + 300
    while any(live_leaders(admins[i], topic, partitions, cluster.ids) < partitions
              for i in cluster.ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every partition of {topic} has a leader after 300 s")
        time.sleep(1)
    time.sleep(5)  # the creation's own work settles
    elapsed, cpu = idle_cpu(cluster, cluster.ids, idle_s)
    led = {i: 0 for i in cluster.ids}
    for p in admin.list_topics(topic=topic, timeout=10).topics[topic].partitions.values():
        led[p.leader] = led.get(p.leader, 0) + 1
    print(json.dumps({"run": "idle", "partitions": partitions, "seconds": round(elapsed, 1),
                      "cpu_percent_of_one_core": cpu, "leaderships": led,
                      "load": os.getloadavg()}), flush=True)

    # The broker leading the most partitions goes (the controller leader, ids being equal).
    victim = max(cluster.ids, key=lambda i: led[i])
    survivors = [i for i in cluster.ids if i != victim]
    acked = {}
    lock = threading.Lock()
    producer = Producer({"bootstrap.servers": ",".join(f"127.0.0.1:{cluster.kafka[i]}"
                                                        for i in survivors),
                         "acks": "all", "linger.ms": 0, "message.timeout.ms": 60000,
                         "retry.backoff.ms": 20, "retry.backoff.max.ms": 100,
                         "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
                         "topic.metadata.refresh.fast.interval.ms": 50, "log_level": 0})
    producer.list_topics(topic=topic, timeout=10)  # connected and knows the leaders

    def delivered(error, message):
        if error is None:
            with lock:
                acked.setdefault(message.partition(), time.monotonic())

    elections_before = {i: cluster.election_counters(i) for i in survivors}
    requests_before = cluster.request_totals(FAILOVER_APIS, cluster.samples(survivors))
    killed_at = time.monotonic()
    cluster.kill(victim)
    for partition in range(partitions):
        producer.produce(topic, b"x" * 1024, partition=partition, on_delivery=delivered)
    moved_ms = None
    # When the slowest survivor's Metadata first named a live leader for a share of the
    # partitions, and when that share of them was acknowledged: where the time goes.
    shares = (0.5, 0.9, 0.99)
    live_at, acked_at = {}, {}

    def note(reached, count):
        for share in shares:
            if share not in reached and count >= share * partitions:
                reached[share] = round((time.monotonic() - killed_at) * 1000)

    deadline = killed_at + 60
    while time.monotonic() < deadline and (moved_ms is None or len(acked) < partitions):
        producer.poll(0.01)
        with lock:
            note(acked_at, len(acked))
        if moved_ms is None:
            live = min(live_leaders(admins[i], topic, partitions, survivors) for i in survivors)
            note(live_at, live)
            if live == partitions:
                moved_ms = (time.monotonic() - killed_at) * 1000
    producer.flush(10)
    # The survivors' campaigns: each sends a pre-vote to each other voter (two here), so
    # pre-votes sent beyond twice the leaderships a survivor won are campaigns that timed out
    # or lost; drops are messages the transport gave up on (most to the killed broker).
    elections = {}
    for i in survivors:
        after = cluster.election_counters(i)
        elections[i] = {kind: after[kind] - elections_before[i].get(kind, 0) for kind in after
                        if after[kind] != elections_before[i].get(kind, 0)}
    requests_after = cluster.request_totals(FAILOVER_APIS, cluster.samples(survivors))
    # The survivors' answers during the failover: their count and mean time at the broker.
    requests = {api: {"count": int(requests_after[api][0] - requests_before[api][0]),
                      "mean_ms": round(1000 * (requests_after[api][1] - requests_before[api][1])
                                       / max(1, requests_after[api][0] - requests_before[api][0]),
                                       2)}
                for api in FAILOVER_APIS}
    acked_ms = (max(acked.values()) - killed_at) * 1000 if len(acked) == partitions else None
    print(json.dumps({"run": "kill-one", "partitions": partitions, "victim": victim,
                      "leaderships_moved": led[victim],
                      "metadata_all_live_ms": moved_ms and round(moved_ms),
                      "acked_every_partition_ms": acked_ms and round(acked_ms),
                      "metadata_live_share_ms": {str(k): v for k, v in live_at.items()},
                      "acked_share_ms": {str(k): v for k, v in acked_at.items()},
                      "acked": len(acked), "elections": elections,
                      "survivors_requests": requests,
                      "load": os.getloadavg()}), flush=True)
    # The survivors idle with their peer still down: what its absence costs them.
    elapsed, cpu = idle_cpu(cluster, survivors, idle_s)
    print(json.dumps({"run": "idle-one-down", "partitions": partitions, "down": victim,
                      "seconds": round(elapsed, 1), "cpu_percent_of_one_core": cpu,
                      "load": os.getloadavg()}), flush=True)
    cluster.start(victim)
    cluster.wait_listed(3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="peak,fixed,failover",
                        help="comma-separated: peak, fixed, failover, idle")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--duration-s", type=int, default=15)
    parser.add_argument("--warmup-s", type=int, default=3)
    parser.add_argument("--rate", type=int, default=20480)
    parser.add_argument("--partitions", default="3,16,256",
                        help="comma-separated partition counts of the fixed-rate runs")
    parser.add_argument("--segment-bytes", type=int, default=4 << 20,
                        help="the brokers' --segment-bytes (bounds the disk reserved per "
                        "partition)")
    parser.add_argument("--transaction-messages", type=int, default=100)
    parser.add_argument("--producers", type=int, default=1,
                        help="producers of each transactions run, sharing the rate")
    parser.add_argument("--repeats", type=int, default=1,
                        help="pairs of runs (transactional, then without) for transactions")
    parser.add_argument("--idle-partitions", type=int, default=3000)
    parser.add_argument("--idle-s", type=int, default=30)
    parser.add_argument("--ferrite", default=FERRITE)
    parser.add_argument("--bench", default=BENCH)
    parser.add_argument("--kafka-port-base", type=int, default=0)
    parser.add_argument("--rpc-port-base", type=int, default=0)
    parser.add_argument("--dir", default="./bench-data")
    arguments = parser.parse_args()
    runs = set(arguments.runs.split(","))
    counts = [int(count) for count in arguments.partitions.split(",")]
    os.makedirs(arguments.dir, exist_ok=True)
    # Each written segment reserves min(32 MiB, segment bytes) of disk ahead of its writes, on
    # every broker: 256 partitions at the broker's 1 GiB default reserve 24 GiB. Refuse a run
    # that would leave less than 10 GiB free.
    reserved = 3 * max(counts) * min(32 << 20, arguments.segment_bytes)
    data = 3 * arguments.rate * 1024 * (arguments.duration_s + arguments.warmup_s)
    free = shutil.disk_usage(arguments.dir).free
    if free - reserved - data < 10 << 30:
        raise SystemExit(f"{arguments.dir}: {free >> 20} MiB free; the runs would reserve "
                         f"{reserved >> 20} MiB and write {data >> 20} MiB, leaving less "
                         "than 10 GiB")
    root = os.path.abspath(os.path.join(arguments.dir, f"cluster-{int(time.time())}"))
    os.makedirs(root)
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), "?")
    print(json.dumps({"machine": f"{os.cpu_count()} cores, {model}", "results": root,
                      "ferrite": os.path.abspath(arguments.ferrite), "load": os.getloadavg()}),
          flush=True)
    cluster = Cluster(root, arguments.ferrite, arguments.segment_bytes,
                      kafka_port_base=arguments.kafka_port_base,
                      rpc_port_base=arguments.rpc_port_base)
    for i in cluster.ids:
        cluster.start(i)
    results = []
    try:
        cluster.wait_listed(3)
        timing = ["--duration-s", str(arguments.duration_s), "--warmup-s", str(arguments.warmup_s),
                  "--linger-ms", "0"]
        if "peak" in runs:
            bench(cluster, arguments.bench, "peak-rf3-acksall",
                  ["--partitions", str(counts[0]), "--rate", "0"] + timing, results)
        if "fixed" in runs:
            for count in counts:
                bench(cluster, arguments.bench, f"fixed-rf3-acksall-{count}p",
                      ["--partitions", str(count), "--rate", str(arguments.rate)] + timing,
                      results)
        if "transactions" in runs:
            fixed = ["--partitions", str(counts[0]), "--rate", str(arguments.rate),
                     "--isolation-level", "read_committed",
                     "--producers", str(arguments.producers)] + timing
            kind = f"rf3-p{counts[0]}-producers{arguments.producers}"
            for repeat in range(1, arguments.repeats + 1):
                bench(cluster, arguments.bench, f"txn-{kind}-r{repeat}",
                      fixed + ["--transactional-id", f"txn-bench-{repeat}",
                               "--transaction-messages", str(arguments.transaction_messages)],
                      results)
                bench(cluster, arguments.bench, f"idempotent-{kind}-r{repeat}",
                      fixed + ["--idempotence"], results)
        if "failover" in runs:
            times = failovers(cluster, arguments.kills)
            line = {"run": "failover", "kills": len(times),
                    "failover_ms": {"p50": statistics.median(times), "max": max(times),
                                    "min": min(times)},
                    "each_ms": [round(t, 1) for t in times]}
            print(json.dumps(line), flush=True)
        if "idle" in runs:
            idle_then_kill(cluster, arguments.idle_partitions, arguments.idle_s)
    finally:
        cluster.stop_all()
        if os.environ.get("KEEP_DATA") != "1":
            for entry in os.listdir(root):
                if entry.startswith("broker-") and not entry.endswith(".log"):
                    shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
