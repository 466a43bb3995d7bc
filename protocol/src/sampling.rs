//! The sampled prediction log: which of a device's answers leave it, signed with the release.
//!
//! Every answer stays on the device (for labels to join there); a policy in the release's signed
//! metadata says what share of them also goes upstream in the telemetry window, how many bytes a
//! day that may take per model, which input features may ride along (none unless named: the id,
//! the answer and its score are all that leave by default), and which low-confidence answers go
//! to the server's review queue for people to label. Because the policy is signed, neither the
//! server nor anyone on the path can widen what a device sends; the server checks what arrives
//! against the same policy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::feedback::MAX_ID_BYTES;
use crate::interface::{Feature, ModelInterface};
use crate::quality::MAX_LABEL_BYTES;

/// Samples of one model version in one telemetry window at most.
pub const MAX_SAMPLES_PER_WINDOW: usize = 256;
/// Bytes of samples (as sent) one telemetry window carries at most, over all models: what is
/// left of a metrics batch's 256 KiB once its figures are in. A sender keeps to it, so a wide
/// policy can never make a window's batch too large to send.
pub const MAX_SAMPLE_BYTES_PER_WINDOW: u64 = 128 * 1024;
/// Features one sample may carry at most.
pub const MAX_SAMPLE_FEATURES: usize = 64;
/// A text feature's length at most.
pub const MAX_TEXT_BYTES: usize = 128;
/// The most a policy may let one model send per device per day.
pub const MAX_BYTES_PER_DAY: u64 = 64 * 1024 * 1024;

/// What a release lets leave the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SamplingPolicy {
    /// Share of answers sent upstream, 0 to 1. Default 0.01.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Bytes of samples (as sent) one device may send per model per UTC day; further samples
    /// that day are counted, not sent. Default 262,144 (256 KiB).
    #[serde(default = "default_max_bytes_per_day")]
    pub max_bytes_per_day: u64,
    /// Input features (by the interface's names) whose values ride with a sample. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Low-confidence answers routed to the review queue (classifiers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewPolicy>,
}

/// Which answers people should look at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ReviewPolicy {
    /// An answer whose predicted label's probability is below this goes to review.
    pub below_confidence: f64,
    /// Share of those answers sent, 0 to 1. Default 1.
    #[serde(default = "one")]
    pub rate: f64,
    /// Review items one device sends per model per UTC day at most. Default 100.
    #[serde(default = "default_reviews_per_day")]
    pub max_per_day: u64,
}

fn default_rate() -> f64 {
    0.01
}
fn default_max_bytes_per_day() -> u64 {
    256 * 1024
}
fn one() -> f64 {
    1.0
}
fn default_reviews_per_day() -> u64 {
    100
}

impl Default for SamplingPolicy {
    /// What a release that signs no policy gets: 1 % of answers, 256 KiB a day, no features, no
    /// review.
    fn default() -> Self {
        Self {
            rate: default_rate(),
            max_bytes_per_day: default_max_bytes_per_day(),
            features: Vec::new(),
            review: None,
        }
    }
}

/// Why an answer leaves the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Drawn at the policy's rate.
    Sampled,
    /// Below the review confidence and drawn at the review rate.
    Review,
}

impl SamplingPolicy {
    /// Checks the policy against the model's interface: shares between 0 and 1, a day's bytes
    /// within [`MAX_BYTES_PER_DAY`], features the interface names (each once), review only for a
    /// classifier.
    pub fn validate(&self, interface: &ModelInterface) -> Result<(), Error> {
        let bad = |why: String| Err(Error::invalid("sampling policy", why));
        for (name, v) in [
            ("rate", Some(self.rate)),
            ("review.rate", self.review.as_ref().map(|r| r.rate)),
            (
                "review.below_confidence",
                self.review.as_ref().map(|r| r.below_confidence),
            ),
        ] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return bad(format!("{name} {v} is not a share between 0 and 1"));
            }
        }
        if self.max_bytes_per_day > MAX_BYTES_PER_DAY {
            return bad(format!(
                "max_bytes_per_day {} is above {MAX_BYTES_PER_DAY}",
                self.max_bytes_per_day
            ));
        }
        if self.features.len() > MAX_SAMPLE_FEATURES {
            return bad(format!(
                "{} features named; at most {MAX_SAMPLE_FEATURES}",
                self.features.len()
            ));
        }
        let known: Vec<&str> = interface
            .features
            .iter()
            .flat_map(|s| s.features.iter())
            .map(|f| match f {
                Feature::Numeric { name, .. }
                | Feature::Categorical { name, .. }
                | Feature::Boolean { name, .. } => name.as_str(),
            })
            .collect();
        for (i, name) in self.features.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return bad(format!(
                    "feature {name:?} is not one of the model's named features ({})",
                    if known.is_empty() {
                        "it has none: it takes tensors".to_owned()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            if self.features[..i].contains(name) {
                return bad(format!("feature {name:?} is named twice"));
            }
        }
        if self.review.is_some()
            && !matches!(
                interface.prediction,
                Some(crate::interface::PredictionSpec::Classification { .. })
            )
        {
            return bad("review needs a classifier (its answers' confidence)".into());
        }
        Ok(())
    }

    /// Whether an answer leaves the device: `draw` and `review_draw` are uniform in [0, 1) (the
    /// caller's randomness, so this stays a plain function), `confidence` the predicted label's
    /// probability when the model gives one. A low-confidence answer drawn for review goes as
    /// a review item even when the plain draw would also have sent it.
    pub fn pick(&self, draw: f64, review_draw: f64, confidence: Option<f64>) -> Option<Pick> {
        if let (Some(review), Some(c)) = (&self.review, confidence)
            && c < review.below_confidence
            && review_draw < review.rate
        {
            return Some(Pick::Review);
        }
        (draw < self.rate).then_some(Pick::Sampled)
    }
}

/// A feature's value as the request gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum FeatureValue {
    Number(f64),
    Flag(bool),
    Text(String),
}

/// One answer that left the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PredictionSample {
    /// The prediction id the client got (labels name it).
    pub id: String,
    pub at_unix: u64,
    /// A classifier's predicted label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The predicted label's probability, when the model gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// A regressor's first output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The features the policy lets leave, as the request gave them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, FeatureValue>,
    /// Sent for people to review (low confidence).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub review: bool,
}

impl PredictionSample {
    /// Its size as sent, for the day's budget.
    pub fn wire_bytes(&self) -> u64 {
        serde_json::to_vec(self).map_or(0, |v| v.len() as u64)
    }

    /// Why the sample cannot be stored as it is, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty()
            || self.id.len() > MAX_ID_BYTES
            || self.id.chars().any(char::is_control)
        {
            return Err(format!(
                "sample id must be 1 to {MAX_ID_BYTES} characters without control characters"
            ));
        }
        if let Some(label) = &self.label
            && (label.len() > MAX_LABEL_BYTES || label.chars().any(char::is_control))
        {
            return Err(format!("sample {}: label is not a valid label", self.id));
        }
        for (name, v) in [("score", self.score), ("value", self.value)] {
            if let Some(v) = v
                && !v.is_finite()
            {
                return Err(format!("sample {}: {name} is not a finite number", self.id));
            }
        }
        if let Some(s) = self.score
            && !(0.0..=1.0).contains(&s)
        {
            return Err(format!(
                "sample {}: score {s} is not a probability",
                self.id
            ));
        }
        if self.features.len() > MAX_SAMPLE_FEATURES {
            return Err(format!(
                "sample {}: {} features; at most {MAX_SAMPLE_FEATURES}",
                self.id,
                self.features.len()
            ));
        }
        for (name, value) in &self.features {
            let fine = name.len() <= MAX_TEXT_BYTES
                && match value {
                    FeatureValue::Number(n) => n.is_finite(),
                    FeatureValue::Flag(_) => true,
                    FeatureValue::Text(t) => t.len() <= MAX_TEXT_BYTES,
                };
            if !fine {
                return Err(format!(
                    "sample {}: feature {name:?} is not a finite number, a flag or a text of at most {MAX_TEXT_BYTES} bytes",
                    self.id
                ));
            }
        }
        Ok(())
    }

    /// The features the policy does not let leave: what a server refuses to keep.
    pub fn unpermitted<'a>(&'a self, policy: &SamplingPolicy) -> Vec<&'a str> {
        self.features
            .keys()
            .filter(|k| !policy.features.contains(k))
            .map(String::as_str)
            .collect()
    }
}

/// Checks a window's samples: at most [`MAX_SAMPLES_PER_WINDOW`], each valid, no id twice.
pub fn check_samples(samples: &[PredictionSample]) -> Result<(), String> {
    if samples.len() > MAX_SAMPLES_PER_WINDOW {
        return Err(format!(
            "{} samples in one window; at most {MAX_SAMPLES_PER_WINDOW}",
            samples.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in samples {
        s.check()?;
        if !seen.insert(s.id.as_str()) {
            return Err(format!("sample {} appears twice", s.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn interface() -> ModelInterface {
        serde_json::from_str(include_str!("../../models/churn/2.0.0/interface.json")).unwrap()
    }

    #[test]
    fn the_default_sends_one_percent_without_features() {
        let p = SamplingPolicy::default();
        p.validate(&interface()).unwrap();
        assert_eq!(p.pick(0.005, 0.0, Some(0.51)), Some(Pick::Sampled));
        assert_eq!(p.pick(0.5, 0.0, Some(0.51)), None);
        let parsed: SamplingPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, p);
    }

    #[test]
    fn low_confidence_goes_to_review_at_its_own_rate() {
        let p = SamplingPolicy {
            rate: 0.0,
            review: Some(ReviewPolicy {
                below_confidence: 0.6,
                rate: 0.5,
                max_per_day: 10,
            }),
            ..SamplingPolicy::default()
        };
        p.validate(&interface()).unwrap();
        assert_eq!(p.pick(0.9, 0.1, Some(0.55)), Some(Pick::Review));
        assert_eq!(p.pick(0.9, 0.7, Some(0.55)), None);
        assert_eq!(p.pick(0.0, 0.1, Some(0.95)), None);
        assert_eq!(p.pick(0.9, 0.1, None), None);
    }

    #[test]
    fn a_policy_naming_what_the_model_lacks_is_refused_with_why() {
        let named = |features: &[&str]| SamplingPolicy {
            features: features.iter().map(|s| (*s).to_owned()).collect(),
            ..SamplingPolicy::default()
        };
        named(&["tenure_months"]).validate(&interface()).unwrap();
        let e = named(&["income"]).validate(&interface()).unwrap_err();
        assert!(e.to_string().contains("\"income\" is not one of"), "{e}");
        let e = named(&["tenure_months", "tenure_months"])
            .validate(&interface())
            .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = SamplingPolicy {
            rate: 1.5,
            ..SamplingPolicy::default()
        }
        .validate(&interface())
        .unwrap_err();
        assert!(e.to_string().contains("rate 1.5"), "{e}");
        let mut regressor = interface();
        regressor.prediction = Some(
            serde_json::from_value(serde_json::json!({"task": "regression", "output": "p"}))
                .unwrap(),
        );
        let e = SamplingPolicy {
            review: Some(ReviewPolicy {
                below_confidence: 0.6,
                rate: 1.0,
                max_per_day: 1,
            }),
            ..SamplingPolicy::default()
        }
        .validate(&regressor)
        .unwrap_err();
        assert!(e.to_string().contains("classifier"), "{e}");
    }

    #[test]
    fn samples_are_bounded_and_checked() {
        let sample = |id: &str| PredictionSample {
            id: id.into(),
            at_unix: 1,
            label: Some("churn".into()),
            score: Some(0.7),
            value: None,
            features: BTreeMap::from([("tenure_months".into(), FeatureValue::Number(3.0))]),
            review: false,
        };
        check_samples(&[sample("a"), sample("b")]).unwrap();
        assert!(check_samples(&[sample("a"), sample("a")]).is_err());
        let mut bad = sample("a");
        bad.score = Some(f64::NAN);
        assert!(bad.check().is_err());
        bad.score = Some(1.5);
        assert!(bad.check().is_err());
        let mut bad = sample("a");
        bad.features
            .insert("x".into(), FeatureValue::Text("y".repeat(200)));
        assert!(bad.check().is_err());
        let many: Vec<_> = (0..=MAX_SAMPLES_PER_WINDOW)
            .map(|i| sample(&i.to_string()))
            .collect();
        assert!(check_samples(&many).is_err());
        let p = SamplingPolicy::default();
        assert_eq!(sample("a").unpermitted(&p), vec!["tenure_months"]);
        let round: PredictionSample =
            serde_json::from_slice(&serde_json::to_vec(&sample("a")).unwrap()).unwrap();
        assert_eq!(round, sample("a"));
    }
}
