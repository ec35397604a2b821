# Shared by the benchmark scripts that run a `ferrite serve` of their own (sourced, not run):
# starting and stopping it, waiting for it to listen, reading its metrics, and what CPU a
# process used.

# Starts `FERRITE serve` on loopback ports (CORES shards when set; LISTENERS, when set, its
# `--listeners` instead of one PLAINTEXT listener; any further arguments added to `serve`'s),
# its data in DIR/ferrite-data-PID and its stdout and stderr in RESULTS/ferrite.out and .err;
# sets `broker` (its pid), `address` (its first listener's) and `metrics` once it listens. It is
# stopped, and its data removed, by `stop_broker` or at exit.
start_broker() { # FERRITE DIR RESULTS [SERVE_ARGUMENT...]
  data=$2/ferrite-data-$$
  local serve_args=(serve --listeners "${LISTENERS:-PLAINTEXT://127.0.0.1:0}"
    --metrics-listen 127.0.0.1:0 --data-dir "$data" "${@:4}")
  [[ -n ${CORES:-} ]] && serve_args+=(--cores "$CORES")
  "$1" "${serve_args[@]}" >"$3/ferrite.out" 2>"$3/ferrite.err" &
  broker=$!
  trap stop_broker EXIT
  wait_for_listening "$broker" "$3/ferrite.out" "$3/ferrite.err"
}

stop_broker() {
  kill "$broker" 2>/dev/null || true
  wait "$broker" 2>/dev/null || true
  rm -rf "$data"
}

# Waits until the broker `PID`, whose stdout and stderr go to OUT and ERR, listens, and sets
# `address` (its Kafka address) and `metrics` (its metrics URL; empty without
# --metrics-listen). Exits with status 2, its stderr shown, if it stops or never listens.
wait_for_listening() { # PID OUT ERR
  for _ in $(seq 300); do
    grep -q 'listening on' "$2" && break
    kill -0 "$1" 2>/dev/null || { cat "$3" >&2; exit 2; }
    sleep 0.1
  done
  address=$(grep -o 'listening on [0-9.:]*' "$2" | awk '{print $3}')
  metrics=$(grep -o 'metrics on http://[0-9.:]*/metrics' "$2" | awk '{print $3}')
  [[ -n $address ]] || { echo "ferrite serve did not start" >&2; exit 2; }
}

# The sum of the samples of NAME (a counter, a summary's _sum or _count, ...) at `$metrics`
# whose labels match the extended regex LABELS (default: every sample).
metric() { # NAME [LABELS]
  curl -sf "$metrics" | awk -v name="$1" -v labels="${2:-}" '
    index($0, name "{") == 1 && $0 ~ labels { sum += $NF } END { printf "%.17g\n", sum }'
}

# CPU time (user + system) a process used so far, in clock ticks (`getconf CLK_TCK` a
# second); with `children`, that of its children it waited for.
cpu_ticks() { # PID [children]
  local fields
  read -r -a fields <"/proc/$1/stat" || { echo 0; return; }
  # Counted from the end (a process name may hold spaces): utime is the 14th of 52 fields,
  # stime the 15th, cutime and cstime the 16th and 17th.
  local i=$((${#fields[@]} - 52 + 13))
  [[ ${2:-} == children ]] && i=$((i + 2))
  echo $((fields[i] + fields[i + 1]))
}
