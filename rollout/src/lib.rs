//! Staged rollouts (design brief §5) as a plain state machine: no sockets, no clock — the caller
//! passes `now` and what each device reports, and gets back the desired-state changes to make.
//!
//! A rollout puts its devices into waves (cumulative percentages, e.g. 1, 10, 50, 100). It
//! notifies one wave at a time; a wave passes its gates when all its devices are settled, the
//! failed share is at most `max_failure_ratio` and the healthy share at least
//! `min_healthy_ratio`; then it bakes for `bake_seconds` (devices that roll back meanwhile still
//! count), then waits for approval if asked, then the next wave starts. A breach halts the
//! rollout at once — it does not wait for the rest of the wave — and, with `rollback_on_halt`,
//! sets every device it updated back to the version it had.

mod command;
mod notes;
mod plan;
mod record;
mod shadow;
mod stages;
#[cfg(test)]
mod tests;
mod view;

use edgefleet_protocol::message::UpdateState;
use serde::{Deserialize, Serialize};

use crate::notes::{change_notes, change_text};

pub use command::{Applied, Command, Refused};
pub use plan::{
    Candidate, DEFAULT_WAVES, Exponential, Origin, PlanError, RolloutRequest, assign_waves,
    exponential_waves, plan,
};
pub use record::ReleaseRecord;
pub use shadow::{
    Fallback, ShadowCheck, ShadowOptions, Strategy, describe, describe_split, shadow_evidence,
    shadow_evidence_from, shadow_reports,
};
pub use stages::{StageRefusal, StageRules};
pub use view::{DevicePage, HistoryEntry, RolloutList, RolloutView, StateView, WaveView};

/// Which devices a rollout covers: all conditions given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Selector {
    #[serde(default)]
    pub group: Option<String>,
    /// `key=value` pairs every device must carry.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Explicit device ids (empty: any device).
    #[serde(default)]
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Gates {
    /// Largest share of a wave that may fail (rejected, rolled back, timed out). Default 0.
    pub max_failure_ratio: f64,
    /// Smallest share of a wave that must be healthy (committed) to go on. Default 1.0 minus
    /// `max_failure_ratio`.
    pub min_healthy_ratio: Option<f64>,
    /// Seconds a passed wave is watched before the next starts. Default 0.
    pub bake_seconds: u64,
    /// A device that has not settled this many seconds after being notified counts as timed
    /// out (a failure). Default 600.
    pub device_timeout_seconds: u64,
    /// Wait for `approve` between waves. Default false.
    pub require_approval: bool,
    /// Gates on how the new version behaves in live traffic (from device telemetry): a wave
    /// advances only once they pass on figures gathered during its bake; a breach at any time
    /// halts the rollout like an install failure. Default none.
    pub model: Option<ModelGates>,
}

/// Model-aware gates, judged on the rollout's devices: the new version's figures against the
/// previous version's (devices not yet updated, and all of them before they were).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct ModelGates {
    /// Requests the new version (and, for the comparing gates, the previous one) must have
    /// served before any verdict. Default 100.
    pub min_requests: u64,
    /// Error rate at most this much above the previous version's, as a fraction (0.01: one
    /// percentage point).
    pub max_error_rate_increase: Option<f64>,
    /// p99 latency at most this many percent above the previous version's.
    pub max_p99_slowdown_percent: Option<f64>,
    /// Population stability index between the new and the previous version's predicted
    /// labels at most this (0.1 small, 0.25 large by the usual reading).
    pub max_output_shift_psi: Option<f64>,
    /// Input drift of the new version's traffic against its signed baseline: no feature's PSI
    /// above this.
    pub max_input_drift_psi: Option<f64>,
    /// Accuracy on labelled traffic (labels joined on the devices) at most this much below the
    /// previous version's, as a fraction (0.02: two points).
    pub max_accuracy_drop: Option<f64>,
    /// Labels each version must have before the accuracy gate judges. Default 100.
    pub min_labelled: u64,
}

impl Default for ModelGates {
    fn default() -> Self {
        Self {
            min_requests: 100,
            max_error_rate_increase: None,
            max_p99_slowdown_percent: None,
            max_output_shift_psi: None,
            max_input_drift_psi: None,
            max_accuracy_drop: None,
            min_labelled: 100,
        }
    }
}

impl ModelGates {
    /// Whether a gate compares the new version with the one it replaces.
    pub fn compares(&self) -> bool {
        self.max_error_rate_increase.is_some()
            || self.max_p99_slowdown_percent.is_some()
            || self.max_output_shift_psi.is_some()
            || self.max_accuracy_drop.is_some()
    }

    pub(crate) fn validate(&self) -> Result<(), PlanError> {
        let limits = [
            self.max_error_rate_increase,
            self.max_p99_slowdown_percent,
            self.max_output_shift_psi,
            self.max_input_drift_psi,
            self.max_accuracy_drop,
        ];
        if limits
            .iter()
            .flatten()
            .any(|l| !(l.is_finite() && *l >= 0.0))
        {
            return Err(PlanError::ModelGates);
        }
        if limits.iter().all(Option::is_none) {
            return Err(PlanError::NoModelGate);
        }
        if self.max_accuracy_drop.is_some_and(|d| d > 1.0) {
            return Err(PlanError::ModelGates);
        }
        Ok(())
    }
}

/// What the model gates say of the figures so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass(String),
    /// Not enough traffic to judge yet.
    Insufficient(String),
    Breach(String),
}

/// The last model-gate verdict of a rollout, for the wave it was taken in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ModelCheck {
    pub wave: usize,
    pub at: i64,
    pub passed: bool,
    pub summary: String,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            max_failure_ratio: 0.0,
            min_healthy_ratio: None,
            bake_seconds: 0,
            device_timeout_seconds: 600,
            require_approval: false,
            model: None,
        }
    }
}

impl Gates {
    pub fn min_healthy(&self) -> f64 {
        self.min_healthy_ratio
            .unwrap_or(1.0 - self.max_failure_ratio)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub model: String,
    pub version: String,
    /// TUF target name of the version.
    pub target: String,
    #[serde(default)]
    pub selector: Selector,
    /// Cumulative percentages of the devices, ascending, the last one 100.
    pub waves: Vec<f64>,
    #[serde(default)]
    pub gates: Gates,
    pub rollback_on_halt: bool,
    #[serde(default)]
    pub strategy: Strategy,
    /// The shadow phase (`strategy` `shadow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowOptions>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum DeviceState {
    Pending,
    Notified,
    Downloading,
    Installing,
    /// Runs the new version in its shadow slot, beside the one it serves (`shadow` strategy).
    Shadowing,
    Healthy,
    Failed,
    TimedOut,
    /// Set back to its previous version after a halt.
    RolledBack,
}

impl DeviceState {
    pub(crate) fn settled(self) -> bool {
        matches!(
            self,
            DeviceState::Healthy
                | DeviceState::Failed
                | DeviceState::TimedOut
                | DeviceState::RolledBack
        )
    }

    fn failed(self) -> bool {
        matches!(self, DeviceState::Failed | DeviceState::TimedOut)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RolloutDevice {
    pub id: String,
    pub wave: usize,
    pub state: DeviceState,
    /// The version it ran before (to roll back to).
    pub previous_version: Option<String>,
    pub notified_at: Option<i64>,
    /// The desired revision that carried this rollout to it.
    pub revision: Option<u64>,
    pub detail: Option<String>,
    /// Past its shadow phase: promoted on a pass, or fallen back to canary (`shadow` strategy).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promoted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RolloutState {
    Running { wave: usize },
    Baking { wave: usize, until: i64 },
    AwaitingApproval { wave: usize },
    Paused { wave: usize },
    Halted { wave: usize, reason: String },
    Completed,
    Aborted,
}

impl RolloutState {
    /// Whether the rollout may still change devices (and blocks another on the same model).
    pub fn is_active(&self) -> bool {
        !matches!(self, RolloutState::Completed | RolloutState::Aborted)
    }

    pub fn name(&self) -> &'static str {
        match self {
            RolloutState::Running { .. } => "running",
            RolloutState::Baking { .. } => "baking",
            RolloutState::AwaitingApproval { .. } => "awaiting_approval",
            RolloutState::Paused { .. } => "paused",
            RolloutState::Halted { .. } => "halted",
            RolloutState::Completed => "completed",
            RolloutState::Aborted => "aborted",
        }
    }

    pub(crate) fn wave(&self) -> Option<usize> {
        match self {
            RolloutState::Running { wave }
            | RolloutState::Baking { wave, .. }
            | RolloutState::AwaitingApproval { wave }
            | RolloutState::Paused { wave }
            | RolloutState::Halted { wave, .. } => Some(*wave),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub spec: RolloutSpec,
    pub state: RolloutState,
    pub devices: Vec<RolloutDevice>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// What happened, oldest first: `(unix time, text)`.
    pub history: Vec<(i64, String)>,
    /// Saves so far. The store takes a save only from a copy of the revision it holds, so two
    /// servers cannot overwrite each other's changes (optimistic concurrency).
    #[serde(default)]
    pub revision: u64,
    /// The model gates' last verdict (rollouts with `gates.model`).
    #[serde(default)]
    pub model_check: Option<ModelCheck>,
    /// The shadow or split gate's last verdict, `waiting` included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_check: Option<ShadowCheck>,
    /// Every wave's final champion–challenger decision (`promoted` or `stopped`), in order: the
    /// record the registry keeps with the release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<ShadowCheck>,
    /// Who approved which wave, when (`require_approval`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
}

/// An operator's approval of a wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Approval {
    /// The wave approved to start (0-based).
    pub wave: usize,
    pub by: String,
    pub at: i64,
}

/// The failure detail until the device's own reason is known.
pub const UNEXPLAINED: &str = "did not install the target";

/// Device counts of one wave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WaveProgress {
    pub devices: usize,
    pub healthy: usize,
    pub failed: usize,
    pub rolled_back: usize,
    pub in_progress: usize,
    pub shadowing: usize,
}

/// A desired-state change the caller must make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set the device's desired version of the model to the rollout's.
    Update { device: String },
    /// Keep the device's version of the model and run the rollout's beside it, in the shadow
    /// slot, with the rollout's share and CPU budget.
    Shadow { device: String },
    /// Set it back to `version` (or drop the model when it had none).
    Revert {
        device: String,
        version: Option<String>,
    },
}

/// What a device reports about the rollout's model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// The target it serves.
    pub active_target: Option<String>,
    /// Where its update of the model stands.
    pub state: Option<UpdateState>,
    pub last_error: Option<String>,
    /// The last desired revision it acted on.
    pub desired_revision: u64,
    /// The target in its shadow slot.
    pub shadow_target: Option<String>,
    /// The last challenger it refused for the shadow slot.
    pub shadow_refused: Option<edgefleet_protocol::shadow::ShadowRefusal>,
}

impl Rollout {
    pub fn wave_count(&self) -> usize {
        self.spec.waves.len()
    }

    /// Adds `text` to the rollout's history at `now`.
    pub fn note(&mut self, now: i64, text: String) {
        self.history.push((now, text));
        self.updated_at = now;
    }

    /// Per wave: how many devices are where.
    pub fn wave_progress(&self) -> Vec<WaveProgress> {
        (0..self.wave_count())
            .map(|w| {
                let mut p = WaveProgress::default();
                for d in self.devices.iter().filter(|d| d.wave == w) {
                    p.devices += 1;
                    match d.state {
                        DeviceState::Healthy => p.healthy += 1,
                        DeviceState::Failed | DeviceState::TimedOut => p.failed += 1,
                        DeviceState::RolledBack => p.rolled_back += 1,
                        DeviceState::Shadowing => {
                            p.in_progress += 1;
                            p.shadowing += 1;
                        }
                        DeviceState::Notified
                        | DeviceState::Downloading
                        | DeviceState::Installing => p.in_progress += 1,
                        DeviceState::Pending => {}
                    }
                }
                p
            })
            .collect()
    }

    /// Records that the caller set `device`'s desired state (revision `revision`).
    pub fn notified(&mut self, device: &str, revision: u64, now: i64) {
        if let Some(index) = self.devices.iter().position(|d| d.id == device) {
            self.notified_at(index, revision, now);
        }
    }

    /// [`Rollout::notified`] for the device at `index` of `devices`: a caller notifying a wave of
    /// 100,000 indexes them once rather than searching the list for each.
    pub fn notified_at(&mut self, index: usize, revision: u64, now: i64) {
        if let Some(d) = self.devices.get_mut(index) {
            d.state = DeviceState::Notified;
            d.notified_at = Some(now);
            d.revision = Some(revision);
            d.detail = None;
        }
    }

    /// Updates device states from what devices report, judges the current wave and returns the
    /// desired-state changes to make. `observe` answers for a device id.
    pub fn step(&mut self, now: i64, observe: impl Fn(&str) -> Option<Observed>) -> Vec<Action> {
        let target = self.spec.target.clone();
        let timeout = self.spec.gates.device_timeout_seconds as i64;
        let mut changes = Vec::new();
        let mut fallbacks = Vec::new();
        let shadowed = self.spec.strategy.uses_slot();
        let fallback = self
            .spec
            .shadow
            .as_ref()
            .map(|s| s.fallback)
            .unwrap_or_default();
        for d in &mut self.devices {
            let in_flight = matches!(
                d.state,
                DeviceState::Notified
                    | DeviceState::Downloading
                    | DeviceState::Installing
                    | DeviceState::Shadowing
                    | DeviceState::Healthy
            );
            if !in_flight {
                continue;
            }
            let seen = observe(&d.id).unwrap_or_default();
            let acted = d.revision.is_some_and(|r| seen.desired_revision >= r);
            if shadowed && !d.promoted {
                let next = match shadow::shadow_step(d, &seen, &target, acted) {
                    shadow::ShadowStep::Stay(next) => next,
                    shadow::ShadowStep::Cannot(why) if fallback == Fallback::Canary => {
                        d.promoted = true;
                        changes.push((
                            d.id.clone(),
                            format!("cannot run a shadow ({why}); falls back to canary"),
                        ));
                        fallbacks.push(Action::Update {
                            device: d.id.clone(),
                        });
                        continue;
                    }
                    shadow::ShadowStep::Cannot(why) => {
                        d.detail = Some(format!("cannot run a shadow: {why}"));
                        DeviceState::Failed
                    }
                };
                // Waiting for traffic is not a timeout; not getting the slot filled is.
                let next = if next == DeviceState::Notified
                    && d.notified_at.is_some_and(|t| now - t > timeout)
                {
                    d.detail = Some(format!("no shadow running {timeout} s after notification"));
                    DeviceState::TimedOut
                } else {
                    next
                };
                if next != d.state {
                    changes.push((d.id.clone(), change_text(next, d.detail.as_deref())));
                    d.state = next;
                }
                continue;
            }
            let runs_it = seen.active_target.as_deref() == Some(target.as_str());
            let next = match (runs_it, seen.state) {
                (true, Some(UpdateState::Committed)) => DeviceState::Healthy,
                (true, _) => DeviceState::Installing,
                (false, Some(UpdateState::Downloading)) => DeviceState::Downloading,
                (
                    false,
                    Some(
                        UpdateState::Staged | UpdateState::HealthChecking | UpdateState::Probation,
                    ),
                ) => DeviceState::Installing,
                // Acted on our revision and runs something else: it rejected the target (below
                // its floor, unsigned, unhealthy) or rolled it back.
                (false, _) if acted => DeviceState::Failed,
                (false, _) => d.state,
            };
            let next = if !next.settled() && d.notified_at.is_some_and(|t| now - t > timeout) {
                DeviceState::TimedOut
            } else {
                next
            };
            if next != d.state {
                if next.failed() {
                    d.detail = Some(match next {
                        DeviceState::TimedOut => {
                            format!("not settled {timeout} s after notification")
                        }
                        _ => seen
                            .last_error
                            .clone()
                            .unwrap_or_else(|| UNEXPLAINED.into()),
                    });
                }
                changes.push((d.id.clone(), change_text(next, d.detail.as_deref())));
                d.state = next;
            }
        }
        for note in change_notes(changes) {
            self.note(now, note);
        }
        fallbacks.extend(self.advance(now));
        fallbacks
    }

    fn advance(&mut self, now: i64) -> Vec<Action> {
        let Some(wave) = self.state.wave() else {
            return Vec::new();
        };
        let WaveProgress {
            devices: n,
            healthy: ok,
            failed: bad,
            ..
        } = self.wave_progress()[wave];
        let gates = self.spec.gates.clone();
        let allowed_failures = (gates.max_failure_ratio * n as f64 + 1e-9).floor() as usize;
        match self.state.clone() {
            RolloutState::Running { wave } | RolloutState::Baking { wave, .. }
                if bad > allowed_failures =>
            {
                let reason = format!(
                    "wave {} breached its gate: {bad} of {n} devices failed (at most {allowed_failures} allowed)",
                    wave + 1
                );
                self.halt(now, wave, reason)
            }
            RolloutState::Running { wave } => {
                let actions: Vec<Action> = self
                    .devices
                    .iter()
                    .filter(|d| d.wave == wave && d.state == DeviceState::Pending)
                    .map(|d| self.first_action(d))
                    .collect();
                let settled = self
                    .devices
                    .iter()
                    .filter(|d| d.wave == wave)
                    .all(|d| d.state.settled());
                if settled && actions.is_empty() {
                    let healthy = ok as f64 / n as f64;
                    if healthy + 1e-9 < gates.min_healthy() {
                        let reason = format!(
                            "wave {} breached its gate: {ok} of {n} devices healthy, below {:.0}%",
                            wave + 1,
                            gates.min_healthy() * 100.0
                        );
                        return self.halt(now, wave, reason);
                    }
                    self.state = RolloutState::Baking {
                        wave,
                        until: now + gates.bake_seconds as i64,
                    };
                    self.note(
                        now,
                        format!(
                            "wave {} passed ({ok}/{n} healthy); baking {} s",
                            wave + 1,
                            gates.bake_seconds
                        ),
                    );
                    return self.advance(now);
                }
                actions
            }
            RolloutState::Baking { wave, until } if now >= until => {
                let baked_since = until - gates.bake_seconds as i64;
                if gates.model.is_some()
                    && !self
                        .model_check
                        .as_ref()
                        .is_some_and(|c| c.wave == wave && c.passed && c.at >= baked_since)
                {
                    let waiting = format!(
                        "wave {} baked; waiting for the model gates to pass on its figures",
                        wave + 1
                    );
                    if !self.history.iter().any(|(_, text)| *text == waiting) {
                        self.note(now, waiting);
                    }
                    return Vec::new();
                }
                if wave + 1 >= self.wave_count() {
                    self.state = RolloutState::Completed;
                    self.note(now, "completed".into());
                } else if gates.require_approval {
                    self.state = RolloutState::AwaitingApproval { wave };
                    self.note(
                        now,
                        format!(
                            "wave {} done; awaiting approval for wave {}",
                            wave + 1,
                            wave + 2
                        ),
                    );
                } else {
                    self.state = RolloutState::Running { wave: wave + 1 };
                    self.note(now, format!("wave {} started", wave + 2));
                    return self.advance(now);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn halt(&mut self, now: i64, wave: usize, reason: String) -> Vec<Action> {
        self.state = RolloutState::Halted {
            wave,
            reason: reason.clone(),
        };
        self.note(now, format!("halted: {reason}"));
        if !self.spec.rollback_on_halt {
            return Vec::new();
        }
        let mut actions = Vec::new();
        for d in &mut self.devices {
            if d.notified_at.is_some() && d.state != DeviceState::RolledBack {
                actions.push(Action::Revert {
                    device: d.id.clone(),
                    version: d.previous_version.clone(),
                });
                d.state = DeviceState::RolledBack;
            }
        }
        self.note(
            now,
            format!(
                "rolled back {} devices to their previous version",
                actions.len()
            ),
        );
        actions
    }

    /// Devices told of the rollout at or before `notified_by` (Unix seconds) that have not
    /// answered yet: still notified, downloading or installing. Their answer may be lost on the
    /// way — a broker whose queue for the server is full drops messages it has already
    /// acknowledged to the device — so the server asks the broker for their retained reported
    /// state again.
    pub fn unanswered(&self, notified_by: i64) -> impl Iterator<Item = &str> {
        self.devices
            .iter()
            .filter(move |d| {
                matches!(
                    d.state,
                    DeviceState::Notified | DeviceState::Downloading | DeviceState::Installing
                ) && d.notified_at.is_some_and(|at| at <= notified_by)
            })
            .map(|d| d.id.as_str())
    }

    /// Whether the engine should judge the model gates now: the rollout has them, is moving,
    /// and was not judged in the last `every` seconds.
    pub fn wants_model_check(&self, now: i64, every: i64) -> bool {
        self.spec.gates.model.is_some()
            && matches!(
                self.state,
                RolloutState::Running { .. } | RolloutState::Baking { .. }
            )
            && self
                .model_check
                .as_ref()
                .is_none_or(|c| now - c.at >= every)
    }

    /// Takes the model gates' verdict on the figures so far: a breach halts the rollout (and
    /// rolls back, if asked) like an install failure; otherwise the verdict is kept for the
    /// wave, whose bake may end only on a pass taken during it.
    pub fn model_checked(&mut self, now: i64, verdict: Verdict) -> Vec<Action> {
        let wave = match self.state {
            RolloutState::Running { wave } | RolloutState::Baking { wave, .. } => wave,
            _ => return Vec::new(),
        };
        let (passed, summary) = match verdict {
            Verdict::Breach(why) => {
                self.model_check = Some(ModelCheck {
                    wave,
                    at: now,
                    passed: false,
                    summary: why.clone(),
                });
                return self.halt(
                    now,
                    wave,
                    format!("wave {} breached its model gate: {why}", wave + 1),
                );
            }
            Verdict::Pass(summary) => (true, summary),
            Verdict::Insufficient(summary) => (false, summary),
        };
        self.model_check = Some(ModelCheck {
            wave,
            at: now,
            passed,
            summary,
        });
        self.advance(now)
    }
}

/// Pending devices of waves before the current one (after a retry) are started as well.
pub fn retry_actions(rollout: &Rollout) -> Vec<Action> {
    let Some(wave) = rollout.state.wave() else {
        return Vec::new();
    };
    rollout
        .devices
        .iter()
        .filter(|d| d.wave < wave && d.state == DeviceState::Pending)
        .map(|d| rollout.first_action(d))
        .collect()
}
