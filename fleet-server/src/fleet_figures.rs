//! The figures `/metrics` shows of the whole fleet (devices registered and online, each
//! version's predictions, errors, latency and input drift), recomputed by a background task
//! every `metrics.refresh_seconds`. A scrape only encodes what the last refresh left: it never
//! waits for the store, so its answer time does not grow with the fleet or with the store's
//! backlog, and a public `/metrics` cannot be used to make the server read its telemetry in a
//! loop. The figures come from the telemetry rollups (a few rows per version and minute), never
//! from the fleet's raw batches.

use std::time::Duration;

use crate::api::{self, AppState};
use crate::live::ONLINE_SECONDS;

/// Refreshes the fleet's figures at start and then every `metrics.refresh_seconds`, until the
/// server shuts down. A refresh that overruns delays the next one rather than queueing more.
pub async fn run(state: AppState) {
    let every = Duration::from_secs(state.config.metrics.refresh_seconds.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = refresh(&state) => {}
        }
    }
}

/// Recomputes the figures from the store; what cannot be read keeps its last value and is
/// logged, so a store that is briefly away does not blank a dashboard.
pub async fn refresh(state: &AppState) {
    let started = std::time::Instant::now();
    let now = state.clock.unix();
    api::refresh_known_versions(state).await;
    // Registrations leave a row each in the group tally until folded; fold them here, so that
    // the device list's totals stay a read of a few rows.
    if let Err(e) = state.store.compact_device_tally().await {
        tracing::warn!(error = %e, "cannot fold the device tally; retrying at the next refresh");
    }
    match state.store.device_counts(now - ONLINE_SECONDS).await {
        Ok((registered, online)) => {
            state.metrics.devices.set(registered as i64);
            state.metrics.devices_online.set(online as i64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the fleet's devices for /metrics"),
    }
    let baselines = state.baselines().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the signed releases: fleet drift is not shown");
        Default::default()
    });
    let from = now - crate::metrics::FLEET_WINDOW_SECONDS;
    match crate::telemetry::rollups::window_rows(&*state.store, &state.pending_batches, from, now)
        .await
    {
        Ok(rows) => {
            let figures =
                crate::telemetry::rollups::window_figures(&rows, &baselines, |_| true, None, 60);
            state.metrics.set_fleet_figures(&figures.versions);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the fleet's telemetry for /metrics"),
    }
    tracing::debug!(
        took_ms = started.elapsed().as_millis() as u64,
        waiting_batches_kept = state.pending_batches.kept(),
        "fleet figures for /metrics refreshed"
    );
}
