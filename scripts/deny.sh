#!/usr/bin/env bash
# Supply chain: `cargo deny check` (advisories, bans, licenses, sources) offline, against the
# RustSec snapshot in ../shared/supply-chain/ (deny.toml says what is accepted and why).
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $version"; then
  # Built for checking one lock file, not for speed: a light optimisation, no LTO and parallel
  # code generation cut its cold build (CI builds it on every fresh machine; its release build
  # took 54 min niced beside the checks on 2 cores) while the check itself still takes seconds.
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install cargo-deny --locked --version "$version" --quiet
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
