#!/usr/bin/env bash
# What connection handover saves (issue 16): one librdkafka producer to ONE partition at 20 MiB/s
# (1 KiB messages, acks=all, linger.ms=0: a produce request per message, ~20 000 a second), RUNS
# times with `ferrite serve --connection-handover true` and RUNS times with false, each run a new
# client whose connection the kernel puts on either shard. Per run: the requests the broker
# forwarded over the mesh, the connections it moved, the Produce requests each shard answered,
# the broker's CPU (utime + stime from /proc/PID/stat) and the client's acknowledgement p99.
# Counts are what this proves; CPU and latency are noise while anything else runs.
#
# Usage: bench/scripts/connection-handover.sh [DIR]   (DIR defaults to ./bench-data; run from the
# repository root). Environment: RUNS (default 4), DURATION_S (15), WARMUP_S (3), CORES (broker
# shards, default every core), FERRITE and FERRITE_BENCH (binaries, default this tree's release
# build).
set -euo pipefail
# shellcheck source=bench/scripts/broker.sh
source "$(dirname "$0")/broker.sh"
dir=${1:-./bench-data}
runs=${RUNS:-4}
duration_s=${DURATION_S:-15}
warmup_s=${WARMUP_S:-3}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
release=${CARGO_TARGET_DIR:-target}/release
if [[ -z ${FERRITE:-} || -z ${FERRITE_BENCH:-} ]]; then
  cargo build --release -q -p ferrite-tools --bin ferrite && cargo build --release -q -p ferrite-bench
fi
ferrite=${FERRITE:-$release/ferrite}
ferrite_bench=${FERRITE_BENCH:-$release/ferrite-bench}
results=$dir/connection-handover-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$results"
ticks_per_second=$(getconf CLK_TCK)
echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), broker $ferrite, results in $results"

broker=
data=
stop_broker() {
  if [[ -n $broker ]]; then
    kill "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
    broker=
  fi
  [[ -n $data ]] && rm -rf "$data"
  data=
}
trap stop_broker EXIT

cpu_seconds() {
  awk -v ticks="$(cpu_ticks "$broker")" -v tick="$ticks_per_second" \
    'BEGIN { printf "%.2f\n", ticks / tick }'
}

printf '%-9s %3s %6s %8s %10s %10s %8s %8s\n' handover run moved mesh produce0 produce1 cpu_s p99_ms
for handover in true false; do
  data=$dir/ferrite-data-$$-$handover
  serve_args=(serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$data"
    --connection-handover "$handover")
  [[ -n ${CORES:-} ]] && serve_args+=(--cores "$CORES")
  "$ferrite" "${serve_args[@]}" >"$results/ferrite-$handover.out" 2>"$results/ferrite-$handover.err" &
  broker=$!
  wait_for_listening "$broker" "$results/ferrite-$handover.out" "$results/ferrite-$handover.err"
  [[ -n $metrics ]] || { echo "ferrite serve serves no metrics" >&2; exit 2; }
  for run in $(seq "$runs"); do
    # The broker publishes its snapshot (the mesh counts) every second.
    sleep 1.5
    mesh_before=$(metric ferrite_mesh_requests_total)
    moved_before=$(metric ferrite_connections_moved_total)
    produce0_before=$(metric ferrite_requests_total 'shard="0",api="Produce"')
    produce1_before=$(metric ferrite_requests_total 'shard="1",api="Produce"')
    cpu_before=$(cpu_seconds)
    name=handover-$handover-$run
    "$ferrite_bench" --bootstrap "$address" --topic t --partitions 1 --message-bytes 1024 \
      --acks all --rate 20480 --linger-ms 0 --duration-s "$duration_s" --warmup-s "$warmup_s" \
      --delete-topic --json "$results/$name.json" 2>"$results/$name.log" ||
      echo "ferrite-bench $name exited with status $? (see $results/$name.log)" >&2
    cpu_after=$(cpu_seconds)
    sleep 1.5
    p99=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ack_latency_ms"]["p99"])' \
      "$results/$name.json" 2>/dev/null || echo "?")
    printf '%-9s %3s %6d %8d %10d %10d %8.2f %8s\n' "$handover" "$run" \
      $(($(metric ferrite_connections_moved_total) - moved_before)) \
      $(($(metric ferrite_mesh_requests_total) - mesh_before)) \
      $(($(metric ferrite_requests_total 'shard="0",api="Produce"') - produce0_before)) \
      $(($(metric ferrite_requests_total 'shard="1",api="Produce"') - produce1_before)) \
      "$(awk -v after="$cpu_after" -v before="$cpu_before" 'BEGIN { print after - before }')" "$p99"
  done
  stop_broker
done
