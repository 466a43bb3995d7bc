//! Prometheus metrics of the agent (`GET /metrics`), in Prometheus naming: units in the name,
//! `_total` on counters.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::telemetry::Telemetry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabels {
    pub model: String,
    pub version: String,
    pub feature: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub model: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActiveLabels {
    pub model: String,
    pub version: String,
    pub runtime: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LabelOutcomeLabels {
    pub model: String,
    /// accepted, duplicate, unknown or refused.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreachLabels {
    pub model: String,
    pub version: String,
    /// The guard rule broken (`error_ratio`, `p99`, `output_shift`, `input_drift`, `accuracy`).
    pub rule: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub updates: Family<OutcomeLabels, Counter>,
    pub active: Family<ActiveLabels, Gauge>,
    pub drift_psi: Family<FeatureLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub telemetry_batches: Counter,
    /// Desired-state messages refused (unsigned, forged, for another device, oversized).
    pub desired_refused: Counter,
    pub process_cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub process_resident_bytes: Gauge,
    /// Labels sent to `POST /v1/models/{name}/feedback`, by what became of them.
    pub labels: Family<LabelOutcomeLabels, Counter>,
    /// Breaches the guard after commit found, by rule.
    pub guard_breaches: Family<BreachLabels, Counter>,
}

impl Metrics {
    /// The agent's metrics; the per-request ones (`inference_requests_total`,
    /// `inference_errors_total`, `inference_seconds`, `predictions_total`) are read from
    /// `telemetry`'s slots at each scrape.
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        let mut registry = Registry::with_prefix("edgefleet");
        registry.register_collector(Box::new(telemetry));
        let updates = Family::<OutcomeLabels, Counter>::default();
        let active = Family::<ActiveLabels, Gauge>::default();
        let drift_psi =
            Family::<FeatureLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let telemetry_batches = Counter::default();
        let desired_refused = Counter::default();
        let process_cpu_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let process_resident_bytes = Gauge::default();
        let labels = Family::<LabelOutcomeLabels, Counter>::default();
        let guard_breaches = Family::<BreachLabels, Counter>::default();
        registry.register(
            "guard_breaches",
            "Breaches of a release's signed guard policy found after commit, by rule",
            guard_breaches.clone(),
        );
        registry.register(
            "labels",
            "Labels sent to the device's feedback endpoint, by result (accepted: joined to its prediction; duplicate; unknown: no such prediction kept; refused: wrong kind)",
            labels.clone(),
        );
        registry.register(
            "input_drift_psi",
            "Population stability index of each input feature against the target's baseline, over the last telemetry window",
            drift_psi.clone(),
        );
        registry.register(
            "telemetry_batches",
            "Telemetry batches queued for the fleet server",
            telemetry_batches.clone(),
        );
        registry.register(
            "desired_refused",
            "Desired-state messages refused before they moved anything (not signed by the trusted timestamp keys, for another device, oversized)",
            desired_refused.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "CPU time of the agent process (user + system), at the last telemetry window",
            process_cpu_seconds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the agent process, at the last telemetry window",
            process_resident_bytes.clone(),
        );
        registry.register(
            "updates",
            "Installs by outcome (committed, rejected, rolled_back)",
            updates.clone(),
        );
        registry.register(
            "model_active",
            "1 for the version and runtime each model serves",
            active.clone(),
        );
        Self {
            registry,
            updates,
            active,
            drift_psi,
            telemetry_batches,
            desired_refused,
            process_cpu_seconds,
            process_resident_bytes,
            labels,
            guard_breaches,
        }
    }

    pub fn record_feedback(&self, model: &str, outcome: &crate::predictions::FeedbackOutcome) {
        for (result, n) in [
            ("accepted", outcome.accepted),
            ("duplicate", outcome.duplicates),
            ("unknown", outcome.unknown),
            ("refused", outcome.refused),
        ] {
            if n > 0 {
                self.labels
                    .get_or_create(&LabelOutcomeLabels {
                        model: model.to_owned(),
                        result: result.to_owned(),
                    })
                    .inc_by(n);
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
