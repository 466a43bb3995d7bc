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
pub struct RefusedLabels {
    /// `server_full` or `client_full`.
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub channel: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub model: String,
    pub version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuantileLabels {
    pub model: String,
    pub version: String,
    pub quantile: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabels {
    pub model: String,
    pub version: String,
    pub feature: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvaluationLabels {
    pub model: String,
    pub version: String,
    pub metric: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreachLabels {
    pub model: String,
    pub version: String,
    pub rule: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Gauges of the fleet's recent telemetry cover this many seconds before the scrape.
pub const FLEET_WINDOW_SECONDS: i64 = 300;

fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Guard breaches devices reported, by rule.
    pub fleet_guard_breaches: Family<BreachLabels, Counter>,
    /// Alert deliveries to webhooks, by result (delivered, failed).
    pub alert_deliveries: Family<ResultLabels, Counter>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_seconds: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Mutating calls that took effect but could not be written to the audit log.
    pub audit_failures: Counter,
    pub mqtt_messages: Family<MessageLabels, Counter>,
    pub mqtt_connected: Gauge,
    /// Connections the server's client made to the broker (1 unless it was ever knocked off).
    pub mqtt_connections: Counter,
    /// Topics the server cleared of a retained message it refused (embedded broker).
    pub mqtt_retained_cleared: Counter,
    /// Devices whose retained reported state the server asked the broker for again (they had
    /// not answered a rollout).
    pub reported_reread: Counter,
    /// Reported states stored from a retained copy: the live message never reached the server.
    pub reported_recovered: Counter,
    /// Time to store one device message, from the ingester taking it to its outcome.
    pub ingest_seconds: Histogram,
    /// Seconds the broker connection's reader waited for the ingester to take a message.
    pub ingest_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Acknowledgements of stored messages waiting for room in the client's request queue.
    pub mqtt_unsent_acks: Gauge,
    pub mqtt_unacknowledged: Gauge,
    pub desired_unacknowledged: Gauge,
    /// Device messages read from the broker and waiting for the store.
    pub ingest_queued: Gauge,
    /// Desired topics where a device's message was replaced by the genuine state (embedded broker).
    pub desired_restored: Counter,
    /// Times every device's desired state was signed and re-published wholesale.
    pub desired_republished: Counter,
    pub devices: Gauge,
    pub artifact_bytes_sent: Counter,
    pub artifact_bytes_received: Counter,
    pub rollout_engine_leader: Gauge,
    pub mqtt_sessions_drained: Counter,
    /// HTTP connections closed at once because a connection cap was reached.
    pub http_connections_refused: Family<RefusedLabels, Counter>,
    pub fleet_predictions: Family<VersionLabels, Counter>,
    /// The signed (model, version) pairs of the registry: the only label sets device telemetry
    /// may create (see [`Metrics::known_labels`]).
    known_versions: std::sync::RwLock<std::collections::HashSet<(String, String)>>,
    /// The features each signed release's sampling policy lets leave its devices ((model,
    /// version) → names): what arriving samples are held to (see [`Metrics::permitted_features`]).
    /// Kept beside the known versions because both are the registry's word on device data, read
    /// again together.
    sample_features: std::sync::RwLock<
        std::collections::HashMap<(String, String), std::collections::BTreeSet<String>>,
    >,
    /// Features devices sent in samples that their release's policy does not let leave: dropped.
    pub sample_features_refused: Counter,
    pub fleet_prediction_errors: Family<VersionLabels, Counter>,
    /// Labels joined to predictions on devices, and those that matched the prediction.
    pub fleet_labels: Family<VersionLabels, Counter>,
    pub fleet_labels_correct: Family<VersionLabels, Counter>,
    /// Answers devices sent in the sampled prediction log, those picked but not sent (a daily
    /// budget spent), and those that entered the review queue.
    pub fleet_samples: Family<VersionLabels, Counter>,
    pub fleet_samples_skipped: Family<VersionLabels, Counter>,
    pub review_queued: Counter,
    /// Review items kept as plain samples because their model's queue was full.
    pub review_overflow: Counter,
    /// What each release's signed lineage claims from its evaluation (accuracy, roc_auc, ...),
    /// for alert rules that compare field accuracy with it.
    pub release_evaluation: Family<EvaluationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub fleet_dropped_batches: Counter,
    pub fleet_latency: Family<QuantileLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub fleet_drift: Family<FeatureLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub fleet_devices_reporting: Family<VersionLabels, Gauge>,
    pub devices_online: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("edgefleet_server");
        let http_requests = Family::<RequestLabels, Counter>::default();
        let audit_failures = Counter::default();
        let http_seconds =
            Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let mqtt_messages = Family::<MessageLabels, Counter>::default();
        let mqtt_connected = Gauge::default();
        let mqtt_connections = Counter::default();
        let mqtt_retained_cleared = Counter::default();
        let reported_reread = Counter::default();
        let reported_recovered = Counter::default();
        let ingest_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 17),
        );
        let ingest_wait_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        let mqtt_unsent_acks = Gauge::default();
        let mqtt_unacknowledged = Gauge::default();
        let desired_unacknowledged = Gauge::default();
        let ingest_queued = Gauge::default();
        let desired_restored = Counter::default();
        let desired_republished = Counter::default();
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
            "audit_failures",
            "Mutating calls that took effect but could not be written to the audit log",
            audit_failures.clone(),
        );
        registry.register(
            "http_request_seconds",
            "HTTP request latency by route and status",
            http_seconds.clone(),
        );
        registry.register(
            "mqtt_messages",
            "Device messages by channel and outcome (stored, duplicate, refused, failed, ignored)",
            mqtt_messages.clone(),
        );
        registry.register(
            "mqtt_connected",
            "1 while the server's client is connected to the broker",
            mqtt_connected.clone(),
        );
        registry.register(
            "mqtt_connections",
            "Connections the server's client made to the broker since start",
            mqtt_connections.clone(),
        );
        registry.register(
            "mqtt_retained_cleared",
            "Topics cleared of what a device retained there and the server refused (embedded broker)",
            mqtt_retained_cleared.clone(),
        );
        registry.register(
            "reported_reread",
            "Devices of a running rollout that had not answered, whose retained reported state was asked of the broker again",
            reported_reread.clone(),
        );
        registry.register(
            "reported_recovered",
            "Reported states stored from the broker's retained copy because the live message never reached the server (a broker queue that overflowed drops them)",
            reported_recovered.clone(),
        );
        registry.register(
            "ingest_seconds",
            "Time to store one device message, from the ingester taking it to its outcome",
            ingest_seconds.clone(),
        );
        registry.register(
            "ingest_wait_seconds",
            "Seconds the server's broker connection waited for the store to take device messages: it reads no more from the broker meanwhile and the broker queues for it (acknowledgements and pings still go out)",
            ingest_wait_seconds.clone(),
        );
        registry.register(
            "mqtt_unsent_acks",
            "Acknowledgements of stored device messages queued for the broker and not yet written",
            mqtt_unsent_acks.clone(),
        );
        registry.register(
            "mqtt_unacknowledged",
            "Device messages the broker delivered on the server's current connection and the server has not yet acknowledged (at most the broker's in-flight window for the server)",
            mqtt_unacknowledged.clone(),
        );
        registry.register(
            "desired_unacknowledged",
            "Desired states the server published on its ingesting connection (external broker) that the broker has not yet acknowledged; their PUBACKs arrive behind the device messages the broker sent before them",
            desired_unacknowledged.clone(),
        );
        registry.register(
            "ingest_queued",
            "Device messages read from the broker and waiting for the store (bounded by the broker's in-flight window for the server)",
            ingest_queued.clone(),
        );
        registry.register(
            "desired_restored",
            "Desired topics where a message the server did not write was replaced by the genuine state (embedded broker)",
            desired_restored.clone(),
        );
        registry.register(
            "desired_republished",
            "Times every device's desired state was signed and re-published (at start, and when the broker lost them)",
            desired_republished.clone(),
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
        let http_connections_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once: the server's or the client address's connection cap was reached",
            http_connections_refused.clone(),
        );
        let fleet_predictions = Family::<VersionLabels, Counter>::default();
        let fleet_prediction_errors = Family::<VersionLabels, Counter>::default();
        let fleet_dropped_batches = Counter::default();
        let fleet_labels = Family::<VersionLabels, Counter>::default();
        let fleet_labels_correct = Family::<VersionLabels, Counter>::default();
        let fleet_samples = Family::<VersionLabels, Counter>::default();
        let fleet_samples_skipped = Family::<VersionLabels, Counter>::default();
        let review_queued = Counter::default();
        let review_overflow = Counter::default();
        let sample_features_refused = Counter::default();
        registry.register(
            "sample_features_refused",
            "Features devices sent in samples that their release's signed sampling policy does not let leave (dropped, not stored)",
            sample_features_refused.clone(),
        );
        registry.register(
            "fleet_samples",
            "Answers devices sent in the sampled prediction log, by model version",
            fleet_samples.clone(),
        );
        registry.register(
            "fleet_samples_skipped",
            "Answers the sampling policy picked that devices did not send (the day's byte or review budget was spent), by model version",
            fleet_samples_skipped.clone(),
        );
        registry.register(
            "review_queued",
            "Low-confidence answers that entered the review queue",
            review_queued.clone(),
        );
        registry.register(
            "review_overflow",
            "Low-confidence answers kept as plain samples because their model's review queue was full",
            review_overflow.clone(),
        );
        let release_evaluation = Family::default();
        registry.register(
            "release_evaluation",
            "What each release's signed lineage claims from its own evaluation, by metric (accuracy, roc_auc, ...)",
            release_evaluation.clone(),
        );
        registry.register(
            "fleet_labels",
            "Ground-truth labels joined to their predictions on devices, by model version (accuracy over any range: the increase of fleet_labels_correct_total over this one's)",
            fleet_labels.clone(),
        );
        registry.register(
            "fleet_labels_correct",
            "Labels that matched the prediction they joined (classifiers), by model version",
            fleet_labels_correct.clone(),
        );
        let fleet_guard_breaches = Family::<BreachLabels, Counter>::default();
        let alert_deliveries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "fleet_guard_breaches",
            "Breaches of a release's signed guard policy that devices reported after commit, by rule",
            fleet_guard_breaches.clone(),
        );
        registry.register(
            "alert_deliveries",
            "Deliveries of the server's own alerts to the configured webhooks, by result (delivered, failed)",
            alert_deliveries.clone(),
        );
        let fleet_latency = Family::default();
        let fleet_drift = Family::default();
        let fleet_devices_reporting = Family::<VersionLabels, Gauge>::default();
        let devices_online = Gauge::default();
        registry.register(
            "fleet_predictions",
            "Predictions devices served, by model version (from telemetry batches this server stored)",
            fleet_predictions.clone(),
        );
        registry.register(
            "fleet_prediction_errors",
            "Predictions that failed on devices, by model version",
            fleet_prediction_errors.clone(),
        );
        registry.register(
            "fleet_telemetry_dropped_batches",
            "Telemetry batches devices dropped from a full outbox (as they reported)",
            fleet_dropped_batches.clone(),
        );
        registry.register(
            "fleet_prediction_latency_seconds",
            "Prediction latency quantiles over the fleet's last 5 minutes, by model version",
            fleet_latency.clone(),
        );
        registry.register(
            "fleet_input_drift_psi",
            "Input drift (population stability index against the signed baseline) over the last 5 minutes, by feature",
            fleet_drift.clone(),
        );
        registry.register(
            "fleet_devices_reporting",
            "Devices that sent telemetry for a model version: the most in one minute of the last 5",
            fleet_devices_reporting.clone(),
        );
        registry.register(
            "devices_online",
            "Devices heard from in the last 2 minutes",
            devices_online.clone(),
        );
        Self {
            fleet_guard_breaches,
            alert_deliveries,
            fleet_predictions,
            known_versions: Default::default(),
            sample_features: Default::default(),
            sample_features_refused,
            fleet_prediction_errors,
            fleet_labels,
            fleet_labels_correct,
            fleet_samples,
            fleet_samples_skipped,
            review_queued,
            review_overflow,
            release_evaluation,
            fleet_dropped_batches,
            fleet_latency,
            fleet_drift,
            fleet_devices_reporting,
            devices_online,
            registry,
            http_requests,
            audit_failures,
            http_seconds,
            mqtt_messages,
            mqtt_connected,
            mqtt_connections,
            mqtt_retained_cleared,
            reported_reread,
            reported_recovered,
            ingest_seconds,
            ingest_wait_seconds,
            mqtt_unsent_acks,
            mqtt_unacknowledged,
            desired_unacknowledged,
            ingest_queued,
            desired_restored,
            desired_republished,
            devices,
            artifact_bytes_sent,
            artifact_bytes_received,
            rollout_engine_leader,
            mqtt_sessions_drained,
            http_connections_refused,
        }
    }
}

impl Metrics {
    pub fn count_alert_delivery(&self, result: &str) {
        self.alert_deliveries
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts the rules a newly stored guard-breach event names.
    pub fn count_guard_breach(&self, event: &edgefleet_protocol::message::Event) {
        let version = event
            .target
            .as_deref()
            .and_then(|t| edgefleet_protocol::target::parse_target_name(t).ok())
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        for breach in &event.evidence {
            self.fleet_guard_breaches
                .get_or_create(&BreachLabels {
                    model: event.model.to_string(),
                    version: version.clone(),
                    rule: breach.rule.as_str().to_owned(),
                })
                .inc();
        }
    }

    /// Counts a newly stored telemetry batch.
    pub fn count_telemetry(&self, batch: &edgefleet_protocol::message::MetricsBatch) {
        self.fleet_dropped_batches.inc_by(batch.dropped_batches);
        for m in &batch.models {
            let labels = self.known_labels(m.model.as_str(), &m.version.to_string());
            self.fleet_predictions
                .get_or_create(&labels)
                .inc_by(m.requests);
            self.fleet_prediction_errors
                .get_or_create(&labels)
                .inc_by(m.errors);
            if m.samples_skipped > 0 {
                self.fleet_samples_skipped
                    .get_or_create(&labels)
                    .inc_by(m.samples_skipped);
            }
            if !m.quality.is_empty() {
                self.fleet_labels
                    .get_or_create(&labels)
                    .inc_by(m.quality.labelled);
                self.fleet_labels_correct
                    .get_or_create(&labels)
                    .inc_by(m.quality.correct());
            }
        }
    }

    /// Counts the samples of one batch the store took (none when it was a redelivery).
    pub fn count_samples(
        &self,
        samples: &[crate::samples::StoredSample],
        added: crate::store::SamplesAdded,
    ) {
        self.review_overflow.inc_by(added.review_overflow);
        self.review_queued.inc_by(added.queued_for_review);
        if added.stored == 0 {
            return;
        }
        for s in samples {
            let labels = self.known_labels(&s.model, &s.version);
            self.fleet_samples.get_or_create(&labels).inc();
        }
    }

    /// Replaces the registry's (model, version) pairs that telemetry may be labelled with;
    /// says whether they changed.
    pub fn set_known_versions(&self, versions: impl IntoIterator<Item = (String, String)>) -> bool {
        let versions: std::collections::HashSet<(String, String)> = versions.into_iter().collect();
        match self.known_versions.write() {
            Ok(mut known) if *known != versions => {
                *known = versions;
                true
            }
            _ => false,
        }
    }

    /// Replaces what each signed release lets its samples carry ((model, version) → features).
    pub fn set_sample_features(
        &self,
        permitted: impl IntoIterator<Item = ((String, String), Vec<String>)>,
    ) {
        if let Ok(mut map) = self.sample_features.write() {
            *map = permitted
                .into_iter()
                .map(|(key, names)| (key, names.into_iter().collect()))
                .collect();
        }
    }

    /// Drops from a sample the features its release does not let leave (all of them for a
    /// version the registry does not sign), counting them.
    pub fn keep_permitted_features(&self, sample: &mut crate::samples::StoredSample) {
        if sample.sample.features.is_empty() {
            return;
        }
        let before = sample.sample.features.len();
        match self.sample_features.read() {
            Ok(map) => match map.get(&(sample.model.clone(), sample.version.clone())) {
                Some(allowed) => sample.sample.features.retain(|k, _| allowed.contains(k)),
                None => sample.sample.features.clear(),
            },
            Err(_) => sample.sample.features.clear(),
        }
        self.sample_features_refused
            .inc_by((before - sample.sample.features.len()) as u64);
    }

    /// Replaces the releases' signed evaluation figures ((model, version) → metric → value).
    pub fn set_release_evaluation(
        &self,
        claimed: impl IntoIterator<Item = ((String, String), std::collections::BTreeMap<String, f64>)>,
    ) {
        self.release_evaluation.clear();
        for ((model, version), metrics) in claimed {
            for (metric, value) in metrics {
                self.release_evaluation
                    .get_or_create(&EvaluationLabels {
                        model: model.clone(),
                        version: version.clone(),
                        metric,
                    })
                    .set(value);
            }
        }
    }

    /// The labels for a (model, version) a device named: itself if the registry signed it, else
    /// `unreleased` for both. The names come from devices, and every new pair would be a new
    /// series in every scrape.
    fn known_labels(&self, model: &str, version: &str) -> VersionLabels {
        let known = self
            .known_versions
            .read()
            .is_ok_and(|k| k.contains(&(model.to_owned(), version.to_owned())));
        if known {
            VersionLabels {
                model: model.to_owned(),
                version: version.to_owned(),
            }
        } else {
            VersionLabels {
                model: "unreleased".into(),
                version: "unreleased".into(),
            }
        }
    }

    /// Replaces the recent-telemetry gauges with `figures` ((model, version) → figures).
    pub fn set_fleet_figures(
        &self,
        figures: &std::collections::BTreeMap<(String, String), crate::telemetry::VersionFigures>,
    ) {
        self.fleet_latency.clear();
        self.fleet_drift.clear();
        self.fleet_devices_reporting.clear();
        for ((model, version), f) in figures {
            // Only the registry's versions: these labels come from what devices said.
            if self.known_labels(model, version).version != *version {
                continue;
            }
            for q in ["0.5", "0.95", "0.99"] {
                let quantile: f64 = q.parse().unwrap_or(0.5);
                self.fleet_latency
                    .get_or_create(&QuantileLabels {
                        model: model.clone(),
                        version: version.clone(),
                        quantile: q.into(),
                    })
                    .set(f.latency.quantile_ms(quantile) / 1e3);
            }
            for (feature, psi) in f.drift_psi() {
                self.fleet_drift
                    .get_or_create(&FeatureLabels {
                        model: model.clone(),
                        version: version.clone(),
                        feature,
                    })
                    .set(psi);
            }
            self.fleet_devices_reporting
                .get_or_create(&VersionLabels {
                    model: model.clone(),
                    version: version.clone(),
                })
                .set(i64::try_from(f.device_count()).unwrap_or(i64::MAX));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_keep_only_the_features_their_release_lets_leave() {
        use edgefleet_protocol::sampling::{FeatureValue, PredictionSample};
        let metrics = Metrics::default();
        metrics.set_sample_features([(
            ("churn".to_owned(), "2.0.0".to_owned()),
            vec!["tenure_months".to_owned()],
        )]);
        let sample = |version: &str| crate::samples::StoredSample {
            device: "d1".into(),
            model: "churn".into(),
            version: version.into(),
            received_at: 1,
            sample: PredictionSample {
                id: "p1".into(),
                at_unix: 1,
                label: Some("stay".into()),
                score: Some(0.9),
                value: None,
                features: [
                    ("tenure_months".to_owned(), FeatureValue::Number(3.0)),
                    ("income".to_owned(), FeatureValue::Number(90_000.0)),
                ]
                .into(),
                review: false,
            },
            review: None,
        };
        let mut signed = sample("2.0.0");
        metrics.keep_permitted_features(&mut signed);
        assert_eq!(
            signed.sample.features.keys().collect::<Vec<_>>(),
            ["tenure_months"]
        );
        // A version the registry does not sign keeps none.
        let mut unknown = sample("9.9.9");
        metrics.keep_permitted_features(&mut unknown);
        assert!(unknown.sample.features.is_empty());
        assert_eq!(metrics.sample_features_refused.get(), 3);
    }

    #[test]
    fn labels_from_telemetry_count_per_signed_version() {
        use edgefleet_protocol::message::{MetricsBatch, ModelMetrics, ProcessStats};
        use edgefleet_protocol::quality::{Observation, QualityCounts};
        let metrics = Metrics::default();
        metrics.set_known_versions([("churn".to_owned(), "1.0.0".to_owned())]);
        let mut quality = QualityCounts::default();
        for actual in ["churn", "churn", "stay"] {
            quality.add(&Observation::Class {
                predicted: "churn".into(),
                actual: actual.into(),
                positive_score: None,
            });
        }
        let batch = MetricsBatch {
            schema: edgefleet_protocol::message::SCHEMA_VERSION,
            id: edgefleet_protocol::MessageId::from_random([1; 16]),
            device: edgefleet_protocol::DeviceId::new("d1").unwrap(),
            seq: 1,
            window_start_unix: 0,
            window_end_unix: 60,
            dropped_batches: 0,
            process: ProcessStats::default(),
            models: vec![ModelMetrics {
                shadow: None,
                model: edgefleet_protocol::ModelName::new("churn").unwrap(),
                version: semver::Version::new(1, 0, 0),
                requests: 0,
                errors: 0,
                latency: Default::default(),
                latency_histogram: Default::default(),
                predictions: Default::default(),
                drift_psi: Default::default(),
                drift_counts: Default::default(),
                quality,
                samples: Vec::new(),
                samples_skipped: 0,
            }],
        };
        metrics.count_telemetry(&batch);
        let text = metrics.encode();
        assert!(
            text.contains(
                "edgefleet_server_fleet_labels_total{model=\"churn\",version=\"1.0.0\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains(
            "edgefleet_server_fleet_labels_correct_total{model=\"churn\",version=\"1.0.0\"} 2"
        ));
    }

    #[test]
    fn devices_label_telemetry_only_with_versions_the_registry_signed() {
        let metrics = Metrics::default();
        metrics.set_known_versions([("churn".to_owned(), "1.0.0".to_owned())]);
        assert_eq!(metrics.known_labels("churn", "1.0.0").version, "1.0.0");
        for (model, version) in [("churn", "9.9.9"), ("x", "1.0.0"), ("churn", "1.0.0\nevil")] {
            let labels = metrics.known_labels(model, version);
            assert_eq!(
                (labels.model.as_str(), labels.version.as_str()),
                ("unreleased", "unreleased")
            );
        }
    }
}
