#!/usr/bin/env bash
# The figure docs/BENCHMARKS.md records for `fleetctl import mlflow`: the vision model
# (SqueezeNet 1.1, 4.7 MiB, one 1x3x224x224 input example) logged with mlflow.onnx.log_model to
# a local `mlflow server` (SQLite backend, proxied artifacts), then imported (release build,
# --no-push: reading the registry, the run and the artifacts, golden vectors through ONNX Runtime,
# writing the release directory) three times.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash scripts/mlflow.sh)
cargo build --release --locked -p fleetctl >&2
ort=$(python3 -c "import onnxruntime, os, glob; print(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*'))[0])")
tmp=$(mktemp -d)
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
(cd "$tmp" && exec setsid "$venv/bin/mlflow" server --host 127.0.0.1 --port "$port" --workers 1 \
  --backend-store-uri sqlite:///mlflow.db --artifacts-destination ./artifacts >mlflow.log 2>&1) &
server=$!
trap 'kill -- -"$server" 2>/dev/null || true; rm -rf "$tmp"' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 240); do curl -fs "$url/health" >/dev/null && break; sleep 0.5; done
MLFLOW_TRACKING_URI="$url" "$venv/bin/python" - models/vision/1.0.0/model.onnx >/dev/null 2>&1 <<'PY'
import sys
import mlflow, numpy as np, onnx, onnxruntime as ort
from mlflow.models import infer_signature
model = onnx.load(sys.argv[1])
x = np.random.default_rng(7).random((1, 3, 224, 224), dtype=np.float32)
(y,) = ort.InferenceSession(model.SerializeToString()).run(None, {"data_0": x})
with mlflow.start_run():
    mlflow.log_param("architecture", "squeezenet1.1")
    mlflow.onnx.log_model(model, name="model", signature=infer_signature(x, y), input_example=x,
                          registered_model_name="vision")
PY
for i in 1 2 3; do
  start=$(date +%s.%N)
  target/release/fleetctl import mlflow --tracking-uri "$url" --model vision --version 1 \
    --onnxruntime-library "$ort" --no-push --out "$tmp/vision-$i" >/dev/null
  end=$(date +%s.%N)
  echo "import $i: $(python3 -c "print(f'{$end - $start:.2f}')") s; golden.json cases: $(du -h "$tmp/vision-$i/health.json" | cut -f1)"
done
