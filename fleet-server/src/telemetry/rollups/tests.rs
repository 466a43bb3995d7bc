use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_protocol::baseline::BinCounts;
use edgefleet_protocol::latency::LatencyHistogram;
use edgefleet_protocol::message::{MetricsBatch, ModelMetrics};
use edgefleet_protocol::quality::{Observation, QualityCounts};
use proptest::prelude::*;

use super::*;
use crate::telemetry::{by_version, series};

const START: i64 = 1_800_000_000 - 1_800_000_000 % HOUR;

/// One model's figures in a batch, all derived from `n` so that every field varies.
fn model(version: &str, n: u64) -> ModelMetrics {
    let mut latency = LatencyHistogram::default();
    for i in 0..n {
        latency.record(Duration::from_micros(300 + 211 * i));
    }
    let mut quality = QualityCounts::default();
    for i in 0..n % 5 {
        quality.add(&Observation::Class {
            predicted: "yes".into(),
            actual: if i % 2 == 0 { "yes" } else { "no" }.into(),
            positive_score: None,
        });
    }
    ModelMetrics {
        shadow: None,
        model: "churn".parse().unwrap(),
        version: version.parse().unwrap(),
        requests: n,
        errors: n / 6,
        latency: latency.summary(),
        latency_histogram: latency,
        predictions: [("yes".to_owned(), n / 2), ("no".to_owned(), n - n / 2)].into(),
        drift_psi: BTreeMap::new(),
        drift_counts: [(
            "tenure".to_owned(),
            BinCounts::from_dense(&[n % 3, n, n / 2, 1]),
        )]
        .into(),
        quality,
        samples: Vec::new(),
        samples_skipped: 0,
    }
}

/// Device `d{device}` (groups: even "a", odd "b"), its window ending `end` seconds after
/// [`START`], received `delay` seconds later.
fn unrolled(
    device: u8,
    seq: u64,
    end: i64,
    delay: i64,
    models: Vec<ModelMetrics>,
) -> UnrolledBatch {
    let end = START + end;
    UnrolledBatch {
        device: format!("d{device}"),
        seq,
        received_us: (end + delay) * 1_000_000 + 7,
        group: if device.is_multiple_of(2) { "a" } else { "b" }.into(),
        batch: Some(MetricsBatch {
            schema: 1,
            id: edgefleet_protocol::MessageId::new(format!("d{device}-{seq}")).unwrap(),
            device: edgefleet_protocol::DeviceId::new(format!("d{device}")).unwrap(),
            seq,
            window_start_unix: (end - 60) as u64,
            window_end_unix: end as u64,
            dropped_batches: seq % 3,
            process: Default::default(),
            models,
        }),
    }
}

fn baselines() -> Baselines {
    let mut b = Baselines::default();
    for version in ["1.0.0", "2.0.0"] {
        b.insert(
            "churn",
            version,
            [("tenure".to_owned(), vec![0.25, 0.25, 0.25, 0.25])].into(),
        );
    }
    b
}

/// What the raw figures and the rollups' are compared on: everything but device names.
fn without_names(
    mut versions: BTreeMap<(String, String), VersionFigures>,
) -> BTreeMap<(String, String), VersionFigures> {
    for f in versions.values_mut() {
        f.devices.clear();
        f.peak_devices = 0;
    }
    versions
}

/// Per version, the most distinct devices with a batch in one minute.
fn peak_devices(batches: &[UnrolledBatch], group: Option<&str>) -> BTreeMap<(String, String), u64> {
    let mut per_minute: BTreeMap<(String, String, i64), BTreeSet<String>> = BTreeMap::new();
    for u in batches
        .iter()
        .filter(|u| group.is_none_or(|g| u.group == g))
    {
        let b = u.batch.as_ref().unwrap();
        let minute = batch_time(b, u.received_us).div_euclid(MINUTE);
        for m in &b.models {
            per_minute
                .entry((m.model.to_string(), m.version.to_string(), minute))
                .or_default()
                .insert(u.device.clone());
        }
    }
    let mut peaks = BTreeMap::new();
    for ((model, version, _), devices) in per_minute {
        let peak = peaks.entry((model, version)).or_insert(0);
        *peak = (*peak).max(devices.len() as u64);
    }
    peaks
}

proptest! {
    /// Folded in passes of any size, minutes merged and compacted into hours at any point, the
    /// rows add up to the raw batches' figures: per version over the fleet and per group, the
    /// hourly chart, the batch counts, and the peak of devices reporting in one minute.
    #[test]
    fn rollups_equal_the_raw_batches(
        sent in prop::collection::btree_map(
            (0u8..6, 0i64..180),
            (0i64..40, 0u64..60, any::<bool>(), any::<bool>()),
            0..120,
        ),
        passes in prop::collection::vec(1usize..40, 1..6),
        merge_after in 0usize..6,
        compact_after in 0usize..6,
    ) {
        // One batch per device per minute (the map's key), in arrival order.
        let mut batches: Vec<UnrolledBatch> = sent
            .iter()
            .enumerate()
            .map(|(seq, (&(device, minute), &(delay, n, second_version, two_models)))| {
                let mut models = vec![model(if second_version { "2.0.0" } else { "1.0.0" }, n)];
                if two_models {
                    let mut other = model("1.0.0", n / 2);
                    other.model = "vision".parse().unwrap();
                    models.push(other);
                }
                unrolled(device, seq as u64, minute * MINUTE + 30, delay, models)
            })
            .collect();
        batches.sort_by_key(|b| b.received_us);

        let mut rows: Vec<NewRollup> = Vec::new();
        let mut taken = 0;
        let mut compacted = false;
        for (i, size) in passes.iter().cycle().take(batches.len()).enumerate() {
            if taken >= batches.len() {
                break;
            }
            let end = (taken + size).min(batches.len());
            rows.extend(fold(&batches[taken..end]));
            taken = end;
            // As the server does: one span at a time.
            let (minutes, hours): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.span == MINUTE);
            rows = hours;
            if i == merge_after {
                rows.extend(merge_rows(&minutes, MINUTE));
            } else if i == compact_after {
                rows.extend(merge_rows(&minutes, HOUR));
                compacted = true;
            } else {
                rows.extend(minutes);
            }
        }
        let rows = rows;
        let raw: Vec<MetricsBatch> = batches.iter().map(|b| b.batch.clone().unwrap()).collect();
        let group_of = |device: &str| device.trim_start_matches('d').parse::<u8>().unwrap().is_multiple_of(2);
        let b = baselines();

        let fleet = window_figures(&rows, &b, |_| true, Some("churn"), HOUR);
        prop_assert_eq!(without_names(fleet.versions.clone()), without_names(by_version(&raw, &b, |_| true)));
        prop_assert_eq!(&fleet.series, &series(&raw, "churn", HOUR, &b, |_| true));
        prop_assert_eq!(fleet.batches, raw.len() as u64);
        prop_assert_eq!(fleet.dropped_batches, raw.iter().map(|b| b.dropped_batches).sum::<u64>());

        let group_a = window_figures(&rows, &b, |g| g == "a", None, HOUR);
        prop_assert_eq!(
            without_names(group_a.versions.clone()),
            without_names(by_version(&raw, &b, group_of))
        );

        // Device peaks hold while no minute was compacted into its hour.
        if !compacted {
            let peaks: BTreeMap<(String, String), u64> = fleet
                .versions
                .iter()
                .map(|(k, f)| (k.clone(), f.device_count()))
                .collect();
            prop_assert_eq!(peaks, peak_devices(&batches, None));
        }
    }
}

#[test]
fn a_device_clock_ahead_cannot_put_figures_in_the_future() {
    let mut ahead = unrolled(1, 1, 10 * 86_400, 0, vec![model("1.0.0", 5)]);
    ahead.received_us = START * 1_000_000 + 5_000_000;
    let rows = fold(&[ahead]);
    assert!(rows.iter().all(|r| r.bucket == START), "{rows:?}");
}

#[test]
fn an_unreadable_batch_adds_nothing() {
    let mut broken = unrolled(1, 1, 60, 0, vec![model("1.0.0", 5)]);
    broken.batch = None;
    assert!(fold(&[broken]).is_empty());
}

#[test]
fn hour_rows_keep_the_peak_of_their_minutes() {
    // Minute 0: d0 and d2 (in two passes); minute 1: d0 alone.
    let passes = [
        fold(&[unrolled(0, 1, 30, 0, vec![model("1.0.0", 4)])]),
        fold(&[unrolled(2, 2, 31, 0, vec![model("1.0.0", 4)])]),
        fold(&[unrolled(0, 3, 90, 0, vec![model("1.0.0", 4)])]),
    ]
    .concat();
    let hours = merge_rows(&passes, HOUR);
    let per_group_a: Vec<_> = hours
        .iter()
        .filter(|r| r.model == "churn")
        .map(|r| {
            (
                r.group.as_str(),
                r.bucket,
                r.figures.devices,
                r.figures.requests,
            )
        })
        .collect();
    assert_eq!(per_group_a, [("a", START, 2, 12)]);
    let figures = window_figures(&hours, &baselines(), |_| true, None, HOUR);
    assert_eq!(
        figures.versions[&("churn".into(), "1.0.0".into())].device_count(),
        2
    );
}
