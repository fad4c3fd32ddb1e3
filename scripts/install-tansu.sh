#!/usr/bin/env bash
# Installs tansu, the Kafka-compatible broker the overflow tests run against, once.
#
# tansu comes from crates.io and takes about 30 minutes to build cold on two cores, so it
# is installed into a cache outside the repository and reused by every later run; a fresh
# machine pays the build once. `libsql` adds the sqlite:// storage engine, which keeps
# topics in a file, so a test can restart the broker without losing what it acknowledged.
# Prints the path of the binary on stdout.
#
#   TIDEGATE_TOOLS   cache root (default ~/.cache/tidegate/tools)
set -euo pipefail

version=0.6.0
root="${TIDEGATE_TOOLS:-$HOME/.cache/tidegate/tools}/tansu-$version"
bin="$root/bin/tansu"

if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

echo "scripts/install-tansu.sh: building tansu $version into $root (slow once, cached after)" >&2
# A build directory of its own: it must not share (or lock) the project's target/.
CARGO_TARGET_DIR="$root/build" cargo install --quiet --locked tansu \
  --version "$version" --features dynostore,libsql --root "$root" >&2
rm -rf "$root/build"
echo "$bin"
