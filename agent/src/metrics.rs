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
