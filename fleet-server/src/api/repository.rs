//! The TUF repository over HTTP: the operator publishes signed metadata (root, targets,
//! delegated roles) and devices read metadata and targets (each only those assigned to it,
//! with Range and ETag).

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::handlers::{ApiResult, JsonBody, json_response};
use super::registry::record_new_releases;
use super::{ApiError, AppState, Principal, json_content_type};
use crate::range::{RangeDecision, decide};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TufInit {
    root: String,
    targets: String,
}

pub async fn tuf_init(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<TufInit>,
) -> ApiResult {
    let (published, models) = state
        .tuf
        .init(
            req.root.as_bytes(),
            req.targets.as_bytes(),
            state.clock.now(),
        )
        .await?;
    record_new_releases(&state, &models, &principal.name()).await?;
    tracing::info!(by = %principal.name(), "TUF repository created");
    Ok(json_response(
        StatusCode::CREATED,
        published_json(&published),
    ))
}

pub(super) fn published_json(p: &edgefleet_tuf::repo::Published) -> Value {
    json!({
        "targets_version": p.targets_version,
        "snapshot_version": p.snapshot_version,
        "timestamp_version": p.timestamp_version,
    })
}

async fn limited_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, state.config.limits.max_json_bytes)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "cannot read the body (limit {} bytes, limits.max_json_bytes): {e}",
                    state.config.limits.max_json_bytes
                ),
            )
        })
}

pub async fn tuf_online_keys(State(state): State<AppState>) -> ApiResult {
    let dir = state.config.online_keys_dir();
    let mut keys = serde_json::Map::new();
    for role in ["snapshot", "timestamp"] {
        let key = edgefleet_tuf::keys::read_public(&dir.join(format!("{role}.pub.json")))
            .map_err(ApiError::internal)?;
        keys.insert(
            role.into(),
            serde_json::to_value(key).map_err(ApiError::internal)?,
        );
    }
    Ok(json_response(StatusCode::OK, Value::Object(keys)))
}

pub async fn tuf_current_targets(State(state): State<AppState>) -> ApiResult {
    let bytes = state.tuf.current_targets().await?;
    Ok(([(header::CONTENT_TYPE, json_content_type())], bytes).into_response())
}

pub async fn tuf_accept_targets(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Body,
) -> ApiResult {
    let bytes = limited_body(&state, body).await?;
    let (published, models) = state.tuf.accept_targets(&bytes, state.clock.now()).await?;
    record_new_releases(&state, &models, &principal.name()).await?;
    tracing::info!(by = %principal.name(), targets_version = published.targets_version, "targets published");
    Ok(json_response(StatusCode::OK, published_json(&published)))
}

pub async fn tuf_current_delegated(
    State(state): State<AppState>,
    Path(role): Path<String>,
) -> ApiResult {
    match state.tuf.current_delegated(&role).await? {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, json_content_type())], bytes).into_response()),
        None => Err(ApiError::not_found(format!(
            "no delegated role {role:?} has been published; `fleetctl delegate` the model first"
        ))),
    }
}

pub async fn tuf_accept_delegated(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(role): Path<String>,
    body: Body,
) -> ApiResult {
    let bytes = limited_body(&state, body).await?;
    let (published, models) = state
        .tuf
        .accept_delegated(&role, &bytes, state.clock.now())
        .await?;
    record_new_releases(&state, &models, &principal.name()).await?;
    tracing::info!(by = %principal.name(), role = %role, "delegated role published");
    Ok(json_response(StatusCode::OK, published_json(&published)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TufDelegation {
    /// The next top-level targets, delegating the model.
    targets: String,
    /// The role it delegates to, and that role's next version.
    role: String,
    role_targets: String,
}

pub async fn tuf_accept_delegation(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<TufDelegation>,
) -> ApiResult {
    let (published, models) = state
        .tuf
        .accept_delegation(
            req.targets.as_bytes(),
            &req.role,
            req.role_targets.as_bytes(),
            state.clock.now(),
        )
        .await?;
    record_new_releases(&state, &models, &principal.name()).await?;
    tracing::info!(by = %principal.name(), role = %req.role, "model delegated");
    Ok(json_response(StatusCode::OK, published_json(&published)))
}

pub async fn tuf_accept_root(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Body,
) -> ApiResult {
    let bytes = limited_body(&state, body).await?;
    let published = state.tuf.accept_root(&bytes, state.clock.now()).await?;
    tracing::info!(by = %principal.name(), "root rotated");
    Ok(json_response(StatusCode::OK, published_json(&published)))
}

pub async fn tuf_metadata(State(state): State<AppState>, Path(file): Path<String>) -> ApiResult {
    match state.tuf.metadata(&file).await? {
        Some(bytes) => Ok((
            [
                (header::CONTENT_TYPE, json_content_type()),
                (
                    header::CACHE_CONTROL,
                    axum::http::HeaderValue::from_static("no-cache"),
                ),
            ],
            bytes,
        )
            .into_response()),
        None => Err(ApiError::not_found(format!(
            "{file:?} is not TUF metadata of this repository (yet)"
        ))),
    }
}

pub async fn tuf_target(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let served = crate::tufhost::target_of(&path)
        .ok_or_else(|| ApiError::not_found(format!("{path:?} is not a target path")))?;
    if let Principal::Device(id) = &principal {
        let name = &served.release;
        if !state.store.is_assigned(id, name).await? {
            return Err(ApiError::forbidden(format!(
                "{name} is not assigned to device {id}"
            )));
        }
        // Authorized by what is served, not by the name in the path: the hash must be the one
        // the current signed metadata gives that release, or an assigned name would unlock any
        // blob.
        let signed = state.tuf.models().await?;
        if !signed.iter().any(|m| served.is_signed_in(m)) {
            let what = served.kind.map_or("artifact", |k| k.file_name());
            return Err(ApiError::forbidden(format!(
                "{} is not the {what} of {name} in the current signed targets",
                served.sha256
            )));
        }
    }
    // A release file is JSON and shrinks about threefold with gzip; served whole, it is sent as
    // JSON so the compression layer takes it. A range (a resumed download) counts stored bytes
    // and stays as it is.
    let content_type = match served.kind {
        Some(edgefleet_protocol::release_files::ReleaseFileKind::Card) => {
            "text/markdown; charset=utf-8"
        }
        Some(_) => "application/json",
        None => "application/octet-stream",
    };
    serve_blob(&state, &served.sha256, &headers, content_type).await
}

/// Sends a content-addressed artifact honouring `Range`, `If-Range` and `If-None-Match`; the
/// range is passed on to the artifact store, so only the bytes sent are read.
async fn serve_blob(
    state: &AppState,
    sha256: &str,
    headers: &HeaderMap,
    whole_content_type: &'static str,
) -> ApiResult {
    let Some(blob) = state.blobs.get(sha256).await? else {
        return Err(ApiError::not_found("no such artifact"));
    };
    let len = blob.length;
    let etag = format!("\"{sha256}\"");
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    if let Some(tags) = header_str(header::IF_NONE_MATCH)
        && tags
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let range = match header_str(header::IF_RANGE) {
        Some(validator) if validator.trim() != etag => None,
        _ => header_str(header::RANGE),
    };
    let (status, start, count) = match decide(range, len) {
        RangeDecision::Full => (StatusCode::OK, 0, len),
        RangeDecision::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeDecision::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [
                    (header::CONTENT_RANGE, format!("bytes */{len}")),
                    (header::ETAG, etag),
                ],
            )
                .into_response());
        }
    };
    let metrics = state.metrics.clone();
    let stream = state
        .blobs
        .read(sha256, start..start + count)
        .await?
        .map(move |chunk| {
            if let Ok(bytes) = &chunk {
                metrics.artifact_bytes_sent.inc_by(bytes.len() as u64);
            }
            chunk
        });
    let content_type = if status == StatusCode::OK {
        whole_content_type
    } else {
        "application/octet-stream"
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, count)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, etag)
        .header(
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable",
        );
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    response
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}
