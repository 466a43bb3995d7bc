//! Request bodies: read within a limit, and the limit of each model's inference endpoint (its
//! signed interface's `max_request_bytes`, capped by the device). Over a limit, the 413 names the
//! setting or the field that set it, and its value.

use axum::http::StatusCode;

use super::ApiError;
pub use crate::body_budget::{BodyBudget, Reserved};
use crate::config::ApiConfig;

/// Reads a JSON body within `api.max_body_bytes`; every failure, the limit included, is a JSON
/// error naming `body`.
pub(super) async fn parse_body<T: serde::de::DeserializeOwned>(
    api: &ApiConfig,
    budget: &BodyBudget,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<T, ApiError> {
    let limit = api.max_body_bytes;
    let source = format!("api.max_body_bytes = {limit} (the agent's config)");
    let (body, _reserved) = limited_body(budget, headers, body, limit, &source).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")).field("body")
    })
}

/// The `/v2/models/{name}/infer` body limit of a model: what its signed interface asks for, up to
/// `api.max_model_body_bytes`; else `api.max_body_bytes`. Returns the limit and where it comes
/// from, for the 413.
pub(super) fn model_body_limit(
    api: &ApiConfig,
    meta: &edgefleet_protocol::target::ModelTargetMeta,
) -> (usize, String) {
    let Some(asked) = meta.interface.max_request_bytes else {
        return (
            api.max_body_bytes,
            format!(
                "api.max_body_bytes = {} (the agent's config; a model's signed interface can \
                 set its own max_request_bytes)",
                api.max_body_bytes
            ),
        );
    };
    let asked = usize::try_from(asked).unwrap_or(usize::MAX);
    let (cap, key) = if api.max_model_body_bytes >= api.max_body_bytes {
        (api.max_model_body_bytes, "api.max_model_body_bytes")
    } else {
        (api.max_body_bytes, "api.max_body_bytes")
    };
    if asked > cap {
        return (
            cap,
            format!(
                "{key} = {cap} (the agent's config caps the model's signed \
                 max_request_bytes = {asked})"
            ),
        );
    }
    (
        asked,
        format!(
            "max_request_bytes = {asked} (model {:?} {}'s signed interface)",
            meta.model.as_str(),
            meta.version
        ),
    )
}

/// How much of a refused body is read and thrown away before the 413 goes out. A client that is
/// still sending when the server answers and closes gets a connection reset instead of the 413
/// (and its reason), so a moderate excess is drained first; a larger one is not worth the
/// bandwidth, and that client sees the connection close.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;

/// Reads a body of at most `limit` bytes without holding more than that, within the budget's
/// share (its `Content-Length`, or `limit` when it has none) and read deadline; over the limit
/// (by its `Content-Length` before reading, or as it arrives), a 413 that names the limit and
/// where it comes from (`source`). The share is the caller's to hold while it uses the body.
pub(super) async fn limited_body(
    budget: &BodyBudget,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
    source: &str,
) -> Result<(axum::body::Bytes, Reserved), ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // Refused before it takes any of the budget.
    if declared.is_some_and(|n| n > limit as u64 + DRAIN_BYTES) {
        return Err(too_large(limit, source));
    }
    let wanted = declared.map_or(limit, |n| {
        usize::try_from(n).unwrap_or(usize::MAX).min(limit)
    });
    let reserved = budget.reserve(wanted).await;
    let within = budget.read_within();
    match tokio::time::timeout(within, read_limited(declared, body, limit, source)).await {
        Ok(read) => read.map(|bytes| (bytes, reserved)),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s (api.body_read_seconds)",
                within.as_secs()
            ),
        )
        .field("body")),
    }
}

fn too_large(limit: usize, source: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is over {limit} bytes, the limit set by {source}; send tensors in \
             the binary extension (Inference-Header-Content-Length), about a fifth of JSON's \
             size for FP32"
        ),
    )
    .field("body")
}

async fn read_limited(
    declared: Option<u64>,
    body: axum::body::Body,
    limit: usize,
    source: &str,
) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || too_large(limit, source);
    let mut body = body;
    let mut kept = bytes::BytesMut::with_capacity(declared.map_or(0, |n| n as usize).min(limit));
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("request body refused: {e}"),
            )
            .field("body")
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen += data.len() as u64;
        if seen > limit as u64 + DRAIN_BYTES {
            return Err(too_large());
        }
        if seen <= limit as u64 {
            kept.extend_from_slice(&data);
        }
    }
    if seen > limit as u64 {
        return Err(too_large());
    }
    Ok(kept.freeze())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn meta(max_request_bytes: Option<u64>) -> edgefleet_protocol::target::ModelTargetMeta {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/detector/1.0.0");
        let (_, mut meta) = edgefleet_tuf::operator::read_release_dir(&dir).unwrap();
        meta.interface.max_request_bytes = max_request_bytes;
        meta
    }

    #[test]
    fn a_models_limit_is_its_signed_one_capped_by_the_device_else_the_devices_default() {
        let api = ApiConfig {
            max_body_bytes: 4096,
            max_model_body_bytes: 1 << 20,
            ..ApiConfig::default()
        };
        let (limit, source) = model_body_limit(&api, &meta(None));
        assert_eq!(limit, 4096);
        assert!(source.starts_with("api.max_body_bytes = 4096"), "{source}");
        let (limit, source) = model_body_limit(&api, &meta(Some(65536)));
        assert_eq!(limit, 65536);
        assert!(
            source.contains("max_request_bytes = 65536 (model \"detector\" 1.0.0's signed"),
            "{source}"
        );
        let (limit, source) = model_body_limit(&api, &meta(Some(1 << 30)));
        assert_eq!(limit, 1 << 20);
        assert!(
            source.starts_with("api.max_model_body_bytes = 1048576"),
            "{source}"
        );
    }

    #[tokio::test]
    async fn a_body_over_its_limit_is_a_413_naming_it_whether_declared_or_streamed() {
        let budget = BodyBudget::new(&ApiConfig::default());
        let mut headers = axum::http::HeaderMap::new();
        let body = || axum::body::Body::from(vec![b'x'; 5000]);
        let read = limited_body(&budget, &headers, body(), 5000, "the test's")
            .await
            .unwrap();
        assert_eq!(read.0.len(), 5000);
        // No Content-Length: refused as it arrives.
        let err = limited_body(&budget, &headers, body(), 4999, "the test's")
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            err.error
                .contains("over 4999 bytes, the limit set by the test's"),
            "{}",
            err.error
        );
        // A declared length far over the limit is refused before anything is read.
        headers.insert(
            axum::http::header::CONTENT_LENGTH,
            (4999 + DRAIN_BYTES + 1).to_string().parse().unwrap(),
        );
        let never_read = axum::body::Body::from_stream(futures::stream::pending::<
            Result<axum::body::Bytes, std::io::Error>,
        >());
        let err = limited_body(&budget, &headers, never_read, 4999, "the test's")
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.field.as_deref(), Some("body"));
        // A moderate excess is read to the end first, so the client is not cut off mid-send.
        headers.insert(axum::http::header::CONTENT_LENGTH, "5000".parse().unwrap());
        let err = limited_body(&budget, &headers, body(), 4999, "the test's")
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    fn budget(bytes: usize, seconds: u64) -> BodyBudget {
        BodyBudget::new(&ApiConfig {
            max_inflight_body_bytes: bytes,
            body_read_seconds: seconds,
            ..ApiConfig::default()
        })
    }

    fn sized(n: usize) -> axum::http::HeaderMap {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::CONTENT_LENGTH, n.into());
        headers
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_past_the_budget_wait_for_held_ones_to_be_given_back() {
        let budget = std::sync::Arc::new(budget(10_000, 30));
        let body = |n: usize| axum::body::Body::from(vec![b'x'; n]);
        let (_, held) = limited_body(&budget, &sized(6000), body(6000), 1 << 20, "t")
            .await
            .unwrap();
        // 6,000 + 5,000 > 10,000: the second waits while the first is held...
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move {
                limited_body(&budget, &sized(5000), body(5000), 1 << 20, "t")
                    .await
                    .map(|(b, _)| b.len())
            })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished(), "read past the budget");
        // First come, first served: one that would fit waits behind it, so a large body is not
        // starved by a stream of small ones.
        let behind = {
            let budget = budget.clone();
            tokio::spawn(async move {
                limited_body(&budget, &sized(1000), body(1000), 1 << 20, "t")
                    .await
                    .map(|(b, _)| b.len())
            })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!behind.is_finished(), "overtook a waiting body");
        drop(held);
        assert_eq!(waiting.await.unwrap().unwrap(), 5000);
        assert_eq!(behind.await.unwrap().unwrap(), 1000);
        // A body larger than the whole budget runs alone instead of never.
        let (big, _) = limited_body(&budget, &sized(50_000), body(50_000), 1 << 20, "t")
            .await
            .unwrap();
        assert_eq!(big.len(), 50_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_is_a_408_and_gives_its_share_back() {
        let budget = budget(10_000, 30);
        let stalled = axum::body::Body::from_stream(futures::stream::pending::<
            Result<axum::body::Bytes, std::io::Error>,
        >());
        let err = limited_body(&budget, &sized(10_000), stalled, 1 << 20, "t")
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::REQUEST_TIMEOUT);
        assert!(err.error.contains("api.body_read_seconds"), "{}", err.error);
        let (whole, _) = limited_body(
            &budget,
            &sized(10_000),
            axum::body::Body::from(vec![0u8; 10_000]),
            1 << 20,
            "t",
        )
        .await
        .unwrap();
        assert_eq!(whole.len(), 10_000, "the stalled body's share came back");
    }
}
