//! Drives the active rollouts: twice a second, reads what each rollout's devices report, steps
//! the state machine (`crate::rollout`) and makes the desired-state changes it asks for. All
//! state is in the store, so a restarted server picks up where it stopped.
//!
//! [`pass`] is the engine itself, over the store and an [`pass::Assigner`] with the time passed
//! in; this module adds what a running server needs: the lease that makes one server of many
//! drive, the signer and broker behind the assigner, and the timer.

mod changes;
mod guard_actions;
mod pass;
#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;
use edgefleet_protocol::DeviceId;

use crate::desired::{self, Catalog, DesiredError, WantedShadow};
use crate::state::AppState;
use crate::store::Store;

pub use crate::engine_memory::PassMemory;
pub use pass::{Assigner, BASELINE_LOOKBACK_SECONDS, BaselineSource, run_pass};

/// One pass over every active rollout; the API calls it too, right after a command, so the
/// operator sees the effect without waiting for the next tick.
pub async fn tick(state: &AppState) {
    // One pass at a time: a command and the timer must not step the same rollout twice.
    let mut memory = state.engine_lock.lock().await;
    if !holds_engine_lease(state).await {
        return;
    }
    let assigner = SigningAssigner {
        state,
        catalog: tokio::sync::OnceCell::new(),
    };
    run_pass(
        &*state.store,
        &mut memory,
        &assigner,
        &RegistryBaselines(state),
        &state.config.registry,
        state.clock.unix(),
    )
    .await;
    reread_unanswered(state, &mut memory).await;
    guard_actions(state, &assigner).await;
}

/// Most devices asked of the broker again at once; the rest wait for the next round.
const MAX_REREAD: usize = 5_000;

/// On an external broker, every `mqtt.reread_reported_seconds`, asks the broker again for the
/// retained reported state of the devices that have not answered their rollout that long after
/// being told ([`Rollout::unanswered`](crate::rollout::Rollout::unanswered)). A report the broker dropped
/// after acknowledging it to the device is then still stored, and the rollout moves on instead
/// of waiting for the device to time out (100,000 devices on PostgreSQL stalled that way,
/// docs/BENCHMARKS.md).
async fn reread_unanswered(state: &AppState, memory: &mut PassMemory) {
    let now = state.clock.unix();
    // Disconnected, the requests would only pile up in the client's queue.
    if now < memory.next_reread || !state.mqtt.rereads_reported() || !state.mqtt.is_connected() {
        return;
    }
    let every = i64::try_from(state.config.mqtt.reread_reported_seconds).unwrap_or(i64::MAX);
    memory.next_reread = now.saturating_add(every);
    let rollouts = match state.store.active_rollouts().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the rollouts to find devices that have not answered");
            return;
        }
    };
    let notified_by = now.saturating_sub(every);
    let mut unanswered: Vec<DeviceId> = rollouts
        .iter()
        .flat_map(|r| r.unanswered(notified_by))
        .filter_map(|id| DeviceId::new(id).ok())
        .collect();
    unanswered.sort_unstable();
    unanswered.dedup();
    let waiting = unanswered.len();
    unanswered.truncate(MAX_REREAD);
    if unanswered.is_empty() {
        return;
    }
    let asked = state.mqtt.reread_reported(&unanswered);
    state.metrics.reported_reread.inc_by(asked as u64);
    tracing::info!(
        asked,
        waiting,
        "asked the broker again for the reported state of devices that have not answered their rollout"
    );
}

/// The registry's signed baselines, read when a gate needs them.
struct RegistryBaselines<'a>(&'a AppState);

#[async_trait]
impl BaselineSource for RegistryBaselines<'_> {
    async fn baselines(&self) -> crate::baselines::Baselines {
        self.0.baselines().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the signed releases: input drift is not judged this pass");
            Default::default()
        })
    }
}

/// Takes the fleet actions guard alerts wait for, as each release's signed policy says.
async fn guard_actions(state: &AppState, assigner: &SigningAssigner<'_>) {
    match state.store.alerts_action_due(1).await {
        Ok(due) if !due.is_empty() => {}
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the alerts with fleet actions due");
            return;
        }
    }
    let models = match state.tuf.models().await {
        Ok(models) => models,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the signed releases for their guard policies");
            return;
        }
    };
    let releases: Vec<_> = models.into_iter().map(|m| m.meta).collect();
    guard_actions::take_due(&*state.store, assigner, &releases, state.clock.unix()).await;
}

/// The server's assigner: signs each desired state and publishes it to the device, reading the
/// signed targets once per pass.
struct SigningAssigner<'a> {
    state: &'a AppState,
    catalog: tokio::sync::OnceCell<Catalog>,
}

#[async_trait]
impl Assigner for SigningAssigner<'_> {
    async fn set_model_version(
        &self,
        device: &DeviceId,
        model: &str,
        version: Option<&str>,
        rollout: Option<&str>,
        shadow: Option<&WantedShadow>,
    ) -> Result<u64, DesiredError> {
        let catalog = self
            .catalog
            .get_or_try_init(|| Catalog::load(&self.state.tuf))
            .await?;
        desired::set_model_version(self.state, catalog, device, model, version, rollout, shadow)
            .await
    }
}

/// The rollouts are driven by one server at a time: whoever holds this lease, renewed every pass
/// (500 ms). A server that dies hands over within [`ENGINE_LEASE_MS`].
const ENGINE_LEASE: &str = "rollout-engine";
pub const ENGINE_LEASE_MS: i64 = 5_000;

async fn holds_engine_lease(state: &AppState) -> bool {
    if state.shutdown.is_cancelled() {
        return false;
    }
    let now_ms = state.clock.unix_ms();
    let held = take_lease(&*state.store, &state.instance, now_ms).await;
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

/// Takes or renews the rollout-engine lease for `instance` at `now_ms`; false while another
/// server's has not expired (or the store cannot say).
pub async fn take_lease(store: &dyn Store, instance: &str, now_ms: i64) -> bool {
    match store
        .lease(ENGINE_LEASE, instance, now_ms, ENGINE_LEASE_MS)
        .await
    {
        Ok(held) => held,
        Err(e) => {
            tracing::error!(error = %e, "cannot renew the rollout-engine lease");
            false
        }
    }
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
