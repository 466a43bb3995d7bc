//! Devices: enrollment (a one-time token traded for a credential), the inventory, and each
//! device's desired state as the operator sets it.

use super::handlers::QueryParams;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::handlers::{ApiResult, JsonBody, check_name, check_tags, device_id, json_response};
use edgefleet_protocol::api::{
    AddDeviceRequest, DesiredRequest, DeviceDetail, DeviceEnrollment, DeviceList, EnrollRequest,
    EnrollResponse, EventList, GroupList, GroupSummary, UpdateDeviceRequest,
};

use super::audit::AuditNote;
use super::{ApiError, AppState, Principal};
use crate::auth::{self, SecretKind};
use crate::desired::{Catalog, Wanted};
use crate::store::{DeviceFilter, DevicePageQuery, NewDevice, Stage};

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
    let note = AuditNote {
        actor: Some(format!("device:{id}")),
        ..AuditNote::on(format!("device {id}"))
    }
    .after(json!({"sealed": public_key.is_some()}));
    Ok(note.to(json_response(
        StatusCode::OK,
        EnrollResponse {
            device_id: id.clone(),
            credential,
            server_url: state.config.public_url(),
            mqtt_url: state.device_mqtt_url.clone(),
            mqtt_username: id.to_string(),
        },
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    group: Option<String>,
    /// `key` or `key=value`.
    tag: Option<String>,
    /// Only devices heard from within the last two minutes (`true`) or not (`false`).
    online: Option<bool>,
    /// Text found in the id, the group or a tag (case-insensitive).
    q: Option<String>,
    /// A page of at most this many (1 to 1,000, the default): no answer is the whole fleet, whose
    /// size has no bound, so a caller wanting every device follows `next_after`.
    limit: Option<u32>,
    /// The `next_after` of the previous page.
    after: Option<String>,
}

/// The largest page of the device list.
const MAX_PAGE: u32 = 1_000;

pub async fn list_devices(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<DeviceQuery>,
) -> ApiResult {
    if let Some(limit) = query.limit
        && !(1..=MAX_PAGE).contains(&limit)
    {
        return Err(ApiError::bad_field(
            "limit",
            format!(
                "{limit} is not a page size: give 1 to {MAX_PAGE} (the default), and follow \
                 `next_after` for the next page"
            ),
        ));
    }
    let tag = query.tag.map(|t| match t.split_once('=') {
        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
        None => (t, None),
    });
    let now = state.clock.unix();
    let page_size = query.limit.unwrap_or(MAX_PAGE);
    // One more than the page, to know whether another follows.
    let limit = page_size + 1;
    let page = state
        .store
        .device_page(&DevicePageQuery {
            filter: DeviceFilter {
                group: query.group,
                tag,
            },
            online: query.online,
            online_since: now - crate::live::ONLINE_SECONDS,
            text: query
                .q
                .map(|q| q.trim().to_lowercase())
                .filter(|q| !q.is_empty()),
            after: query.after,
            limit,
        })
        .await?;
    let mut devices: Vec<_> = page
        .devices
        .iter()
        .map(|d| crate::live::device_summary(d, now))
        .collect();
    let next_after = if devices.len() > page_size as usize {
        devices.truncate(page_size as usize);
        devices.last().map(|d| d.id.to_string())
    } else {
        None
    };
    Ok(json_response(
        StatusCode::OK,
        DeviceList {
            devices,
            total: page.total,
            next_after,
            groups: page.groups,
        },
    ))
}

pub async fn add_device(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<AddDeviceRequest>,
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
    let note = AuditNote::on(format!("device {id}"))
        .after(json!({"group": device.group, "tags": device.tags, "renew": req.renew}));
    Ok(note.to(json_response(
        StatusCode::CREATED,
        DeviceEnrollment {
            device_id: id,
            enrollment_token: token,
            expires_at,
            enroll_url: format!("{}/api/v1/enroll", state.config.public_url()),
        },
    )))
}

pub async fn show_device(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = device_id(&id, "id")?;
    let device = state
        .store
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id} not found")))?;
    let events = state.store.events(Some(&id), 20).await?;
    let detail = DeviceDetail {
        summary: crate::live::device_summary(&device, state.clock.unix()),
        desired: device.desired,
        reported: device.reported,
        events,
    };
    Ok(json_response(StatusCode::OK, detail))
}

pub async fn update_device(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateDeviceRequest>,
) -> ApiResult {
    let id = device_id(&id, "id")?;
    if let Some(group) = &req.group {
        check_name(group, "group")?;
    }
    if let Some(tags) = &req.tags {
        check_tags(tags)?;
    }
    let before = state
        .store
        .device(&id)
        .await?
        .map(|d| json!({"group": d.group, "tags": d.tags}));
    state
        .store
        .update_device(&id, req.group.as_deref(), req.tags.as_ref())
        .await?;
    let shown = show_device(State(state), Path(id.to_string())).await?;
    let note = AuditNote::on(format!("device {id}"))
        .before(before)
        .after(&req);
    Ok(note.to(shown))
}

pub async fn remove_device(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let id = device_id(&id, "id")?;
    let before =
        state.store.device(&id).await?.map(
            |d| json!({"group": d.group, "tags": d.tags, "enrolled": d.enrolled_at.is_some()}),
        );
    state.store.remove_device(&id).await?;
    if let Err(e) = state.mqtt.clear_desired(&id).await {
        tracing::warn!(device = %id, error = %e, "could not clear the removed device's retained desired state");
    }
    tracing::info!(by = %principal.name(), device = %id, "device removed");
    let note = AuditNote::on(format!("device {id}")).before(before);
    Ok(note.to(StatusCode::NO_CONTENT.into_response()))
}

pub async fn set_desired(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DesiredRequest>,
) -> ApiResult {
    let id = device_id(&id, "id")?;
    let device = state
        .store
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id} not found")))?;
    // The registry's stages govern a version given by hand as they govern a rollout.
    let releases = state.store.releases().await?;
    for m in &req.models {
        let stage = releases
            .iter()
            .find(|r| r.model == m.model && r.version == m.version)
            .map_or(Stage::Staging, |r| r.stage);
        state
            .config
            .registry
            .admits(stage, &device.group)
            .map_err(|e| {
                ApiError::bad_field("models", format!("{} {}: {e}", m.model, m.version))
            })?;
    }
    let wanted: Vec<Wanted> = req
        .models
        .into_iter()
        .map(|m| Wanted {
            model: m.model,
            version: m.version,
            rollout: None,
            shadow: None,
        })
        .collect();
    let catalog = Catalog::load(&state.tuf).await?;
    let desired = crate::desired::assign(&state, &catalog, &id, &wanted).await?;
    tracing::info!(by = %principal.name(), device = %id, revision = desired.revision, "desired state set");
    let targets = |d: &edgefleet_protocol::message::Desired| json!({"revision": d.revision, "targets": d.models.iter().map(|m| m.target.clone()).collect::<Vec<_>>()});
    let note = AuditNote::on(format!("device {id}"))
        .before(device.desired.as_ref().map(targets))
        .after(targets(&desired));
    Ok(note.to(json_response(StatusCode::OK, desired)))
}

pub async fn groups(State(state): State<AppState>) -> ApiResult {
    let groups = state
        .store
        .groups()
        .await?
        .into_iter()
        .map(|(name, devices)| GroupSummary { name, devices })
        .collect();
    Ok(json_response(StatusCode::OK, GroupList { groups }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    device: Option<String>,
    limit: Option<u32>,
}

pub async fn events(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<EventQuery>,
) -> ApiResult {
    let device = q.device.map(|d| device_id(&d, "device")).transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let events = state.store.events(device.as_ref(), limit).await?;
    Ok(json_response(StatusCode::OK, EventList { events }))
}
