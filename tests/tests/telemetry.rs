//! Telemetry end to end over real processes: agents serving traffic send metrics batches through
//! a real broker to the fleet server, which stores them once, in order, and judges rollouts by
//! them (model-aware gates); and the dashboard that shows it all, in a real browser: headless
//! Chromium (Debian's `chromium` and `chromium-driver`, which `scripts/setup.sh` installs) driven
//! over WebDriver against a live server whose agents run a rollout. Screenshots land in
//! `target/test-artifacts/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use edgefleet_e2e::demo::{self, Demo, DemoOptions, Load};
use edgefleet_e2e::fleet::eventually;
use edgefleet_e2e::{baseline_rows, http, post_json};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use edgefleet_e2e::one_fleet_at_a_time as one_at_a_time;

// The shipped alert rules and Grafana dashboard against a real Prometheus and Alertmanager.
#[path = "telemetry/alerts.rs"]
mod alerts;
// The guard after commit: device roll-back, the server's alert and fleet action, the webhook.
#[path = "telemetry/guard.rs"]
mod guard;
// Shadow rollouts: a challenger proven on live traffic before it answers.
#[path = "telemetry/shadow.rs"]
mod shadow;

// Split rollouts: a challenger answering a share of requests, judged arm against arm.
#[path = "telemetry/split.rs"]
mod split;

// Headless Chromium through chromedriver (the fleet bench opens the dashboard with it too).
#[path = "telemetry/browser.rs"]
mod browser;
use browser::{browser, sign_in};

/// Telemetry windows of 3 s (60 s by default): short enough for a test, long enough that a
/// window's ~150 requests give a PSI whose small-sample bias (about bins / requests) stays well
/// under the gates' 0.3.
fn options(agents: usize, mosquitto: bool) -> DemoOptions {
    DemoOptions {
        agents,
        mosquitto,
        tls: false,
        verbose: false,
        tiny_artifact_limit: Vec::new(),
        latency_budget_factor: 20.0,
        database_url: None,
        server_toml: String::new(),
        agent_fleet_toml: "telemetry_seconds = 3".into(),
    }
}

fn predict_urls(demo: &Demo) -> Vec<String> {
    demo.agents
        .iter()
        .map(|a| a.url("/v1/models/churn:predict"))
        .collect()
}

/// Starts a rollout with model gates and waits for it to end; returns it as the API shows it.
fn gated_rollout(demo: &Demo, version: &str, waves: &[f64], gates: Value) -> Value {
    let id = demo.create_rollout(&json!({
        "model": "churn", "version": version, "group": "demo", "waves": waves,
        "bake_seconds": 4, "device_timeout_seconds": 120, "model_gates": gates,
    }));
    demo.ended_rollout(&id, Duration::from_secs(240))
}

fn rollout_telemetry(demo: &Demo, id: &str) -> Value {
    let (status, t) = demo.server.call(
        "GET",
        &format!("/api/v1/rollouts/{id}/telemetry"),
        Some(&demo.operator.token()),
        None,
    );
    assert_eq!(status, 200, "{t}");
    t
}

/// The latency gate allows 10x: on 2 busy cores a like-for-like version has measured 4x slower
/// than its predecessor, and the slow candidate is some 20x slower.
const GATES: &str = r#"{"min_requests": 300, "max_p99_slowdown_percent": 900,
    "max_error_rate_increase": 0.01, "max_input_drift_psi": 0.3}"#;

#[test]
fn model_gates_pass_a_like_for_like_version_and_halt_a_slower_one_before_its_next_wave() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let fleet = demo::set_up(tmp.path(), &options(4, false));
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    let load = Load::with_rows(
        predict_urls(&fleet),
        baseline_rows("churn/2.0.0", 2000, 1, &[]),
    );
    let gates: Value = serde_json::from_str(GATES).unwrap();

    // Control: 2.0.0 serves like 1.0.0, on traffic like its training data; every gate passes.
    let v2 = gated_rollout(&fleet, "2.0.0", &[25.0, 100.0], gates.clone());
    let t2 = rollout_telemetry(&fleet, v2["id"].as_str().unwrap());
    assert_eq!(v2["state"]["state"], "completed", "{v2:#}\n{t2:#}");
    assert!(v2["model_check"]["passed"] == true, "{v2:#}");
    let drift = t2["candidate"]["drift_psi"].as_object().unwrap();
    assert!(
        drift.len() == 9 && drift.values().all(|v| v.as_f64().unwrap() < 0.3),
        "{t2:#}"
    );

    // A version that passes its health check on the device but is several times slower live.
    // 2.1.0 after the demo's 3.0.0-nan: a deliberate, signed downgrade of the version number.
    fleet
        .operator
        .push_with("bad/slower-live", &["--allow-downgrade"]);
    let slow = gated_rollout(&fleet, "2.1.0-slower", &[25.0, 100.0], gates);
    let id = slow["id"].as_str().unwrap();
    let t = rollout_telemetry(&fleet, id);
    let (_, failed) = load.stop();
    assert_eq!(failed, 0, "no prediction failed meanwhile");
    assert_eq!(slow["state"]["state"], "halted", "{slow:#}\n{t:#}");
    let reason = slow["state"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("wave 1 breached its model gate: p99 latency"),
        "{reason}"
    );
    let (new_p99, old_p99) = (
        t["candidate"]["latency_ms"]["p99_ms"].as_f64().unwrap(),
        t["previous"]["latency_ms"]["p99_ms"].as_f64().unwrap(),
    );
    assert!(new_p99 > 10.0 * old_p99, "{t:#}");
    // The canary passed its health check (it was healthy), then was rolled back; the second
    // wave was never asked to update.
    let devices = slow["devices"].as_array().unwrap();
    let canary: Vec<&Value> = devices.iter().filter(|d| d["wave"] == 0).collect();
    assert_eq!(canary.len(), 1);
    assert_eq!(canary[0]["state"], "rolled_back");
    assert!(
        devices
            .iter()
            .filter(|d| d["wave"] == 1)
            .all(|d| d["state"] == "pending" && d["notified_at"].is_null()),
        "{slow:#}"
    );
    let history = slow["history"].to_string();
    assert!(
        history.contains("Healthy"),
        "the canary installed it healthy first: {history}"
    );
    eventually(
        "every device back on 2.0.0",
        Duration::from_secs(60),
        || {
            demo::running(&fleet)
                .iter()
                .all(|r| r.ends_with(" 2.0.0"))
                .then_some(())
        },
    );
    eprintln!(
        "latency gate: candidate p99 {new_p99:.2} ms vs previous {old_p99:.2} ms; control drift {drift:?}"
    );
}

#[test]
fn shifted_inputs_raise_the_drift_figure_and_the_drift_gate_halts_the_rollout() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let fleet = demo::set_up(tmp.path(), &options(3, false));
    // Nothing runs churn yet: a gate that compares with a previous version is refused up front.
    let (status, refused) = fleet.server.call(
        "POST",
        "/api/v1/rollouts",
        Some(&fleet.operator.token()),
        Some(
            &json!({"model": "churn", "version": "1.0.0", "group": "demo",
                     "model_gates": {"max_p99_slowdown_percent": 50}}),
        ),
    );
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["field"], "model_gates", "{refused}");
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    // Customers now pay three times as much a month; everything else is as in training.
    let load = Load::with_rows(
        predict_urls(&fleet),
        baseline_rows("churn/2.0.0", 2000, 2, &[("monthly_charges", 3.0)]),
    );
    // This one through the operator's CLI.
    let out = edgefleet_e2e::run_ok(fleet.operator.fleetctl().args([
        "rollout",
        "create",
        "churn",
        "2.0.0",
        "--group",
        "demo",
        "--waves",
        "34,100",
        "--bake-seconds",
        "4",
        "--gate-input-drift-psi",
        "0.3",
        "--gate-min-requests",
        "100",
        "--json",
    ]));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        created["gates"]["model"]["max_input_drift_psi"], 0.3,
        "{created:#}"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let admin = fleet.operator.token();
    let r = eventually("the drift gate to act", Duration::from_secs(240), || {
        let (_, r) =
            fleet
                .server
                .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None);
        matches!(r["state"]["state"].as_str(), Some("completed" | "halted")).then_some(r)
    });
    let status = edgefleet_e2e::run_ok(fleet.operator.fleetctl().args(["rollout", "status", &id]));
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("model gates (wave 1): not passed — input drift"),
        "{status}"
    );
    let (_, failed) = load.stop();
    assert_eq!(failed, 0);
    assert_eq!(r["state"]["state"], "halted", "{r:#}");
    let reason = r["state"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("model gate: input drift: feature monthly_charges has PSI"),
        "{reason}"
    );
    // The agent's own /metrics shows it, and the fleet's Prometheus figures (newest windows)
    // single out the shifted feature: the others stay low.
    let canary = r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .position(|d| d["wave"] == 0)
        .unwrap();
    let agent_metrics = http()
        .get(&fleet.agents[canary].url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let gauge = |text: &str, prefix: &str, feature: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with(prefix)
                    && l.contains("version=\"2.0.0\"")
                    && l.contains(&format!("feature=\"{feature}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} for {feature} in\n{text}"))
    };
    assert!(
        gauge(
            &agent_metrics,
            "edgefleet_input_drift_psi{",
            "monthly_charges"
        ) > 0.3
    );
    let server_metrics = http()
        .get(&fleet.server.url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let served: f64 = server_metrics
        .lines()
        .filter(|l| l.starts_with("edgefleet_server_fleet_predictions_total{model=\"churn\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(served >= 100.0, "fleet predictions counted: {served}");
    // Per group: the demo group has both versions' figures, another group none.
    let (_, demo_group) = fleet.server.call(
        "GET",
        "/api/v1/telemetry?model=churn&group=demo&since_seconds=600",
        Some(&admin),
        None,
    );
    let versions: Vec<&str> = demo_group["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.0.0", "2.0.0"], "{demo_group:#}");
    assert!(!demo_group["series"].as_array().unwrap().is_empty());
    let (_, elsewhere) = fleet.server.call(
        "GET",
        "/api/v1/telemetry?model=churn&group=elsewhere",
        Some(&admin),
        None,
    );
    assert_eq!(elsewhere["versions"], json!([]), "{elsewhere:#}");
    let prefix = "edgefleet_server_fleet_input_drift_psi{";
    assert!(gauge(&server_metrics, prefix, "monthly_charges") > 1.0);
    for steady in ["tenure_months", "contract_type", "payment_method"] {
        assert!(gauge(&server_metrics, prefix, steady) < 0.3, "{steady}");
    }

    // Ground truth, later: 200 of the canary's answers labelled (every one wrong) at the device
    // reach the server in its telemetry, and the version is flagged as decayed against the
    // accuracy its signed lineage claims.
    let canary_url = |path: &str| fleet.agents[canary].url(path);
    // The halt sends the canary back to 1.0.0, and every labelled answer must come from one
    // version: a cold CI run once had the first of the 200 answered by 2.0.0 mid-roll-back, then
    // waited in vain for 200 labels of 1.0.0.
    let version = "1.0.0";
    eventually(
        "the canary serving 1.0.0 again",
        Duration::from_secs(60),
        || {
            let churn = fleet.agents[canary].model("churn");
            (churn["serving"] == version && churn["installing"].is_null()).then_some(())
        },
    );
    let mut labels = Vec::new();
    for row in baseline_rows("churn/2.0.0", 200, 5, &[]) {
        let (status, answer) = post_json(&canary_url("/v1/models/churn:predict"), &row);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["version"], version,
            "answered by another version: {answer}"
        );
        let wrong = if answer["prediction"] == "churn" {
            "stay"
        } else {
            "churn"
        };
        labels.push(json!({"id": answer["id"], "label": wrong}));
    }
    let (status, outcome) = post_json(
        &canary_url("/v1/models/churn/feedback"),
        &json!({ "labels": labels }),
    );
    assert_eq!(
        (status, outcome["accepted"].as_u64()),
        (200, Some(200)),
        "{outcome}"
    );
    // Labels ride the canary's next telemetry windows; 15 s alone, but a loaded 2-core CI run
    // (three test binaries at once, each test a fleet) took this test past 60 s once.
    // What the server last showed, for the failure message (a CI run once timed out here).
    let mut last_seen = Value::Null;
    let judged = edgefleet_e2e::fleet::poll_for(Duration::from_secs(180), || {
        let (_, t) = fleet.server.call(
            "GET",
            "/api/v1/telemetry?model=churn&since_seconds=600",
            Some(&admin),
            None,
        );
        last_seen = t["versions"].clone();
        t["versions"]
            .as_array()?
            .iter()
            .find(|v| v["version"] == version && v["quality"]["labelled"] == 200)
            .cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "the 200 labels of {version} never reached the server in 180 s; its telemetry \
             showed last:\n{last_seen:#}"
        )
    });
    assert_eq!(judged["quality"]["accuracy"], 0.0, "{judged:#}");
    assert_eq!(judged["decay"][0]["metric"], "accuracy", "{judged:#}");
    assert_eq!(judged["decay"][0]["field"], 0.0, "{judged:#}");
    let out = edgefleet_e2e::run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["quality", "churn", "--hours", "1"]),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().any(|l| l.starts_with(version)
            && l.contains("200")
            && l.contains("0.0%")
            && l.contains("DECAYED: accuracy 0.000")),
        "{table}"
    );
}

/// How long the broker stays down: minutes of telemetry windows pile up in the outboxes.
const OUTAGE: Duration = Duration::from_secs(150);

fn batches_of(demo: &Demo, device: &str) -> Vec<Value> {
    let (status, body) = demo.server.call(
        "GET",
        &format!("/api/v1/devices/{device}/metrics"),
        Some(&demo.operator.token()),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["batches"].as_array().unwrap().clone()
}

fn agent_gauge(demo: &Demo, index: usize, name: &str) -> f64 {
    demo.agents[index]
        .metric(name)
        .unwrap_or_else(|| panic!("no {name} on agent {index}"))
}

fn dropped(batches: &[Value]) -> u64 {
    batches
        .iter()
        .map(|b| b["batch"]["dropped_batches"].as_u64().unwrap())
        .sum()
}

/// The agent's count of batches made and the server's batches of the device, read when neither
/// moved in between (a window closes every second).
fn snapshot(demo: &Demo, index: usize, device: &str) -> (u64, Vec<Value>) {
    loop {
        let produced = agent_gauge(demo, index, "edgefleet_telemetry_batches_total") as u64;
        let stored = batches_of(demo, device);
        std::thread::sleep(Duration::from_millis(200));
        let again = agent_gauge(demo, index, "edgefleet_telemetry_batches_total") as u64;
        if produced == again && batches_of(demo, device).len() == stored.len() {
            return (produced, stored);
        }
    }
}

fn file_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("outbox"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_broker_outage_of_minutes_loses_no_batch_and_a_full_outbox_reports_what_it_dropped() {
    // Beside the other fleets, not one at a time as they are: its minutes of load are paced
    // (Load: one request per agent every 20 ms), it judges no latency and its broker is its own
    // Mosquitto. (A like-for-like version once measured 4x slower beside it in CI, which failed
    // a latency gate of +200%; the gate test now allows 10x and its slow candidate is ~20x
    // slower.)
    let tmp = tempfile::tempdir().unwrap();
    let mut options = options(2, true);
    options.agent_fleet_toml = "telemetry_seconds = 1".into();
    options.latency_budget_factor = 50.0;
    let mut fleet = demo::set_up(tmp.path(), &options);
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    // Agent 1 keeps at most 20 messages: the outage overflows it.
    demo::reroute(&mut fleet, 1, None, None, "outbox_max_messages = 20");
    let load = Load::start(predict_urls(&fleet));
    std::thread::sleep(Duration::from_secs(5));
    let before = [snapshot(&fleet, 0, "dev-01"), snapshot(&fleet, 1, "dev-02")];

    fleet.mosquitto.as_mut().unwrap().stop_gracefully();
    let outage = Instant::now();
    let outbox_dir = fleet.agents[1].config.parent().unwrap().join("data");
    let pid = fleet.agents[1].child.id();
    let mut samples = Vec::new();
    while outage.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_secs(10));
        samples.push((
            file_bytes(&outbox_dir),
            (edgefleet_e2e::rss_mib(pid) * 1048576.0) as u64,
        ));
    }
    let (served, failed) = load.stop();
    assert_eq!(failed, 0, "predictions kept being served during the outage");
    assert!(served > 1000);
    // The broker comes back, and the server is subscribed again before the agents reconnect:
    // what this test holds the agents to is their outboxes. (Messages devices publish after a
    // broker restart and before the server has subscribed again are lost: Mosquitto 2.0.11 did
    // not queue them for the server's persisted shared subscription. SERVER.md says so.)
    let signal = |name: &str, pid: u32| {
        let status = Command::new("kill").args([name, &pid.to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {name} {pid}");
    };
    for agent in &fleet.agents {
        signal("-STOP", agent.child.id());
    }
    fleet.mosquitto.as_mut().unwrap().restart();
    eventually(
        "the server back on the broker",
        Duration::from_secs(30),
        || {
            let metrics = http()
                .get(&fleet.server.url("/metrics"))
                .call()
                .ok()?
                .body_mut()
                .read_to_string()
                .ok()?;
            metrics
                .contains("edgefleet_server_mqtt_connected 1\n")
                .then_some(())
        },
    );
    for agent in &fleet.agents {
        signal("-CONT", agent.child.id());
    }
    // What each agent made since the first snapshot is on the server once, or counted dropped.
    for (index, device) in ["dev-01", "dev-02"].into_iter().enumerate() {
        let (produced_before, stored_before) = &before[index];
        let deadline = Instant::now() + Duration::from_secs(60);
        let (produced, batches) = loop {
            let (produced, stored) = snapshot(&fleet, index, device);
            let new: Vec<Value> = stored[stored_before.len()..].to_vec();
            let accounted: u64 = new.len() as u64 + dropped(&new);
            if accounted == produced - produced_before {
                break (produced - produced_before, new);
            }
            assert!(
                Instant::now() < deadline && accounted < produced - produced_before,
                "{device}: made {} batches, server holds {} and {} were reported dropped",
                produced - produced_before,
                new.len(),
                dropped(&new)
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        let all: Vec<u64> = snapshot(&fleet, index, device)
            .1
            .iter()
            .map(|b| b["seq"].as_u64().unwrap())
            .collect();
        assert!(
            all.windows(2).all(|w| w[0] < w[1]),
            "{device}: batches arrived out of order: {all:?}"
        );
        if index == 0 {
            assert_eq!(
                dropped(&batches),
                0,
                "{device} had room for the whole outage"
            );
            assert!(
                produced >= OUTAGE.as_secs(),
                "{device}: {produced} batches over the outage"
            );
        } else {
            assert!(
                dropped(&batches) >= OUTAGE.as_secs() - 30,
                "{device}: only {} of {produced} dropped",
                dropped(&batches)
            );
        }
    }
    // At its bound the outbox stops growing: the file (with its WAL) and the process stay flat
    // through the second half of the outage.
    let half = &samples[samples.len() / 2..];
    let (files, rss): (Vec<u64>, Vec<u64>) = half.iter().copied().unzip();
    let spread = |v: &[u64]| v.iter().max().unwrap() - v.iter().min().unwrap();
    assert!(
        spread(&files) < 256 * 1024 && files.iter().all(|&b| b < 1024 * 1024),
        "outbox files grew: {samples:?}"
    );
    assert!(
        spread(&rss) < 8 * 1024 * 1024,
        "agent memory grew: {samples:?}"
    );
    eprintln!("outage samples (outbox bytes, agent RSS): {samples:?}");
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until `script` (a JavaScript expression) is truthy in the page; returns its value.
async fn until(client: &Client, what: &str, within: Duration, script: &str) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let value = client
            .execute(&format!("return {script};"), vec![])
            .await
            .unwrap();
        let truthy = !matches!(&value, Value::Null | Value::Bool(false))
            && value != json!("")
            && value != json!(0);
        if truthy {
            return value;
        }
        if Instant::now() > deadline {
            let shot = client.screenshot().await.unwrap_or_default();
            std::fs::write(artifacts().join("dashboard-failure.png"), shot).unwrap();
            let text = client
                .execute("return document.body.innerText;", vec![])
                .await
                .unwrap_or_default();
            panic!("the page never showed {what} ({script}); it shows:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks what `css` finds, as a user would; the page re-renders on every live update, so an
/// element found a moment ago may be replaced before the click lands: find it again.
async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = match client.find(Locator::Css(css)).await {
            Ok(element) => element.click().await,
            Err(e) => Err(e),
        };
        match attempt {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("cannot click {css}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

const WAVE_TEXT: &str =
    "(n) => document.querySelector(`#waves [data-wave=\"${n}\"] .wave-count`)?.textContent";

#[test]
fn the_dashboard_follows_a_rollout_live_and_an_abort_click_stops_it() {
    let _serial = one_at_a_time();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(dashboard_scenario());
}

async fn dashboard_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let options = DemoOptions {
        agents: 3,
        mosquitto: false,
        tls: false,
        verbose: false,
        tiny_artifact_limit: Vec::new(),
        latency_budget_factor: 20.0,
        database_url: None,
        server_toml: String::new(),
        agent_fleet_toml: "telemetry_seconds = 2".into(),
    };
    let dir = tmp.path().to_path_buf();
    let fleet = tokio::task::spawn_blocking(move || {
        let fleet = demo::set_up(&dir, &options);
        assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
        fleet
    })
    .await
    .unwrap();
    let urls = fleet
        .agents
        .iter()
        .map(|a| a.url("/v1/models/churn:predict"))
        .collect();
    let load = Load::start(urls);
    let admin = fleet.operator.token();
    let (_, viewer) = fleet.server.call(
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(&json!({"name": "watcher", "role": "viewer"})),
    );
    let viewer = viewer["token"].as_str().unwrap().to_owned();
    let base = fleet.server.base_url();

    let (_driver, client) = browser().await;
    sign_in(&client, &base, &admin).await;
    until(
        &client,
        "the signed-in operator",
        Duration::from_secs(10),
        "document.getElementById('who').textContent.includes('admin')",
    )
    .await;
    let paint = client
        .execute(
            "return performance.getEntriesByType('paint').map(p => [p.name, p.startTime]);",
            vec![],
        )
        .await
        .unwrap();

    // A rollout that waits for approval after each wave, started while the page is open: the
    // page learns of it from the event stream, not from a reload.
    let (status, created) = fleet.server.call(
        "POST",
        "/api/v1/rollouts",
        Some(&admin),
        Some(
            &json!({"model": "churn", "version": "2.0.0", "group": "demo",
                     "waves": [33, 66, 100], "require_approval": true}),
        ),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let row = format!("[data-rollout-id=\"{id}\"]");
    until(
        &client,
        "the new rollout",
        Duration::from_secs(10),
        &format!("document.querySelector('{row}')"),
    )
    .await;
    click(&client, &row).await;
    until(
        &client,
        "wave 1 healthy",
        Duration::from_secs(60),
        &format!("({WAVE_TEXT})(1) === '1/1 healthy'"),
    )
    .await;
    until(
        &client,
        "awaiting approval",
        Duration::from_secs(30),
        "document.getElementById('rollout-state').dataset.state === 'awaiting_approval'",
    )
    .await;

    // The operator approves wave 2 from the page and watches it advance.
    click(&client, "button[data-action=approve]").await;
    until(
        &client,
        "wave 2 healthy",
        Duration::from_secs(60),
        &format!("({WAVE_TEXT})(2) === '1/1 healthy'"),
    )
    .await;
    until(
        &client,
        "awaiting approval again",
        Duration::from_secs(30),
        "document.getElementById('rollout-state').dataset.state === 'awaiting_approval'",
    )
    .await;
    until(
        &client,
        "telemetry of both versions",
        Duration::from_secs(30),
        "document.querySelectorAll('#chart-latency path[data-version]').length >= 2",
    )
    .await;
    let desktop = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("dashboard-desktop.png"), &desktop).unwrap();

    // Abort: one click asks, the second confirms; the rollout stops before wave 3.
    click(&client, "button[data-action=abort]").await;
    click(&client, "#confirm-yes").await;
    until(
        &client,
        "the rollout aborted",
        Duration::from_secs(10),
        "document.getElementById('rollout-state').dataset.state === 'aborted'",
    )
    .await;
    let (_, after) =
        fleet
            .server
            .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None);
    assert_eq!(after["state"]["state"], "aborted", "{after:#}");
    let devices = after["devices"].as_array().unwrap();
    assert!(
        devices
            .iter()
            .filter(|d| d["wave"] == 2)
            .all(|d| d["notified_at"].is_null()),
        "wave 3 was never started: {after:#}"
    );
    assert!(
        after["history"]
            .to_string()
            .contains("aborted by bootstrap-admin"),
        "{after:#}"
    );

    // Devices: all three listed online with their version; a filter narrows the list.
    click(&client, "[data-tab=devices]").await;
    until(&client, "three online devices, one page of three", Duration::from_secs(10), "document.querySelectorAll('#devices tbody tr').length === 3 && [...document.querySelectorAll('#devices tbody tr')].every(r => r.innerText.includes('online')) && document.getElementById('device-count').textContent === '1–3 of 3' && document.getElementById('devices-next').disabled").await;
    let filter = client.find(Locator::Id("filter-text")).await.unwrap();
    filter.send_keys("dev-02").await.unwrap();
    until(
        &client,
        "one filtered device",
        Duration::from_secs(5),
        "document.querySelectorAll('#devices tbody tr').length === 1",
    )
    .await;

    // The timeline has the devices' events, live from the stream.
    click(&client, "[data-tab=timeline]").await;
    until(
        &client,
        "committed events in the timeline",
        Duration::from_secs(10),
        "document.querySelectorAll('#timeline li.kind-committed').length >= 2",
    )
    .await;
    // The filter opened a stream for the new page, which starts with the latest events again:
    // each is still listed once.
    until(
        &client,
        "each event once in the timeline",
        Duration::from_secs(5),
        "(() => { const items = [...document.querySelectorAll('#timeline li')].map(li => li.innerText); return items.length > 0 && new Set(items).size === items.length; })()",
    )
    .await;

    // The audit log: the abort clicked above is in it, filters narrow it, the chain holds.
    click(&client, "[data-tab=audit]").await;
    until(
        &client,
        "the abort in the audit log",
        Duration::from_secs(10),
        "[...document.querySelectorAll('#audit tbody tr')].some(r => r.innerText.includes('/abort') && r.innerText.includes('aborted'))",
    )
    .await;
    let actor = client.find(Locator::Id("audit-actor")).await.unwrap();
    actor.send_keys("nobody-by-this-name").await.unwrap();
    until(
        &client,
        "an empty filtered audit log",
        Duration::from_secs(5),
        "document.querySelectorAll('#audit tbody tr').length === 0",
    )
    .await;
    actor.clear().await.unwrap();
    client
        .execute(
            "document.getElementById('audit-actor').dispatchEvent(new Event('input'));",
            vec![],
        )
        .await
        .unwrap();
    until(
        &client,
        "the whole audit log again",
        Duration::from_secs(5),
        "document.querySelectorAll('#audit tbody tr').length > 3",
    )
    .await;
    click(&client, "#audit-verify").await;
    until(
        &client,
        "the chain checked",
        Duration::from_secs(5),
        "document.getElementById('audit-chain').textContent.startsWith('Chain intact')",
    )
    .await;
    let audit = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("dashboard-audit.png"), &audit).unwrap();

    // The registry: every signed version with its signed lineage; a row opens the version, its
    // lineage in full and its signed model card.
    click(&client, "[data-tab=registry]").await;
    until(
        &client,
        "churn 2.0.0 in the registry with its signed metrics",
        Duration::from_secs(5),
        "[...document.querySelectorAll('#registry tbody tr')].some(r => r.dataset.version === '2.0.0' && r.innerText.includes('roc_auc 0.8746'))",
    )
    .await;
    click(
        &client,
        "#registry tr[data-model=churn][data-version='2.0.0']",
    )
    .await;
    until(
        &client,
        "the version's lineage and model card",
        Duration::from_secs(5),
        "document.getElementById('registry-lineage').innerText.includes('models/build.py') && document.getElementById('registry-card').textContent.startsWith('# churn 2.0.0')",
    )
    .await;
    // The registry keeps the version's rollouts: who started each and how it ended.
    until(
        &client,
        "the version's rollouts",
        Duration::from_secs(5),
        "(() => { const t = document.getElementById('registry-rollouts').innerText; return t.includes(' · canary · ') && t.includes('started by'); })()",
    )
    .await;
    let registry = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("dashboard-registry.png"), &registry).unwrap();
    click(&client, "[data-tab=devices]").await;

    // On a phone: no sideways scrolling, the device rows become cards.
    client.set_window_size(390, 844).await.unwrap();
    until(
        &client,
        "a phone-width layout",
        Duration::from_secs(5),
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
    )
    .await;
    click(&client, "[data-tab=rollouts]").await;
    until(
        &client,
        "no sideways scroll on the rollout",
        Duration::from_secs(5),
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
    )
    .await;
    let phone = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("dashboard-phone.png"), &phone).unwrap();
    client.set_window_size(1280, 900).await.unwrap();

    // A viewer sees the same rollout but no operator actions.
    client
        .execute("sessionStorage.clear();", vec![])
        .await
        .unwrap();
    sign_in(&client, &base, &viewer).await;
    until(
        &client,
        "the viewer signed in",
        Duration::from_secs(10),
        "document.getElementById('who').textContent.includes('viewer')",
    )
    .await;
    click(&client, &row).await;
    until(
        &client,
        "the read-only note",
        Duration::from_secs(10),
        "document.getElementById('actions').innerText.includes('read only')",
    )
    .await;
    let buttons = client
        .find_all(Locator::Css("#actions button"))
        .await
        .unwrap();
    assert!(buttons.is_empty());
    // And a wrong token is refused with the server's reason.
    client
        .execute("sessionStorage.clear();", vec![])
        .await
        .unwrap();
    sign_in(&client, &base, "efo_not-a-real-token").await;
    until(
        &client,
        "the refusal",
        Duration::from_secs(10),
        "document.getElementById('login-error').textContent.includes('unknown or revoked')",
    )
    .await;

    client.close().await.unwrap();
    let (_, failed) = load.stop();
    assert_eq!(failed, 0);
    assert!(desktop.len() > 10_000 && phone.len() > 10_000);
    eprintln!("dashboard paint timings (ms): {paint}");
}
