#!/usr/bin/env bash
# MLflow, pinned, in a virtual environment of its own (its ~100 dependencies would fight the
# models' pinned numpy and scikit-learn), cached outside the checkout like SeaweedFS; about 1 GB and
# 40 s the first time. Prints the environment's directory. tests/mlflow.rs runs its
# `mlflow server` and logs a model with it.
set -euo pipefail
version=3.17.2
cache="${EDGEFLEET_CACHE:-$HOME/.cache/edgefleet}"
venv="$cache/mlflow-$version"
# A venv records its own path, so it is built where it lives; `ready` marks a finished install.
if [ ! -e "$venv/ready" ]; then
  mkdir -p "$cache"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "mlflow==$version" "onnx==1.23.2" "onnxruntime==1.32.0" >&2
  touch "$venv/ready"
fi
echo "$venv"
