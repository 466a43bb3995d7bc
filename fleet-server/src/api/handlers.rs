//! What every handler shares (JSON bodies whose errors name the field, validated ids and names),
//! and the small routes: health, readiness, metrics, the API document, who am I, and operator
//! tokens. The rest live by subject: `devices`, `registry`, `repository`, `rollouts`,
//! `telemetry`, `rotation`. Each handler validates its input into typed values first (a bad
//! field is a 400 naming it), then calls the store, the TUF host or the broker.

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgefleet_protocol::DeviceId;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::audit::AuditNote;
use super::{ApiError, AppState, Principal, openapi, routes};
use crate::auth::{self, Role, SecretKind};

pub(super) type ApiResult = Result<Response, ApiError>;

/// JSON body whose errors name the field: `{"error": "...", "field": "tags.site"}`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), format!("cannot read the request body: {e}")))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Query parameters whose errors are JSON naming the parameter, as body errors are:
/// `{"error": "...", "field": "limit"}` (axum's own answer is plain text).
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::try_from_uri(&parts.uri)
            .map(|q| QueryParams(q.0))
            .map_err(|e| {
                let message = e.body_text();
                let field = ["missing field `", "unknown field `"]
                    .iter()
                    .find_map(|p| message.split_once(p))
                    .and_then(|(_, rest)| rest.split_once('`'))
                    .map_or("query", |(name, _)| name);
                ApiError::bad_field(field, format!("invalid query parameters: {message}"))
            })
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| message.split_once(p))
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_owned());
        let syntax = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let field = match (path.as_str(), named) {
            _ if syntax => "body".to_owned(),
            ("." | "?", Some(name)) => name,
            ("." | "?", None) => "body".to_owned(),
            (p, Some(name)) if message.starts_with("missing") => format!("{p}.{name}"),
            (p, _) => p.to_owned(),
        };
        ApiError::bad_field(field, format!("invalid JSON: {message}"))
    })
}

pub(super) fn json_response(status: StatusCode, body: impl serde::Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}

pub(super) fn device_id(text: &str, field: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(text.to_owned()).map_err(|e| ApiError::bad_field(field, e.to_string()))
}

/// Group names and tag keys follow the device-id rule: safe in topics, paths and shells.
pub(super) fn check_name(text: &str, field: &str) -> Result<(), ApiError> {
    DeviceId::new(text.to_owned()).map(|_| ()).map_err(|_| {
        ApiError::bad_field(field, format!("{text:?} must match [A-Za-z0-9._-]{{1,64}}"))
    })
}

pub(super) fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (key, value) in tags {
        check_name(key, &format!("tags.{key}"))?;
        if value.is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
            return Err(ApiError::bad_field(
                format!("tags.{key}"),
                "a tag value must be 1-128 printable characters",
            ));
        }
    }
    Ok(())
}

pub async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = state.store.ping().await {
        problems.push(format!("database: {e}"));
    }
    if !state.mqtt.is_connected() {
        problems.push("MQTT broker: not connected".to_string());
    }
    // Any address will do: the question is whether the store answers.
    if let Err(e) = state.blobs.get(&"0".repeat(64)).await {
        problems.push(format!("artifact store: {e}"));
    }
    let tuf_repository = match state.tuf.is_initialised().await {
        Ok(initialised) => initialised,
        Err(e) => {
            problems.push(format!("TUF repository: {e}"));
            false
        }
    };
    if problems.is_empty() {
        json_response(
            StatusCode::OK,
            json!({"status": "ready", "tuf_repository": tuf_repository}),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not ready", "problems": problems}),
        )
    }
}

pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(expected) = &state.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected.as_bytes())
            .is_err()
        {
            return ApiError::unauthorized(
                "/metrics needs the scrape token of metrics.token_file: `Authorization: Bearer <token>`",
            )
            .into_response();
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

pub async fn openapi() -> Response {
    json_response(StatusCode::OK, openapi::document(&routes()))
}

pub async fn whoami(Extension(principal): Extension<Principal>) -> Response {
    let body = match &principal {
        Principal::Operator { name, role } => {
            json!({"kind": "operator", "name": name, "role": role})
        }
        Principal::Device(id) => json!({"kind": "device", "name": id}),
        Principal::Anonymous => json!({"kind": "anonymous"}),
    };
    json_response(StatusCode::OK, body)
}

pub async fn list_tokens(State(state): State<AppState>) -> ApiResult {
    let tokens = state.store.operator_tokens().await?;
    Ok(json_response(StatusCode::OK, json!({ "tokens": tokens })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    name: String,
    #[schema(inline)]
    role: Role,
}

pub async fn create_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<CreateToken>,
) -> ApiResult {
    if req.name.is_empty() || req.name.len() > 64 || req.name.chars().any(char::is_control) {
        return Err(ApiError::bad_field(
            "name",
            "a token name is 1-64 printable characters",
        ));
    }
    let secret = auth::new_secret(SecretKind::Operator).map_err(ApiError::internal)?;
    let id = state
        .store
        .create_operator_token(
            &req.name,
            req.role,
            &auth::secret_hash(&secret),
            state.clock.unix(),
        )
        .await?;
    tracing::info!(by = %principal.name(), name = %req.name, role = req.role.as_str(), "operator token created");
    let note = AuditNote::on(format!("operator token {id}"))
        .after(json!({"name": req.name, "role": req.role}));
    Ok(note.to(json_response(
        StatusCode::CREATED,
        json!({"id": id, "name": req.name, "role": req.role, "token": secret}),
    )))
}

pub async fn revoke_token(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_field("id", format!("{id:?} is not a token id")))?;
    state
        .store
        .revoke_operator_token(id, state.clock.unix())
        .await?;
    Ok(AuditNote::on(format!("operator token {id}")).to(StatusCode::NO_CONTENT.into_response()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        id: String,
        tags: BTreeMap<String, String>,
        count: u32,
    }

    fn field_of(body: &str) -> String {
        parse_json::<Sample>(body.as_bytes())
            .unwrap_err()
            .field
            .unwrap()
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field_of(r#"{"tags": {}, "count": 1}"#), "id");
        assert_eq!(
            field_of(r#"{"id": "a", "tags": {}, "count": "x"}"#),
            "count"
        );
        assert_eq!(
            field_of(r#"{"id": "a", "tags": {"k": 1}, "count": 1}"#),
            "tags.k"
        );
        assert_eq!(
            field_of(r#"{"id": "a", "tags": {}, "count": 1, "cuont": 2}"#),
            "cuont"
        );
        assert_eq!(field_of(r#"{"id": "a", "#), "body");
        assert_eq!(field_of("[]"), "body");
    }
}
