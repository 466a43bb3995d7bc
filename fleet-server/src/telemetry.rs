//! What the fleet's telemetry says, computed from stored metrics batches: figures per model
//! version (over any set of devices: a group, a rollout), time series for charts, and the
//! verdict of a rollout's model-aware gates. Plain functions over decoded batches; the store
//! reads them, the API and the rollout engine call these.
//!
//! Latency quantiles come from merged histograms (never averaged quantiles). Input drift is
//! computed on pooled histograms too: devices send their live counts per baseline bin, the
//! figures add them up over devices and windows, and PSI is taken once, against the release's
//! signed baseline ([`crate::baselines`]), only when the pool holds enough samples
//! ([`drift_min_samples`]). Each window's own PSI, averaged, read a quiet healthy fleet as
//! drifting (a bias of about `(bins - 1) / samples` per window).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use edgefleet_protocol::baseline::{BinCounts, drift_min_samples, mix_psi, pooled_psi};
use edgefleet_protocol::latency::LatencyHistogram;
use edgefleet_protocol::message::{LatencySummary, MetricsBatch};
use edgefleet_protocol::quality::{QualityCounts, QualityFigures};
use serde::Serialize;

use crate::baselines::{Baselines, Expected};
use crate::rollout::{ModelGates, Verdict};
use crate::store::StoredMetrics;

/// One model version's figures summed over devices and windows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionFigures {
    pub devices: BTreeSet<String>,
    pub requests: u64,
    pub errors: u64,
    pub latency: LatencyHistogram,
    pub predictions: BTreeMap<String, u64>,
    /// Feature → live counts per baseline bin, pooled.
    drift_counts: BTreeMap<String, BinCounts>,
    /// The reference shares the pooled counts are judged against (the release's baseline).
    expected: Option<Arc<Expected>>,
    /// Labels joined on devices, summed.
    pub quality: QualityCounts,
    /// From rollups, where device names are not kept: the most devices that reported in one
    /// bucket of time.
    pub peak_devices: u64,
}

impl VersionFigures {
    fn add(&mut self, device: &str, m: &edgefleet_protocol::message::ModelMetrics) {
        self.devices.insert(device.to_owned());
        rollups::add_sums(self.sums_into(), m.into());
    }

    fn sums_into(&mut self) -> rollups::SumsInto<'_> {
        rollups::SumsInto {
            requests: &mut self.requests,
            errors: &mut self.errors,
            latency: &mut self.latency,
            predictions: &mut self.predictions,
            drift_counts: &mut self.drift_counts,
            quality: &mut self.quality,
        }
    }

    /// Adds one rollup bucket's figures ([`rollups`]).
    pub fn absorb_rollup(&mut self, f: &crate::store::rollups::RollupFigures) {
        self.peak_devices = self.peak_devices.max(f.devices);
        rollups::add_sums(self.sums_into(), f.into());
    }

    /// Devices behind the figures: those named, or from rollups the peak reporting at once.
    pub fn device_count(&self) -> u64 {
        (self.devices.len() as u64).max(self.peak_devices)
    }

    pub fn merge(&mut self, other: &VersionFigures) {
        self.devices.extend(other.devices.iter().cloned());
        self.peak_devices = self.peak_devices.max(other.peak_devices);
        let sums = rollups::Sums {
            requests: other.requests,
            errors: other.errors,
            latency: &other.latency,
            predictions: &other.predictions,
            drift_counts: &other.drift_counts,
            quality: &other.quality,
        };
        rollups::add_sums(self.sums_into(), sums);
        if self.expected.is_none() {
            self.expected = other.expected.clone();
        }
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// Judges drift against `expected` (the version's signed baseline).
    pub fn with_baseline(mut self, expected: Option<Arc<Expected>>) -> Self {
        self.expected = expected;
        self
    }

    /// Feature → PSI of the pooled counts against the baseline, for the features whose pool
    /// holds enough samples to say anything ([`drift_min_samples`]).
    pub fn drift_psi(&self) -> BTreeMap<String, f64> {
        let Some(expected) = &self.expected else {
            return BTreeMap::new();
        };
        self.drift_counts
            .iter()
            .filter_map(|(f, counts)| Some((f.clone(), pooled_psi(expected.get(f)?, counts)?)))
            .collect()
    }

    /// Feature → samples pooled in its baseline's bins, and how many its drift figure needs.
    pub fn drift_samples(&self) -> BTreeMap<String, DriftSamples> {
        let Some(expected) = &self.expected else {
            return BTreeMap::new();
        };
        self.drift_counts
            .iter()
            .filter_map(|(f, counts)| {
                let bins = expected.get(f)?.len();
                let samples = DriftSamples {
                    pooled: counts.samples_within(bins),
                    needed: drift_min_samples(bins),
                };
                Some((f.clone(), samples))
            })
            .collect()
    }

    /// The most drifted feature and its PSI.
    pub fn worst_drift(&self) -> Option<(String, f64)> {
        self.drift_psi()
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    pub fn report(&self, model: &str, version: &str) -> VersionReport {
        VersionReport {
            model: model.to_owned(),
            version: version.to_owned(),
            devices: self.device_count() as usize,
            requests: self.requests,
            errors: self.errors,
            error_rate: self.error_rate(),
            latency_ms: self.latency.summary(),
            predictions: self.predictions.clone(),
            drift_psi: self.drift_psi(),
            drift_samples: self.drift_samples(),
            quality: (!self.quality.is_empty()).then(|| self.quality.figures()),
        }
    }
}

/// A version's figures as the API shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionReport {
    pub model: String,
    pub version: String,
    pub devices: usize,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub latency_ms: LatencySummary,
    pub predictions: BTreeMap<String, u64>,
    /// Only features with enough samples pooled (see `drift_samples`).
    pub drift_psi: BTreeMap<String, f64>,
    /// Feature → how many live values were pooled, and how many its drift figure waits for.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub drift_samples: BTreeMap<String, DriftSamples>,
    /// Ground truth joined on the devices, when any label arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityFigures>,
}

/// Samples behind a feature's drift figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DriftSamples {
    pub pooled: u64,
    pub needed: u64,
}

/// The batches of stored rows (the store already left out any it could not read).
pub fn batches(stored: Vec<StoredMetrics>) -> Vec<MetricsBatch> {
    stored.into_iter().map(|s| s.batch).collect()
}

/// A rollout's new version's figures and those of the versions it replaces (merged), over its
/// own devices' batches, read whole: what the incrementally kept evidence is tested against
/// (the gates and the API no longer read it this way).
#[cfg(test)]
pub fn rollout_evidence(
    rollout: &crate::rollout::Rollout,
    batches: &[MetricsBatch],
    baselines: &Baselines,
) -> (VersionFigures, VersionFigures) {
    let members: BTreeSet<&str> = rollout.devices.iter().map(|d| d.id.as_str()).collect();
    evidence_of(
        rollout,
        by_version(batches, baselines, |d| members.contains(d)),
    )
}

/// [`rollout_evidence`] from (model, version) → figures already gathered over the rollout's
/// own devices.
pub fn evidence_of(
    rollout: &crate::rollout::Rollout,
    versions: impl IntoIterator<Item = ((String, String), VersionFigures)>,
) -> (VersionFigures, VersionFigures) {
    // The versions the rollout replaces, as its devices ran them when it started; an older
    // version some device served an hour ago is no reference.
    let replaced: BTreeSet<&str> = rollout
        .devices
        .iter()
        .filter_map(|d| d.previous_version.as_deref())
        .filter(|v| *v != rollout.spec.version)
        .collect();
    let mut candidate = VersionFigures::default();
    let mut previous = VersionFigures::default();
    for ((model, version), figures) in versions {
        if model != rollout.spec.model {
            continue;
        }
        if version == rollout.spec.version {
            candidate = figures;
        } else if replaced.contains(version.as_str()) {
            previous.merge(&figures);
        }
    }
    (candidate, previous)
}

/// (model, version) → figures, over the batches of devices `include` accepts, drift judged
/// against each version's baseline in `baselines`.
pub fn by_version(
    batches: &[MetricsBatch],
    baselines: &Baselines,
    include: impl Fn(&str) -> bool,
) -> BTreeMap<(String, String), VersionFigures> {
    let mut out: BTreeMap<(String, String), VersionFigures> = BTreeMap::new();
    for batch in batches.iter().filter(|b| include(b.device.as_str())) {
        for m in &batch.models {
            let (model, version) = (m.model.to_string(), m.version.to_string());
            out.entry((model, version))
                .or_insert_with_key(|(model, version)| {
                    VersionFigures::default().with_baseline(baselines.get(model, version))
                })
                .add(batch.device.as_str(), m);
        }
    }
    out
}

/// A figure measured on labelled field traffic that fell short of what the release's signed
/// lineage claims from its evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decay {
    pub metric: String,
    /// The release's own evaluation figure.
    pub release: f64,
    /// The same figure over the labels joined in the field.
    pub field: f64,
}

/// The metrics in which `field` decayed against `release` (accuracy and ROC AUC more than
/// `tolerance` lower; MAE and RMSE more than `tolerance` times higher), once at least
/// `min_labelled` labels were joined.
pub fn decay(
    field: &QualityFigures,
    release: &BTreeMap<String, f64>,
    tolerance: f64,
    min_labelled: u64,
) -> Vec<Decay> {
    if field.labelled < min_labelled {
        return Vec::new();
    }
    let higher_is_better = [("accuracy", field.accuracy), ("roc_auc", field.roc_auc)];
    let lower_is_better = [("mae", field.mae), ("rmse", field.rmse)];
    let decayed = |metric: &str, measured: Option<f64>, worse: &dyn Fn(f64, f64) -> bool| {
        let claimed = *release.get(metric)?;
        let measured = measured?;
        worse(claimed, measured).then(|| Decay {
            metric: metric.to_owned(),
            release: claimed,
            field: measured,
        })
    };
    let mut out: Vec<Decay> = higher_is_better
        .iter()
        .filter_map(|(m, v)| decayed(m, *v, &|claimed, measured| measured < claimed - tolerance))
        .collect();
    out.extend(lower_is_better.iter().filter_map(|(m, v)| {
        decayed(m, *v, &|claimed, measured| {
            measured > claimed * (1.0 + tolerance)
        })
    }));
    out
}

/// One point of a version's time series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Start of the step, Unix seconds.
    pub at: i64,
    pub version: String,
    pub requests: u64,
    pub error_rate: f64,
    pub p99_ms: f64,
    /// The most drifted feature's PSI in the step (pooled over its devices; none while the step
    /// holds too few samples).
    pub max_drift_psi: Option<f64>,
    /// Labels that reached the devices in the step (for predictions made then or earlier).
    pub labelled: u64,
    /// Their accuracy (classifiers).
    pub accuracy: Option<f64>,
}

/// `model`'s figures per version in steps of `step` seconds (by each window's end).
pub fn series(
    batches: &[MetricsBatch],
    model: &str,
    step: i64,
    baselines: &Baselines,
    include: impl Fn(&str) -> bool,
) -> Vec<SeriesPoint> {
    let step = step.max(1);
    let mut steps: BTreeMap<(i64, String), VersionFigures> = BTreeMap::new();
    for batch in batches.iter().filter(|b| include(b.device.as_str())) {
        let at = (batch.window_end_unix as i64).div_euclid(step) * step;
        for m in batch.models.iter().filter(|m| m.model.as_str() == model) {
            steps
                .entry((at, m.version.to_string()))
                .or_insert_with_key(|(_, version)| {
                    VersionFigures::default().with_baseline(baselines.get(model, version))
                })
                .add(batch.device.as_str(), m);
        }
    }
    points(steps)
}

/// The chart's points of figures per (step start, version).
pub(crate) fn points(steps: BTreeMap<(i64, String), VersionFigures>) -> Vec<SeriesPoint> {
    steps
        .into_iter()
        .map(|((at, version), f)| SeriesPoint {
            at,
            version,
            requests: f.requests,
            error_rate: f.error_rate(),
            p99_ms: f.latency.quantile_ms(0.99),
            max_drift_psi: f.worst_drift().map(|(_, v)| v),
            labelled: f.quality.labelled,
            accuracy: f.quality.figures().accuracy,
        })
        .collect()
}

/// How far the candidate's predicted-label distribution moved from the previous version's:
/// PSI over the labels either saw. `None` without predictions on both sides.
pub fn output_shift(
    candidate: &BTreeMap<String, u64>,
    previous: &BTreeMap<String, u64>,
) -> Option<f64> {
    let previous_total: u64 = previous.values().sum();
    if previous_total == 0 {
        return None;
    }
    let expected: BTreeMap<String, f64> = previous
        .iter()
        .map(|(label, n)| (label.clone(), *n as f64 / previous_total as f64))
        .collect();
    mix_psi(&expected, candidate)
}

/// Judges a rollout's candidate against the devices still on (or, before updating, on) the
/// previous version. Input drift is judged on the candidate alone (against its signed
/// baseline); the rest compare with the previous version and need `min_requests` on both sides.
pub fn judge(gates: &ModelGates, candidate: &VersionFigures, previous: &VersionFigures) -> Verdict {
    let need = gates.min_requests;
    if candidate.requests < need {
        return Verdict::Insufficient(format!(
            "the new version has served {} of the {need} requests the gates need",
            candidate.requests
        ));
    }
    if let Some(limit) = gates.max_input_drift_psi
        && let Some((feature, value)) = candidate.worst_drift()
        && value > limit
    {
        return Verdict::Breach(format!(
            "input drift: feature {feature} has PSI {value:.3} against the model's baseline, above the gate's {limit}"
        ));
    }
    if gates.max_input_drift_psi.is_some()
        && let Some((feature, samples)) = candidate
            .drift_samples()
            .into_iter()
            .find(|(_, s)| s.pooled < s.needed)
    {
        return Verdict::Insufficient(format!(
            "input drift: feature {feature} has {} of the {} live values its drift figure needs",
            samples.pooled, samples.needed
        ));
    }
    if gates.compares() && previous.requests < need {
        return Verdict::Insufficient(format!(
            "the previous version has served {} of the {need} requests needed to compare against",
            previous.requests
        ));
    }
    if let Some(limit) = gates.max_error_rate_increase {
        let (new, old) = (candidate.error_rate(), previous.error_rate());
        if new > old + limit {
            return Verdict::Breach(format!(
                "error rate {:.2}% against {:.2}% on the previous version (at most {:.2} points more allowed)",
                new * 100.0,
                old * 100.0,
                limit * 100.0
            ));
        }
    }
    if let Some(percent) = gates.max_p99_slowdown_percent {
        let (new, old) = (
            candidate.latency.quantile_ms(0.99),
            previous.latency.quantile_ms(0.99),
        );
        if new > old * (1.0 + percent / 100.0) {
            return Verdict::Breach(format!(
                "p99 latency {new:.2} ms against {old:.2} ms on the previous version ({:+.0}%, at most +{percent}% allowed)",
                (new / old.max(f64::MIN_POSITIVE) - 1.0) * 100.0
            ));
        }
    }
    if let Some(limit) = gates.max_output_shift_psi
        && let Some(shift) = output_shift(&candidate.predictions, &previous.predictions)
        && shift > limit
    {
        return Verdict::Breach(format!(
            "output distribution moved: PSI {shift:.3} between the new and the previous version's predictions, above the gate's {limit}"
        ));
    }
    if let Some(limit) = gates.max_accuracy_drop {
        let need = gates.min_labelled;
        let accuracy = |f: &VersionFigures| {
            f.quality
                .figures()
                .accuracy
                .filter(|_| f.quality.labelled >= need)
        };
        let (Some(new), Some(old)) = (accuracy(candidate), accuracy(previous)) else {
            return Verdict::Insufficient(format!(
                "the accuracy gate needs {need} labels on each version; the new one has {}, the previous one {}",
                candidate.quality.labelled, previous.quality.labelled
            ));
        };
        if new < old - limit {
            return Verdict::Breach(format!(
                "accuracy on labelled traffic {:.1}% against {:.1}% on the previous version ({} and {} labels; at most {:.1} points lower allowed)",
                new * 100.0,
                old * 100.0,
                candidate.quality.labelled,
                previous.quality.labelled,
                limit * 100.0
            ));
        }
    }
    Verdict::Pass(format!(
        "{} requests, {:.2}% errors, p99 {:.2} ms (previous: {} requests, {:.2}% errors, p99 {:.2} ms)",
        candidate.requests,
        candidate.error_rate() * 100.0,
        candidate.latency.quantile_ms(0.99),
        previous.requests,
        previous.error_rate() * 100.0,
        previous.latency.quantile_ms(0.99),
    ))
}

pub mod arrivals;
pub mod evidence;
pub mod pending;
#[cfg(test)]
mod quiet_fleet;
pub mod rollups;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use edgefleet_protocol::message::ModelMetrics;
    use edgefleet_protocol::quality::Observation;
    use std::time::Duration;

    fn labelled(right: u64, wrong: u64) -> QualityCounts {
        let mut counts = QualityCounts::default();
        for i in 0..right + wrong {
            counts.add(&Observation::Class {
                predicted: "churn".into(),
                actual: if i < right { "churn" } else { "stay" }.into(),
                positive_score: None,
            });
        }
        counts
    }

    #[test]
    fn labels_from_devices_and_windows_add_up_per_version() {
        let mut a = metrics("1.0.0", 10, 0, 5);
        a.quality = labelled(30, 10);
        let mut b = metrics("1.0.0", 0, 0, 5);
        b.quality = labelled(50, 10);
        let mut figures = VersionFigures::default();
        figures.add("d1", &a);
        figures.add("d2", &b);
        let report = figures.report("churn", "1.0.0");
        let quality = report.quality.unwrap();
        assert_eq!(quality.labelled, 100);
        assert_eq!(quality.accuracy, Some(0.8));
        assert_eq!(
            VersionFigures::default().report("churn", "1.0.0").quality,
            None
        );
    }

    #[test]
    fn decay_is_flagged_against_the_signed_evaluation_once_enough_labels_joined() {
        let release: BTreeMap<String, f64> =
            [("accuracy".to_owned(), 0.8), ("rmse".to_owned(), 1.0)].into();
        let field = labelled(140, 60).figures();
        assert_eq!(field.accuracy, Some(0.7));
        let decayed = decay(&field, &release, 0.05, 200);
        assert_eq!(decayed.len(), 1);
        assert_eq!(decayed[0].metric, "accuracy");
        // Within tolerance, too few labels, or no claim to compare with: nothing.
        assert!(decay(&labelled(152, 48).figures(), &release, 0.05, 200).is_empty());
        assert!(decay(&labelled(14, 6).figures(), &release, 0.05, 200).is_empty());
        assert!(decay(&field, &BTreeMap::new(), 0.05, 200).is_empty());
        let mut errors = QualityCounts::default();
        for _ in 0..200 {
            errors.add(&Observation::Value {
                predicted: 2.5,
                actual: 1.0,
            });
        }
        let decayed = decay(&errors.figures(), &release, 0.05, 200);
        assert_eq!(decayed.len(), 1);
        assert_eq!(decayed[0].metric, "rmse");
    }

    /// `device`'s batch of 60 s window number `seq`, with one version's figures.
    pub(super) fn batch(device: &str, seq: u64, m: ModelMetrics) -> MetricsBatch {
        MetricsBatch {
            models: vec![m],
            ..batch_without_models(device, seq)
        }
    }

    /// `device`'s batch of 60 s window number `seq`, with no model's figures: the device heard
    /// from, nothing more.
    pub(crate) fn batch_without_models(device: &str, seq: u64) -> MetricsBatch {
        MetricsBatch {
            schema: 1,
            id: edgefleet_protocol::MessageId::new(format!("{device}-{seq}")).unwrap(),
            device: edgefleet_protocol::DeviceId::new(device.to_owned()).unwrap(),
            seq,
            window_start_unix: 60 * seq,
            window_end_unix: 60 * seq + 60,
            dropped_batches: 0,
            process: Default::default(),
            models: Vec::new(),
        }
    }

    fn metrics(version: &str, requests: u64, errors: u64, latency_ms: u64) -> ModelMetrics {
        let mut h = LatencyHistogram::default();
        for _ in 0..requests - errors {
            h.record(Duration::from_millis(latency_ms));
        }
        ModelMetrics {
            shadow: None,
            model: "churn".parse().unwrap(),
            version: version.parse().unwrap(),
            requests,
            errors,
            latency: h.summary(),
            latency_histogram: h,
            predictions: [
                ("yes".to_owned(), requests / 2),
                ("no".to_owned(), requests / 2),
            ]
            .into(),
            drift_psi: [("tenure".to_owned(), 0.01)].into(),
            drift_counts: BTreeMap::new(),
            quality: Default::default(),
            samples: Vec::new(),
            samples_skipped: 0,
        }
    }

    fn figures(m: &ModelMetrics) -> VersionFigures {
        let mut f = VersionFigures::default();
        f.add("d1", m);
        f
    }

    fn gates() -> ModelGates {
        ModelGates {
            min_requests: 100,
            max_error_rate_increase: Some(0.01),
            max_p99_slowdown_percent: Some(50.0),
            max_output_shift_psi: Some(0.2),
            max_input_drift_psi: Some(0.25),
            max_accuracy_drop: None,
            min_labelled: 100,
        }
    }

    #[test]
    fn the_accuracy_gate_waits_for_labels_on_both_sides_then_compares() {
        let gates = ModelGates {
            max_accuracy_drop: Some(0.02),
            ..gates()
        };
        let with_labels = |version: &str, right: u64, wrong: u64| {
            let mut m = metrics(version, 1000, 0, 2);
            m.quality = labelled(right, wrong);
            figures(&m)
        };
        let old = with_labels("1.0.0", 160, 40);
        // 80 % against 80 %: passes; with too few labels on the new side: no verdict yet.
        assert!(matches!(
            judge(&gates, &with_labels("2.0.0", 80, 20), &old),
            Verdict::Pass(_)
        ));
        let Verdict::Insufficient(why) = judge(&gates, &with_labels("2.0.0", 40, 10), &old) else {
            panic!("judged on 50 labels")
        };
        assert!(why.contains("new one has 50"), "{why}");
        // 75 % against 80 %: five points lower, two allowed.
        let Verdict::Breach(why) = judge(&gates, &with_labels("2.0.0", 150, 50), &old) else {
            panic!("a five-point drop passed")
        };
        assert!(why.contains("75.0% against 80.0%"), "{why}");
        // 79 % is within the two points.
        assert!(matches!(
            judge(&gates, &with_labels("2.0.0", 158, 42), &old),
            Verdict::Pass(_)
        ));
    }

    #[test]
    fn a_like_for_like_candidate_passes() {
        let old = figures(&metrics("1.0.0", 1000, 2, 2));
        let new = figures(&metrics("2.0.0", 500, 1, 2));
        assert!(matches!(judge(&gates(), &new, &old), Verdict::Pass(_)));
    }

    #[test]
    fn too_few_requests_is_no_verdict_yet() {
        let old = figures(&metrics("1.0.0", 1000, 0, 2));
        let new = figures(&metrics("2.0.0", 99, 0, 2));
        assert!(matches!(
            judge(&gates(), &new, &old),
            Verdict::Insufficient(_)
        ));
        let new = figures(&metrics("2.0.0", 500, 0, 2));
        let none = VersionFigures::default();
        assert!(matches!(
            judge(&gates(), &new, &none),
            Verdict::Insufficient(_)
        ));
    }

    #[test]
    fn a_slower_candidate_breaches_the_latency_gate() {
        let old = figures(&metrics("1.0.0", 1000, 0, 2));
        let new = figures(&metrics("2.0.0", 500, 0, 4));
        let Verdict::Breach(why) = judge(&gates(), &new, &old) else {
            panic!("a twice slower candidate passed");
        };
        assert!(why.starts_with("p99 latency"), "{why}");
    }

    #[test]
    fn more_errors_breach_the_error_gate() {
        let old = figures(&metrics("1.0.0", 1000, 1, 2));
        let new = figures(&metrics("2.0.0", 1000, 30, 2));
        let Verdict::Breach(why) = judge(&gates(), &new, &old) else {
            panic!("3% errors passed");
        };
        assert!(why.starts_with("error rate 3.00%"), "{why}");
    }

    #[test]
    fn drifted_inputs_breach_even_without_a_previous_version() {
        let mut m = metrics("2.0.0", 500, 0, 2);
        m.drift_counts.insert(
            "monthly_charges".into(),
            BinCounts::from_dense(&[0, 0, 0, 500]),
        );
        let expected: Expected = [("monthly_charges".to_owned(), vec![0.25; 4])].into();
        let candidate = figures(&m).with_baseline(Some(Arc::new(expected)));
        let Verdict::Breach(why) = judge(&gates(), &candidate, &VersionFigures::default()) else {
            panic!("drift passed");
        };
        assert!(why.contains("monthly_charges has PSI 6.9"), "{why}");
        // Without the release's baseline there is nothing to judge drift against.
        assert!(figures(&m).drift_psi().is_empty());
    }

    #[test]
    fn a_moved_output_distribution_breaches() {
        let old = figures(&metrics("1.0.0", 1000, 0, 2));
        let mut m = metrics("2.0.0", 1000, 0, 2);
        m.predictions = [("yes".to_owned(), 950), ("no".to_owned(), 50)].into();
        let Verdict::Breach(why) = judge(&gates(), &figures(&m), &old) else {
            panic!("a 95/5 split passed against 50/50");
        };
        assert!(why.starts_with("output distribution moved"), "{why}");
        assert!(
            output_shift(&old.predictions, &old.predictions)
                .unwrap()
                .abs()
                < 1e-12
        );
    }

    #[test]
    fn figures_merge_devices_windows_and_pool_drift_counts() {
        let mut a = metrics("1.0.0", 100, 0, 2);
        a.drift_counts.insert(
            "tenure".into(),
            BinCounts::from_dense(&[200, 100, 100, 100]),
        );
        let mut b = metrics("1.0.0", 300, 0, 8);
        b.drift_counts
            .insert("tenure".into(), BinCounts::from_dense(&[50, 150, 150, 150]));
        let batches = vec![
            batch("d1", 1, a),
            batch("d2", 2, b),
            batch("d3", 3, metrics("1.0.0", 10, 0, 1)),
        ];
        let mut baselines = Baselines::default();
        baselines.insert(
            "churn",
            "1.0.0",
            [("tenure".to_owned(), vec![0.25; 4])].into(),
        );
        let all = by_version(&batches, &baselines, |d| d != "d3");
        let f = &all[&("churn".to_owned(), "1.0.0".to_owned())];
        assert_eq!((f.devices.len(), f.requests), (2, 400));
        // Each device's counts lean, each its own way; pooled, they are the baseline itself.
        assert!(f.drift_psi()["tenure"].abs() < 1e-12, "{:?}", f.drift_psi());
        let alone = by_version(&batches, &baselines, |d| d == "d1");
        assert!(alone[&("churn".to_owned(), "1.0.0".to_owned())].drift_psi()["tenure"] > 0.05);
        assert_eq!(
            f.report("churn", "1.0.0").drift_samples["tenure"],
            DriftSamples {
                pooled: 1000,
                needed: 500
            }
        );
        // 300 of 400 at 8 ms: the p50 is there, not at the mean of the two p50s.
        assert!((f.latency.quantile_ms(0.5) - 8.0).abs() / 8.0 < 0.05);
        let points = series(&batches, "churn", 120, &baselines, |_| true);
        assert_eq!(
            points.iter().map(|p| p.at).collect::<Vec<_>>(),
            vec![120, 240]
        );
        assert_eq!(points[0].requests, 400);
    }

    #[test]
    fn a_rollout_is_judged_on_its_devices_against_the_versions_it_replaces() {
        use crate::rollout::{Gates, Rollout, RolloutSpec, Selector};
        let spec = RolloutSpec {
            strategy: Default::default(),
            shadow: None,
            model: "churn".into(),
            version: "2.1.0".into(),
            target: "models/churn/2.1.0/model.onnx".into(),
            selector: Selector::default(),
            waves: vec![100.0],
            gates: Gates::default(),
            rollback_on_halt: true,
        };
        let fleet = vec![
            ("d1".to_owned(), Some("2.0.0".to_owned())),
            ("d2".to_owned(), Some("2.0.0".to_owned())),
        ];
        let rollout = Rollout::new("r".into(), spec, fleet, "op".into(), 0).unwrap();
        let batch = |device: &str, seq: u64, version: &str, requests: u64| MetricsBatch {
            schema: 1,
            id: edgefleet_protocol::MessageId::new(format!("m{seq}")).unwrap(),
            device: edgefleet_protocol::DeviceId::new(device.to_owned()).unwrap(),
            seq,
            window_start_unix: 0,
            window_end_unix: 60,
            dropped_batches: 0,
            process: Default::default(),
            models: vec![metrics(version, requests, 0, 2)],
        };
        let batches = vec![
            batch("d1", 1, "2.0.0", 100),
            batch("d2", 2, "1.0.0", 7), // older than what the rollout replaces: no reference
            batch("d1", 3, "2.1.0", 40),
            batch("d9", 4, "2.1.0", 1000), // not in the rollout
            batch("d2", 5, "2.0.0", 50),
        ];
        let (candidate, previous) = rollout_evidence(&rollout, &batches, &Baselines::default());
        assert_eq!((candidate.requests, previous.requests), (40, 150));
        assert_eq!(previous.devices.len(), 2);
    }
}
