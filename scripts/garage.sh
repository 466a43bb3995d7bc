#!/usr/bin/env bash
# Builds Garage, the S3 implementation the replica tests run against (tests/src/garage.rs), once
# into a cache outside the checkout; later runs find it there. An unoptimised build: it compiles
# in about half the time and tests move kilobytes through it. Cold: ~6-10 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

version=2.5.0
cache="${EDGEFLEET_CACHE:-$HOME/.cache/edgefleet}"
root="$cache/garage-$version"
if [ -x "$root/bin/garage" ]; then
  exit 0
fi
mkdir -p "$cache"
rm -rf "$root.partial"
# Only the SQLite metadata engine (bundled), no LMDB, metrics or K2V: what a test node needs;
# no debug info either.
CARGO_PROFILE_DEV_DEBUG=0 cargo install garage --version "$version" --locked --debug --quiet \
  --no-default-features --features bundled-libs,sqlite \
  --root "$root.partial" --target-dir "$cache/garage-target"
mv "$root.partial" "$root"
rm -rf "$cache/garage-target"
echo "garage $version built into $root"
