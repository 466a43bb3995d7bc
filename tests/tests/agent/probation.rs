//! Probation and local roll-back in-process with paused time: the agent's real install pipeline,
//! store and models, and the probation watch stepped through a ten-minute window in
//! milliseconds. The process tests around it keep proving the wiring (HTTP, signals, restarts).

use std::sync::Arc;
use std::time::Duration;

use edge_agent::agent::{Agent, InstallReport};
use edgefleet_e2e::{Operator, churn_row};
use edgefleet_protocol::message::{ReportedModel, UpdateState};
use serde_json::Value;

const WINDOW_SECONDS: u64 = 600;

fn churn(agent: &Agent) -> ReportedModel {
    agent
        .reported_models()
        .unwrap()
        .into_iter()
        .find(|m| m.model.as_str() == "churn")
        .expect("churn is installed")
}

fn active_version(agent: &Agent) -> String {
    churn(agent)
        .active
        .map(|a| a.version.to_string())
        .unwrap_or_default()
}

/// Sends `count` churn predictions to what serves now, as the local API would.
fn traffic(agent: &Agent, count: usize) {
    let slot = agent.serving.get("churn").expect("churn serves");
    for i in 0..count {
        // Long-tenure customers hit the NaN path of `bad/nan-on-live`.
        let tenure = if i % 2 == 0 { 100.0 } else { 10.0 };
        let Value::Object(row) = churn_row(tenure) else {
            unreachable!()
        };
        let inputs = edgefleet_inference::features_to_input(&slot.meta.interface, &[row]).unwrap();
        let _ = slot.infer(&inputs);
    }
}

/// Steps paused time a second at a time until churn's update reaches `state`; returns the
/// seconds that took.
async fn seconds_until(agent: &Agent, state: UpdateState, at_most: u64) -> u64 {
    for second in 0..=at_most {
        if churn(agent).state == state {
            return second;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("churn never reached {state:?}: {:?}", churn(agent));
}

/// Installs `target` from the repository; time is paused before and after.
async fn install(agent: &Arc<Agent>, repo: &std::path::Path, target: &str) {
    // Real time for the install itself: its load and health check run in the blocking pool,
    // and paused time would race their timeouts ahead while they work.
    tokio::time::resume();
    let reports = agent
        .install_from_repository(repo, &[target.to_owned()])
        .await
        .unwrap();
    assert!(
        matches!(reports.as_slice(), [InstallReport::Activated { .. }]),
        "{reports:?}"
    );
    tokio::time::pause();
}

/// An agent on `runtime` with its data in `dir`, trusting `op`'s root, with a
/// [`WINDOW_SECONDS`] probation; time is paused once it has loaded what it stored.
fn agent_in(runtime: &tokio::runtime::Runtime, dir: &std::path::Path, op: &Operator) -> Arc<Agent> {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"dev-1\"\ndata_dir = \"{}\"\ntrusted_root_path = \"{}\"\n{}",
            dir.join("data").display(),
            op.trusted_root().display(),
            // The tests' wider health-check budget: churn's 2 ms p99 budget, judged on two cores
            // shared with other test binaries, failed here once (2.13 ms over 100 runs).
            edgefleet_e2e::with_test_latency_budget(&format!(
                "[probation]\nwindow_seconds = {WINDOW_SECONDS}\nmin_requests = 10\nmax_error_ratio = 0.05\n"
            ))
        ),
    )
    .unwrap();
    runtime.block_on(async {
        let config = edge_agent::config::Config::load(&config).unwrap();
        let engine = edgefleet_inference::select::Engine::new(
            vec![Arc::new(edgefleet_inference::tract::TractRuntime)],
            vec![],
            config.inference.runtime,
        );
        let agent = Agent::open(config, Arc::new(engine)).await.unwrap();
        agent.load_models().await;
        tokio::time::pause();
        agent
    })
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `edge-agent rollback`: the previous version comes back from the device's own copy with the
/// repository gone, through health check and probation, and can itself be rolled back.
#[test]
fn a_roll_back_serves_the_previous_version_from_disk_without_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let first = op.push("churn/1.0.0");
    let second = op.push("churn/2.0.0");
    let runtime = paused_runtime();
    let agent = agent_in(&runtime, tmp.path(), &op);
    runtime.block_on(async {
        let nothing = agent.roll_back("churn").await.unwrap_err();
        assert!(
            nothing.to_string().contains("no previous version"),
            "{nothing}"
        );
        for target in [&first, &second] {
            install(&agent, &op.repo(), target).await;
            seconds_until(&agent, UpdateState::Committed, WINDOW_SECONDS + 30).await;
        }
        assert_eq!(active_version(&agent), "2.0.0");
        // Off the network: the repository the versions came from is gone.
        std::fs::remove_dir_all(op.repo()).unwrap();
        tokio::time::resume();
        let report = agent.roll_back("churn").await.unwrap();
        tokio::time::pause();
        assert!(
            matches!(&report, InstallReport::Activated { target, .. } if *target == first),
            "{report:?}"
        );
        let model = churn(&agent);
        assert_eq!(model.state, UpdateState::Probation);
        assert_eq!(active_version(&agent), "1.0.0");
        assert_eq!(
            model.previous.map(|p| p.version.to_string()).as_deref(),
            Some("2.0.0")
        );
        assert_eq!(
            agent.serving.get("churn").unwrap().meta.version.to_string(),
            "1.0.0"
        );
        seconds_until(&agent, UpdateState::Committed, WINDOW_SECONDS + 30).await;
        // And back again.
        tokio::time::resume();
        agent.roll_back("churn").await.unwrap();
        tokio::time::pause();
        assert_eq!(active_version(&agent), "2.0.0");
        assert_eq!(agent.stop(Duration::from_secs(5)).await, 0);
    });
}

#[test]
fn probation_commits_a_quiet_candidate_at_the_end_of_its_window_and_rolls_a_failing_one_back_at_once()
 {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let good = op.push("churn/2.0.0");
    let bad = op.push("bad/nan-on-live");
    let runtime = paused_runtime();
    let agent = agent_in(&runtime, tmp.path(), &op);
    runtime.block_on(async {
        // A first version under light, healthy traffic: it serves at once, and commits only
        // when the whole window has passed.
        install(&agent, &op.repo(), &good).await;
        assert_eq!(churn(&agent).state, UpdateState::Probation);
        traffic(&agent, 4);
        tokio::time::sleep(Duration::from_secs(WINDOW_SECONDS - 10)).await;
        assert_eq!(
            churn(&agent).state,
            UpdateState::Probation,
            "committed before its window ended"
        );
        let more = seconds_until(&agent, UpdateState::Committed, 30).await;
        assert!(
            (9..=15).contains(&more),
            "committed {more} s after {} s of a {WINDOW_SECONDS} s window",
            WINDOW_SECONDS - 10
        );
        assert_eq!(active_version(&agent), "2.0.0");

        // A candidate that passes its health check but fails under live traffic: rolled back
        // as soon as enough requests have failed, long before its window ends.
        install(&agent, &op.repo(), &bad).await;
        assert_eq!(churn(&agent).state, UpdateState::Probation);
        traffic(&agent, 40);
        let took = seconds_until(&agent, UpdateState::RolledBack, WINDOW_SECONDS).await;
        assert!(took <= 2, "the breach took {took} s to act on");
        let model = churn(&agent);
        assert_eq!(active_version(&agent), "2.0.0", "{model:?}");
        assert!(
            model.last_error.as_deref().is_some_and(
                |e| e.contains("probation failed") && e.contains("live inferences failed")
            ),
            "{model:?}"
        );
        let serving = agent.serving.get("churn").unwrap();
        assert_eq!(serving.meta.version.to_string(), "2.0.0");
        assert_eq!(agent.stop(Duration::from_secs(5)).await, 0);
    });
}
