//! The sampled prediction log and the review queue: `GET /api/v1/samples` lists what devices
//! sent (`crate::samples`); `POST /api/v1/review/{device}/{model}/{id}` closes a review item with
//! a label, which is queued for the device like an uploaded one, or dismisses it.

use super::handlers::QueryParams;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use edgefleet_protocol::feedback::{DeviceTruth, Truth};
use edgefleet_protocol::interface::PredictionSpec;
use serde::Deserialize;

use super::audit::AuditNote;
use super::handlers::{ApiResult, parse_json};
use super::{ApiError, AppState, Principal};
use crate::samples::{Review, ReviewState, SampleFilter, StoredSample};

/// Samples one listing returns at most.
pub const MAX_LIST: u32 = 1000;

/// `?model=`, `?version=`, `?device=`, `?review=open|labelled|dismissed`, `?limit=` (default 100).
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    model: Option<String>,
    version: Option<String>,
    device: Option<String>,
    review: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SampleList {
    pub samples: Vec<StoredSample>,
}

pub async fn list(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    let review = match q.review.as_deref() {
        None => None,
        Some(s) => Some(ReviewState::parse(s).ok_or_else(|| {
            ApiError::bad_field(
                "review",
                format!("review {s:?} is not one of open, labelled, dismissed"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::bad_field(
            "limit",
            format!("limit {limit} is outside 1..={MAX_LIST}"),
        ));
    }
    let filter = SampleFilter {
        model: q.model,
        version: q.version,
        device: q.device,
        review,
        limit,
    };
    let samples = state.store.samples(&filter).await?;
    Ok(axum::Json(SampleList { samples }).into_response())
}

/// A reviewer's verdict: exactly one of a label (classifiers), a value (regressors), or
/// `"dismiss": true` (looked at, no label).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewVerdict {
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub dismiss: bool,
}

pub async fn close(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((device, model, id)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    let verdict: ReviewVerdict = parse_json(&body)?;
    let Some(mut sample) = state.store.sample(&device, &model, &id).await? else {
        return Err(ApiError::not_found(format!(
            "no sample {id} of {model} from {device} (list the queue with GET /api/v1/samples?review=open)"
        )));
    };
    match sample.review.as_ref().map(|r| r.state) {
        Some(ReviewState::Open) => {}
        Some(closed) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "sample {id} was already {} by {}",
                    closed.as_str(),
                    sample
                        .review
                        .as_ref()
                        .and_then(|r| r.by.as_deref())
                        .unwrap_or("someone")
                ),
            ));
        }
        None => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "sample {id} is not in the review queue (it was sent as a plain sample); label it with POST /api/v1/feedback"
                ),
            ));
        }
    }
    let truth = verdict_truth(&state, &sample, &verdict).await?;
    let now = state.clock.unix();
    sample.review = Some(Review {
        state: if truth.is_some() {
            ReviewState::Labelled
        } else {
            ReviewState::Dismissed
        },
        truth: truth.clone(),
        by: Some(p.name()),
        at: Some(now),
    });
    if !state.store.close_review(&sample).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sample {id} was closed by someone else meanwhile; list it again"),
        ));
    }
    // The label goes where the prediction is, like an uploaded one: the device joins it.
    if let Some(truth) = &truth {
        let body = serde_json::json!({ "id": id, "truth": truth }).to_string();
        state
            .store
            .add_labels(&[(device.clone(), model.clone(), body)], now)
            .await?;
    }
    let state_name = sample.review.as_ref().map_or("", |r| r.state.as_str());
    Ok(AuditNote::on(format!("sample {device}/{model}/{id}"))
        .after(serde_json::json!({ "review": state_name, "truth": truth }))
        .to(axum::Json(sample).into_response()))
}

/// The verdict as the label to send, checked against what the version's signed interface
/// predicts; `None` for a dismissal.
async fn verdict_truth(
    state: &AppState,
    sample: &StoredSample,
    verdict: &ReviewVerdict,
) -> Result<Option<Truth>, ApiError> {
    let given = usize::from(verdict.label.is_some())
        + usize::from(verdict.value.is_some())
        + usize::from(verdict.dismiss);
    if given != 1 {
        return Err(ApiError::bad_field(
            "body",
            "give exactly one of label, value and \"dismiss\": true",
        ));
    }
    if verdict.dismiss {
        return Ok(None);
    }
    let as_label = DeviceTruth {
        device: edgefleet_protocol::DeviceId::new(sample.device.clone())
            .map_err(|e| ApiError::bad_field("device", e.to_string()))?,
        model: edgefleet_protocol::ModelName::new(sample.model.clone())
            .map_err(|e| ApiError::bad_field("model", e.to_string()))?,
        id: sample.sample.id.clone(),
        label: verdict.label.clone(),
        value: verdict.value,
    };
    let truth = as_label
        .truth()
        .map_err(|e| ApiError::bad_field("body", e))?;
    let spec = state
        .tuf
        .models()
        .await?
        .into_iter()
        .find(|m| {
            m.meta.model.as_str() == sample.model && m.meta.version.to_string() == sample.version
        })
        .and_then(|m| m.meta.interface.prediction);
    match (&truth, spec) {
        (Truth::Label { label }, Some(PredictionSpec::Classification { labels, .. }))
            if !labels.contains(label) =>
        {
            Err(ApiError::bad_field(
                "label",
                format!(
                    "{label:?} is not a label of {} (it knows {})",
                    sample.model,
                    labels.join(", ")
                ),
            ))
        }
        (Truth::Label { .. }, Some(PredictionSpec::Regression { .. })) => Err(ApiError::bad_field(
            "label",
            format!("{} is a regressor: give a value", sample.model),
        )),
        (Truth::Value { .. }, Some(PredictionSpec::Classification { .. })) => {
            Err(ApiError::bad_field(
                "value",
                format!("{} is a classifier: give a label", sample.model),
            ))
        }
        _ => Ok(Some(truth)),
    }
}
