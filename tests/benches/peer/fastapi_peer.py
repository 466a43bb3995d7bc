"""The agent benchmark's peer (tests/benches/agent.rs): a release directory's tabular model served
with onnxruntime behind FastAPI on uvicorn (uvloop, httptools, one worker, no access log), on the
agent's own request and response shape: POST /v1/models/NAME:predict with a JSON object of named
features, answered with the predicted label and the class probabilities.

    python3 fastapi_peer.py RELEASE_DIR PORT

The features are encoded exactly as the agent does (models/build.py's encode_row, restated here
so the peer does not import scikit-learn and scipy, which would inflate its memory).
"""

import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException, Request

release = pathlib.Path(sys.argv[1])
port = int(sys.argv[2])
interface = json.loads((release / "interface.json").read_text())
meta = json.loads((release / "release.json").read_text())
features = interface["features"]["features"]
prediction = interface["prediction"]
input_name = interface["inputs"][0]["name"]

options = ort.SessionOptions()
# One thread per inference, as the agent runs each request: the load generator brings the
# concurrency.
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(
    str(release / "model.onnx"), options, providers=["CPUExecutionProvider"]
)


def encode(row: dict) -> list[float]:
    out: list[float] = []
    for f in features:
        value = row.get(f["name"], f.get("default"))
        if value is None:
            raise HTTPException(400, f"missing required feature {f['name']}")
        if f["kind"] == "numeric":
            x = float(value)
            s = f.get("scaling", {"method": "none"})
            if s["method"] == "standard":
                x = (x - s["mean"]) / s["std"]
            elif s["method"] == "min_max":
                x = (x - s["min"]) / (s["max"] - s["min"])
            out.append(x)
        elif f["kind"] == "categorical":
            cats = f["categories"]
            fallback = f.get("unseen", "error") == "fallback"
            if value in cats:
                index = cats.index(value)
            elif fallback:
                index = len(cats)
            else:
                raise HTTPException(400, f"unseen category {value!r} for {f['name']}")
            if f.get("encoding", "one_hot") == "one_hot":
                width = len(cats) + (1 if fallback else 0)
                out.extend(1.0 if i == index else 0.0 for i in range(width))
            else:
                out.append(float(index))
        else:
            out.append(1.0 if value else 0.0)
    return out


app = FastAPI()


@app.post("/v1/models/{name}:predict")
async def predict(name: str, request: Request):
    if name != meta["model"]:
        raise HTTPException(404, f"no model {name}")
    row = await request.json()
    x = np.asarray([encode(row)], dtype=np.float32)
    (scores,) = session.run([prediction["output"]], {input_name: x})
    probabilities = [float(p) for p in scores[0]]
    labels = prediction["labels"]
    return {
        "model": name,
        "version": meta["version"],
        "prediction": labels[int(np.argmax(scores[0]))],
        "probabilities": dict(zip(labels, probabilities)),
        "runtime": "onnxruntime",
    }


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
    )
