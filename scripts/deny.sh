#!/usr/bin/env bash
# Supply chain: `cargo deny check` (advisories, bans, licenses, sources) offline, against the
# RustSec snapshot in ../shared/supply-chain/ (deny.toml says what is accepted and why).
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $version"; then
  cargo install cargo-deny --locked --version "$version"
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
cargo deny --offline check --hide-inclusion-graph
