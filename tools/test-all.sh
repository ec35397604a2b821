#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, lints, unit/property/integration
# tests, the loom models (in a build of their own, under `--cfg loom`), and the
# real-client tests (tools/client-tests.sh: kcat and the Python clients, from a venv).
# Needs root for the disk-full test, which mounts a small tmpfs.
set -euo pipefail
cd "$(dirname "$0")/.."

# The builds take ~15 GB and the client tests a few hundred MB at a time (their brokers' data
# directories, removed as each test passes): a run that fails on a full disk says little, so
# say how much there was.
echo "== disk free (the target directory, the temporary directory)"
df -h "${CARGO_TARGET_DIR:-.}" "${TMPDIR:-/tmp}"

echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
# The loom models build under `--cfg loom`, in a target directory of their own (a change of
# RUSTFLAGS rebuilds everything).
loom_build=(env RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom")
"${loom_build[@]}" cargo clippy -p ferrite-loom-tests --all-targets --locked -- -D warnings
cargo clippy -p ferrite-engine -p ferrite-replication --features fault-injection --all-targets --locked -- -D warnings
echo "== cargo test (engine, net, replication, bench, tools)"
cargo test --locked
echo "== disk faults injected into the log's file I/O (a test-only feature)"
cargo test --locked -p ferrite-engine --features fault-injection --test disk_faults
cargo test --locked -p ferrite-replication --features fault-injection --test replica disk_faults
echo "== loom models of the SPSC ring"
"${loom_build[@]}" cargo test -p ferrite-loom-tests --release --locked
echo "== real Kafka clients against ferrite serve (kcat, kafka-python, confluent-kafka)"
bash tools/client-tests.sh
