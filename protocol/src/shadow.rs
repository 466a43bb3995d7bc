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
                count_label(mix, label);
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

/// What a shadow wave must show before its challenger may answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ShadowGate {
    /// Compared requests needed before judging. Default 200.
    #[serde(default = "default_min_compared")]
    pub min_compared: u64,
    /// Least share of requests both answer alike. Default 0.9.
    #[serde(default = "default_min_agreement")]
    pub min_agreement: f64,
    /// Largest mean absolute difference of the scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mean_abs_diff: Option<f64>,
    /// Largest PSI of the challenger's label mix against the champion's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_psi: Option<f64>,
    /// Largest share of the challenger's runs that fail. Default 0.01.
    #[serde(default = "default_max_error_ratio")]
    pub max_error_ratio: f64,
    /// Largest p99 of the challenger, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
    /// With labels: the challenger's accuracy may be at most this far below the champion's on the
    /// same requests. Default 0.02.
    #[serde(default = "default_max_accuracy_drop")]
    pub max_accuracy_drop: f64,
    /// Labelled compared requests needed before accuracy is judged. Default 100.
    #[serde(default = "default_min_labelled")]
    pub min_labelled: u64,
}

fn default_min_compared() -> u64 {
    200
}
fn default_min_agreement() -> f64 {
    0.9
}
fn default_max_error_ratio() -> f64 {
    0.01
}
fn default_max_accuracy_drop() -> f64 {
    0.02
}
fn default_min_labelled() -> u64 {
    100
}

impl Default for ShadowGate {
    fn default() -> Self {
        Self {
            min_compared: default_min_compared(),
            min_agreement: default_min_agreement(),
            max_mean_abs_diff: None,
            max_output_psi: None,
            max_error_ratio: default_max_error_ratio(),
            max_p99_ms: None,
            max_accuracy_drop: default_max_accuracy_drop(),
            min_labelled: default_min_labelled(),
        }
    }
}

/// A shadow wave's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowVerdict {
    /// Not enough compared requests yet.
    Insufficient(String),
    /// Every rule holds: the challenger may answer.
    Pass,
    /// The rules broken, with the figures.
    Breach(Vec<String>),
}

/// Judges a challenger's counts against the gate.
pub fn judge(gate: &ShadowGate, c: &ShadowCounts) -> ShadowVerdict {
    if c.compared < gate.min_compared {
        return ShadowVerdict::Insufficient(format!(
            "{} of the {} compared requests the gate needs",
            c.compared, gate.min_compared
        ));
    }
    let mut broken = Vec::new();
    if let Some(a) = c.agreement()
        && a < gate.min_agreement
    {
        broken.push(format!(
            "agreement {a:.3} is below {:.3} on {} requests",
            gate.min_agreement, c.compared
        ));
    }
    if let (Some(limit), Some(d)) = (gate.max_mean_abs_diff, c.mean_abs_diff())
        && d > limit
    {
        broken.push(format!("mean score difference {d:.4} is above {limit}"));
    }
    if let (Some(limit), Some(psi)) = (gate.max_output_psi, c.output_psi())
        && psi > limit
    {
        broken.push(format!("output shift (PSI) {psi:.3} is above {limit}"));
    }
    if let Some(e) = c.error_ratio()
        && e > gate.max_error_ratio
    {
        broken.push(format!(
            "the challenger failed {:.1} % of its runs (at most {:.1} %)",
            e * 100.0,
            gate.max_error_ratio * 100.0
        ));
    }
    if let Some(limit) = gate.max_p99_ms
        && c.challenger_latency.count() > 0
    {
        let p99 = c.challenger_latency.quantile_ms(0.99);
        if p99 > limit {
            broken.push(format!(
                "the challenger's p99 {p99:.2} ms is above {limit} ms"
            ));
        }
    }
    if c.labelled >= gate.min_labelled.max(1) {
        let champion = c.champion_correct as f64 / c.labelled as f64;
        let challenger = c.challenger_correct as f64 / c.labelled as f64;
        if champion - challenger > gate.max_accuracy_drop {
            broken.push(format!(
                "on {} labelled requests the challenger was right {:.1} % of the time, the champion {:.1} %",
                c.labelled,
                challenger * 100.0,
                champion * 100.0
            ));
        }
    }
    if broken.is_empty() {
        ShadowVerdict::Pass
    } else {
        ShadowVerdict::Breach(broken)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn compared(champion: &str, challenger: &str, diff: f64) -> Compared<'static> {
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
    fn the_default_gate_is_what_an_empty_one_parses_to() {
        assert_eq!(
            serde_json::from_str::<ShadowGate>("{}").unwrap(),
            ShadowGate::default()
        );
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
    fn a_challenger_that_disagrees_on_live_inputs_is_stopped_and_a_like_one_passes() {
        let gate = ShadowGate::default();
        let mut like = ShadowCounts::default();
        let mut unlike = ShadowCounts::default();
        for i in 0..250 {
            like.add(&compared(
                "stay",
                if i % 50 == 0 { "churn" } else { "stay" },
                0.001,
            ));
            unlike.add(&compared(
                "stay",
                if i % 3 == 0 { "churn" } else { "stay" },
                0.2,
            ));
        }
        assert_eq!(judge(&gate, &like), ShadowVerdict::Pass);
        match judge(&gate, &unlike) {
            ShadowVerdict::Breach(why) => assert!(why[0].contains("agreement 0.664"), "{why:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            judge(&gate, &ShadowCounts::default()),
            ShadowVerdict::Insufficient(_)
        ));
        // With labels: alike answers but the challenger is right less often.
        for i in 0..150 {
            like.add_truth(true, i % 5 != 0);
        }
        match judge(&gate, &like) {
            ShadowVerdict::Breach(why) => assert!(why[0].contains("right 80.0 %"), "{why:?}"),
            other => panic!("{other:?}"),
        }
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
}
