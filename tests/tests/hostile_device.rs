//! One enrolled device turns hostile, on each broker: with its own credential and key it makes
//! every attack of SECURITY.md's "Attacks from inside the fleet" a device can make — client-id
//! takeover, forged and replayed desired states (freeze, downgrade, 600 unsigned models), forged
//! reports and events (plain and sealed with its own key), an oversized message, an artifact
//! that is not its own, inputs beyond float32, the victim's local install API, slow connections
//! — one after another, while a client keeps asking the victim for predictions. Nothing is
//! stored or installed, no prediction fails, and a genuine rollout still reaches the victim.
//!
//! The attacks one by one, with the figures, have their own tests (the table names them); this
//! is the whole of it against real agents, a real broker and a live load.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use edgefleet_e2e::demo::{self, Demo, DemoOptions, Load};
use edgefleet_e2e::fleet::{MqttDevice, eventually};
use edgefleet_e2e::{churn_row, http, one_fleet_at_a_time, post_json, run_ok, unsigned_desired};
use edgefleet_protocol::message::{self, Event, EventKind, Reported, SCHEMA_VERSION};
use edgefleet_protocol::{DeviceId, MessageId, ModelName};
use edgefleet_sealed::DeviceKey;
use serde_json::json;

#[test]
fn on_the_embedded_broker_a_hostile_device_changes_nothing_and_a_genuine_rollout_still_reaches_the_victim()
 {
    a_hostile_device_changes_nothing(false);
}

#[test]
fn on_mosquitto_a_hostile_device_changes_nothing_and_a_genuine_rollout_still_reaches_the_victim() {
    a_hostile_device_changes_nothing(true);
}

fn desired_refused(fleet: &Demo) -> u64 {
    fleet.agents[0]
        .metric("edgefleet_desired_refused_total")
        .map_or(0, |v| v as u64)
}

/// Times the victim lost its broker connection, as its log says.
fn victim_disconnections(fleet: &Demo) -> usize {
    fleet.agents[0]
        .log_text()
        .matches("lost the fleet broker")
        .count()
}

/// churn 3.1.0: 2.0.0's network as different bytes (an unknown protobuf field ONNX parsers
/// skip), the operator's next genuine release.
fn release_3_1_0(dir: &Path) -> std::path::PathBuf {
    let from = edgefleet_e2e::models_dir().join("churn/2.0.0");
    let release = dir.join("churn-3.1.0");
    std::fs::create_dir_all(&release).unwrap();
    for file in ["interface.json", "health.json", "baseline.json"] {
        std::fs::copy(from.join(file), release.join(file)).unwrap();
    }
    let mut onnx = std::fs::read(from.join("model.onnx")).unwrap();
    onnx.extend_from_slice(&[0xC0, 0x3E, 0x01]);
    std::fs::write(release.join("model.onnx"), onnx).unwrap();
    std::fs::write(
        release.join("release.json"),
        json!({"model": "churn", "version": "3.1.0", "sequence": 5}).to_string(),
    )
    .unwrap();
    release
}

fn a_hostile_device_changes_nothing(mosquitto: bool) {
    let _serial = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let fleet = demo::set_up(
        tmp.path(),
        &DemoOptions {
            mosquitto,
            agent_fleet_toml: "telemetry_seconds = 1\n".into(),
            ..DemoOptions::embedded(2)
        },
    );
    let mut fleet = fleet;
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    assert_eq!(demo::roll_out(&fleet, "2.0.0", &[100.0], 0), "completed");
    fleet.operator.push("vision/1.0.0"); // signed, assigned to nobody
    let admin = fleet.operator.token();
    let load = Load::start(vec![fleet.agents[0].url("/v1/models/churn:predict")]);

    // dev-02 is compromised: its credential and its own sealing key are the attacker's.
    fleet.agents[1].kill();
    let credential = Demo::credential_of(tmp.path(), "dev-02");
    let stolen_key = DeviceKey::from_pkcs8(
        &std::fs::read(tmp.path().join("agents/dev-02/data/device.key")).unwrap(),
    )
    .expect("dev-02 made a key at enrollment");
    let port = fleet.mqtt_port();
    let victim_topic = |channel: &str| format!("edgefleet/v1/devices/dev-01/{channel}");
    let refused_before = desired_refused(&fleet);
    let disconnections_before = victim_disconnections(&fleet);
    let server_connections = || {
        fleet
            .server
            .metric_sum("edgefleet_server_mqtt_connections_total")
    };
    let server_connections_before = server_connections();

    // Attack 7: connect under the victim's client id. The embedded broker refuses a client id
    // that is not the user name; Mosquitto makes it the user name.
    let takeover = MqttDevice::connect(port, "dev-01", "dev-02", &credential);
    assert_eq!(
        takeover.is_ok(),
        mosquitto,
        "takeover: {:?}",
        takeover.err()
    );
    drop(takeover);

    let intruder = MqttDevice::connect(port, "dev-02", "dev-02", &credential).unwrap();
    // Its own signed desired state, to replay onto the victim's topic.
    intruder.subscribe("edgefleet/v1/devices/dev-02/desired");
    let own_desired = intruder
        .next_message(
            "edgefleet/v1/devices/dev-02/desired",
            Duration::from_secs(15),
        )
        .expect("dev-02's retained desired state");
    // Only Mosquitto has per-device topic rights: there the victim's retained desired state
    // never arrives (Mosquitto grants the SUBACK of an MQTT 3.1.1 subscription its ACL denies).
    intruder.subscribe(&victim_topic("+"));
    let read_victims = intruder
        .next_message(&victim_topic("desired"), Duration::from_secs(3))
        .is_some();
    assert_eq!(read_victims, !mosquitto);

    // Attacks 2, 3 and 8: unsigned desired states with the highest revision there is — the
    // freeze (nothing, or what it runs), the downgrade, 600 unsigned models — and dev-02's own
    // genuine, signed message replayed for dev-01.
    let many: Vec<String> = (0..600)
        .map(|i| format!("models/m{i}/1.0.0/model.onnx"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let forged_desired = [
        unsigned_desired("dev-01", u64::MAX, &[]),
        unsigned_desired("dev-01", u64::MAX, &["models/churn/2.0.0/model.onnx"]),
        unsigned_desired("dev-01", u64::MAX, &["models/churn/1.0.0/model.onnx"]),
        unsigned_desired("dev-01", u64::MAX, &many),
        own_desired,
    ];
    let forged_desired_count = forged_desired.len() as u64;
    for payload in forged_desired {
        intruder.publish(&victim_topic("desired"), payload, true);
    }

    // Attack 4: the victim's report and an install event, plain and sealed with dev-02's key.
    let reported = message::encode(&Reported {
        schema: SCHEMA_VERSION,
        id: MessageId::from_random([7; 16]),
        device: DeviceId::new("dev-01").unwrap(),
        seq: 1_000_000,
        at_unix: 1,
        agent_version: "9.9.9".into(),
        desired_revision: u64::MAX,
        models: vec![],
    })
    .unwrap();
    let event = message::encode(&Event {
        schema: SCHEMA_VERSION,
        id: MessageId::from_random([42; 16]),
        device: DeviceId::new("dev-01").unwrap(),
        seq: 1_000_000,
        at_unix: 1,
        kind: EventKind::Committed,
        model: ModelName::new("churn").unwrap(),
        target: Some("models/churn/9.9.9/model.onnx".into()),
        rollout: None,
        detail: Some("forged".into()),
        evidence: Vec::new(),
    })
    .unwrap();
    let server_refused = || {
        fleet.server.metric_sum(
            "edgefleet_server_mqtt_messages_total{channel=\"reported\",outcome=\"refused\"}",
        ) + fleet.server.metric_sum(
            "edgefleet_server_mqtt_messages_total{channel=\"events\",outcome=\"refused\"}",
        )
    };
    let server_refused_before = server_refused();
    for (channel, message) in [("reported", &reported), ("events", &event)] {
        let topic = victim_topic(channel);
        intruder.publish(&topic, message.clone(), false);
        intruder.publish(&topic, stolen_key.seal(&topic, message), false);
    }

    if mosquitto {
        // Mosquitto's ACL drops all of it before anyone sees it.
        std::thread::sleep(Duration::from_secs(3));
    } else {
        // The victim refuses every forged desired state; the server every forged report.
        eventually(
            "the victim refused every forged desired state",
            Duration::from_secs(20),
            || (desired_refused(&fleet) >= refused_before + forged_desired_count).then_some(()),
        );
        eventually(
            "the server refused every forged message",
            Duration::from_secs(20),
            || (server_refused() >= server_refused_before + 4.0).then_some(()),
        );
    }
    if !mosquitto {
        // The server noticed desired states it did not write on dev-01's topic and put the
        // genuine one back: a victim reconnecting now finds it retained.
        drop(intruder);
        eventually(
            "dev-01's genuine desired state retained again",
            Duration::from_secs(20),
            || {
                let probe = MqttDevice::connect(port, "dev-02", "dev-02", &credential).ok()?;
                probe.subscribe(&victim_topic("desired"));
                let bytes = probe.next_message(&victim_topic("desired"), Duration::from_secs(2))?;
                let desired = fleet.operator.verify_desired(&bytes, "dev-01").ok()?;
                (desired.revision < u64::MAX).then_some(())
            },
        );
        assert!(
            fleet
                .server
                .metric_sum("edgefleet_server_desired_restored_total")
                >= 1.0
        );
    }
    let model = fleet.agents[0].model("churn");
    assert_eq!(model["active"]["version"], "2.0.0", "{model}");
    assert_eq!(model["state"], "committed", "{model}");

    // Attack 1: an oversized message on its own topic; the broker cuts the intruder off, not
    // the server.
    let oversized = MqttDevice::connect(port, "dev-02", "dev-02", &credential).unwrap();
    oversized.fire("edgefleet/v1/devices/dev-02/events", vec![b'x'; 600 * 1024]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        http()
            .get(&fleet.server.url("/readyz"))
            .call()
            .unwrap()
            .status(),
        200
    );

    // Attack 5: an artifact not assigned to it, under a name that is.
    let vision_sha = edgefleet_tuf::artifact::file_sha256_hex(
        &edgefleet_e2e::models_dir().join("vision/1.0.0/model.onnx"),
    )
    .unwrap();
    // Release files likewise: vision's golden cases, and any blob under churn's file names.
    let release_file_sha = |dir: &str| {
        let (_, mut meta) =
            edgefleet_tuf::operator::read_release_dir(&edgefleet_e2e::models_dir().join(dir))
                .unwrap();
        edgefleet_tuf::release_files::detach(&mut meta, u64::MAX).unwrap()[0]
            .sha256_hex
            .clone()
    };
    let vision_golden = release_file_sha("vision/1.0.0");
    let churn_golden = release_file_sha("churn/2.0.0");
    for path in [
        format!("/tuf/targets/models/vision/1.0.0/{vision_sha}.model.onnx"),
        format!("/tuf/targets/models/churn/2.0.0/{vision_sha}.model.onnx"),
        format!("/tuf/targets/models/vision/1.0.0/{vision_golden}.golden.json"),
        format!("/tuf/targets/models/churn/2.0.0/{vision_golden}.golden.json"),
        format!("/tuf/targets/models/churn/2.0.0/{vision_sha}.golden.json"),
        format!("/tuf/targets/models/churn/2.0.0/{churn_golden}.baseline.json"),
    ] {
        let status = http()
            .get(&fleet.server.url(&path))
            .header("Authorization", &format!("Bearer {credential}"))
            .call()
            .unwrap()
            .status();
        assert_eq!(status, 403, "{path}");
    }

    // Attack 9: a value beyond float32 is a 400 naming the field, not a failure of the model.
    let mut row = churn_row(12.0);
    row["tenure_months"] = json!(-1e300);
    let (status, body) = post_json(&fleet.agents[0].url("/v1/models/churn:predict"), &row);
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("tenure_months"), "{body}");

    // Attack 10: the victim's local install API without its token.
    let (status, body) = post_json(
        &fleet.agents[0].url("/v1/admin/install"),
        &json!({"repository": "/tmp/evil"}),
    );
    assert_eq!(status, 401, "{body}");

    // Attack 6: slow connections, held while the genuine release goes out.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", fleet.server.http_port)).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();

    // A genuine rollout still reaches the victim, through all of it.
    run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["push", "--server"])
            .arg(release_3_1_0(tmp.path())),
    );
    // A rollout to the victim (dev-02's agent is gone: a rollout including it would wait for it).
    let (status, created) = fleet.server.call(
        "POST",
        "/api/v1/rollouts",
        Some(&admin),
        Some(
            &json!({"model": "churn", "version": "3.1.0", "devices": ["dev-01"], "waves": [100.0]}),
        ),
    );
    assert_eq!(status, 201, "{created}");
    let rollout = created["id"].as_str().unwrap().to_owned();
    eventually(
        "the rollout of 3.1.0 completed",
        Duration::from_secs(90),
        || {
            for s in &mut slow {
                let _ = s.write_all(b"X");
            }
            let (_, r) = fleet.server.call(
                "GET",
                &format!("/api/v1/rollouts/{rollout}"),
                Some(&admin),
                None,
            );
            match r["state"]["state"].as_str() {
                Some("completed") => Some(()),
                Some("running" | "baking") => None,
                other => panic!("the rollout ended {other:?}: {r:#}"),
            }
        },
    );
    let m = fleet.agents[0].model("churn");
    assert_eq!(m["active"]["version"], "3.1.0", "{m}");
    assert_eq!(m["state"], "committed", "{m}");
    drop(slow);
    let (served, failed) = load.stop();
    assert_eq!(failed, 0, "predictions failed during the attacks");
    assert!(served > 100, "{served} predictions served");

    // Nothing forged was stored; the server never lost its broker, the victim never lost its
    // connection, and on Mosquitto no forged desired state ever reached the victim.
    let (_, device) = fleet
        .server
        .call("GET", "/api/v1/devices/dev-01", Some(&admin), None);
    assert!(
        device["reported"]["seq"].as_u64().unwrap_or(0) < 1_000_000,
        "a forged report was stored: {device}"
    );
    assert_eq!(
        device["reported"]["models"][0]["active"]["version"], "3.1.0",
        "{device}"
    );
    let (_, events) = fleet.server.call(
        "GET",
        "/api/v1/events?device=dev-01&limit=1000",
        Some(&admin),
        None,
    );
    let events = events.to_string();
    assert!(!events.contains("9.9.9"), "a forged event was stored");
    assert!(
        !events.contains("models/m599"),
        "the 600 models left events"
    );
    let metrics = fleet.server.metrics_text();
    assert!(
        metrics.contains("edgefleet_server_mqtt_connected 1\n"),
        "{metrics}"
    );
    assert_eq!(
        server_connections(),
        server_connections_before,
        "the server had to reconnect to its broker"
    );
    assert_eq!(
        victim_disconnections(&fleet),
        disconnections_before,
        "the victim was knocked off its broker"
    );
    if mosquitto {
        assert_eq!(desired_refused(&fleet), refused_before);
    }
}
