#!/usr/bin/env bash
# Every check the project has, in the order CI runs them. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The cross-process tests in tests/ run the real binaries.
cargo build --workspace --bins --locked
cargo test --workspace --locked
# The committed models are exactly what models/build.py produces.
python3 models/build.py --check
