//! Bodies of the HTTP API that more than one program reads or writes: what a device sends to
//! enroll and what the server answers. The server decodes and encodes these very types, and its
//! OpenAPI document is generated from them (feature `schema`), so neither side nor the document
//! can drift from the others.

use serde::{Deserialize, Serialize};

use crate::DeviceId;

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
