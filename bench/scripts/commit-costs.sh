#!/usr/bin/env bash
# What an acknowledgement costs the broker, two builds side by side: for each build in turn
# (alternating, ROUNDS times, so the machine's drift falls on both alike), a release broker
# and ferrite-bench at a fixed 20 MiB/s of 1 KiB messages with linger.ms=0, and per run:
#   - the broker's mean Produce latency (decoded to reply ready, from its metrics);
#   - its context switches a second and the cores it used (`perf stat` over 4 s of the run,
#     every thread of the broker, io_uring's workers included);
#   - its journal's durable writes (RWF_DSYNC) and fdatasyncs (`ferrite_journal_*_total`);
#   - the end-to-end latency p50 / p99 / p99.9 / max the client saw.
# Written for issue 16's commit path: a build where each journal write is followed by an
# fdatasync (io_uring punts every one to a worker thread) against one whose write is its own
# sync.
#
# Usage: bench/scripts/commit-costs.sh DIR OLD_FERRITE NEW_FERRITE
# (from the repository root; DIR on the disk to measure). Environment: PARTITIONS (default
# "1 16 256"), ACKS (default all), ROUNDS (default 2), DURATION_S (default 10).
set -euo pipefail
# shellcheck source=bench/scripts/broker.sh
source "$(dirname "$0")/broker.sh"
[[ $# -eq 3 ]] || { sed -n 2,17p "$0" >&2; exit 2; }
dir=$1
builds=("$2" "$3")
read -r -a partition_counts <<<"${PARTITIONS:-1 16 256}"
acks=${ACKS:-all}
rounds=${ROUNDS:-2}
duration_s=${DURATION_S:-10}
command -v perf >/dev/null || { echo "perf is missing: apt-get install -y linux-perf" >&2; exit 2; }
bench=${CARGO_TARGET_DIR:-target}/release/ferrite-bench
[[ -x $bench ]] || cargo build --release -q -p ferrite-bench
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
results=$dir/commit-costs-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$results"
echo "# $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), results in $results"
printf '%-10s %-6s %-28s %9s %8s %6s %9s %9s  %s\n' partitions round build "brk ms" "ctxsw/s" cores \
  "dsync wr" fsyncs "e2e p50 / p99 / p99.9 / max"
for partitions in "${partition_counts[@]}"; do
  for round in $(seq "$rounds"); do
    for build in "${builds[@]}"; do
      run=$results/p$partitions-r$round-$(basename "$build")
      start_broker "$build" "$dir" "$results"
      "$bench" --bootstrap "$address" --topic commit-costs --partitions "$partitions" \
        --message-bytes 1024 --acks "$acks" --rate 20480 --linger-ms 0 \
        --duration-s "$duration_s" --warmup-s 2 --delete-topic --json "$run.json" \
        >"$run.log" 2>&1 &
      client=$!
      sleep 5
      perf stat -x, -e context-switches,task-clock -p "$broker" -- sleep 4 2>"$run.perf"
      wait "$client"
      latency_sum=$(metric ferrite_request_latency_seconds_sum 'api="Produce"')
      latency_count=$(metric ferrite_request_latency_seconds_count 'api="Produce"')
      durable_writes=$(metric ferrite_journal_durable_writes_total)
      syncs=$(metric ferrite_journal_syncs_total)
      stop_broker
      trap - EXIT
      python3 - "$run" "$partitions" "$round" "$build" "$latency_sum" "$latency_count" \
        "$durable_writes" "$syncs" <<'EOF'
import json, sys
run, partitions, round_, build, latency_sum, latency_count, durable_writes, syncs = sys.argv[1:]
switches = cpu_ms = 0.0
for line in open(run + ".perf"):
    fields = line.split(",")
    if "context-switches" in line:
        switches = float(fields[0]) / 4
    if "task-clock" in line:
        cpu_ms = float(fields[0])
e2e = json.load(open(run + ".json"))["e2e_latency_ms"]
mean_ms = float(latency_sum) / float(latency_count) * 1e3 if float(latency_count) else float("nan")
print(f"{partitions:<10} {round_:<6} {build[-28:]:<28} {mean_ms:9.3f} {switches:8.0f} "
      f"{cpu_ms / 4000:6.2f} {float(durable_writes):9.0f} {float(syncs):9.0f}  "
      f"{e2e['p50']} / {e2e['p99']} / {e2e['p99.9']} / {e2e['max']}")
EOF
    done
  done
done
