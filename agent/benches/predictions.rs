//! Figures for docs/BENCHMARKS.md: what the prediction log costs the agent. Per prediction: the
//! serving path's share (a new id, the answer queued) and the flusher's (its row written in a
//! transaction of 1,000, pruning included); on disk: bytes per kept prediction at the default
//! bound; on the wire: the bytes the quality counts add to a telemetry window, and what the
//! sampled log that leaves the device costs per prediction and sends per day.
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

    let sampling = sampling_figures();

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
    println!("{sampling}");
}

/// The sampled log: the serving path's draw (and, when picked, the sample built and its bytes
/// counted) per prediction, under the default policy (1 %, no features) and a wide one (10 %,
/// two features, review below 0.7); the mean sample's bytes; what leaves a device a day at
/// 1 and 10 predictions a second under the default.
fn sampling_figures() -> String {
    use edge_agent::sampling::{Answered, Sampler};
    use edgefleet_protocol::sampling::{ReviewPolicy, SamplingPolicy};

    let model = edgefleet_protocol::ModelName::new("churn").unwrap();
    let version = semver::Version::new(2, 0, 0);
    let row = serde_json::json!({
        "tenure_months": 20.0, "monthly_charges": 63.92, "total_charges": 1359.83,
        "contract_type": "month-to-month", "payment_method": "electronic-check",
        "internet_service": "dsl", "support_tickets": 0.0, "paperless_billing": true,
        "senior_citizen": false
    });
    let row = row.as_object().unwrap();
    let ids: Vec<String> = (0..200_000u64).map(id).collect();
    let run = |policy: &SamplingPolicy| {
        let sampler = Sampler::default();
        let started = Instant::now();
        for (k, id) in ids.iter().enumerate() {
            let score = 0.5 + (k % 50) as f64 / 100.0;
            sampler.offer(
                policy,
                &Answered {
                    model: &model,
                    version: &version,
                    id,
                    at_unix: 1_800_000_000 + k as u64 / 10_000,
                    label: Some("churn"),
                    score: Some(score),
                    value: None,
                    row: Some(row),
                },
            );
            // A telemetry window every 10,000 predictions, as the agent's loop takes them.
            if k % 10_000 == 9_999 {
                std::hint::black_box(sampler.take());
            }
        }
        started.elapsed().as_nanos() as f64 / ids.len() as f64
    };
    let default = SamplingPolicy::default();
    let wide = SamplingPolicy {
        rate: 0.1,
        max_bytes_per_day: 64 * 1024 * 1024,
        features: vec!["tenure_months".into(), "contract_type".into()],
        review: Some(ReviewPolicy {
            below_confidence: 0.7,
            rate: 1.0,
            max_per_day: 1_000_000,
        }),
    };
    let default_ns = run(&default);
    let wide_ns = run(&wide);
    // The mean size of what the default sends, from a real window of samples.
    let sampler = Sampler::default();
    let everything = SamplingPolicy {
        rate: 1.0,
        max_bytes_per_day: 64 * 1024 * 1024,
        ..SamplingPolicy::default()
    };
    for (k, id) in ids.iter().take(200).enumerate() {
        sampler.offer(
            &everything,
            &Answered {
                model: &model,
                version: &version,
                id,
                at_unix: 1_800_000_000,
                label: Some(if k % 2 == 0 { "churn" } else { "stay" }),
                score: Some(0.5 + (k % 50) as f64 / 100.0),
                value: None,
                row: Some(row),
            },
        );
    }
    let taken = sampler.take();
    let samples = &taken.values().next().unwrap().samples;
    let sample_bytes = serde_json::to_vec(samples).unwrap().len() as f64 / samples.len() as f64;
    let per_day = |per_second: f64| {
        (per_second * 86_400.0 * default.rate * sample_bytes).min(default.max_bytes_per_day as f64)
    };
    format!(
        "sampled prediction log (leaves the device in the telemetry window)\n  serving path per prediction: {default_ns:.0} ns (default: 1 %, no features), {wide_ns:.0} ns (10 %, two features, review below 0.7)\n  one sample as sent (id, label, score): {sample_bytes:.0} B\n  sent a day at the default: {:.0} KB at 1 prediction/s, {:.0} KB at 10/s (the 256 KiB cap)",
        per_day(1.0) / 1e3,
        per_day(10.0) / 1e3
    )
}
