//! What the server does with one message a device published: checks that it is the device's own
//! (topic, seal, device id), decodes and bounds it by the protocol's rules, and stores it once.
//! The broker clients call it and acknowledge the message only once it says so.

use edgefleet_protocol::DeviceId;
use edgefleet_protocol::message::{self, Event, MetricsBatch, Reported};
use edgefleet_protocol::topic::{Channel, Topic};

use crate::device_keys::{DeviceKeys, NotOpened};
use crate::metrics::Metrics;
use crate::samples::{REVIEW_BOUNDS, Review, ReviewState, StoredSample};
use crate::store::{Store, StoredEvent};

/// What became of one device message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    Stored,
    /// Already stored (a redelivery) or older than what is stored.
    Duplicate,
    /// Malformed, for an unknown device, or naming another device than its topic: dropped.
    Refused(String),
    /// The store failed: not acknowledged, so the broker redelivers.
    Failed(String),
    /// Not for the server: an empty message (a retained message being cleared, by the server
    /// itself or a device) or desired state (the server's own, seen through its `#` on the
    /// embedded broker; devices verify desired state themselves).
    Ignored,
}

impl Ingested {
    pub(crate) fn label(&self) -> String {
        match self {
            Ingested::Stored => "stored",
            Ingested::Duplicate => "duplicate",
            Ingested::Refused(_) => "refused",
            Ingested::Failed(_) => "failed",
            Ingested::Ignored => "ignored",
        }
        .into()
    }
}

/// Validates and stores one message a device published, received at `received_us` (Unix
/// microseconds); a new metrics batch also counts into the fleet's Prometheus figures.
pub async fn ingest(
    store: &dyn Store,
    metrics: &Metrics,
    keys: &DeviceKeys,
    topic: &str,
    payload: &[u8],
    received_us: i64,
) -> Ingested {
    let raw_topic = topic;
    if payload.is_empty() {
        return Ingested::Ignored;
    }
    let topic = match Topic::parse(topic) {
        Ok(t) if t.channel.from_device() => t,
        Ok(t) if t.channel == Channel::Desired => return Ingested::Ignored,
        Ok(t) => {
            return Ingested::Refused(format!("{} is not a device channel", t.channel.as_str()));
        }
        Err(e) => return Ingested::Refused(e.to_string()),
    };
    let payload = match keys.open(store, &topic.device, raw_topic, payload).await {
        Ok(message) => message,
        Err(NotOpened::Refused(why)) => return Ingested::Refused(why),
        Err(NotOpened::Failed(why)) => return Ingested::Failed(why),
    };
    let now = received_us.div_euclid(1_000_000);
    let result = match topic.channel {
        Channel::Reported => match message::decode::<Reported>(payload) {
            Ok(m) if m.device != topic.device => return wrong_device(&topic, &m.device),
            Ok(m) => store.record_reported(&m, now).await,
            Err(e) => return Ingested::Refused(e.to_string()),
        },
        Channel::Events => match message::decode::<Event>(payload) {
            Ok(m) if m.device != topic.device => return wrong_device(&topic, &m.device),
            Ok(m) => {
                let stored = store
                    .record_event(&StoredEvent::received(m.clone(), now))
                    .await;
                if let Ok(true) = stored
                    && m.kind == message::EventKind::GuardBreached
                {
                    metrics.count_guard_breach(&m);
                    // The event is stored whatever happens here; an alert that cannot be
                    // raised is logged, and the event stays in the device's history.
                    if let Err(e) = crate::alerting::raise_guard(store, &m, now).await {
                        tracing::error!(device = %m.device, error = %e, "cannot raise the alert for a guard breach");
                    }
                }
                stored
            }
            Err(e) => return Ingested::Refused(e.to_string()),
        },
        Channel::Metrics => match message::decode::<MetricsBatch>(payload) {
            Ok(m) if m.device != topic.device => return wrong_device(&topic, &m.device),
            Ok(m) if let Some(why) = m.implausible() => {
                return Ingested::Refused(format!("metrics batch {}: {why}", m.seq));
            }
            Ok(mut m) => {
                // The samples go to their own table first (each stored once, so a redelivered
                // batch adds nothing); the batch is kept without them, so what reads telemetry
                // back never carries them.
                let mut samples = take_samples(&mut m, now);
                for sample in &mut samples {
                    metrics.keep_permitted_features(sample);
                }
                if !samples.is_empty() {
                    match store.add_samples(&samples, REVIEW_BOUNDS).await {
                        Ok(added) => metrics.count_samples(&samples, added),
                        Err(crate::store::StoreError::Backend(e)) => return Ingested::Failed(e),
                        Err(e) => return Ingested::Refused(e.to_string()),
                    }
                }
                let stored = store.record_metrics(&m, received_us).await;
                if let Ok(true) = stored {
                    metrics.count_telemetry(&m);
                }
                stored
            }
            Err(e) => return Ingested::Refused(e.to_string()),
        },
        Channel::Desired => return Ingested::Ignored,
    };
    match result {
        // Storing it moved the device's `last_seen` in the same write.
        Ok(true) => Ingested::Stored,
        Ok(false) => match store.device(&topic.device).await {
            Ok(Some(_)) => Ingested::Duplicate,
            Ok(None) => Ingested::Refused(format!("unknown device {}", topic.device)),
            Err(e) => Ingested::Failed(e.to_string()),
        },
        Err(crate::store::StoreError::Backend(e)) => Ingested::Failed(e),
        Err(e) => Ingested::Refused(e.to_string()),
    }
}

/// Moves a batch's samples out of it, as the store keeps them; low-confidence ones enter the
/// review queue.
fn take_samples(batch: &mut MetricsBatch, received_at: i64) -> Vec<StoredSample> {
    let device = batch.device.to_string();
    let mut out = Vec::new();
    for m in &mut batch.models {
        for sample in std::mem::take(&mut m.samples) {
            out.push(StoredSample {
                device: device.clone(),
                model: m.model.to_string(),
                version: m.version.to_string(),
                received_at,
                review: sample.review.then_some(Review {
                    state: ReviewState::Open,
                    truth: None,
                    by: None,
                    at: None,
                }),
                sample,
            });
        }
    }
    out
}

fn wrong_device(topic: &Topic, named: &DeviceId) -> Ingested {
    Ingested::Refused(format!(
        "message names device {named} but was published on {}'s topic",
        topic.device
    ))
}
