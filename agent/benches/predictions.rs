//! Figures for docs/BENCHMARKS.md: what the prediction log costs the agent. Per prediction: the
//! serving path's share (a new id, the answer queued) and the flusher's (its row written in a
//! transaction of 1,000, pruning included); on disk: bytes per kept prediction at the default
//! bound; on the wire: the bytes the quality counts add to a telemetry window.
//!
//! `cargo bench -p edge-agent --bench predictions`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use edge_agent::config::QualitySettings;
use edge_agent::predictions::{Answer, Logged, PredictionLog, Truth};
use edgefleet_protocol::quality::{Observation, QualityCounts};

fn id(i: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&i.to_le_bytes());
    bytes[8..].copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
    edgefleet_protocol::MessageId::from_random(bytes)
        .as_str()
        .to_owned()
}

fn logged(i: u64, at_unix: u64) -> Logged {
    let score = (i % 997) as f64 / 997.0;
    Logged {
        id: id(i),
        model: "churn".into(),
        version: "2.0.0".into(),
        at_unix,
        answer: Answer::Class {
            label: if score >= 0.5 { "churn" } else { "stay" }.into(),
            positive: Some(("churn".into(), score)),
        },
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let settings = QualitySettings::default();
    let rows = settings.max_predictions;
    let log = PredictionLog::open(&dir.path().join("predictions.db"), settings).unwrap();
    let t0 = 1_800_000_000;

    // The serving path: an id from the system's random source and the answer queued.
    let n = 20_000u64;
    let started = Instant::now();
    for i in 0..n {
        let mut bytes = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        let mut entry = logged(i, t0);
        entry.id = edgefleet_protocol::MessageId::from_random(bytes)
            .as_str()
            .to_owned();
        log.record(entry);
    }
    let serving_ns = started.elapsed().as_nanos() as f64 / n as f64;
    log.flush(t0).unwrap();

    // The flusher: the log filled to its bound, in transactions of 1,000 (a second of traffic at
    // 1,000 predictions/s), then more on top so every flush also prunes the oldest.
    let batch = 1_000u64;
    let mut i = n;
    while i < rows {
        for _ in 0..batch {
            log.record(logged(i, t0 + i / batch));
            i += 1;
        }
        log.flush(t0 + i / batch).unwrap();
    }
    let rounds = 20u64;
    let started = Instant::now();
    for _ in 0..rounds {
        for _ in 0..batch {
            log.record(logged(i, t0 + i / batch));
            i += 1;
        }
        log.flush(t0 + i / batch).unwrap();
    }
    let flush_ns = started.elapsed().as_nanos() as f64 / (rounds * batch) as f64;
    let disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();

    // Labels joined: a batch of 1,000 by id.
    let labels: Vec<(String, Truth)> = (i - 1_000..i)
        .map(|k| (id(k), Truth::Label("churn".into())))
        .collect();
    let started = Instant::now();
    let outcome = log.feedback("churn", &labels, t0 + i / batch).unwrap();
    let join_ns = started.elapsed().as_nanos() as f64 / labels.len() as f64;
    assert_eq!(outcome.accepted, 1_000);

    // What a window's quality counts weigh on the wire: every score bin in use (the most) and a
    // typical window of 50 labels.
    let size = |labels: u64| {
        let mut counts = QualityCounts::default();
        for k in 0..labels {
            let score = (k % 100) as f64 / 100.0 + 0.005;
            counts.add(&Observation::Class {
                predicted: if score >= 0.5 { "churn" } else { "stay" }.into(),
                actual: if k % 3 == 0 { "churn" } else { "stay" }.into(),
                positive_score: Some((score, k % 3 == 0)),
            });
        }
        serde_json::to_vec(&counts).unwrap().len()
    };

    println!("prediction log (churn answers, {rows} kept, the default bound)");
    println!("  serving path per prediction (id + queue): {serving_ns:.0} ns");
    println!(
        "  flusher per prediction (insert in 1,000-row transactions, pruning): {flush_ns:.0} ns"
    );
    println!(
        "  on disk: {:.1} MB for {rows} predictions ({:.0} B each)",
        disk as f64 / 1e6,
        disk as f64 / rows as f64
    );
    println!("  label joined per id (batch of 1,000): {join_ns:.0} ns");
    println!(
        "  quality counts in a telemetry window: {} B (50 labels), {} B (every score bin used)",
        size(50),
        size(10_000)
    );
}
