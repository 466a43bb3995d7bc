//! `/api/v1/alerts`: the server's own alerts (`crate::alerts`), listed, acknowledged and
//! resolved.

use super::handlers::QueryParams;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::audit::AuditNote;
use super::handlers::{ApiResult, parse_json};
use super::{ApiError, AppState, Principal};
use crate::alerting::{self as alerts, Alert, AlertFilter, AlertState, ChangeError};

/// `?state=firing|acknowledged|resolved`, `?all=true` (resolved ones too), `?limit=`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    #[serde(default)]
    all: bool,
    limit: Option<u32>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AlertList {
    pub alerts: Vec<Alert>,
}

pub async fn list(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    let wanted = match q.state.as_deref() {
        None => None,
        Some(s) => Some(AlertState::parse(s).ok_or_else(|| {
            ApiError::bad_field(
                "state",
                format!("state {s:?} is not one of firing, acknowledged, resolved"),
            )
        })?),
    };
    let filter = AlertFilter {
        state: wanted,
        all: q.all,
        limit: q.limit,
    };
    let alerts = state.store.alerts(&filter).await?;
    Ok(axum::Json(AlertList { alerts }).into_response())
}

pub async fn show(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    match state.store.alert(id).await? {
        Some(alert) => Ok(axum::Json(alert).into_response()),
        None => Err(not_found(id)),
    }
}

fn not_found(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("alert {id} not found (list them with GET /api/v1/alerts?all=true)"),
    )
}

/// An acknowledgement's optional note.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Why, or who is on it (at most 1000 characters).
    #[serde(default)]
    pub note: Option<String>,
}

pub async fn acknowledge(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult {
    // An empty body acknowledges without a note.
    let request: AckRequest = if body.iter().all(u8::is_ascii_whitespace) {
        AckRequest::default()
    } else {
        parse_json(&body)?
    };
    if request
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > 1000)
    {
        return Err(ApiError::bad_field("note", "is over 1000 characters"));
    }
    let now = state.clock.unix();
    let alert = alerts::acknowledge(&*state.store, id, &p.name(), request.note, now)
        .await
        .map_err(|e| change_error(id, e))?;
    Ok(AuditNote::on(format!("alert {id}"))
        .after(serde_json::json!({"state": alert.state.as_str()}))
        .to(axum::Json(alert).into_response()))
}

pub async fn resolve(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<i64>,
) -> ApiResult {
    let now = state.clock.unix();
    let alert = alerts::resolve(&*state.store, id, &p.name(), now, true)
        .await
        .map_err(|e| change_error(id, e))?;
    Ok(AuditNote::on(format!("alert {id}"))
        .after(serde_json::json!({"state": alert.state.as_str()}))
        .to(axum::Json(alert).into_response()))
}

fn change_error(id: i64, e: ChangeError) -> ApiError {
    match e {
        ChangeError::NotFound { .. } => not_found(id),
        ChangeError::Resolved { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        ChangeError::Store(e) => e.into(),
    }
}
