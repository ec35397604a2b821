#!/usr/bin/env bash
# Measures Ferrite through a Kafka client against the disk it writes to, in one run, on one
# filesystem:
#   1. fio: sequential 1 MiB direct writes, io_uring, queue depth 8 (the disk's bandwidth)
#   2. fio: 4 KiB writes each followed by fdatasync (what one sync per request would allow)
#   3. a release `ferrite serve` with its data directory in DIR, and ferrite-bench (librdkafka)
#      with 1 KiB messages:
#        - peak throughput, acks=1   (--rate 0)
#        - peak throughput, acks=all (--rate 0; durable after fdatasync on a single node)
#        - a fixed 20 MiB/s (20480 msg/s), acks=all: the latency run
# and prints the fio figures next to the broker's, throughput as a fraction of fio's.
#
# Usage: bench/scripts/produce-vs-disk.sh [DIR]   (DIR defaults to ./bench-data; run from the
# repository root). Environment: PARTITIONS, one partition count or several separated by spaces
# (default 4; e.g. PARTITIONS="1 16" runs the three workloads once per count, all against the
# same broker, in one run), DURATION_S (default 15), WARMUP_S (default 3), CORES (broker shards,
# default every core). A peak run writes about
# (DURATION_S + WARMUP_S) x the broker's throughput (~10 GiB here); each topic is deleted after
# its run and the broker's data directory at the end.
set -euo pipefail
# shellcheck source=bench/scripts/broker.sh
source "$(dirname "$0")/broker.sh"
dir=${1:-./bench-data}
read -r -a partition_counts <<<"${PARTITIONS:-4}"
duration_s=${DURATION_S:-15}
warmup_s=${WARMUP_S:-3}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
command -v fio >/dev/null || { echo "fio is missing: apt-get install -y fio" >&2; exit 2; }
cargo build --release -q -p ferrite-tools --bin ferrite && cargo build --release -q -p ferrite-bench
release=${CARGO_TARGET_DIR:-target}/release
results=$dir/produce-vs-disk-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$results"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "kernel $(uname -r), $(df -h "$dir" | tail -1 | awk '{print $1 " (" $2 ")"}'), results in $results"

fio --output-format=json --name=seq --filename="$dir/fio.seq" --rw=write --bs=1M --direct=1 \
  --ioengine=io_uring --iodepth=8 --size=2G --runtime=15 >"$results/fio-seq.json"
fio --output-format=json --name=sync --filename="$dir/fio.sync" --rw=write --bs=4k \
  --fdatasync=1 --size=64M --runtime=10 --time_based=1 >"$results/fio-sync.json"
rm -f "$dir/fio.seq" "$dir/fio.sync"

start_broker "$release/ferrite" "$dir" "$results"

run() { # NAME PARTITIONS ACKS RATE
  if ! kill -0 "$broker" 2>/dev/null; then
    echo "ferrite-bench $1: skipped, ferrite serve is not running (see $results/ferrite.err)" >&2
    return
  fi
  echo "ferrite-bench $1: partitions=$2 acks=$3 rate=$4 ..." >&2
  "$release/ferrite-bench" --bootstrap "$address" --topic "$1" --partitions "$2" \
    --message-bytes 1024 --acks "$3" --rate "$4" --duration-s "$duration_s" \
    --warmup-s "$warmup_s" --delete-topic --json "$results/$1.json" 2>"$results/$1.log" ||
    echo "ferrite-bench $1 exited with status $? (see $results/$1.log)" >&2
  grep -v '^ferrite-bench: .* librdkafka ' "$results/$1.log" | tail -n +2 >&2 || true
  if ! kill -0 "$broker" 2>/dev/null; then
    echo "ferrite serve died during $1: $(grep -m1 -A1 'panicked' "$results/ferrite.err" | tr '\n' ' ')" >&2
  fi
}
names=()
for partitions in "${partition_counts[@]}"; do
  run "peak-acks1-p$partitions" "$partitions" 1 0
  run "peak-acksall-p$partitions" "$partitions" all 0
  run "fixed-20MiB-acksall-p$partitions" "$partitions" all 20480
  names+=("peak-acks1-p$partitions" "peak-acksall-p$partitions" "fixed-20MiB-acksall-p$partitions")
done

python3 - "$results" "${names[@]}" <<'EOF'
import json, sys
results = sys.argv[1]
load = lambda name: json.load(open(f"{results}/{name}.json"))
seq = load("fio-seq")["jobs"][0]["write"]
sync_job = load("fio-sync")["jobs"][0]
fio_mib_s = seq["bw_bytes"] / 2**20
sync_us = sync_job["sync"]["lat_ns"]["percentile"]
print(f"fio 1 MiB direct seq write, qd 8:  {fio_mib_s:8.1f} MiB/s")
print(f"fio 4 KiB write + fdatasync:      {sync_job['write']['iops']:8.0f} /s  "
      f"(write+sync mean {1e6 / max(sync_job['write']['iops'], 1e-9):.0f} us; fdatasync "
      f"p50 {sync_us['50.000000'] / 1000:.0f} us, p99 {sync_us['99.000000'] / 1000:.0f} us)")
print()
print(f"{'ferrite-bench, 1 KiB messages':30} {'msg/s':>9} {'MiB/s':>8} {'of fio':>7} "
      f"{'ack p50':>8} {'ack p99':>8} {'p99.9':>8} {'max':>8} {'e2e p50':>8} {'e2e p99':>8}  ok")
for name in sys.argv[2:]:
    try:
        r = load(name)
    except (OSError, ValueError):
        print(f"{name:30} (no result)")
        continue
    ack, e2e = r["ack_latency_ms"], r["e2e_latency_ms"]
    print(f"{name:30} {r['produce_msgs_per_s']:9.0f} {r['produce_mb_per_s']:8.1f} "
          f"{r['produce_mb_per_s'] / fio_mib_s:7.1%} {ack['p50']:8.2f} {ack['p99']:8.2f} "
          f"{ack['p99.9']:8.2f} {ack['max']:8.2f} {e2e['p50']:8.2f} {e2e['p99']:8.2f}  "
          f"{'yes' if not r['problems'] else '; '.join(r['problems'])}")
print("latencies in ms; peak runs' latencies include the wait in librdkafka's full queue")
EOF
