//! `/api/v1/rollouts`: create, list, show, and the operator commands.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::handlers::JsonBody;
use super::{ApiError, AppState, Principal};
use crate::rollout::{Command, Gates, Rollout, RolloutSpec, Selector};
use crate::store::DeviceFilter;

type ApiResult = Result<Response, ApiError>;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRollout {
    model: String,
    version: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    waves: Option<Vec<f64>>,
    /// Instead of `waves`: an exponential rate, `{"start_percent": 1, "factor": 2}`.
    #[serde(default)]
    #[schema(inline)]
    exponential: Option<Exponential>,
    #[serde(default)]
    max_failure_ratio: Option<f64>,
    #[serde(default)]
    min_healthy_ratio: Option<f64>,
    #[serde(default)]
    bake_seconds: Option<u64>,
    #[serde(default)]
    device_timeout_seconds: Option<u64>,
    #[serde(default)]
    require_approval: bool,
    /// Model-aware gates on live telemetry (`crate::rollout::ModelGates`).
    #[serde(default)]
    #[schema(inline)]
    model_gates: Option<crate::rollout::ModelGates>,
    #[serde(default = "yes")]
    rollback_on_halt: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Exponential {
    start_percent: f64,
    factor: f64,
}

fn yes() -> bool {
    true
}

/// Per-wave progress and the device list, as the API and the dashboard show a rollout.
pub fn rollout_json(r: &Rollout) -> Value {
    let waves: Vec<Value> = r
        .wave_progress()
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "wave": i + 1,
                "percent": r.spec.waves.get(i),
                "devices": p.devices,
                "healthy": p.healthy,
                "failed": p.failed,
                "rolled_back": p.rolled_back,
                "in_progress": p.in_progress,
            })
        })
        .collect();
    let mut state = serde_json::to_value(&r.state).unwrap_or(Value::Null);
    if let Some(obj) = state.as_object_mut()
        && let Some(wave) = obj.get("wave").and_then(Value::as_u64)
    {
        // People count waves from 1.
        obj.insert("wave".into(), json!(wave + 1));
    }
    json!({
        "id": r.id,
        "model": r.spec.model,
        "version": r.spec.version,
        "target": r.spec.target,
        "selector": r.spec.selector,
        "gates": r.spec.gates,
        "rollback_on_halt": r.spec.rollback_on_halt,
        "state": state,
        "waves": waves,
        "devices": r.devices,
        "created_by": r.created_by,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "model_check": r.model_check,
        "history": r.history.iter().map(|(at, text)| json!({"at": at, "text": text})).collect::<Vec<_>>(),
    })
}

pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<CreateRollout>,
) -> ApiResult {
    let signed = state.tuf.models().await?;
    let found = signed
        .iter()
        .find(|m| m.meta.model.as_str() == req.model && m.meta.version.to_string() == req.version)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{} {} is not a signed version; push it first (fleetctl push --server)",
                    req.model, req.version
                ),
            )
            .with_field("version")
        })?;
    let selector = Selector {
        group: req.group.clone(),
        tags: req.tags.clone(),
        devices: req.devices.clone(),
    };
    let mut devices = state
        .store
        .devices(&DeviceFilter {
            group: req.group.clone(),
            tag: None,
        })
        .await?;
    devices.retain(|d| {
        d.enrolled_at.is_some()
            && req.tags.iter().all(|(k, v)| d.tags.get(k) == Some(v))
            && (req.devices.is_empty() || req.devices.iter().any(|id| id == d.id.as_str()))
    });
    for id in &req.devices {
        if !devices.iter().any(|d| d.id.as_str() == id) {
            return Err(ApiError::bad_field(
                "devices",
                format!("device {id} is not an enrolled device matching the group and tags"),
            ));
        }
    }
    // One active rollout per model and device: a second would fight the first.
    for other in state.store.rollouts(true).await? {
        if other.spec.model == req.model
            && other
                .devices
                .iter()
                .any(|d| devices.iter().any(|mine| mine.id.as_str() == d.id))
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "rollout {} ({} {}, {}) already covers some of these devices; abort it or wait for it to finish",
                    other.id,
                    other.spec.model,
                    other.spec.version,
                    other.state.name()
                ),
            ));
        }
    }
    let plan: Vec<(String, Option<String>)> = devices
        .iter()
        .map(|d| {
            let running = d
                .reported
                .iter()
                .flat_map(|r| &r.models)
                .find(|m| m.model.as_str() == req.model)
                .and_then(|m| m.active.as_ref())
                .map(|a| a.version.to_string());
            (d.id.to_string(), running)
        })
        .collect();
    let defaults = Gates::default();
    let spec = RolloutSpec {
        model: req.model.clone(),
        version: req.version.clone(),
        target: found.name.clone(),
        selector,
        waves: match (req.waves, req.exponential) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_field(
                    "exponential",
                    "give waves or exponential, not both",
                ));
            }
            (Some(waves), None) => waves,
            (None, Some(e)) => crate::rollout::exponential_waves(e.start_percent, e.factor)
                .map_err(|_| {
                    ApiError::bad_field(
                        "exponential",
                        "start_percent must be in (0, 100] and factor above 1",
                    )
                })?,
            (None, None) => vec![1.0, 10.0, 50.0, 100.0],
        },
        gates: Gates {
            max_failure_ratio: req.max_failure_ratio.unwrap_or(defaults.max_failure_ratio),
            min_healthy_ratio: req.min_healthy_ratio,
            bake_seconds: req.bake_seconds.unwrap_or(defaults.bake_seconds),
            device_timeout_seconds: req
                .device_timeout_seconds
                .unwrap_or(defaults.device_timeout_seconds),
            require_approval: req.require_approval,
            model: req.model_gates,
        },
        rollback_on_halt: req.rollback_on_halt,
    };
    if let Some(gates) = &spec.gates.model
        && gates.compares()
        && plan.iter().all(|(_, running)| running.is_none())
    {
        return Err(ApiError::bad_field(
            "model_gates",
            format!(
                "no device of this rollout runs {} yet, so there is no previous version to compare with; \
                 keep only max_input_drift_psi, or roll out without model gates",
                req.model
            ),
        ));
    }
    let mut random = [0u8; 4];
    aws_lc_rs::rand::fill(&mut random)
        .map_err(|_| ApiError::internal("random generator failed"))?;
    let id = format!("r-{}-{}", state.clock.unix(), hex::encode(random));
    let mut rollout =
        Rollout::new(id, spec, plan, principal.name(), state.clock.unix()).map_err(|e| {
            let field = match e {
                crate::rollout::PlanError::Waves => "waves",
                crate::rollout::PlanError::Ratios => "max_failure_ratio",
                crate::rollout::PlanError::NoDevices => "group",
                crate::rollout::PlanError::ModelGates | crate::rollout::PlanError::NoModelGate => {
                    "model_gates"
                }
            };
            ApiError::bad_field(field, e.to_string())
        })?;
    state.store.save_rollout(&mut rollout).await?;
    tracing::info!(by = %principal.name(), rollout = %rollout.id, model = %req.model, version = %req.version, devices = rollout.devices.len(), "rollout created");
    crate::engine::tick(&state).await;
    let saved = state.store.rollout(&rollout.id).await?.unwrap_or(rollout);
    Ok((StatusCode::CREATED, axum::Json(rollout_json(&saved))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    active: bool,
}

pub async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult {
    let rollouts = state.store.rollouts(q.active).await?;
    let list: Vec<Value> = rollouts.iter().map(rollout_json).collect();
    Ok(axum::Json(json!({ "rollouts": list })).into_response())
}

pub(super) async fn load(state: &AppState, id: &str) -> Result<Rollout, ApiError> {
    state.store.rollout(id).await?.ok_or_else(|| {
        ApiError::not_found(format!("rollout {id} not found; fleetctl rollout list"))
    })
}

pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(axum::Json(rollout_json(&load(&state, &id).await?)).into_response())
}

async fn command(state: AppState, principal: Principal, id: String, command: Command) -> ApiResult {
    {
        let _guard = state.engine_lock.lock().await;
        let mut rollout = load(&state, &id).await?;
        rollout
            .command(command, state.clock.unix(), &principal.name())
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
        // On another server's concurrent change: 409, and the operator retries on fresh state.
        state.store.save_rollout(&mut rollout).await?;
    }
    crate::engine::tick(&state).await;
    Ok(axum::Json(rollout_json(&load(&state, &id).await?)).into_response())
}

pub async fn pause(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    command(state, p, id, Command::Pause).await
}

pub async fn resume(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    command(state, p, id, Command::Resume).await
}

pub async fn approve(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    command(state, p, id, Command::Approve).await
}

pub async fn abort(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    command(state, p, id, Command::Abort).await
}

pub async fn retry_failed(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    command(state, p, id, Command::RetryFailed).await
}
