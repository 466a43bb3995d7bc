//! Route handlers. Each validates its input into typed values first (a bad field is a 400 naming
//! it), then calls the store, the TUF host or the broker.

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgefleet_protocol::DeviceId;
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ApiError, AppState, Principal, json_content_type, openapi, routes};
use crate::auth::{self, Role, SecretKind};
use crate::desired::{Catalog, Wanted};
use crate::range::{RangeDecision, decide};
use crate::store::{DeviceFilter, NewDevice, Release, Stage, StoreError};

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

pub(super) fn json_response(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

fn device_id(text: &str, field: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(text.to_owned()).map_err(|e| ApiError::bad_field(field, e.to_string()))
}

/// Group names and tag keys follow the device-id rule: safe in topics, paths and shells.
fn check_name(text: &str, field: &str) -> Result<(), ApiError> {
    DeviceId::new(text.to_owned()).map(|_| ()).map_err(|_| {
        ApiError::bad_field(field, format!("{text:?} must match [A-Za-z0-9._-]{{1,64}}"))
    })
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
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

pub async fn metrics(State(state): State<AppState>) -> Response {
    refresh_known_versions(&state).await;
    if let Ok(count) = state.store.device_count().await {
        state.metrics.devices.set(count as i64);
    }
    let now = state.clock.unix();
    if let Ok(devices) = state.store.devices(&DeviceFilter::default()).await {
        let online = devices
            .iter()
            .filter(|d| d.last_seen.is_some_and(|t| now - t <= ONLINE_SECONDS))
            .count();
        state.metrics.devices_online.set(online as i64);
    }
    if let Ok(stored) = state
        .store
        .metrics(None, now - crate::metrics::FLEET_WINDOW_SECONDS)
        .await
    {
        let batches = crate::telemetry::batches(stored);
        state
            .metrics
            .set_fleet_figures(&crate::telemetry::by_version(&batches, |_| true));
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    device_id: String,
    token: String,
    /// The device's own ed25519 public key (hex): its messages must then be sealed with it.
    #[serde(default)]
    public_key: Option<String>,
}

pub async fn enroll(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<EnrollRequest>,
) -> ApiResult {
    let id = device_id(&req.device_id, "device_id")?;
    if SecretKind::of(&req.token) != Some(SecretKind::Enrollment) {
        return Err(ApiError::bad_field(
            "token",
            "not an enrollment token (they start with efe_); ask the operator for `fleetctl device add`",
        ));
    }
    let public_key = match &req.public_key {
        Some(text) => Some(
            edgefleet_sealed::PublicKey::from_hex(text)
                .map_err(|e| ApiError::bad_field("public_key", e.to_string()))?
                .to_hex(),
        ),
        None => None,
    };
    let credential = auth::new_secret(SecretKind::Device).map_err(ApiError::internal)?;
    let mosquitto = auth::mosquitto_hash(&credential).map_err(ApiError::internal)?;
    state
        .store
        .enroll(
            &id,
            &auth::secret_hash(&req.token),
            &auth::secret_hash(&credential),
            &mosquitto,
            public_key.as_deref(),
            state.clock.unix(),
        )
        .await?;
    tracing::info!(device = %id, sealed = public_key.is_some(), "device enrolled");
    Ok(json_response(
        StatusCode::OK,
        json!({
            "device_id": id,
            "credential": credential,
            "server_url": state.config.public_url(),
            "mqtt_url": state.device_mqtt_url,
            "mqtt_username": id,
        }),
    ))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    name: String,
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
    Ok(json_response(
        StatusCode::CREATED,
        json!({"id": id, "name": req.name, "role": req.role, "token": secret}),
    ))
}

pub async fn revoke_token(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_field("id", format!("{id:?} is not a token id")))?;
    state
        .store
        .revoke_operator_token(id, state.clock.unix())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    group: Option<String>,
    tag: Option<String>,
}

pub(super) fn device_summary(d: &crate::store::Device, now: i64) -> Value {
    let running: BTreeMap<String, Value> = d
        .reported
        .iter()
        .flat_map(|r| &r.models)
        .map(|m| {
            let version = m.active.as_ref().map(|a| a.version.to_string());
            (
                m.model.to_string(),
                json!({"version": version, "state": m.state}),
            )
        })
        .collect();
    json!({
        "id": d.id,
        "group": d.group,
        "tags": d.tags,
        "enrolled": d.enrolled_at.is_some(),
        "enrolled_at": d.enrolled_at,
        "last_seen": d.last_seen,
        "online": d.last_seen.is_some_and(|t| now - t <= ONLINE_SECONDS),
        "agent_version": d.agent_version,
        "running": running,
        "desired_revision": d.desired_revision,
    })
}

/// A device heard from within this many seconds counts as online (agents report at least every
/// 60 s).
const ONLINE_SECONDS: i64 = 120;

pub async fn list_devices(
    State(state): State<AppState>,
    Query(query): Query<DeviceQuery>,
) -> ApiResult {
    let tag = query.tag.map(|t| match t.split_once('=') {
        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
        None => (t, None),
    });
    let filter = DeviceFilter {
        group: query.group,
        tag,
    };
    let devices = state.store.devices(&filter).await?;
    let now = state.clock.unix();
    let list: Vec<Value> = devices.iter().map(|d| device_summary(d, now)).collect();
    Ok(json_response(StatusCode::OK, json!({ "devices": list })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDevice {
    id: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    renew: bool,
}

pub async fn add_device(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<AddDevice>,
) -> ApiResult {
    let id = device_id(&req.id, "id")?;
    if state.config.mqtt.is_server_user(id.as_str()) {
        return Err(ApiError::bad_field(
            "id",
            format!("{id:?} is (or could be) a server's MQTT user name; choose another device id"),
        ));
    }
    let group = req.group.unwrap_or_else(|| "default".into());
    check_name(&group, "group")?;
    check_tags(&req.tags)?;
    let token = auth::new_secret(SecretKind::Enrollment).map_err(ApiError::internal)?;
    let now = state.clock.unix();
    let expires_at = now + i64::from(state.config.enrollment.token_hours) * 3600;
    let device = NewDevice {
        id: id.clone(),
        group,
        tags: req.tags,
    };
    state
        .store
        .add_device(
            &device,
            &auth::secret_hash(&token),
            expires_at,
            now,
            req.renew,
        )
        .await?;
    tracing::info!(by = %principal.name(), device = %id, "device registered");
    Ok(json_response(
        StatusCode::CREATED,
        json!({
            "device_id": id,
            "enrollment_token": token,
            "expires_at": expires_at,
            "enroll_url": format!("{}/api/v1/enroll", state.config.public_url()),
        }),
    ))
}

pub async fn show_device(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = device_id(&id, "id")?;
    let device = state
        .store
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id} not found")))?;
    let events = state.store.events(Some(&id), 20).await?;
    let mut body = device_summary(&device, state.clock.unix());
    body["desired"] = json!(device.desired);
    body["reported"] = json!(device.reported);
    body["events"] = json!(events);
    Ok(json_response(StatusCode::OK, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateDevice {
    group: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

pub async fn update_device(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateDevice>,
) -> ApiResult {
    let id = device_id(&id, "id")?;
    if let Some(group) = &req.group {
        check_name(group, "group")?;
    }
    if let Some(tags) = &req.tags {
        check_tags(tags)?;
    }
    state
        .store
        .update_device(&id, req.group.as_deref(), req.tags.as_ref())
        .await?;
    show_device(State(state), Path(id.to_string())).await
}

pub async fn remove_device(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let id = device_id(&id, "id")?;
    state.store.remove_device(&id).await?;
    if let Err(e) = state.mqtt.clear_desired(&id).await {
        tracing::warn!(device = %id, error = %e, "could not clear the removed device's retained desired state");
    }
    tracing::info!(by = %principal.name(), device = %id, "device removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredRequest {
    models: Vec<DesiredVersion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredVersion {
    model: String,
    version: String,
}

pub async fn set_desired(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DesiredRequest>,
) -> ApiResult {
    let id = device_id(&id, "id")?;
    let wanted: Vec<Wanted> = req
        .models
        .into_iter()
        .map(|m| Wanted {
            model: m.model,
            version: m.version,
            rollout: None,
        })
        .collect();
    let catalog = Catalog::load(&state.tuf).await?;
    let desired = crate::desired::assign(&state, &catalog, &id, &wanted).await?;
    tracing::info!(by = %principal.name(), device = %id, revision = desired.revision, "desired state set");
    Ok(json_response(StatusCode::OK, json!(desired)))
}

pub async fn groups(State(state): State<AppState>) -> ApiResult {
    let groups: Vec<Value> = state
        .store
        .groups()
        .await?
        .into_iter()
        .map(|(name, devices)| json!({"name": name, "devices": devices}))
        .collect();
    Ok(json_response(StatusCode::OK, json!({ "groups": groups })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    device: Option<String>,
    limit: Option<u32>,
}

pub async fn events(State(state): State<AppState>, Query(q): Query<EventQuery>) -> ApiResult {
    let device = q.device.map(|d| device_id(&d, "device")).transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let events = state.store.events(device.as_ref(), limit).await?;
    Ok(json_response(StatusCode::OK, json!({ "events": events })))
}

pub async fn models(State(state): State<AppState>) -> ApiResult {
    let signed = state.tuf.models().await?;
    let releases = state.store.releases().await?;
    let mut by_model: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in &signed {
        let release = releases.iter().find(|r| r.target == m.name);
        by_model
            .entry(m.meta.model.to_string())
            .or_default()
            .push(json!({
                "version": m.meta.version.to_string(),
                "sequence": m.meta.sequence,
                "min_sequence": m.meta.min_sequence,
                "target": m.name,
                "sha256": m.sha256,
                "length": m.length,
                "stage": release.map_or(Stage::Staging, |r| r.stage),
                "pushed_by": release.map(|r| r.pushed_by.clone()),
                "pushed_at": release.map(|r| r.pushed_at),
            }));
    }
    let models: Vec<Value> = by_model
        .into_iter()
        .map(|(model, mut versions)| {
            versions.sort_by_key(|v| v["sequence"].as_u64());
            json!({"model": model, "versions": versions})
        })
        .collect();
    Ok(json_response(StatusCode::OK, json!({ "models": models })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRequest {
    stage: Stage,
}

pub async fn set_stage(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((model, version)): Path<(String, String)>,
    JsonBody(req): JsonBody<StageRequest>,
) -> ApiResult {
    let signed = state.tuf.models().await?;
    let Some(found) = signed
        .iter()
        .find(|m| m.meta.model.as_str() == model && m.meta.version.to_string() == version)
    else {
        return Err(ApiError::not_found(format!(
            "{model} {version} is not a signed version (fleetctl models lists them)"
        )));
    };
    // A version signed offline has no registry row yet; make one.
    match state.store.set_stage(&model, &version, req.stage).await {
        Err(StoreError::NotFound { .. }) => {
            state
                .store
                .record_release(&release_of(
                    found,
                    "unknown (signed offline)",
                    req.stage,
                    state.clock.unix(),
                ))
                .await?;
        }
        other => other?,
    }
    tracing::info!(by = %principal.name(), %model, %version, stage = req.stage.as_str(), "stage changed");
    Ok(json_response(
        StatusCode::OK,
        json!({"model": model, "version": version, "stage": req.stage}),
    ))
}

fn release_of(
    m: &crate::tufhost::SignedModel,
    pushed_by: &str,
    stage: Stage,
    pushed_at: i64,
) -> Release {
    Release {
        target: m.name.clone(),
        model: m.meta.model.to_string(),
        version: m.meta.version.to_string(),
        sequence: m.meta.sequence,
        sha256: m.sha256.clone(),
        length: m.length,
        stage,
        pushed_by: pushed_by.to_owned(),
        pushed_at,
    }
}

/// Tells the metrics which (model, version) pairs the registry holds (device telemetry is
/// labelled with those only). At every scrape, start and push, so a version pushed through
/// another replica is known here by the next scrape.
pub(crate) async fn refresh_known_versions(state: &AppState) {
    match state.store.releases().await {
        Ok(releases) => state
            .metrics
            .set_known_versions(releases.into_iter().map(|r| (r.model, r.version))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the registry's versions for metric labels")
        }
    }
}

async fn record_new_releases(
    state: &AppState,
    models: &[crate::tufhost::SignedModel],
    by: &str,
) -> Result<(), ApiError> {
    let known = state.store.releases().await?;
    for m in models {
        if !known
            .iter()
            .any(|r| r.target == m.name && r.sha256 == m.sha256)
        {
            state
                .store
                .record_release(&release_of(m, by, Stage::Staging, state.clock.unix()))
                .await?;
        }
    }
    refresh_known_versions(state).await;
    Ok(())
}

pub async fn artifact_info(State(state): State<AppState>, Path(sha256): Path<String>) -> ApiResult {
    match state.blobs.get(&sha256).await? {
        Some(blob) => Ok(json_response(StatusCode::OK, json!(blob))),
        None => Err(ApiError::not_found(format!(
            "artifact {sha256} is not stored"
        ))),
    }
}

pub async fn upload_artifact(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    crate::artifacts::check_digest(&sha256)?;
    if let Some(existing) = state.blobs.get(&sha256).await? {
        return Ok(json_response(StatusCode::OK, json!(existing)));
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let blob = state
        .blobs
        .put(
            &sha256,
            length,
            state.config.limits.max_artifact_bytes,
            body.into_data_stream(),
        )
        .await?;
    state.metrics.artifact_bytes_received.inc_by(blob.length);
    tracing::info!(by = %principal.name(), sha256, length = blob.length, "artifact stored");
    Ok(json_response(StatusCode::CREATED, json!(blob)))
}

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
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
    let content_type = if served.kind.is_some() {
        "application/json"
    } else {
        "application/octet-stream"
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

#[cfg(test)]
mod tests {
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
