//! Figures for docs/BENCHMARKS.md: what telemetry costs the agent — recording one prediction
//! (latency histogram, label count, a baseline bin per feature of the row) and closing a window
//! (PSI per feature, summary, encoding the batch) — and from those the share of one core it takes
//! at 1,000 predictions/s.
//!
//! `cargo bench -p edge-agent --bench telemetry`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use std::sync::Arc;

use edge_agent::live::LiveStats;
use edge_agent::telemetry::Telemetry;
use edgefleet_protocol::message::{self, MetricsBatch, ProcessStats, SCHEMA_VERSION};
use edgefleet_protocol::{DeviceId, MessageId};
use serde_json::{Value, json};

fn churn_meta() -> edgefleet_protocol::target::ModelTargetMeta {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/churn/2.0.0");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (interface, health, baseline) = (
        read("interface.json"),
        read("health.json"),
        read("baseline.json"),
    );
    edgefleet_protocol::target::ReleaseFiles {
        release: &read("release.json"),
        interface: &interface,
        health: &health,
        baseline: Some(&baseline),
    }
    .assemble()
    .unwrap()
}

fn rows() -> Vec<serde_json::Map<String, Value>> {
    (0..256)
        .map(|i| {
            let contract = ["month-to-month", "one-year", "two-year"][i % 3];
            let internet = ["dsl", "fiber", "none"][i % 3];
            let v = json!({
                "tenure_months": (i % 72) as f64, "monthly_charges": 20.0 + (i % 90) as f64,
                "total_charges": 50.0 * i as f64, "contract_type": contract,
                "payment_method": "bank-transfer", "internet_service": internet,
                "support_tickets": (i % 4) as f64, "paperless_billing": i % 2 == 0, "senior_citizen": i % 5 == 0
            });
            v.as_object().unwrap().clone()
        })
        .collect()
}

fn main() {
    let meta = churn_meta();
    let rows = rows();
    let telemetry = Telemetry::default();
    let stats = Arc::new(LiveStats::new(meta.baseline.as_ref()));
    telemetry.register(&meta.model, &meta.version, &stats);
    let record = |n: usize| {
        for i in 0..n {
            stats.record_success(Duration::from_micros(80 + (i % 400) as u64));
            stats.record_prediction(
                Some(if i % 3 == 0 { "churn" } else { "stay" }),
                Some(&rows[i % rows.len()]),
            );
        }
    };
    record(100_000);
    telemetry.take();

    let n = 1_000_000;
    let started = Instant::now();
    record(n);
    let per_record = started.elapsed().as_secs_f64() / n as f64;

    // A window of 60 s at 1,000 predictions/s, then what the agent does once per window.
    let windows = 200;
    let mut close = Duration::ZERO;
    let mut bytes = 0;
    for w in 0..windows {
        record(60_000);
        let started = Instant::now();
        let models = telemetry.take();
        let batch = MetricsBatch {
            schema: SCHEMA_VERSION,
            id: MessageId::from_random([w as u8; 16]),
            device: DeviceId::new("bench-device").unwrap(),
            seq: w,
            window_start_unix: 0,
            window_end_unix: 60,
            dropped_batches: 0,
            process: ProcessStats::default(),
            models,
        };
        bytes = message::encode(&batch).unwrap().len();
        close += started.elapsed();
    }
    let per_close = close.as_secs_f64() / windows as f64;
    let share = 1_000.0 * per_record + per_close / 60.0;
    println!(
        "record one prediction (9 features, label, latency): {:.0} ns",
        per_record * 1e9
    );
    println!(
        "close a window (PSI x9, summary, encode {bytes} B batch): {:.1} us",
        per_close * 1e6
    );
    println!(
        "at 1,000 predictions/s with 60 s windows: {:.3}% of one core (goal < 3%)",
        share * 100.0
    );
    println!(
        "batch bytes per device-day at 60 s windows: {:.0} kB",
        bytes as f64 * 1440.0 / 1e3
    );
}
