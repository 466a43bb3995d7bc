//! Versioned device messages (design brief §3): `desired` (server → device) and `reported`,
//! `events`, `metrics` (device → server).
//!
//! Every message carries `schema` (the message format's version; a consumer refuses one it does
//! not understand rather than guessing), a unique `id` for de-duplication, and, from devices, a
//! per-device `seq` that only grows so that a consumer can drop replays and reorderings. Decoding
//! checks the size limit of the message kind before reading a single byte of JSON.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{DeviceId, Error, MessageId, ModelName};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A message type with its wire limits.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// Name used in errors and logs.
    const KIND: &'static str;
    /// Largest encoded size accepted or produced, in bytes.
    const MAX_BYTES: usize;
    fn schema(&self) -> u32;
}

/// Decodes a message: size limit first, then the schema version, then the body.
pub fn decode<M: WireMessage>(bytes: &[u8]) -> Result<M, Error> {
    if bytes.len() > M::MAX_BYTES {
        return Err(Error::MessageTooLarge {
            kind: M::KIND,
            size: bytes.len(),
            limit: M::MAX_BYTES,
        });
    }
    #[derive(Deserialize)]
    struct SchemaProbe {
        schema: u32,
    }
    let probe: SchemaProbe =
        serde_json::from_slice(bytes).map_err(|e| Error::malformed(M::KIND, e))?;
    if probe.schema != SCHEMA_VERSION {
        return Err(Error::UnsupportedSchema {
            kind: M::KIND,
            found: probe.schema,
            supported: SCHEMA_VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| Error::malformed(M::KIND, e))
}

/// Encodes a message, refusing one over its kind's size limit (so a device never publishes what
/// the server would drop).
pub fn encode<M: WireMessage>(message: &M) -> Result<Vec<u8>, Error> {
    let bytes = serde_json::to_vec(message).map_err(|e| Error::malformed(M::KIND, e))?;
    if bytes.len() > M::MAX_BYTES {
        return Err(Error::MessageTooLarge {
            kind: M::KIND,
            size: bytes.len(),
            limit: M::MAX_BYTES,
        });
    }
    Ok(bytes)
}

impl Desired {
    /// Every target the device may fetch for this state: each model's, and its challenger's.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.models.iter().flat_map(|m| {
            std::iter::once(m.target.as_str()).chain(m.shadow.as_ref().map(|s| s.target.as_str()))
        })
    }
}

/// What the server wants a device to run. Retained, so a device that connects late still gets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub schema: u32,
    pub id: MessageId,
    pub device: DeviceId,
    /// Grows with every change the server makes to this device's desired state. A device ignores a
    /// message whose revision is not above the last it acted on (replayed or reordered retained
    /// messages). It is only a hint: what the device installs is decided by signed TUF metadata.
    pub revision: u64,
    pub issued_at_unix: u64,
    pub models: Vec<DesiredModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredModel {
    pub model: ModelName,
    /// TUF target name, `models/<model>/<version>/model.onnx`.
    pub target: String,
    /// Where the artifact may be downloaded from, in order of preference.
    pub artifact_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// A challenger to run in the model's shadow slot beside `target` (a `shadow` rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::shadow::DesiredShadow>,
}

/// Where a model's update stands on the device (design brief §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Idle,
    Downloading,
    Staged,
    HealthChecking,
    Probation,
    Committed,
    Rejected,
    RolledBack,
}

/// One installed version of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstalledVersion {
    pub version: semver::Version,
    pub sequence: u64,
    pub target: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedModel {
    pub model: ModelName,
    pub active: Option<InstalledVersion>,
    pub previous: Option<InstalledVersion>,
    pub state: UpdateState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The challenger installed in the shadow slot, checked and running on copies of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<InstalledVersion>,
    /// The last challenger this device refused for the shadow slot, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_refused: Option<crate::shadow::ShadowRefusal>,
}

/// What the device really runs. Retained; always rewritten after a local change (including an
/// automatic rollback) so server and device agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    pub schema: u32,
    pub id: MessageId,
    pub device: DeviceId,
    pub seq: u64,
    pub at_unix: u64,
    pub agent_version: String,
    /// Revision of the last desired message the device acted on.
    pub desired_revision: u64,
    pub models: Vec<ReportedModel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Downloading,
    Verified,
    Staged,
    HealthChecking,
    Installed,
    Committed,
    Rejected,
    RolledBack,
    /// The guard after commit found the running version in breach of its signed policy
    /// ([`crate::guard`]); `evidence` says which rules, `detail` what the device did.
    GuardBreached,
}

/// One lifecycle step on a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema: u32,
    pub id: MessageId,
    pub device: DeviceId,
    pub seq: u64,
    pub at_unix: u64,
    pub kind: EventKind,
    pub model: ModelName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// For `rejected` and `rolled_back`: why, in words an operator can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For `guard_breached`: the rules broken, with the figures measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<crate::guard::Breach>,
}

pub use crate::latency::LatencySummary;

/// One model version's figures over a metrics window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    pub model: ModelName,
    pub version: semver::Version,
    pub requests: u64,
    pub errors: u64,
    pub latency: LatencySummary,
    /// The window's latencies, bucketed, so the server can merge devices and windows.
    #[serde(
        default,
        skip_serializing_if = "crate::latency::LatencyHistogram::is_empty"
    )]
    pub latency_histogram: crate::latency::LatencyHistogram,
    /// Predicted label → count, for output-distribution shift.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub predictions: BTreeMap<String, u64>,
    /// Feature → population stability index against the target's baseline, over this window
    /// alone (what the device's own guard and `/metrics` show).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift_psi: BTreeMap<String, f64>,
    /// Feature → the window's live counts per baseline bin: the server pools them over devices
    /// and windows and judges fleet drift on the pooled histogram.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift_counts: BTreeMap<String, crate::baseline::BinCounts>,
    /// Labels joined on the device in the window, to predictions of this version made in it or
    /// earlier ([`crate::quality`]).
    #[serde(
        default,
        skip_serializing_if = "crate::quality::QualityCounts::is_empty"
    )]
    pub quality: crate::quality::QualityCounts,
    /// Answers of this version the signed sampling policy let leave the device in the window
    /// ([`crate::sampling`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<crate::sampling::PredictionSample>,
    /// Answers picked for the sample but not sent: the day's byte or review budget was spent,
    /// or the window was full.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub samples_skipped: u64,
    /// A challenger run beside this version on copies of its requests in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::shadow::ShadowReport>,
}

impl ModelMetrics {
    /// A version's entry with nothing counted yet.
    pub fn empty(model: ModelName, version: semver::Version) -> Self {
        Self {
            model,
            version,
            requests: 0,
            errors: 0,
            latency: LatencySummary::default(),
            latency_histogram: crate::latency::LatencyHistogram::default(),
            predictions: BTreeMap::new(),
            drift_psi: BTreeMap::new(),
            drift_counts: BTreeMap::new(),
            quality: crate::quality::QualityCounts::default(),
            samples: Vec::new(),
            samples_skipped: 0,
            shadow: None,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// A batch of metrics from the device's outbox. `seq` orders batches per device; the server
/// stores each (device, seq) once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsBatch {
    pub schema: u32,
    pub id: MessageId,
    pub device: DeviceId,
    pub seq: u64,
    pub window_start_unix: u64,
    pub window_end_unix: u64,
    /// Batches the outbox dropped (oldest first) since the last one delivered, because it was full.
    pub dropped_batches: u64,
    pub process: ProcessStats,
    pub models: Vec<ModelMetrics>,
}

/// The most predictions a device may claim per second of a metrics window: far beyond any edge
/// device, so only a lie or a bug exceeds it.
pub const MAX_REQUESTS_PER_SECOND: u64 = 1_000_000;
/// The longest window a batch may claim, for that bound.
pub const MAX_WINDOW_SECONDS: u64 = 86_400;

impl MetricsBatch {
    /// Why the batch's counts cannot be true, if they cannot: more requests than
    /// [`MAX_REQUESTS_PER_SECOND`] over its window (at most [`MAX_WINDOW_SECONDS`]), or more
    /// errors than requests. The server stores and counts none of such a batch.
    pub fn implausible(&self) -> Option<String> {
        let window = self
            .window_end_unix
            .saturating_sub(self.window_start_unix)
            .clamp(1, MAX_WINDOW_SECONDS);
        let cap = window * MAX_REQUESTS_PER_SECOND;
        self.models.iter().find_map(|m| {
            if m.requests > cap {
                Some(format!(
                    "{} {} claims {} requests in a {window} s window (at most {cap})",
                    m.model, m.version, m.requests
                ))
            } else if m.errors > m.requests {
                Some(format!(
                    "{} {} claims {} errors in {} requests",
                    m.model, m.version, m.errors, m.requests
                ))
            } else if m.quality.labelled > cap {
                Some(format!(
                    "{} {} claims {} labelled predictions in a {window} s window (at most {cap})",
                    m.model, m.version, m.quality.labelled
                ))
            } else if let Err(e) = m.quality.check() {
                Some(format!("{} {}: {e}", m.model, m.version))
            } else if let Err(e) = crate::sampling::check_samples(&m.samples) {
                Some(format!("{} {}: {e}", m.model, m.version))
            } else if let Some(shadow) = &m.shadow
                && let Err(e) = shadow.counts.check_within(cap)
            {
                Some(format!(
                    "{} {} shadow {}: {e}",
                    m.model, m.version, shadow.target
                ))
            } else {
                None
            }
        })
    }
}

macro_rules! wire_message {
    ($t:ty, $kind:literal, $max:expr) => {
        impl WireMessage for $t {
            const KIND: &'static str = $kind;
            const MAX_BYTES: usize = $max;
            fn schema(&self) -> u32 {
                self.schema
            }
        }
    };
}
wire_message!(Desired, "desired", 64 * 1024);
wire_message!(Reported, "reported", 64 * 1024);
wire_message!(Event, "event", 16 * 1024);
wire_message!(MetricsBatch, "metrics", 256 * 1024);

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> Desired {
        Desired {
            schema: SCHEMA_VERSION,
            id: MessageId::from_random([1; 16]),
            device: DeviceId::new("d1").unwrap(),
            revision: 3,
            issued_at_unix: 1_700_000_000,
            models: vec![DesiredModel {
                shadow: None,
                model: ModelName::new("churn").unwrap(),
                target: "models/churn/2.0.0/model.onnx".into(),
                artifact_urls: vec!["http://127.0.0.1:8080/v1/artifacts/ab".into()],
                rollout: Some("r1".into()),
            }],
        }
    }

    #[test]
    fn metrics_counts_no_device_could_have_are_named() {
        let batch = |requests: u64, errors: u64, window: (u64, u64)| MetricsBatch {
            schema: SCHEMA_VERSION,
            id: MessageId::from_random([1; 16]),
            device: DeviceId::new("d1").unwrap(),
            seq: 1,
            window_start_unix: window.0,
            window_end_unix: window.1,
            dropped_batches: 0,
            process: ProcessStats {
                cpu_seconds: 0.0,
                rss_bytes: 0,
            },
            models: vec![ModelMetrics {
                shadow: None,
                requests,
                errors,
                ..ModelMetrics::empty(
                    crate::ModelName::new("churn").unwrap(),
                    semver::Version::new(1, 0, 0),
                )
            }],
        };
        assert_eq!(batch(60_000_000, 0, (0, 60)).implausible(), None);
        assert!(batch(60_000_001, 0, (0, 60)).implausible().is_some());
        assert!(batch(1_000_000_000_000, 0, (0, 60)).implausible().is_some());
        // A window the device stretches (or turns backwards) gains it nothing unbounded.
        assert!(batch(u64::MAX, 0, (0, u64::MAX)).implausible().is_some());
        assert!(batch(2_000_000, 0, (60, 0)).implausible().is_some());
        assert!(batch(5, 6, (0, 60)).implausible().is_some());
    }

    #[test]
    fn round_trips() {
        let d = desired();
        assert_eq!(decode::<Desired>(&encode(&d).unwrap()).unwrap(), d);
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let bytes = vec![b' '; Event::MAX_BYTES + 1];
        assert!(matches!(
            decode::<Event>(&bytes),
            Err(Error::MessageTooLarge { kind: "event", .. })
        ));
    }

    #[test]
    fn other_schema_versions_are_refused_by_name() {
        let mut v = serde_json::to_value(desired()).unwrap();
        v["schema"] = 2.into();
        let err = decode::<Desired>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(
            err,
            Error::UnsupportedSchema {
                kind: "desired",
                found: 2,
                supported: 1
            }
        );
    }

    #[test]
    fn invalid_ids_inside_messages_are_refused() {
        let mut v = serde_json::to_value(desired()).unwrap();
        v["device"] = "a/#".into();
        let err = decode::<Desired>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Malformed {
                    what: "desired",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("invalid device id"), "{err}");
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        let mut d = desired();
        d.models = (0..2000).map(|_| d.models[0].clone()).collect();
        assert!(matches!(encode(&d), Err(Error::MessageTooLarge { .. })));
    }
}
