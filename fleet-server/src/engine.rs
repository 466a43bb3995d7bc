//! Drives the active rollouts: twice a second, reads what each rollout's devices report, steps
//! the state machine (`crate::rollout`) and makes the desired-state changes it asks for. All
//! state is in the store, so a restarted server picks up where it stopped.

use std::collections::HashMap;
use std::time::Duration;

use edgefleet_protocol::DeviceId;

use crate::api::{ApiError, AppState, handlers};
use crate::rollout::{Action, Observed, Rollout};

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
        for action in actions {
            apply(state, &mut rollout, action, now).await;
        }
        explain_failures(state, &mut rollout).await;
        for device in crate::rollout::retry_targets(&rollout) {
            apply(state, &mut rollout, Action::Update { device }, now).await;
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
    Ok(crate::telemetry::decode(&stored))
}

/// The rollouts are driven by one server at a time: whoever holds this lease, renewed every pass
/// (500 ms). A server that dies hands over within [`ENGINE_LEASE_MS`].
const ENGINE_LEASE: &str = "rollout-engine";
pub const ENGINE_LEASE_MS: i64 = 5_000;

async fn holds_engine_lease(state: &AppState) -> bool {
    if state.stopping.load(std::sync::atomic::Ordering::Relaxed) {
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
    state
        .stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
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
            (m["kind"] == "rejected" && m["target"] == rollout.spec.target.as_str())
                .then(|| m["detail"].as_str().map(str::to_owned))
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
    let entry = reported["models"]
        .as_array()
        .and_then(|models| models.iter().find(|m| m["model"] == model));
    Observed {
        active_target: entry
            .and_then(|m| m["active"]["target"].as_str())
            .map(str::to_owned),
        state: entry.and_then(|m| m["state"].as_str()).map(str::to_owned),
        last_error: entry
            .and_then(|m| m["last_error"].as_str())
            .map(str::to_owned),
        desired_revision: reported["desired_revision"].as_u64().unwrap_or(0),
    }
}

async fn apply(state: &AppState, rollout: &mut Rollout, action: Action, now: i64) {
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
    match set_model_version(state, &id, &model, version.as_deref(), tag.as_deref()).await {
        Ok(revision) => {
            if matches!(action, Action::Update { .. }) {
                rollout.notified(&device, revision, now);
            }
        }
        Err(e) => {
            tracing::warn!(rollout = %rollout.id, device, error = %e.error, "could not set desired state");
            rollout.history.push((
                now,
                format!("device {device}: desired state not set: {}", e.error),
            ));
        }
    }
}

/// Sets one model of a device's desired state, keeping its other models. `version` `None`
/// removes the model. Returns the new desired revision.
pub async fn set_model_version(
    state: &AppState,
    device: &DeviceId,
    model: &str,
    version: Option<&str>,
    rollout: Option<&str>,
) -> Result<u64, ApiError> {
    let current = state
        .store
        .device(device)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {device} not found")))?;
    let mut wanted = Vec::new();
    let mut rollouts = HashMap::new();
    let models = current
        .desired
        .as_ref()
        .and_then(|d| d["models"].as_array().cloned())
        .unwrap_or_default();
    for m in &models {
        let Some(target) = m["target"].as_str() else {
            continue;
        };
        let Ok((name, v)) = edgefleet_protocol::target::parse_target_name(target) else {
            continue;
        };
        if name.as_str() == model {
            continue;
        }
        if let Some(tag) = m["rollout"].as_str() {
            rollouts.insert(name.to_string(), tag.to_owned());
        }
        wanted.push((name.to_string(), v.to_string()));
    }
    if let Some(version) = version {
        wanted.push((model.to_owned(), version.to_owned()));
        if let Some(tag) = rollout {
            rollouts.insert(model.to_owned(), tag.to_owned());
        }
    }
    let desired = handlers::assign_tagged(state, device, &wanted, &rollouts).await?;
    Ok(desired.revision)
}

/// Ticks forever.
pub async fn run(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        tick(&state).await;
    }
}
