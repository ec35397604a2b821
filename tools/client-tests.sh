#!/usr/bin/env bash
# Runs the real-client tests (tools/client-tests/): kcat, kafka-python and confluent-kafka
# against `ferrite serve`: a broker alone runs the debug build (debug assertions on), the
# brokers of a cluster the release build, as users run it (`panic = "abort"`: the cluster fault
# tests must see a panic end the broker as it would in production). The Python clients live in
# a venv under the cargo target directory, created on first use and brought up to date with
# requirements.txt.
# Needs kcat and python3 with venv (tools/setup-debian.sh installs both).
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
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# pip is slow even when there is nothing to do: install only when the requirements changed.
if ! cmp -s "$requirements" "$venv/requirements.installed"; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.installed"
fi

# The release build takes a few minutes when nothing is built yet (seconds afterwards); the
# debug one is already there after `cargo test`.
cargo build --locked -p ferrite-tools --bin ferrite
cargo build --locked --release -p ferrite-tools --bin ferrite
export FERRITE_BIN="$(cd "$target_dir" && pwd)/debug/ferrite"
export FERRITE_RELEASE_BIN="$(cd "$target_dir" && pwd)/release/ferrite"

# No __pycache__ or .pytest_cache in the source tree.
export PYTHONDONTWRITEBYTECODE=1
"$venv/bin/python" -m pytest tools/client-tests -p no:cacheprovider "$@"
