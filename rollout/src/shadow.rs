//! The `shadow` strategy: each wave first runs the new version in its devices' shadow slots,
//! beside the version they serve, on a copy of live requests; the wave's figures are judged by
//! the shadow gate ([`edgefleet_protocol::verdict::judge`]); on a pass each device promotes the
//! challenger in place (its file is already stored: no second download) and the wave goes on as
//! a canary wave does — install, health check, probation, bake. On a breach the rollout halts
//! before the challenger has answered a single request.
//!
//! A device that cannot hold both models says why ([`Observed::shadow_refused`]); the rollout's
//! `fallback` decides whether it takes the version as a plain canary or counts as failed.

use edgefleet_protocol::message::MetricsBatch;
use edgefleet_protocol::shadow::{ShadowCounts, SlotMode};
use edgefleet_protocol::verdict::{ShadowGate, ShadowVerdict, judge, judge_split, split_readout};
use serde::{Deserialize, Serialize};

use crate::{Action, DeviceState, Observed, PlanError, Rollout, RolloutDevice, RolloutState};

/// How a rollout proves its version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum Strategy {
    /// Each wave installs the version, which answers requests from activation (probation).
    #[default]
    Canary,
    /// Each wave runs the version in the shadow slot first and promotes it only on a pass.
    Shadow,
    /// Each wave's devices answer a fixed share of requests with the version (the rest with the
    /// champion), each arm's outcomes counted; on a pass the version is promoted.
    Split,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Canary => "canary",
            Strategy::Shadow => "shadow",
            Strategy::Split => "split",
        }
    }

    /// Whether each wave first proves the version in the devices' shadow slots.
    pub fn uses_slot(self) -> bool {
        self != Strategy::Canary
    }

    /// What the challenger does in the slot, for the desired state.
    pub fn slot_mode(self) -> SlotMode {
        match self {
            Strategy::Split => SlotMode::Split,
            _ => SlotMode::Shadow,
        }
    }
}

/// What becomes of a device that cannot run a shadow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum Fallback {
    /// It installs the version as a canary would.
    #[default]
    Canary,
    /// It counts as failed (against `max_failure_ratio`).
    Refuse,
}

/// The shadow phase of a `shadow` rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ShadowOptions {
    /// Share of each device's requests copied to the challenger, in (0, 1]. Default 0.1.
    #[serde(default = "default_share")]
    pub share: f64,
    /// Most of one core's time the challenger may take on a device, in (0, 1]. Default 0.25.
    #[serde(default = "default_max_cpu_share")]
    pub max_cpu_share: f64,
    /// What the wave's figures must show before the challenger may answer.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(inline))]
    pub gate: ShadowGate,
    /// A device that cannot hold both models: `canary` (default) or `refuse`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(inline))]
    pub fallback: Fallback,
}

fn default_share() -> f64 {
    0.1
}

fn default_max_cpu_share() -> f64 {
    0.25
}

impl Default for ShadowOptions {
    fn default() -> Self {
        Self {
            share: default_share(),
            max_cpu_share: default_max_cpu_share(),
            gate: ShadowGate::default(),
            fallback: Fallback::default(),
        }
    }
}

impl ShadowOptions {
    pub(crate) fn validate(&self) -> Result<(), PlanError> {
        let share = |v: f64| v > 0.0 && v <= 1.0;
        let g = &self.gate;
        let limits = [g.max_mean_abs_diff, g.max_output_psi, g.max_p99_ms];
        if !share(self.share)
            || !share(self.max_cpu_share)
            || !(0.0..=1.0).contains(&g.min_agreement)
            || !(0.0..=1.0).contains(&g.max_error_ratio)
            || !(0.0..=1.0).contains(&g.max_accuracy_drop)
            || limits
                .iter()
                .flatten()
                .any(|l| !(l.is_finite() && *l >= 0.0))
            || g.min_compared == 0
        {
            return Err(PlanError::Shadow);
        }
        Ok(())
    }
}

/// The shadow gate's last verdict for a wave, kept with the rollout (and the release's record
/// of champion–challenger decisions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ShadowCheck {
    pub wave: usize,
    /// When the figures were judged: the end of their window.
    pub at: i64,
    /// The start of their window: when the first of the wave's devices was told to run the
    /// challenger.
    #[serde(default)]
    pub since: i64,
    /// The version the challenger was judged against (the one most of the wave's devices
    /// served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<String>,
    /// `waiting` (too few compared requests), `promoted` or `stopped`.
    pub decision: String,
    pub summary: String,
    /// The wave's figures the verdict was taken on.
    #[cfg_attr(feature = "schema", schema(value_type = Object))]
    pub counts: ShadowCounts,
}

/// One line of figures: agreement, score difference, output shift, latency, errors, accuracy.
pub fn describe(c: &ShadowCounts) -> String {
    let mut parts = vec![format!("{} compared", c.compared)];
    if let Some(a) = c.agreement() {
        parts.push(format!("agreement {:.1} %", a * 100.0));
    }
    if let Some(d) = c.mean_abs_diff() {
        parts.push(format!("mean score difference {d:.4}"));
    }
    if let Some(psi) = c.output_psi() {
        parts.push(format!("output PSI {psi:.3}"));
    }
    if c.challenger_latency.count() > 0 {
        parts.push(format!(
            "challenger p99 {:.2} ms",
            c.challenger_latency.quantile_ms(0.99)
        ));
    }
    parts.push(format!("{} challenger errors", c.challenger_errors));
    if c.shed > 0 {
        parts.push(format!("{} copies shed", c.shed));
    }
    if c.labelled > 0 {
        parts.push(format!(
            "on {} labelled: champion {:.1} %, challenger {:.1} %",
            c.labelled,
            c.champion_correct as f64 * 100.0 / c.labelled as f64,
            c.challenger_correct as f64 * 100.0 / c.labelled as f64
        ));
    }
    parts.join(", ")
}

/// One line of a split's figures: what each arm answered, its failures and p99, and the
/// significance readout on accuracy.
pub fn describe_split(c: &ShadowCounts) -> String {
    let arm = |name: &str, a: &edgefleet_protocol::split::ArmCounts| {
        let mut line = format!("{name} answered {}", a.answered);
        if a.latency.count() > 0 {
            line.push_str(&format!(" (p99 {:.2} ms)", a.latency.quantile_ms(0.99)));
        }
        if a.errors > 0 {
            line.push_str(&format!(", failed {}", a.errors));
        }
        line
    };
    format!(
        "{}, {}; {}",
        arm("challenger", &c.split.challenger),
        arm("champion", &c.split.champion),
        split_readout(&c.split)
    )
}

/// Where a device in its shadow phase stands, from what it reports.
pub(crate) enum ShadowStep {
    Stay(DeviceState),
    /// It cannot run a shadow, for this reason.
    Cannot(String),
}

pub(crate) fn shadow_step(
    d: &RolloutDevice,
    seen: &Observed,
    challenger: &str,
    acted: bool,
) -> ShadowStep {
    if seen.shadow_target.as_deref() == Some(challenger) {
        return ShadowStep::Stay(DeviceState::Shadowing);
    }
    if acted
        && let Some(refused) = &seen.shadow_refused
        && refused.target == challenger
    {
        return ShadowStep::Cannot(refused.reason.clone());
    }
    // A device that restarts refills its slot from the stored file: still shadowing.
    ShadowStep::Stay(d.state)
}

impl Rollout {
    /// When the first of `wave`'s devices was told to run the challenger.
    fn wave_started(&self, wave: usize) -> Option<i64> {
        self.devices
            .iter()
            .filter(|d| d.wave == wave)
            .filter_map(|d| d.notified_at)
            .min()
    }

    /// The version most of `wave`'s devices served before the rollout.
    fn wave_champion(&self, wave: usize) -> Option<String> {
        let mut counts = std::collections::BTreeMap::new();
        for v in self
            .devices
            .iter()
            .filter(|d| d.wave == wave)
            .filter_map(|d| d.previous_version.as_ref())
        {
            *counts.entry(v).or_insert(0) += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(v, _)| v.clone())
    }

    /// Whether `device` is still to be proven in the shadow slot.
    pub(crate) fn in_shadow_phase(&self, device: &RolloutDevice) -> bool {
        self.spec.strategy.uses_slot() && !device.promoted
    }

    /// The first desired-state change for a device of this rollout.
    pub fn first_action(&self, device: &RolloutDevice) -> Action {
        if self.in_shadow_phase(device) {
            Action::Shadow {
                device: device.id.clone(),
            }
        } else {
            Action::Update {
                device: device.id.clone(),
            }
        }
    }

    /// Whether the engine should judge the current wave's shadow figures now: every device of
    /// the wave still in its shadow phase runs the challenger (or failed), at least one does,
    /// and the last verdict is older than `every` seconds.
    pub fn wants_shadow_check(&self, now: i64, every: i64) -> bool {
        let RolloutState::Running { wave } = self.state else {
            return false;
        };
        let mut shadowing = 0;
        for d in self
            .devices
            .iter()
            .filter(|d| d.wave == wave && self.in_shadow_phase(d))
        {
            match d.state {
                DeviceState::Shadowing => shadowing += 1,
                s if s.settled() => {}
                _ => return false,
            }
        }
        shadowing > 0
            && self
                .shadow_check
                .as_ref()
                .is_none_or(|c| c.wave != wave || now - c.at >= every)
    }

    /// Takes the shadow gate's verdict on the current wave's figures: a pass promotes every
    /// device of the wave running the challenger; a breach halts the rollout (its devices go
    /// back to the champion alone); too few requests keeps waiting.
    pub fn shadow_checked(&mut self, now: i64, counts: ShadowCounts) -> Vec<Action> {
        let RolloutState::Running { wave } = self.state else {
            return Vec::new();
        };
        let gate = self.spec.shadow.clone().unwrap_or_default().gate;
        let split = self.spec.strategy == Strategy::Split;
        let (summary, verdict) = if split {
            (describe_split(&counts), judge_split(&gate, &counts.split))
        } else {
            (describe(&counts), judge(&gate, &counts))
        };
        let phase = self.spec.strategy.name();
        let (decision, actions) = match verdict {
            ShadowVerdict::Insufficient(why) => ("waiting", Err(why)),
            ShadowVerdict::Breach(broken) => ("stopped", Ok(Err(broken.join("; ")))),
            ShadowVerdict::Pass => ("promoted", Ok(Ok(()))),
        };
        let first_verdict = !self
            .shadow_check
            .as_ref()
            .is_some_and(|c| c.wave == wave && c.decision == decision);
        let check = ShadowCheck {
            wave,
            at: now,
            since: self.wave_started(wave).unwrap_or(now),
            champion: self.wave_champion(wave),
            decision: decision.into(),
            summary: summary.clone(),
            counts,
        };
        if decision != "waiting" {
            self.verdicts.push(check.clone());
        }
        self.shadow_check = Some(check);
        match actions {
            Err(why) => {
                if first_verdict {
                    self.note(now, format!("wave {} {phase}: waiting ({why})", wave + 1));
                }
                Vec::new()
            }
            Ok(Err(broken)) => self.halt(
                now,
                wave,
                if split {
                    format!(
                        "wave {} stopped by its split gate; its devices go back to the champion alone: {broken} ({summary})",
                        wave + 1
                    )
                } else {
                    format!(
                        "wave {} stopped by its shadow gate before the challenger answered: {broken} ({summary})",
                        wave + 1
                    )
                },
            ),
            Ok(Ok(())) => {
                let mut actions = Vec::new();
                for d in &mut self.devices {
                    if d.wave == wave && d.state == DeviceState::Shadowing && !d.promoted {
                        d.promoted = true;
                        actions.push(Action::Update {
                            device: d.id.clone(),
                        });
                    }
                }
                self.note(
                    now,
                    format!(
                        "wave {} {phase} passed ({summary}); promoting {} devices in place",
                        wave + 1,
                        actions.len()
                    ),
                );
                actions
            }
        }
    }
}

/// The current wave's shadow figures: the challenger's reports from the wave's devices that
/// run it, from windows that ended after each was notified.
pub fn shadow_evidence(rollout: &Rollout, batches: &[MetricsBatch]) -> ShadowCounts {
    shadow_evidence_from(rollout, |device| {
        batches
            .iter()
            .filter(move |b| b.device.as_str() == device)
            .flat_map(|b| {
                shadow_reports(rollout, b).map(move |counts| (b.window_end_unix, counts.clone()))
            })
            .collect()
    })
}

/// The challenger's counts in `batch`: those of the rollout's model and target.
pub fn shadow_reports<'a>(
    rollout: &'a Rollout,
    batch: &'a MetricsBatch,
) -> impl Iterator<Item = &'a ShadowCounts> + 'a {
    batch
        .models
        .iter()
        .filter(|m| m.model.as_str() == rollout.spec.model)
        .filter_map(|m| m.shadow.as_ref())
        .filter(|r| r.target == rollout.spec.target)
        .map(|r| &r.counts)
}

/// [`shadow_evidence`] over what `reports` gives for a device: (window end, the challenger's
/// counts) for each of its windows, whichever way they were gathered.
pub fn shadow_evidence_from(
    rollout: &Rollout,
    reports: impl Fn(&str) -> Vec<(u64, ShadowCounts)>,
) -> ShadowCounts {
    let mut counts = ShadowCounts::default();
    let Some(wave) = rollout.state.wave() else {
        return counts;
    };
    for d in rollout
        .devices
        .iter()
        .filter(|d| d.wave == wave && d.state == DeviceState::Shadowing)
    {
        let since = d.notified_at.unwrap_or(i64::MAX);
        for (_, report) in reports(&d.id)
            .iter()
            .filter(|(window_end, _)| i64::try_from(*window_end).unwrap_or(0) >= since)
        {
            counts.merge(report);
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use edgefleet_protocol::message::UpdateState;
    use edgefleet_protocol::shadow::{Compared, ShadowRefusal};

    use super::*;
    use crate::{Gates, RolloutSpec, Selector};

    const CHAMPION: &str = "models/churn/1.0.0/model.onnx";
    const CHALLENGER: &str = "models/churn/2.0.0/model.onnx";

    fn rollout(fallback: Fallback) -> Rollout {
        rollout_with(Strategy::Shadow, fallback)
    }

    fn rollout_with(strategy: Strategy, fallback: Fallback) -> Rollout {
        let spec = RolloutSpec {
            model: "churn".into(),
            version: "2.0.0".into(),
            target: CHALLENGER.into(),
            selector: Selector::default(),
            waves: vec![50.0, 100.0],
            gates: Gates::default(),
            rollback_on_halt: true,
            strategy,
            shadow: Some(ShadowOptions {
                fallback,
                ..ShadowOptions::default()
            }),
        };
        let devices = (0..4)
            .map(|i| (format!("d{i}"), Some("1.0.0".to_owned())))
            .collect();
        Rollout::new("r".into(), spec, devices, "op".into(), 0).unwrap()
    }

    fn shadowing(revision: u64) -> Observed {
        Observed {
            active_target: Some(CHAMPION.into()),
            state: Some(UpdateState::Committed),
            desired_revision: revision,
            shadow_target: Some(CHALLENGER.into()),
            ..Observed::default()
        }
    }

    fn committed(revision: u64) -> Observed {
        Observed {
            active_target: Some(CHALLENGER.into()),
            state: Some(UpdateState::Committed),
            desired_revision: revision,
            ..Observed::default()
        }
    }

    fn counts(compared: u64, agreed: u64) -> ShadowCounts {
        let mut c = ShadowCounts::default();
        for i in 0..compared {
            c.add(&Compared {
                champion_label: Some("stay"),
                challenger_label: Some(if i < agreed { "stay" } else { "churn" }),
                champion_score: 0.9,
                challenger_score: 0.9,
                tolerance: 0.0,
            });
        }
        c
    }

    fn devices(actions: &[Action]) -> Vec<(&'static str, String)> {
        actions
            .iter()
            .map(|a| match a {
                Action::Update { device } => ("update", device.clone()),
                Action::Shadow { device } => ("shadow", device.clone()),
                Action::Revert { device, .. } => ("revert", device.clone()),
            })
            .collect()
    }

    /// Steps with what `seen` says, recording notifications at revision `rev`.
    fn step(r: &mut Rollout, now: i64, seen: &HashMap<String, Observed>, rev: u64) -> Vec<Action> {
        let actions = r.step(now, |id| seen.get(id).cloned());
        for a in &actions {
            if let Action::Update { device } | Action::Shadow { device } = a {
                r.notified(device, rev, now);
            }
        }
        actions
    }

    #[test]
    fn each_wave_shadows_then_promotes_in_place_on_a_pass() {
        let mut r = rollout(Fallback::Canary);
        let mut seen = HashMap::new();
        let first = step(&mut r, 0, &seen, 1);
        assert_eq!(
            devices(&first),
            [("shadow", "d0".into()), ("shadow", "d1".into())]
        );
        assert!(!r.wants_shadow_check(1, 5), "the slots are not filled yet");
        for d in ["d0", "d1"] {
            seen.insert(d.to_string(), shadowing(1));
        }
        assert!(step(&mut r, 2, &seen, 1).is_empty());
        assert_eq!(r.devices[0].state, DeviceState::Shadowing);
        assert!(r.wants_shadow_check(2, 5));
        // Too few requests: wait, noted once.
        assert!(r.shadow_checked(2, counts(50, 50)).is_empty());
        assert!(r.shadow_checked(8, counts(120, 120)).is_empty());
        let waiting = r
            .history
            .iter()
            .filter(|(_, t)| t.contains("waiting"))
            .count();
        assert_eq!(waiting, 1);
        assert!(!r.wants_shadow_check(10, 5));
        // Waiting for traffic is no timeout.
        assert!(step(&mut r, 5000, &seen, 1).is_empty());
        assert_eq!(r.devices[0].state, DeviceState::Shadowing);
        let promote = r.shadow_checked(5000, counts(400, 396));
        assert_eq!(
            devices(&promote),
            [("update", "d0".into()), ("update", "d1".into())]
        );
        let check = r.shadow_check.clone().unwrap();
        assert_eq!((check.wave, check.decision.as_str()), (0, "promoted"));
        assert!(
            check.summary.contains("agreement 99.0 %"),
            "{}",
            check.summary
        );
        for d in ["d0", "d1"] {
            r.notified(d, 2, 5000);
            seen.insert(d.to_string(), committed(2));
        }
        // Wave 2: d3 cannot hold both models and falls back to canary.
        let second = step(&mut r, 5001, &seen, 3);
        assert_eq!(
            devices(&second),
            [("shadow", "d2".into()), ("shadow", "d3".into())]
        );
        seen.insert("d2".into(), shadowing(3));
        seen.insert(
            "d3".into(),
            Observed {
                shadow_refused: Some(ShadowRefusal {
                    target: CHALLENGER.into(),
                    reason: "over this device's shadow limit".into(),
                }),
                ..shadowing(3)
            },
        );
        seen.get_mut("d3").unwrap().shadow_target = None;
        let fell_back = step(&mut r, 5002, &seen, 4);
        assert_eq!(devices(&fell_back), [("update", "d3".into())]);
        assert!(
            r.history
                .iter()
                .any(|(_, t)| t.contains("falls back to canary"))
        );
        assert!(
            r.wants_shadow_check(5002, 5),
            "d3 is a canary now; d2 shadows"
        );
        let promote = r.shadow_checked(5002, counts(300, 300));
        assert_eq!(devices(&promote), [("update", "d2".into())]);
        r.notified("d2", 5, 5002);
        seen.insert("d2".into(), committed(5));
        seen.insert("d3".into(), committed(4));
        step(&mut r, 5003, &seen, 6);
        assert_eq!(r.state, RolloutState::Completed, "{:?}", r.history);
    }

    #[test]
    fn a_breach_halts_before_the_challenger_answers_and_the_wave_keeps_its_champion() {
        let mut r = rollout(Fallback::Canary);
        let mut seen = HashMap::new();
        step(&mut r, 0, &seen, 1);
        for d in ["d0", "d1"] {
            seen.insert(d.to_string(), shadowing(1));
        }
        step(&mut r, 1, &seen, 1);
        let back = r.shadow_checked(6, counts(400, 250));
        assert!(matches!(r.state, RolloutState::Halted { wave: 0, .. }));
        assert_eq!(
            back,
            [
                Action::Revert {
                    device: "d0".into(),
                    version: Some("1.0.0".into())
                },
                Action::Revert {
                    device: "d1".into(),
                    version: Some("1.0.0".into())
                }
            ]
        );
        let (_, reason) = r
            .history
            .iter()
            .find(|(_, t)| t.starts_with("halted"))
            .unwrap();
        assert!(
            reason.contains("before the challenger answered") && reason.contains("agreement 0.625"),
            "{reason}"
        );
        assert_eq!(r.shadow_check.unwrap().decision, "stopped");
    }

    #[test]
    fn a_device_that_cannot_shadow_fails_when_the_policy_refuses() {
        let mut r = rollout(Fallback::Refuse);
        let mut seen = HashMap::new();
        step(&mut r, 0, &seen, 1);
        seen.insert(
            "d0".to_string(),
            Observed {
                active_target: Some(CHAMPION.into()),
                desired_revision: 1,
                shadow_refused: Some(ShadowRefusal {
                    target: CHALLENGER.into(),
                    reason: "too little memory".into(),
                }),
                ..Observed::default()
            },
        );
        step(&mut r, 1, &seen, 1);
        assert!(
            r.history
                .iter()
                .any(|(_, t)| t == "device d0 Failed: cannot run a shadow: too little memory"),
            "{:?}",
            r.history
        );
        // Any failure halts by default (and the wave goes back to the champion alone).
        assert!(matches!(r.state, RolloutState::Halted { .. }));
        assert_eq!(r.devices[0].state, DeviceState::RolledBack);
    }

    #[test]
    fn options_out_of_range_are_refused_and_only_with_the_shadow_strategy() {
        let bad = ShadowOptions {
            share: 0.0,
            ..ShadowOptions::default()
        };
        assert_eq!(bad.validate(), Err(PlanError::Shadow));
        let bad = ShadowOptions {
            gate: ShadowGate {
                min_agreement: 1.5,
                ..ShadowGate::default()
            },
            ..ShadowOptions::default()
        };
        assert_eq!(bad.validate(), Err(PlanError::Shadow));
        ShadowOptions::default().validate().unwrap();
        let parsed: ShadowOptions = serde_json::from_str(r#"{"share": 0.5}"#).unwrap();
        assert_eq!(parsed.max_cpu_share, 0.25);
        assert_eq!(parsed.fallback, Fallback::Canary);
    }

    fn split(champion: (u64, u64, u64), challenger: (u64, u64, u64)) -> ShadowCounts {
        let arm = |(answered, labelled, correct)| edgefleet_protocol::split::ArmCounts {
            answered,
            labelled,
            correct,
            ..Default::default()
        };
        ShadowCounts {
            split: edgefleet_protocol::split::SplitCounts {
                champion: arm(champion),
                challenger: arm(challenger),
            },
            ..ShadowCounts::default()
        }
    }

    #[test]
    fn a_split_wave_promotes_the_better_arm_and_halts_on_a_worse_one() {
        let mut r = rollout_with(Strategy::Split, Fallback::Canary);
        let mut seen = HashMap::new();
        let first = step(&mut r, 0, &seen, 1);
        assert_eq!(devices(&first)[0].0, "shadow", "a split fills the slot too");
        for d in ["d0", "d1"] {
            seen.insert(d.to_string(), shadowing(1));
        }
        step(&mut r, 2, &seen, 1);
        assert!(r.wants_shadow_check(2, 5));
        assert!(
            r.shadow_checked(2, split((500, 0, 0), (100, 0, 0)))
                .is_empty()
        );
        let promote = r.shadow_checked(9, split((900, 900, 630), (300, 300, 270)));
        assert_eq!(promote.len(), 2);
        let check = r.shadow_check.clone().unwrap();
        assert_eq!(check.decision, "promoted");
        assert!(
            check.summary.contains("the challenger is better"),
            "{}",
            check.summary
        );
        assert!(
            r.history
                .iter()
                .any(|(_, t)| t.contains("wave 1 split passed"))
        );
        // Kept for the registry: the decision only (not the wait), its window and champion.
        assert_eq!(r.verdicts.len(), 1);
        let kept = &r.verdicts[0];
        assert_eq!(
            (kept.decision.as_str(), kept.since, kept.at),
            ("promoted", 0, 9)
        );
        assert_eq!(kept.champion.as_deref(), Some("1.0.0"));

        let mut r = rollout_with(Strategy::Split, Fallback::Canary);
        let mut seen = HashMap::new();
        step(&mut r, 0, &seen, 1);
        for d in ["d0", "d1"] {
            seen.insert(d.to_string(), shadowing(1));
        }
        step(&mut r, 2, &seen, 1);
        r.shadow_checked(9, split((900, 900, 810), (300, 300, 210)));
        assert!(
            matches!(r.state, RolloutState::Halted { .. }),
            "{:?}",
            r.state
        );
        let check = r.shadow_check.clone().unwrap();
        assert_eq!(check.decision, "stopped");
        assert!(check.summary.contains("the champion is better"));
    }
}
