//! A report the broker dropped. Mosquitto acknowledges a device's message when it receives it;
//! if its queue for the server is full (`max_queued_messages`/`max_queued_bytes`) it then drops
//! the message, and the device, holding its acknowledgement, never sends it again. 100,000
//! simulated devices on PostgreSQL lost ~16,000 install reports that way and the rollout waited
//! on them (docs/BENCHMARKS.md). Devices publish their reported state retained, so the server
//! asks the broker for it again when a device has not answered its rollout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::fleet::{MqttDevice, downloading_event, eventually};
use edgefleet_e2e::{one_fleet_at_a_time, run_ok};
use edgefleet_protocol::message::{
    self, InstalledVersion, Reported, ReportedModel, SCHEMA_VERSION, UpdateState,
};
use edgefleet_protocol::{DeviceId, MessageId, ModelName};
use serde_json::json;

const DEVICE: &str = "quiet-1";

fn reported(seq: u64, revision: u64, version: &str, state: UpdateState) -> Vec<u8> {
    message::encode(&Reported {
        schema: SCHEMA_VERSION,
        id: MessageId::from_random([seq as u8; 16]),
        device: DeviceId::new(DEVICE).unwrap(),
        seq,
        at_unix: 1,
        agent_version: "test".into(),
        desired_revision: revision,
        models: vec![ReportedModel {
            model: ModelName::new("churn").unwrap(),
            active: Some(InstalledVersion {
                version: version.parse().unwrap(),
                sequence: 1,
                target: format!("models/churn/{version}/model.onnx"),
                sha256: "0".repeat(64),
                runtime: None,
            }),
            previous: None,
            state,
            last_error: None,
            shadow: None,
            shadow_refused: None,
        }],
    })
    .unwrap()
}

fn signal(pid: u32, signal: &str) {
    run_ok(Command::new("kill").args([signal, &pid.to_string()]));
}

/// The install report is dropped by Mosquitto while the server is stopped (its queue for the
/// server cut to two messages); the server reads the device's retained report again and the
/// rollout completes, long before the device would time out.
#[test]
fn a_report_mosquitto_dropped_is_read_again_from_its_retained_copy_and_the_rollout_completes() {
    let _serial = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet = demo::set_up(
        tmp.path(),
        &DemoOptions {
            mosquitto: true,
            // Lands in the server's [mqtt] section.
            server_toml: "reread_reported_seconds = 2\n".into(),
            ..DemoOptions::embedded(0)
        },
    );
    // One message in flight to the server and two queued: the rest is dropped, as a full queue
    // of 512 MiB drops it in production. Set at the broker's start, as Mosquitto takes a
    // client's in-flight limit when it connects.
    let broker = fleet.mosquitto.as_mut().unwrap();
    let mut conf = std::fs::read_to_string(&broker.conf).unwrap();
    conf.push_str("max_inflight_messages 1\nmax_queued_messages 2\n");
    std::fs::write(&broker.conf, conf).unwrap();
    broker.restart();
    eventually(
        "the server is back on the broker",
        Duration::from_secs(30),
        || (fleet.server.metric_sum("edgefleet_server_mqtt_connected") == 1.0).then_some(()),
    );

    let credential = fleet.operator.enroll(&fleet.server, DEVICE, "quiet");
    fleet.broker_learns_devices();
    let device = MqttDevice::connect(fleet.mqtt_port(), DEVICE, DEVICE, &credential).unwrap();
    let topic = |channel: &str| format!("edgefleet/v1/devices/{DEVICE}/{channel}");
    device.subscribe(&topic("desired"));
    device.publish(
        &topic("reported"),
        reported(1, 0, "1.0.0", UpdateState::Committed),
        true,
    );
    eventually(
        "the device's first report stored",
        Duration::from_secs(15),
        || {
            (fleet.server.metric_sum(
                "edgefleet_server_mqtt_messages_total{channel=\"reported\",outcome=\"stored\"}",
            ) == 1.0)
                .then_some(())
        },
    );

    let id = fleet.create_rollout(&json!({
        "model": "churn", "version": "2.0.0", "group": "quiet", "waves": [100.0],
        "bake_seconds": 0, "device_timeout_seconds": 600,
    }));
    let desired = loop {
        let bytes = device
            .next_message(&topic("desired"), Duration::from_secs(30))
            .expect("the rollout's desired state");
        let desired = fleet.operator.verify_desired(&bytes, DEVICE).unwrap();
        if desired.revision > 0 {
            break desired;
        }
    };

    // The server stops reading; the device reports progress (kept: one in flight, two
    // queued), then its install (dropped, though Mosquitto acknowledged it to the device).
    signal(fleet.server.child.id(), "-STOP");
    for n in 1..=3 {
        device.publish(
            &topic("events"),
            downloading_event(DEVICE, [n; 16], u64::from(n)),
            false,
        );
    }
    device.publish(
        &topic("reported"),
        reported(2, desired.revision, "2.0.0", UpdateState::Committed),
        true,
    );
    std::thread::sleep(Duration::from_secs(1));
    signal(fleet.server.child.id(), "-CONT");

    let ended = fleet.ended_rollout(&id, Duration::from_secs(60));
    assert_eq!(ended["state"]["state"], "completed", "{ended:#}");
    assert!(
        fleet
            .server
            .metric_sum("edgefleet_server_reported_recovered_total")
            >= 1.0,
        "the install report came from the retained copy:\n{}",
        fleet.server.metrics_text()
    );
    assert!(
        fleet
            .server
            .metric_sum("edgefleet_server_reported_reread_total")
            >= 1.0
    );
}
