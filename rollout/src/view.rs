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
    /// One page of the rollout's devices (of those the request's filter admits), in the
    /// rollout's order: [`DevicePage`].
    pub devices: Vec<RolloutDevice>,
    /// How many devices the filter admits, over every page.
    #[serde(default)]
    pub devices_total: usize,
    /// Where the next page starts (`devices_from`); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices_next: Option<usize>,
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

/// Which of a rollout's devices a view carries: at most `limit` from position `from` of those
/// the filter admits. A rollout may hold a whole fleet; no answer carries all of it by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicePage {
    pub from: usize,
    pub limit: usize,
    /// Only devices with a detail (a failure's or a rollback's reason).
    pub problems_only: bool,
}

impl DevicePage {
    /// Devices a page holds unless asked otherwise.
    pub const DEFAULT_LIMIT: usize = 1_000;
    /// The most a page may hold.
    pub const MAX_LIMIT: usize = 10_000;
    /// No devices: the rollout's state and counts alone.
    pub const NONE: Self = Self {
        from: 0,
        limit: 0,
        problems_only: false,
    };
    /// Every device (in-process use only: a whole fleet's list is megabytes).
    pub const ALL: Self = Self {
        from: 0,
        limit: usize::MAX,
        problems_only: false,
    };
}

impl DevicePage {
    /// Where the page after this one starts, if any: it showed `shown` of `total` devices.
    pub fn next(&self, shown: usize, total: usize) -> Option<usize> {
        let end = self.from.saturating_add(shown);
        (self.limit > 0 && shown == self.limit && end < total).then_some(end)
    }
}

impl Default for DevicePage {
    fn default() -> Self {
        Self {
            from: 0,
            limit: Self::DEFAULT_LIMIT,
            problems_only: false,
        }
    }
}

impl From<&Rollout> for RolloutView {
    fn from(r: &Rollout) -> Self {
        Self::paged(r, DevicePage::ALL)
    }
}

impl RolloutView {
    /// The view of `r` carrying the devices `page` asks for.
    pub fn paged(r: &Rollout, page: DevicePage) -> Self {
        let admitted = |d: &&RolloutDevice| !page.problems_only || d.detail.is_some();
        let devices_total = r.devices.iter().filter(admitted).count();
        let devices: Vec<RolloutDevice> = r
            .devices
            .iter()
            .filter(admitted)
            .skip(page.from)
            .take(page.limit)
            .cloned()
            .collect();
        let devices_next = page.next(devices.len(), devices_total);
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
            devices,
            devices_total,
            devices_next,
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
