//! Ground truth at the server: `POST /api/v1/feedback` takes labels for devices' predictions
//! (JSON or CSV, late and in any order) and queues them per device; each device fetches its own
//! with `GET /api/v1/device/labels` and joins them to its prediction log (labels join on the
//! device: docs/ARCHITECTURE.md, decision 62).

use super::handlers::QueryParams;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use edgefleet_protocol::feedback::{
    FeedbackAccepted, QueuedLabel, QueuedLabels, Truth, parse_upload,
};
use serde::Deserialize;

use super::audit::AuditNote;
use super::handlers::ApiResult;
use super::{ApiError, AppState, Principal};

/// The largest upload: 100,000 labels of the longest device name, model, id and label fit
/// (axum's default of 2 MB would refuse an upload of 40,000 short ones).
pub const MAX_UPLOAD_BYTES: usize = 48 * 1024 * 1024;

/// Labels a device gets per fetch at most.
pub const LABELS_PER_FETCH: u32 = 1000;

pub async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv"));
    let labels =
        parse_upload(&body, csv).map_err(|e| ApiError::bad_field("body", e.to_string()))?;
    let mut known = std::collections::BTreeMap::new();
    let mut accepted = FeedbackAccepted::default();
    let mut rows = Vec::with_capacity(labels.len());
    for label in labels {
        let exists = match known.get(&label.device) {
            Some(exists) => *exists,
            None => {
                let exists = state.store.device(&label.device).await?.is_some();
                known.insert(label.device.clone(), exists);
                exists
            }
        };
        if !exists {
            accepted.unknown_device += 1;
            continue;
        }
        let truth = label
            .truth()
            .map_err(|e| ApiError::bad_field("body", format!("{}: {e}", label.id)))?;
        let body = serde_json::json!({ "id": label.id, "truth": truth }).to_string();
        rows.push((label.device.to_string(), label.model.to_string(), body));
    }
    accepted.unknown_devices = known
        .iter()
        .filter(|(_, exists)| !**exists)
        .map(|(d, _)| d.to_string())
        .collect();
    accepted.accepted = state.store.add_labels(&rows, state.clock.unix()).await?;
    let note = AuditNote::on("feedback").after(serde_json::json!({
        "accepted": accepted.accepted,
        "unknown_device": accepted.unknown_device,
    }));
    Ok(note.to(axum::Json(accepted).into_response()))
}

#[derive(Debug, Deserialize)]
pub struct FetchQuery {
    /// The last sequence number the device joined: those up to it are dropped.
    #[serde(default)]
    after: u64,
    /// For an operator: whose queue to look at (nothing is acknowledged).
    device: Option<String>,
}

/// `GET /api/v1/device/labels?after=N`: the calling device's labels after `N`, oldest first;
/// asking for what follows `N` acknowledges everything up to it (so it is dropped), the way a
/// consumer commits its offset. An operator may look at a device's queue with `?device=ID`
/// without acknowledging anything.
pub async fn fetch(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    QueryParams(q): QueryParams<FetchQuery>,
) -> ApiResult {
    let device = match (p, q.device) {
        (Principal::Device(device), _) => {
            if q.after > 0 {
                state.store.ack_labels(&device, q.after).await?;
            }
            device
        }
        (_, Some(device)) => edgefleet_protocol::DeviceId::new(device)
            .map_err(|e| ApiError::bad_field("device", e.to_string()))?,
        (_, None) => {
            return Err(ApiError::bad_field(
                "device",
                "name the device whose queued labels to show: ?device=ID (a device fetches its own with its credential)",
            ));
        }
    };
    let rows = state
        .store
        .labels_for(&device, q.after, LABELS_PER_FETCH)
        .await?;
    let more = rows.len() == LABELS_PER_FETCH as usize;
    let mut labels = Vec::with_capacity(rows.len());
    for (seq, model, body) in rows {
        #[derive(Deserialize)]
        struct Stored {
            id: String,
            truth: Truth,
        }
        let (Ok(model), Ok(stored)) = (
            edgefleet_protocol::ModelName::new(model),
            serde_json::from_str::<Stored>(&body),
        ) else {
            tracing::warn!(%device, seq, "a queued label cannot be read; skipped");
            continue;
        };
        let (label, value) = match stored.truth {
            Truth::Label { label } => (Some(label), None),
            Truth::Value { value } => (None, Some(value)),
        };
        labels.push(QueuedLabel {
            seq,
            model,
            id: stored.id,
            label,
            value,
        });
    }
    Ok((StatusCode::OK, axum::Json(QueuedLabels { labels, more })).into_response())
}
