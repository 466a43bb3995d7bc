#!/usr/bin/env bash
# The main job, on one machine: an operator signs model releases into a TUF repository with
# fleetctl; an edge agent verifies each one, health-checks it and serves it, while a client keeps
# asking for predictions. A release that passes its checks but fails on live traffic is rolled
# back by probation; one that fails its health check never serves. At the end: how many of the
# client's predictions failed (must be 0).
#
# The over-the-air path (fleet server, MQTT, staged rollouts) replaces the USB-style
# `edge-agent install` below when it lands.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/setup.sh
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
echo "== building"
cargo build --locked --bins -q
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

work=$(mktemp -d)
port=${DEMO_PORT:-18731}
agent_pid=""
load_pid=""
cleanup() {
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
models() { curl -s "localhost:$port/v1/models" | python3 -c 'import json,sys
for m in json.load(sys.stdin)["models"]:
    a = (m["active"] or {}).get("version"); p = (m["previous"] or {}).get("version")
    print("    %s: serving %s  active %s  previous %s  state %s" % (m["name"], m["serving"], a, p, m["state"]))
    if m["last_error"]: print("      last error: " + m["last_error"])'; }
wait_state() {  # model, state
  for _ in $(seq 1 300); do
    if curl -s "localhost:$port/v1/models" | grep -q "\"state\":\"$2\""; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $1 to reach $2" >&2; return 1
}
row='{"tenure_months": 14, "monthly_charges": 82.5, "total_charges": 1155.0, "contract_type": "month-to-month", "payment_method": "electronic-check", "internet_service": "fiber", "support_tickets": 2}'
predict() { curl -s -XPOST "localhost:$port/v1/models/churn:predict" -d "$1"; }

cd "$work"
step "operator: make keys and a TUF repository (root, targets offline; snapshot, timestamp online)"
"$bin/fleetctl" keygen | sed 's/^/    /'
"$bin/fleetctl" init | sed 's/^/    /'
"$bin/fleetctl" push "$root/models/churn/1.0.0" | sed 's/^/    /'

step "device: start edge-agent (trusts repo/metadata/1.root.json)"
cat > agent.toml <<TOML
device_id = "demo-device-1"
data_dir = "$work/device"
trusted_root_path = "$work/repo/metadata/1.root.json"
[api]
listen = "127.0.0.1:$port"
[probation]
window_seconds = 3
min_requests = 10
TOML
"$bin/edge-agent" check-config --config agent.toml
RUST_LOG=warn "$bin/edge-agent" run --config agent.toml 2> agent.log &
agent_pid=$!
for _ in $(seq 1 100); do curl -s "localhost:$port/v2/health/live" >/dev/null && break; sleep 0.1; done

step "device: install churn 1.0.0 from the repository (TUF verify, stage, load, health check, probation)"
"$bin/edge-agent" install --config agent.toml repo | sed 's/^/    /'
wait_state churn committed
models
echo "    prediction: $(predict "$row")"

step "client: start asking for predictions continuously"
( ok=0; failed=0; trap 'echo "$ok $failed" > load.result; exit 0' TERM
  while true; do
    if code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "localhost:$port/v1/models/churn:predict" -d "$row") && [ "$code" = 200 ]; then
      ok=$((ok+1)); else failed=$((failed+1)); fi
  done ) &
load_pid=$!
sleep 1

step "operator: push churn 2.0.0 (MLP, fresher data: ROC-AUC 0.8746 vs 0.8662); device installs it"
"$bin/fleetctl" push "$root/models/churn/2.0.0" | sed 's/^/    /'
"$bin/edge-agent" install --config agent.toml repo | sed 's/^/    /'
wait_state churn committed
models
echo "    prediction: $(predict "$row")"

step "operator: push churn 3.0.0-nan-on-live: passes its golden vectors, emits NaN for long-tenure customers"
"$bin/fleetctl" push "$root/models/bad/nan-on-live" | sed 's/^/    /'
"$bin/edge-agent" install --config agent.toml repo --target models/churn/3.0.0-nan-on-live/model.onnx | sed 's/^/    /'
echo "    live traffic includes customers with 8+ years of tenure:"
for _ in $(seq 1 15); do predict '{"tenure_months": 100, "monthly_charges": 50, "total_charges": 5000, "contract_type": "two-year", "payment_method": "credit-card", "internet_service": "dsl"}' > /dev/null; done
wait_state churn rolled_back
models

step "operator: revoke it and push churn 3.0.0-nan (NaN on every input): the health check refuses it"
"$bin/fleetctl" revoke models/churn/3.0.0-nan-on-live/model.onnx | sed 's/^/    /'
"$bin/fleetctl" push "$root/models/bad/nan" | sed 's/^/    /'
if "$bin/edge-agent" install --config agent.toml repo --target models/churn/3.0.0-nan/model.onnx 2> refused.log; then
  echo "FAILED: a model emitting NaN was installed" >&2; exit 1
fi
sed 's/.*install refused/    refused/' refused.log | tail -1
models

step "client: stop"
kill -TERM "$load_pid"; wait "$load_pid" 2>/dev/null || true; load_pid=""
read -r ok failed < load.result
echo "    predictions served: $ok, failed: $failed"
curl -s "localhost:$port/metrics" | grep -E '^edgefleet_updates_total' | sed 's/^/    /'
if [ "$failed" -ne 0 ]; then echo "FAILED: $failed predictions failed during updates" >&2; exit 1; fi
echo
echo "demo complete: every update was verified and health-checked, the bad ones never disturbed the client"
