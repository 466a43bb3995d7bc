//! The server's own alerts as data: what the store keeps and the API shows. Raising,
//! acknowledging, resolving and delivering them is `crate::alerting`'s.

use std::collections::BTreeMap;

use edgefleet_protocol::guard::Breach;
use serde::{Deserialize, Serialize};

/// Evidence kept per alert: the newest occurrences (the count says how many there were).
pub const MAX_EVIDENCE: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    /// Someone took it; it stays open until resolved.
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "firing" => Some(AlertState::Firing),
            "acknowledged" => Some(AlertState::Acknowledged),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }

    pub fn is_open(self) -> bool {
        self != AlertState::Resolved
    }
}

/// One occurrence: who saw what, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Evidence {
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaches: Vec<Breach>,
}

/// Something the server did because of the alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActionTaken {
    pub at: i64,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Acknowledgement {
    pub by: String,
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: i64,
    /// The stored row's version when this copy was read (not part of the alert's document).
    #[serde(skip)]
    pub row_version: i64,
    /// What makes two occurrences the same alert, e.g. `guard/churn/2.0.0/default`.
    pub fingerprint: String,
    /// The alert's name, as Alertmanager's `alertname` label.
    pub name: String,
    pub severity: String,
    pub state: AlertState,
    /// Alertmanager labels: `alertname`, `severity`, `model`, `version`, `group`, ...
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub description: String,
    pub occurrences: u64,
    pub evidence: Vec<Evidence>,
    pub actions: Vec<ActionTaken>,
    pub opened_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledgement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<i64>,
    /// A fleet action waits for the rollout engine's next pass (`crate::guard`).
    pub action_due: bool,
    /// Bumped on every change webhooks must hear of (opened, resolved).
    pub revision: u64,
    /// The revision the webhooks last received.
    pub notified_revision: u64,
    /// When the next delivery is due; `None` when nothing is left to deliver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_due: Option<i64>,
    /// Failed deliveries of the current revision.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_error: Option<String>,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// `None`: open ones (firing or acknowledged).
    pub state: Option<AlertState>,
    pub all: bool,
    pub limit: Option<u32>,
}

impl AlertFilter {
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

/// What a raise says; the store merges it into the open alert with the same fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    pub fingerprint: String,
    pub name: String,
    pub severity: String,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub description: String,
    pub evidence: Evidence,
    /// A fleet action is to be taken for a new alert.
    pub wants_action: bool,
}
