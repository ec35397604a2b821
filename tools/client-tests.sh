#!/usr/bin/env bash
# Runs the real-client tests (tools/client-tests/): kcat, kafka-python and confluent-kafka
# against `ferrite serve`: a broker alone runs the debug build (debug assertions on), the
# brokers of a cluster the release build, as users run it (`panic = "abort"`: the cluster fault
# tests must see a panic end the broker as it would in production), and the disk-fault tests a
# debug build with the engine's `fault-injection` feature (which cannot exist in release). The
# Python clients live in a venv under the cargo target directory, created on first use and
# brought up to date with requirements.txt.
# Needs kcat, python3 with venv, for the Burrow test burrow, libzookeeper-java and a JRE, and for
# the kafkajs test node and npm (tools/setup-debian.sh installs them all); kafkajs itself is
# installed under the cargo target directory, pinned by tools/client-tests/kafkajs/package-lock.json.
# Extra arguments go to pytest, e.g. `bash tools/client-tests.sh -k kcat -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
venv="$target_dir/client-venv"
requirements=tools/client-tests/requirements.txt

if ! command -v kcat >/dev/null; then
    echo "client-tests: kcat is not installed (bash tools/setup-debian.sh installs it)" >&2
    exit 2
fi
if [ ! -x /usr/bin/Burrow ] || [ ! -f /usr/share/java/zookeeper.jar ] || ! command -v java >/dev/null; then
    echo "client-tests: burrow, libzookeeper-java or a JRE is missing (bash tools/setup-debian.sh installs them)" >&2
    exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "client-tests: node or npm is missing (bash tools/setup-debian.sh installs them)" >&2
    exit 2
fi
node_dir="$target_dir/client-node"
if ! cmp -s tools/client-tests/kafkajs/package-lock.json "$node_dir/package-lock.json" || [ ! -d "$node_dir/node_modules" ]; then
    mkdir -p "$node_dir"
    cp tools/client-tests/kafkajs/package.json tools/client-tests/kafkajs/package-lock.json "$node_dir/"
    (cd "$node_dir" && npm ci --no-audit --no-fund --silent)
fi
export NODE_PATH="$(cd "$node_dir" && pwd)/node_modules"
# pip is slow even when there is nothing to do: install only when the requirements changed.
if ! cmp -s "$requirements" "$venv/requirements.installed"; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.installed"
fi

# The disk-fault tests' broker first (its disk I/O fails when a test arms a fault), kept under
# a name of its own; then the broker every other test runs, built last so it is `ferrite`.
# Cargo keeps both builds, so switching between them costs a copy, not a compile. The release
# build takes a few minutes when nothing is built yet (seconds afterwards).
cargo build --locked -p ferrite-tools --bin ferrite --features fault-injection
cp "$target_dir/debug/ferrite" "$target_dir/debug/ferrite-fault-injection"
cargo build --locked -p ferrite-tools --bin ferrite
cargo build --locked --release -p ferrite-tools --bin ferrite
export FERRITE_BIN="$(cd "$target_dir" && pwd)/debug/ferrite"
export FERRITE_FAULT_BIN="$(cd "$target_dir" && pwd)/debug/ferrite-fault-injection"
export FERRITE_RELEASE_BIN="$(cd "$target_dir" && pwd)/release/ferrite"

# No __pycache__ or .pytest_cache in the source tree.
export PYTHONDONTWRITEBYTECODE=1
# Python's output is captured per test; the file descriptors are not (`--capture=sys`): a client
# library's C code (librdkafka's assertions) writes to them before an abort takes the whole run
# down, and pytest's capture of them is lost with it. Costs a few librdkafka log lines.
"$venv/bin/python" -m pytest tools/client-tests -p no:cacheprovider --capture=sys "$@"
