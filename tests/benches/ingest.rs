//! Figures for docs/BENCHMARKS.md: sustained device-message ingestion — events published at
//! QoS 1 by enrolled devices, through the broker, into the server's store (de-duplicated,
//! acknowledged only once stored) — on the embedded broker and on Mosquitto, into SQLite and into
//! a real PostgreSQL started for the run.
//!
//! Uses the release binaries: `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench ingest`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use edgefleet_e2e::cpu_seconds;
use edgefleet_e2e::demo;
use edgefleet_e2e::fleet::{FleetOperator, MqttDevice};
use edgefleet_protocol::message::{self, Event, EventKind};
use edgefleet_protocol::{DeviceId, MessageId, ModelName};

const DEVICES: usize = 10;
const EVENTS_PER_DEVICE: u64 = 3_000;

fn event(device: &str, index: usize, seq: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seq.to_le_bytes());
    id[8..12].copy_from_slice(&u32::try_from(index).unwrap().to_le_bytes());
    message::encode(&Event {
        schema: message::SCHEMA_VERSION,
        id: MessageId::from_random(id),
        device: DeviceId::new(device).unwrap(),
        seq,
        at_unix: 1_800_000_000,
        kind: EventKind::Committed,
        model: ModelName::new("churn").unwrap(),
        target: Some("models/churn/1.0.0/model.onnx".into()),
        rollout: None,
        detail: Some("ingestion bench".into()),
    })
    .unwrap()
}

fn stored_events(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("edgefleet_server_mqtt_messages_total")
                && l.contains("channel=\"events\"")
                && l.contains("outcome=\"stored\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn run(mosquitto: bool, postgres: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let database = postgres.then(edgefleet_e2e::postgres::Postgres::start);
    let url = database.as_ref().map(|d| d.url());
    let (server, broker) = demo::start_server(tmp.path(), mosquitto, None, url.as_deref(), "");
    let op = FleetOperator::new(&tmp.path().join("op"), &server);
    let credentials: Vec<(String, String)> = (0..DEVICES)
        .map(|i| {
            let id = format!("ingest-{i:02}");
            let credential = op.enroll(&server, &id, "bench");
            (id, credential)
        })
        .collect();
    let port = match &broker {
        Some(b) => {
            edgefleet_e2e::run_ok(
                server
                    .command("mosquitto-config")
                    .arg("--out-dir")
                    .arg(b.conf.parent().unwrap()),
            );
            b.reload();
            b.port
        }
        None => server.mqtt_port,
    };
    let metrics = || {
        String::from_utf8(
            edgefleet_e2e::http()
                .get(&server.url("/metrics"))
                .call()
                .unwrap()
                .body_mut()
                .read_to_vec()
                .unwrap(),
        )
        .unwrap()
    };
    let devices: Vec<(String, MqttDevice)> = credentials
        .into_iter()
        .map(|(id, credential)| {
            let device = edgefleet_e2e::fleet::eventually(
                "the broker to accept the device",
                Duration::from_secs(10),
                || MqttDevice::connect(port, &id, &id, &credential).ok(),
            );
            (id, device)
        })
        .collect();
    let pid = server.child.id();
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let threads: Vec<_> = devices
        .into_iter()
        .enumerate()
        .map(|(index, (id, device))| {
            std::thread::spawn(move || {
                let payloads = (1..=EVENTS_PER_DEVICE)
                    .map(|seq| event(&id, index, seq))
                    .collect();
                device.publish_all(
                    &format!("edgefleet/v1/devices/{id}/events"),
                    payloads,
                    Duration::from_secs(600),
                );
                device
            })
        })
        .collect();
    let total = (DEVICES as u64 * EVENTS_PER_DEVICE) as f64;
    let _devices: Vec<MqttDevice> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // A device's PUBACK says the broker has the message; the figure counts until the server
    // has stored every one (it acknowledges its own deliveries only after storing).
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored_events(&metrics()) < total {
        assert!(
            Instant::now() < deadline,
            "not every event was stored:\n{}",
            metrics()
                .lines()
                .filter(|l| l.starts_with("edgefleet_server_mqtt"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    println!(
        "{} broker, {}: {total} events from {DEVICES} devices stored in {wall:.1} s = {:.0} messages/s; \
         server CPU {cpu:.1} s ({:.0}% of one core)",
        if mosquitto { "Mosquitto" } else { "embedded" },
        if postgres { "PostgreSQL" } else { "SQLite" },
        total / wall,
        100.0 * cpu / wall
    );
}

fn main() {
    for postgres in [false, true] {
        run(false, postgres);
        run(true, postgres);
    }
}
