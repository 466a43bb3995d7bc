//! The audit log's HTTP side: what the authorization layer records for every mutating call, the
//! notes handlers add to it, and `GET /api/v1/audit` with its chain check.

use super::handlers::QueryParams;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::handlers::{ApiResult, json_response};
use super::{AppState, Principal};
use crate::audit::{AuditEntry, AuditFilter, AuditRecord, ChainCheck};

/// What a handler says about a call it served, for its audit entry: what it acted on and, where
/// it knows them, the state before and after.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub subject: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// Who acted, when the caller had no token (a device enrolling).
    pub actor: Option<String>,
}

impl AuditNote {
    pub fn on(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            ..Self::default()
        }
    }

    pub fn before(mut self, before: impl serde::Serialize) -> Self {
        self.before = serde_json::to_value(before).ok();
        self
    }

    pub fn after(mut self, after: impl serde::Serialize) -> Self {
        self.after = serde_json::to_value(after).ok();
        self
    }

    /// Attaches the note to `response`.
    pub fn to(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// The header a request id travels in, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The caller's request id when it is a sane one (up to 64 letters, digits, `.`, `_`, `-`),
/// else a new random one.
pub fn request_id(headers: &HeaderMap) -> String {
    let given = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    match given {
        Some(id) => id.to_owned(),
        None => {
            let mut random = [0u8; 8];
            let _ = aws_lc_rs::rand::fill(&mut random);
            hex::encode(random)
        }
    }
}

/// What the authorization layer knows of a call once it has been answered.
pub struct Call<'a> {
    pub principal: Option<&'a Principal>,
    pub method: &'a Method,
    pub route: &'static str,
    pub path: String,
    pub request_id: String,
}

/// Appends the audit entry of a mutating call: every call by an operator (refusals too), and a
/// call without a token only when its handler names who acted (an enrollment that succeeded:
/// anyone may try one, and failed tries would only fill the log).
pub async fn record(state: &AppState, call: Call<'_>, response: &mut Response) {
    if matches!(*call.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return;
    }
    let note = response.extensions_mut().remove::<AuditNote>();
    let (actor, role) = match (call.principal, &note) {
        (Some(Principal::Operator { name, role }), _) => {
            (name.clone(), Some(role.as_str().to_owned()))
        }
        (Some(Principal::Device(id)), _) => (format!("device:{id}"), None),
        (
            _,
            Some(AuditNote {
                actor: Some(actor), ..
            }),
        ) => (actor.clone(), None),
        _ => return,
    };
    let note = note.unwrap_or_default();
    let record = AuditRecord {
        at: state.clock.unix(),
        actor,
        role,
        method: call.method.to_string(),
        route: call.route.to_owned(),
        path: call.path,
        status: response.status().as_u16(),
        request_id: call.request_id,
        subject: (!note.subject.is_empty()).then_some(note.subject),
        before: note.before,
        after: note.after,
    };
    if let Err(e) = state.store.append_audit(record.clone()).await {
        // The call has taken effect; the log says so loudly rather than failing it late.
        tracing::error!(error = %e, actor = %record.actor, route = %record.route, status = record.status, request_id = %record.request_id, "cannot append to the audit log");
        state.metrics.audit_failures.inc();
    }
}

/// Sets the request id on the answer, so a caller can quote it.
pub fn stamp(response: &mut Response, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
}

/// `GET /api/v1/audit`: entries newest first, filtered by `actor`, `route`, `since`, paged with
/// `before` and `limit`.
pub async fn list(
    State(state): State<AppState>,
    QueryParams(filter): QueryParams<AuditFilter>,
) -> ApiResult {
    let entries: Vec<AuditEntry> = state.store.audit(&filter).await?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({ "entries": entries }),
    ))
}

/// `GET /api/v1/audit/verify`: walks the whole chain.
pub async fn verify(State(state): State<AppState>) -> ApiResult {
    let chain = state.store.audit_chain().await?;
    let check: ChainCheck = crate::audit::verify(&chain);
    Ok(json_response(StatusCode::OK, check))
}
