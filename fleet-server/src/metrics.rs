//! Prometheus metrics of the server (`GET /metrics`), in Prometheus naming: units in the name,
//! `_total` on counters. Fleet-level gauges are refreshed from the store at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route pattern (`/api/v1/devices/{id}`), never the raw path: bounded cardinality.
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub channel: String,
    pub outcome: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_seconds: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub mqtt_messages: Family<MessageLabels, Counter>,
    pub mqtt_connected: Gauge,
    pub devices: Gauge,
    pub artifact_bytes_sent: Counter,
    pub artifact_bytes_received: Counter,
    pub rollout_engine_leader: Gauge,
    pub mqtt_sessions_drained: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("edgefleet_server");
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_seconds =
            Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let mqtt_messages = Family::<MessageLabels, Counter>::default();
        let mqtt_connected = Gauge::default();
        let devices = Gauge::default();
        let artifact_bytes_sent = Counter::default();
        let artifact_bytes_received = Counter::default();
        let rollout_engine_leader = Gauge::default();
        let mqtt_sessions_drained = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_seconds",
            "HTTP request latency by route and status",
            http_seconds.clone(),
        );
        registry.register(
            "mqtt_messages",
            "Device messages by channel and outcome (stored, duplicate, refused, failed)",
            mqtt_messages.clone(),
        );
        registry.register(
            "mqtt_connected",
            "1 while the server's client is connected to the broker",
            mqtt_connected.clone(),
        );
        registry.register(
            "devices",
            "Registered devices (enrolled or not)",
            devices.clone(),
        );
        registry.register(
            "artifact_sent_bytes",
            "Artifact bytes sent to devices",
            artifact_bytes_sent.clone(),
        );
        registry.register(
            "artifact_received_bytes",
            "Artifact bytes uploaded and stored",
            artifact_bytes_received.clone(),
        );
        registry.register(
            "rollout_engine_leader",
            "1 while this server drives the rollouts (one server of those sharing a database)",
            rollout_engine_leader.clone(),
        );
        registry.register(
            "mqtt_sessions_drained",
            "Broker sessions of stopped servers this server drained and ended",
            mqtt_sessions_drained.clone(),
        );
        Self {
            registry,
            http_requests,
            http_seconds,
            mqtt_messages,
            mqtt_connected,
            devices,
            artifact_bytes_sent,
            artifact_bytes_received,
            rollout_engine_leader,
            mqtt_sessions_drained,
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
