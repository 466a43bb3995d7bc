//! Figures for docs/BENCHMARKS.md: an agent with both back-ends (`auto`) and six models restarts
//! (SIGTERM, start again) with the runtime-trial cache cold (emptied while stopped: every
//! back-end measured with each model's health check, as before the cache) and warm. Two times
//! from the spawn: to the first liveness answer (the API opens before models load) and to
//! `/v2/health/ready` listing no model as loading, polled every 2 ms.
//!
//! Uses the release binaries: `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench restart`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::Command;
use std::time::{Duration, Instant};

use edgefleet_e2e::*;

const RELEASES: [&str; 6] = [
    "churn/2.0.0",
    "iris/1.0.0",
    "vision/1.0.0",
    "iris-sklearn/1.0.0",
    "text-encoder/1.0.0",
    "detector/1.0.0",
];

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    for release in RELEASES {
        op.push(release);
    }
    let data = tmp.path().join("data");
    let mut agent = AgentProcess::start(
        tmp.path(),
        &data,
        &op.trusted_root(),
        &format!(
            "[probation]\nwindow_seconds = 1\n[inference]\nonnxruntime_library = \"{}\"\n",
            onnxruntime_library().display()
        ),
        &[],
    );
    assert!(
        agent.install(&op.repo(), None).status.success(),
        "{}",
        agent.log_text()
    );
    for release in RELEASES {
        let model = release.split('/').next().unwrap();
        agent.wait_state(model, &["committed"], Duration::from_secs(60));
    }
    println!(
        "restart with {} models, tract + onnxruntime (auto), release build:",
        RELEASES.len()
    );
    for (round, cold) in [(1, true), (2, false), (3, true), (4, false), (5, false)] {
        let pid = agent.child.id().to_string();
        run_ok(Command::new("kill").args(["-TERM", &pid]));
        let _ = agent.child.wait();
        if cold {
            let db = rusqlite::Connection::open(data.join("agent.db")).unwrap();
            db.execute("DELETE FROM runtime_choice", []).unwrap();
        }
        let (config, port) = (agent.config.clone(), agent.port);
        drop(agent);
        let started = Instant::now();
        agent = AgentProcess::launch(config, port, &[]);
        let live = poll(started, || {
            http()
                .get(&agent.url("/v2/health/live"))
                .call()
                .is_ok_and(|r| r.status() == 200)
        });
        let loaded = poll(started, || {
            agent.readiness().1["loading"]
                .as_array()
                .is_some_and(|l| l.is_empty())
        });
        let models = agent.models();
        let served = models["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| !m["serving"].is_null())
            .count();
        assert_eq!(served, RELEASES.len(), "{models}");
        println!(
            "  round {round}, trial cache {}: live after {:.0} ms, all models ready after {:.0} ms",
            if cold { "cold" } else { "warm" },
            live.as_secs_f64() * 1e3,
            loaded.as_secs_f64() * 1e3
        );
    }
}

/// Time from `started` until `done` holds, checked every 2 ms (at most 60 s).
fn poll(started: Instant, mut done: impl FnMut() -> bool) -> Duration {
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed()
}
