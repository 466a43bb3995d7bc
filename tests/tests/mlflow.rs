//! `fleetctl import mlflow` against a real MLflow: the pinned `mlflow server` from PyPI
//! (scripts/mlflow.sh) on a SQLite backend store, started here; a model logged in this test
//! with `mlflow.onnx.log_model` is imported, pushed, rolled out to an agent and served, and its
//! lineage is what `fleetctl models show` reads. The model's weights are big enough for MLflow to
//! save them outside `model.onnx`, as it does by default: the import puts them back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::fleet::KillGroupOnDrop;
use edgefleet_e2e::{
    free_port, models_dir, one_fleet_at_a_time, onnxruntime_library, post_json, run_ok,
};
use serde_json::{Value, json};

/// The pinned MLflow environment (installed by scripts/mlflow.sh on first use).
fn mlflow_venv() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mlflow.sh");
    let out = run_ok(Command::new("bash").arg(script));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn start_mlflow(venv: &Path, dir: &Path) -> (KillGroupOnDrop, String) {
    let port = free_port();
    let log = std::fs::File::create(dir.join("mlflow.log")).unwrap();
    // The whole group goes with the guard: MLflow starts a job runner and huey consumers.
    let guard = KillGroupOnDrop::spawn(
        Command::new(venv.join("bin/mlflow"))
            .current_dir(dir)
            .args(["server", "--host", "127.0.0.1", "--workers", "1"])
            .args(["--port", &port.to_string()])
            .args(["--backend-store-uri", "sqlite:///mlflow.db"])
            .args(["--artifacts-destination", "./artifacts"])
            .stdout(Stdio::null())
            .stderr(log),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while edgefleet_e2e::http()
        .get(&format!("{url}/health"))
        .call()
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "mlflow server did not come up: {}",
            std::fs::read_to_string(dir.join("mlflow.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    (guard, url)
}

/// Logs churn 2.0.0's ONNX graph (an MLP whose first layer, 1.6 KB, MLflow saves as external
/// data) as registered model `churn-mlflow` version 1, with a signature, an input example,
/// params, a metric and the git commit tag; prints the rows and what ONNX Runtime made of them.
const LOG_MODEL: &str = r#"
import json, sys
import mlflow, numpy as np, onnx, onnxruntime as ort
from mlflow.models import infer_signature

model = onnx.load(sys.argv[1])
x = np.random.default_rng(3).normal(size=(3, 17)).astype(np.float32)
(y,) = ort.InferenceSession(model.SerializeToString()).run(["probabilities"], {"features": x})
with mlflow.start_run():
    mlflow.log_params({"algorithm": "logistic regression", "C": "1.0"})
    mlflow.log_metric("accuracy", 0.9333)
    mlflow.set_tag("mlflow.source.git.commit", "0123456789abcdef0123456789abcdef01234567")
    mlflow.onnx.log_model(model, name="model", signature=infer_signature(x, y), input_example=x,
                          registered_model_name="churn-mlflow")
print(json.dumps({"x": x.tolist(), "y": y.tolist()}))
"#;

#[test]
fn an_mlflow_model_version_is_imported_pushed_rolled_out_and_served_with_its_lineage() {
    let _serial = one_fleet_at_a_time();
    let venv = mlflow_venv();
    let tmp = tempfile::tempdir().unwrap();
    let (mlflow, url) = start_mlflow(&venv, tmp.path());
    let logged = run_ok(
        Command::new(venv.join("bin/python"))
            .current_dir(tmp.path())
            .env("MLFLOW_TRACKING_URI", &url)
            .args(["-c", LOG_MODEL])
            .arg(models_dir().join("churn/2.0.0/model.onnx")),
    );
    let stdout = String::from_utf8_lossy(&logged.stdout);
    let logged: Value = serde_json::from_str(stdout.lines().last().expect("rows")).unwrap();
    let (rows, expected): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (
        serde_json::from_value(logged["x"].clone()).unwrap(),
        serde_json::from_value(logged["y"].clone()).unwrap(),
    );
    // MLflow kept the first layer's weights outside model.onnx.
    let external = walk(&tmp.path().join("artifacts"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .count();
    assert!(external > 0, "MLflow saved no external data");

    let fleet = demo::set_up(&tmp.path().join("fleet"), &DemoOptions::embedded(1));
    let imported = run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["import", "mlflow", "--tracking-uri", &url])
            .args(["--model", "churn-mlflow", "--version", "1", "--server"])
            .arg("--onnxruntime-library")
            .arg(onnxruntime_library())
            .arg("--out")
            .arg(tmp.path().join("churn-mlflow-1.0.0")),
    );
    let said = String::from_utf8_lossy(&imported.stdout);
    assert!(
        said.contains("pushed models/churn-mlflow/1.0.0/model.onnx"),
        "{said}"
    );
    // The interface is the signature's, named as the graph names its tensors.
    let interface: Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("churn-mlflow-1.0.0/interface.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(interface["inputs"][0]["name"], "features");
    assert_eq!(interface["inputs"][0]["shape"], json!([-1, 17]));

    assert_eq!(
        demo::roll_out_model(&fleet, "churn-mlflow", "1.0.0", &[100.0], 0),
        "completed"
    );
    let agent = &fleet.agents[0];
    let (status, answer) = post_json(
        &agent.url("/v2/models/churn-mlflow/infer"),
        &json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 17],
                            "data": rows[1]}]}),
    );
    assert_eq!(status, 200, "{answer}");
    let served: Vec<f64> = serde_json::from_value(answer["outputs"][0]["data"].clone()).unwrap();
    for (s, e) in served.iter().zip(&expected[1]) {
        assert!(
            (s - e).abs() < 1e-5,
            "served {served:?}, MLflow's {expected:?}"
        );
    }

    let shown = run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["models", "show", "churn-mlflow", "1.0.0"]),
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    for lineage in [
        "commit 0123456789abcdef0123456789abcdef01234567",
        "accuracy=0.9333",
        "C=1.0",
        "source     mlflow",
        "models:/churn-mlflow/1",
        "# churn-mlflow 1.0.0",
    ] {
        assert!(
            shown.contains(lineage),
            "{lineage:?} missing from:\n{shown}"
        );
    }

    // MLflow's workers go with it (they used to outlive the test, polling for jobs).
    let group = mlflow.group();
    drop(mlflow);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rustix::process::test_kill_process_group(group).is_ok() {
        assert!(
            Instant::now() < deadline,
            "processes of MLflow's group {group:?} still run 10 s after the server was stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
