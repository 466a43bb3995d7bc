//! Prometheus metrics of the agent (`GET /metrics`), in Prometheus naming: units in the name,
//! `_total` on counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub model: String,
    pub version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PredictionLabels {
    pub model: String,
    pub version: String,
    pub label: String,
}

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

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3.3 s in factors of 2: tabular models sit at the low end, CNNs at the high.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 17,
    ))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<VersionLabels, Counter>,
    pub errors: Family<VersionLabels, Counter>,
    pub latency: Family<VersionLabels, Histogram, fn() -> Histogram>,
    pub updates: Family<OutcomeLabels, Counter>,
    pub active: Family<ActiveLabels, Gauge>,
    pub predictions: Family<PredictionLabels, Counter>,
    pub drift_psi: Family<FeatureLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub telemetry_batches: Counter,
    /// Desired-state messages refused (unsigned, forged, for another device, oversized).
    pub desired_refused: Counter,
    pub process_cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub process_resident_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("edgefleet");
        let requests = Family::<VersionLabels, Counter>::default();
        let errors = Family::<VersionLabels, Counter>::default();
        let latency = Family::<VersionLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let updates = Family::<OutcomeLabels, Counter>::default();
        let active = Family::<ActiveLabels, Gauge>::default();
        let predictions = Family::<PredictionLabels, Counter>::default();
        let drift_psi =
            Family::<FeatureLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let telemetry_batches = Counter::default();
        let desired_refused = Counter::default();
        let process_cpu_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let process_resident_bytes = Gauge::default();
        registry.register(
            "predictions",
            "Predicted labels of classifiers, per model version",
            predictions.clone(),
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
            "inference_requests",
            "Inferences served, per model version",
            requests.clone(),
        );
        registry.register(
            "inference_errors",
            "Inferences the model failed (runtime error, NaN), per model version",
            errors.clone(),
        );
        registry.register(
            "inference_seconds",
            "Inference latency, per model version",
            latency.clone(),
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
            requests,
            errors,
            latency,
            updates,
            active,
            predictions,
            drift_psi,
            telemetry_batches,
            desired_refused,
            process_cpu_seconds,
            process_resident_bytes,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
