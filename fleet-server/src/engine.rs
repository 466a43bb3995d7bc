//! Drives the active rollouts: twice a second, reads what each rollout's devices report, steps
//! the state machine (`crate::rollout`) and makes the desired-state changes it asks for. All
//! state is in the store, so a restarted server picks up where it stopped.

use std::collections::HashMap;
use std::time::Duration;

use edgefleet_protocol::DeviceId;

use edgefleet_protocol::message::EventKind;

use crate::desired::{self, Catalog};
use crate::rollout::{Action, Observed, Rollout};
use crate::state::AppState;

/// One pass over every active rollout; the API calls it too, right after a command, so the
/// operator sees the effect without waiting for the next tick.
pub async fn tick(state: &AppState) {
    // One pass at a time: a command and the timer must not step the same rollout twice.
    let _guard = state.engine_lock.lock().await;
    if !holds_engine_lease(state).await {
        return;
    }
    let rollouts = match state.store.rollouts(true).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot read rollouts");
            return;
        }
    };
    if rollouts.is_empty() {
        return;
    }
    let devices = match state.store.devices(&Default::default()).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot read devices");
            return;
        }
    };
    let by_id: HashMap<String, crate::store::Device> =
        devices.into_iter().map(|d| (d.id.to_string(), d)).collect();
    let mut catalog: Option<Catalog> = None;
    for mut rollout in rollouts {
        let model = rollout.spec.model.clone();
        let now = jiff::Timestamp::now().as_second();
        let before = rollout.clone();
        let mut actions = rollout.step(now, |id| by_id.get(id).map(|d| observe(d, &model)));
        if rollout.wants_model_check(now, MODEL_CHECK_SECONDS) {
            match rollout_batches(state, &rollout).await {
                Ok(batches) => {
                    let (candidate, previous) =
                        crate::telemetry::rollout_evidence(&rollout, &batches);
                    let gates = rollout.spec.gates.model.clone().unwrap_or_default();
                    let verdict = crate::telemetry::judge(&gates, &candidate, &previous);
                    actions.extend(rollout.model_checked(now, verdict));
                }
                Err(e) => {
                    tracing::warn!(rollout = %rollout.id, error = %e, "cannot read telemetry for the model gates")
                }
            }
        }
        explain_failures(state, &mut rollout).await;
        actions.extend(
            crate::rollout::retry_targets(&rollout)
                .into_iter()
                .map(|device| Action::Update { device }),
        );
        if !actions.is_empty() {
            // The signed targets, read once for every change this pass makes.
            let catalog = match &mut catalog {
                Some(c) => &*c,
                none => match Catalog::load(&state.tuf).await {
                    Ok(c) => &*none.insert(c),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the signed targets; desired states wait for the next pass");
                        continue;
                    }
                },
            };
            for action in actions {
                apply(state, catalog, &mut rollout, action, now).await;
            }
        }
        if rollout != before {
            if let Err(e) = state.store.save_rollout(&mut rollout).await {
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

/// How often a rollout's model gates are judged (each reads the rollout's telemetry).
const MODEL_CHECK_SECONDS: i64 = 5;
/// Figures of the previous version from before the rollout started count as its reference.
const BASELINE_LOOKBACK_SECONDS: i64 = 3600;

/// The telemetry a rollout's model gates judge: every batch since shortly before it started
/// (the previous version's figures from before count as its reference).
pub async fn rollout_batches(
    state: &AppState,
    rollout: &Rollout,
) -> Result<Vec<edgefleet_protocol::message::MetricsBatch>, crate::store::StoreError> {
    let stored = state
        .store
        .metrics(None, rollout.created_at - BASELINE_LOOKBACK_SECONDS)
        .await?;
    Ok(crate::telemetry::batches(stored))
}

/// The rollouts are driven by one server at a time: whoever holds this lease, renewed every pass
/// (500 ms). A server that dies hands over within [`ENGINE_LEASE_MS`].
const ENGINE_LEASE: &str = "rollout-engine";
pub const ENGINE_LEASE_MS: i64 = 5_000;

async fn holds_engine_lease(state: &AppState) -> bool {
    if state.shutdown.is_cancelled() {
        return false;
    }
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let held = match state
        .store
        .lease(ENGINE_LEASE, &state.instance, now_ms, ENGINE_LEASE_MS)
        .await
    {
        Ok(held) => held,
        Err(e) => {
            tracing::error!(error = %e, "cannot renew the rollout-engine lease");
            false
        }
    };
    let was = state
        .driving_rollouts
        .swap(held, std::sync::atomic::Ordering::Relaxed);
    if held != was {
        state.metrics.rollout_engine_leader.set(i64::from(held));
        if held {
            tracing::info!(instance = %state.instance, "this server now drives the rollouts");
        } else {
            tracing::info!(instance = %state.instance, "another server drives the rollouts");
        }
    }
    held
}

/// At shutdown: stop driving and give the lease up, so another server takes over at once
/// (and this one, restarted, need not wait out its old lease).
pub async fn hand_over(state: &AppState) {
    state.shutdown.cancel();
    let _pass_done = state.engine_lock.lock().await;
    if let Err(e) = state
        .store
        .release_lease(ENGINE_LEASE, &state.instance)
        .await
    {
        tracing::warn!(error = %e, "cannot give up the rollout-engine lease; it expires by itself");
    }
}

/// A device that refused the target before installing it (unsigned, below its floor, too
/// large) has no install error in its reported state; its rejected event says why.
async fn explain_failures(state: &AppState, rollout: &mut Rollout) {
    for d in &mut rollout.devices {
        if d.detail.as_deref() != Some(crate::rollout::UNEXPLAINED) {
            continue;
        }
        let Ok(id) = DeviceId::new(d.id.clone()) else {
            continue;
        };
        let Ok(events) = state.store.events(Some(&id), 50).await else {
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
fn observe(device: &crate::store::Device, model: &str) -> Observed {
    let Some(reported) = &device.reported else {
        return Observed::default();
    };
    let entry = reported.models.iter().find(|m| m.model.as_str() == model);
    Observed {
        active_target: entry
            .and_then(|m| m.active.as_ref())
            .map(|a| a.target.clone()),
        state: entry.map(|m| m.state),
        last_error: entry.and_then(|m| m.last_error.clone()),
        desired_revision: reported.desired_revision,
    }
}

async fn apply(
    state: &AppState,
    catalog: &Catalog,
    rollout: &mut Rollout,
    action: Action,
    now: i64,
) {
    let model = rollout.spec.model.clone();
    let (device, version, tag) = match &action {
        Action::Update { device } => (
            device.clone(),
            Some(rollout.spec.version.clone()),
            Some(rollout.id.clone()),
        ),
        Action::Revert { device, version } => (device.clone(), version.clone(), None),
    };
    let Ok(id) = DeviceId::new(device.clone()) else {
        return;
    };
    let set = desired::set_model_version(
        state,
        catalog,
        &id,
        &model,
        version.as_deref(),
        tag.as_deref(),
    )
    .await;
    match set {
        Ok(revision) => {
            if matches!(action, Action::Update { .. }) {
                rollout.notified(&device, revision, now);
            }
        }
        Err(e) => {
            tracing::warn!(rollout = %rollout.id, device, error = %e, "could not set desired state");
            rollout
                .history
                .push((now, format!("device {device}: desired state not set: {e}")));
        }
    }
}

/// Ticks until the server shuts down.
pub async fn run(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = interval.tick() => tick(&state).await,
        }
    }
}
