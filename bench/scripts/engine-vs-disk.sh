#!/usr/bin/env bash
# Measures the partition log against the disk it runs on, in one run, in one directory:
#   1. fio: sequential 1 MiB direct writes, io_uring, queue depth 8 (the disk's bandwidth)
#   2. engine-bench: 1 MiB appends acknowledged after fdatasync, 1 and 8 appenders in flight
#   3. fio: 4 KiB writes each followed by fdatasync (what one sync per append would allow)
#   4. engine-bench: 1 KiB durable appends from 1 and from 64 concurrent appenders
# Usage: bench/scripts/engine-vs-disk.sh [DIR]   (DIR defaults to ./bench-data)
set -euo pipefail
dir=${1:-./bench-data}
mkdir -p "$dir"
command -v fio >/dev/null || { echo "fio is missing: apt-get install -y fio" >&2; exit 2; }
cargo build --release -q -p ferrite-bench --bin engine-bench
bench=target/release/engine-bench
fio_json() { fio --output-format=json "$@" | python3 -c '
import json,sys; job=json.load(sys.stdin)["jobs"][0]["write"]
print(json.dumps({"mib_per_s": round(job["bw_bytes"]/2**20,1), "iops": round(job["iops"]),
 "sync_p99_us": round(job.get("clat_ns",{}).get("percentile",{}).get("99.000000",0)/1000,1)}))'; }
echo "# machine: $(nproc) cores, $(uname -r), $(df -h "$dir" | tail -1 | awk '{print $1}')"
echo "fio seq 1MiB qd8:        $(fio_json --name=seq --filename="$dir/fio.seq" --rw=write --bs=1M --direct=1 --ioengine=io_uring --iodepth=8 --size=2G --runtime=15 --time_based=0)"
echo "log 1MiB durable x1:     $($bench --dir "$dir" --batch-bytes 1048576 --appenders 1 --durable --total-mib 2048 --seconds 15)"
echo "log 1MiB durable x8:     $($bench --dir "$dir" --batch-bytes 1048576 --appenders 8 --durable --total-mib 2048 --seconds 15)"
echo "fio 4KiB + fdatasync:    $(fio_json --name=sync --filename="$dir/fio.sync" --rw=write --bs=4k --fdatasync=1 --size=64M --runtime=10 --time_based=1)"
echo "log 1KiB durable x1:     $($bench --dir "$dir" --batch-bytes 1024 --appenders 1 --durable --seconds 5)"
echo "log 1KiB durable x64:    $($bench --dir "$dir" --batch-bytes 1024 --appenders 64 --durable --seconds 5)"
echo "log 1KiB written x64:    $($bench --dir "$dir" --batch-bytes 1024 --appenders 64 --seconds 5)"
rm -f "$dir/fio.seq" "$dir/fio.sync"
