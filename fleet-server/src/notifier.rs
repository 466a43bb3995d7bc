//! Delivers alerts to webhooks in Alertmanager's webhook format (version 4), with retries: a
//! receiver that is down gets the alert when it is back, up to `alerts.max_attempts` tries with
//! a growing pause. One server of many delivers (a lease), and what is due lives in the store,
//! so a restart neither loses nor repeats much: a delivery cut off by a crash is sent again.

use std::time::Duration;

use serde_json::{Value, json};

use crate::alerts::{Alert, AlertState};
use crate::state::AppState;

const LEASE: &str = "alert-notifier";
const LEASE_MS: i64 = 15_000;
/// Alerts delivered per round at most.
const PER_ROUND: u32 = 20;

/// The pause before retry `attempt` (1-based): 5 s doubling to 10 minutes.
pub fn backoff(attempt: u32) -> i64 {
    (5i64 << attempt.saturating_sub(1).min(10)).min(600)
}

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "0001-01-01T00:00:00Z".into())
}

/// The Alertmanager webhook payload for one alert as it stands.
pub fn payload(alert: &Alert, external_url: &str) -> Value {
    let status = if alert.state == AlertState::Resolved {
        "resolved"
    } else {
        "firing"
    };
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), alert.summary.clone().into());
    annotations.insert("description".into(), alert.description.clone().into());
    if let Some(newest) = alert.evidence.last() {
        annotations.insert("evidence".into(), newest.detail.clone().into());
    }
    if !alert.actions.is_empty() {
        let actions: Vec<&str> = alert.actions.iter().map(|a| a.what.as_str()).collect();
        annotations.insert("actions".into(), actions.join("; ").into());
    }
    let base = external_url.trim_end_matches('/');
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{fingerprint=\"{}\"}}", alert.fingerprint),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "edgefleet",
        "groupLabels": {"alertname": alert.name},
        "commonLabels": alert.labels,
        "commonAnnotations": annotations,
        "externalURL": base,
        "alerts": [{
            "status": status,
            "labels": alert.labels,
            "annotations": annotations,
            "startsAt": rfc3339(alert.opened_at),
            "endsAt": alert.resolved_at.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339),
            "generatorURL": format!("{base}/#alerts/{}", alert.id),
            "fingerprint": format!("{:016x}", fnv1a(alert.fingerprint.as_bytes())),
        }],
    })
}

/// A stable short id for a fingerprint, as Alertmanager gives each alert one.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Delivers due alerts every second until the server stops. Does nothing without webhooks.
pub async fn run(state: AppState) {
    let config = &state.config.alerts;
    if config.webhooks.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout_seconds))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; alerts are not delivered");
            return;
        }
    };
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            _ = interval.tick() => deliver_due(&state, &client).await,
        }
    }
    let _ = state.store.release_lease(LEASE, &state.instance).await;
}

async fn deliver_due(state: &AppState, client: &reqwest::Client) {
    let store = &*state.store;
    match store
        .lease(LEASE, &state.instance, state.clock.unix_ms(), LEASE_MS)
        .await
    {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the alert-notifier lease");
            return;
        }
    }
    let now = state.clock.unix();
    let due = match store.alerts_notify_due(now, PER_ROUND).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the alerts due for delivery");
            return;
        }
    };
    let external = state.config.public_url();
    for alert in due {
        let body = payload(&alert, &external);
        let mut failures = Vec::new();
        for url in &state.config.alerts.webhooks {
            match client.post(url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => failures.push(format!("{url}: HTTP {}", r.status())),
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
        delivered(state, &alert, failures).await;
    }
}

/// Records how a delivery of `sent` went, on the alert as it is now (it may have changed).
async fn delivered(state: &AppState, sent: &Alert, failures: Vec<String>) {
    let store = &*state.store;
    let now = state.clock.unix();
    state.metrics.count_alert_delivery(if failures.is_empty() {
        "delivered"
    } else {
        "failed"
    });
    let recorded = crate::alerting::update_fresh(store, sent.id, |alert| {
        // Changed meanwhile: the newer revision is due anyway.
        alert.revision == sent.revision && record_delivery(state, alert, &failures, now)
    })
    .await;
    if let Err(e) = recorded {
        tracing::warn!(alert = sent.id, error = %e, "cannot record the alert's delivery");
    }
}

/// Puts how a delivery went on `alert`: delivered, due again later, or given up.
fn record_delivery(state: &AppState, alert: &mut Alert, failures: &[String], now: i64) -> bool {
    if failures.is_empty() {
        alert.notified_revision = alert.revision;
        alert.notify_due = None;
        alert.attempts = 0;
        alert.last_delivery_error = None;
        tracing::info!(
            alert = alert.id,
            state = alert.state.as_str(),
            "alert delivered to the webhooks"
        );
    } else {
        alert.attempts += 1;
        let error = failures.join("; ");
        if alert.attempts >= state.config.alerts.max_attempts {
            tracing::error!(
                alert = alert.id,
                attempts = alert.attempts,
                error,
                "alert not delivered; giving up"
            );
            alert.notify_due = None;
            alert.last_delivery_error = Some(format!(
                "gave up after {} attempts: {error}",
                alert.attempts
            ));
        } else {
            let wait = backoff(alert.attempts);
            tracing::warn!(
                alert = alert.id,
                attempts = alert.attempts,
                retry_in_s = wait,
                error,
                "alert delivery failed; will retry"
            );
            alert.notify_due = Some(now + wait);
            alert.last_delivery_error = Some(error);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_alertmanagers_webhook_format() {
        use crate::alerts::{ActionTaken, Evidence};
        let alert = Alert {
            row_version: 0,
            id: 7,
            fingerprint: "guard/churn/2.0.0/default".into(),
            name: "EdgefleetGuardBreached".into(),
            severity: "page".into(),
            state: AlertState::Resolved,
            labels: [
                ("alertname".to_owned(), "EdgefleetGuardBreached".to_owned()),
                ("model".to_owned(), "churn".to_owned()),
            ]
            .into(),
            summary: "churn 2.0.0 breached its guard policy".into(),
            description: "device d1: accuracy fell".into(),
            occurrences: 1,
            evidence: vec![Evidence {
                at: 1_800_000_000,
                device: Some("d1".into()),
                detail: "accuracy 0.550 on 400 labelled predictions".into(),
                breaches: Vec::new(),
            }],
            actions: vec![ActionTaken {
                at: 1_800_000_001,
                what: "paused rollout r-1".into(),
            }],
            opened_at: 1_800_000_000,
            updated_at: 1_800_000_050,
            acknowledged: None,
            resolved_at: Some(1_800_000_050),
            action_due: false,
            revision: 2,
            notified_revision: 1,
            notify_due: Some(1_800_000_050),
            attempts: 0,
            last_delivery_error: None,
        };
        let body = payload(&alert, "http://fleet.example:8800/");
        assert_eq!(body["status"], "resolved");
        assert_eq!(body["version"], "4");
        let sent = &body["alerts"][0];
        assert_eq!(sent["labels"]["alertname"], "EdgefleetGuardBreached");
        assert_eq!(sent["labels"]["model"], "churn");
        assert_eq!(sent["startsAt"], "2027-01-15T08:00:00Z");
        assert_eq!(sent["endsAt"], "2027-01-15T08:00:50Z");
        assert_eq!(sent["generatorURL"], "http://fleet.example:8800/#alerts/7");
        assert!(
            sent["annotations"]["evidence"]
                .as_str()
                .unwrap()
                .contains("accuracy")
        );
        assert_eq!(sent["annotations"]["actions"], "paused rollout r-1");
    }

    #[test]
    fn retries_back_off_to_ten_minutes() {
        assert_eq!(
            (1..=9).map(backoff).collect::<Vec<_>>(),
            [5, 10, 20, 40, 80, 160, 320, 600, 600]
        );
        assert_eq!(backoff(u32::MAX), 600);
    }
}
