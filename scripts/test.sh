#!/usr/bin/env bash
# Runs every tidegate test, installing what the tests need first.
#
# This is the README's test command and what .ci/run calls. It must pass on a fresh
# machine: anything the tests need is installed here, never assumed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: a C compiler and make for the -sys crates (zstd, mimalloc), and procps
# for `kill`, which the tests use to send SIGTERM.
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v kill >/dev/null 2>&1 || missing+=(procps)
if ((${#missing[@]})); then
  echo "scripts/test.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Kafka overflow tests run against tansu, a Kafka-compatible broker from crates.io,
# built once into a cache outside the repository (about 30 minutes cold on two cores).
TIDEGATE_TEST_TANSU="$(scripts/install-tansu.sh)"
export TIDEGATE_TEST_TANSU

# The browser test drives Debian's chromium with playwright-core from npm; the deploy
# tests check the systemd unit and the alert rules with systemd-analyze and promtool.
scripts/install-browser.sh
scripts/install-deploy-tools.sh
# tests/package.rs builds the Debian package with cargo-deb and installs it.
TIDEGATE_TEST_CARGO_DEB="$(scripts/install-cargo-deb.sh)"
export TIDEGATE_TEST_CARGO_DEB

# Two shards at most in any test: CI machines have two cores.
export RUST_BACKTRACE=1
# The test-only sink gate is compiled in for the tests (never in a default build).
cargo build --locked -p cql-testnode
cargo test --locked --workspace --all-targets --features tidegate/test-hooks
