#!/usr/bin/env bash
# Every check the project has, in the order CI runs them. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo fmt --all --check
# terraform/ parses and its references resolve (no terraform binary is installable here).
python3 terraform/check.py
cargo clippy --workspace --all-targets --locked -- -D warnings
# The cross-process tests in tests/ run the real binaries.
cargo build --workspace --bins --locked
# The systemd units verify against those binaries and stay at exposure <= 2.0.
bash systemd/check.sh target/debug
# The Debian packages install, upgrade, remove and purge on this (throw-away) machine.
bash packaging/deb/test.sh target/debug
# No container engine here: the compose wiring and the image's config are checked instead.
bash packaging/container/check.sh target/debug
cargo test --workspace --locked
# The committed models are exactly what models/build.py produces.
python3 models/build.py --check
