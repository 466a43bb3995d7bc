//! Guard policies set per group (`crate::guard_policies`): listed, set and cleared. Setting one
//! checks it as a release's would be, against the model's newest release (its signed accuracy
//! is what an accuracy rule is held to).

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use edgefleet_protocol::guard::GuardPolicy;

use super::audit::AuditNote;
use super::handlers::{ApiResult, check_name, parse_json};
use super::{ApiError, AppState, Principal};
use crate::guard_policies::GroupGuard;

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct GroupGuardList {
    pub policies: Vec<GroupGuard>,
}

pub async fn list(State(state): State<AppState>) -> ApiResult {
    let policies = state.store.group_guards().await?;
    Ok(axum::Json(GroupGuardList { policies }).into_response())
}

pub async fn set(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((group, model)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    check_name(&group, "group")?;
    let policy: GuardPolicy = parse_json(&body)?;
    let newest = state
        .tuf
        .models()
        .await?
        .into_iter()
        .filter(|m| m.meta.model.as_str() == model)
        .max_by_key(|m| m.meta.sequence)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no release of model {model:?} is signed; push one before setting its guard"
            ))
        })?;
    policy
        .validate(newest.meta.signed_accuracy())
        .map_err(|e| ApiError::bad_field("body", e.to_string()))?;
    let guard = GroupGuard {
        group: group.clone(),
        model: model.clone(),
        policy,
        set_by: p.name(),
        set_at: state.clock.unix(),
    };
    state.store.set_group_guard(&guard).await?;
    Ok(
        AuditNote::on(format!("guard policy of {model} in group {group}"))
            .after(serde_json::to_value(&guard.policy).unwrap_or_default())
            .to(axum::Json(guard).into_response()),
    )
}

pub async fn clear(
    State(state): State<AppState>,
    Path((group, model)): Path<(String, String)>,
) -> ApiResult {
    if !state.store.clear_group_guard(&group, &model).await? {
        return Err(ApiError::not_found(format!(
            "group {group} sets no guard policy for {model} (GET /api/v1/guard-policies lists them)"
        )));
    }
    Ok(
        AuditNote::on(format!("guard policy of {model} in group {group}"))
            .to(StatusCode::NO_CONTENT.into_response()),
    )
}
