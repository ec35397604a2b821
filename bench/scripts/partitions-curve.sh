#!/usr/bin/env bash
# Latency as the partition count grows, beside the disk, in one run on one filesystem:
#   1. fio: sequential 1 MiB direct writes, io_uring, queue depth 8 (the disk's bandwidth), and
#      4 KiB writes each followed by fdatasync (one sync per request)
#   2. a release `ferrite serve` with its data directory in DIR, and ferrite-bench (librdkafka,
#      1 KiB messages, linger.ms=0 so the client adds no wait of its own) at a fixed 20 MiB/s
#      (20 480 msg/s), for each partition count: acks=all and acks=1, messages without keys
#      (round-robin) and with keys drawn uniformly from 10 000;
#   3. peak acks=all throughput (--rate 0) with 1 and 16 partitions;
#   4. for every run, where the time went: the producer's librdkafka statistics (its own queue
#      before a request carries a message, and the request's round trip to the broker), the
#      broker's own mean Produce latency (from decoding the request to its reply being ready,
#      from the metrics' sum and count), and the CPU each side used (broker and client, in cores
#      over the run's wall time, warm-up included: the two share the machine's cores);
#   5. if bench/scripts/many-partitions.sh exists: 10 000 partitions written once each (resident
#      memory, descriptors, disk beyond the data, shutdown and restart times).
# and prints one table. Each topic is deleted after its run, the data directory at the end.
#
# Usage: bench/scripts/partitions-curve.sh [DIR]   (DIR defaults to ./bench-data; run from the
# repository root). Environment: COUNTS (default "1 16 256 4096"), DURATION_S (default 15),
# WARMUP_S (default 3), CORES (broker shards, default every core), FERRITE and FERRITE_BENCH
# (binaries to measure, default this tree's release build: set FERRITE to an older build to put
# its figures beside today's on the same machine), KEYED=0 to skip the keyed runs, PEAK=0 to skip
# the peak runs, MANY=0 to skip the 10 000-partition run.
set -euo pipefail
# shellcheck source=bench/scripts/broker.sh
source "$(dirname "$0")/broker.sh"
dir=${1:-./bench-data}
read -r -a counts <<<"${COUNTS:-1 16 256 4096}"
duration_s=${DURATION_S:-15}
warmup_s=${WARMUP_S:-3}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
command -v fio >/dev/null || { echo "fio is missing: apt-get install -y fio" >&2; exit 2; }
release=${CARGO_TARGET_DIR:-target}/release
if [[ -z ${FERRITE:-} || -z ${FERRITE_BENCH:-} ]]; then
  cargo build --release -q -p ferrite-tools --bin ferrite && cargo build --release -q -p ferrite-bench
fi
ferrite=${FERRITE:-$release/ferrite}
ferrite_bench=${FERRITE_BENCH:-$release/ferrite-bench}
results=$dir/partitions-curve-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$results"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "kernel $(uname -r), $(df -h "$dir" | tail -1 | awk '{print $1 " (" $2 ")"}'), load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "broker $ferrite, results in $results"

fio --output-format=json --name=seq --filename="$dir/fio.seq" --rw=write --bs=1M --direct=1 \
  --ioengine=io_uring --iodepth=8 --size=2G --runtime=15 >"$results/fio-seq.json"
fio --output-format=json --name=sync --filename="$dir/fio.sync" --rw=write --bs=4k \
  --fdatasync=1 --size=64M --runtime=10 --time_based=1 >"$results/fio-sync.json"
rm -f "$dir/fio.seq" "$dir/fio.sync"

start_broker "$ferrite" "$dir" "$results"

ticks_per_s=$(getconf CLK_TCK)
# The broker's Produce latency sum (s) and count since it started.
produce_latency_totals() {
  echo "$(metric ferrite_request_latency_seconds_sum 'api="Produce"')" \
    "$(metric ferrite_request_latency_seconds_count 'api="Produce"')"
}

run() { # NAME PARTITIONS ACKS RATE KEYS
  if ! kill -0 "$broker" 2>/dev/null; then
    echo "ferrite-bench $1: skipped, ferrite serve is not running (see $results/ferrite.err)" >&2
    return
  fi
  echo "ferrite-bench $1: partitions=$2 acks=$3 rate=$4 keys=$5 ..." >&2
  local broker_before client_before started latency_before
  latency_before=$(produce_latency_totals)
  broker_before=$(cpu_ticks "$broker")
  client_before=$(cpu_ticks $$ children)
  started=$(date +%s.%N)
  "$ferrite_bench" --bootstrap "$address" --topic "$1" --partitions "$2" \
    --message-bytes 1024 --acks "$3" --rate "$4" --linger-ms 0 --key-distribution "$5" \
    --duration-s "$duration_s" --warmup-s "$warmup_s" --delete-topic \
    --json "$results/$1.json" 2>"$results/$1.log" ||
    echo "ferrite-bench $1 exited with status $? (see $results/$1.log)" >&2
  # shellcheck disable=SC2046 # the totals are two numbers each
  python3 - "$results/$1.cpu.json" "$ticks_per_s" "$started" "$(date +%s.%N)" \
    "$broker_before" "$(cpu_ticks "$broker")" "$client_before" "$(cpu_ticks $$ children)" \
    $latency_before $(produce_latency_totals) <<'EOF'
import json, sys
out, hz, start, end, b0, b1, c0, c1, s0, n0, s1, n1 = sys.argv[1:]
wall, hz = float(end) - float(start), float(hz)
requests = float(n1) - float(n0)
json.dump({"wall_s": wall, "broker_cores": (int(b1) - int(b0)) / hz / wall,
           "client_cores": (int(c1) - int(c0)) / hz / wall,
           "produce_requests": requests,
           "broker_produce_mean_ms": (float(s1) - float(s0)) / requests * 1e3 if requests else None},
          open(out, "w"))
EOF
  if ! kill -0 "$broker" 2>/dev/null; then
    echo "ferrite serve died during $1: $(tail -3 "$results/ferrite.err" | tr '\n' ' ')" >&2
  fi
}
names=()
distributions=(none)
[[ ${KEYED:-1} != 0 ]] && distributions+=(uniform:10000)
for partitions in "${counts[@]}"; do
  for acks in all 1; do
    for keys in "${distributions[@]}"; do
      name="p$partitions-acks$acks-${keys%%:*}"
      run "$name" "$partitions" "$acks" 20480 "$keys"
      names+=("$name")
    done
  done
done
if [[ ${PEAK:-1} != 0 ]]; then
  for partitions in 1 16; do
    run "peak-p$partitions-acksall" "$partitions" all 0 none
    names+=("peak-p$partitions-acksall")
  done
fi
stop_broker
trap - EXIT

python3 - "$results" "${names[@]}" <<'EOF' | tee "$results/table.txt"
import json, sys
results = sys.argv[1]
load = lambda name: json.load(open(f"{results}/{name}.json"))
seq = load("fio-seq")["jobs"][0]["write"]
sync_job = load("fio-sync")["jobs"][0]
fio_mib_s = seq["bw_bytes"] / 2**20
print(f"fio 1 MiB direct seq write, qd 8: {fio_mib_s:.0f} MiB/s; "
      f"fio 4 KiB write + fdatasync: {sync_job['write']['iops']:.0f} /s")
print(f"{'run (20 MiB/s unless peak)':26} {'MiB/s':>7} {'of fio':>6} "
      f"{'e2e p50':>8} {'p99':>7} {'p99.9':>7} {'max':>7} {'ack p99':>7} "
      f"{'queue':>6} {'rtt':>6} {'brk ms':>6} "
      f"{'broker':>6} {'client':>6} {'req/s':>7}  ok")
for name in sys.argv[2:]:
    try:
        r = load(name)
    except (OSError, ValueError):
        print(f"{name:26} (no result)")
        continue
    ack, e2e = r["ack_latency_ms"], r["e2e_latency_ms"]
    split = r.get("producer_latency_split") or {}
    queue = (split.get("producer_queue_ms") or {}).get("p99_worst_interval", float("nan"))
    rtt = (split.get("broker_round_trip_ms") or {}).get("p99_worst_interval", float("nan"))
    try:
        cpu = load(f"{name}.cpu")
        brk = cpu["broker_produce_mean_ms"]
        brk = f"{brk if brk is not None else float('nan'):6.2f}"
        sides = (f"{cpu['broker_cores']:6.2f} {cpu['client_cores']:6.2f} "
                 f"{cpu['produce_requests'] / cpu['wall_s']:7.0f}")
    except (OSError, ValueError, KeyError):
        brk, sides = f"{'':6}", f"{'':6} {'':6} {'':7}"
    print(f"{name:26} {r['produce_mb_per_s']:7.1f} {r['produce_mb_per_s'] / fio_mib_s:6.1%} "
          f"{e2e['p50']:8.2f} {e2e['p99']:7.2f} {e2e['p99.9']:7.2f} {e2e['max']:7.2f} "
          f"{ack['p99']:7.2f} {queue:6.2f} {rtt:6.2f} {brk} {sides}  "
          f"{'yes' if not r['problems'] else '; '.join(r['problems'])}")
print("latencies in ms. queue, rtt: the producer's librdkafka statistics, p99 of its worst "
      "1 s interval: messages in its own queue before a request carries them, and the request's "
      "round trip to the broker; brk ms: the broker's mean Produce latency (decoded to reply "
      "ready); broker, client: cores used over the run (warm-up included); req/s: Produce "
      "requests a second")
EOF

if [[ ${MANY:-1} != 0 && -x bench/scripts/many-partitions.sh ]]; then
  FERRITE=$ferrite bench/scripts/many-partitions.sh "$dir" 10000 | tee -a "$results/table.txt"
fi
