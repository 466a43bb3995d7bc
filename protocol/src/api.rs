//! Bodies of the HTTP API that more than one program reads or writes: enrollment (the agent and
//! the server) and devices (`fleetctl` and the server; rollouts are in `edgefleet-rollout`). The
//! server decodes and encodes these very types, and its OpenAPI document is generated from them
//! (feature `schema`), so neither side nor the document can drift from the others.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DeviceId;
use crate::message::{Desired, Event, Reported, UpdateState};

/// `POST /api/v1/enroll`: a device trades its one-time token for its own credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// Validated by the server, which names this field when it is not a device id.
    pub device_id: String,
    pub token: String,
    /// The device's own ed25519 public key (hex): its messages must then be sealed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// The server's answer to an enrollment: the device's credential and where to reach the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub device_id: DeviceId,
    /// The device's secret for the broker and the server (shown once).
    pub credential: String,
    pub server_url: String,
    pub mqtt_url: String,
    pub mqtt_username: String,
}

/// Every failed request's body: what was wrong and, for a bad request, which field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `POST /api/v1/devices`: register a device before it enrolls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddDeviceRequest {
    pub id: String,
    /// Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Issue a new enrollment token for a device already registered (it must enroll again).
    #[serde(default)]
    pub renew: bool,
}

/// The answer to a registration: the device's one-time enrollment token (shown once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DeviceEnrollment {
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub device_id: DeviceId,
    pub enrollment_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub enroll_url: String,
}

/// `PATCH /api/v1/devices/{id}`: what is given replaces what the device had.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateDeviceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// `PUT /api/v1/devices/{id}/desired`: the model versions the device should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DesiredRequest {
    #[cfg_attr(feature = "schema", schema(inline))]
    pub models: Vec<DesiredVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DesiredVersion {
    pub model: String,
    pub version: String,
}

/// A device as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DeviceSummary {
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub id: DeviceId,
    pub group: String,
    pub tags: BTreeMap<String, String>,
    pub enrolled: bool,
    pub enrolled_at: Option<i64>,
    pub last_seen: Option<i64>,
    /// Heard from within the last two minutes (agents report at least every minute).
    pub online: bool,
    pub agent_version: Option<String>,
    /// What it reports it serves, by model.
    pub running: BTreeMap<String, RunningModel>,
    pub desired_revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RunningModel {
    /// The active version; none while it has not installed one.
    pub version: Option<String>,
    /// Where its update of the model stands (`idle`, `downloading`, `checking`, ...).
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub state: UpdateState,
}

/// `GET /api/v1/devices`: the devices matching the query, in id order — all of them, or a page
/// of `limit` with the cursor for the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DeviceList {
    pub devices: Vec<DeviceSummary>,
    /// Devices matching the query on every page.
    #[serde(default)]
    pub total: u64,
    /// Pass as `after` for the next page; none on the last.
    #[serde(default)]
    pub next_after: Option<String>,
    /// Every group in the fleet, sorted.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `GET /api/v1/devices/{id}`: the summary, the full desired and reported documents (the MQTT
/// messages, see `docs/SERVER.md`) and its latest events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub summary: DeviceSummary,
    #[cfg_attr(feature = "schema", schema(value_type = Option<Object>))]
    pub desired: Option<Desired>,
    #[cfg_attr(feature = "schema", schema(value_type = Option<Object>))]
    pub reported: Option<Reported>,
    pub events: Vec<ReceivedEvent>,
}

/// A device's event as the server received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ReceivedEvent {
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub device: DeviceId,
    pub seq: u64,
    /// When the server received it (Unix seconds).
    pub at: i64,
    /// The event message as the device sealed it.
    #[cfg_attr(feature = "schema", schema(value_type = Object))]
    pub message: Event,
}

impl ReceivedEvent {
    /// `event` as received at `at` (Unix seconds).
    pub fn received(event: Event, at: i64) -> Self {
        Self {
            device: event.device.clone(),
            seq: event.seq,
            at,
            message: event,
        }
    }
}

/// `GET /api/v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct EventList {
    pub events: Vec<ReceivedEvent>,
}

/// `GET /api/v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct GroupList {
    pub groups: Vec<GroupSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct GroupSummary {
    pub name: String,
    pub devices: u64,
}

/// Where a release stands in the registry (the MLflow model registry's stages). Archived versions
/// are never rolled out; a group may be limited to some stages (the server's `[registry]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Staging,
    Production,
    Archived,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Staging => "staging",
            Stage::Production => "production",
            Stage::Archived => "archived",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "staging" => Some(Stage::Staging),
            "production" => Some(Stage::Production),
            "archived" => Some(Stage::Archived),
            _ => None,
        }
    }
}

/// `POST /api/v1/bundles`: an offline bundle of one signed model version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BundleRequest {
    pub model: String,
    pub version: String,
    /// Days the bundle stays installable (1 to 366); it cannot outlast root or targets.
    pub valid_days: u32,
}

/// The bundle's metadata: with the target files it names (fetched from `/tuf/targets/`), a
/// repository directory that `edge-agent install` takes without a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct BundleMetadata {
    /// The model target the bundle is for, e.g. `models/churn/2.0.0/model.onnx`.
    pub target: String,
    /// RFC 3339; the bundle's timestamp and snapshot expire then.
    pub expires: String,
    pub timestamp_version: u64,
    /// `metadata/` files by name, each exactly the bytes signed (JSON text).
    pub metadata: BTreeMap<String, String>,
}
