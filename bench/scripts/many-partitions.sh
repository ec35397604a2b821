#!/usr/bin/env bash
# What N partitions cost one broker, each written once (issue 16's 10 000-partition target).
#
# Usage: bench/scripts/many-partitions.sh DIR N [FERRITE]
#   DIR      scratch directory on the disk to measure (the broker's data goes in DIR/data,
#            removed at the end unless KEEP=1)
#   N        partitions of the one topic (1 to 10 000)
#   FERRITE  the broker binary [default: target/release/ferrite, built if missing]
# Environment: SERVE_ARGS (more `ferrite serve` flags, e.g. "--open-files-max 2048"), FD_LIMIT
# (the broker runs under `prlimit --nofile=FD_LIMIT`), CORES (shards, default 2), CRASH=1 (the
# first stop is SIGKILL, not SIGTERM: the restart replays the shards' journals).
#
# Steps: start a broker; create topic `many` with N partitions; write one record to each
# (`ferrite produce`, round robin, acks=all); let it settle; measure; stop it with SIGTERM
# (timed); start it again and time how long until `ferrite consume --exit-at-end` has read all
# N records; stop it. Prints one `name: value` line per figure:
#   resident_kib            VmRSS after the writes settled
#   resident_after_restart_kib  VmRSS once every record was read again
#   descriptors_max         most descriptors open at once (sampled every 50 ms, whole run)
#   file_descriptors_max    of those, files and directories (sockets, pipes, io_uring apart)
#   disk_beyond_data_kib    blocks allocated under the data directory minus the bytes of the
#                           segment files (the data itself), while running (records may still
#                           be in the journal only) and _after_shutdown
#   shutdown_s              SIGTERM to exit (the exit status must be 0)
#   listening_after_restart_s  process start to its `listening on` line
#   readable_after_restart_s  process start to the last of the N records read
#   log_lines               lines the broker wrote to stderr over both runs
# A step that fails prints `failed: WHY` and the script exits 1 (the figures so far stay printed).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
dir=$1
partitions=$2
ferrite=${3:-}
cores=${CORES:-2}
read -r -a serve_extra <<<"${SERVE_ARGS:-}"
if [[ -z $ferrite ]]; then
  ferrite=${CARGO_TARGET_DIR:-target}/release/ferrite
  [[ -x $ferrite ]] || cargo build --release -q -p ferrite-tools --bin ferrite
fi
ferrite=$(cd "$(dirname "$ferrite")" && pwd)/$(basename "$ferrite")
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data=$dir/data
rm -rf "$data"
logs=$dir/logs
mkdir -p "$logs"
: >"$logs/stderr"

broker=
sampler=
cleanup() {
  [[ -n $sampler ]] && kill "$sampler" 2>/dev/null || true
  if [[ -n $broker ]] && kill -0 "$broker" 2>/dev/null; then
    kill -KILL "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
  fi
  [[ ${KEEP:-0} == 1 ]] || rm -rf "$data"
}
trap cleanup EXIT
fail() {
  echo "failed: $*"
  exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v from="$1" -v to="$2" 'BEGIN { printf "%.2f", to - from }'; }

# Starts the broker in the background; sets `broker` and `address` once it listens.
start_broker() {
  local out=$logs/stdout.$1
  local command=("$ferrite" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0
    --data-dir "$data" --cores "$cores" "${serve_extra[@]}")
  [[ -n ${FD_LIMIT:-} ]] && command=(prlimit "--nofile=$FD_LIMIT" "${command[@]}")
  "${command[@]}" >"$out" 2>>"$logs/stderr" &
  broker=$!
  # A restart after SIGKILL replays the journals first, which takes longer.
  for _ in $(seq 6000); do
    grep -qs 'listening on' "$out" && break
    kill -0 "$broker" 2>/dev/null || fail "the broker exited at start-up: $(tail -3 "$logs/stderr")"
    sleep 0.05
  done
  address=$(grep -o 'listening on [0-9.:]*' "$out" | awk '{print $3}') || true
  [[ -n $address ]] || fail "the broker did not listen within 300 s"
}

# Samples the broker's descriptor counts into $logs/descriptors until killed.
sample_descriptors() {
  while kill -0 "$broker" 2>/dev/null; do
    # Targets starting with / are files and directories (/dev apart). `find` reads the links
    # without a `stat` of each (an `ls -l` of 4 000 descriptors took seconds per sample).
    local all files
    all=$(find "/proc/$broker/fd" -mindepth 1 -printf . 2>/dev/null | wc -c)
    files=$(find "/proc/$broker/fd" -mindepth 1 -lname '/*' ! -lname '/dev/*' -printf . \
      2>/dev/null | wc -c)
    [[ $all -gt 0 ]] && echo "$all $files" >>"$logs/descriptors"
    sleep 0.05
  done
}

resident_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$broker/status"; }

stop_broker() {
  local started
  started=$(now)
  kill -TERM "$broker"
  local status=0
  wait "$broker" || status=$?
  shutdown_s=$(elapsed "$started" "$(now)")
  [[ $status == 0 ]] || fail "the broker exited with $status after SIGTERM"
  broker=
}

: >"$logs/descriptors"
start_broker 1
sample_descriptors &
sampler=$!
"$ferrite" topic create --bootstrap "$address" many --partitions "$partitions" >/dev/null ||
  fail "topic create"
seq 1 "$partitions" | "$ferrite" produce --bootstrap "$address" --topic many >/dev/null ||
  fail "produce"
sleep 2
echo "partitions: $partitions"
echo "resident_kib: $(resident_kib)"
# Blocks allocated under the data directory beyond the segment files' bytes (journals,
# directories, indexes, state files, reserved space).
disk_beyond_data() {
  local data_bytes allocated_kib
  data_bytes=$(find "$data" -name '*.log' -printf '%s\n' | awk '{ sum += $1 } END { print sum + 0 }')
  allocated_kib=$(du -sk "$data" | awk '{ print $1 }')
  echo "data_kib$1: $((data_bytes / 1024))"
  echo "disk_beyond_data_kib$1: $((allocated_kib - data_bytes / 1024))"
}
# While running (small appends may still be in the journal only), then once stopped.
disk_beyond_data ""
if [[ ${CRASH:-0} == 1 ]]; then
  kill -KILL "$broker"
  wait "$broker" 2>/dev/null || true
  broker=
  echo "killed: SIGKILL"
else
  stop_broker
  echo "shutdown_s: $shutdown_s"
  disk_beyond_data _after_shutdown
  grep -q 'stopped cleanly' "$logs/stdout.1" || fail "no 'stopped cleanly' line"
fi

started=$(now)
start_broker 2
echo "listening_after_restart_s: $(elapsed "$started" "$(now)")"
sample_descriptors &
sampler=$!
read_count=0
for _ in $(seq 600); do
  read_count=$("$ferrite" consume --bootstrap "$address" --topic many --from beginning \
    --exit-at-end 2>>"$logs/consume.stderr" | wc -l) || true
  [[ $read_count -ge $partitions ]] && break
  sleep 0.05
done
readable=$(now)
[[ $read_count -ge $partitions ]] || fail "only $read_count of $partitions records read back"
echo "readable_after_restart_s: $(elapsed "$started" "$readable")"
echo "resident_after_restart_kib: $(resident_kib)"
stop_broker
echo "second_shutdown_s: $shutdown_s"
wait "$sampler" 2>/dev/null || true
sampler=
awk '{ if ($1 > all) all = $1; if ($2 > files) files = $2 }
     END { print "descriptors_max: " all; print "file_descriptors_max: " files }' \
  "$logs/descriptors"
echo "log_lines: $(wc -l <"$logs/stderr")"
