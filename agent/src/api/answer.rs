//! Answering one request with one version of a model: the champion, or in a split the
//! challenger in the model's shadow slot. Both arms take the same path — decoded by the answering
//! version's own interface, run within `inference.max_parallel`, logged for labels — so a split
//! compares the versions and nothing else.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use edgefleet_inference::Inputs;
use edgefleet_protocol::interface::Prediction;
use serde_json::{Map, Value, json};

use super::{ApiError, oip, protocol_error, quality, run_counted};
use crate::agent::Agent;
use crate::serving::Slot;

/// A tensor request's answer.
pub(super) struct TensorAnswer {
    pub response: Response,
    /// The id labels join on: the caller's, or one made here.
    pub id: String,
    /// Read from a single-row answer of a model that declares a prediction.
    pub prediction: Option<Prediction>,
    /// The request's inputs, when asked for (a copy for the shadow).
    pub copy: Option<Inputs>,
}

impl TensorAnswer {
    pub fn label(&self) -> Option<&str> {
        self.prediction.as_ref()?.label.as_deref()
    }
}

/// Answers an Open Inference Protocol request with `slot`.
pub(super) async fn tensors(
    agent: &Agent,
    slot: &Arc<Slot>,
    headers: &HeaderMap,
    body: axum::body::Bytes,
    keep_copy: bool,
) -> Result<TensorAnswer, ApiError> {
    let request = oip::decode_request(&slot.meta.interface, headers, &body)?;
    // The caller may hold another handle to the bytes; this one is not needed any more.
    drop(body);
    let copy = keep_copy.then(|| request.inputs.clone());
    let outputs = run_counted(agent, slot, request.inputs).await?;
    let id = request.id.unwrap_or_else(quality::new_prediction_id);
    let mut prediction = None;
    if let Some(spec) = &slot.meta.interface.prediction
        && let Some(output) = outputs.get(spec.output())
        && output.shape.first() == Some(&1)
        && let Some(scores) = output.data.floats_as_f32()
    {
        let p = spec.interpret(&scores);
        quality::log(agent, &slot.meta, spec, &p, &id, None);
        prediction = Some(p);
    }
    let response = oip::encode_response(
        json!({
            "model_name": slot.meta.model.to_string(),
            "model_version": slot.meta.version.to_string(),
            "id": id,
        }),
        &outputs,
        &request.wanted,
    );
    Ok(TensorAnswer {
        response,
        id,
        prediction,
        copy,
    })
}

/// A `:predict` answer.
pub(super) struct RowAnswer {
    pub id: String,
    pub prediction: Prediction,
    started: Instant,
}

impl RowAnswer {
    /// From the start of the inference to now.
    pub fn took(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn json(&self, slot: &Slot) -> Value {
        json!({
            "id": self.id,
            "model": slot.meta.model.to_string(),
            "version": slot.meta.version.to_string(),
            "prediction": self.prediction.label,
            "probabilities": self.prediction.probabilities,
            "value": self.prediction.value,
            "latency_ms": self.started.elapsed().as_secs_f64() * 1e3,
            "runtime": slot.model.runtime(),
        })
    }
}

/// Answers one row of named features with `slot`.
pub(super) async fn row(
    agent: &Agent,
    slot: &Arc<Slot>,
    row: &Map<String, Value>,
) -> Result<RowAnswer, ApiError> {
    let Some(spec) = slot.meta.interface.prediction.clone() else {
        let name = &slot.meta.model;
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("model {name:?} takes tensors; use /v2/models/{name}/infer"),
        ));
    };
    let inputs =
        edgefleet_inference::features_to_input(&slot.meta.interface, std::slice::from_ref(row))
            .map_err(|e| match e {
                edgefleet_inference::Error::Protocol(p) => protocol_error(&p),
                other => ApiError::new(StatusCode::BAD_REQUEST, other.to_string()),
            })?;
    let started = Instant::now();
    let outputs = run_counted(agent, slot, inputs).await?;
    let output = outputs.get(spec.output()).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "prediction output missing",
        )
    })?;
    let scores = output.data.floats_as_f32().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("prediction output is {}, not floats", output.dtype()),
        )
    })?;
    let prediction = spec.interpret(&scores);
    slot.stats
        .record_prediction(prediction.label.as_deref(), Some(row));
    let id = quality::new_prediction_id();
    quality::log(agent, &slot.meta, &spec, &prediction, &id, Some(row));
    Ok(RowAnswer {
        id,
        prediction,
        started,
    })
}
