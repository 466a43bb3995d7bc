//! A split: the challenger in a model's shadow slot answers a fixed share of the device's
//! requests itself, and each arm's outcomes are counted on its own requests — answers, failures,
//! latency, label mix, and accuracy where labels arrive — with a two-proportion test saying
//! whether one arm is significantly more accurate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::latency::LatencyHistogram;

/// What one arm of a split answered: its requests, failures, latency, label mix and, on the
/// requests whose ground truth arrived, how often it was right.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmCounts {
    pub answered: u64,
    /// Requests this arm failed (the champion answered the challenger's instead).
    pub errors: u64,
    #[serde(default, skip_serializing_if = "LatencyHistogram::is_empty")]
    pub latency: LatencyHistogram,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, u64>,
    pub labelled: u64,
    pub correct: u64,
}

impl ArmCounts {
    pub fn is_empty(&self) -> bool {
        self.answered == 0 && self.errors == 0 && self.labelled == 0
    }

    /// Counts one answer and how long it took.
    pub fn answer(&mut self, label: Option<&str>, took: std::time::Duration) {
        self.answered += 1;
        self.latency.record(took);
        if let Some(label) = label {
            count_label(&mut self.labels, label);
        }
    }

    pub fn merge(&mut self, other: &ArmCounts) {
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.answered, other.answered);
        add(&mut self.errors, other.errors);
        self.latency.merge(&other.latency);
        for (label, n) in &other.labels {
            add(self.labels.entry(label.clone()).or_default(), *n);
        }
        add(&mut self.labelled, other.labelled);
        add(&mut self.correct, other.correct);
    }

    /// Share of the labelled answers that were right.
    pub fn accuracy(&self) -> Option<f64> {
        (self.labelled > 0).then(|| self.correct as f64 / self.labelled as f64)
    }

    /// Share of this arm's attempts that failed.
    pub fn error_ratio(&self) -> Option<f64> {
        let ran = self.answered.saturating_add(self.errors);
        (ran > 0).then(|| self.errors as f64 / ran as f64)
    }

    pub(crate) fn check(&self, arm: &str) -> Result<(), String> {
        let labels = self.labels.values().fold(0u64, |a, n| a.saturating_add(*n));
        if self.labelled > self.answered
            || self.correct > self.labelled
            || labels > self.answered
            || self.latency.count() > self.answered
        {
            return Err(format!(
                "the {arm} arm claims more labelled, right, labels or latencies than the {} requests it answered",
                self.answered
            ));
        }
        Ok(())
    }
}

/// Both arms of a split over the same span of time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitCounts {
    pub champion: ArmCounts,
    pub challenger: ArmCounts,
}

impl SplitCounts {
    pub fn is_empty(&self) -> bool {
        self.champion.is_empty() && self.challenger.is_empty()
    }

    pub fn arm_mut(&mut self, arm: Arm) -> &mut ArmCounts {
        match arm {
            Arm::Champion => &mut self.champion,
            Arm::Challenger => &mut self.challenger,
        }
    }

    /// The two-proportion test of the arms' accuracy, when both have labelled answers.
    pub fn accuracy_test(&self) -> Option<ArmTest> {
        arm_test(
            (self.champion.correct, self.champion.labelled),
            (self.challenger.correct, self.challenger.labelled),
        )
    }
}

/// One more `label` in `mix`; the label is copied only the first time (this runs for every
/// answer a shadow or split counts, on the serving path).
pub(crate) fn count_label(mix: &mut BTreeMap<String, u64>, label: &str) {
    match mix.get_mut(label) {
        Some(n) => *n += 1,
        None => {
            mix.insert(label.to_owned(), 1);
        }
    }
}

/// The two-proportion z-test of two arms' accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmTest {
    /// Positive when the first arm (the champion) was right more often.
    pub z: f64,
    /// Two-sided.
    pub p_value: f64,
}

/// The significance level of a split's readout and gate.
pub const SPLIT_ALPHA: f64 = 0.05;

/// The two-sided two-proportion z-test of arms given as (right, labelled); `None` while an arm
/// has no labelled answers or neither arm's answers vary.
pub fn arm_test(a: (u64, u64), b: (u64, u64)) -> Option<ArmTest> {
    let ((ra, na), (rb, nb)) = (a, b);
    if na == 0 || nb == 0 {
        return None;
    }
    let (pa, pb) = (ra as f64 / na as f64, rb as f64 / nb as f64);
    let pooled = (ra + rb) as f64 / (na + nb) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / na as f64 + 1.0 / nb as f64)).sqrt();
    if se == 0.0 || !se.is_finite() {
        return None;
    }
    let z = (pa - pb) / se;
    Some(ArmTest {
        z,
        p_value: 2.0 * (1.0 - standard_normal_cdf(z.abs())),
    })
}

/// Which arm answered better on its labelled requests, if the difference is significant at
/// `alpha`. Arms are (right, labelled): the champion's, then the challenger's.
pub fn better_arm(a: (u64, u64), b: (u64, u64), alpha: f64) -> Option<(Arm, f64)> {
    let t = arm_test(a, b)?;
    (t.p_value < alpha).then_some((
        if t.z > 0.0 {
            Arm::Champion
        } else {
            Arm::Challenger
        },
        t.p_value,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Champion,
    Challenger,
}

/// Φ(x), from the complementary error function (Abramowitz and Stegun 7.1.26, error < 1.5e-7).
fn standard_normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-z * z).exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_better_arm_is_named_only_when_the_difference_is_significant() {
        // 90 % against 80 % on 1,000 each: z ≈ 6.2.
        let (arm, p) = better_arm((900, 1000), (800, 1000), 0.05).unwrap();
        assert_eq!(arm, Arm::Champion);
        assert!(p < 1e-6, "{p}");
        assert_eq!(
            better_arm((82, 100), (90, 100), 0.05).map(|(a, _)| a),
            None,
            "z ≈ 1.63: not significant at 5 %"
        );
        assert_eq!(
            better_arm((800, 1000), (850, 1000), 0.05).map(|(a, _)| a),
            Some(Arm::Challenger)
        );
        assert_eq!(better_arm((0, 0), (5, 10), 0.05), None);
        assert_eq!(better_arm((10, 10), (5, 5), 0.05), None, "nothing varies");
        // The CDF against known values.
        assert!((standard_normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((standard_normal_cdf(-1.0) - 0.158_655_25).abs() < 1e-6);
    }
}
