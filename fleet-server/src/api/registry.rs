//! The model registry: signed versions with who pushed them and their stage, and the artifact
//! uploads a push begins with.

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::audit::AuditNote;
use super::handlers::{ApiResult, JsonBody, json_response};
use super::{ApiError, AppState, Principal};
use crate::rollout::{ReleaseRecord, ShadowCheck};
use crate::store::{Release, Stage, StoreError};
use crate::tufhost::HostError;
use edgefleet_protocol::api;

pub async fn models(State(state): State<AppState>) -> ApiResult {
    let signed = state.tuf.models().await?;
    let releases = state.store.releases().await?;
    let records = state.store.release_records(None).await?;
    let mut by_model: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in &signed {
        let release = releases.iter().find(|r| r.target == m.name);
        let mut view = version_json(m, release);
        view["verdict"] = latest_verdict(records.iter().filter(|r| r.target == m.name));
        by_model
            .entry(m.meta.model.to_string())
            .or_default()
            .push(view);
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

/// One signed version as the registry shows it: what the signature says (sequence, floor,
/// lineage, the model card's reference) beside what the registry keeps (stage, who pushed).
fn version_json(m: &crate::tufhost::SignedModel, release: Option<&Release>) -> Value {
    use edgefleet_protocol::release_files::{ReleaseFileKind, release_file_name};
    // The release files a device (or the fleet simulator) fetches by hash from the repository.
    let file = |kind: ReleaseFileKind| {
        m.meta.files.get(kind).map(|f| {
            let name = release_file_name(&m.name, kind);
            let (dir, file) = name.rsplit_once('/').unwrap_or(("", &name));
            json!({
                "length": f.length,
                "sha256": f.sha256,
                "url": format!("/tuf/targets/{dir}/{}.{file}", f.sha256),
            })
        })
    };
    json!({
        "version": m.meta.version.to_string(),
        "sequence": m.meta.sequence,
        "min_sequence": m.meta.min_sequence,
        "target": m.name,
        "sha256": m.sha256,
        "length": m.length,
        "stage": release.map_or(Stage::Staging, |r| r.stage),
        "pushed_by": release.map(|r| r.pushed_by.clone()),
        "pushed_at": release.map(|r| r.pushed_at),
        "lineage": m.meta.lineage,
        "card": file(ReleaseFileKind::Card),
        "baseline": file(ReleaseFileKind::Baseline),
    })
}

/// A champion–challenger verdict as the registry shows it with the release.
fn verdict_json(r: &ReleaseRecord, v: &ShadowCheck) -> Value {
    json!({
        "rollout": r.rollout,
        "strategy": r.strategy.name(),
        "wave": v.wave + 1,
        "decision": v.decision,
        "champion": v.champion,
        "summary": v.summary,
        "window": { "from": v.since, "to": v.at },
        "counts": v.counts,
        "started_by": r.started_by,
        "approved_by": r.approvals.iter().map(|a| a.by.clone()).collect::<Vec<_>>(),
    })
}

/// The newest champion–challenger verdict among `records` (one release's).
fn latest_verdict<'a>(records: impl Iterator<Item = &'a ReleaseRecord>) -> Value {
    records
        .filter_map(|r| Some((r, r.latest()?)))
        .max_by_key(|(_, v)| v.at)
        .map_or(Value::Null, |(r, v)| verdict_json(r, v))
}

/// The signed version `model` `version`, or a 404 saying where the signed ones are listed.
async fn signed_version(
    state: &AppState,
    model: &str,
    version: &str,
) -> Result<crate::tufhost::SignedModel, ApiError> {
    state
        .tuf
        .models()
        .await?
        .into_iter()
        .find(|m| m.meta.model.as_str() == model && m.meta.version.to_string() == version)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{model} {version} is not a signed version (fleetctl models lists them)"
            ))
        })
}

/// Cards larger than this are linked, not inlined, in a version's detail.
const MAX_INLINE_CARD_BYTES: u64 = 256 * 1024;

/// One signed version with its lineage and, inline, its model card (checked against the signed
/// hash as it is read).
pub async fn model_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult {
    let found = &signed_version(&state, &model, &version).await?;
    let releases = state.store.releases().await?;
    let mut view = version_json(found, releases.iter().find(|r| r.target == found.name));
    view["model"] = json!(model);
    let records = state.store.release_records(Some(&found.name)).await?;
    view["verdict"] = latest_verdict(records.iter());
    view["rollouts"] = json!(
        records
            .iter()
            .map(|r| {
                let mut record = json!(r);
                record["verdicts"] = json!(
                    r.verdicts
                        .iter()
                        .map(|v| verdict_json(r, v))
                        .collect::<Vec<_>>()
                );
                record
            })
            .collect::<Vec<_>>()
    );
    if let Some(card) = &found.meta.files.card
        && card.length <= MAX_INLINE_CARD_BYTES
    {
        view["card_text"] = json!(card_text(&state, &card.sha256, card.length).await?);
    }
    Ok(json_response(StatusCode::OK, view))
}

async fn card_text(
    state: &AppState,
    sha256: &str,
    length: u64,
) -> Result<Option<String>, ApiError> {
    use futures::TryStreamExt;
    if state.blobs.get(sha256).await?.is_none() {
        return Ok(None);
    }
    let chunks: Vec<bytes::Bytes> = state
        .blobs
        .read(sha256, 0..length)
        .await?
        .try_collect()
        .await?;
    let bytes = chunks.concat();
    if edgefleet_tuf::sha256_hex(&bytes) != sha256 {
        return Err(ApiError::internal(format!(
            "stored model card {sha256} does not match its signed hash"
        )));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageRequest {
    #[schema(inline)]
    stage: Stage,
}

pub async fn set_stage(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((model, version)): Path<(String, String)>,
    JsonBody(req): JsonBody<StageRequest>,
) -> ApiResult {
    let found = &signed_version(&state, &model, &version).await?;
    let before = stage_of(&state, &found.name).await?;
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
    let note = AuditNote::on(format!("{model} {version}"))
        .before(json!({"stage": before}))
        .after(json!({"stage": req.stage}));
    Ok(note.to(json_response(
        StatusCode::OK,
        json!({"model": model, "version": version, "stage": req.stage}),
    )))
}

/// An offline bundle of one signed version (`fleetctl bundle`). Archived versions are refused
/// like their rollouts are. Audited: a bundle is metadata valid for as long as it says, to any
/// device that has not synced since.
pub async fn create_bundle(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<api::BundleRequest>,
) -> ApiResult {
    let found = &signed_version(&state, &req.model, &req.version).await?;
    let subject = format!("bundle {} {}", req.model, req.version);
    if stage_of(&state, &found.name).await? == Stage::Archived {
        let refusal = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{} {} is archived; move it to staging or production first (fleetctl promote)",
                req.model, req.version
            ),
        )
        .with_field("version");
        return Ok(AuditNote::on(subject).to(refusal.into_response()));
    }
    let bundle = state
        .tuf
        .bundle(req.valid_days, state.clock.now())
        .await
        .map_err(|e| match e {
            HostError::Tuf(edgefleet_tuf::Error::Bundle(_)) => {
                ApiError::from(e).with_field("valid_days")
            }
            e => ApiError::from(e),
        })?;
    let mut metadata = BTreeMap::new();
    for (file, bytes) in bundle.metadata {
        let text = String::from_utf8(bytes).map_err(ApiError::internal)?;
        metadata.insert(file, text);
    }
    let view = api::BundleMetadata {
        target: found.name.clone(),
        expires: bundle.expires.to_string(),
        timestamp_version: bundle.timestamp_version,
        metadata,
    };
    tracing::info!(by = %principal.name(), target = %found.name, valid_days = req.valid_days, expires = %view.expires, "offline bundle made");
    let note = AuditNote::on(subject).after(json!({
        "valid_days": req.valid_days,
        "expires": view.expires,
        "timestamp_version": view.timestamp_version,
    }));
    Ok(note.to(json_response(StatusCode::OK, json!(view))))
}

/// Where the signed `target` stands in the registry; a version signed offline, which has no row
/// yet, is in staging.
pub(crate) async fn stage_of(state: &AppState, target: &str) -> Result<Stage, StoreError> {
    Ok(state
        .store
        .releases()
        .await?
        .into_iter()
        .find(|r| r.target == target)
        .map_or(Stage::Staging, |r| r.stage))
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
/// When they changed, the releases' signed evaluation figures and sampling policies are read
/// again too.
pub(crate) async fn refresh_known_versions(state: &AppState) {
    let changed = match state.store.releases().await {
        Ok(releases) => state
            .metrics
            .set_known_versions(releases.into_iter().map(|r| (r.model, r.version))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the registry's versions for metric labels");
            return;
        }
    };
    if !changed {
        return;
    }
    match state.tuf.models().await {
        Ok(models) => {
            state.metrics.set_sample_features(models.iter().map(|m| {
                (
                    (m.meta.model.to_string(), m.meta.version.to_string()),
                    m.meta
                        .sampling
                        .as_ref()
                        .map(|s| s.features.clone())
                        .unwrap_or_default(),
                )
            }));
            state
                .metrics
                .set_release_evaluation(models.into_iter().filter_map(|m| {
                    let metrics = m.meta.lineage?.metrics;
                    Some((
                        (m.meta.model.to_string(), m.meta.version.to_string()),
                        metrics,
                    ))
                }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the releases' signed metadata for telemetry")
        }
    }
}

pub(super) async fn record_new_releases(
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
