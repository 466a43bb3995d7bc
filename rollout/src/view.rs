//! A rollout as the API, the dashboard and `fleetctl` show it: the same record, with waves
//! counted from 1 (as people count them) and each wave's progress worked out. The server
//! encodes and `fleetctl` decodes these very types.

use serde::{Deserialize, Serialize};

use crate::{
    Gates, ModelCheck, Rollout, RolloutDevice, RolloutState, Selector, ShadowCheck, ShadowOptions,
    Strategy,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RolloutView {
    pub id: String,
    pub model: String,
    pub version: String,
    /// TUF target name of the version.
    pub target: String,
    pub selector: Selector,
    pub gates: Gates,
    pub rollback_on_halt: bool,
    pub state: StateView,
    pub waves: Vec<WaveView>,
    pub devices: Vec<RolloutDevice>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The model gates' last verdict (its `wave` counts from 0).
    pub model_check: Option<ModelCheck>,
    #[serde(default)]
    pub strategy: Strategy,
    /// The shadow phase's options (`shadow` strategy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowOptions>,
    /// The shadow gate's last verdict, with the figures it judged (its `wave` counts from 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_check: Option<ShadowCheck>,
    /// Each wave's final shadow or split decision, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<ShadowCheck>,
    /// What happened, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// Where a rollout stands; `wave` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct StateView {
    /// running, baking, awaiting_approval, paused, halted, completed or aborted.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
    /// When a bake ends (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// Why it halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One wave's device counts; `wave` counts from 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct WaveView {
    pub wave: usize,
    /// Cumulative share of the rollout's devices this wave reaches.
    pub percent: f64,
    pub devices: usize,
    pub healthy: usize,
    pub failed: usize,
    pub rolled_back: usize,
    pub in_progress: usize,
    /// Of `in_progress`, those running the version in their shadow slot.
    #[serde(default)]
    pub shadowing: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    pub at: i64,
    pub text: String,
}

/// `GET /api/v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RolloutList {
    pub rollouts: Vec<RolloutView>,
}

impl From<&RolloutState> for StateView {
    fn from(state: &RolloutState) -> Self {
        let (until, reason) = match state {
            RolloutState::Baking { until, .. } => (Some(*until), None),
            RolloutState::Halted { reason, .. } => (None, Some(reason.clone())),
            _ => (None, None),
        };
        Self {
            state: state.name().to_owned(),
            wave: state.wave().map(|w| w + 1),
            until,
            reason,
        }
    }
}

impl StateView {
    /// Whether the rollout may still change devices.
    pub fn is_active(&self) -> bool {
        !matches!(self.state.as_str(), "completed" | "aborted")
    }
}

impl From<&Rollout> for RolloutView {
    fn from(r: &Rollout) -> Self {
        let waves = r
            .wave_progress()
            .into_iter()
            .zip(&r.spec.waves)
            .enumerate()
            .map(|(i, (p, percent))| WaveView {
                wave: i + 1,
                percent: *percent,
                devices: p.devices,
                healthy: p.healthy,
                failed: p.failed,
                rolled_back: p.rolled_back,
                in_progress: p.in_progress,
                shadowing: p.shadowing,
            })
            .collect();
        Self {
            id: r.id.clone(),
            model: r.spec.model.clone(),
            version: r.spec.version.clone(),
            target: r.spec.target.clone(),
            selector: r.spec.selector.clone(),
            gates: r.spec.gates.clone(),
            rollback_on_halt: r.spec.rollback_on_halt,
            state: StateView::from(&r.state),
            waves,
            devices: r.devices.clone(),
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            model_check: r.model_check.clone(),
            strategy: r.spec.strategy,
            shadow: r.spec.shadow.clone(),
            shadow_check: r.shadow_check.clone(),
            verdicts: r.verdicts.clone(),
            history: r
                .history
                .iter()
                .map(|(at, text)| HistoryEntry {
                    at: *at,
                    text: text.clone(),
                })
                .collect(),
        }
    }
}
