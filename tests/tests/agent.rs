//! `edge-agent` as a device runs it: real processes, real models, a real TUF repository made by
//! `fleetctl`, HTTP on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use edgefleet_e2e::*;
use edgefleet_protocol::health::{GoldenInput, HealthSpec, Tolerance};
use edgefleet_protocol::interface::ModelInterface;
use serde_json::{Value, json};

// In-process, paused-time tests of the agent's logic over real stores and models.
#[path = "agent/guard.rs"]
mod guard;
#[path = "agent/in_process.rs"]
mod in_process;
#[path = "agent/probation.rs"]
mod probation;
#[path = "agent/quality.rs"]
mod quality;

fn read<T: for<'de> serde::Deserialize<'de>>(release: &str, file: &str) -> T {
    serde_json::from_slice(&std::fs::read(models_dir().join(release).join(file)).unwrap()).unwrap()
}

fn close(expected: &[f64], actual: &[f64], tol: Tolerance, what: &str) {
    assert_eq!(expected.len(), actual.len(), "{what}");
    for (e, a) in expected.iter().zip(actual) {
        assert!(tol.accepts(*e, *a), "{what}: expected {e}, got {a}");
    }
}

#[test]
fn api_predictions_equal_each_models_golden_vectors_on_each_back_end() {
    for runtime in ["tract", "onnxruntime"] {
        api_predictions_equal_golden_vectors(runtime);
    }
}

fn api_predictions_equal_golden_vectors(runtime: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let releases = [
        "churn/2.0.0",
        "iris/1.0.0",
        "vision/1.0.0",
        "iris-sklearn/1.0.0",
        "text-encoder/1.0.0",
        "detector/1.0.0",
    ];
    for release in releases {
        op.push(release);
    }
    let agent = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        &format!(
            "[inference]\nruntime = \"{runtime}\"\nonnxruntime_library = \"{}\"\n",
            onnxruntime_library().display()
        ),
        &[],
    );
    let out = agent.install(&op.repo(), None);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log_text()
    );
    for served in agent.models()["models"].as_array().unwrap() {
        assert_eq!(served["runtime"], runtime, "{served}");
    }

    for release in releases {
        let model = release.split('/').next().unwrap();
        let health: HealthSpec = read(release, "health.json");
        let interface: ModelInterface = read(release, "interface.json");
        for case in &health.cases {
            if case.features.len() == 1 {
                check_predict(&agent, model, release, &interface, &health, case);
                continue;
            }
            if !case.features.is_empty() {
                continue; // multi-row feature cases are covered by their tensor twin
            }
            let inputs: Vec<Value> = case
                .inputs
                .iter()
                .map(|(n, input)| input.materialize(n).unwrap().to_oip_json(n))
                .collect();
            let (status, body) = post_json(
                &agent.url(&format!("/v2/models/{model}/infer")),
                &json!({ "inputs": inputs }),
            );
            assert_eq!(status, 200, "{release} {}: {body}", case.name);
            for (name, expected) in &case.expected {
                let output = body["outputs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|o| o["name"] == name.as_str())
                    .unwrap();
                assert_eq!(output["datatype"], expected.dtype().kserve_name());
                let actual = edgefleet_protocol::Tensor::from_json(
                    expected.dtype(),
                    serde_json::from_value(output["shape"].clone()).unwrap(),
                    &output["data"],
                    name,
                )
                .unwrap();
                edgefleet_protocol::health::check_tensor(
                    &case.name,
                    name,
                    expected,
                    &actual,
                    health.tolerance_of(name),
                )
                .unwrap_or_else(|e| panic!("{release}: {e}"));
            }
            // The same case in the binary tensor extension, every output back as binary.
            let tensors: Vec<(String, edgefleet_protocol::Tensor)> = case
                .inputs
                .iter()
                .map(|(n, input)| (n.clone(), input.materialize(n).unwrap()))
                .collect();
            let refs: Vec<(&str, &edgefleet_protocol::Tensor)> =
                tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let (status, head, outputs) =
                post_infer_binary(&agent.url(&format!("/v2/models/{model}/infer")), &refs);
            assert_eq!(status, 200, "{release} {} (binary): {head}", case.name);
            for (name, expected) in &case.expected {
                edgefleet_protocol::health::check_tensor(
                    &case.name,
                    name,
                    expected,
                    &outputs[name],
                    health.tolerance_of(name),
                )
                .unwrap_or_else(|e| panic!("{release} (binary): {e}"));
            }
        }
    }
    // `fleetctl push` named the encoder's axes after its graph (`batch`, `sequence`): ids and a
    // mask of different lengths are the client's error, named, not a failure inside the model.
    let ids = |n: usize| json!({"name": "input_ids", "datatype": "INT64", "shape": [1, n], "data": vec![101; n]});
    let mask = |n: usize| json!({"name": "attention_mask", "datatype": "INT64", "shape": [1, n], "data": vec![1; n]});
    let (status, body) = post_json(
        &agent.url("/v2/models/text-encoder/infer"),
        &json!({"inputs": [ids(7), mask(9)]}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "attention_mask", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"sequence\""),
        "{body}"
    );
}

/// A one-row feature case through `:predict`: the probabilities match the golden scores, or the
/// label the golden integer label names.
fn check_predict(
    agent: &AgentProcess,
    model: &str,
    release: &str,
    interface: &ModelInterface,
    health: &HealthSpec,
    case: &edgefleet_protocol::health::GoldenCase,
) {
    let (status, body) = post_json(
        &agent.url(&format!("/v1/models/{model}:predict")),
        &Value::Object(case.features[0].clone()),
    );
    assert_eq!(status, 200, "{body}");
    let Some(edgefleet_protocol::interface::PredictionSpec::Classification { labels, output }) =
        interface.prediction.as_ref()
    else {
        unreachable!("the tabular models are classifiers")
    };
    for (name, expected) in &case.expected {
        if name == output {
            let actual: Vec<f64> = labels
                .iter()
                .map(|l| body["probabilities"][l].as_f64().unwrap())
                .collect();
            let expected: Vec<f64> = (0..expected.data.len())
                .map(|i| expected.data.number(i).unwrap())
                .collect();
            close(
                &expected,
                &actual,
                health.tolerance_of(name),
                &format!("{release} {}", case.name),
            );
        } else {
            let index = expected.data.number(0).unwrap() as usize;
            assert_eq!(
                body["prediction"],
                labels[index].as_str(),
                "{release} {name}"
            );
        }
    }
}

/// Sends `:predict` requests from two threads until stopped; counts non-200 answers.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..2)
            .map(|_| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.clone());
                std::thread::spawn(move || {
                    let client = http();
                    while !stop.load(Ordering::Relaxed) {
                        match client.post(&url).send_json(churn_row(12.0)) {
                            Ok(r) if r.status().as_u16() == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed)
                            }
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn each_bad_variant_is_rejected_for_its_own_reason_while_the_active_model_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let good = op.push("churn/2.0.0");
    let agent = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        "[probation]\nwindow_seconds = 1",
        &[],
    );
    assert!(
        agent.install(&op.repo(), Some(&good)).status.success(),
        "{}",
        agent.log_text()
    );
    agent.wait_state("churn", &["committed"], Duration::from_secs(20));

    let load = Load::start(agent.url("/v1/models/churn:predict"));
    let mut previous_bad: Option<String> = None;
    for (variant, reason) in [
        ("truncated", "load failed"),
        ("wrong-shape", "load failed"),
        ("nan", "NaN"),
        ("slow", "p99 latency"),
        ("unsupported-op", "Det"),
    ] {
        if let Some(t) = previous_bad.take() {
            op.revoke(&t);
        }
        let release = format!("bad/{variant}");
        let target = if matches!(variant, "truncated" | "wrong-shape") {
            // fleetctl refuses to sign these; the device must refuse them all the same.
            let refused = op
                .fleetctl()
                .arg("push")
                .arg(models_dir().join(&release))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(!refused.status.success(), "{variant}: fleetctl signed it");
            assert!(
                stderr.contains("model.onnx") || stderr.contains("axis 1"),
                "{variant}: {stderr}"
            );
            op.push_with(&release, &["--skip-graph-check"])
        } else {
            op.push(&release)
        };
        let out = agent.install(&op.repo(), Some(&target));
        assert!(!out.status.success(), "{variant} was installed");
        let m = agent.model("churn");
        assert_eq!(m["state"], "rejected", "{variant}: {m}");
        let error = m["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{variant}: expected {reason:?} in {error:?}"
        );
        assert_eq!(m["active"]["version"], "2.0.0", "{variant}");
        assert_eq!(m["serving"], "2.0.0", "{variant}");
        previous_bad = Some(target);
    }
    let (ok, failed) = load.finish();
    assert!(ok > 50, "too little load to mean anything: {ok}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during rejected installs",
        ok + failed
    );
}

#[test]
fn a_crash_at_every_install_step_leaves_exactly_one_good_version_active() {
    for state in ["staging", "staged", "checking", "probation"] {
        let tmp = tempfile::tempdir().unwrap();
        let op = Operator::new(&tmp.path().join("operator"));
        let v1 = op.push("churn/1.0.0");
        let data = tmp.path().join("data");
        let extra = "[probation]\nwindow_seconds = 1";
        {
            let agent = AgentProcess::start(tmp.path(), &data, &op.trusted_root(), extra, &[]);
            assert!(agent.install(&op.repo(), Some(&v1)).status.success());
            agent.wait_state("churn", &["committed"], Duration::from_secs(20));
        }
        let v2 = op.push("churn/2.0.0");
        {
            let mut agent = AgentProcess::start(
                tmp.path(),
                &data,
                &op.trusted_root(),
                extra,
                &[("EDGE_AGENT_CRASH_AT", state)],
            );
            let out = agent.install(&op.repo(), Some(&v2));
            assert!(!out.status.success(), "{state}: the agent should have died");
            let status = agent.child.wait().unwrap();
            assert!(!status.success(), "{state}: {status:?}");
            assert!(
                agent.log_text().contains("EDGE_AGENT_CRASH_AT reached"),
                "{state}"
            );
        }
        let agent = AgentProcess::start(tmp.path(), &data, &op.trusted_root(), extra, &[]);
        let m = agent.model("churn");
        assert_eq!(m["active"]["version"], "1.0.0", "{state}: {m}");
        assert_eq!(m["serving"], "1.0.0", "{state}: {m}");
        assert!(m["installing"].is_null(), "{state}: {m}");
        let expected = if state == "probation" {
            "rolled_back"
        } else {
            "rejected"
        };
        assert_eq!(m["state"], expected, "{state}: {m}");
        assert!(
            m["last_error"].as_str().unwrap().contains(state),
            "{state}: {m}"
        );
        let (status, body) = post_json(&agent.url("/v1/models/churn:predict"), &churn_row(12.0));
        assert_eq!(
            (status, body["version"].as_str()),
            (200, Some("1.0.0")),
            "{state}: {body}"
        );
        // Only the active version's files remain; staging is empty.
        let versions: Vec<_> = std::fs::read_dir(data.join("store/models/churn"))
            .unwrap()
            .collect();
        assert_eq!(versions.len(), 1, "{state}");
        assert_eq!(
            std::fs::read_dir(data.join("store/staging"))
                .unwrap()
                .count(),
            0,
            "{state}"
        );
        // Nothing is stuck: the same update goes through now.
        assert!(
            agent.install(&op.repo(), Some(&v2)).status.success(),
            "{state}: {}",
            agent.log_text()
        );
        let m = agent.wait_state("churn", &["committed"], Duration::from_secs(20));
        assert_eq!(m["active"]["version"], "2.0.0", "{state}");
        assert_eq!(m["previous"]["version"], "1.0.0", "{state}");
    }
}

#[test]
fn a_full_disk_rejects_the_update_cleanly_and_the_active_model_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let small = op.push("churn/2.0.0");
    let big = op.push("vision/1.0.0");
    // A 4 MiB file system for the data dir: churn fits, the 4.9 MB vision model does not.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(mounted.success(), "this test mounts a tmpfs and needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(data.clone());
    let agent = AgentProcess::start(
        tmp.path(),
        &data,
        &op.trusted_root(),
        "[limits]\nmin_free_disk_bytes = 65536\n[probation]\nwindow_seconds = 1",
        &[],
    );
    assert!(
        agent.install(&op.repo(), Some(&small)).status.success(),
        "{}",
        agent.log_text()
    );
    let out = agent.install(&op.repo(), Some(&big));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("disk") || stderr.contains("space") || stderr.contains("No space"),
        "{stderr}"
    );
    let m = agent.model("churn");
    assert_eq!(m["serving"], "2.0.0");
    let (status, _) = post_json(&agent.url("/v1/models/churn:predict"), &churn_row(12.0));
    assert_eq!(status, 200);
    assert!(agent.model("vision")["active"].is_null());
    assert_eq!(
        std::fs::read_dir(data.join("store/staging"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn the_agent_tells_systemd_it_is_ready_and_drains_requests_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let vision = op.push("vision/1.0.0");
    // systemd's side of Type=notify: a datagram socket named by NOTIFY_SOCKET.
    let socket_path = tmp.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let agent = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        "[probation]\nwindow_seconds = 1",
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            // A ping every 50 ms.
            ("WATCHDOG_USEC", "100000"),
        ],
    );
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    let n = notify.recv(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1"),
        "watchdog pings"
    );
    // The manager stops reading until its queue is surely full (net.unix.max_dgram_qlen, 10 by
    // default): the pings that follow are dropped, and the agent must neither block on them
    // (it once wedged its runtime here and never exited) nor stop serving.
    let queue = edgefleet_e2e::unix_datagram_queue();
    // (A machine with a long queue is not waited for: the notify crate's tests fill one there.)
    let fills_queue = queue <= 40;
    if fills_queue {
        std::thread::sleep(Duration::from_millis(50 * (queue + 4)));
    }
    assert!(
        agent.install(&op.repo(), Some(&vision)).status.success(),
        "{}",
        agent.log_text()
    );

    // A request in flight when SIGTERM arrives still gets its answer; then the process exits 0.
    let input = edgefleet_protocol::health::GeneratedTensor {
        dtype: edgefleet_protocol::DType::Float32,
        shape: vec![1, 3, 224, 224],
        uniform_seed: 7,
    };
    let data = GoldenInput::Generated(input)
        .materialize("data_0")
        .unwrap()
        .data;
    let url = agent.url("/v2/models/vision/infer");
    let request = std::thread::spawn(move || {
        let body = json!({ "inputs": [{ "name": "data_0", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": data }] });
        post_json(&url, &body).0
    });
    std::thread::sleep(Duration::from_millis(150));
    let pid = agent.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        request.join().unwrap(),
        200,
        "in-flight request was dropped"
    );
    let mut agent = agent;
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", agent.log_text());
    if fills_queue {
        assert!(
            agent.log_text().contains("watchdog pings are dropped"),
            "{}",
            agent.log_text()
        );
    }
}

#[test]
fn bad_requests_get_a_4xx_json_error_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let churn = op.push("churn/2.0.0");
    let agent = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        "",
        &[],
    );
    // Not ready before any model serves.
    let mut r = http().get(&agent.url("/v2/health/ready")).call().unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let _ = r.body_mut().read_to_string();
    assert!(agent.install(&op.repo(), Some(&churn)).status.success());
    assert_eq!(
        http()
            .get(&agent.url("/v2/health/ready"))
            .call()
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    let predict = agent.url("/v1/models/churn:predict");
    let mut row = churn_row(12.0);
    row.as_object_mut().unwrap().remove("contract_type");
    let cases: Vec<(String, Value, u16, &str)> = vec![
        (
            agent.url("/v1/models/nope:predict"),
            churn_row(1.0),
            404,
            "model",
        ),
        (predict.clone(), row, 400, "contract_type"),
        (
            predict.clone(),
            json!({"tenure_months": true}),
            400,
            "tenure_months",
        ),
        (
            predict.clone(),
            {
                let mut r = churn_row(1.0);
                r["colour"] = json!("red");
                r
            },
            400,
            "colour",
        ),
        (
            predict.clone(),
            {
                let mut r = churn_row(1.0);
                r["contract_type"] = json!("decade");
                r
            },
            400,
            "contract_type",
        ),
        (predict.clone(), json!([1, 2]), 400, "body"),
        (
            agent.url("/v2/models/churn/infer"),
            json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
            400,
            "features",
        ),
        (
            agent.url("/v2/models/churn/infer"),
            json!({"inputs": [{"name": "features", "shape": [1, 17], "datatype": "INT8", "data": []}]}),
            400,
            "features",
        ),
        (
            agent.url("/v2/models/churn/infer"),
            json!({"inputs": [{"name": "other", "shape": [1, 17], "datatype": "FP32", "data": vec![0.0; 17]}]}),
            400,
            "other",
        ),
    ];
    for (url, body, status, field) in cases {
        let (got, answer) = post_json(&url, &body);
        assert_eq!(got, status, "{url} {body}: {answer}");
        assert_eq!(answer["field"], field, "{url} {body}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // Over the body limit (8 MiB by default): a 413 in JSON naming the body.
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
    let body = vec![b' '; 9 * 1024 * 1024];
    write!(sock, "POST /v2/models/churn/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).unwrap();
    // The server stops reading at the limit; the rest may not be accepted.
    let _ = sock.write_all(&body);
    // The server answers without reading the body; it may keep the socket open to drain it.
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut answer = String::new();
    while !answer.contains(r#""field":"body""#) {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""field":"body""#), "{answer}");
    // Still serving.
    assert_eq!(post_json(&predict, &churn_row(3.0)).0, 200);
}

#[test]
fn a_corrupted_active_model_on_disk_falls_back_to_the_previous_version_at_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let v1 = op.push("churn/1.0.0");
    let v2 = op.push("churn/2.0.0");
    let iris = op.push("iris/1.0.0");
    let data = tmp.path().join("data");
    let extra = "[probation]\nwindow_seconds = 1";
    let sha2 = {
        let agent = AgentProcess::start(tmp.path(), &data, &op.trusted_root(), extra, &[]);
        for target in [&v1, &v2, &iris] {
            assert!(
                agent.install(&op.repo(), Some(target)).status.success(),
                "{}",
                agent.log_text()
            );
            agent.wait_state(
                target.split('/').nth(1).unwrap(),
                &["committed"],
                Duration::from_secs(20),
            );
        }
        agent.model("churn")["active"]["sha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Bit rot (or a tampered disk): the active churn file no longer parses.
    let file = data
        .join("store/models/churn")
        .join(&sha2)
        .join("model.onnx");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();

    let agent = AgentProcess::start(tmp.path(), &data, &op.trusted_root(), extra, &[]);
    assert_eq!(
        agent.model("churn")["serving"],
        "1.0.0",
        "{}",
        agent.log_text()
    );
    assert_eq!(agent.model("iris")["serving"], "1.0.0");
    let (status, body) = post_json(&agent.url("/v1/models/churn:predict"), &churn_row(12.0));
    assert_eq!(
        (status, body["version"].as_str()),
        (200, Some("1.0.0")),
        "{body}"
    );
}

#[test]
fn with_onnxruntime_the_agent_serves_a_model_only_it_can_load_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    op.push("bad/unsupported-op");
    for dir in ["without", "with"] {
        std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
    }
    // Without the library: tract alone, and the agent says where it looked.
    let without = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("without/data"),
        &op.trusted_root(),
        "[inference]\nonnxruntime_library = \"/nonexistent/libonnxruntime.so\"\n",
        &[],
    );
    let runtimes = without.models()["runtimes"].clone();
    assert_eq!(runtimes["available"], json!(["tract"]), "{runtimes}");
    assert!(
        runtimes["unavailable"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/libonnxruntime.so"),
        "{runtimes}"
    );
    drop(without);

    let agent = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("with/data"),
        &op.trusted_root(),
        &format!(
            "[inference]\nonnxruntime_library = \"{}\"\n",
            onnxruntime_library().display()
        ),
        &[],
    );
    assert_eq!(
        agent.models()["runtimes"]["available"],
        json!(["tract", "onnxruntime"])
    );
    let out = agent.install(
        &op.repo(),
        Some("models/churn/3.0.0-unsupported-op/model.onnx"),
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log_text()
    );
    // tract cannot load the `Det` operator; ONNX Runtime passes the golden vectors and serves.
    let churn = agent.model("churn");
    assert_eq!(churn["serving"], "3.0.0-unsupported-op", "{churn}");
    assert_eq!(churn["runtime"], "onnxruntime", "{churn}");
    let trials = churn["runtime_trials"].as_array().unwrap();
    let tract = trials.iter().find(|t| t["runtime"] == "tract").unwrap();
    assert_eq!(tract["outcome"], "failed", "{churn}");
    assert!(tract["reason"].as_str().unwrap().contains("Det"), "{churn}");
    let ort = trials
        .iter()
        .find(|t| t["runtime"] == "onnxruntime")
        .unwrap();
    assert_eq!(ort["outcome"], "passed", "{churn}");
    assert!(ort["p50_ms"].as_f64().unwrap() > 0.0, "{churn}");
    let (status, body) = post_json(&agent.url("/v1/models/churn:predict"), &churn_row(12.0));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runtime"], "onnxruntime", "{body}");
    assert_eq!(churn["runtime_trials_cached"], false, "{churn}");

    // A restart does not measure again: the choice and its trials come from the store.
    let agent = agent.restart();
    let again = agent.model("churn");
    assert_eq!(again["runtime"], "onnxruntime", "{again}");
    assert_eq!(again["runtime_trials_cached"], true, "{again}");
    assert_eq!(again["runtime_trials"], churn["runtime_trials"], "{again}");
    assert!(
        agent
            .log_text()
            .contains("back-end chosen before; not measured again"),
        "{}",
        agent.log_text()
    );
}

/// A candidate neither back-end serves: the refusal gives both reasons, and the model list keeps
/// the refused candidate with each back-end's trial while the active version serves on.
#[test]
fn a_candidate_no_back_end_passes_is_refused_with_every_back_ends_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let good = op.push("churn/2.0.0");
    let nan = op.push("bad/nan");
    let agent = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        &format!(
            "[probation]\nwindow_seconds = 1\n[inference]\nonnxruntime_library = \"{}\"\n",
            onnxruntime_library().display()
        ),
        &[],
    );
    assert!(agent.install(&op.repo(), Some(&good)).status.success());
    agent.wait_state("churn", &["committed"], Duration::from_secs(20));
    assert!(!agent.install(&op.repo(), Some(&nan)).status.success());
    let churn = agent.model("churn");
    assert_eq!(churn["serving"], "2.0.0", "{churn}");
    let error = churn["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{churn}"));
    assert!(error.contains("tract: golden vectors"), "{error}");
    assert!(error.contains("onnxruntime: golden vectors"), "{error}");
    let refused = &churn["refused"];
    assert_eq!(refused["target"], nan.as_str(), "{churn}");
    let trials = refused["runtime_trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2, "{churn}");
    for trial in trials {
        assert_eq!(trial["outcome"], "failed", "{churn}");
        assert!(trial["reason"].as_str().unwrap().contains("NaN"), "{churn}");
    }
    // A reboot does not forget it; a successful install (2.0.0's file as 3.1.0) does.
    let agent = agent.restart();
    assert_eq!(agent.model("churn")["refused"], *refused);
    let release = copy_release(tmp.path(), "churn/2.0.0", "3.1.0", 5);
    let fixed = op.push(release.to_str().unwrap());
    let out = agent.install(&op.repo(), Some(&fixed));
    assert!(out.status.success(), "{}", agent.log_text());
    assert!(agent.model("churn")["refused"].is_null());
}

/// The local install API as another local process or a web page in the device's browser would
/// try it: no token, a form-style body, an Origin header, a repository outside
/// `api.install_from`. Each is refused and installs nothing; `edge-agent install` still works.
#[test]
fn the_local_install_api_takes_only_the_agents_own_token_json_and_repositories_under_install_from()
{
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let first = op.push("churn/1.0.0");
    op.push("churn/2.0.0");
    let agent = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        "[probation]\nwindow_seconds = 1",
        &[],
    );
    let token_file = tmp.path().join("data/admin.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("repo");
    run_ok(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(op.repo())
            .arg(&copy),
    );
    let body = |repo: &std::path::Path| json!({"repository": repo}).to_string();
    let attempt = |headers: &[(&str, String)], body: String| -> u16 {
        let mut request = http().post(&agent.url("/v1/admin/install"));
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        match request.send(body) {
            Ok(r) => r.status().as_u16(),
            Err(ureq::Error::StatusCode(code)) => code,
            Err(e) => panic!("{e}"),
        }
    };
    let json_ct = ("Content-Type", "application/json".to_string());
    let bearer = ("Authorization", format!("Bearer {}", token.trim()));
    assert_eq!(
        attempt(std::slice::from_ref(&json_ct), body(&op.repo())),
        401
    );
    assert_eq!(
        attempt(
            &[("Content-Type", "text/plain".into()), bearer.clone()],
            body(&op.repo())
        ),
        415
    );
    assert_eq!(
        attempt(
            &[
                json_ct.clone(),
                bearer.clone(),
                ("Origin", "http://evil.example".into())
            ],
            body(&op.repo())
        ),
        403
    );
    assert_eq!(
        attempt(&[json_ct.clone(), bearer.clone()], body(&copy)),
        403
    );
    assert!(
        !agent.models().to_string().contains("churn"),
        "{}",
        agent.models()
    );
    let out = agent.install(&op.repo(), None);
    assert!(out.status.success(), "{}", agent.log_text());
    assert_eq!(agent.model("churn")["active"]["version"], "2.0.0");

    // `edge-agent rollback` goes through the same admin API: nothing to go back to yet, then
    // the version installed before, from the device's own copy.
    let rollback = || {
        std::process::Command::new(binary("edge-agent"))
            .args(["rollback", "--config"])
            .arg(&agent.config)
            .arg("churn")
            .output()
            .unwrap()
    };
    let refused = rollback();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("422") && stderr.contains("no previous version"),
        "{stderr}"
    );
    agent.wait_state("churn", &["committed"], Duration::from_secs(30));
    let out = agent.install(&op.repo(), Some(&first));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_state("churn", &["committed"], Duration::from_secs(30));
    let out = rollback();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("activated"));
    let m = agent.wait_state("churn", &["committed"], Duration::from_secs(30));
    assert_eq!(m["active"]["version"], "2.0.0", "{m}");
    assert_eq!(m["previous"]["version"], "1.0.0", "{m}");
}

/// A stop during probation is not a failure: after a restart the candidate still serves and its
/// probation goes on with the time it had served. A first version whose probation ends in a
/// crash is not left unserved either (there is nothing to go back to); it resumes too.
#[test]
fn a_stop_or_a_crash_during_a_first_versions_probation_keeps_it_serving_and_probation_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let v1 = op.push("churn/1.0.0");
    let data = tmp.path().join("data");
    let extra = "[probation]\nwindow_seconds = 12";
    let mut agent = AgentProcess::start(tmp.path(), &data, &op.trusted_root(), extra, &[]);
    assert!(agent.install(&op.repo(), Some(&v1)).status.success());
    assert_eq!(agent.model("churn")["state"], "probation");
    std::thread::sleep(Duration::from_secs(4));
    let serves = |agent: &AgentProcess| {
        let (status, body) = post_json(&agent.url("/v1/models/churn:predict"), &churn_row(12.0));
        assert_eq!(
            (status, body["version"].as_str()),
            (200, Some("1.0.0")),
            "{body}"
        );
    };

    // A clean stop (SIGTERM), then a start: still serving, still in probation, time kept.
    let signal = |agent: &AgentProcess, name: &str| {
        let pid = agent.child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args([name, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal(&agent, "-TERM");
    assert!(agent.child.wait().unwrap().success());
    let (config, port) = (agent.config.clone(), agent.port);
    agent = AgentProcess::spawn(config.clone(), port, &[]);
    serves(&agent);
    let m = agent.model("churn");
    assert_eq!(m["state"], "probation", "{m}");
    let log = agent.wait_log(
        "probation resumes after the restart",
        Duration::from_secs(30),
    );
    assert!(log.contains("after_crash=false"), "{log}");

    // A crash (SIGKILL): with no previous version, the candidate keeps serving as well.
    std::thread::sleep(Duration::from_secs(1));
    signal(&agent, "-KILL");
    let _ = agent.child.wait();
    agent = AgentProcess::spawn(config, port, &[]);
    serves(&agent);
    agent.wait_log("after_crash=true", Duration::from_secs(30));

    // Probation ends with the time served before the restarts counted: well before a fresh
    // 12 s window would.
    let resumed = std::time::Instant::now();
    let m = agent.wait_state("churn", &["committed"], Duration::from_secs(20));
    assert_eq!(m["active"]["version"], "1.0.0", "{m}");
    assert!(
        resumed.elapsed() < Duration::from_secs(10),
        "committed {:?} after the last start",
        resumed.elapsed()
    );
    serves(&agent);
}
