//! Figures for docs/BENCHMARKS.md: the agent beside a FastAPI + uvicorn + onnxruntime peer serving
//! the same churn model in the same run (start to first prediction, memory idle, under 64
//! connections and after a soak, CPU per prediction, throughput), then the agent's HTTP overhead
//! over raw inference, installs, memory with a vision model, and the inference bound.
//!
//! Load: `wrk -t2 -c64` (Debian's wrk 4.1, scripts/setup.sh), 10 s per figure, on the same 2
//! cores as both servers. The soak lasts `EDGEFLEET_BENCH_SOAK_SECONDS` (default 600).
//!
//! `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench agent`; with
//! `EDGEFLEET_AGENT_BINARY=target/device/edge-agent` it measures the device build instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgefleet_e2e::wrk::{LoadRun, post_load};
use edgefleet_e2e::*;
use edgefleet_inference::Runtime;

const LOAD: Duration = Duration::from_secs(10);
const CONNECTIONS: u32 = 64;

fn quantile(v: &mut [f64], q: f64) -> f64 {
    edgefleet_protocol::health::quantile(v, q).unwrap()
}

/// The figures of the table, for one server.
struct Figures {
    first_prediction: Duration,
    rss_idle_mib: f64,
    load: LoadRun,
    soak: LoadRun,
}

/// Time from starting a server process to its first answered prediction.
fn first_prediction(url: &str, body: &serde_json::Value, started: Instant) -> Duration {
    let client = http();
    loop {
        if let Ok(r) = client.post(url).send_json(body)
            && r.status().as_u16() == 200
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no prediction from {url}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn measure(
    pid: u32,
    url: &str,
    body: &serde_json::Value,
    first: Duration,
    soak: Duration,
) -> Figures {
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle_mib = rss_mib(pid);
    let text = body.to_string();
    let load = post_load(url, &text, CONNECTIONS, LOAD, pid);
    let soak = post_load(url, &text, CONNECTIONS, soak, pid);
    Figures {
        first_prediction: first,
        rss_idle_mib,
        load,
        soak,
    }
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let soak = Duration::from_secs(
        std::env::var("EDGEFLEET_BENCH_SOAK_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let churn = op.push("churn/2.0.0");
    let vision = op.push("vision/1.0.0");
    let agent = AgentProcess::start(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        "[probation]\nwindow_seconds = 1",
        &[],
    );
    let size = std::fs::metadata(binary("edge-agent")).unwrap().len();
    println!(
        "edge-agent binary {}: {:.1} MB ({:.1} MiB)",
        binary("edge-agent").display(),
        size as f64 / 1e6,
        size as f64 / 1048576.0
    );
    let out = agent.install(&op.repo(), Some(&churn));
    assert!(out.status.success());
    agent.wait_state("churn", &["committed"], Duration::from_secs(30));
    let row = churn_row(12.0);
    let path = "/v1/models/churn:predict";

    // The agent with churn in its store, from a cold process start.
    let (config, port) = agent.stop();
    let started = Instant::now();
    let agent = AgentProcess::launch(config, port, &[]);
    let first = first_prediction(&agent.url(path), &row, started);
    let ours = measure(agent.child.id(), &agent.url(path), &row, first, soak);
    let (config, port) = agent.stop();

    let peer_port = free_port();
    let started = Instant::now();
    let peer = Peer(
        Command::new("python3")
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("benches/peer/fastapi_peer.py"),
            )
            .arg(models_dir().join("churn/2.0.0"))
            .arg(peer_port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs the peer (scripts/setup.sh installs FastAPI, uvicorn)"),
    );
    let peer_url = format!("http://127.0.0.1:{peer_port}{path}");
    let first = first_prediction(&peer_url, &row, started);
    let theirs = measure(peer.0.id(), &peer_url, &row, first, soak);
    drop(peer);

    report(&ours, &theirs, soak);

    let agent = AgentProcess::spawn(config, port, &[]);
    let rss_churn = rss_mib(agent.child.id());
    let started = Instant::now();
    let out = agent.install(&op.repo(), Some(&vision));
    assert!(out.status.success());
    let wall = started.elapsed();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |k: &str| {
        report
            .split(&format!("\"{k}\":"))
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "install vision: {:.0} ms from command to serving (verify + stage + load {} ms + health check p50 {} ms / p99 {} ms)",
        wall.as_secs_f64() * 1e3,
        field("load_ms"),
        field("health_p50_ms"),
        field("health_p99_ms")
    );
    agent.wait_state("vision", &["committed"], Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let weights = std::fs::metadata(models_dir().join("vision/1.0.0/model.onnx"))
        .unwrap()
        .len() as f64
        / 1048576.0;
    let rss_both = rss_mib(agent.child.id());
    println!(
        "RSS idle with churn: {rss_churn:.1} MiB; with churn + vision (weights {weights:.1} MiB on disk): {rss_both:.1} MiB, {:.1} MiB beyond vision's weights",
        rss_both - weights
    );

    // Raw inference of one churn row in this process, with the same runtime.
    let (model_bytes, meta) =
        edgefleet_tuf::operator::read_release_dir(&models_dir().join("churn/2.0.0")).unwrap();
    let loaded = edgefleet_inference::tract::TractRuntime
        .load(&model_bytes, &meta.interface)
        .unwrap();
    let mut raw = Vec::new();
    for i in 0..5000 {
        let started = Instant::now();
        let inputs = edgefleet_inference::features_to_input(
            &meta.interface,
            &[row.as_object().unwrap().clone()],
        )
        .unwrap();
        loaded.model.run(&inputs).unwrap();
        if i >= 500 {
            raw.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let client = http();
    let url = agent.url(path);
    let mut e2e = Vec::new();
    for i in 0..5000 {
        let started = Instant::now();
        let mut r = client.post(&url).send_json(&row).unwrap();
        let _ = r.body_mut().read_to_string().unwrap();
        if i >= 500 {
            e2e.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (raw50, raw99) = (quantile(&mut raw, 0.5), quantile(&mut raw, 0.99));
    let (e50, e99) = (quantile(&mut e2e, 0.5), quantile(&mut e2e, 0.99));
    println!("churn :predict, 1 client, keep-alive: p50 {e50:.3} ms, p99 {e99:.3} ms");
    println!("churn raw inference (encode + tract run): p50 {raw50:.3} ms, p99 {raw99:.3} ms");
    println!(
        "HTTP overhead: p50 {:.3} ms, p99 {:.3} ms",
        e50 - raw50,
        e99 - raw99
    );

    // The inference bound: cores (the default) against 64 (every connection's request at once).
    print_load(
        "inference.max_parallel = cores (default)",
        &post_load(&url, &row.to_string(), CONNECTIONS, LOAD, agent.child.id()),
    );
    let (config, port) = agent.stop();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[inference]\nmax_parallel = 64\n");
    std::fs::write(&config, text).unwrap();
    let agent = AgentProcess::spawn(config, port, &[]);
    print_load(
        "inference.max_parallel = 64 (no bound)",
        &post_load(&url, &row.to_string(), CONNECTIONS, LOAD, agent.child.id()),
    );
}

fn print_load(setting: &str, run: &LoadRun) {
    println!(
        "churn :predict, wrk -c{CONNECTIONS}, {setting}: {:.0}/s, {} failed, p50 {:.2} ms, p99 {:.2} ms, CPU {:.1} µs per prediction, RSS {:.1} → peak {:.1} → {:.1} MiB",
        run.requests_per_second,
        run.failed,
        run.p50_ms,
        run.p99_ms,
        run.cpu_per_request.as_secs_f64() * 1e6,
        run.rss_before_mib,
        run.rss_peak_mib,
        run.rss_after_mib
    );
}

fn report(ours: &Figures, theirs: &Figures, soak: Duration) {
    let row = |figure: &str, a: f64, b: f64, unit: &str| {
        println!(
            "| {figure} | {a:.1} {unit} | {b:.1} {unit} | {:.2}× |",
            a / b
        );
    };
    println!("| figure | edge-agent | FastAPI + uvicorn + onnxruntime | agent ÷ peer |");
    println!("|---|---|---|---|");
    row(
        "start → first answered prediction (model on disk)",
        ours.first_prediction.as_secs_f64() * 1e3,
        theirs.first_prediction.as_secs_f64() * 1e3,
        "ms",
    );
    row(
        "RSS idle, churn loaded",
        ours.rss_idle_mib,
        theirs.rss_idle_mib,
        "MiB",
    );
    row(
        "RSS peak under 64 connections (10 s)",
        ours.load.rss_peak_mib,
        theirs.load.rss_peak_mib,
        "MiB",
    );
    row(
        &format!("RSS after {} s more of 64 connections", soak.as_secs()),
        ours.soak.rss_after_mib,
        theirs.soak.rss_after_mib,
        "MiB",
    );
    row(
        &format!("RSS growth over those {} s", soak.as_secs()),
        ours.soak.rss_after_mib - ours.soak.rss_before_mib,
        theirs.soak.rss_after_mib - theirs.soak.rss_before_mib,
        "MiB",
    );
    row(
        "server CPU per prediction at 64 connections",
        ours.load.cpu_per_request.as_secs_f64() * 1e6,
        theirs.load.cpu_per_request.as_secs_f64() * 1e6,
        "µs",
    );
    row(
        "predictions/s at 64 connections",
        ours.load.requests_per_second,
        theirs.load.requests_per_second,
        "",
    );
    row(
        "p99 latency at 64 connections",
        ours.load.p99_ms,
        theirs.load.p99_ms,
        "ms",
    );
    println!(
        "(failed requests: agent {} + {}, peer {} + {})",
        ours.load.failed, ours.soak.failed, theirs.load.failed, theirs.soak.failed
    );
}
