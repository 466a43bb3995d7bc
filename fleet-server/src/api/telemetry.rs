//! Fleet telemetry for operators and the dashboard: figures per model version (over the fleet,
//! a group or a rollout's devices), time series for charts, one device's batches as stored, and
//! a live stream of what changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

use super::handlers::QueryParams;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use edgefleet_protocol::DeviceId;
use serde::Deserialize;
use serde_json::json;

use super::rollouts::load;
use super::{ApiError, AppState};
use crate::live::{Change, Subscription};
use crate::telemetry::{self, VersionFigures};
use tokio::sync::broadcast::error::RecvError;

type ApiResult = Result<Response, ApiError>;

/// How long before a rollout its charts start (the previous version's recent figures).
const SERIES_LEAD_SECONDS: i64 = 300;

/// A window longer than this is refused (a month).
const MAX_SINCE_SECONDS: i64 = 31 * 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetQuery {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    group: Option<String>,
    /// How far back, default an hour.
    #[serde(default)]
    since_seconds: Option<i64>,
    /// Chart resolution, default a sixtieth of the window (at least 1 s).
    #[serde(default)]
    step_seconds: Option<i64>,
}

fn window(since: Option<i64>, step: Option<i64>) -> Result<(i64, i64), ApiError> {
    let since = since.unwrap_or(3600);
    if !(1..=MAX_SINCE_SECONDS).contains(&since) {
        return Err(ApiError::bad_field(
            "since_seconds",
            format!("must be between 1 and {MAX_SINCE_SECONDS}"),
        ));
    }
    let step = step.unwrap_or((since / 60).max(1));
    if !(1..=since).contains(&step) {
        return Err(ApiError::bad_field(
            "step_seconds",
            "must be between 1 and since_seconds",
        ));
    }
    Ok((since, step))
}

/// `GET /api/v1/telemetry`: per model version over the window; with `model`, its time series.
/// Read from the rollups (and the batches not folded yet), never the fleet's raw batches:
/// minutes for the last `telemetry.minute_rollups_hours`, hours before.
pub async fn fleet(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<FleetQuery>,
) -> ApiResult {
    let (since, step) = window(q.since_seconds, q.step_seconds)?;
    let now = state.clock.unix();
    let rows =
        telemetry::rollups::window_rows(&*state.store, &state.pending_batches, now - since, now)
            .await?;
    // What each release's signed lineage claims, for the decay flags.
    let models = state.tuf.models().await?;
    let baselines = state.baselines.load(&state.blobs, &models).await;
    let claimed: HashMap<(String, String), BTreeMap<String, f64>> = models
        .into_iter()
        .filter_map(|m| {
            let metrics = m.meta.lineage.as_ref()?.metrics.clone();
            Some((
                (m.meta.model.to_string(), m.meta.version.to_string()),
                metrics,
            ))
        })
        .collect();
    let figures = telemetry::rollups::window_figures(
        &rows,
        &baselines,
        |group| q.group.as_ref().is_none_or(|g| g == group),
        q.model.as_deref(),
        step,
    );
    let settings = &state.config.telemetry;
    let versions: Vec<_> = figures
        .versions
        .into_iter()
        .filter(|((model, _), _)| q.model.as_ref().is_none_or(|m| m == model))
        .map(|((model, version), f)| {
            let report = f.report(&model, &version);
            let decay = match (&report.quality, claimed.get(&(model, version))) {
                (Some(quality), Some(release)) => telemetry::decay(
                    quality,
                    release,
                    settings.decay_tolerance,
                    settings.decay_min_labelled,
                ),
                _ => Vec::new(),
            };
            let mut view = serde_json::to_value(report).unwrap_or_default();
            if !decay.is_empty() {
                view["decay"] = json!(decay);
            }
            view
        })
        .collect();
    Ok(axum::Json(json!({
        "since_seconds": since,
        "step_seconds": step,
        "batches": figures.batches,
        "dropped_batches": figures.dropped_batches,
        "versions": versions,
        "series": figures.series,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepQuery {
    #[serde(default)]
    step_seconds: Option<i64>,
}

/// Rollouts whose telemetry views are kept up to date between requests.
const ROLLOUT_VIEWS_KEPT: usize = 16;

/// `GET /api/v1/rollouts/{id}/telemetry`: the new version against the previous one on the
/// rollout's devices — the figures its model gates judge — and both versions' time series.
/// The figures are kept between requests and each request reads only the batches that arrived
/// since the last ([`crate::telemetry::evidence`], as the engine's gates do); the series of a
/// rollout over a group or the whole fleet come from the rollups, of one over tags or named
/// devices from its devices' raw batches.
pub async fn rollout(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<StepQuery>,
) -> ApiResult {
    let rollout = load(&state, &id).await?;
    let now = state.clock.unix();
    let baselines = state.baselines().await?;
    let (candidate, previous) = {
        let mut views = state.rollout_views.lock().await;
        let figures = views
            .refresh(
                &*state.store,
                &rollout,
                crate::engine::BASELINE_LOOKBACK_SECONDS,
                now,
            )
            .await?
            .versions(&rollout, &baselines);
        views.keep_at_most(ROLLOUT_VIEWS_KEPT, &rollout.id);
        figures
    };
    // Charts start shortly before the rollout, in about 60 steps of its age so far.
    let since = rollout.created_at - SERIES_LEAD_SECONDS;
    let (_, step) = window(
        Some((now - since).clamp(1, MAX_SINCE_SECONDS)),
        q.step_seconds,
    )?;
    let selector = &rollout.spec.selector;
    let series = if selector.tags.is_empty() && selector.devices.is_empty() {
        let rows =
            telemetry::rollups::window_rows(&*state.store, &state.pending_batches, since, now)
                .await?;
        telemetry::rollups::window_figures(
            &rows,
            &baselines,
            |group| selector.group.as_ref().is_none_or(|g| g == group),
            Some(&rollout.spec.model),
            step,
        )
        .series
    } else {
        let members: HashSet<&str> = rollout.devices.iter().map(|d| d.id.as_str()).collect();
        let recent: Vec<_> = telemetry::batches(state.store.metrics(None, since).await?)
            .into_iter()
            .filter(|b| b.window_end_unix as i64 >= since)
            .collect();
        telemetry::series(&recent, &rollout.spec.model, step, &baselines, |d| {
            members.contains(d)
        })
    };
    let report = |f: &VersionFigures, version: &str| f.report(&rollout.spec.model, version);
    Ok(axum::Json(json!({
        "rollout": rollout.id,
        "model": rollout.spec.model,
        "gates": rollout.spec.gates.model,
        "model_check": rollout.model_check,
        "candidate": report(&candidate, &rollout.spec.version),
        "previous": report(&previous, "previous"),
        "output_shift_psi": telemetry::output_shift(&candidate.predictions, &previous.predictions),
        "step_seconds": step,
        "series": series,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    #[serde(default)]
    since_seconds: Option<i64>,
}

/// `GET /api/v1/devices/{id}/metrics`: the device's batches as stored, in arrival order.
pub async fn device(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<DeviceQuery>,
) -> ApiResult {
    let id = DeviceId::new(id).map_err(|e| ApiError::bad_field("id", e.to_string()))?;
    let (since, _) = window(Some(q.since_seconds.unwrap_or(86_400)), None)?;
    if state.store.device(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("device {id} not found")));
    }
    let batches = state
        .store
        .metrics(Some(&id), state.clock.unix() - since)
        .await?;
    Ok((StatusCode::OK, axum::Json(json!({ "batches": batches }))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Comma-separated ids of the devices whose status to follow.
    #[serde(default)]
    devices: String,
}

/// `GET /api/v1/stream?devices=a,b`: server-sent events — `event` (a device event, oldest
/// first), `rollout` (a rollout whose revision changed: its state and wave counts, no device
/// list) and `device` (a followed device's status changed; `last_seen` alone at most once a
/// minute). The whole picture first, then what changes ([`crate::live`]); it ends at shutdown.
pub async fn stream(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<StreamQuery>,
) -> ApiResult {
    let mut devices = std::collections::BTreeSet::new();
    for id in q
        .devices
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let id = DeviceId::new(id.to_owned())
            .map_err(|e| ApiError::bad_field("devices", format!("{id:?}: {e}")))?;
        devices.insert(id.to_string());
    }
    if devices.len() > crate::live::DEVICES_FOLLOWED {
        return Err(ApiError::bad_field(
            "devices",
            format!(
                "a stream follows at most {} devices (the page in view)",
                crate::live::DEVICES_FOLLOWED
            ),
        ));
    }
    let Subscription {
        whole,
        changes,
        following,
    } = state
        .live
        .subscribe(&*state.store, state.clock.unix(), devices)
        .await;
    let ticks = futures::stream::unfold(
        (state, Some(whole), changes, following),
        |(state, first, mut changes, following)| async move {
            if let Some(whole) = first {
                return Some((frames(whole), (state, None, changes, following)));
            }
            let told = tokio::select! {
                received = changes.recv() => match received {
                    Ok(told) => following.filter(&told),
                    // Too far behind: the whole picture again, then on from the oldest kept.
                    Err(RecvError::Lagged(_)) => state.live.whole(&following).await,
                    Err(RecvError::Closed) => return None,
                },
                () = state.shutdown.cancelled() => return None,
            };
            Some((frames(told), (state, None, changes, following)))
        },
    );
    use futures::StreamExt;
    Ok(Sse::new(ticks.flatten())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn frames(
    changes: Vec<Change>,
) -> futures::stream::Iter<std::vec::IntoIter<Result<Event, Infallible>>> {
    let frames: Vec<_> = changes
        .into_iter()
        .map(|c| Ok(Event::default().event(c.kind).data(&*c.data)))
        .collect();
    futures::stream::iter(frames)
}
