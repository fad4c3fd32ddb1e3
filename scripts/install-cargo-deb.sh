#!/usr/bin/env bash
# Installs cargo-deb, which builds tidegate's Debian package, once into the tools cache
# (about 3 minutes on two cores), and dpkg-dev's tools it calls when missing. Prints the
# path of the binary on stdout.
#
#   TIDEGATE_TOOLS   cache root (default ~/.cache/tidegate/tools)
set -euo pipefail

# Pinned: tests/package.rs packages the debug binary the tests built (--profile dev),
# which later cargo-deb releases announce they will refuse.
version=3.8.0
root="${TIDEGATE_TOOLS:-$HOME/.cache/tidegate/tools}/cargo-deb-$version"
bin="$root/bin/cargo-deb"

if ! command -v dpkg-deb >/dev/null 2>&1 || ! command -v adduser >/dev/null 2>&1; then
  echo "scripts/install-cargo-deb.sh: installing dpkg and adduser" >&2
  apt-get update -qq
  apt-get install -y -qq dpkg adduser >/dev/null
fi
if [[ ! -x "$bin" ]]; then
  echo "scripts/install-cargo-deb.sh: building cargo-deb $version into $root (once)" >&2
  CARGO_TARGET_DIR="$root/build" cargo install --quiet --locked cargo-deb \
    --version "$version" --root "$root" >&2
  rm -rf "$root/build"
fi
echo "$bin"
