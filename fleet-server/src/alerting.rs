//! Alerts the server raises itself, for fleets with or without Prometheus: a device's guard
//! after commit found its version in breach ([`raise_guard`]), or the fleet-wide guard did
//! (`crate::fleet_guard`). An alert is kept in the store with its evidence and what the server did
//! about it, listed and acknowledged through the API, the dashboard and `fleetctl alerts`, and
//! delivered to webhooks in Alertmanager's format (`crate::notifier`), so whatever already takes
//! Alertmanager's webhooks takes ours.
//!
//! Repeated breaches of one version in one group are one alert (its fingerprint) with more
//! occurrences; an alert notifies when it opens and when it is resolved, not on every
//! occurrence, so a fleet of a thousand devices breaching at once pages once.

use std::collections::BTreeMap;

use edgefleet_protocol::message::Event;

pub use crate::alerts::*;
use crate::store::{Result, Store, StoreError};

/// How often a change is redone on a fresh read when another writer got there first.
const WRITE_ATTEMPTS: usize = 8;

/// Reads alert `id`, lets `change` edit it (returning false leaves it as it is) and writes it;
/// when another writer (a new occurrence, the engine's fleet action, the notifier, an operator)
/// changed it since the read, reads it again and redoes the change, so no writer's change is
/// lost. `None` when the alert does not exist or `change` declined.
pub async fn update_fresh(
    store: &dyn Store,
    id: i64,
    mut change: impl FnMut(&mut Alert) -> bool + Send,
) -> Result<Option<Alert>> {
    for _ in 0..WRITE_ATTEMPTS {
        let Some(mut alert) = store.alert(id).await? else {
            return Ok(None);
        };
        if !change(&mut alert) {
            return Ok(None);
        }
        match store.update_alert(&alert).await {
            Ok(()) => {
                alert.row_version += 1;
                return Ok(Some(alert));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict {
        what: format!("alert {id}: other writers changed it {WRITE_ATTEMPTS} times in a row"),
    })
}

/// Opens an alert, or adds one occurrence to the open alert with the same fingerprint. A new
/// alert is due to be delivered at once when `notify` (the notifier delivers it once webhooks
/// are configured).
pub async fn raise(store: &dyn Store, raised: Raised, now: i64, notify: bool) -> Result<Alert> {
    if let Some(open) = store.open_alert(&raised.fingerprint).await? {
        let added = update_fresh(store, open.id, |open| {
            open.occurrences += 1;
            open.updated_at = now;
            open.evidence.push(raised.evidence.clone());
            let excess = open.evidence.len().saturating_sub(MAX_EVIDENCE);
            open.evidence.drain(..excess);
            true
        })
        .await?;
        if let Some(open) = added {
            return Ok(open);
        }
    }
    let mut labels = raised.labels;
    labels.insert("alertname".into(), raised.name.clone());
    labels.insert("severity".into(), raised.severity.clone());
    let mut alert = Alert {
        id: 0,
        row_version: 0,
        fingerprint: raised.fingerprint,
        name: raised.name,
        severity: raised.severity,
        state: AlertState::Firing,
        labels,
        summary: raised.summary,
        description: raised.description,
        occurrences: 1,
        evidence: vec![raised.evidence],
        actions: Vec::new(),
        opened_at: now,
        updated_at: now,
        acknowledged: None,
        resolved_at: None,
        action_due: raised.wants_action,
        revision: 1,
        notified_revision: 0,
        notify_due: notify.then_some(now),
        attempts: 0,
        last_delivery_error: None,
    };
    alert.id = store.insert_alert(&alert).await?;
    Ok(alert)
}

/// Why an operator's change to an alert was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("alert {id} not found (list them with fleetctl alerts)")]
    NotFound { id: i64 },
    #[error("alert {id} is already resolved")]
    Resolved { id: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Someone took the alert. Webhooks are not told (Alertmanager has no such state); the
/// dashboard and the API show who and when.
pub async fn acknowledge(
    store: &dyn Store,
    id: i64,
    by: &str,
    note: Option<String>,
    now: i64,
) -> std::result::Result<Alert, ChangeError> {
    change_open(store, id, |alert| {
        alert.state = AlertState::Acknowledged;
        alert.acknowledged = Some(Acknowledgement {
            by: by.to_owned(),
            at: now,
            note: note.clone(),
        });
        alert.updated_at = now;
    })
    .await
}

/// Closes the alert; webhooks receive it as resolved. A later breach opens a new one.
pub async fn resolve(
    store: &dyn Store,
    id: i64,
    by: &str,
    now: i64,
    notify: bool,
) -> std::result::Result<Alert, ChangeError> {
    change_open(store, id, |alert| {
        alert.state = AlertState::Resolved;
        alert.resolved_at = Some(now);
        alert.updated_at = now;
        alert.action_due = false;
        alert.actions.push(ActionTaken {
            at: now,
            what: format!("resolved by {by}"),
        });
        alert.revision += 1;
        alert.attempts = 0;
        // Nothing to say if the opening was never delivered either: the receiver never knew.
        alert.notify_due = (notify && alert.notified_revision > 0).then_some(now);
    })
    .await
}

/// Applies an operator's `change` to an alert that is still open (on a fresh read each time
/// another writer came first).
async fn change_open(
    store: &dyn Store,
    id: i64,
    mut change: impl FnMut(&mut Alert) + Send,
) -> std::result::Result<Alert, ChangeError> {
    let mut resolved = false;
    let changed = update_fresh(store, id, |alert| {
        resolved = !alert.state.is_open();
        if !resolved {
            change(alert);
        }
        !resolved
    })
    .await?;
    match changed {
        Some(alert) => Ok(alert),
        None if resolved => Err(ChangeError::Resolved { id }),
        None => Err(ChangeError::NotFound { id }),
    }
}

/// What a device's guard breach becomes: one alert per model version and device group.
pub async fn raise_guard(store: &dyn Store, event: &Event, now: i64) -> Result<Alert> {
    let group = store
        .device(&event.device)
        .await?
        .map(|d| d.group)
        .unwrap_or_default();
    let target = event.target.clone().unwrap_or_default();
    let version = edgefleet_protocol::target::parse_target_name(&target)
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    let rules: Vec<&str> = event.evidence.iter().map(|b| b.rule.as_str()).collect();
    let labels = BTreeMap::from([
        ("model".to_owned(), event.model.to_string()),
        ("version".to_owned(), version.clone()),
        ("group".to_owned(), group.clone()),
        ("rule".to_owned(), rules.join(",")),
    ]);
    let detail = event.detail.clone().unwrap_or_default();
    raise(
        store,
        Raised {
            fingerprint: format!("guard/{}/{version}/{group}", event.model),
            name: "EdgefleetGuardBreached".into(),
            severity: "page".into(),
            labels,
            summary: format!(
                "{} {version} breached its guard policy in group {group}",
                event.model
            ),
            description: format!("device {}: {detail}", event.device),
            evidence: Evidence {
                at: i64::try_from(event.at_unix).unwrap_or(now),
                device: Some(event.device.to_string()),
                detail,
                breaches: event.evidence.clone(),
            },
            wants_action: true,
        },
        now,
        true,
    )
    .await
}

#[cfg(test)]
mod tests;
