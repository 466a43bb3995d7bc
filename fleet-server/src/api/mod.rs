//! The HTTP side: operator API (`/api/v1`), device enrollment, the TUF repository devices update
//! from (`/tuf`), health, metrics and the OpenAPI document.
//!
//! Every route is declared once in [`routes`] with its method, path, who may call it and its
//! documentation. The router, the authorization in front of each handler and `/openapi.json` are
//! all built from that one table, so the document cannot drift from the routes and no route can
//! exist without an access rule.

mod alerts;
mod audit;
mod dashboard;
mod devices;
mod errors;
mod feedback;
mod guard_policies;
pub mod handlers;
mod openapi;
mod registry;
mod repository;
mod rollouts;
mod rotation;
mod samples;
mod telemetry;

use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use edgefleet_protocol::DeviceId;
use serde_json::Value;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate};

pub use errors::ApiError;
pub(crate) use registry::refresh_known_versions;

use crate::auth::{Role, SecretKind, secret_hash};
use crate::metrics::RequestLabels;

pub use crate::state::{AppState, Shared};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, metrics, the API document, enrollment with its one-time token).
    Public,
    /// An enrolled device's credential, or any operator token.
    Device,
    /// An operator token of at least this role.
    Role(Role),
}

/// The caller, as the authorization layer established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    Operator { name: String, role: Role },
    Device(DeviceId),
}

impl Principal {
    pub fn name(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::Operator { name, .. } => name.clone(),
            Principal::Device(id) => format!("device:{id}"),
        }
    }
}

/// One route: everything the router, the authorization layer and the OpenAPI document need.
pub struct Route {
    pub method: Method,
    /// axum path syntax (`{id}`, `{*path}`).
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// JSON schema of the request body, if it takes JSON.
    pub body: Option<Value>,
    /// What a successful call answers, where the body has a shared type.
    pub reply: Option<Reply>,
    pub handler: MethodRouter<AppState>,
}

/// A successful response's status and the schema of its body, with every schema it refers to.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// The component the response refers to.
    pub name: String,
    /// Components by name: the body's own and those it refers to.
    pub schemas: Vec<(String, Value)>,
}

impl Route {
    /// Documents what the route answers with `status`: a body of type `T`, the type its handler
    /// encodes, so the document follows the code.
    fn replies<T: utoipa::ToSchema>(mut self, status: StatusCode) -> Self {
        let mut schemas = Vec::new();
        T::schemas(&mut schemas);
        let mut schemas: Vec<(String, Value)> = schemas
            .into_iter()
            .filter_map(|(name, schema)| Some((name, serde_json::to_value(schema).ok()?)))
            .collect();
        let name = T::name().into_owned();
        if let Ok(own) = serde_json::to_value(T::schema()) {
            schemas.push((name.clone(), own));
        }
        self.reply = Some(Reply {
            status,
            name,
            schemas,
        });
        self
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

fn route(
    method: Method,
    path: &'static str,
    access: Access,
    summary: &'static str,
    body: Option<Value>,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        access,
        summary,
        body,
        reply: None,
        handler,
    }
}

/// The JSON schema of a request body, derived from the type its handler decodes it into: the
/// document cannot say one thing while the server accepts another.
fn body<T: utoipa::PartialSchema>() -> Option<Value> {
    serde_json::to_value(T::schema()).ok()
}

/// Every route of the server.
pub fn routes() -> Vec<Route> {
    use crate::rollout::{RolloutList, RolloutView};
    use Access::{Device, Public, Role as R};
    use Role::{Admin, Operator, Viewer};
    use edgefleet_protocol::api;
    use {devices as d, handlers as h, registry as reg, repository as repo};
    vec![
        route(
            Method::GET,
            "/",
            Public,
            "The rollout dashboard (sign in with an operator token)",
            None,
            get(dashboard::index),
        ),
        route(
            Method::GET,
            "/dashboard/app.js",
            Public,
            "The dashboard's script",
            None,
            get(dashboard::script),
        ),
        route(
            Method::GET,
            "/dashboard/health.js",
            Public,
            "The dashboard's alerts, model-health and device views",
            None,
            get(dashboard::health_script),
        ),
        route(
            Method::GET,
            "/dashboard/app.css",
            Public,
            "The dashboard's style",
            None,
            get(dashboard::style),
        ),
        route(
            Method::GET,
            "/healthz",
            Public,
            "Liveness: the process answers",
            None,
            get(h::healthz),
        ),
        route(
            Method::GET,
            "/readyz",
            Public,
            "Readiness: database and MQTT broker reachable",
            None,
            get(h::readyz),
        ),
        route(
            Method::GET,
            "/metrics",
            Public,
            "Prometheus metrics (OpenMetrics text)",
            None,
            get(h::metrics),
        ),
        route(
            Method::GET,
            "/openapi.json",
            Public,
            "This document",
            None,
            get(h::openapi),
        ),
        route(
            Method::POST,
            "/api/v1/enroll",
            Public,
            "A device trades its one-time enrollment token for its own credential",
            body::<edgefleet_protocol::api::EnrollRequest>(),
            post(d::enroll),
        )
        .replies::<api::EnrollResponse>(StatusCode::OK),
        route(
            Method::GET,
            "/api/v1/audit",
            R(Admin),
            "The audit log, newest first: ?actor=, ?route=, ?since= (Unix seconds), ?before= (sequence number), ?limit= (default 100)",
            None,
            get(audit::list),
        ),
        route(
            Method::GET,
            "/api/v1/audit/verify",
            R(Admin),
            "Walks the audit log's hash chain: entries, the head's hash, and the first entry that breaks it",
            None,
            get(audit::verify),
        )
        .replies::<crate::audit::ChainCheck>(StatusCode::OK),
        route(
            Method::GET,
            "/api/v1/alerts",
            R(Viewer),
            "The server's own alerts (guard breaches), newest change first: open ones, or ?state=firing|acknowledged|resolved, ?all=true, ?limit= (default 100)",
            None,
            get(alerts::list),
        )
        .replies::<alerts::AlertList>(StatusCode::OK),
        route(
            Method::GET,
            "/api/v1/alerts/{id}",
            R(Viewer),
            "One alert: its evidence, what the server did, deliveries to webhooks",
            None,
            get(alerts::show),
        )
        .replies::<crate::alerts::Alert>(StatusCode::OK),
        route(
            Method::POST,
            "/api/v1/alerts/{id}/ack",
            R(Operator),
            "Acknowledge an alert (someone is on it), with an optional note; it stays open",
            body::<alerts::AckRequest>(),
            post(alerts::acknowledge),
        )
        .replies::<crate::alerts::Alert>(StatusCode::OK),
        route(
            Method::POST,
            "/api/v1/alerts/{id}/resolve",
            R(Operator),
            "Resolve an alert; webhooks receive it as resolved, and a later breach opens a new one",
            None,
            post(alerts::resolve),
        )
        .replies::<crate::alerts::Alert>(StatusCode::OK),
        route(
            Method::GET,
            "/api/v1/guard-policies",
            R(Viewer),
            "Guard policies operators set per group and model, which the server judges that group's telemetry by in place of the releases' signed ones",
            None,
            get(guard_policies::list),
        )
        .replies::<guard_policies::GroupGuardList>(StatusCode::OK),
        route(
            Method::PUT,
            "/api/v1/groups/{group}/guard/{model}",
            R(Operator),
            "Set the group's guard policy for the model (checked like a release's, against the model's newest signed release); devices keep to their releases' signed policies",
            body::<edgefleet_protocol::guard::GuardPolicy>(),
            put(guard_policies::set),
        )
        .replies::<crate::guard_policies::GroupGuard>(StatusCode::OK),
        route(
            Method::DELETE,
            "/api/v1/groups/{group}/guard/{model}",
            R(Operator),
            "Remove the group's guard policy for the model: the releases' signed ones apply again",
            None,
            delete(guard_policies::clear),
        ),
        route(
            Method::POST,
            "/api/v1/feedback",
            R(Operator),
            "Ground truth for devices' predictions, late and in any order: JSON {\"labels\": [{device, model, id, label | value}]} or CSV (Content-Type: text/csv; header device,model,id,label or device,model,id,value), at most 100,000; queued for each device to join",
            body::<edgefleet_protocol::feedback::FeedbackUpload>(),
            post(feedback::upload).layer(axum::extract::DefaultBodyLimit::max(
                feedback::MAX_UPLOAD_BYTES,
            )),
        )
        .replies::<edgefleet_protocol::feedback::FeedbackAccepted>(StatusCode::OK),
        route(
            Method::GET,
            "/api/v1/device/labels",
            Device,
            "The calling device's queued labels after ?after= (a sequence number), oldest first, at most 1,000; asking for those after N drops those up to N. An operator looks at a device's queue with ?device=ID (nothing dropped)",
            None,
            get(feedback::fetch),
        )
        .replies::<edgefleet_protocol::feedback::QueuedLabels>(StatusCode::OK),
        route(
            Method::GET,
            "/api/v1/samples",
            R(Viewer),
            "The sampled prediction log devices sent (as each release's signed sampling policy allows), newest first: ?model=, ?version=, ?device=, ?review=open|labelled|dismissed (the review queue), ?limit= (default 100, at most 1,000)",
            None,
            get(samples::list),
        )
        .replies::<samples::SampleList>(StatusCode::OK),
        route(
            Method::POST,
            "/api/v1/review/{device}/{model}/{id}",
            R(Operator),
            "Close a review item: {\"label\": ...} or {\"value\": ...} (queued for the device, which joins it like any label) or {\"dismiss\": true}",
            body::<samples::ReviewVerdict>(),
            post(samples::close),
        )
        .replies::<crate::samples::StoredSample>(StatusCode::OK),
        route(
            Method::GET,
            "/api/v1/whoami",
            Device,
            "The caller's identity and role",
            None,
            get(h::whoami),
        ),
        route(
            Method::GET,
            "/api/v1/tokens",
            R(Admin),
            "Operator tokens (never their secrets)",
            None,
            get(h::list_tokens),
        ),
        route(
            Method::POST,
            "/api/v1/tokens",
            R(Admin),
            "Create an operator token; its secret is shown once",
            body::<h::CreateToken>(),
            post(h::create_token),
        ),
        route(
            Method::DELETE,
            "/api/v1/tokens/{id}",
            R(Admin),
            "Revoke an operator token",
            None,
            delete(h::revoke_token),
        ),
        route(
            Method::GET,
            "/api/v1/devices",
            R(Viewer),
            "Devices in id order; filter with ?group=, ?tag=key[=value], ?online=true|false and ?q=text; page with ?limit= (1 to 1000) and ?after= (the previous page's next_after)",
            None,
            get(d::list_devices),
        )
        .replies::<api::DeviceList>(StatusCode::OK),
        route(
            Method::POST,
            "/api/v1/devices",
            R(Operator),
            "Register a device and get its one-time enrollment token",
            body::<edgefleet_protocol::api::AddDeviceRequest>(),
            post(d::add_device),
        )
        .replies::<api::DeviceEnrollment>(StatusCode::CREATED),
        route(
            Method::GET,
            "/api/v1/devices/{id}",
            R(Viewer),
            "One device: desired and reported state, recent events",
            None,
            get(d::show_device),
        )
        .replies::<api::DeviceDetail>(StatusCode::OK),
        route(
            Method::PATCH,
            "/api/v1/devices/{id}",
            R(Operator),
            "Change a device's group or tags",
            body::<edgefleet_protocol::api::UpdateDeviceRequest>(),
            patch(d::update_device),
        )
        .replies::<api::DeviceDetail>(StatusCode::OK),
        route(
            Method::DELETE,
            "/api/v1/devices/{id}",
            R(Operator),
            "Remove a device and revoke its credential",
            None,
            delete(d::remove_device),
        ),
        route(
            Method::PUT,
            "/api/v1/devices/{id}/desired",
            R(Operator),
            "Set the model versions a device should run (published retained over MQTT)",
            body::<edgefleet_protocol::api::DesiredRequest>(),
            put(d::set_desired),
        ),
        route(
            Method::GET,
            "/api/v1/groups",
            R(Viewer),
            "Device groups and their sizes",
            None,
            get(d::groups),
        )
        .replies::<api::GroupList>(StatusCode::OK),
        route(
            Method::GET,
            "/api/v1/events",
            R(Viewer),
            "Recent device events, newest first (?device=, ?limit=)",
            None,
            get(d::events),
        )
        .replies::<api::EventList>(StatusCode::OK),
        route(
            Method::GET,
            "/api/v1/stream",
            R(Viewer),
            "Server-sent events: device events, rollout changes (state and wave counts), and status changes of the devices named in ?devices=a,b (at most 500: the page in view)",
            None,
            get(telemetry::stream),
        ),
        route(
            Method::GET,
            "/api/v1/telemetry",
            R(Viewer),
            "Model figures per version from device telemetry (?model=, ?group=, ?since_seconds=, ?step_seconds=)",
            None,
            get(telemetry::fleet),
        ),
        route(
            Method::GET,
            "/api/v1/devices/{id}/metrics",
            R(Viewer),
            "One device's telemetry batches as stored, in arrival order (?since_seconds=, default a day)",
            None,
            get(telemetry::device),
        ),
        route(
            Method::GET,
            "/api/v1/models",
            R(Viewer),
            "The model registry: every signed version, its stage and who pushed it",
            None,
            get(reg::models),
        ),
        route(
            Method::POST,
            "/api/v1/models/{model}/versions/{version}/stage",
            R(Operator),
            "Move a version to staging, production or archived",
            body::<reg::StageRequest>(),
            post(reg::set_stage),
        ),
        route(
            Method::GET,
            "/api/v1/models/{model}/versions/{version}",
            R(Viewer),
            "One signed version: stage, signed lineage and the model card",
            None,
            get(reg::model_version),
        ),
        route(
            Method::POST,
            "/api/v1/bundles",
            R(Operator),
            "An offline bundle's metadata for one signed version, valid for the days asked",
            body::<api::BundleRequest>(),
            post(reg::create_bundle),
        )
        .replies::<api::BundleMetadata>(StatusCode::OK),
        route(
            Method::GET,
            "/api/v1/artifacts/{sha256}",
            R(Viewer),
            "Whether an artifact is stored, and its length",
            None,
            get(reg::artifact_info),
        ),
        route(
            Method::PUT,
            "/api/v1/artifacts/{sha256}",
            R(Operator),
            "Upload an artifact (raw body) under its sha256; stored only if the bytes match",
            None,
            put(reg::upload_artifact),
        ),
        route(
            Method::POST,
            "/api/v1/tuf/init",
            R(Admin),
            "Create the TUF repository from operator-signed root.json and targets.json",
            body::<repo::TufInit>(),
            post(repo::tuf_init),
        ),
        route(
            Method::GET,
            "/api/v1/tuf/online-keys",
            R(Viewer),
            "Public keys of the server's online snapshot and timestamp roles, for building root.json",
            None,
            get(repo::tuf_online_keys),
        ),
        route(
            Method::GET,
            "/api/v1/tuf/targets",
            R(Viewer),
            "The current signed targets.json, byte for byte",
            None,
            get(repo::tuf_current_targets),
        ),
        route(
            Method::POST,
            "/api/v1/tuf/targets",
            R(Operator),
            "Publish operator-signed targets.json (raw body); snapshot and timestamp are re-signed",
            None,
            post(repo::tuf_accept_targets),
        ),
        route(
            Method::GET,
            "/api/v1/tuf/delegated/{role}",
            R(Viewer),
            "The current version of a model's delegated targets role (model-<model>), byte for byte",
            None,
            get(repo::tuf_current_delegated),
        ),
        route(
            Method::POST,
            "/api/v1/tuf/delegated/{role}",
            R(Operator),
            "Publish the next version of a delegated targets role, signed by the keys the top-level targets give it (raw body)",
            None,
            post(repo::tuf_accept_delegated),
        ),
        route(
            Method::POST,
            "/api/v1/tuf/delegation",
            R(Operator),
            "Publish top-level targets that delegate a model together with that model's role, in one step",
            body::<repo::TufDelegation>(),
            post(repo::tuf_accept_delegation),
        ),
        route(
            Method::POST,
            "/api/v1/tuf/root",
            R(Admin),
            "Publish a new operator-signed root.json (raw body): a key rotation",
            None,
            post(repo::tuf_accept_root),
        ),
        route(
            Method::POST,
            "/api/v1/tuf/online-keys/{role}/next",
            R(Admin),
            "Make (or show the waiting) next key of an online role (snapshot or timestamp), for a root that rotates to it",
            None,
            post(rotation::next_online_key),
        ),
        route(
            Method::POST,
            "/api/v1/tuf/rotation",
            R(Admin),
            "Publish a rotated root.json with, when its targets keys changed, the current targets re-signed by them; a root listing an online role's next key makes it current",
            body::<rotation::Rotation>(),
            post(rotation::rotate),
        ),
        route(
            Method::GET,
            "/api/v1/rollouts",
            R(Viewer),
            "Rollouts, newest first, with each wave's counts and no device list (?active=true for running ones, ?limit= (default 100, at most 1,000))",
            None,
            get(rollouts::list),
        )
        .replies::<RolloutList>(StatusCode::OK),
        route(
            Method::POST,
            "/api/v1/rollouts",
            R(Operator),
            "Start a staged rollout of a signed model version",
            body::<crate::rollout::RolloutRequest>(),
            post(rollouts::create),
        )
        .replies::<RolloutView>(StatusCode::CREATED),
        route(
            Method::GET,
            "/api/v1/rollouts/{id}",
            R(Viewer),
            "One rollout: state, per-wave progress, history and a page of its devices: ?devices_limit= (default 1,000, at most 10,000), ?devices_from= (the previous page's devices_next), ?problems=true (only devices with a failure's or rollback's reason)",
            None,
            get(rollouts::show),
        )
        .replies::<RolloutView>(StatusCode::OK),
        route(
            Method::GET,
            "/api/v1/rollouts/{id}/telemetry",
            R(Viewer),
            "The new version against the previous one on the rollout's devices, as its model gates judge them",
            None,
            get(telemetry::rollout),
        ),
        route(
            Method::POST,
            "/api/v1/rollouts/{id}/pause",
            R(Operator),
            "Stop notifying devices",
            None,
            post(rollouts::pause),
        )
        .replies::<RolloutView>(StatusCode::OK),
        route(
            Method::POST,
            "/api/v1/rollouts/{id}/resume",
            R(Operator),
            "Resume a paused rollout",
            None,
            post(rollouts::resume),
        )
        .replies::<RolloutView>(StatusCode::OK),
        route(
            Method::POST,
            "/api/v1/rollouts/{id}/approve",
            R(Operator),
            "Start the next wave of a rollout awaiting approval",
            None,
            post(rollouts::approve),
        )
        .replies::<RolloutView>(StatusCode::OK),
        route(
            Method::POST,
            "/api/v1/rollouts/{id}/abort",
            R(Operator),
            "End a rollout; devices keep what they run",
            None,
            post(rollouts::abort),
        )
        .replies::<RolloutView>(StatusCode::OK),
        route(
            Method::POST,
            "/api/v1/rollouts/{id}/retry-failed",
            R(Operator),
            "Send the version again to failed devices and resume a halted rollout",
            None,
            post(rollouts::retry_failed),
        )
        .replies::<RolloutView>(StatusCode::OK),
        route(
            Method::GET,
            "/tuf/metadata/{file}",
            Device,
            "TUF metadata for devices",
            None,
            get(repo::tuf_metadata),
        ),
        route(
            Method::GET,
            "/tuf/targets/{*path}",
            Device,
            "A model artifact; Range, ETag and If-None-Match supported; a device only gets targets assigned to it",
            None,
            get(repo::tuf_target),
        ),
    ]
}

/// The server's router, every route behind its authorization and request metrics.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        let layer = middleware::from_fn_with_state(
            (state.clone(), r.access, r.path, r.method.clone()),
            authorize,
        );
        router = router.route(r.path, r.handler.layer(layer));
    }
    // JSON (TUF metadata above all: a device refreshes it before every update) shrinks about
    // fourfold with gzip. Artifacts are left alone: model weights barely compress, and ranges
    // must count the bytes as stored.
    let compression = CompressionLayer::new().gzip(true).compress_when(
        DefaultPredicate::new().and(NotForContentType::const_new("application/octet-stream")),
    );
    router
        .fallback(|| async {
            ApiError::not_found("no such route; GET /openapi.json lists them").into_response()
        })
        .layer(compression)
        .with_state(state)
}

type AuthState = (AppState, Access, &'static str, Method);

async fn authorize(
    State((state, access, path, method)): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = audit::request_id(request.headers());
    let called = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map(str::to_owned))
        // A scrape token is not an Edgefleet token: `/metrics` checks it itself.
        .filter(|_| !(path == "/metrics" && state.metrics_token.is_some()));
    let (principal, mut response) = match principal(&state, authorization).await {
        Err(e) => (None, e.into_response()),
        Ok(principal) => match permitted(access, &principal) {
            Err(e) => (Some(principal), e.into_response()),
            Ok(()) => {
                request.extensions_mut().insert(principal.clone());
                (Some(principal), next.run(request).await)
            }
        },
    };
    let call = audit::Call {
        principal: principal.as_ref(),
        method: &method,
        route: path,
        path: called,
        request_id: request_id.clone(),
    };
    audit::record(&state, call, &mut response).await;
    audit::stamp(&mut response, &request_id);
    let labels = RequestLabels {
        method: method.to_string(),
        route: path.to_owned(),
        status: response.status().as_u16(),
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state
        .metrics
        .http_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `authorization` is the header's value, `Err` when it is not visible ASCII.
async fn principal<E>(
    state: &Shared,
    authorization: Option<Result<String, E>>,
) -> Result<Principal, ApiError> {
    let Some(value) = authorization else {
        return Ok(Principal::Anonymous);
    };
    let token = value
        .ok()
        .as_deref()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
        })?;
    let token = token.as_str();
    let hash = secret_hash(token);
    match SecretKind::of(token) {
        Some(SecretKind::Operator) => match state.store.operator_by_hash(&hash).await? {
            Some(t) => Ok(Principal::Operator {
                name: t.name,
                role: t.role,
            }),
            None => Err(ApiError::unauthorized(
                "unknown or revoked operator token; ask an admin for a new one",
            )),
        },
        Some(SecretKind::Device) => match state.store.device_by_credential(&hash).await? {
            Some(id) => Ok(Principal::Device(id)),
            None => Err(ApiError::unauthorized(
                "unknown device credential (was the device removed?); enroll it again",
            )),
        },
        Some(SecretKind::Enrollment) => Err(ApiError::unauthorized(
            "an enrollment token only works at POST /api/v1/enroll",
        )),
        None => Err(ApiError::unauthorized("not an Edgefleet token")),
    }
}

fn permitted(access: Access, principal: &Principal) -> Result<(), ApiError> {
    match (access, principal) {
        (Access::Public, _) => Ok(()),
        (_, Principal::Anonymous) => Err(ApiError::unauthorized(
            "this endpoint needs a token: `Authorization: Bearer <token>` (fleetctl login)",
        )),
        (Access::Device, _) => Ok(()),
        (Access::Role(_), Principal::Device(_)) => Err(ApiError::forbidden(
            "device credentials cannot use the operator API",
        )),
        (Access::Role(needed), Principal::Operator { role, .. }) => {
            if *role >= needed {
                Ok(())
            } else {
                Err(ApiError::forbidden(format!(
                    "this needs the {} role; your token has {}",
                    needed.as_str(),
                    role.as_str()
                )))
            }
        }
    }
}

pub(crate) fn json_content_type() -> HeaderValue {
    HeaderValue::from_static("application/json")
}

#[cfg(test)]
mod tests;
