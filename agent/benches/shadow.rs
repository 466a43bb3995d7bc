//! Figures for docs/BENCHMARKS.md: what a challenger in the shadow slot costs the champion.
//! Two threads (one per core of the reference machine) answer `:predict`-style requests with
//! churn 2.0.0 on tract as fast as they can — take the request's row (as the API parses it),
//! encode it, infer, read the prediction, and, with a shadow, the draw and moving the row into the
//! challenger's queue — with no shadow and with a shadow slot at 10 %, 50 % and
//! 100 % of requests (CPU budget 0.25 of a core, the default); the champion's p50/p99 and
//! throughput, and how many copies the challenger ran and shed. Then a split at 50 % (the same
//! model as challenger, so what shows is the split's own bookkeeping: the draw and each answer
//! counted and remembered for its arm). Then the memory of holding two
//! models: the process's resident set before and after a second copy of the vision model (4.7 MiB
//! of weights) is loaded beside the first.
//!
//! `cargo bench -p edge-agent --bench shadow` (`SHADOW_BENCH_MODEL=bad/slower-live` for a model
//! whose answer takes milliseconds)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use edge_agent::live::LiveStats;
use edge_agent::serving::Slot;
use edge_agent::shadow::{ChampionAnswer, Request, ShadowSlot};
use edgefleet_inference::Runtime;
use edgefleet_protocol::shadow::{DesiredShadow, ShadowCounts, SlotMode, to_ppm};
use edgefleet_protocol::split::Arm;
use edgefleet_protocol::target::ReleaseFiles;
use serde_json::{Map, Value};

const THREADS: usize = 2;
const RUN: Duration = Duration::from_secs(4);
const ROUNDS: usize = 5;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn slot(release: &str) -> Arc<Slot> {
    let dir = models().join(release);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (interface, health) = (read("interface.json"), read("health.json"));
    let meta = Arc::new(
        ReleaseFiles {
            release: &read("release.json"),
            interface: &interface,
            health: &health,
            baseline: None,
        }
        .assemble()
        .unwrap(),
    );
    let loaded = edgefleet_inference::tract::TractRuntime
        .load(&read("model.onnx"), &meta.interface)
        .unwrap();
    Arc::new(Slot {
        key: release.into(),
        target: release.into(),
        stats: Arc::new(LiveStats::new(None)),
        meta,
        model: loaded.model,
        trials: Vec::new(),
        trials_cached: false,
    })
}

fn rows() -> Vec<Map<String, Value>> {
    let field: Value =
        serde_json::from_slice(&std::fs::read(models().join("bad/decaying/field.json")).unwrap())
            .unwrap();
    field["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["features"].as_object().unwrap().clone())
        .collect()
}

struct Run {
    latencies_us: Vec<f64>,
    answered: usize,
}

/// Saturates the champion from `THREADS` threads for `RUN`, offering copies to `shadow`.
fn saturate(
    champion: &Arc<Slot>,
    shadow: Option<&Arc<ShadowSlot>>,
    rows: &Arc<Vec<Map<String, Value>>>,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (champion, shadow, rows, stop) = (
                champion.clone(),
                shadow.cloned(),
                rows.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let spec = champion.meta.interface.prediction.clone().unwrap();
                let mut latencies = Vec::with_capacity(200_000);
                let mut i = t * 397;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let started = Instant::now();
                    // The request's own row, as the local API parses it from each body: the
                    // shadow's copy then moves it, as `:predict` does, rather than cloning it.
                    let row = rows[i % rows.len()].clone();
                    // A split: the draw picks the arm that answers, and each answer is counted
                    // for its arm (as the local API does).
                    let split = shadow.as_ref().filter(|s| s.splits());
                    let (arm, answering) = match split {
                        Some(s) if s.draw() => (Arm::Challenger, &s.slot),
                        _ => (Arm::Champion, &champion),
                    };
                    let inputs = edgefleet_inference::features_to_input(
                        &answering.meta.interface,
                        std::slice::from_ref(&row),
                    )
                    .unwrap();
                    let outputs = answering.infer(&inputs).unwrap();
                    let scores = outputs[spec.output()].data.floats_as_f32().unwrap();
                    let prediction = spec.interpret(&scores);
                    // Every answer gets an id, whatever the configuration (the API makes one).
                    let id = format!("{t}-{i}");
                    if let Some(split) = split {
                        split.answered(arm, &id, prediction.label.as_deref(), started.elapsed());
                        drop(row);
                    } else if let Some(shadow) = shadow.as_ref().filter(|s| s.draw()) {
                        shadow.offer(&id, Request::Row(row), ChampionAnswer::of(&prediction));
                    } else {
                        // Freed within the request, as a picked row is when its copy is shed.
                        drop(row);
                    }
                    latencies.push(started.elapsed().as_secs_f64() * 1e6);
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(RUN);
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    latencies_us.sort_by(f64::total_cmp);
    let answered = latencies_us.len();
    Run {
        latencies_us,
        answered,
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    // Memory of a device holding both models: the vision model twice. First, before the
    // latency runs' figures take memory of their own.
    let before = rss_bytes();
    let first = slot("vision/1.0.0");
    let one = rss_bytes();
    let second = slot("vision/1.0.0");
    let two = rss_bytes();
    println!(
        "resident set: {:.1} MiB before, {:.1} MiB with one vision model (+{:.1} MiB), {:.1} MiB with a second beside it (+{:.1} MiB)",
        before as f64 / 1048576.0,
        one as f64 / 1048576.0,
        (one - before) as f64 / 1048576.0,
        two as f64 / 1048576.0,
        two.saturating_sub(one) as f64 / 1048576.0
    );
    drop((first, second));

    // A heavier model of the same interface: `SHADOW_BENCH_MODEL=bad/slower-live` (churn 2.0.0's
    // answers behind ~400 M multiply-adds), where one answer takes milliseconds, not microseconds.
    let model = std::env::var("SHADOW_BENCH_MODEL").unwrap_or_else(|_| "churn/2.0.0".into());
    let champion = slot(&model);
    let rows = Arc::new(rows());
    // Warm-up: tract's first runs and the allocator.
    saturate(&champion, None, &rows);
    println!(
        "champion {model} on tract, {THREADS} threads saturating for {RUN:?} per run, {ROUNDS} rounds of every configuration in turn:"
    );
    let modes = [
        (0.0, SlotMode::Shadow),
        (0.1, SlotMode::Shadow),
        (0.5, SlotMode::Shadow),
        (1.0, SlotMode::Shadow),
        (0.5, SlotMode::Split),
    ];
    // Interleaved rounds, so that a slow spell of the machine hits every configuration alike.
    let mut results: Vec<Vec<(Run, ShadowCounts)>> = modes.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (k, (share, mode)) in modes.iter().enumerate() {
            let shadow = (*share > 0.0).then(|| {
                Arc::new(
                    ShadowSlot::start(
                        slot(&model),
                        String::new(),
                        DesiredShadow {
                            target: String::new(),
                            artifact_urls: Vec::new(),
                            share_ppm: to_ppm(*share),
                            max_cpu_ppm: to_ppm(0.25),
                            mode: *mode,
                        },
                    )
                    .unwrap(),
                )
            });
            let run = saturate(&champion, shadow.as_ref(), &rows);
            std::thread::sleep(Duration::from_millis(200));
            let counts = shadow
                .as_ref()
                .and_then(|s| s.take())
                .map(|r| r.counts)
                .unwrap_or_default();
            results[k].push((run, counts));
        }
    }
    println!(
        "| configuration | answers/s (median) | p50 µs (median) | p99 µs per round | **p99 median** | vs none | copies run | copies shed |"
    );
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut base = None;
    for ((share, mode), runs) in modes.iter().zip(&results) {
        let p99s: Vec<f64> = runs
            .iter()
            .map(|(r, _)| quantile(&r.latencies_us, 0.99))
            .collect();
        let p99 = median(p99s.clone());
        let base = *base.get_or_insert(p99);
        let counts = runs
            .iter()
            .fold(ShadowCounts::default(), |mut all, (_, c)| {
                all.merge(c);
                all
            });
        println!(
            "| {} | {:.0} | {:.1} | {} | **{p99:.1}** | {:+.1} % | {} | {} |",
            match (*share, mode) {
                (0.0, _) => "none".to_owned(),
                (_, SlotMode::Split) => format!(
                    "split {:.0} % (answered {} / {})",
                    share * 100.0,
                    counts.split.challenger.answered,
                    counts.split.champion.answered
                ),
                _ => format!("shadow {:.0} %", share * 100.0),
            },
            median(
                runs.iter()
                    .map(|(r, _)| r.answered as f64 / RUN.as_secs_f64())
                    .collect()
            ),
            median(
                runs.iter()
                    .map(|(r, _)| quantile(&r.latencies_us, 0.5))
                    .collect()
            ),
            p99s.iter()
                .map(|p| format!("{p:.1}"))
                .collect::<Vec<_>>()
                .join(" / "),
            (p99 / base - 1.0) * 100.0,
            counts.compared,
            counts.shed
        );
    }
}
