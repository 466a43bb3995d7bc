//! Key rotation through the server: the next online key for a role, and a rotated root (with
//! the targets re-signed under it when the targets keys changed) published in one step.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::handlers::{ApiResult, JsonBody, json_response};
use super::repository::published_json;
use super::{ApiError, AppState, Principal};
use crate::online_keys::OnlineRole;

/// `POST /api/v1/tuf/online-keys/{role}/next`: the public half of the role's next key.
pub async fn next_online_key(State(state): State<AppState>, Path(role): Path<String>) -> ApiResult {
    let role = OnlineRole::parse(&role).ok_or_else(|| {
        ApiError::bad_field(
            "role",
            format!("{role:?} is not an online role; it is snapshot or timestamp"),
        )
    })?;
    let key = state.tuf.next_online_key(role)?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "role": role.as_str(), "key": key }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// The new root.json, exactly as signed.
    root: String,
    /// The current targets re-signed with the new root's targets keys (version one above).
    #[serde(default)]
    targets: Option<String>,
}

/// `POST /api/v1/tuf/rotation`: publishes a rotated root. Every device's desired state is then
/// signed afresh, so a new timestamp key reaches the retained messages too.
pub async fn rotate(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<Rotation>,
) -> ApiResult {
    let published = state
        .tuf
        .accept_rotation(
            req.root.as_bytes(),
            req.targets.as_deref().map(str::as_bytes),
            state.clock.now(),
        )
        .await?;
    state.mqtt.republish_all();
    tracing::info!(
        by = %principal.name(),
        targets_resigned = req.targets.is_some(),
        targets_version = published.targets_version,
        "root rotated"
    );
    Ok(json_response(StatusCode::OK, published_json(&published)))
}
