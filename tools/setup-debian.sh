#!/usr/bin/env bash
# Installs what building, testing and benchmarking Ferrite need on a fresh Debian machine
# (run as root). The Rust toolchain itself comes from rustup (see README).
# kcat and a Python venv are for the real-client tests (tools/client-tests.sh); python3-venv
# makes `python3 -m venv` work when python3 is Debian's own interpreter (pyenv's already can).
# openssl makes the TLS tests' certificate authority and certificates (test_tls.py); libssl-dev
# is what ferrite-bench's librdkafka speaks TLS and SASL (SCRAM) with.
# burrow (LinkedIn's lag monitor) is for the Burrow test; it keeps its own state in ZooKeeper,
# which the test runs on loopback from libzookeeper-java's jars on a headless JRE (the
# `zookeeper` package would add a system service and a full JRE with X11, neither needed).
# nodejs and npm are for the kafkajs test (npm is installed only where no npm is: NodeSource's
# nodejs package carries its own and conflicts with Debian's).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(build-essential pkg-config fio kcat openssl libssl-dev python3-venv burrow libzookeeper-java default-jre-headless nodejs)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
fi
