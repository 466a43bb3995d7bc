//! `edge-agent`'s API where it meets the device's limits: starting up with models stored (the API
//! answers at once and each model is ready as soon as it loads) and request bodies sized by each
//! model's signed interface. Real processes, real models, a real TUF repository made by
//! `fleetctl`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use edgefleet_e2e::fleet::eventually;
use edgefleet_e2e::*;
use serde_json::Value;

fn status_and_body(url: &str) -> (u16, Value) {
    let mut response = http().get(url).call().unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_json().unwrap_or(Value::Null),
    )
}

/// A model whose stored file cannot be read yet (a FIFO with no writer stands in for a stalled
/// disk, so the test decides when the read ends) keeps neither liveness nor the other models
/// waiting: they serve, the server says it is not ready and names what is still loading, and
/// requests to the loading model get a 503 that says so.
#[test]
fn after_a_restart_liveness_answers_at_once_and_each_model_is_ready_as_it_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    for release in ["churn/2.0.0", "iris/1.0.0", "text-encoder/1.0.0"] {
        op.push(release);
    }
    let agent = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        "[probation]\nwindow_seconds = 1\nmin_requests = 0\n",
        &[],
    );
    let out = agent.install(&op.repo(), None);
    assert!(out.status.success(), "{}", agent.log_text());
    for model in ["churn", "iris", "text-encoder"] {
        agent.wait_state(model, &["committed"], Duration::from_secs(30));
    }
    let sha = agent.model("text-encoder")["active"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let (config, port) = agent.stop();

    let stored = tmp
        .path()
        .join("data/store/models/text-encoder")
        .join(&sha)
        .join("model.onnx");
    std::fs::remove_file(&stored).unwrap();
    run_ok(Command::new("mkfifo").arg(&stored));

    let agent = AgentProcess::launch(config, port, &[]);
    // The models before it in the loading order serve while it waits for its disk.
    eventually("churn and iris serving", Duration::from_secs(30), || {
        let ready = |m: &str| status_and_body(&agent.url(&format!("/v2/models/{m}/ready"))).0;
        (ready("churn") == 200 && ready("iris") == 200).then_some(())
    });
    let (status, body) = post_json(&agent.url("/v1/models/churn:predict"), &churn_row(12.0));
    assert_eq!(status, 200, "{body}");
    let (status, body) = agent.readiness();
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["loading"],
        serde_json::json!(["text-encoder"]),
        "{body}"
    );
    let (status, body) = status_and_body(&agent.url("/v2/models/text-encoder/ready"));
    assert_eq!(
        (status, &body["loading"]),
        (503, &Value::Bool(true)),
        "{body}"
    );
    assert_eq!(agent.model("text-encoder")["loading"], true);
    let (status, body) = post_json(
        &agent.url("/v2/models/text-encoder/infer"),
        &serde_json::json!({"inputs": []}),
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("still loading"),
        "{body}"
    );
    assert_eq!(
        status_and_body(&agent.url("/v2/health/live")).0,
        200,
        "live while a model loads"
    );

    // The disk fails the read: the model is not served (it has no previous version to fall back
    // to) and start-up is done.
    drop(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&stored)
            .unwrap(),
    );
    agent.wait_loaded(Duration::from_secs(30));
    let (status, body) = agent.readiness();
    assert_eq!(status, 200, "{body}");
    let (status, body) = status_and_body(&agent.url("/v2/models/text-encoder/ready"));
    assert_eq!(status, 404, "{body}");
    assert!(
        agent
            .log_text()
            .contains("model not served: neither its active nor its previous version loads"),
        "{}",
        agent.log_text()
    );
}

/// A stop while models are still loading is a stop, not a crash: a probation waiting to resume
/// behind a model that reads slowly resumes at the next start instead of being rolled back.
#[test]
fn a_stop_while_models_load_keeps_a_waiting_probation_for_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    for release in ["churn/2.0.0", "iris/1.0.0"] {
        op.push(release);
    }
    // iris 1.1.0: the same model file, new metadata (a new version that needs no download).
    let release = copy_release(tmp.path(), "iris/1.0.0", "1.1.0", 2);
    let iris_1_1 = op.push(release.to_str().unwrap());
    let config_with =
        |window: u32| format!("[probation]\nwindow_seconds = {window}\nmin_requests = 0\n");
    let agent = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        &config_with(1),
        &[],
    );
    for target in [
        "models/churn/2.0.0/model.onnx",
        "models/iris/1.0.0/model.onnx",
    ] {
        assert!(agent.install(&op.repo(), Some(target)).status.success());
    }
    for model in ["churn", "iris"] {
        agent.wait_state(model, &["committed"], Duration::from_secs(30));
    }
    let churn_sha = agent.model("churn")["active"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let (config, port) = agent.stop();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("window_seconds = 1", "window_seconds = 600"),
    )
    .unwrap();
    let agent = AgentProcess::spawn(config, port, &[]);
    assert!(agent.install(&op.repo(), Some(&iris_1_1)).status.success());
    assert_eq!(agent.model("iris")["state"], "probation");
    let (config, port) = agent.stop();

    // churn loads first and its disk stalls; iris's probation waits behind it. Stop then.
    let stored = tmp
        .path()
        .join("data/store/models/churn")
        .join(&churn_sha)
        .join("model.onnx");
    std::fs::remove_file(&stored).unwrap();
    run_ok(Command::new("mkfifo").arg(&stored));
    let agent = AgentProcess::launch(config, port, &[]);
    assert_eq!(
        agent.readiness().1["loading"],
        serde_json::json!(["churn", "iris"])
    );
    let (config, port) = agent.stop();

    // The disk is back: iris 1.1.0 is still the active version, in probation, resumed.
    std::fs::remove_file(&stored).unwrap();
    std::fs::copy(models_dir().join("churn/2.0.0/model.onnx"), &stored).unwrap();
    let agent = AgentProcess::spawn(config, port, &[]);
    let iris = agent.model("iris");
    assert_eq!(iris["active"]["version"], "1.1.0", "{iris}");
    assert_eq!(iris["state"], "probation", "{iris}");
    assert_eq!(iris["serving"], "1.1.0", "{iris}");
    agent.wait_log(
        "probation resumes after the restart",
        Duration::from_secs(30),
    );
    assert_eq!(agent.model("churn")["serving"], "2.0.0");
}

/// An image model signs the request size it needs (`max_request_bytes`): its endpoint takes
/// bodies up to that, over the device's small default, and refuses larger ones naming the signed
/// limit; a model that signs none keeps the default, and the 413 names the config key.
#[test]
fn each_models_request_limit_comes_from_its_signed_interface_and_413s_name_it() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    op.push("churn/2.0.0");
    let release = copy_release(tmp.path(), "detector/1.0.0", "1.0.0", 1);
    let mut interface: Value =
        serde_json::from_slice(&std::fs::read(release.join("interface.json")).unwrap()).unwrap();
    interface["max_request_bytes"] = 65536.into();
    std::fs::write(release.join("interface.json"), interface.to_string()).unwrap();
    op.push(release.to_str().unwrap());

    let agent = AgentProcess::start_with_api(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        "[limits]\nlatency_budget_factor = 50.0\n",
        "max_body_bytes = 4096",
        &[],
    );
    let out = agent.install(&op.repo(), None);
    assert!(out.status.success(), "{}", agent.log_text());

    let image = |side: usize| {
        serde_json::json!({"inputs": [{
            "name": "images", "datatype": "FP32", "shape": [1, 3, side, side],
            "data": vec![0.25; 3 * side * side],
        }]})
    };
    let infer = agent.url("/v2/models/detector/infer");
    // 32x32 as JSON is about 16 KB: over the device's 4,096-byte default, within the signed 64 KiB.
    let (status, body) = post_json(&infer, &image(32));
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_json(&infer, &image(96));
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["field"], "body");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("max_request_bytes = 65536 (model \"detector\" 1.0.0's signed interface)"),
        "{body}"
    );
    let rows: Vec<f64> = vec![0.5; 17 * 64];
    let (status, body) = post_json(
        &agent.url("/v2/models/churn/infer"),
        &serde_json::json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [64, 17], "data": rows}]}),
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("api.max_body_bytes = 4096 (the agent's config"),
        "{body}"
    );
    // `:predict` reads its body under the same limit and says so the same way.
    let mut row = churn_row(12.0);
    row["note"] = "x".repeat(5000).into();
    let (status, body) = post_json(&agent.url("/v1/models/churn:predict"), &row);
    assert_eq!((status, &body["field"]), (413, &"body".into()), "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("api.max_body_bytes = 4096"),
        "{body}"
    );
}

/// Sends `per_client` requests from each of `clients` threads at once; every one must succeed.
fn hammer(clients: usize, per_client: usize, send: impl Fn() -> u16 + Send + Sync + 'static) {
    let send = std::sync::Arc::new(send);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let send = send.clone();
            std::thread::spawn(move || {
                for _ in 0..per_client {
                    assert_eq!(send(), 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// The process's anonymous resident memory (`RssAnon`), in MiB: its heap, stacks and buffers.
/// Its file pages (the binary, mapped in as the kernel faults around what runs, more when the file
/// was just built and sits in the page cache) are left out: they are what made `VmRSS` swing
/// between runs, and not what a leak or a growing pool adds.
fn anon_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Samples the process's anonymous memory every 50 ms while `work` runs; the peak, in MiB.
fn peak_rss_during(pid: u32, work: impl FnOnce()) -> f64 {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = anon_mib(pid);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(anon_mib(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak.max(anon_mib(pid))
        })
    };
    work();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap()
}

/// The agent's memory is bounded under concurrency (docs/AGENT.md, "Memory"): 64 clients at once
/// queue for `inference.max_parallel` run states instead of each growing one, so sustained tabular
/// traffic leaves nothing behind and a vision model's scratch is allocated a bounded number of
/// times. Each phase is judged against the memory just before it: the allocator keeps what a
/// vision burst freed, so a tabular bound measured from before the images would judge the images
/// (a CI run failed that way: 137 MiB kept after the images, 138 MiB peak under tabular load).
/// The agent runs with glibc's arenas capped as `systemd/edge-agent.service` caps them. The limits
/// are generous (a debug build, two cores shared with the clients): they catch a pool that grows
/// with the clients or a leak per request, not noise.
#[test]
fn memory_stays_bounded_under_64_concurrent_clients_and_does_not_grow_with_traffic() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    op.push("churn/2.0.0");
    op.push("vision/1.0.0");
    let agent = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        "[probation]\nwindow_seconds = 1\nmin_requests = 0\n",
        &[("MALLOC_ARENA_MAX", "2")],
    );
    let out = agent.install(&op.repo(), None);
    assert!(out.status.success(), "{}", agent.log_text());
    for model in ["churn", "vision"] {
        agent.wait_state(model, &["committed"], Duration::from_secs(60));
    }
    let pid = agent.child.id();
    let churn_url = agent.url("/v1/models/churn:predict");
    let churn = move || {
        http()
            .post(&churn_url)
            .send_json(churn_row(12.0))
            .unwrap()
            .status()
            .as_u16()
    };
    // Warm: the connection handling and the first run states exist before the baseline.
    hammer(64, 5, churn.clone());
    std::thread::sleep(Duration::from_millis(500));
    let idle = anon_mib(pid);

    let churn_peak = peak_rss_during(pid, || hammer(64, 100, churn.clone()));
    std::thread::sleep(Duration::from_millis(500));
    let after_first = anon_mib(pid);
    hammer(64, 100, churn);
    std::thread::sleep(Duration::from_millis(500));
    let after_second = anon_mib(pid);
    eprintln!(
        "anonymous memory {idle:.1} MiB idle, peak {churn_peak:.1} MiB with 64 tabular clients; \
         {after_first:.1} then {after_second:.1} MiB after"
    );
    assert!(
        churn_peak - idle < 96.0,
        "tabular load took the agent from {idle:.1} to {churn_peak:.1} MiB"
    );
    assert!(
        after_second - after_first < 8.0,
        "6,400 more requests left {:.1} MiB behind ({after_first:.1} -> {after_second:.1} MiB)",
        after_second - after_first
    );

    let image = edgefleet_protocol::Tensor::f32(
        vec![1, 3, 224, 224],
        (0..3 * 224 * 224)
            .map(|i| (i % 255) as f32 / 255.0)
            .collect(),
    )
    .unwrap();
    let vision_url = agent.url("/v2/models/vision/infer");
    let vision_peak = peak_rss_during(pid, || {
        hammer(64, 2, move || {
            post_infer_binary(&vision_url, &[("data_0", &image)]).0
        })
    });
    let vision_after = anon_mib(pid);
    eprintln!(
        "anonymous memory {after_second:.1} MiB before, {vision_peak:.1} MiB peak with 64 vision \
         clients, {vision_after:.1} after"
    );
    // Measured 48-64 MiB of growth with the arenas capped (73-98 MiB uncapped, 128 once in CI) on
    // a debug build; run states or bodies growing with the clients would take ~800 MiB (64 x a
    // 12 MB SqueezeNet scratch).
    assert!(
        vision_peak - after_second < 128.0,
        "64 clients of a vision model took the agent from {after_second:.1} to {vision_peak:.1} \
         MiB: run states or buffers grow with the clients"
    );
}
