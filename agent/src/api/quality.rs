//! Prediction ids, the answers they log, and ground truth joined on the device:
//! `POST /v1/models/{name}/feedback` takes labels by id (late, in any order, in batches) and
//! `GET /v1/models/{name}/quality` says what they make of each version.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use edgefleet_protocol::interface::{Prediction, PredictionSpec};
use edgefleet_protocol::quality::QualityFigures;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, parse_body};
use crate::agent::Agent;
use crate::predictions::{Answer, FeedbackOutcome, Logged, Truth};
use crate::sampling::Answered;
use edgefleet_protocol::feedback::check_label;
use edgefleet_protocol::sampling::SamplingPolicy;
use edgefleet_protocol::target::ModelTargetMeta;

/// Most labels in one feedback request.
pub(super) const MAX_LABELS_PER_REQUEST: usize = 10_000;

/// A new prediction id: 128 random bits, 32 hex digits.
pub(super) fn new_prediction_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    edgefleet_protocol::MessageId::from_random(bytes)
        .as_str()
        .to_owned()
}

/// What the log keeps of one answer: the label (with the positive label's score when there are
/// two labels) or the first value.
fn answer(spec: &PredictionSpec, prediction: &Prediction) -> Option<Answer> {
    match spec {
        PredictionSpec::Classification { labels, .. } => {
            let label = prediction.label.clone()?;
            let positive = match labels.as_slice() {
                [_, positive] => prediction
                    .probabilities
                    .as_ref()
                    .and_then(|p| p.get(positive))
                    .map(|score| (positive.clone(), *score)),
                _ => None,
            };
            Some(Answer::Class { label, positive })
        }
        PredictionSpec::Regression { .. } => prediction
            .value
            .as_ref()
            .and_then(|v| v.first())
            .map(|v| Answer::Value(*v)),
    }
}

/// Logs one answer under `id` for labels to join later, and offers it to the sampled log that
/// leaves the device (with the request's named features, when it had them).
pub(super) fn log(
    agent: &Agent,
    meta: &ModelTargetMeta,
    spec: &PredictionSpec,
    prediction: &Prediction,
    id: &str,
    row: Option<&serde_json::Map<String, Value>>,
) {
    let Some(answer) = answer(spec, prediction) else {
        return;
    };
    let at_unix = agent.now_unix();
    if agent.config.quality.share_samples {
        let default = SamplingPolicy::default();
        let policy = meta.sampling.as_ref().unwrap_or(&default);
        let score = prediction
            .label
            .as_ref()
            .and_then(|l| prediction.probabilities.as_ref()?.get(l).copied());
        agent.samples.offer(
            policy,
            &Answered {
                model: &meta.model,
                version: &meta.version,
                id,
                at_unix,
                label: prediction.label.as_deref(),
                score,
                value: prediction.value.as_ref().and_then(|v| v.first()).copied(),
                row,
            },
        );
    }
    agent.predictions.record(Logged {
        id: id.to_owned(),
        model: meta.model.to_string(),
        version: meta.version.to_string(),
        at_unix,
        answer,
    });
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackRequest {
    labels: Vec<LabelItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelItem {
    id: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    value: Option<f64>,
}

/// `POST /v1/models/{name}/feedback`: `{"labels": [{"id": ..., "label": ...} | {"id": ...,
/// "value": ...}]}`. A label must be one the served version knows; a bad item refuses the
/// whole batch (naming it), so a client never half-sends one.
pub(super) async fn feedback(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<FeedbackOutcome>, ApiError> {
    let request: FeedbackRequest =
        parse_body(&agent.config.api, &agent.body_budget, &headers, body).await?;
    if request.labels.len() > MAX_LABELS_PER_REQUEST {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} labels in one request; send at most {MAX_LABELS_PER_REQUEST} per request",
                request.labels.len()
            ),
        )
        .field("labels"));
    }
    let known = agent
        .serving
        .get(&name)
        .and_then(|slot| slot.meta.interface.prediction.clone());
    let mut labels = Vec::with_capacity(request.labels.len());
    for (i, item) in request.labels.into_iter().enumerate() {
        let bad = |what: String| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("labels[{i}]: {what}"))
                .field(format!("labels[{i}]"))
        };
        if item.id.is_empty() || item.id.len() > 128 {
            return Err(bad("id must be 1 to 128 characters".into()));
        }
        let truth = match (item.label, item.value) {
            (Some(label), None) => {
                check_label(&label).map_err(bad)?;
                if let Some(PredictionSpec::Classification { labels, .. }) = &known
                    && !labels.contains(&label)
                {
                    return Err(bad(format!(
                        "{label:?} is not a label of {name} (it knows {})",
                        labels.join(", ")
                    )));
                }
                Truth::Label(label)
            }
            (None, Some(value)) if value.is_finite() => Truth::Value(value),
            (None, Some(_)) => return Err(bad("value must be a finite number".into())),
            _ => return Err(bad("give exactly one of label and value".into())),
        };
        labels.push((item.id, truth));
    }
    agent.shadows.truths(&name, &labels);
    let log = agent.predictions.clone();
    let now = agent.now_unix();
    let model = name.clone();
    let outcome = tokio::task::spawn_blocking(move || log.feedback(&model, &labels, now))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    agent.metrics.record_feedback(&name, &outcome);
    Ok(Json(outcome))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Window {
    /// Predictions made at or after this Unix time. Default: everything kept.
    since: Option<u64>,
    /// Predictions made before this Unix time. Default: now.
    until: Option<u64>,
}

#[derive(Debug, Serialize)]
struct VersionQuality {
    version: String,
    #[serde(flatten)]
    figures: QualityFigures,
}

/// `GET /v1/models/{name}/quality?since=&until=`: per version, the figures of the labelled
/// predictions this device still keeps.
pub(super) async fn quality(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    Query(window): Query<Window>,
) -> Result<Json<Value>, ApiError> {
    let log = agent.predictions.clone();
    let now = agent.now_unix();
    let since = window.since.unwrap_or(0);
    let until = window.until.unwrap_or(now.saturating_add(1));
    let model = name.clone();
    let versions = tokio::task::spawn_blocking(move || {
        log.flush(now)?;
        log.quality(&model, since, until)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let versions: Vec<VersionQuality> = versions
        .into_iter()
        .map(|(version, counts)| VersionQuality {
            version: version.to_string(),
            figures: counts.figures(),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "model": name,
        "since": since,
        "until": until,
        "versions": versions,
    })))
}
