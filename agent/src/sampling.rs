//! The sampled prediction log: the few answers a release's signed policy lets leave the device
//! ([`edgefleet_protocol::sampling`]), gathered here until the next telemetry window carries
//! them upstream through the outbox. Every answer also stays in the local log
//! ([`crate::predictions`]) for labels to join; this is only what the server sees.
//!
//! The serving path pays a random draw and, for the rare answer picked, one small allocation.
//! What waits is bounded twice: per model and UTC day by the policy's bytes and review items
//! (what is picked beyond them is counted, not kept), and per version and window by
//! [`MAX_SAMPLES_PER_WINDOW`], so a burst cannot grow the agent's memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use edgefleet_protocol::ModelName;
use edgefleet_protocol::sampling::{
    FeatureValue, MAX_SAMPLE_BYTES_PER_WINDOW, MAX_SAMPLES_PER_WINDOW, MAX_TEXT_BYTES, Pick,
    PredictionSample, SamplingPolicy,
};
use serde_json::{Map, Value};

type VersionKey = (ModelName, semver::Version);

/// One model's spending on one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Day {
    day: u64,
    bytes: u64,
    reviews: u64,
}

/// What the next window carries for one version.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Gathered {
    pub samples: Vec<PredictionSample>,
    /// Picked but not kept: a budget was spent or the window was full.
    pub skipped: u64,
}

#[derive(Debug, Default)]
struct Inner {
    days: BTreeMap<ModelName, Day>,
    waiting: BTreeMap<VersionKey, Gathered>,
    /// Bytes of the samples waiting, over all versions.
    waiting_bytes: u64,
}

/// The answers picked since the last window, with each model's daily budget.
#[derive(Debug, Default)]
pub struct Sampler {
    inner: Mutex<Inner>,
}

/// One answer as the serving path has it.
#[derive(Debug)]
pub struct Answered<'a> {
    pub model: &'a ModelName,
    pub version: &'a semver::Version,
    pub id: &'a str,
    pub at_unix: u64,
    pub label: Option<&'a str>,
    /// The predicted label's probability.
    pub score: Option<f64>,
    pub value: Option<f64>,
    /// The request's named features (`:predict`), if it had them.
    pub row: Option<&'a Map<String, Value>>,
}

impl Sampler {
    /// Offers one answer: drawn against the policy with fresh randomness, kept if picked and
    /// within the day's budget.
    pub fn offer(&self, policy: &SamplingPolicy, answered: &Answered<'_>) {
        let Some(pick) = policy.pick(fastrand::f64(), fastrand::f64(), answered.score) else {
            return;
        };
        self.keep(policy, answered, pick);
    }

    /// Keeps a picked answer if the model's budget for its day and the window's room allow;
    /// counts it as skipped otherwise (a skipped answer spends no budget).
    fn keep(&self, policy: &SamplingPolicy, answered: &Answered<'_>, pick: Pick) {
        let sample = sample(policy, answered, pick);
        let bytes = sample.wire_bytes();
        let Ok(mut guard) = self.inner.lock() else {
            return;
        };
        let inner = &mut *guard;
        let key = (answered.model.clone(), answered.version.clone());
        let window_has_room = inner.waiting_bytes + bytes <= MAX_SAMPLE_BYTES_PER_WINDOW
            && inner
                .waiting
                .get(&key)
                .is_none_or(|w| w.samples.len() < MAX_SAMPLES_PER_WINDOW);
        let today = answered.at_unix / 86_400;
        let day = inner.days.entry(answered.model.clone()).or_default();
        if day.day != today {
            *day = Day {
                day: today,
                ..Day::default()
            };
        }
        let review_allowed = match (&policy.review, pick) {
            (Some(review), Pick::Review) => day.reviews < review.max_per_day,
            _ => true,
        };
        let fits =
            window_has_room && review_allowed && day.bytes + bytes <= policy.max_bytes_per_day;
        let waiting = inner.waiting.entry(key).or_default();
        if fits {
            day.bytes += bytes;
            day.reviews += u64::from(pick == Pick::Review);
            inner.waiting_bytes += bytes;
            waiting.samples.push(sample);
        } else {
            waiting.skipped += 1;
        }
    }

    /// What waits for the window being closed, per version; the sampler starts empty again
    /// (the day's budgets carry on).
    pub fn take(&self) -> BTreeMap<VersionKey, Gathered> {
        self.inner
            .lock()
            .map(|mut inner| {
                inner.waiting_bytes = 0;
                std::mem::take(&mut inner.waiting)
            })
            .unwrap_or_default()
    }
}

fn sample(policy: &SamplingPolicy, a: &Answered<'_>, pick: Pick) -> PredictionSample {
    let features = match a.row {
        Some(row) => policy
            .features
            .iter()
            .filter_map(|name| Some((name.clone(), feature_value(row.get(name)?)?)))
            .collect(),
        None => BTreeMap::new(),
    };
    PredictionSample {
        id: a.id.to_owned(),
        at_unix: a.at_unix,
        label: a.label.map(str::to_owned),
        score: a.score.filter(|s| s.is_finite()),
        value: a.value.filter(|v| v.is_finite()),
        features,
        review: pick == Pick::Review,
    }
}

/// A request's value as a sample carries it; one the server would refuse (not finite, too
/// long, nested) is left out rather than spoiling the sample.
fn feature_value(v: &Value) -> Option<FeatureValue> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(FeatureValue::Number),
        Value::Bool(b) => Some(FeatureValue::Flag(*b)),
        Value::String(s) if s.len() <= MAX_TEXT_BYTES => Some(FeatureValue::Text(s.clone())),
        _ => None,
    }
}

/// Puts the gathered samples beside the window's figures, under their version.
pub fn add_samples(
    models: &mut Vec<edgefleet_protocol::message::ModelMetrics>,
    gathered: BTreeMap<VersionKey, Gathered>,
) {
    for ((model, version), g) in gathered {
        match models
            .iter_mut()
            .find(|m| m.model == model && m.version == version)
        {
            Some(entry) => {
                entry.samples = g.samples;
                entry.samples_skipped = g.skipped;
            }
            None => {
                let mut entry = edgefleet_protocol::message::ModelMetrics::empty(model, version);
                entry.samples = g.samples;
                entry.samples_skipped = g.skipped;
                models.push(entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use edgefleet_protocol::sampling::ReviewPolicy;
    use serde_json::json;

    use super::*;

    fn churn() -> ModelName {
        ModelName::new("churn").unwrap()
    }

    fn v2() -> semver::Version {
        semver::Version::new(2, 0, 0)
    }

    fn answered<'a>(
        model: &'a ModelName,
        version: &'a semver::Version,
        id: &'a str,
        at_unix: u64,
        row: Option<&'a Map<String, Value>>,
    ) -> Answered<'a> {
        Answered {
            model,
            version,
            id,
            at_unix,
            label: Some("churn"),
            score: Some(0.55),
            value: None,
            row,
        }
    }

    #[test]
    fn only_the_features_the_policy_names_leave() {
        let policy = SamplingPolicy {
            rate: 1.0,
            features: vec!["tenure_months".into(), "contract_type".into()],
            ..SamplingPolicy::default()
        };
        let row = json!({"tenure_months": 3, "contract_type": "monthly", "monthly_charges": 70.5});
        let row = row.as_object().unwrap();
        let (m, v) = (churn(), v2());
        let sampler = Sampler::default();
        sampler.offer(&policy, &answered(&m, &v, "p1", 100, Some(row)));
        let taken = sampler.take();
        let got = &taken[&(m.clone(), v.clone())].samples[0];
        assert_eq!(got.id, "p1");
        assert_eq!(got.features.len(), 2);
        assert_eq!(
            got.features["contract_type"],
            FeatureValue::Text("monthly".into())
        );
        assert!(!got.features.contains_key("monthly_charges"));
        assert!(!got.review);
        // Taken: the next window starts empty.
        assert!(sampler.take().is_empty());
        // The default sends no feature at all.
        let sampler = Sampler::default();
        sampler.keep(
            &SamplingPolicy::default(),
            &answered(&m, &v, "p2", 100, Some(row)),
            Pick::Sampled,
        );
        assert!(sampler.take()[&(m, v)].samples[0].features.is_empty());
    }

    #[test]
    fn the_days_bytes_and_reviews_bound_what_leaves_and_the_rest_is_counted() {
        let (m, v) = (churn(), v2());
        let one = sample(
            &SamplingPolicy::default(),
            &answered(&m, &v, "p00", 10, None),
            Pick::Sampled,
        )
        .wire_bytes();
        let policy = SamplingPolicy {
            rate: 1.0,
            max_bytes_per_day: one * 3,
            review: Some(ReviewPolicy {
                below_confidence: 0.6,
                rate: 1.0,
                max_per_day: 1,
            }),
            ..SamplingPolicy::default()
        };
        let sampler = Sampler::default();
        let ids: Vec<String> = (0..5).map(|i| format!("p{i:02}")).collect();
        for id in &ids {
            sampler.keep(&policy, &answered(&m, &v, id, 10, None), Pick::Sampled);
        }
        let day1 = sampler.take().remove(&(m.clone(), v.clone())).unwrap();
        assert_eq!(day1.samples.len(), 3);
        assert_eq!(day1.skipped, 2);
        // A new UTC day has a new budget; one review item a day.
        for id in &ids[..2] {
            sampler.keep(&policy, &answered(&m, &v, id, 86_400, None), Pick::Review);
        }
        let day2 = sampler.take().remove(&(m, v)).unwrap();
        assert_eq!(day2.samples.len(), 1);
        assert!(day2.samples[0].review);
        assert_eq!(day2.skipped, 1);
    }

    #[test]
    fn a_window_holds_at_most_its_bound() {
        let (m, v) = (churn(), v2());
        let policy = SamplingPolicy {
            rate: 1.0,
            max_bytes_per_day: u64::MAX / 2,
            ..SamplingPolicy::default()
        };
        let sampler = Sampler::default();
        let ids: Vec<String> = (0..MAX_SAMPLES_PER_WINDOW + 10)
            .map(|i| format!("p{i}"))
            .collect();
        for id in &ids {
            sampler.offer(&policy, &answered(&m, &v, id, 10, None));
        }
        let g = sampler.take().remove(&(m, v)).unwrap();
        assert_eq!(g.samples.len(), MAX_SAMPLES_PER_WINDOW);
        assert_eq!(g.skipped, 10);
        edgefleet_protocol::sampling::check_samples(&g.samples).unwrap();
    }

    #[test]
    fn a_wide_policy_cannot_make_a_window_too_large_to_send() {
        let (m, v) = (churn(), v2());
        let names: Vec<String> = (0..60).map(|i| format!("f{i}")).collect();
        let policy = SamplingPolicy {
            rate: 1.0,
            max_bytes_per_day: u64::MAX / 2,
            features: names.clone(),
            ..SamplingPolicy::default()
        };
        let row: Map<String, Value> = names
            .iter()
            .map(|n| (n.clone(), json!("x".repeat(120))))
            .collect();
        let sampler = Sampler::default();
        let ids: Vec<String> = (0..200).map(|i| format!("p{i}")).collect();
        for id in &ids {
            sampler.offer(&policy, &answered(&m, &v, id, 10, Some(&row)));
        }
        let g = sampler.take().remove(&(m.clone(), v.clone())).unwrap();
        let bytes: u64 = g.samples.iter().map(PredictionSample::wire_bytes).sum();
        assert!(bytes <= MAX_SAMPLE_BYTES_PER_WINDOW, "{bytes}");
        assert!(g.skipped > 0 && g.samples.len() + g.skipped as usize == 200);
        // The batch carrying them is within the wire limit.
        let mut entry = edgefleet_protocol::message::ModelMetrics::empty(m.clone(), v.clone());
        entry.samples = g.samples;
        let batch = edgefleet_protocol::message::MetricsBatch {
            schema: edgefleet_protocol::message::SCHEMA_VERSION,
            id: edgefleet_protocol::MessageId::from_random([7; 16]),
            device: edgefleet_protocol::DeviceId::new("d1").unwrap(),
            seq: 1,
            window_start_unix: 0,
            window_end_unix: 60,
            dropped_batches: 0,
            process: Default::default(),
            models: vec![entry],
        };
        edgefleet_protocol::message::encode(&batch).unwrap();
        // The next window has room again.
        sampler.offer(&policy, &answered(&m, &v, "next", 10, Some(&row)));
        assert_eq!(sampler.take()[&(m, v)].samples.len(), 1);
    }

    #[test]
    fn values_the_server_would_refuse_are_left_out() {
        assert_eq!(feature_value(&json!(1.5)), Some(FeatureValue::Number(1.5)));
        assert_eq!(feature_value(&json!(true)), Some(FeatureValue::Flag(true)));
        assert_eq!(feature_value(&json!("x".repeat(200))), None);
        assert_eq!(feature_value(&json!([1, 2])), None);
        assert_eq!(feature_value(&json!(null)), None);
    }
}
