//! Figures for docs/BENCHMARKS.md: the agent's HTTP overhead over raw inference, throughput at 64
//! concurrent clients, memory, binary size, and time from a candidate's arrival to serving it.
//!
//! Uses the release binaries: `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench agent`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgefleet_e2e::*;
use edgefleet_inference::Runtime;

fn quantile(v: &mut [f64], q: f64) -> f64 {
    edgefleet_protocol::health::quantile(v, q).unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn main() {
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
        "edge-agent release binary (stripped): {:.1} MB",
        size as f64 / 1e6
    );
    std::thread::sleep(Duration::from_millis(500));
    let rss_empty = rss_kib(agent.child.id());

    for (name, target) in [("churn", &churn), ("vision", &vision)] {
        let started = Instant::now();
        let out = agent.install(&op.repo(), Some(target));
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
            "install {name}: {:.0} ms from command to serving (verify + stage + load {} ms + health check p50 {} ms / p99 {} ms)",
            wall.as_secs_f64() * 1e3,
            field("load_ms"),
            field("health_p50_ms"),
            field("health_p99_ms")
        );
        agent.wait_state(name, &["committed"], Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_loaded = rss_kib(agent.child.id());
    let weights = std::fs::metadata(models_dir().join("vision/1.0.0/model.onnx"))
        .unwrap()
        .len()
        + std::fs::metadata(models_dir().join("churn/2.0.0/model.onnx"))
            .unwrap()
            .len();
    println!(
        "RSS idle: {:.1} MB with no model, {:.1} MB with churn + vision loaded (weights {:.1} MB on disk) -> {:.1} MB beyond the weights",
        rss_empty as f64 / 1024.0,
        rss_loaded as f64 / 1024.0,
        weights as f64 / 1e6,
        (rss_loaded as f64 * 1024.0 - weights as f64) / 1e6
    );

    // Raw inference of one churn row in this process, with the same runtime.
    let (model_bytes, meta) =
        edgefleet_tuf::operator::read_release_dir(&models_dir().join("churn/2.0.0")).unwrap();
    let loaded = edgefleet_inference::tract::TractRuntime
        .load(&model_bytes, &meta.interface)
        .unwrap();
    let row = churn_row(12.0);
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
    let url = agent.url("/v1/models/churn:predict");
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

    // Throughput and memory: 64 clients for 10 s, with inferences bounded by the cores (the
    // default), then with the bound lifted to 64 (what the agent did before the bound), same run.
    concurrent_load(
        &agent,
        &url,
        &row,
        "inference.max_parallel = cores (default)",
    );
    let (config, port) = agent.stop();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[inference]\nmax_parallel = 64\n");
    std::fs::write(&config, text).unwrap();
    let agent = AgentProcess::spawn(config, port, &[]);
    for _ in 0..100 {
        client.post(&url).send_json(&row).unwrap();
    }
    concurrent_load(&agent, &url, &row, "inference.max_parallel = 64 (no bound)");
}

fn concurrent_load(agent: &AgentProcess, url: &str, row: &serde_json::Value, setting: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (stop, done, failed, url, row) = (
                stop.clone(),
                done.clone(),
                failed.clone(),
                url.to_owned(),
                row.clone(),
            );
            std::thread::spawn(move || {
                let client = http();
                while !stop.load(Ordering::Relaxed) {
                    match client.post(&url).send_json(&row) {
                        Ok(mut r) if r.status().as_u16() == 200 => {
                            let _ = r.body_mut().read_to_string();
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let pid = agent.child.id();
    let rss_before = rss_kib(pid);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut rss_peak = rss_before;
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        rss_peak = rss_peak.max(rss_kib(pid));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let predictions = done.load(Ordering::Relaxed);
    println!(
        "churn :predict, 64 concurrent clients, {setting} (same 2-core machine as the load generator): {:.0} predictions/s, {} failed",
        predictions as f64 / secs,
        failed.load(Ordering::Relaxed)
    );
    println!(
        "  agent CPU per prediction: {:.1} µs (user + system, /proc/PID/stat, over the 10 s)",
        cpu / predictions.max(1) as f64 * 1e6
    );
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "  agent RSS: {:.1} MiB before, peak {:.1} MiB during (sampled every 100 ms), {:.1} MiB 1 s after",
        rss_before as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        rss_kib(pid) as f64 / 1024.0
    );
}
