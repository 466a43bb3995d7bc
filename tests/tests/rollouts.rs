//! Over-the-air rollouts over real processes: a fleet server, enrolled `edge-agent`s talking
//! MQTT to it (embedded broker or Mosquitto), TUF downloads over HTTP, `fleetctl`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::fleet::{MqttDevice, eventually};
use edgefleet_e2e::relay::Relay;
use edgefleet_e2e::run_ok;
use serde_json::{Value, json};

use edgefleet_e2e::one_fleet_at_a_time as one_at_a_time;

fn options(agents: usize, mosquitto: bool) -> DemoOptions {
    DemoOptions {
        agents,
        mosquitto,
        tls: false,
        verbose: false,
        tiny_artifact_limit: Vec::new(),
        // 20 health checks at once on 2 cores (wave 2 of 50) need a wide budget.
        latency_budget_factor: if agents > 10 { 200.0 } else { 10.0 },
        database_url: None,
        server_toml: String::new(),
        agent_fleet_toml: String::new(),
    }
}

/// Runs the demo scenario in `dir` and checks everything it promises; returns the running fleet.
fn check_demo(dir: &std::path::Path, options: &DemoOptions) -> demo::Demo {
    let (demo, report) = demo::run(dir, options);
    assert_eq!(
        report.rollout_states,
        ["completed", "completed", "halted"],
        "{report:?}"
    );
    assert!(
        report.running.iter().all(|r| r.ends_with(" 2.0.0")),
        "{report:?}"
    );
    assert!(report.predictions > 100, "{report:?}");
    assert_eq!(report.failed_predictions, 0, "{report:?}");
    // The device that got the bad version reported why, and the server kept the events once.
    let admin = demo.operator.token();
    let (_, events) = demo
        .server
        .call("GET", "/api/v1/events?limit=1000", Some(&admin), None);
    let events = events["events"].as_array().unwrap().clone();
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"]["kind"] == "rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0]["message"]["detail"]
            .as_str()
            .unwrap()
            .contains("NaN"),
        "{rejected:?}"
    );
    let mut ids: Vec<(String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["device"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "an event was stored twice");
    // 3 devices x (v1: 6 events + v2: 6 events) + the canary's 5 for v3.
    assert_eq!(count, 3 * 12 + 5, "{events:#?}");
    demo
}

/// The demo on its embedded defaults, with the registry archiving what a completed rollout
/// replaced: its stages follow the rollouts, and an archived version goes nowhere again.
#[test]
fn the_demo_scenario_runs_as_designed_on_the_embedded_broker() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(3, false);
    opts.server_toml = "[registry]\narchive_replaced = true\n".into();
    let demo = check_demo(tmp.path(), &opts);
    let admin = demo.operator.token();
    let (_, models) = demo
        .server
        .call("GET", "/api/v1/models", Some(&admin), None);
    let stages: Vec<(String, String)> = models["models"][0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                v["stage"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let stage = |version: &str| {
        stages
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, s)| s.as_str())
    };
    assert_eq!(models["models"][0]["model"], "churn");
    // 1.0.0 was promoted by its rollout, then archived once 2.0.0 replaced it everywhere; the
    // halted 3.0.0 stays where it was pushed.
    assert_eq!(stage("1.0.0"), Some("archived"), "{stages:?}");
    assert_eq!(stage("2.0.0"), Some("production"), "{stages:?}");
    assert!(
        stages
            .iter()
            .any(|(v, s)| v.starts_with("3.0.0") && s == "staging"),
        "{stages:?}"
    );
    let (status, refused) = demo.server.call(
        "POST",
        "/api/v1/rollouts",
        Some(&admin),
        Some(&json!({"model": "churn", "version": "1.0.0"})),
    );
    assert_eq!(
        (status, refused["field"].as_str()),
        (400, Some("version")),
        "{refused}"
    );
    assert!(
        refused["error"].as_str().unwrap().contains("archived"),
        "{refused}"
    );
    let (status, refused) = demo.server.call(
        "PUT",
        "/api/v1/devices/dev-01/desired",
        Some(&admin),
        Some(&json!({"models": [{"model": "churn", "version": "1.0.0"}]})),
    );
    assert_eq!(
        (status, refused["field"].as_str()),
        (400, Some("models")),
        "{refused}"
    );
}

/// The demo on Mosquitto too (its wiring: ACLs, retained desired state, reconnects), over the
/// PostgreSQL store.
#[test]
fn on_postgresql_and_mosquitto_the_demo_runs_and_the_state_outlives_the_server() {
    let _serial = one_at_a_time();
    let postgres = edgefleet_e2e::postgres::Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(3, true);
    opts.database_url = Some(postgres.url());
    let mut fleet = check_demo(tmp.path(), &opts);
    assert!(
        !tmp.path().join("server/data/fleet.db").exists(),
        "the state went to SQLite, not PostgreSQL"
    );
    let admin = fleet.operator.token();
    let rollouts = |fleet: &demo::Demo| {
        let (_, body) = fleet
            .server
            .call("GET", "/api/v1/rollouts", Some(&admin), None);
        body["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["state"]["state"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let before = rollouts(&fleet);
    assert_eq!(before.len(), 3, "{before:?}");
    fleet.server.restart();
    assert_eq!(
        rollouts(&fleet),
        before,
        "rollouts survive a server restart"
    );
    let (_, devices) = fleet
        .server
        .call("GET", "/api/v1/devices", Some(&admin), None);
    assert_eq!(devices["devices"].as_array().unwrap().len(), 3);
}

#[test]
fn ten_agents_halt_in_wave_two_and_wave_three_never_starts() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    // The engine's logic at any size is tested in-process (fleet-server/src/engine/tests.rs);
    // this proves it with real agents: a refusal's reason travels back, and a halt's
    // roll-back reaches them.
    let mut opts = options(10, false);
    // Waves of 10 %, 50 %, 100 % over dev-01..dev-10: wave 2 is dev-02..dev-05.
    opts.tiny_artifact_limit = vec!["dev-03".into()];
    let fleet = demo::set_up(tmp.path(), &opts);
    let state = demo::roll_out(&fleet, "1.0.0", &[20.0, 40.0, 60.0, 80.0, 100.0], 0);
    if state != "completed" {
        let (_, r) = fleet.server.call(
            "GET",
            "/api/v1/rollouts",
            Some(&fleet.operator.token()),
            None,
        );
        panic!("{state}: {:#}", r["rollouts"][0]["history"]);
    }
    let admin = fleet.operator.token();
    let revisions = |server: &edgefleet_e2e::fleet::ServerProcess| -> Vec<(String, u64)> {
        let (_, body) = server.call("GET", "/api/v1/devices", Some(&admin), None);
        body["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["id"].as_str().unwrap().to_owned(),
                    d["desired_revision"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let before = revisions(&fleet.server);
    assert_eq!(
        demo::roll_out(&fleet, "2.0.0", &[10.0, 50.0, 100.0], 0),
        "halted"
    );
    let (_, rollouts) = fleet
        .server
        .call("GET", "/api/v1/rollouts", Some(&admin), None);
    let r = &rollouts["rollouts"][0];
    assert_eq!(r["state"]["wave"], 2, "{}", r["state"]);
    assert!(r["state"]["reason"].as_str().unwrap().contains("wave 2"));
    assert_eq!(
        r["devices"],
        json!([]),
        "a list counts devices, never lists them"
    );
    assert_eq!(r["devices_total"], 10);
    let (_, r) = fleet.server.call(
        "GET",
        &format!(
            "/api/v1/rollouts/{}?problems=true",
            r["id"].as_str().unwrap()
        ),
        Some(&admin),
        None,
    );
    assert_eq!(r["devices_total"], 1, "{r:#}");
    let id = r["id"].as_str().unwrap();
    let (status, refused) = fleet.server.call(
        "GET",
        &format!("/api/v1/rollouts/{id}?devices_limit=10001"),
        Some(&admin),
        None,
    );
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["field"], "devices_limit", "{refused}");
    let (_, page) = fleet.server.call(
        "GET",
        &format!("/api/v1/rollouts/{id}?devices_limit=4&devices_from=8"),
        Some(&admin),
        None,
    );
    let (_, whole) =
        fleet
            .server
            .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None);
    assert_eq!(whole["devices"].as_array().unwrap().len(), 10);
    assert_eq!(
        page["devices"].as_array().unwrap()[..],
        whole["devices"].as_array().unwrap()[8..]
    );
    assert!(page.get("devices_next").is_none(), "{page:#}");
    let failed: Vec<&Value> = r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["detail"].is_string())
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["id"], "dev-03");
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("max_artifact_bytes")
    );
    // Wave 3 never started: its devices' desired state is untouched.
    let after = revisions(&fleet.server);
    for ((id, b), (_, a)) in before.iter().zip(&after) {
        let n: usize = id.trim_start_matches("dev-").parse().unwrap();
        if n > 5 {
            assert_eq!(a, b, "{id} of wave 3 was notified");
        } else {
            assert!(a > b, "{id} of waves 1-2 was not rolled back");
        }
    }
    // Every device of waves 1-2 goes back to 1.0.0; nobody ends on 2.0.0.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let running = demo::running(&fleet);
        if running.iter().all(|r| r.ends_with(" 1.0.0")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all back on 1.0.0: {running:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A desired-state message a device could forge on the embedded broker (it has no ACLs).
fn forged(device: &str, revision: u64, target: &str) -> Vec<u8> {
    edgefleet_e2e::unsigned_desired(device, revision, &[target])
}

/// The agent's count of desired-state messages it refused before they moved anything.
fn desired_refused(agent: &edgefleet_e2e::AgentProcess) -> u64 {
    agent
        .metric("edgefleet_desired_refused_total")
        .map_or(0, |v| v as u64)
}

#[test]
fn forged_tampered_and_replayed_desired_states_move_nothing_and_genuine_ones_still_arrive() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet = demo::set_up(tmp.path(), &options(2, false));
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    assert_eq!(demo::roll_out(&fleet, "2.0.0", &[100.0], 0), "completed");
    let admin = fleet.operator.token();
    // dev-02 is compromised: its agent stops and its credential publishes on dev-01's desired
    // topic (the embedded broker has no per-device topic rights; one client id per session).
    fleet.agents[1].kill();
    let intruder = fleet.intruder_as(tmp.path(), "dev-02");
    let topic = "edgefleet/v1/devices/dev-01/desired";
    // It can read dev-01's genuine, signed desired state (naming 2.0.0) to replay later.
    intruder.subscribe(topic);
    let genuine_2_0 = intruder
        .next_message(topic, Duration::from_secs(10))
        .expect("the retained desired state of dev-01");
    let agent = &fleet.agents[0];
    let refused_before = desired_refused(agent);
    let rejected = |needle: &str| {
        let needle = needle.to_owned();
        eventually(
            &format!("a rejected event about {needle}"),
            Duration::from_secs(30),
            || {
                let (_, events) = fleet.server.call(
                    "GET",
                    "/api/v1/events?device=dev-01&limit=200",
                    Some(&admin),
                    None,
                );
                events["events"]
                    .as_array()?
                    .iter()
                    .find(|e| {
                        e["message"]["kind"] == "rejected"
                            && e["message"]["detail"]
                                .as_str()
                                .is_some_and(|d| d.contains(&needle))
                    })
                    .cloned()
            },
        )
    };
    // 1. Unsigned messages with the highest revision there is: naming a target nobody signed,
    //    an older signed one (a downgrade), and nothing at all (the old freeze).
    let mut empty: Value =
        serde_json::from_slice(&forged("dev-01", u64::MAX, "models/churn/1.0.0/model.onnx"))
            .unwrap();
    empty["models"] = json!([]);
    let mut tampered: Value = serde_json::from_slice(&genuine_2_0).unwrap();
    tampered["signed"]["desired"]["revision"] = json!(u64::MAX);
    tampered["signed"]["desired"]["models"][0]["target"] = json!("models/churn/1.0.0/model.onnx");
    let attacks = [
        forged("dev-01", u64::MAX, "models/churn/9.9.9/model.onnx"),
        forged("dev-01", u64::MAX, "models/churn/1.0.0/model.onnx"),
        serde_json::to_vec(&empty).unwrap(),
        // 2. A genuine signed message with its revision and target changed.
        serde_json::to_vec(&tampered).unwrap(),
        // 3. Junk, and junk far over the message limit (under the broker's packet limit).
        b"{}".to_vec(),
        vec![b'x'; 300 * 1024],
    ];
    let count = attacks.len() as u64;
    for attack in attacks {
        intruder.publish(topic, attack, false);
    }
    eventually("every forgery refused", Duration::from_secs(20), || {
        (desired_refused(agent) >= refused_before + count).then_some(())
    });
    let model = agent.model("churn");
    assert_eq!(model["active"]["version"], "2.0.0", "{model}");
    assert_eq!(model["state"], "committed", "{model}");
    // 4. The server's next genuine desired state still arrives and is acted on: the NaN release
    //    is tried (and refused by the device's own health check), so the forged revisions froze
    //    nothing.
    let (status, _) = fleet.server.call(
        "PUT",
        "/api/v1/devices/dev-01/desired",
        Some(&admin),
        Some(&json!({"models": [{"model": "churn", "version": "3.0.0-nan"}]})),
    );
    assert_eq!(status, 200);
    rejected("NaN");
    // 5. A replay of the older genuine message (2.0.0, a lower revision) is ignored as stale.
    intruder.publish(topic, genuine_2_0.clone(), false);
    // 6. Below the floor: 2.1.0 raises dev-01's floor to sequence 4; a genuine desired state
    //    naming 2.0.0 (sequence 2, still signed and current) is refused as a rollback.
    let release = tmp.path().join("churn-2.1.0");
    std::fs::create_dir_all(&release).unwrap();
    for file in ["interface.json", "health.json", "baseline.json"] {
        std::fs::copy(
            edgefleet_e2e::models_dir().join("churn/2.0.0").join(file),
            release.join(file),
        )
        .unwrap();
    }
    // The same network, as different bytes: an extra protobuf field (number 1000, varint 1)
    // that ONNX parsers skip as unknown.
    let mut onnx =
        std::fs::read(edgefleet_e2e::models_dir().join("churn/2.0.0/model.onnx")).unwrap();
    onnx.extend_from_slice(&[0xC0, 0x3E, 0x01]);
    std::fs::write(release.join("model.onnx"), onnx).unwrap();
    std::fs::write(
        release.join("release.json"),
        json!({"model": "churn", "version": "2.1.0", "sequence": 4, "min_sequence": 4}).to_string(),
    )
    .unwrap();
    run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["push", "--server", "--allow-downgrade"])
            .arg(&release),
    );
    // A genuine rollout reaches the attacked device after all of the above.
    run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["device", "assign", "dev-01", "churn=2.1.0"]),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(agent.model("churn")["active"]["version"] == "2.1.0"
        && agent.model("churn")["state"] == "committed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "2.1.0 not committed: {}\n{}",
            agent.model("churn"),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["device", "assign", "dev-01", "churn=2.0.0"]),
    );
    rejected("below this device's floor");
    intruder.publish(topic, genuine_2_0, false);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.model("churn")["active"]["version"], "2.1.0");
}

#[test]
fn a_release_with_the_same_model_file_activates_with_its_own_metadata_and_its_rollout_completes() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let fleet = demo::set_up(tmp.path(), &options(2, false));
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    // 3.1.0 ships 1.0.0's model file byte for byte, with a looser tolerance and a new version.
    let release = edgefleet_e2e::copy_release(tmp.path(), "churn/1.0.0", "3.1.0", 10);
    let mut health: Value =
        serde_json::from_slice(&std::fs::read(release.join("health.json")).unwrap()).unwrap();
    health["tolerance"]["abs"] = json!(1e-3);
    std::fs::write(release.join("health.json"), health.to_string()).unwrap();
    run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["push", "--server"])
            .arg(&release),
    );
    assert_eq!(
        demo::roll_out(&fleet, "3.1.0", &[50.0, 100.0], 0),
        "completed"
    );
    let admin = fleet.operator.token();
    for (i, agent) in fleet.agents.iter().enumerate() {
        let model = agent.model("churn");
        assert_eq!(model["active"]["version"], "3.1.0", "{model}");
        assert_eq!(model["previous"]["version"], "1.0.0", "{model}");
        assert_eq!(model["active"]["sha256"], model["previous"]["sha256"]);
        let served = edgefleet_e2e::get_json(&agent.url("/v2/models/churn"));
        assert_eq!(served["versions"], json!(["3.1.0"]), "{served}");
        // Nothing was downloaded again: the device said so instead.
        let device = format!("dev-{:02}", i + 1);
        let (_, events) = fleet.server.call(
            "GET",
            &format!("/api/v1/events?device={device}&limit=200"),
            Some(&admin),
            None,
        );
        let steps: Vec<(String, String)> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["message"]["target"] == "models/churn/3.1.0/model.onnx")
            .map(|e| {
                (
                    e["message"]["kind"].as_str().unwrap().to_owned(),
                    e["message"]["detail"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert!(
            steps.iter().all(|(kind, _)| kind != "downloading"),
            "{device}: {steps:?}"
        );
        assert!(
            steps
                .iter()
                .any(|(kind, detail)| kind == "verified" && detail.contains("not downloaded")),
            "{device}: {steps:?}"
        );
        assert!(
            steps.iter().any(|(kind, _)| kind == "committed"),
            "{device}: {steps:?}"
        );
    }
}

#[test]
fn a_device_offline_during_the_rollout_converges_when_it_comes_back() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet = demo::set_up(tmp.path(), &options(3, false));
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    // dev-03 goes away (power cut) before the next rollout starts.
    let mut gone = fleet.agents.pop().unwrap();
    gone.kill();
    let admin = fleet.operator.token();
    let (status, created) = fleet.server.call(
        "POST",
        "/api/v1/rollouts",
        Some(&admin),
        Some(&json!({"model": "churn", "version": "2.0.0", "waves": [100.0], "device_timeout_seconds": 600})),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    eventually(
        "the two online devices healthy",
        Duration::from_secs(60),
        || {
            let (_, r) =
                fleet
                    .server
                    .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None);
            (r["waves"][0]["healthy"] == 2).then_some(())
        },
    );
    // It comes back: the retained desired state and the TUF metadata bring it up to date.
    let config = gone.config.clone();
    let port = gone.port;
    drop(gone);
    fleet
        .agents
        .push(edgefleet_e2e::AgentProcess::spawn(config, port, &[]));
    eventually("the rollout completed", Duration::from_secs(60), || {
        let (_, r) =
            fleet
                .server
                .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None);
        (r["state"]["state"] == "completed").then_some(())
    });
    let running = demo::running(&fleet);
    assert!(running.iter().all(|r| r.ends_with(" 2.0.0")), "{running:?}");
}

#[test]
fn a_rollout_survives_broker_server_and_agent_restarts_without_double_installs() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet = demo::set_up(tmp.path(), &options(3, true));
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    let admin = fleet.operator.token();
    let (status, created) = fleet.server.call(
        "POST",
        "/api/v1/rollouts",
        Some(&admin),
        Some(&json!({"model": "churn", "version": "2.0.0", "waves": [34.0, 100.0], "bake_seconds": 3})),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // The broker goes down and comes back (losing its retained messages), then the server, then
    // an agent is killed and started again — all while the rollout runs.
    fleet.mosquitto.as_mut().unwrap().restart();
    std::thread::sleep(Duration::from_millis(500));
    fleet.server.restart();
    let mut victim = fleet.agents.pop().unwrap();
    victim.kill();
    std::thread::sleep(Duration::from_secs(1));
    let (config, port) = (victim.config.clone(), victim.port);
    drop(victim);
    fleet
        .agents
        .push(edgefleet_e2e::AgentProcess::spawn(config, port, &[]));
    demo::wait_until_completed(&fleet, &id);
    let running = demo::running(&fleet);
    assert!(running.iter().all(|r| r.ends_with(" 2.0.0")), "{running:?}");
    // Each device installed 2.0.0 once and reported each step once: events are neither lost
    // (every step of the install is there) nor double-counted.
    let events = eventually("every device's events", Duration::from_secs(30), || {
        let (_, body) = fleet
            .server
            .call("GET", "/api/v1/events?limit=1000", Some(&admin), None);
        let events: Vec<Value> = body["events"]
            .as_array()?
            .iter()
            .filter(|e| e["message"]["target"] == "models/churn/2.0.0/model.onnx")
            .cloned()
            .collect();
        (events
            .iter()
            .filter(|e| e["message"]["kind"] == "committed")
            .count()
            == 3)
            .then_some(events)
    });
    for device in ["dev-01", "dev-02", "dev-03"] {
        for kind in ["staged", "health_checking", "installed", "committed"] {
            let n = events
                .iter()
                .filter(|e| e["device"] == device && e["message"]["kind"] == kind)
                .count();
            assert_eq!(n, 1, "{device} {kind}: {events:#?}");
        }
    }
}

#[test]
fn an_agent_killed_mid_download_continues_its_part_file_and_installs_once() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet = demo::set_up(tmp.path(), &options(2, false));
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    // dev-02 reaches the server over a slow link: its 2,240-byte download of churn 2.0.0 takes
    // about 7 s, so it can be killed a third of the way through.
    let server = fleet.server.addr();
    let slow = Relay::start(server, Some(300));
    demo::reroute(
        &mut fleet,
        1,
        Some(&slow.http_url()),
        None,
        "min_download_bytes_per_second = 64",
    );
    let admin = fleet.operator.token();
    let (status, created) = fleet.server.call(
        "POST",
        "/api/v1/rollouts",
        Some(&admin),
        Some(&json!({"model": "churn", "version": "2.0.0", "group": "demo", "waves": [100.0]})),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    eventually(
        "dev-02 to be a third into its download",
        Duration::from_secs(60),
        || (slow.stats.target_down.load(Ordering::Relaxed) >= 900).then_some(()),
    );
    fleet.agents[1].kill();
    let before_kill = slow.requests().len();
    let (config, port) = (fleet.agents[1].config.clone(), fleet.agents[1].port);
    fleet.agents[1] = edgefleet_e2e::AgentProcess::spawn(config, port, &[]);
    demo::wait_until_completed(&fleet, &id);
    // After the restart the download continued from the bytes its part file held, not from zero.
    let requests = slow.requests();
    let resumed: Vec<u64> = requests[before_kill..]
        .iter()
        .filter(|r| r.starts_with("GET /tuf/targets/") && r.contains(".model.onnx "))
        .map(|r| {
            let (_, range) = r
                .split_once("bytes=")
                .unwrap_or_else(|| panic!("download started over: {requests:#?}"));
            range.trim_end_matches(['-', ']']).parse().unwrap()
        })
        .collect();
    assert_eq!(resumed.len(), 1, "{requests:#?}");
    assert!(
        resumed[0] >= 500,
        "resumed at byte {}: {requests:#?}",
        resumed[0]
    );
    let running = demo::running(&fleet);
    assert!(running.iter().all(|r| r.ends_with(" 2.0.0")), "{running:?}");
    // Each device verified, installed and committed 2.0.0 once; no event is stored twice.
    let (_, body) = fleet
        .server
        .call("GET", "/api/v1/events?limit=1000", Some(&admin), None);
    let events = body["events"].as_array().unwrap();
    for device in ["dev-01", "dev-02"] {
        for kind in ["verified", "staged", "installed", "committed"] {
            let n = events
                .iter()
                .filter(|e| {
                    e["device"] == device
                        && e["message"]["kind"] == kind
                        && e["message"]["target"] == "models/churn/2.0.0/model.onnx"
                })
                .count();
            assert_eq!(n, 1, "{device} {kind}: {events:#?}");
        }
    }
    let mut ids: Vec<(&str, u64)> = events
        .iter()
        .map(|e| (e["device"].as_str().unwrap(), e["seq"].as_u64().unwrap()))
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "an event was stored twice");
}

#[test]
fn server_and_agents_reach_mosquitto_over_tls() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(2, true);
    opts.tls = true;
    // set_up waits for the server's /readyz (its MQTT client connected over TLS) and for both
    // agents to be online (their reports arrived over TLS).
    let fleet = demo::set_up(tmp.path(), &opts);
    assert_eq!(
        demo::roll_out(&fleet, "1.0.0", &[50.0, 100.0], 0),
        "completed"
    );
    // A plain-text client gets nowhere on the TLS listener.
    let port = fleet.mosquitto.as_ref().unwrap().port;
    assert!(MqttDevice::connect(port, "dev-01", "dev-01", "efd_x").is_err());
}

#[test]
fn telemetry_batches_reach_the_server_with_the_served_versions_figures() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet = demo::set_up(tmp.path(), &options(1, false));
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    demo::reroute(&mut fleet, 0, None, None, "telemetry_seconds = 1");
    let predict = fleet.agents[0].url("/v1/models/churn:predict");
    let text = edgefleet_e2e::get_text;
    let stored = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("edgefleet_server_mqtt_messages_total")
                    && l.contains("channel=\"metrics\"")
                    && l.contains("outcome=\"stored\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = stored(&text(&fleet.server.url("/metrics")));
    for i in 0..40 {
        let ok = edgefleet_e2e::http()
            .post(&predict)
            .send_json(edgefleet_e2e::churn_row(f64::from(i % 60 + 1)))
            .is_ok_and(|r| r.status() == 200);
        assert!(ok);
    }
    // The agent's own /metrics shows the window's figures; the server stores the batches.
    let agent_metrics = eventually(
        "a telemetry window to close",
        Duration::from_secs(10),
        || {
            let m = text(&fleet.agents[0].url("/metrics"));
            m.contains("edgefleet_input_drift_psi{").then_some(m)
        },
    );
    assert!(
        agent_metrics.contains("edgefleet_predictions_total{model=\"churn\",version=\"1.0.0\""),
        "{agent_metrics}"
    );
    assert!(agent_metrics.contains("edgefleet_process_resident_memory_bytes "));
    eventually(
        "batches stored by the server",
        Duration::from_secs(10),
        || (stored(&text(&fleet.server.url("/metrics"))) >= before + 2.0).then_some(()),
    );
    let refused: f64 = text(&fleet.server.url("/metrics"))
        .lines()
        .filter(|l| l.contains("channel=\"metrics\"") && l.contains("outcome=\"refused\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 0.0);
}
