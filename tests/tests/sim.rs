//! The fleet simulator at CI size: 2,000 simulated devices on their own MQTT connections to the
//! server's embedded broker (spread over 16 loopback source addresses), all running churn 1.0.0
//! and sending a metrics batch every 2 s. Half of them see inputs that drifted (a third of
//! `monthly_charges` above anything in training); in both halves 4 % of installs fail.
//!
//! A rollout of 2.0.0 to the drifting half halts at its canary wave on the input-drift gate; one
//! to the clean half completes with its failed installs inside the failure budget. Every message
//! the devices published was acknowledged and stored exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edgefleet_e2e::bridge;
use edgefleet_e2e::demo::{self, Demo, DemoOptions};
use edgefleet_e2e::fleet::poll_for;
use edgefleet_e2e::one_fleet_at_a_time;
use edgefleet_e2e::sim::{SimProcess, combined_summary};
use serde_json::{Value, json};

const CLEAN: u32 = 1_000;
const DRIFTING: u32 = 1_000;

fn sim_config(dir: &std::path::Path, fleet: &Demo) -> String {
    let token = dir.join("admin.token");
    std::fs::write(&token, fleet.operator.token()).unwrap();
    format!(
        r#"server_url = "{server}"
admin_token_file = "{token}"
id_prefix = "sim"
duration_seconds = 600
connects_per_second = 400
source_addresses = 16
seed = 7
initial_target = "models/churn/1.0.0/model.onnx"

[telemetry]
window_seconds = 2
requests_per_second = 5.0
error_ratio = 0.002

[[groups]]
name = "clean"
devices = {CLEAN}
install_delay_ms = 1500
install_failure_ratio = 0.04

[[groups]]
name = "drifting"
devices = {DRIFTING}
install_delay_ms = 1500
install_failure_ratio = 0.04
drift = {{ features = ["monthly_charges"], strength = 0.3 }}
"#,
        server = fleet.server.base_url(),
        token = token.display(),
    )
}

fn rollout(fleet: &Demo, group: &str) -> Value {
    let id = fleet.create_rollout(&json!({
        "model": "churn", "version": "2.0.0", "group": group, "waves": [5.0, 100.0],
        "bake_seconds": 6, "device_timeout_seconds": 120, "max_failure_ratio": 0.2,
        "rollback_on_halt": false,
        "model_gates": {"min_requests": 2000, "max_input_drift_psi": 0.25,
                        "max_error_rate_increase": 0.01},
    }));
    fleet.ended_rollout(&id, Duration::from_secs(300))
}

/// Every message the simulator sent was acknowledged, and every acknowledged message stored once:
/// nothing lost, nothing counted twice.
fn every_acknowledged_message_stored_once(fleet: &Demo, summary: &Value) {
    assert_eq!(summary["sent"], summary["acked"], "{summary:#}");
    for channel in ["reported", "events", "metrics"] {
        let acked = summary["acked"][channel].as_f64().unwrap();
        assert!(acked > 0.0, "{channel}: {summary:#}");
        let mut last = f64::NAN;
        let all_stored = poll_for(Duration::from_secs(60), || {
            last = stored(fleet, channel);
            (last == acked).then_some(())
        });
        assert!(
            all_stored.is_some(),
            "{channel}: {last} stored of {acked} acknowledged to the devices, 60 s after they stopped"
        );
    }
}

fn stored(fleet: &Demo, channel: &str) -> f64 {
    fleet.server.metric_sum(&format!(
        "edgefleet_server_mqtt_messages_total{{channel=\"{channel}\",outcome=\"stored\"}}"
    ))
}

#[test]
fn two_thousand_simulated_devices_halt_the_drifting_rollout_and_complete_the_clean_one_losing_nothing()
 {
    let _serial = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let fleet = demo::set_up(tmp.path(), &DemoOptions::embedded(0));
    let sim = SimProcess::start_connected(
        tmp.path(),
        &sim_config(tmp.path(), &fleet),
        Duration::from_secs(180),
    );

    let drifting = rollout(&fleet, "drifting");
    assert_eq!(drifting["state"]["state"], "halted", "{drifting:#}");
    let reason = drifting["state"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("input drift: feature monthly_charges has PSI"),
        "{reason}"
    );
    // It halted before the second wave: no device beyond the canaries was asked to update.
    let devices = drifting["devices"].as_array().unwrap();
    assert_eq!(devices.len(), DRIFTING as usize);
    assert!(
        devices
            .iter()
            .all(|d| d["wave"] == 0 || d["state"] == "pending"),
        "{drifting:#}"
    );
    let admin = fleet.operator.token();
    let id = drifting["id"].as_str().unwrap();
    let (status, aborted) = fleet.server.call(
        "POST",
        &format!("/api/v1/rollouts/{id}/abort"),
        Some(&admin),
        Some(&json!({})),
    );
    assert!(status == 200 || status == 409, "{status} {aborted}");

    let clean = rollout(&fleet, "clean");
    assert_eq!(clean["state"]["state"], "completed", "{clean:#}");
    assert_eq!(clean["model_check"]["passed"], true, "{clean:#}");
    let devices = clean["devices"].as_array().unwrap();
    let healthy = devices.iter().filter(|d| d["state"] == "healthy").count();
    let failed: Vec<&Value> = devices.iter().filter(|d| d["state"] == "failed").collect();
    assert_eq!(healthy + failed.len(), CLEAN as usize, "{clean:#}");
    // 4 % of installs fail (seeded): some, and all of them for the simulated reason.
    assert!(
        (10..=80).contains(&failed.len()),
        "{} failed installs",
        failed.len()
    );
    assert!(
        failed.iter().all(|d| d["detail"]
            .as_str()
            .unwrap_or("")
            .contains("simulated failure")),
        "{failed:#?}"
    );

    let summary = sim.stop();
    eprintln!("the simulator's summary: {summary:#}");
    assert_eq!(summary["devices"], CLEAN + DRIFTING, "{summary:#}");
    assert_eq!(summary["unacked"], 0, "{summary:#}");
    assert_eq!(summary["desired_not_acted_on"], 0, "{summary:#}");
    every_acknowledged_message_stored_once(&fleet, &summary);
    // And nothing refused or failed on the devices' channels. (A message sent again after a
    // reconnection counts as `duplicate`, which is the server keeping it once; the server's own
    // desired-state messages come back to it as `ignored`.)
    let metrics = fleet.server.metrics_text();
    for line in metrics.lines().filter(|l| {
        l.starts_with("edgefleet_server_mqtt_messages_total")
            && (l.contains("outcome=\"refused\"") || l.contains("outcome=\"failed\""))
    }) {
        assert!(line.ends_with(" 0"), "{line}");
    }
}

const ON_MOSQUITTO: u32 = 150;

/// The simulator on Mosquitto, the way a production fleet is brought up: the devices enrolled in
/// bulk first (`edgefleet-sim enroll`), the broker told their credentials
/// (`fleet-server mosquitto-config`, reloaded), then the fleet connects, each device confined to
/// its own topics by Mosquitto's ACL. Half the fleet connects to the fleet's Mosquitto, half to
/// a Mosquitto bridging into it (how the fleet bench goes past one broker process's sockets): a
/// rollout to all of them completes, the bridged half hearing its desired states through the
/// bridge, and every message the devices published is stored once.
#[test]
fn a_fleet_enrolled_in_bulk_runs_on_mosquitto_and_behind_a_bridge_and_loses_nothing() {
    let _serial = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let fleet = demo::set_up(
        tmp.path(),
        &DemoOptions {
            mosquitto: true,
            ..DemoOptions::embedded(0)
        },
    );
    let token = tmp.path().join("admin.token");
    std::fs::write(&token, fleet.operator.token()).unwrap();
    let config = |prefix: &str, broker: &str| {
        format!(
            r#"server_url = "{server}"
admin_token_file = "{token}"
id_prefix = "{prefix}"
{broker}
duration_seconds = 300
connects_per_second = 300
initial_target = "models/churn/1.0.0/model.onnx"
[telemetry]
window_seconds = 2
requests_per_second = 2.0
[[groups]]
name = "fleet"
devices = {ON_MOSQUITTO}
install_delay_ms = 500
"#,
            server = fleet.server.base_url(),
            token = token.display(),
        )
    };
    let (direct, bridged) = (tmp.path().join("direct"), tmp.path().join("bridged"));
    std::fs::create_dir_all(&direct).unwrap();
    std::fs::create_dir_all(&bridged).unwrap();
    let direct_enrolled = SimProcess::enroll(&direct, &config("direct", ""));
    let bridged_enrolled = SimProcess::enroll(&bridged, &config("bridged", ""));
    fleet.broker_learns_devices();
    let central = fleet.mosquitto.as_ref().unwrap();
    let settings = central.conf.with_file_name("edgefleet.conf");
    bridge::admit_bridge(central, &settings, "edgefleet-bridge-1", "bridge-secret");
    let edge = bridge::start_bridge(
        &tmp.path().join("bridge"),
        &settings,
        central,
        "edgefleet-bridge-1",
        "bridge-secret",
    );
    std::fs::write(
        bridged.join("sim.toml"),
        config("bridged", &format!("broker_url = \"{}\"", edge.url())),
    )
    .unwrap();
    let mut sims = [
        SimProcess::spawn(&direct, Some(&direct_enrolled)),
        SimProcess::spawn(&bridged, Some(&bridged_enrolled)),
    ];
    for sim in &mut sims {
        sim.wait_connected(Duration::from_secs(120));
    }

    let id = fleet.create_rollout(&json!({
        "model": "churn", "version": "2.0.0", "group": "fleet", "waves": [100.0],
        "bake_seconds": 0, "device_timeout_seconds": 120,
    }));
    let ended = fleet.ended_rollout(&id, Duration::from_secs(180));
    assert_eq!(ended["state"]["state"], "completed", "{ended:#}");
    std::thread::sleep(Duration::from_secs(3)); // a telemetry window on 2.0.0

    let summaries: Vec<Value> = sims.into_iter().map(SimProcess::stop).collect();
    for summary in &summaries {
        assert_eq!(summary["devices"], ON_MOSQUITTO, "{summary:#}");
        assert_eq!(summary["installs_committed"], ON_MOSQUITTO, "{summary:#}");
    }
    let summary = combined_summary(&summaries);
    assert_eq!(
        summary["enroll_seconds"], 0.0,
        "enrolled before: {summary:#}"
    );
    assert_eq!(summary["refused_connections"], 0, "{summary:#}");
    assert_eq!(summary["connection_errors"], 0, "{summary:#}");
    assert_eq!(summary["unacked"], 0, "{summary:#}");
    every_acknowledged_message_stored_once(&fleet, &summary);
}
