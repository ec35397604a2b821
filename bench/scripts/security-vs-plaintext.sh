#!/usr/bin/env bash
# What TLS and SASL cost a client: one release `ferrite serve` with a PLAINTEXT and a SASL_SSL
# listener (a certificate made here with openssl, a SCRAM-SHA-512 user), and ferrite-bench
# (librdkafka with OpenSSL, 1 KiB messages, acks=all, linger.ms=0) producing and consuming through
# each in turn, alternating, ROUNDS times:
#   - peak: as fast as the producer can (--rate 0), the consumer reading along
#   - a fixed 20 MiB/s (20480 msg/s): the latency run
# with fio's sequential direct-write bandwidth of the same disk in the same run, the broker's CPU
# per run (user + system seconds per second measured), and the ratio SASL_SSL / PLAINTEXT of each
# figure. Fetch over TLS copies (no splice): this kernel has no kTLS (CONFIG_TLS unset), so there
# is no kTLS row to measure here.
#
# Usage: bench/scripts/security-vs-plaintext.sh [DIR]   (DIR defaults to ./bench-data; run from
# the repository root). Environment: PARTITIONS (default 4), DURATION_S (default 15), WARMUP_S
# (default 3), ROUNDS (default 2), CORES (broker shards, default every core).
set -euo pipefail
# shellcheck source=bench/scripts/broker.sh
source "$(dirname "$0")/broker.sh"
dir=${1:-./bench-data}
partitions=${PARTITIONS:-4}
duration_s=${DURATION_S:-15}
warmup_s=${WARMUP_S:-3}
rounds=${ROUNDS:-2}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
command -v fio >/dev/null || { echo "fio is missing: apt-get install -y fio" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl is missing: apt-get install -y openssl" >&2; exit 2; }
cargo build --release -q -p ferrite-tools --bin ferrite && cargo build --release -q -p ferrite-bench
release=${CARGO_TARGET_DIR:-target}/release
results=$dir/security-vs-plaintext-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$results/certs"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "kernel $(uname -r), $(df -h "$dir" | tail -1 | awk '{print $1 " (" $2 ")"}'), results in $results"

fio --output-format=json --name=seq --filename="$dir/fio.seq" --rw=write --bs=1M --direct=1 \
  --ioengine=io_uring --iodepth=8 --size=2G --runtime=15 >"$results/fio-seq.json"
rm -f "$dir/fio.seq"

# A certificate authority and the broker's certificate for 127.0.0.1.
certs=$results/certs
(
  cd "$certs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.pem
) >/dev/null 2>&1

LISTENERS=PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0 start_broker "$release/ferrite" "$dir" \
  "$results" --tls-cert "$certs/server.pem" --tls-key "$certs/server.key"
plaintext_address=$address
sasl_ssl_address=$(grep -o '[0-9.]*:[0-9]* (Kafka SASL_SSL' "$results/ferrite.out" | awk '{print $1}')
printf 'bench-secret\n' | "$release/ferrite" user set bench --bootstrap "$plaintext_address" \
  --password-stdin --mechanism SCRAM-SHA-512 >/dev/null

sasl_ssl_settings=(
  --client-config security.protocol=sasl_ssl --client-config "ssl.ca.location=$certs/ca.pem"
  --client-config sasl.mechanism=SCRAM-SHA-512 --client-config sasl.username=bench
  --client-config sasl.password=bench-secret
)

run() { # NAME PROTOCOL RATE
  if ! kill -0 "$broker" 2>/dev/null; then
    echo "ferrite-bench $1: skipped, ferrite serve is not running (see $results/ferrite.err)" >&2
    return
  fi
  local target=("--bootstrap" "$plaintext_address")
  [[ $2 == sasl_ssl ]] && target=("--bootstrap" "$sasl_ssl_address" "${sasl_ssl_settings[@]}")
  echo "ferrite-bench $1: $2 partitions=$partitions rate=$3 (load $(cut -d' ' -f1-3 /proc/loadavg)) ..." >&2
  local ticks_before
  ticks_before=$(cpu_ticks "$broker")
  "$release/ferrite-bench" "${target[@]}" --topic "$1" --partitions "$partitions" \
    --message-bytes 1024 --acks all --linger-ms 0 --rate "$3" --duration-s "$duration_s" \
    --warmup-s "$warmup_s" --delete-topic --json "$results/$1.json" 2>"$results/$1.log" ||
    echo "ferrite-bench $1 exited with status $? (see $results/$1.log)" >&2
  echo "$(($(cpu_ticks "$broker") - ticks_before))" >"$results/$1.broker-ticks"
  cut -d' ' -f1-3 /proc/loadavg >"$results/$1.load"
}
names=()
for round in $(seq "$rounds"); do
  for workload in peak:0 fixed-20MiB:20480; do
    for protocol in plaintext sasl_ssl; do
      name=${workload%%:*}-$protocol-r$round
      run "$name" "$protocol" "${workload#*:}"
      names+=("$name")
    done
  done
done

python3 - "$results" "$(getconf CLK_TCK)" "$duration_s" "$warmup_s" "${names[@]}" <<'EOF'
import json, sys
results, ticks_per_s, duration_s, warmup_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
names = sys.argv[5:]
fio_mib_s = json.load(open(f"{results}/fio-seq.json"))["jobs"][0]["write"]["bw_bytes"] / 2**20
print(f"fio 1 MiB direct seq write, qd 8: {fio_mib_s:.1f} MiB/s")
print()
header = (f"{'run':26} {'prod MiB/s':>10} {'of fio':>7} {'cons MiB/s':>10} {'ack p50':>8} {'ack p99':>8} "
          f"{'p99.9':>8} {'max':>8} {'e2e p99':>8} {'broker cpu':>10} {'load':>5}  ok")
print(header)
rows = {}
for name in names:
    try:
        r = json.load(open(f"{results}/{name}.json"))
    except (OSError, ValueError):
        print(f"{name:26} (no result)")
        continue
    ticks = int(open(f"{results}/{name}.broker-ticks").read())
    # The broker's CPU over the whole run (warm-up and drain included), per second of it.
    cpu = ticks / ticks_per_s / max(r["measured_s"] + warmup_s, 1e-9)
    load = float(open(f"{results}/{name}.load").read().split()[0])
    ack, e2e = r["ack_latency_ms"], r["e2e_latency_ms"]
    row = dict(produce=r["produce_mb_per_s"], consume=r["consume_mb_per_s"], ack50=ack["p50"],
               ack99=ack["p99"], ack999=ack["p99.9"], ackmax=ack["max"], e2e99=e2e["p99"], cpu=cpu)
    rows[name] = row
    print(f"{name:26} {row['produce']:10.1f} {row['produce'] / fio_mib_s:7.1%} {row['consume']:10.1f} "
          f"{row['ack50']:8.2f} {row['ack99']:8.2f} {row['ack999']:8.2f} {row['ackmax']:8.2f} "
          f"{row['e2e99']:8.2f} {row['cpu']:10.2f} {load:5.1f}  {'yes' if not r['problems'] else '; '.join(r['problems'])}")
print()
print("SASL_SSL / PLAINTEXT, each round's pair:")
for name in names:
    if "-sasl_ssl-" not in name:
        continue
    plain = name.replace("-sasl_ssl-", "-plaintext-")
    if name not in rows or plain not in rows:
        continue
    secure, base = rows[name], rows[plain]
    ratio = lambda key: secure[key] / base[key] if base[key] else float("nan")
    print(f"{name.replace('-sasl_ssl', ''):20} produce {ratio('produce'):5.2f}  consume {ratio('consume'):5.2f}  "
          f"ack p50 {ratio('ack50'):5.2f}  p99 {ratio('ack99'):5.2f}  p99.9 {ratio('ack999'):5.2f}  "
          f"e2e p99 {ratio('e2e99'):5.2f}  broker cpu {ratio('cpu'):5.2f}")
print("latencies in ms; broker cpu in cores (user + system) over the run; peak runs' latencies "
      "include the wait in librdkafka's full queue")
EOF
