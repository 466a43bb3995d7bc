//! The local HTTP API, in the conventions model-serving clients already speak: the Open Inference
//! Protocol (KServe v2; also Triton and MLServer) under `/v2`, plus a feature-level `:predict`,
//! the model list, Prometheus metrics and the offline install under `/v1`.
//!
//! Every bad request gets a 4xx with a JSON body `{"error": ..., "field": ...}` naming what was
//! wrong; model failures are 5xx and count against the model in probation.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use edgefleet_inference::Inputs;
use edgefleet_inference::select::{Trial, TrialOutcome};
use edgefleet_protocol::split::Arm;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::warn;

use crate::agent::{Agent, InstallError};
use crate::serving::{InferError, Slot};

mod answer;
mod body;
mod oip;
mod quality;

pub use body::BodyBudget;
use body::{limited_body, model_body_limit, parse_body};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            field: None,
        }
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(field) = self.field {
            body["field"] = Value::String(field);
        }
        (self.status, Json(body)).into_response()
    }
}

fn protocol_error(e: &edgefleet_protocol::Error) -> ApiError {
    use edgefleet_protocol::Error as E;
    let field = match e {
        E::UnknownFeature { feature }
        | E::MissingFeature { feature }
        | E::WrongFeatureType { feature, .. }
        | E::NonFiniteFeature { feature }
        | E::UnseenCategory { feature, .. } => Some(feature.clone()),
        E::TensorMismatch { tensor, .. } => Some(tensor.clone()),
        _ => None,
    };
    let err = ApiError::new(StatusCode::BAD_REQUEST, e.to_string());
    match field {
        Some(f) => err.field(f),
        None => err,
    }
}

fn infer_error(e: InferError) -> ApiError {
    match e {
        InferError::Request(edgefleet_inference::Error::Protocol(p)) => protocol_error(&p),
        InferError::Request(edgefleet_inference::Error::Input { name, detail }) => {
            ApiError::new(StatusCode::BAD_REQUEST, format!("input {name:?}: {detail}")).field(name)
        }
        InferError::Request(other) => ApiError::new(StatusCode::BAD_REQUEST, other.to_string()),
        InferError::Model(detail) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, detail),
    }
}

/// The local API. `admin_token` guards `POST /v1/admin/install` and `/v1/admin/rollback`
/// ([`crate::admin`]).
pub fn router(agent: Arc<Agent>, admin_token: String) -> Router {
    let admin_token: Arc<str> = admin_token.into();
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name_action}", post(predict))
        .route("/v1/models/{name}/feedback", post(quality::feedback))
        .route("/v1/models/{name}/quality", get(quality::quality))
        .route("/v1/admin/install", {
            let admin_token = admin_token.clone();
            post(move |state, headers, body| install(state, admin_token.clone(), headers, body))
        })
        .route(
            "/v1/admin/rollback",
            post(move |state, headers, body| roll_back(state, admin_token.clone(), headers, body)),
        )
        .route("/metrics", get(metrics))
        .with_state(agent)
}

async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// Ready once the models stored at start are loaded and one of them serves; `loading` names
/// those still loading.
async fn ready(State(agent): State<Arc<Agent>>) -> Response {
    let loading = agent.loading();
    let ready = loading.is_empty() && agent.serving.any_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "loading": loading }))).into_response()
}

fn slot(agent: &Agent, name: &str) -> Result<Arc<Slot>, ApiError> {
    if let Some(slot) = agent.serving.get(name) {
        return Ok(slot);
    }
    let error = if agent.is_loading(name) {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "model {name:?} is still loading after the agent started; \
                 GET /v2/models/{name}/ready says when it serves"
            ),
        )
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no model {name:?} is being served; GET /v1/models lists them"),
        )
    };
    Err(error.field("model"))
}

#[derive(Debug, Serialize)]
struct TensorMeta {
    name: String,
    datatype: &'static str,
    shape: Vec<i64>,
}

async fn model_metadata(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let slot = slot(&agent, &name)?;
    let meta = |specs: &[edgefleet_protocol::interface::TensorSpec]| -> Vec<TensorMeta> {
        specs
            .iter()
            .map(|s| TensorMeta {
                name: s.name.clone(),
                datatype: s.dtype.kserve_name(),
                shape: s.shape.clone(),
            })
            .collect()
    };
    Ok(Json(json!({
        "name": name,
        "versions": [slot.meta.version.to_string()],
        "platform": "onnx",
        "inputs": meta(&slot.meta.interface.inputs),
        "outputs": meta(&slot.meta.interface.outputs),
        "runtime": slot.model.runtime(),
    })))
}

async fn model_ready(State(agent): State<Arc<Agent>>, Path(name): Path<String>) -> Response {
    match slot(&agent, &name) {
        Ok(_) => Json(json!({ "name": name, "ready": true })).into_response(),
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => (
            e.status,
            Json(json!({ "name": name, "ready": false, "loading": true })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("inference task failed: {e}"),
        )
    })
}

async fn infer(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let champion = slot(&agent, &name)?;
    let (limit, source) = model_body_limit(&agent.config.api, &champion.meta);
    let (body, _reserved) =
        limited_body(&agent.body_budget, &headers, body, limit, &source).await?;
    let shadow = agent.shadows.get(&name);
    let mut split_failed = None;
    if let Some(split) = shadow.as_ref().filter(|s| s.splits() && s.draw()) {
        let started = Instant::now();
        match answer::tensors(&agent, &split.slot, &headers, body.clone(), false).await {
            Ok(a) => {
                split.answered(Arm::Challenger, &a.id, a.label(), started.elapsed());
                return Ok(a.response);
            }
            Err(e) => {
                warn!(model = %name, error = %e.error, "the split's challenger failed a request; the champion answers it");
                split_failed = Some(split.clone());
            }
        }
    }
    // A copy for the shadow only when the draw picks this request.
    let copy = shadow.as_ref().is_some_and(|s| !s.splits() && s.draw());
    let started = Instant::now();
    let a = answer::tensors(&agent, &champion, &headers, body, copy).await?;
    if let Some(split) = split_failed {
        split.failed();
    }
    if let Some(shadow) = &shadow {
        if shadow.splits() {
            shadow.answered(Arm::Champion, &a.id, a.label(), started.elapsed());
        } else if let (Some(copy), Some(prediction)) = (a.copy, &a.prediction) {
            shadow.offer(
                &a.id,
                crate::shadow::Request::Tensors(copy),
                crate::shadow::ChampionAnswer::of(prediction),
            );
        }
    }
    Ok(a.response)
}

/// Input elements up to which a quick model's request runs inline (a few dozen rows of a tabular
/// model).
const INLINE_MAX_ELEMENTS: usize = 1024;

/// Runs one inference (inline for a quick model's small request, else in the blocking pool)
/// within `inference.max_parallel`; the slot counts it.
async fn run_counted(
    agent: &Agent,
    slot: &Arc<Slot>,
    inputs: Inputs,
) -> Result<edgefleet_inference::Outputs, ApiError> {
    let served = slot.clone();
    // A request waiting here holds no thread and no scratch state.
    let _permit = agent
        .inference_permits
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping"))?;
    // Inline only when the model is quick *and* the request small: a large batch to a quick
    // model still goes to the blocking pool.
    let elements: usize = inputs.values().map(|t| t.data.len()).sum();
    let result = if served.stats.is_quick() && elements <= INLINE_MAX_ELEMENTS {
        served.infer(&inputs)
    } else {
        run_blocking(move || served.infer(&inputs)).await?
    };
    result.map_err(infer_error)
}

async fn predict(
    State(agent): State<Arc<Agent>>,
    Path(name_action): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    let Some(name) = name_action.strip_suffix(":predict") else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint /v1/models/{name_action}; use /v1/models/NAME:predict"),
        ));
    };
    let champion = slot(&agent, name)?;
    let row: serde_json::Map<String, Value> =
        match parse_body::<Value>(&agent.config.api, &agent.body_budget, &headers, body).await? {
            Value::Object(map) => map,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "the body must be a JSON object of named features",
                )
                .field("body"));
            }
        };
    let shadow = agent.shadows.get(name);
    let mut split_failed = None;
    if let Some(split) = shadow.as_ref().filter(|s| s.splits() && s.draw()) {
        match answer::row(&agent, &split.slot, &row).await {
            Ok(a) => {
                let label = a.prediction.label.as_deref();
                split.answered(Arm::Challenger, &a.id, label, a.took());
                return Ok(Json(a.json(&split.slot)));
            }
            Err(e) => {
                warn!(model = name, error = %e.error, "the split's challenger failed a request; the champion answers it");
                split_failed = Some(split.clone());
            }
        }
    }
    let a = answer::row(&agent, &champion, &row).await?;
    if let Some(split) = split_failed {
        split.failed();
    }
    if let Some(shadow) = &shadow {
        if shadow.splits() {
            let label = a.prediction.label.as_deref();
            shadow.answered(Arm::Champion, &a.id, label, a.took());
        } else if shadow.draw() {
            shadow.offer(
                &a.id,
                crate::shadow::Request::Row(row),
                crate::shadow::ChampionAnswer::of(&a.prediction),
            );
        }
    }
    Ok(Json(a.json(&champion)))
}

async fn list_models(State(agent): State<Arc<Agent>>) -> Result<Json<Value>, ApiError> {
    let store = agent.store.clone();
    let records = tokio::task::spawn_blocking(move || {
        store.model_names().and_then(|names| {
            names
                .iter()
                .map(|n| store.record(n))
                .collect::<Result<Vec<_>, _>>()
        })
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let models: Vec<Value> = records
        .into_iter()
        .flatten()
        .map(|r| {
            let version = |v: &Option<crate::store::StoredVersion>| {
                v.as_ref().map(|v| json!({ "version": v.meta.version.to_string(), "sequence": v.meta.sequence, "sha256": v.sha256, "target": v.target }))
            };
            let serving = agent.serving.get(&r.model);
            let state = crate::lifecycle::reported_state(
                r.install.as_ref().map(|(_, state)| *state),
                r.last_outcome,
            );
            json!({
                "name": r.model,
                "active": version(&r.active),
                "previous": version(&r.previous),
                "installing": r.install.as_ref().map(|(v, _)| v.meta.version.to_string()),
                "state": state,
                "floor": r.floor,
                "last_error": r.last_error,
                "serving": serving.as_ref().map(|s| s.meta.version.to_string()),
                "loading": agent.is_loading(&r.model),
                "runtime": serving.as_ref().map(|s| s.model.runtime()),
                "runtime_trials": serving.as_ref().map(|s| trials_json(&s.trials)),
                "runtime_trials_cached": serving.as_ref().map(|s| s.trials_cached),
                "shadow": agent.shadows.get(&r.model).map(|s| json!({
                    "target": s.slot.target,
                    "version": s.slot.meta.version.to_string(),
                    "mode": if s.splits() { "split" } else { "shadow" },
                    "share": s.plan.share(),
                })),
                "refused": agent.refused(&r.model).map(|refused| json!({
                    "target": refused.target,
                    "reason": refused.reason,
                    "runtime_trials": trials_json(&refused.trials),
                })),
            })
        })
        .collect();
    Ok(Json(json!({
        "models": models,
        "runtimes": {
            "available": agent.engine.available(),
            "unavailable": agent.engine.unavailable.iter().map(|(name, why)| json!({"runtime": name, "reason": why})).collect::<Vec<_>>(),
        },
    })))
}

/// How each back-end fared when the serving one was chosen.
fn trials_json(trials: &[Trial]) -> Vec<Value> {
    trials
        .iter()
        .map(|t| {
            let (outcome, p50, p99, reason) = match &t.outcome {
                TrialOutcome::Passed { p50_ms, p99_ms } => {
                    ("passed", Some(*p50_ms), Some(*p99_ms), None)
                }
                TrialOutcome::Failed(why) => ("failed", None, None, Some(why.as_str())),
                TrialOutcome::Unmeasured => ("unmeasured", None, None, None),
            };
            json!({
                "runtime": t.runtime,
                "outcome": outcome,
                "load_ms": t.load_ms,
                "p50_ms": p50,
                "p99_ms": p99,
                "reason": reason,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallRequest {
    repository: std::path::PathBuf,
    #[serde(default)]
    targets: Vec<String>,
}

/// The admin token and a JSON body, or the status that says which is missing.
fn admitted(
    agent: &Agent,
    admin_token: &str,
    headers: &axum::http::HeaderMap,
) -> Result<(), ApiError> {
    let token_file = crate::admin::token_path(&agent.config.data_dir);
    crate::admin::check_headers(headers, admin_token, &token_file).map_err(|e| {
        let status = match e {
            crate::admin::Refused::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            crate::admin::Refused::NoToken { .. } => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, e.to_string())
    })
}

fn install_failed(e: &InstallError) -> ApiError {
    let status = match e {
        InstallError::Rejected { .. }
        | InstallError::Verify(_)
        | InstallError::TooLarge { .. }
        | InstallError::NoPrevious { .. }
        | InstallError::Repository { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        InstallError::Store(crate::store::StoreError::Busy { .. }) => StatusCode::CONFLICT,
        InstallError::Store(crate::store::StoreError::DiskFull { .. }) => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RollBackRequest {
    model: String,
}

/// `POST /v1/admin/rollback`: the previous version back from the copy on disk.
async fn roll_back(
    State(agent): State<Arc<Agent>>,
    admin_token: Arc<str>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    admitted(&agent, &admin_token, &headers)?;
    let request: RollBackRequest =
        parse_body(&agent.config.api, &agent.body_budget, &headers, body).await?;
    match agent.roll_back(&request.model).await {
        Ok(report) => Ok(Json(json!({ "installed": [report] }))),
        Err(e) => Err(install_failed(&e)),
    }
}

async fn install(
    State(agent): State<Arc<Agent>>,
    admin_token: Arc<str>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    admitted(&agent, &admin_token, &headers)?;
    let request: InstallRequest =
        parse_body(&agent.config.api, &agent.body_budget, &headers, body).await?;
    let repository =
        crate::admin::check_repository(&request.repository, &agent.config.api.install_from)
            .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e.to_string()).field("repository"))?;
    match agent
        .install_from_repository(&repository, &request.targets)
        .await
    {
        Ok(reports) => Ok(Json(json!({ "installed": reports }))),
        Err(e) => Err(install_failed(&e)),
    }
}

async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        agent.metrics.encode(),
    )
        .into_response()
}
