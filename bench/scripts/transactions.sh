#!/usr/bin/env bash
# Transactions against the same workload without them (issue 19), in one run, on one
# filesystem:
#   1. fio: 4 KiB writes each followed by fdatasync (what one sync per request would allow), and
#      sequential 1 MiB direct writes, io_uring, queue depth 8 (the disk's bandwidth)
#   2. a release `ferrite serve` alone (its data directory in DIR), and REPEATS pairs of
#      ferrite-bench runs at a fixed RATE (20 MiB/s of 1 KiB messages), acks=all, linger.ms=0,
#      read_committed consumer:
#        - a transactional producer committing every TRANSACTION_MESSAGES (100) messages
#        - beside it, the same workload from an idempotent producer without transactions
#   3. the same pairs against three release brokers on loopback, replication factor 3
#      (cluster-bench.py --runs transactions: one shard each, pinned round-robin to the CPUs)
# and prints every run as a Markdown table, each transactional run's latencies also as ratios
# to the run without transactions of its own pair.
#
# Usage: bench/scripts/transactions.sh [DIR]   (DIR defaults to ./bench-data; run from the
# repository root, after `bash tools/client-tests.sh -k kcat` once, for the Python venv with
# confluent-kafka that cluster-bench.py needs). Environment: PARTITIONS (default 3),
# DURATION_S (default 15), WARMUP_S (default 3), RATE (messages a second, default 20480),
# TRANSACTION_MESSAGES (default 100), PRODUCERS (each with its own transactional id, sharing
# the rate; default 1), REPEATS (pairs per topology, default 2), CORES (the
# single broker's shards, default every core), CLUSTER (0: skip the 3-broker runs), PYTHON
# (default target/client-venv/bin/python). Each run writes about (DURATION_S + WARMUP_S) x
# 20 MiB (x 3 in the cluster); each topic is deleted after its run and the brokers' data
# directories at the end.
set -euo pipefail
# shellcheck source=bench/scripts/broker.sh
source "$(dirname "$0")/broker.sh"
dir=${1:-./bench-data}
partitions=${PARTITIONS:-3}
duration_s=${DURATION_S:-15}
warmup_s=${WARMUP_S:-3}
rate=${RATE:-20480}
transaction_messages=${TRANSACTION_MESSAGES:-100}
repeats=${REPEATS:-2}
producers=${PRODUCERS:-1}
python=${PYTHON:-target/client-venv/bin/python}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
command -v fio >/dev/null || { echo "fio is missing: apt-get install -y fio" >&2; exit 2; }
cargo build --release -q -p ferrite-tools --bin ferrite && cargo build --release -q -p ferrite-bench
release=${CARGO_TARGET_DIR:-target}/release
results=$dir/transactions-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$results"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "kernel $(uname -r), $(df -h "$dir" | tail -1 | awk '{print $1 " (" $2 ")"}'), load $(cut -d' ' -f1-3 /proc/loadavg), results in $results"

fio --output-format=json --name=sync --filename="$dir/fio.sync" --rw=write --bs=4k \
  --fdatasync=1 --size=64M --runtime=10 --time_based=1 >"$results/fio-sync.json"
fio --output-format=json --name=seq --filename="$dir/fio.seq" --rw=write --bs=1M --direct=1 \
  --ioengine=io_uring --iodepth=8 --size=2G --runtime=15 >"$results/fio-seq.json"
rm -f "$dir/fio.seq" "$dir/fio.sync"

start_broker "$release/ferrite" "$dir" "$results"

run() { # NAME EXTRA-FLAGS...
  local name=$1
  shift
  if ! kill -0 "$broker" 2>/dev/null; then
    echo "ferrite-bench $name: skipped, ferrite serve is not running (see $results/ferrite.err)" >&2
    return
  fi
  echo "ferrite-bench $name: $* ..." >&2
  curl -sf "$metrics" >"$results/$name.metrics-before" || true
  "$release/ferrite-bench" --bootstrap "$address" --topic "$name" --partitions "$partitions" \
    --message-bytes 1024 --acks all --rate "$rate" --linger-ms 0 --producers "$producers" \
    --isolation-level read_committed --duration-s "$duration_s" --warmup-s "$warmup_s" \
    --delete-topic --json "$results/$name.json" "$@" 2>"$results/$name.log" ||
    echo "ferrite-bench $name exited with status $? (see $results/$name.log)" >&2
  curl -sf "$metrics" >"$results/$name.metrics-after" || true
}
for repeat in $(seq "$repeats"); do
  run "txn-single-p$partitions-producers$producers-r$repeat" \
    --transactional-id "txn-bench-$repeat" --transaction-messages "$transaction_messages"
  run "idempotent-single-p$partitions-producers$producers-r$repeat" --idempotence
done
stop_broker
trap - EXIT

if [[ ${CLUSTER:-1} != 0 ]]; then
  "$python" "$(dirname "$0")/cluster-bench.py" --runs transactions --partitions "$partitions" \
    --rate "$rate" --duration-s "$duration_s" --warmup-s "$warmup_s" --repeats "$repeats" \
    --transaction-messages "$transaction_messages" --producers "$producers" --dir "$results" \
    >"$results/cluster.jsonl"
fi

python3 - "$results" <<'EOF'
import glob, json, os, sys
results = sys.argv[1]
load = lambda path: json.load(open(path))
sync_job = load(f"{results}/fio-sync.json")["jobs"][0]
seq = load(f"{results}/fio-seq.json")["jobs"][0]["write"]
sync_us = sync_job["sync"]["lat_ns"]["percentile"]
print(f"fio 4 KiB write + fdatasync: {sync_job['write']['iops']:.0f} /s (fdatasync p50 "
      f"{sync_us['50.000000'] / 1000:.0f} us, p99 {sync_us['99.000000'] / 1000:.0f} us); "
      f"fio 1 MiB direct seq write, qd 8: {seq['bw_bytes'] / 2**20:.0f} MiB/s")
apis = ("Produce", "AddPartitionsToTxn", "EndTxn", "InitProducerId")

def request_totals(path):
    totals = {api: [0.0, 0.0] for api in apis}
    for line in open(path) if os.path.exists(path) else []:
        for api in apis:
            for field, index in (("_count", 0), ("_sum", 1)):
                if line.startswith(f'ferrite_request_latency_seconds{field}{{api="{api}"}} '):
                    totals[api][index] += float(line.split()[-1])
    return totals

runs = {}
for path in sorted(glob.glob(f"{results}/*-single-*.json")):
    name = os.path.basename(path)[:-5]
    r = runs[name] = load(path)
    before = request_totals(f"{results}/{name}.metrics-before")
    after = request_totals(f"{results}/{name}.metrics-after")
    r["broker_requests"] = {
        api: {"count": int(after[api][0] - before[api][0]),
              "mean_ms": 1000 * (after[api][1] - before[api][1]) / (after[api][0] - before[api][0])}
        for api in apis if after[api][0] > before[api][0]}
if os.path.exists(f"{results}/cluster.jsonl"):
    for line in open(f"{results}/cluster.jsonl"):
        r = json.loads(line)
        if "run" in r:
            runs[r["run"]] = r
pct = ("p50", "p99", "p99.9", "max")
fmt = lambda h: " / ".join(f"{h[p]:.1f}" for p in pct) if h and h.get("count") else "-"
print()
print("| run | MiB/s | ack p50 / p99 / p99.9 / max | e2e p50 / p99 / p99.9 / max "
      "| commit p50 / p99 / p99.9 / max (count) | ok |")
print("|---|---|---|---|---|---|")
for name, r in runs.items():
    txn = r.get("transactions")
    commit = f"{fmt(txn['commit_latency_ms'])} ({txn['committed']})" if txn else "-"
    print(f"| {name} | {r['produce_mb_per_s']:.1f} | {fmt(r['ack_latency_ms'])} | "
          f"{fmt(r['e2e_latency_ms'])} | {commit} | "
          f"{'yes' if not r['problems'] else '; '.join(r['problems'])} |")
print()
print("transactional / idempotent, same pair: ack p50, p99, p99.9; e2e p50, p99, p99.9")
for name, r in runs.items():
    if not name.startswith("txn-"):
        continue
    base = runs.get("idempotent-" + name[len("txn-"):])
    if not base:
        continue
    ratio = lambda key, p: r[key][p] / base[key][p] if base[key].get(p) else float("nan")
    print(f"{name}: ack " + ", ".join(f"{ratio('ack_latency_ms', p):.2f}" for p in pct[:3])
          + "; e2e " + ", ".join(f"{ratio('e2e_latency_ms', p):.2f}" for p in pct[:3]))
print()
print("broker side, over the whole run (set-up and drain included): requests answered, mean ms "
      "from decoding to the reply")
for name, r in runs.items():
    requests = r.get("broker_requests", {})
    # More than one per transaction: retried after CONCURRENT_TRANSACTIONS (the previous
    # transaction's markers not yet written; librdkafka retries after 20 ms), or partitions
    # registered in a second request.
    retries = ""
    if "EndTxn" in requests and "AddPartitionsToTxn" in requests:
        per_commit = requests["AddPartitionsToTxn"]["count"] / requests["EndTxn"]["count"]
        retries = f"; AddPartitionsToTxn per EndTxn {per_commit:.2f}"
    print(f"{name}: " + ", ".join(f"{api} {v['count']} x {v['mean_ms']:.2f}"
                                  for api, v in requests.items()) + retries)
print("latencies in ms")
EOF
