use std::time::Duration;

use edgefleet_protocol::baseline::FeatureBaseline;
use edgefleet_protocol::target::ModelTargetMeta;
use serde_json::json;

use super::*;
use crate::live::{MAX_LABELS, OTHER_LABEL};

fn meta_with_baseline() -> ModelTargetMeta {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/churn/1.0.0");
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

fn serving(telemetry: &Telemetry, meta: &ModelTargetMeta) -> Arc<LiveStats> {
    let stats = Arc::new(LiveStats::new(meta.baseline.as_ref()));
    telemetry.register(&meta.model, &meta.version, &stats);
    stats
}

#[test]
fn a_window_counts_requests_errors_labels_and_drift_then_starts_over() {
    let meta = meta_with_baseline();
    let baseline = meta.baseline.clone().unwrap();
    let (feature, spec) = baseline
        .features
        .iter()
        .find(|(_, f)| matches!(f, FeatureBaseline::Numeric { .. }))
        .unwrap();
    let FeatureBaseline::Numeric { edges, .. } = spec else {
        unreachable!()
    };
    let telemetry = Telemetry::default();
    let stats = serving(&telemetry, &meta);
    let far_above = edges.last().unwrap() + 1000.0;
    for i in 0..100 {
        if i % 10 == 0 {
            stats.record_failure();
            continue;
        }
        stats.record_success(Duration::from_millis(2));
        let row = serde_json::Map::from_iter([(feature.clone(), json!(far_above))]);
        stats.record_prediction(Some(if i % 2 == 0 { "stay" } else { "churn" }), Some(&row));
    }
    let taken = telemetry.take();
    assert_eq!(taken.len(), 1);
    let m = &taken[0];
    assert_eq!((m.requests, m.errors), (100, 10));
    assert_eq!(m.predictions.values().sum::<u64>(), 90);
    assert!(m.drift_psi[feature] > 1.0, "{:?}", m.drift_psi);
    // Every counted value is sent as a bin count, for the server to pool.
    let counted = m.drift_counts[feature].samples();
    assert_eq!(counted, 90, "{:?}", m.drift_counts);
    assert!((m.latency.p50_ms - 2.0).abs() < 0.1, "{:?}", m.latency);
    assert!((m.latency.max_ms - 2.0).abs() < 1e-9, "{:?}", m.latency);
    assert!(telemetry.take().is_empty(), "the next window starts empty");

    stats.record_success(Duration::from_millis(7));
    let next = telemetry.take();
    assert_eq!((next[0].requests, next[0].errors), (1, 0));
    assert!(next[0].predictions.is_empty(), "{:?}", next[0].predictions);
    assert!((next[0].latency.max_ms - 7.0).abs() < 1e-9);
}

#[test]
fn labels_beyond_the_cap_count_as_other() {
    let meta = meta_with_baseline();
    let telemetry = Telemetry::default();
    let stats = serving(&telemetry, &meta);
    for i in 0..(MAX_LABELS + 10) {
        stats.record_success(Duration::from_millis(1));
        stats.record_prediction(Some(&format!("l{i}")), None);
    }
    let m = &telemetry.take()[0];
    assert_eq!(m.predictions.len(), MAX_LABELS + 1);
    assert_eq!(m.predictions[OTHER_LABEL], 10);
}

#[test]
fn a_retired_slot_is_sent_once_and_stays_in_the_prometheus_totals() {
    let meta = meta_with_baseline();
    let telemetry = Arc::new(Telemetry::default());
    let old = serving(&telemetry, &meta);
    for _ in 0..5 {
        old.record_success(Duration::from_micros(300));
    }
    assert_eq!(telemetry.take()[0].requests, 5);
    old.record_success(Duration::from_micros(300));
    // The version is reloaded (a rollback back to it, a restart of its slot): a new slot.
    drop(old);
    let new = serving(&telemetry, &meta);
    new.record_success(Duration::from_micros(300));
    new.record_failure();
    let window = telemetry.take();
    assert_eq!(window.len(), 1, "one entry per version, both slots in it");
    assert_eq!((window[0].requests, window[0].errors), (3, 1));
    assert!(telemetry.take().is_empty());

    let text = scrape(&telemetry);
    let version = meta.version.to_string();
    let line =
        format!("edgefleet_inference_requests_total{{model=\"churn\",version=\"{version}\"}} 8");
    assert!(text.contains(&line), "{text}");
    let errors =
        format!("edgefleet_inference_errors_total{{model=\"churn\",version=\"{version}\"}} 1");
    assert!(text.contains(&errors), "{text}");
}

#[test]
fn a_slot_put_back_in_service_is_read_once() {
    let meta = meta_with_baseline();
    let telemetry = Telemetry::default();
    let stats = serving(&telemetry, &meta);
    telemetry.register(&meta.model, &meta.version, &stats);
    stats.record_success(Duration::from_micros(100));
    assert_eq!(telemetry.take()[0].requests, 1);
}

fn scrape(telemetry: &Arc<Telemetry>) -> String {
    let mut registry = prometheus_client::registry::Registry::with_prefix("edgefleet");
    registry.register_collector(Box::new(telemetry.clone()));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

#[test]
fn prometheus_buckets_are_exact_and_cumulative_counts_add_up() {
    let meta = meta_with_baseline();
    let telemetry = Arc::new(Telemetry::default());
    let stats = serving(&telemetry, &meta);
    // 40 µs (under the first bound, 49.6 µs), 60 µs (under 98 µs), 3 s (past the last bound).
    for micros in [40, 60, 60, 3_000_000] {
        stats.record_success(Duration::from_micros(micros));
    }
    let text = scrape(&telemetry);
    let version = meta.version.to_string();
    // (upper bound, cumulative count) as scraped; +Inf parses as infinity.
    let buckets: Vec<(f64, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("edgefleet_inference_seconds_bucket{le=\""))
        .map(|l| {
            let (le, rest) = l.split_once('"').unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, rest.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect();
    let bounds: Vec<f64> = prometheus_bounds().map(|(_, b)| b).collect();
    assert_eq!(buckets.len(), bounds.len() + 1, "{text}");
    for ((le, _), bound) in buckets.iter().zip(&bounds) {
        assert!((le - bound).abs() <= bound * 1e-12, "{le} vs {bound}");
    }
    let counts: Vec<u64> = buckets.iter().map(|(_, n)| *n).collect();
    assert_eq!(counts[0], 1);
    assert_eq!(counts[1], 3);
    assert_eq!(counts[16], 3);
    assert_eq!(counts[17], 4);
    let count =
        format!("edgefleet_inference_seconds_count{{model=\"churn\",version=\"{version}\"}} 4");
    assert!(text.contains(&count), "{text}");
    assert!(
        (prometheus_bounds().last().unwrap().1 - 2.7).abs() < 0.1,
        "the last bound stays near 2.7 s"
    );
}

#[test]
fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
    let stat = "1234 (edge agent (x)) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1";
    assert_eq!(cpu_ticks(stat), Some(281));
    assert_eq!(cpu_ticks("garbage"), None);
    let now = process_stats();
    assert!(now.rss_bytes > 1024 * 1024, "{now:?}");
}
