//! One pass of the rollout engine over the active rollouts, written against the store and an
//! [`Assigner`] only, with the time passed in: the server runs it with the real signer and
//! broker twice a second, and the tests run it against a real SQLite store and simulated
//! devices, stepping time by hand.

use std::collections::HashMap;

use async_trait::async_trait;
use edgefleet_protocol::DeviceId;
use edgefleet_protocol::message::{EventKind, Reported};

use crate::baselines::Baselines;
use crate::desired::{DesiredError, WantedShadow};
use crate::engine_memory::PassMemory;
use crate::rollout::{Observed, Rollout, RolloutState, StageRules};
use crate::store::{DeviceStore, RegistryStore, RolloutStore, StateStore};

/// How often a rollout's model gates are judged (each reads the rollout's telemetry).
const MODEL_CHECK_SECONDS: i64 = 5;
/// Figures of the previous version from before the rollout started count as its reference.
pub const BASELINE_LOOKBACK_SECONDS: i64 = 3600;

/// What makes a desired-state change real. The server's signs it and publishes it to the
/// device; a test's records it.
#[async_trait]
pub trait Assigner: Send + Sync {
    /// Sets one model of a device's desired state (`version` `None` removes it), keeping its
    /// other models; returns the new desired revision.
    async fn set_model_version(
        &self,
        device: &DeviceId,
        model: &str,
        version: Option<&str>,
        rollout: Option<&str>,
        shadow: Option<&WantedShadow>,
    ) -> Result<u64, DesiredError>;
}

/// Where a rollout's input-drift gate finds the signed baselines: the server's registry, or what
/// a test sets.
#[async_trait]
pub trait BaselineSource: Send + Sync {
    async fn baselines(&self) -> Baselines;
}

/// What a pass reads and writes: the rollouts, the devices and what they report, and the
/// registry's stages (a completed rollout promotes). Nothing of tokens or TUF.
pub trait PassStore: RolloutStore + DeviceStore + StateStore + RegistryStore {}

impl<T: RolloutStore + DeviceStore + StateStore + RegistryStore + ?Sized> PassStore for T {}

/// Steps every active rollout at `now` (Unix seconds), makes the desired-state changes they ask
/// for and saves what changed. A rollout that completes changes stages as `rules` say.
pub async fn run_pass(
    store: &(impl PassStore + ?Sized),
    memory: &mut PassMemory,
    assigner: &dyn Assigner,
    baselines: &dyn BaselineSource,
    rules: &StageRules,
    now: i64,
) {
    let rollouts = match store.active_rollouts().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot read rollouts");
            return;
        }
    };
    let PassMemory {
        evidence, fleet, ..
    } = memory;
    evidence.keep_only(rollouts.iter().map(|r| r.id.as_str()));
    if rollouts.is_empty() {
        return;
    }
    let by_id = match fleet.refresh(store, now).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot read devices");
            return;
        }
    };
    for mut rollout in rollouts {
        let model = rollout.spec.model.clone();
        let before = rollout.clone();
        let mut actions = rollout.step(now, |id| by_id.get(id).map(|r| observe(r, &model)));
        let shadow_check = rollout.wants_shadow_check(now, MODEL_CHECK_SECONDS);
        let model_check = rollout.wants_model_check(now, MODEL_CHECK_SECONDS);
        // One read of what arrived since the last check serves both gates.
        if shadow_check || model_check {
            match evidence
                .refresh(store, &rollout, BASELINE_LOOKBACK_SECONDS, now)
                .await
            {
                Ok(gathered) => {
                    if shadow_check {
                        let counts = gathered.shadow(&rollout);
                        actions.extend(rollout.shadow_checked(now, counts));
                    }
                    // A shadow breach may have halted it: the model gates judge only a moving
                    // rollout.
                    if model_check && rollout.wants_model_check(now, MODEL_CHECK_SECONDS) {
                        let baselines = baselines.baselines().await;
                        let (candidate, previous) = gathered.versions(&rollout, &baselines);
                        let gates = rollout.spec.gates.model.clone().unwrap_or_default();
                        let verdict = crate::telemetry::judge(&gates, &candidate, &previous);
                        actions.extend(rollout.model_checked(now, verdict));
                    }
                }
                Err(e) => {
                    tracing::warn!(rollout = %rollout.id, error = %e, "cannot read telemetry for the rollout's gates")
                }
            }
        }
        explain_failures(store, &mut rollout).await;
        actions.extend(crate::rollout::retry_actions(&rollout));
        super::changes::make(assigner, &mut rollout, actions, now).await;
        if rollout.state == RolloutState::Completed && before.state != RolloutState::Completed {
            settle_stages(store, &mut rollout, rules, by_id, now).await;
        }
        if rollout != before {
            if let Err(e) = store.save_rollout(&mut rollout).await {
                // A stale revision: an operator's command on another server came first; the
                // next pass starts from it.
                tracing::warn!(rollout = %rollout.id, error = %e, "cannot save a rollout");
            }
            if rollout.state != before.state {
                tracing::info!(rollout = %rollout.id, state = rollout.state.name(), "rollout state");
            }
        }
    }
}

/// The registry's stage changes a completed rollout asks for: its version promoted, the
/// versions it replaced archived once no device runs them. Each is noted in the history.
async fn settle_stages(
    store: &(impl RegistryStore + ?Sized),
    rollout: &mut Rollout,
    rules: &StageRules,
    devices: &HashMap<String, Reported>,
    now: i64,
) {
    let model = rollout.spec.model.clone();
    let releases = match store.releases().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(rollout = %rollout.id, error = %e, "cannot read the registry; stages left as they are");
            return;
        }
    };
    let stage_of = |version: &str| {
        releases
            .iter()
            .find(|r| r.model == model && r.version == version)
            .map(|r| r.stage)
    };
    let still_runs = |version: &str| {
        devices.values().any(|r| {
            r.models.iter().any(|m| {
                m.model.as_str() == model
                    && m.active
                        .as_ref()
                        .is_some_and(|a| a.version.to_string() == version)
            })
        })
    };
    for (version, stage) in rules.on_completion(rollout, stage_of, still_runs) {
        match store.set_stage(&model, &version, stage).await {
            Ok(()) => {
                tracing::info!(rollout = %rollout.id, %model, %version, stage = stage.as_str(), "stage changed by a completed rollout");
                rollout.note(now, format!("{model} {version} is now {}", stage.as_str()));
            }
            Err(e) => {
                tracing::warn!(rollout = %rollout.id, %model, %version, error = %e, "cannot change the stage")
            }
        }
    }
}

/// A device that refused the target before installing it (unsigned, below its floor, too
/// large) has no install error in its reported state; its rejected event says why.
async fn explain_failures(store: &(impl StateStore + ?Sized), rollout: &mut Rollout) {
    for d in &mut rollout.devices {
        if d.detail.as_deref() != Some(crate::rollout::UNEXPLAINED) {
            continue;
        }
        let Ok(id) = DeviceId::new(d.id.clone()) else {
            continue;
        };
        let Ok(events) = store.events(Some(&id), 50).await else {
            continue;
        };
        let why = events.iter().find_map(|e| {
            let m = &e.message;
            (m.kind == EventKind::Rejected
                && m.target.as_deref() == Some(rollout.spec.target.as_str()))
            .then(|| m.detail.clone())
            .flatten()
        });
        if let Some(why) = why {
            d.detail = Some(why);
        }
    }
}

/// What a device's reported state says about `model`.
fn observe(reported: &Reported, model: &str) -> Observed {
    let entry = reported.models.iter().find(|m| m.model.as_str() == model);
    Observed {
        active_target: entry
            .and_then(|m| m.active.as_ref())
            .map(|a| a.target.clone()),
        state: entry.map(|m| m.state),
        last_error: entry.and_then(|m| m.last_error.clone()),
        desired_revision: reported.desired_revision,
        shadow_target: entry
            .and_then(|m| m.shadow.as_ref())
            .map(|s| s.target.clone()),
        shadow_refused: entry.and_then(|m| m.shadow_refused.clone()),
    }
}
