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

/// How far the champion's accuracy leads the challenger's, with the confidence that the lead is
/// larger than a tolerated `margin`: the one-sided non-inferiority test a split's gate stops on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChampionLead {
    /// Champion's accuracy minus the challenger's (negative when the challenger leads).
    pub lead: f64,
    /// The lower end of the lead's two-sided 95 % interval.
    pub at_least: f64,
    /// One-sided: the chance of a lead this large were the true lead only `margin`.
    pub p_value: f64,
}

/// The champion's lead over the challenger on arms given as (right, labelled), tested against
/// `margin`; `None` while an arm has no labelled answers.
///
/// Testing the lead against the margin, rather than testing for any difference and then
/// comparing the observed lead with the margin, is what keeps a like-for-like challenger from
/// being stopped by chance one wave in forty: the difference test fires on a chance lead of a
/// few points as often as its level says, whatever the margin. The Agresti–Caffo interval (one
/// right and one wrong answer added to each arm) stays honest on small or all-right arms, where
/// the plain Wald interval collapses to nothing.
pub fn champion_lead(
    champion: (u64, u64),
    challenger: (u64, u64),
    margin: f64,
) -> Option<ChampionLead> {
    let ((ra, na), (rb, nb)) = (champion, challenger);
    if na == 0 || nb == 0 {
        return None;
    }
    let adjusted = |r: u64, n: u64| (r as f64 + 1.0) / (n as f64 + 2.0);
    let (pa, pb) = (adjusted(ra, na), adjusted(rb, nb));
    let se = (pa * (1.0 - pa) / (na as f64 + 2.0) + pb * (1.0 - pb) / (nb as f64 + 2.0)).sqrt();
    let lead = ra as f64 / na as f64 - rb as f64 / nb as f64;
    let z = (pa - pb - margin) / se;
    Some(ChampionLead {
        lead,
        at_least: pa - pb - Z_95 * se,
        p_value: 1.0 - standard_normal_cdf(z),
    })
}

/// The two-sided 95 % quantile of the standard normal.
const Z_95: f64 = 1.959_964;

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
    fn the_arms_test_names_a_significant_difference_either_way() {
        // 90 % against 80 % on 1,000 each: z ≈ 6.2.
        let t = arm_test((900, 1000), (800, 1000)).unwrap();
        assert!(t.z > 6.0 && t.p_value < 1e-6, "{t:?}");
        let t = arm_test((82, 100), (90, 100)).unwrap();
        assert!(
            t.z < 0.0 && t.p_value > SPLIT_ALPHA,
            "z ≈ -1.63: not significant at 5 %"
        );
        assert!(arm_test((800, 1000), (850, 1000)).unwrap().z < 0.0);
        assert_eq!(arm_test((0, 0), (5, 10)), None);
        assert_eq!(arm_test((10, 10), (5, 5)), None, "nothing varies");
        // The CDF against known values.
        assert!((standard_normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((standard_normal_cdf(-1.0) - 0.158_655_25).abs() < 1e-6);
    }

    #[test]
    fn the_champions_lead_is_tested_against_the_margin_not_against_zero() {
        let stop = |a, b, margin| champion_lead(a, b, margin).unwrap().p_value < SPLIT_ALPHA / 2.0;
        // 90 % against 70 %: a lead of 20 points, surely more than 2.
        let lead = champion_lead((810, 900), (210, 300), 0.02).unwrap();
        assert!(
            (lead.lead - 0.2).abs() < 1e-9 && lead.at_least > 0.14,
            "{lead:?}"
        );
        assert!(stop((810, 900), (210, 300), 0.02));
        // 85 % against 80 % on 1,000 each differs significantly (z ≈ 2.9), but a lead of more
        // than 2 points is not shown (the interval reaches down to 1.7).
        assert!(arm_test((850, 1000), (800, 1000)).unwrap().p_value < 0.01);
        let lead = champion_lead((850, 1000), (800, 1000), 0.02).unwrap();
        assert!(lead.at_least < 0.02 && lead.at_least > 0.0, "{lead:?}");
        assert!(!stop((850, 1000), (800, 1000), 0.02));
        // The same lead on 5,000 each is more than 2 points.
        assert!(stop((4250, 5000), (4000, 5000), 0.02));
        // A challenger that leads is never stopped, nor is one whose arms are all right.
        assert!(!stop((630, 900), (270, 300), 0.0));
        assert!(!stop((300, 300), (300, 300), 0.0));
        // All right against all wrong on a few answers: the interval stays open, and wide.
        let lead = champion_lead((10, 10), (0, 10), 0.02).unwrap();
        assert!(lead.at_least > 0.4 && lead.at_least < 1.0, "{lead:?}");
        assert_eq!(champion_lead((0, 0), (5, 10), 0.02), None);
    }

    #[test]
    fn a_like_for_like_challenger_is_rarely_stopped_and_a_far_worse_one_always() {
        // Both arms right 81 % of the time on 300 labelled answers each, at every count the arms
        // can show: the chance the margin test stops the challenger, summed exactly over the
        // binomial outcomes, against the difference test's one tail.
        let n = 300u64;
        let pmf = |p: f64| -> Vec<f64> {
            let mut out = vec![0.0; n as usize + 1];
            let mut log_choose = 0.0f64;
            for k in 0..=n {
                if k > 0 {
                    log_choose += ((n - k + 1) as f64).ln() - (k as f64).ln();
                }
                out[k as usize] =
                    (log_choose + k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln()).exp();
            }
            out
        };
        let chance = |champion: &[f64], challenger: &[f64], stops: &dyn Fn(u64, u64) -> bool| {
            let mut sum = 0.0;
            for (a, pa) in champion.iter().enumerate() {
                for (b, pb) in challenger.iter().enumerate() {
                    if stops(a as u64, b as u64) {
                        sum += pa * pb;
                    }
                }
            }
            sum
        };
        let alike = pmf(0.81);
        let by_difference = chance(&alike, &alike, &|a, b| {
            arm_test((a, n), (b, n)).is_some_and(|t| t.z > 0.0 && t.p_value < SPLIT_ALPHA)
        });
        let by_margin = |margin: f64| {
            chance(&alike, &alike, &|a, b| {
                champion_lead((a, n), (b, n), margin).unwrap().p_value < SPLIT_ALPHA / 2.0
            })
        };
        assert!((0.02..0.03).contains(&by_difference), "{by_difference}");
        assert!(by_margin(0.02) < 0.006, "{}", by_margin(0.02));
        assert!(by_margin(0.1) < 1e-5, "{}", by_margin(0.1));
        // Right 47 % of the time (bad/decaying on the newest customers): stopped at 10 points.
        let worse = pmf(0.47);
        let caught = chance(&alike, &worse, &|a, b| {
            champion_lead((a, n), (b, n), 0.1).unwrap().p_value < SPLIT_ALPHA / 2.0
        });
        assert!(caught > 1.0 - 1e-5, "{caught}");
    }
}
