//! Live telemetry per model version, gathered on the prediction path and handed to the fleet
//! link once per window: requests, errors, latency quantiles, the distribution of predicted
//! labels, and input drift against the target's signed baseline (population stability index per
//! feature, with the baseline's own bins and `psi`). Plain logic behind a mutex; no clock, no I/O.
//!
//! Memory is bounded whatever the traffic: per model version a fixed log-scale latency histogram
//! (quantiles to within 5 %), one counter per baseline bin and per label seen (labels are capped).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use edgefleet_protocol::ModelName;
use edgefleet_protocol::baseline::{Baseline, FeatureBaseline, psi};
use edgefleet_protocol::latency::LatencyHistogram;
use edgefleet_protocol::message::{ModelMetrics, ProcessStats};
use edgefleet_protocol::target::ModelTargetMeta;
use serde_json::Value;

/// Distinct predicted labels kept per window; more are counted under `other`.
const MAX_LABELS: usize = 64;

/// One prediction as the serving path saw it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub latency: Duration,
    /// False when the model failed on a well-formed request.
    pub ok: bool,
    /// The predicted label, for classifiers.
    pub label: Option<&'a str>,
    /// The named input features, for feature-schema models.
    pub row: Option<&'a serde_json::Map<String, Value>>,
}

#[derive(Debug, Default)]
pub struct Telemetry {
    windows: Mutex<BTreeMap<(String, semver::Version), VersionWindow>>,
}

impl Telemetry {
    pub fn record(&self, meta: &ModelTargetMeta, observation: Observation<'_>) {
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        windows
            .entry((meta.model.to_string(), meta.version.clone()))
            .or_insert_with(|| VersionWindow::new(meta.baseline.as_ref()))
            .record(meta.baseline.as_ref(), &observation);
    }

    /// The figures of the window that ends now, one entry per model version that served in it;
    /// the next window starts empty.
    pub fn take(&self) -> Vec<ModelMetrics> {
        let Ok(mut windows) = self.windows.lock() else {
            return Vec::new();
        };
        std::mem::take(&mut *windows)
            .into_iter()
            .filter_map(|((model, version), window)| {
                Some(window.summary(ModelName::new(model).ok()?, version))
            })
            .collect()
    }
}

#[derive(Debug)]
struct VersionWindow {
    requests: u64,
    errors: u64,
    latency: LatencyHistogram,
    labels: BTreeMap<String, u64>,
    /// Per baseline feature, the count of observed values in each of its bins.
    bins: BTreeMap<String, FeatureCounts>,
}

#[derive(Debug)]
struct FeatureCounts {
    counts: Vec<u64>,
    expected: Vec<f64>,
}

impl VersionWindow {
    fn new(baseline: Option<&Baseline>) -> Self {
        let bins = baseline
            .map(|b| {
                b.features
                    .iter()
                    .map(|(name, feature)| {
                        let expected = feature.expected_shares();
                        (
                            name.clone(),
                            FeatureCounts {
                                counts: vec![0; expected.len()],
                                expected,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            requests: 0,
            errors: 0,
            latency: LatencyHistogram::default(),
            labels: BTreeMap::new(),
            bins,
        }
    }

    fn record(&mut self, baseline: Option<&Baseline>, observation: &Observation<'_>) {
        self.requests += 1;
        if !observation.ok {
            self.errors += 1;
            return;
        }
        self.latency.record(observation.latency);
        if let Some(label) = observation.label {
            let key = if self.labels.len() < MAX_LABELS || self.labels.contains_key(label) {
                label
            } else {
                "other"
            };
            *self.labels.entry(key.to_owned()).or_default() += 1;
        }
        if let (Some(row), Some(baseline)) = (observation.row, baseline) {
            for (name, feature) in &baseline.features {
                if let (Some(value), Some(counts)) = (row.get(name), self.bins.get_mut(name))
                    && let Some(bin) = bin_of(feature, value)
                {
                    counts.counts[bin] += 1;
                }
            }
        }
    }

    fn summary(self, model: ModelName, version: semver::Version) -> ModelMetrics {
        let drift_psi = self
            .bins
            .into_iter()
            .filter_map(|(name, c)| Some((name, psi(&c.expected, &c.counts)?)))
            .collect();
        ModelMetrics {
            model,
            version,
            requests: self.requests,
            errors: self.errors,
            latency: self.latency.summary(),
            latency_histogram: self.latency,
            predictions: self.labels,
            drift_psi,
        }
    }
}

/// Which bin of the baseline a value falls in: numeric bin `i` holds `edges[i-1] < x <=
/// edges[i]`; a category outside the baseline's counts as its last, `other`, bin. `None` for a
/// value of the wrong kind.
pub fn bin_of(feature: &FeatureBaseline, value: &Value) -> Option<usize> {
    match feature {
        FeatureBaseline::Numeric { edges, .. } => {
            let x = value.as_f64().filter(|x| x.is_finite())?;
            Some(FeatureBaseline::numeric_bin(edges, x))
        }
        FeatureBaseline::Categorical { shares, .. } => {
            // Boolean features are baselined as the categories "false" and "true".
            let category = match value {
                Value::Bool(true) => "true",
                Value::Bool(false) => "false",
                other => other.as_str()?,
            };
            Some(
                shares
                    .keys()
                    .position(|k| k == category)
                    .unwrap_or(shares.len()),
            )
        }
    }
}

/// The agent process's CPU time and resident memory, from `/proc/self` (zeros where it is not
/// readable). CPU ticks are in USER_HZ, which Linux fixes at 100 for user space on every
/// architecture; memory is `VmRSS` from `status`, in kB whatever the page size.
pub fn process_stats() -> ProcessStats {
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| cpu_ticks(&stat))
        .map_or(0.0, |ticks| ticks as f64 / 100.0);
    let rss_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    ProcessStats {
        cpu_seconds,
        rss_bytes,
    }
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn numeric() -> FeatureBaseline {
        FeatureBaseline::Numeric {
            edges: vec![10.0, 20.0, 30.0],
            shares: vec![0.25, 0.25, 0.25, 0.25],
        }
    }

    #[test]
    fn values_fall_in_the_baselines_bins() {
        let f = numeric();
        let bins: Vec<Option<usize>> = [5.0, 10.0, 10.5, 20.0, 30.0, 31.0, -1e9]
            .iter()
            .map(|x| bin_of(&f, &json!(x)))
            .collect();
        assert_eq!(
            bins,
            [
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(2),
                Some(3),
                Some(0)
            ]
        );
        assert_eq!(bin_of(&f, &json!("ten")), None);
        let c = FeatureBaseline::Categorical {
            shares: BTreeMap::from([("a".into(), 0.5), ("b".into(), 0.4)]),
            other: 0.1,
        };
        assert_eq!(bin_of(&c, &json!("b")), Some(1));
        assert_eq!(bin_of(&c, &json!("zzz")), Some(2));
        assert_eq!(bin_of(&c, &json!(3)), None);
        let flags = FeatureBaseline::Categorical {
            shares: [("false".to_owned(), 0.4), ("true".to_owned(), 0.6)].into(),
            other: 0.0,
        };
        assert_eq!(bin_of(&flags, &json!(true)), Some(1));
        assert_eq!(bin_of(&flags, &json!(false)), Some(0));
    }

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
        let far_above = edges.last().unwrap() + 1000.0;
        for i in 0..100 {
            let row = serde_json::Map::from_iter([(feature.clone(), json!(far_above))]);
            telemetry.record(
                &meta,
                Observation {
                    latency: Duration::from_millis(2),
                    ok: i % 10 != 0,
                    label: Some(if i % 2 == 0 { "stay" } else { "churn" }),
                    row: Some(&row),
                },
            );
        }
        let taken = telemetry.take();
        assert_eq!(taken.len(), 1);
        let m = &taken[0];
        assert_eq!((m.requests, m.errors), (100, 10));
        assert_eq!(m.predictions.values().sum::<u64>(), 90);
        assert!(m.drift_psi[feature] > 1.0, "{:?}", m.drift_psi);
        assert!((m.latency.p50_ms - 2.0).abs() < 0.1, "{:?}", m.latency);
        assert!(telemetry.take().is_empty(), "the next window starts empty");
    }

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "1234 (edge agent (x)) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1";
        assert_eq!(cpu_ticks(stat), Some(281));
        assert_eq!(cpu_ticks("garbage"), None);
        let now = process_stats();
        assert!(now.rss_bytes > 1024 * 1024, "{now:?}");
    }

    #[test]
    fn labels_beyond_the_cap_count_as_other() {
        let meta = meta_with_baseline();
        let telemetry = Telemetry::default();
        for i in 0..(MAX_LABELS + 10) {
            let label = format!("l{i}");
            telemetry.record(
                &meta,
                Observation {
                    latency: Duration::from_millis(1),
                    ok: true,
                    label: Some(&label),
                    row: None,
                },
            );
        }
        let m = &telemetry.take()[0];
        assert_eq!(m.predictions.len(), MAX_LABELS + 1);
        assert_eq!(m.predictions["other"], 10);
    }
}
