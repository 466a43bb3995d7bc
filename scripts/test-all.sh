#!/usr/bin/env bash
# Every check the project has, in the order CI runs them. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step's start in seconds since the run began (.ci/run's start when it called this), so a
# slow run's log says where its time went.
export EDGEFLEET_T0="${EDGEFLEET_T0:-$(date +%s)}"
step() { echo "---- +$(( $(date +%s) - EDGEFLEET_T0 )) s: $*"; }

step setup
bash scripts/setup.sh
# SeaweedFS (S3 for the replica tests) installs once into a cache, beside the checks below.
seaweedfs_log=$(mktemp)
(bash scripts/seaweedfs.sh && step "seaweedfs ready") >"$seaweedfs_log" 2>&1 &
seaweedfs_pid=$!
# MLflow (pinned, in its own environment) for tests/mlflow.rs: installs once into the cache.
mlflow_log=$(mktemp)
(nice -n 10 bash scripts/mlflow.sh && step "mlflow ready") >"$mlflow_log" 2>&1 &
mlflow_pid=$!
# Supply chain (cargo deny, offline against ../shared/supply-chain) and the fuzz targets' build,
# beside the checks below too: both mostly wait on compiling.
deny_log=$(mktemp)
(nice -n 10 bash scripts/deny.sh && step "deny ready") >"$deny_log" 2>&1 &
deny_pid=$!
step fmt
cargo fmt --all --check
# The fuzz targets are a workspace of their own.
cargo fmt --manifest-path fuzz/Cargo.toml --check
# terraform/ parses and its references resolve (no terraform binary is installable here).
python3 terraform/check.py
# clippy's lints run inside the build (the script says why).
source scripts/clippy-in-build.sh
# The cross-process tests in tests/ run the real binaries. Built in one go with the tests: with
# the tests' features unified, every dependency compiles once, not once for each.
step "build, with clippy's lints"
# --timings: each crate's compile on a timeline (target/cargo-timings/), to see what a cold run
# waits for.
cargo build --workspace --all-targets --locked --timings
# The systemd units verify against those binaries and stay at exposure <= 2.0.
step systemd, packages, container
bash systemd/check.sh target/debug
# The Debian packages install, upgrade, remove and purge on this (throw-away) machine.
bash packaging/deb/test.sh target/debug
# No container engine here: the compose wiring and the image's config are checked instead.
bash packaging/container/check.sh target/debug
# Every fuzz target still compiles against the decoders it feeds (stable, no sanitizers; the
# fuzzing runs themselves are recorded in docs/FUZZING.md), linted like the workspace.
step fuzz check
cargo check --locked --manifest-path fuzz/Cargo.toml --bins --target-dir target
step waiting on deny, SeaweedFS, MLflow
if ! wait "$deny_pid"; then
  cat "$deny_log"
  echo "cargo deny check failed (scripts/deny.sh, deny.toml)" >&2
  exit 1
fi
tail -n 2 "$deny_log"
if ! wait "$seaweedfs_pid"; then
  cat "$seaweedfs_log"
  echo "installing SeaweedFS failed (scripts/seaweedfs.sh)" >&2
  exit 1
fi
tail -n 1 "$seaweedfs_log"
if ! wait "$mlflow_pid"; then
  cat "$mlflow_log"
  echo "installing MLflow failed (scripts/mlflow.sh)" >&2
  exit 1
fi
tail -n 1 "$mlflow_log"
# Every test binary, three at a time (they mostly wait on the processes they start; see the
# script): the same tests as `cargo test --workspace`, in about half the time.
step tests
# What CI runs beside these checks (.ci/run's device build, a process group) waits while the
# tests run when .ci/run could not put it in an idle CPU group: the tests judge timing and memory
# of real processes, as on a quiet machine.
beside() {
  if [ -n "${EDGEFLEET_BESIDE_PGID:-}" ]; then
    kill "-$1" -- "-$EDGEFLEET_BESIDE_PGID" 2>/dev/null || true
  fi
}
trap 'beside CONT' EXIT
beside STOP
python3 scripts/run-tests.py
beside CONT
# The committed models are exactly what models/build.py produces.
step models check
python3 models/build.py --check
# The device's tract-only build (no ONNX Runtime loader) is a real build: lints and the agent's own
# tests. Last, because it rebuilds target/debug/edge-agent without ONNX Runtime, which the
# cross-process tests above must not run.
step tract-only agent
# clippy's lints run in its build, as above (its benches are linted in the workspace's build).
# It reuses the workspace build's crates but for the agent's and edgefleet-inference's own
# (workspace-features/Cargo.toml says how): more compiled here means that list went stale.
tract_only_log=$(mktemp)
cargo test -p edge-agent --no-default-features --locked 2>&1 | tee "$tract_only_log"
echo "tract-only agent: $(grep -c '^ *Compiling ' "$tract_only_log") crates compiled (2 expected: edgefleet-inference and edge-agent)"
step done
