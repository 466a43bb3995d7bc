//! `/api/v1/rollouts`: create, list, show, and the operator commands.

use super::handlers::QueryParams;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::audit::AuditNote;
use super::handlers::JsonBody;
use super::{ApiError, AppState, Principal};
use crate::rollout::{
    Candidate, Command, DevicePage, Origin, Rollout, RolloutList, RolloutRequest, RolloutView, plan,
};
use crate::store::DeviceFilter;

type ApiResult = Result<Response, ApiError>;

pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(request): JsonBody<RolloutRequest>,
) -> ApiResult {
    let signed = state.tuf.models().await?;
    let found = signed
        .iter()
        .find(|m| {
            m.meta.model.as_str() == request.model && m.meta.version.to_string() == request.version
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{} {} is not a signed version; push it first (fleetctl push --server)",
                    request.model, request.version
                ),
            )
            .with_field("version")
        })?;
    let fleet: Vec<Candidate> = state
        .store
        .devices(&DeviceFilter {
            group: request.group.clone(),
            tag: None,
        })
        .await?
        .into_iter()
        .map(|d| Candidate {
            running: d
                .reported
                .iter()
                .flat_map(|r| &r.models)
                .find(|m| m.model.as_str() == request.model)
                .and_then(|m| m.active.as_ref())
                .map(|a| a.version.to_string()),
            id: d.id.to_string(),
            group: d.group,
            tags: d.tags,
            enrolled: d.enrolled_at.is_some(),
        })
        .collect();
    let active = state.store.active_rollouts().await?;
    let mut random = [0u8; 4];
    aws_lc_rs::rand::fill(&mut random)
        .map_err(|_| ApiError::internal("random generator failed"))?;
    let origin = Origin {
        id: format!("r-{}-{}", state.clock.unix(), hex::encode(random)),
        created_by: principal.name(),
        now: state.clock.unix(),
        target: found.name.clone(),
        stage: super::registry::stage_of(&state, &found.name).await?,
    };
    let rules = &state.config.registry;
    let mut rollout =
        plan(request, &fleet, &active, origin, rules).map_err(|e| match e.field() {
            Some(field) => ApiError::bad_field(field, e.to_string()),
            None => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        })?;
    state.store.save_rollout(&mut rollout).await?;
    tracing::info!(by = %principal.name(), rollout = %rollout.id, model = %rollout.spec.model, version = %rollout.spec.version, devices = rollout.devices.len(), "rollout created");
    crate::engine::tick(&state).await;
    let saved = state.store.rollout(&rollout.id).await?.unwrap_or(rollout);
    let note = AuditNote::on(format!("rollout {}", saved.id)).after(serde_json::json!({
        "model": saved.spec.model,
        "version": saved.spec.version,
        "devices": saved.devices.len(),
        "waves": saved.spec.waves,
    }));
    let view = RolloutView::paged(&saved, DevicePage::default());
    Ok(note.to((StatusCode::CREATED, axum::Json(view)).into_response()))
}

/// Rollouts a list shows unless asked otherwise, and the most it shows.
const LIST_DEFAULT: usize = 100;
const LIST_MAX: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    active: bool,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(LIST_DEFAULT);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(ApiError::bad_field(
            "limit",
            format!("limit is 1 to {LIST_MAX} rollouts"),
        ));
    }
    let rollouts = state
        .store
        .rollout_summaries(q.active, limit)
        .await?
        .into_iter()
        .map(|s| s.view)
        .collect();
    Ok(axum::Json(RolloutList { rollouts }).into_response())
}

pub(super) async fn load(state: &AppState, id: &str) -> Result<Rollout, ApiError> {
    state.store.rollout(id).await?.ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("rollout {id} not found; fleetctl rollout list"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    #[serde(default)]
    devices_from: usize,
    devices_limit: Option<usize>,
    #[serde(default)]
    problems: bool,
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ShowQuery>,
) -> ApiResult {
    let limit = q.devices_limit.unwrap_or(DevicePage::DEFAULT_LIMIT);
    if limit > DevicePage::MAX_LIMIT {
        return Err(ApiError::bad_field(
            "devices_limit",
            format!(
                "devices_limit is 0 to {} devices a page; follow devices_next for the rest",
                DevicePage::MAX_LIMIT
            ),
        ));
    }
    let page = DevicePage {
        from: q.devices_from,
        limit,
        problems_only: q.problems,
    };
    let view = state
        .store
        .rollout_page(&id, page)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(view).into_response())
}

async fn command(state: AppState, principal: Principal, id: String, command: Command) -> ApiResult {
    let before = {
        let _guard = state.engine_lock.lock().await;
        let mut rollout = load(&state, &id).await?;
        let before = rollout.state.name();
        rollout
            .command(command, state.clock.unix(), &principal.name())
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
        // On another server's concurrent change: 409, and the operator retries on fresh state.
        state.store.save_rollout(&mut rollout).await?;
        before
    };
    crate::engine::tick(&state).await;
    let after = load(&state, &id).await?;
    let note = AuditNote::on(format!("rollout {id}"))
        .before(serde_json::json!({"state": before}))
        .after(serde_json::json!({"state": after.state.name()}));
    let view = RolloutView::paged(&after, DevicePage::default());
    Ok(note.to(axum::Json(view).into_response()))
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
