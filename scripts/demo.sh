#!/usr/bin/env bash
# The main job. Until the over-the-air rollout demo lands (issue "Over-the-air rollouts end to
# end"), it shows the models the system ships: rebuilds them from source, checks they are
# bit-identical to the committed ones, and runs every model's on-device health check with tract
# (golden vectors, NaN, latency budget), including the bad variants that must be refused.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "== models: rebuild and compare with the committed files"
python3 models/build.py --check
echo "== models: accuracy and ROC-AUC per version (held-out data)"
python3 -c 'import json; m = json.load(open("models/metrics.json")); [print(f"  {k} {v}: {r}") for k, vs in m.items() for v, r in vs.items()]'
echo "== on-device health checks with tract (release build)"
cargo test --release --locked -p edgefleet-inference --test models -- --test-threads 1
