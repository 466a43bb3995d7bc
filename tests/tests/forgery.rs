//! A compromised device speaks in another's name on the embedded broker, which has no per-device
//! topic rights: every message it forges is refused because the victim seals its messages with
//! its own key; nothing forged is stored or counted, predictions keep flowing throughout, and
//! a genuine update still reaches the victim afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::fleet::eventually;
use edgefleet_e2e::{churn_row, run_ok};
use edgefleet_protocol::message::{self, Event, EventKind};
use edgefleet_protocol::{DeviceId, MessageId};
use edgefleet_sealed::DeviceKey;
use serde_json::{Value, json};

fn refused(fleet: &demo::Demo) -> f64 {
    ["reported", "events", "metrics"]
        .iter()
        .map(|c| {
            fleet.server.metric_sum(&format!(
                "edgefleet_server_mqtt_messages_total{{channel=\"{c}\",outcome=\"refused\"}}"
            ))
        })
        .sum()
}

/// The message inside a sealed payload (`EFS1`, 64 signature bytes, the message).
fn unsealed(payload: &[u8]) -> Value {
    assert_eq!(&payload[..4], b"EFS1", "the agent seals what it publishes");
    serde_json::from_slice(&payload[68..]).unwrap()
}

#[test]
fn forged_reports_events_and_metrics_are_refused_and_a_genuine_update_still_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet = demo::set_up(
        tmp.path(),
        &DemoOptions {
            agent_fleet_toml: "telemetry_seconds = 1\n".into(),
            ..DemoOptions::embedded(2)
        },
    );
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    let admin = fleet.operator.token();

    // Predictions on the victim throughout the attack.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let url = fleet.agents[0].url("/v1/models/churn:predict");
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (status, _) = edgefleet_e2e::post_json(&url, &churn_row(12.0));
                let counter = if status == 200 { &served } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // dev-02 is compromised: its credential and its own key are the attacker's now.
    fleet.agents[1].kill();
    let dev02 = tmp.path().join("agents/dev-02/data");
    let stolen_key = DeviceKey::from_pkcs8(&std::fs::read(dev02.join("device.key")).unwrap())
        .expect("dev-02 made a key at enrollment");
    let intruder = fleet.intruder_as(tmp.path(), "dev-02");
    // It reads dev-01's own sealed messages (no topic rights on the embedded broker).
    intruder.subscribe("edgefleet/v1/devices/dev-01/+");
    let topic = |channel: &str| format!("edgefleet/v1/devices/dev-01/{channel}");
    let genuine_reported = intruder
        .next_message(&topic("reported"), Duration::from_secs(15))
        .expect("dev-01's retained reported state");
    let genuine_metrics = intruder
        .next_message(&topic("metrics"), Duration::from_secs(15))
        .expect("a metrics batch from dev-01");
    let stored_seq = |fleet: &demo::Demo| {
        let (_, d) = fleet
            .server
            .call("GET", "/api/v1/devices/dev-01", Some(&admin), None);
        d["reported"]["seq"].as_u64().unwrap_or(0)
    };
    let predictions_before = fleet
        .server
        .metric_sum("edgefleet_server_fleet_predictions_total");
    let refused_before = refused(&fleet);

    // Forgeries: a report far ahead (it would shadow every genuine one), a batch of 10^12
    // predictions, and an event of an install that never happened.
    let mut reported = unsealed(&genuine_reported);
    reported["seq"] = json!(reported["seq"].as_u64().unwrap() + 1_000_000);
    reported["models"] = json!([]);
    let reported = serde_json::to_vec(&reported).unwrap();
    let mut metrics = unsealed(&genuine_metrics);
    metrics["seq"] = json!(metrics["seq"].as_u64().unwrap() + 1_000_000);
    metrics["dropped_batches"] = json!(0);
    if let Some(first) = metrics["models"].get_mut(0) {
        first["requests"] = json!(1_000_000_000_000u64);
    }
    let metrics = serde_json::to_vec(&metrics).unwrap();
    let event = message::encode(&Event {
        schema: message::SCHEMA_VERSION,
        id: MessageId::from_random([42; 16]),
        device: DeviceId::new("dev-01").unwrap(),
        seq: 1_000_000,
        at_unix: 1,
        kind: EventKind::Committed,
        model: edgefleet_protocol::ModelName::new("churn").unwrap(),
        target: Some("models/churn/9.9.9/model.onnx".into()),
        rollout: None,
        detail: Some("forged".into()),
        evidence: Vec::new(),
    })
    .unwrap();
    let mut attacks = Vec::new();
    for (channel, message) in [
        ("reported", &reported),
        ("metrics", &metrics),
        ("events", &event),
    ] {
        // Plain, as if dev-01 had no key; and sealed with the key the attacker holds.
        attacks.push((topic(channel), message.clone()));
        attacks.push((topic(channel), stolen_key.seal(&topic(channel), message)));
    }
    // dev-01's own sealed report, replayed onto its events topic: the seal binds the topic.
    attacks.push((topic("events"), genuine_reported.clone()));
    let count = attacks.len() as f64;
    for (topic, payload) in attacks {
        intruder.publish(&topic, payload, false);
    }
    eventually("every forgery refused", Duration::from_secs(20), || {
        (refused(&fleet) >= refused_before + count).then_some(())
    });

    // Nothing forged was stored or counted; dev-01's genuine messages still are.
    assert!(stored_seq(&fleet) < 1_000_000, "a forged report was stored");
    let (_, events) = fleet.server.call(
        "GET",
        "/api/v1/events?device=dev-01&limit=500",
        Some(&admin),
        None,
    );
    assert!(
        !events.to_string().contains("9.9.9"),
        "a forged event was stored: {events}"
    );
    let predictions = fleet
        .server
        .metric_sum("edgefleet_server_fleet_predictions_total");
    assert!(
        predictions - predictions_before < 1e9,
        "forged predictions were counted: {predictions_before} -> {predictions}"
    );
    let stored_metrics = |fleet: &demo::Demo| {
        fleet.server.metric_sum(
            "edgefleet_server_mqtt_messages_total{channel=\"metrics\",outcome=\"stored\"}",
        )
    };
    let before = stored_metrics(&fleet);
    eventually(
        "dev-01's next genuine batch stored",
        Duration::from_secs(15),
        || (stored_metrics(&fleet) > before).then_some(()),
    );

    // A genuine update still reaches the attacked device.
    run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["device", "assign", "dev-01", "churn=2.0.0"]),
    );
    let agent = &fleet.agents[0];
    eventually("dev-01 committed 2.0.0", Duration::from_secs(60), || {
        let m = agent.model("churn");
        (m["active"]["version"] == "2.0.0" && m["state"] == "committed").then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "predictions failed during the attack ({} served)",
        served.load(Ordering::Relaxed)
    );
    assert!(served.load(Ordering::Relaxed) > 50);
}
