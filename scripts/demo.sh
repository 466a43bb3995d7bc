#!/usr/bin/env bash
# The main job, on one machine: a fleet server on its embedded defaults (SQLite, local artifact
# store, embedded MQTT broker), N edge agents enrolled as separate processes, and three staged
# rollouts while a client keeps asking every agent for predictions:
#   churn 1.0.0 to every device; churn 2.0.0 in waves (20 %, 60 %, 100 %); churn 3.0.0-nan, whose
#   health check fails on the canary, halted and rolled back automatically.
# It prints the timeline and how many predictions failed, and exits 0 only if that is zero and
# every rollout ended as designed.
#
#   bash scripts/demo.sh [--agents N] [--mosquitto] [--keep-running] [--dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== building (first run: a few minutes)"
cargo build --locked --bins -q
exec "${CARGO_TARGET_DIR:-target}/debug/edgefleet-demo" "$@"
