#!/usr/bin/env bash
# Runs the cross-built ARM edge-agent under qemu user-mode emulation: it verifies and installs the
# churn model from a TUF repository made by the host's fleetctl, passes the install health check,
# and answers every golden case of churn 1.0.0 through POST /v1/models/churn:predict.
#
#   bash cross/build.sh aarch64-unknown-linux-gnu && bash cross/test-qemu.sh aarch64-unknown-linux-gnu
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

target="${1:-aarch64-unknown-linux-gnu}"
qemu="qemu-${target%%-*}"
case "$target" in armv7-*) qemu=qemu-arm ;; esac
agent="$root/target/cross/$target/${EDGEFLEET_DEVICE_PROFILE:-device}/edge-agent"
[ -x "$agent" ] || { echo "cross/test-qemu.sh: $agent missing: run bash cross/build.sh $target" >&2; exit 1; }
command -v "$qemu" >/dev/null || { echo "cross/test-qemu.sh: $qemu missing: apt-get install qemu-user" >&2; exit 1; }
# The same selection as scripts/test-all.sh builds: in CI this finds everything fresh, where
# `--bin fleetctl` alone would unify features differently and compile the dependencies again.
cargo build --locked --quiet --workspace --bins --tests
fleetctl="$root/target/debug/fleetctl"

work=$(mktemp -d)
agent_pid=
trap '[ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null; rm -rf "$work"' EXIT

mkdir -p "$work/op" "$work/data"
(cd "$work/op" && "$fleetctl" keygen >/dev/null && "$fleetctl" init >/dev/null &&
  "$fleetctl" push "$root/models/churn/1.0.0" >/dev/null)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Emulation runs a model tens of times slower than the board would: the latency budget is widened
# so the health check judges the outputs, not qemu's speed.
cat > "$work/agent.toml" <<TOML
device_id = "qemu-$target"
data_dir = "$work/data"
trusted_root_path = "$work/op/repo/metadata/1.root.json"
[limits]
latency_budget_factor = 50.0
[api]
listen = "127.0.0.1:$port"
install_from = "$work"
TOML

# Without -L: the binary's own loader path resolves through binfmt-free user-mode emulation; with
# -L /usr/aarch64-linux-gnu the mismatched loaders hang at the first thread (seen here).
timeout 600 "$qemu" "$agent" run --config "$work/agent.toml" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$port/v2/health/live" >/dev/null 2>&1 && break
  kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log" >&2; exit 1; }
  sleep 0.2
done
started=$(date +%s.%N)
timeout 600 "$qemu" "$agent" install --config "$work/agent.toml" "$work/op/repo" ||
  { cat "$work/agent.log" >&2; exit 1; }
installed=$(date +%s.%N)

python3 - "$port" "$root/models/churn/1.0.0/health.json" "$started" "$installed" <<'PY'
import json, sys, time, urllib.request

port, health_path, started, installed = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
health = json.load(open(health_path))
models = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models"))
churn = next(m for m in models["models"] if m["name"] == "churn")
print(f"installed churn {churn.get('active', {}).get('version')} on {churn.get('runtime')} "
      f"in {installed - started:.1f} s under emulation")
interface = json.load(open(health_path.replace("health.json", "interface.json")))
labels = interface["prediction"]["labels"]
tolerance = health["tolerance"]
answered = 0
begin = time.monotonic()
for case in health["cases"]:
    if len(case.get("features", [])) != 1:
        continue  # tensor cases: the install health check ran them all
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/churn:predict",
        data=json.dumps(case["features"][0]).encode(), headers={"content-type": "application/json"})
    got = json.load(urllib.request.urlopen(req))["probabilities"]
    for label, want in zip(labels, case["expected"]["probabilities"]["data"]):
        excess = abs(got[label] - want) - (tolerance["abs"] + tolerance["rel"] * abs(want))
        if excess > 0:
            sys.exit(f"cross/test-qemu.sh: FAILED: {case['name']} {label}: {got[label]} vs golden {want}")
    answered += 1
elapsed = time.monotonic() - begin
if answered == 0:
    sys.exit("cross/test-qemu.sh: FAILED: churn's health.json has no single-row feature case")
print(f"{answered} golden feature rows answered in {elapsed:.2f} s, all within tolerance {tolerance}")
PY
echo "cross/test-qemu.sh: $target agent passes churn's golden vectors under $qemu"
