//! A challenger judged on live traffic beside the champion: the figures a device gathers when a
//! candidate runs in the shadow of the serving version (or answers a share of requests, in a
//! split), which add up across devices and windows like every other telemetry figure, and the
//! plain functions that judge them.
//!
//! Only counts and sums travel: how many requests both answered, how many the two agreed on, the
//! sum of the absolute differences of their scores, both label mixes, the challenger's latency
//! histogram and errors, and on the labelled ones how often each was right. Agreement, mean
//! difference, output shift and the accuracy of both on the *same* requests all follow exactly
//! from the sums, whatever the number of devices.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::baseline::mix_psi;
use crate::latency::LatencyHistogram;
pub use crate::split::{Arm, ArmCounts, SplitCounts};

/// The challenger beside the champion over some requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowCounts {
    /// Requests both models answered.
    pub compared: u64,
    /// Of them, those both gave the same label (classifiers) or values within the interface's
    /// tolerance (regressors).
    pub agreed: u64,
    /// Sum over the compared requests of |challenger score − champion score| (the positive
    /// label's probability, or the first value).
    pub abs_diff_sum: f64,
    /// Requests the challenger failed on (the champion answered them).
    pub challenger_errors: u64,
    /// Copies of requests not run through the challenger: over its CPU budget or shed under load.
    pub shed: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub champion_labels: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub challenger_labels: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "LatencyHistogram::is_empty")]
    pub challenger_latency: LatencyHistogram,
    /// Compared requests whose ground truth arrived, and how often each model was right on them.
    pub labelled: u64,
    pub champion_correct: u64,
    pub challenger_correct: u64,
    /// In a split: what each arm answered, on different requests.
    #[serde(default, skip_serializing_if = "SplitCounts::is_empty")]
    pub split: SplitCounts,
}

/// The challenger a rollout puts in a model's shadow slot on one device: installed, checked and
/// run on a copy of live requests, never answering one.
///
/// Shares travel in parts per million: the desired state is signed as canonical JSON, which has
/// no floating-point numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredShadow {
    /// TUF target name of the challenger.
    pub target: String,
    /// Where its artifact may be downloaded from, in order of preference.
    pub artifact_urls: Vec<String>,
    /// Share of live requests copied to the challenger (or, in a split, answered by it), in
    /// millionths (1..=1,000,000).
    pub share_ppm: u32,
    /// Most of one core's time the challenger may take, in millionths (1..=1,000,000); copies
    /// beyond it are shed. (A split's challenger answers on the request path: not budgeted.)
    pub max_cpu_ppm: u32,
    /// `shadow` (default; absent from the signed form): the challenger answers nothing. `split`:
    /// it answers its share of requests itself.
    #[serde(default, skip_serializing_if = "SlotMode::is_shadow")]
    pub mode: SlotMode,
}

/// What the challenger in a shadow slot does with its share of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotMode {
    /// Runs on a copy, after the champion answered; its answer is only compared.
    #[default]
    Shadow,
    /// Answers the request in the champion's place (falling back to the champion if it fails).
    Split,
}

impl SlotMode {
    pub fn is_shadow(&self) -> bool {
        *self == SlotMode::Shadow
    }
}

/// One million: a whole, in [`DesiredShadow`]'s shares.
pub const PPM: u32 = 1_000_000;

/// A share in (0, 1] as parts per million, rounded, at least 1.
pub fn to_ppm(share: f64) -> u32 {
    (share.clamp(0.0, 1.0) * f64::from(PPM)).round().max(1.0) as u32
}

impl DesiredShadow {
    pub fn share(&self) -> f64 {
        f64::from(self.share_ppm) / f64::from(PPM)
    }

    pub fn max_cpu_share(&self) -> f64 {
        f64::from(self.max_cpu_ppm) / f64::from(PPM)
    }

    /// Why the shares cannot be used, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("share_ppm", self.share_ppm),
            ("max_cpu_ppm", self.max_cpu_ppm),
        ] {
            if !(1..=PPM).contains(&v) {
                return Err(format!("shadow {name} {v} must be in 1..={PPM}"));
            }
        }
        Ok(())
    }
}

/// Why the challenger a desired state names is not in the device's shadow slot: refused at
/// admission (over the device's shadow limit, too little memory), at load or at the health
/// check. A shadow rollout falls back to canary for this device, or fails it, by its policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowRefusal {
    pub target: String,
    pub reason: String,
}

/// One window of a challenger beside the version that served (the `ModelMetrics` it rides in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowReport {
    /// The challenger's TUF target name.
    pub target: String,
    pub counts: ShadowCounts,
}

/// One compared request.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared<'a> {
    pub champion_label: Option<&'a str>,
    pub challenger_label: Option<&'a str>,
    pub champion_score: f64,
    pub challenger_score: f64,
    /// For regressors: how far two values may be and still agree.
    pub tolerance: f64,
}

impl ShadowCounts {
    pub fn is_empty(&self) -> bool {
        self.compared == 0
            && self.challenger_errors == 0
            && self.shed == 0
            && self.labelled == 0
            && self.split.is_empty()
    }

    /// Counts one request both answered.
    pub fn add(&mut self, c: &Compared<'_>) {
        self.compared += 1;
        let diff = (c.challenger_score - c.champion_score).abs();
        if diff.is_finite() {
            self.abs_diff_sum += diff;
        }
        let agreed = match (c.champion_label, c.challenger_label) {
            (Some(a), Some(b)) => a == b,
            _ => diff <= c.tolerance,
        };
        self.agreed += u64::from(agreed);
        for (mix, label) in [
            (&mut self.champion_labels, c.champion_label),
            (&mut self.challenger_labels, c.challenger_label),
        ] {
            if let Some(label) = label {
                crate::split::count_label(mix, label);
            }
        }
    }

    /// Counts the ground truth of one compared request.
    pub fn add_truth(&mut self, champion_right: bool, challenger_right: bool) {
        self.labelled += 1;
        self.champion_correct += u64::from(champion_right);
        self.challenger_correct += u64::from(challenger_right);
    }

    /// Adds another device's or window's counts (saturating: a device's lie cannot overflow the
    /// fleet's sums).
    pub fn merge(&mut self, other: &ShadowCounts) {
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.compared, other.compared);
        add(&mut self.agreed, other.agreed);
        self.abs_diff_sum += other.abs_diff_sum;
        add(&mut self.challenger_errors, other.challenger_errors);
        add(&mut self.shed, other.shed);
        for (mine, theirs) in [
            (&mut self.champion_labels, &other.champion_labels),
            (&mut self.challenger_labels, &other.challenger_labels),
        ] {
            for (label, n) in theirs {
                add(mine.entry(label.clone()).or_default(), *n);
            }
        }
        self.challenger_latency.merge(&other.challenger_latency);
        add(&mut self.labelled, other.labelled);
        add(&mut self.champion_correct, other.champion_correct);
        add(&mut self.challenger_correct, other.challenger_correct);
        self.split.champion.merge(&other.split.champion);
        self.split.challenger.merge(&other.split.challenger);
    }

    /// Why the counts cannot be true, if they cannot (a device's bug or lie).
    pub fn check(&self) -> Result<(), String> {
        if self.agreed > self.compared {
            return Err(format!(
                "{} agreed of {} compared",
                self.agreed, self.compared
            ));
        }
        if self.labelled > self.compared
            || self.champion_correct > self.labelled
            || self.challenger_correct > self.labelled
        {
            return Err("more labelled or right answers than compared requests".into());
        }
        if !(self.abs_diff_sum.is_finite() && self.abs_diff_sum >= 0.0) {
            return Err("the score differences must sum to a finite positive number".into());
        }
        self.split.champion.check("champion")?;
        self.split.challenger.check("challenger")
    }

    /// [`Self::check`], and at most `cap` requests compared, failed or shed (a window's bound).
    pub fn check_within(&self, cap: u64) -> Result<(), String> {
        self.check()?;
        let claimed = self
            .compared
            .saturating_add(self.challenger_errors)
            .saturating_add(self.shed)
            .saturating_add(self.split.champion.answered)
            .saturating_add(self.split.champion.errors)
            .saturating_add(self.split.challenger.answered)
            .saturating_add(self.split.challenger.errors);
        if claimed > cap {
            return Err(format!(
                "claims {claimed} shadowed requests (at most {cap})"
            ));
        }
        let labels =
            |mix: &BTreeMap<String, u64>| mix.values().fold(0u64, |a, n| a.saturating_add(*n));
        if labels(&self.champion_labels) > self.compared
            || labels(&self.challenger_labels) > self.compared
            || self.challenger_latency.count() > self.compared
        {
            return Err("more labels or latencies than compared requests".into());
        }
        Ok(())
    }

    pub fn agreement(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreed as f64 / self.compared as f64)
    }

    pub fn mean_abs_diff(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.abs_diff_sum / self.compared as f64)
    }

    /// PSI of the challenger's label mix against the champion's on the same requests.
    pub fn output_psi(&self) -> Option<f64> {
        let total = self
            .champion_labels
            .values()
            .fold(0u64, |a, n| a.saturating_add(*n));
        if total == 0 {
            return None;
        }
        let shares = self
            .champion_labels
            .iter()
            .map(|(l, n)| (l.clone(), *n as f64 / total as f64))
            .collect();
        mix_psi(&shares, &self.challenger_labels)
    }

    /// The challenger's failures among the requests it ran.
    pub fn error_ratio(&self) -> Option<f64> {
        let ran = self.compared.saturating_add(self.challenger_errors);
        (ran > 0).then(|| self.challenger_errors as f64 / ran as f64)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// One compared request with these labels, the scores `diff` apart (also for `verdict`).
    pub(crate) fn compared(champion: &str, challenger: &str, diff: f64) -> Compared<'static> {
        let (a, b): (&'static str, &'static str) = (
            Box::leak(champion.to_owned().into_boxed_str()),
            Box::leak(challenger.to_owned().into_boxed_str()),
        );
        Compared {
            champion_label: Some(a),
            challenger_label: Some(b),
            champion_score: 0.5,
            challenger_score: 0.5 + diff,
            tolerance: 0.0,
        }
    }

    #[test]
    fn counts_add_up_across_devices_exactly() {
        let mut one = ShadowCounts::default();
        let mut two = ShadowCounts::default();
        let mut all = ShadowCounts::default();
        for i in 0..300 {
            let c = compared("stay", if i % 10 == 0 { "churn" } else { "stay" }, 0.01);
            all.add(&c);
            if i % 2 == 0 { &mut one } else { &mut two }.add(&c);
        }
        one.merge(&two);
        assert_eq!(one.compared, all.compared);
        assert_eq!(one.agreed, all.agreed);
        assert_eq!(one.challenger_labels, all.challenger_labels);
        assert!((one.abs_diff_sum - all.abs_diff_sum).abs() < 1e-9);
        assert_eq!(all.agreement(), Some(0.9));
        assert!((all.mean_abs_diff().unwrap() - 0.01).abs() < 1e-9);
        all.check().unwrap();
    }

    #[test]
    fn impossible_counts_are_refused() {
        let counts = ShadowCounts {
            compared: 1,
            agreed: 2,
            ..ShadowCounts::default()
        };
        assert!(counts.check().is_err());
        let counts = ShadowCounts {
            compared: 1,
            abs_diff_sum: f64::NAN,
            ..ShadowCounts::default()
        };
        assert!(counts.check().is_err());
    }

    #[test]
    fn split_counts_merge_and_impossible_ones_are_refused() {
        let mut a = ShadowCounts::default();
        a.split
            .challenger
            .answer(Some("churn"), std::time::Duration::from_millis(1));
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.split.challenger.answered, 2);
        assert_eq!(b.split.challenger.labels["churn"], 2);
        b.check_within(2).unwrap();
        assert!(b.check_within(1).is_err());
        b.split.challenger.correct = 1;
        assert!(b.check().is_err(), "right without a label");
        assert!(!a.is_empty());
    }
}
