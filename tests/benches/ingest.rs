//! Figures for docs/BENCHMARKS.md: sustained device-message ingestion — events published at
//! QoS 1 by enrolled devices, through the broker, into the server's store (de-duplicated,
//! acknowledged only once stored) — on the embedded broker and on Mosquitto, into SQLite and into
//! a real PostgreSQL started for the run; and on Mosquitto + PostgreSQL with two server replicas
//! splitting the messages through the shared subscription.
//!
//! Uses the release binaries: `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench ingest`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use edgefleet_e2e::cpu_seconds;
use edgefleet_e2e::demo;
use edgefleet_e2e::fleet::{Broker, FleetOperator, MqttDevice, ServerProcess};
use edgefleet_protocol::baseline::BinCounts;
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
        evidence: Vec::new(),
    })
    .unwrap()
}

/// A telemetry batch as an agent serving churn sends one per window: two labels, a latency
/// histogram of ~40 buckets, a PSI for each of its 9 features.
fn metrics_batch(device: &str, index: usize, seq: u64) -> Vec<u8> {
    use edgefleet_protocol::latency::LatencyHistogram;
    use edgefleet_protocol::message::{MetricsBatch, ModelMetrics, ProcessStats};
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seq.to_le_bytes());
    id[8..12].copy_from_slice(&u32::try_from(index).unwrap().to_le_bytes());
    let mut latency = LatencyHistogram::default();
    for i in 0..6_000u64 {
        latency.record(Duration::from_micros(60 + (i * 7919 % 900)));
    }
    let features = [
        "contract_type",
        "internet_service",
        "monthly_charges",
        "paperless_billing",
        "payment_method",
        "senior_citizen",
        "support_tickets",
        "tenure_months",
        "total_charges",
    ];
    message::encode(&MetricsBatch {
        schema: message::SCHEMA_VERSION,
        id: MessageId::from_random(id),
        device: DeviceId::new(device).unwrap(),
        seq,
        window_start_unix: 1_800_000_000 + 60 * seq,
        window_end_unix: 1_800_000_060 + 60 * seq,
        dropped_batches: 0,
        process: ProcessStats {
            cpu_seconds: 12.5,
            rss_bytes: 31_000_000,
        },
        models: vec![ModelMetrics {
            shadow: None,
            model: ModelName::new("churn").unwrap(),
            version: "2.0.0".parse().unwrap(),
            requests: 6_000,
            errors: 0,
            latency: latency.summary(),
            latency_histogram: latency,
            predictions: [("churn".to_owned(), 1_700), ("stay".to_owned(), 4_300)].into(),
            drift_psi: features
                .iter()
                .enumerate()
                .map(|(i, f)| ((*f).to_owned(), 0.01 * i as f64))
                .collect(),
            // A minute of traffic over ten bins per feature, as the agent sends it.
            drift_counts: features
                .iter()
                .map(|f| {
                    let counts: Vec<u64> = (0..10).map(|bin| 500 + 10 * bin).collect();
                    ((*f).to_owned(), BinCounts::from_dense(&counts))
                })
                .collect(),
            quality: Default::default(),
            samples: Vec::new(),
            samples_skipped: 0,
        }],
    })
    .unwrap()
}

fn stored(metrics: &str, channel: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("edgefleet_server_mqtt_messages_total")
                && l.contains(&format!("channel=\"{channel}\""))
                && l.contains("outcome=\"stored\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn run(mosquitto: bool, postgres: bool, replicas: usize, channel: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let database = postgres.then(edgefleet_e2e::postgres::Postgres::start);
    let url = database.as_ref().map(|d| d.url());
    let shared = format!(
        "[artifacts]\nurl = \"{}\"\n[tuf]\nonline_keys_dir = \"{}\"\n",
        tmp.path().join("artifacts").display(),
        tmp.path().join("keys").display()
    );
    let (server, broker) = demo::start_server(tmp.path(), mosquitto, None, url.as_deref(), &shared);
    let others: Vec<ServerProcess> = (1..replicas)
        .map(|i| {
            ServerProcess::start_with(
                &tmp.path().join(format!("replica-{i}")),
                Broker::External {
                    url: broker.as_ref().expect("replicas need Mosquitto").url(),
                    password: demo::SERVER_PASSWORD.into(),
                    ca_file: None,
                },
                &format!(
                    "[database]\nurl = \"{}\"\n{shared}",
                    url.as_deref().expect("replicas need PostgreSQL")
                ),
            )
        })
        .collect();
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
    let servers: Vec<&ServerProcess> = std::iter::once(&server).chain(&others).collect();
    let metrics = || {
        servers
            .iter()
            .map(|s| {
                String::from_utf8(
                    edgefleet_e2e::http()
                        .get(&s.url("/metrics"))
                        .call()
                        .unwrap()
                        .body_mut()
                        .read_to_vec()
                        .unwrap(),
                )
                .unwrap()
            })
            .collect::<Vec<_>>()
            .join("\n")
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
    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let cpu = || pids.iter().map(|&pid| cpu_seconds(pid)).sum::<f64>();
    let cpu_before = cpu();
    let started = Instant::now();
    let threads: Vec<_> = devices
        .into_iter()
        .enumerate()
        .map(|(index, (id, device))| {
            let channel = channel.to_owned();
            std::thread::spawn(move || {
                let channel = channel.as_str();
                let payloads = (1..=EVENTS_PER_DEVICE)
                    .map(|seq| match channel {
                        "events" => event(&id, index, seq),
                        _ => metrics_batch(&id, index, seq),
                    })
                    .collect();
                device.publish_all(
                    &format!("edgefleet/v1/devices/{id}/{channel}"),
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
    while stored(&metrics(), channel) < total {
        assert!(
            Instant::now() < deadline,
            "not every message was stored:\n{}",
            metrics()
                .lines()
                .filter(|l| l.starts_with("edgefleet_server_mqtt"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu() - cpu_before;
    let storage = if channel == "metrics" && !postgres {
        // SQLite folds its WAL into the file when the server closes it.
        let mut server = server;
        server.stop_gracefully();
        let db = std::fs::metadata(tmp.path().join("server/data/fleet.db")).map(|m| m.len());
        match db {
            Ok(bytes) => format!(
                "; database {:.1} MB = {:.0} B per batch, {:.2} MB per device-day at 60 s windows",
                bytes as f64 / 1e6,
                bytes as f64 / total,
                bytes as f64 / total * 1440.0 / 1e6
            ),
            Err(e) => format!("; database size unknown: {e}"),
        }
    } else {
        String::new()
    };
    println!(
        "{} broker, {}, {replicas} server(s): {total} {channel} messages from {DEVICES} devices stored in {wall:.1} s = {:.0} messages/s; \
         server CPU {cpu:.1} s ({:.0}% of one core){storage}",
        if mosquitto { "Mosquitto" } else { "embedded" },
        if postgres { "PostgreSQL" } else { "SQLite" },
        total / wall,
        100.0 * cpu / wall
    );
}

/// `INGEST_CHANNEL=metrics` (or `events`) runs only that channel's measurements;
/// `INGEST_STORE=postgres` (or `sqlite`) only that store's.
fn main() {
    let only = std::env::var("INGEST_CHANNEL").ok();
    let wanted = |channel: &str| only.as_deref().is_none_or(|o| o == channel);
    let store = std::env::var("INGEST_STORE").ok();
    let stores: Vec<bool> = [false, true]
        .into_iter()
        .filter(|&postgres| {
            store
                .as_deref()
                .is_none_or(|s| s == if postgres { "postgres" } else { "sqlite" })
        })
        .collect();
    if wanted("events") {
        for &postgres in &stores {
            run(false, postgres, 1, "events");
            run(true, postgres, 1, "events");
        }
        if stores.contains(&true) {
            run(true, true, 2, "events");
        }
    }
    if wanted("metrics") {
        // Telemetry batches (~4 kB each with churn's drift bins, against ~0.3 kB events): 30,000
        // of them published at once are ~120 MB, more than the embedded broker's ring for one
        // filter (4 × 8 MiB), past which rumqttd moves a reader that fell behind to the head
        // (SERVER.md, "Embedded broker"); so they go through Mosquitto, which holds them.
        for &postgres in &stores {
            run(true, postgres, 1, "metrics");
        }
    }
}
