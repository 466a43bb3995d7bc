#!/usr/bin/env python3
"""The outside reference for `cargo bench -p edgefleet-inference --bench backends`: onnxruntime's
Python package, one thread, on exactly the inputs the Rust bench wrote, plus each graph's FLOPs.

    python3 models/bench_ort.py MANIFEST.json

MANIFEST is a list of {"name", "model", "input", "shape", "data"} where `data` holds the input as
raw little-endian float32. Prints one JSON object: name -> {"p50_ms", "p99_ms", "runs", "gflop"}.
"""
import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, shape_inference


def flops(model: onnx.ModelProto) -> float:
    """Multiply-adds of Conv, Gemm and MatMul, times two: what GFLOP/s figures count."""
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out = shapes.get(node.output[0])
            w = shapes.get(node.input[1])
            if out and w:
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            if a and b:
                trans_b = any(at.name == "transB" and at.i == 1 for at in node.attribute)
                n = b[-2] if trans_b else b[-1]
                macs += int(np.prod(a)) * n
    return 2.0 * macs / 1e9


def timed(session, feed, min_runs=50, min_seconds=1.0):
    for _ in range(5):
        session.run(None, feed)
    samples = []
    started = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - started < min_seconds:
        t = time.perf_counter()
        session.run(None, feed)
        samples.append((time.perf_counter() - t) * 1e3)
        if len(samples) >= 5000:
            break
    samples.sort()
    q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))]
    return q(0.5), q(0.99), len(samples)


def main():
    manifest = json.load(open(sys.argv[1]))
    out = {}
    for entry in manifest:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(entry["model"], options, providers=["CPUExecutionProvider"])
        x = np.fromfile(entry["data"], dtype="<f4").reshape(entry["shape"])
        p50, p99, runs = timed(session, {entry["input"]: x})
        out[entry["name"]] = {"p50_ms": p50, "p99_ms": p99, "runs": runs,
                              "gflop": flops(onnx.load(entry["model"]))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
