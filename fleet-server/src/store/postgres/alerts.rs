//! Alerts.

use super::*;
use crate::alerts::{Alert, AlertFilter};
use crate::store::AlertStore;

fn alert_of(row: &Row) -> Result<Alert> {
    let id: i64 = row.get(0);
    let mut alert: Alert = decode_stored(&format!("alert {id}"), row.get::<_, &str>(1))?;
    alert.id = id;
    alert.row_version = row.get(2);
    Ok(alert)
}

#[async_trait]
impl AlertStore for PostgresStore {
    async fn insert_alert(&self, alert: &Alert) -> Result<i64> {
        let body = encode_stored("an alert", alert)?;
        let row = self
            .client()
            .await?
            .query_one(
                "INSERT INTO alerts (fingerprint, state, updated_at, action_due, notify_due, body)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &alert.fingerprint,
                    &alert.state.as_str(),
                    &alert.updated_at,
                    &i64::from(alert.action_due),
                    &alert.notify_due,
                    &body,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    async fn update_alert(&self, alert: &Alert) -> Result<()> {
        let body = encode_stored("an alert", alert)?;
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE alerts SET state = $2, updated_at = $3, action_due = $4, notify_due = $5,
                 body = $6, row_version = row_version + 1 WHERE id = $1 AND row_version = $7",
                &[
                    &alert.id,
                    &alert.state.as_str(),
                    &alert.updated_at,
                    &i64::from(alert.action_due),
                    &alert.notify_due,
                    &body,
                    &alert.row_version,
                ],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            let exists = self
                .client()
                .await?
                .query_opt("SELECT 1 FROM alerts WHERE id = $1", &[&alert.id])
                .await
                .map_err(pg)?
                .is_some();
            return Err(if exists {
                StoreError::Conflict {
                    what: format!("alert {} (changed since it was read)", alert.id),
                }
            } else {
                StoreError::NotFound {
                    what: format!("alert {}", alert.id),
                }
            });
        }
        Ok(())
    }

    async fn alert(&self, id: i64) -> Result<Option<Alert>> {
        self.client()
            .await?
            .query_opt(
                "SELECT id, body, row_version FROM alerts WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(alert_of)
            .transpose()
    }

    async fn open_alert(&self, fingerprint: &str) -> Result<Option<Alert>> {
        self.client()
            .await?
            .query_opt(
                "SELECT id, body, row_version FROM alerts WHERE fingerprint = $1 AND state != 'resolved'
                 ORDER BY id DESC LIMIT 1",
                &[&fingerprint],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(alert_of)
            .transpose()
    }

    async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>> {
        let state = filter.state.map(|s| s.as_str());
        self.client()
            .await?
            .query(
                "SELECT id, body, row_version FROM alerts
                 WHERE ($1::text IS NULL OR state = $1)
                   AND ($1::text IS NOT NULL OR $2 OR state != 'resolved')
                 ORDER BY updated_at DESC, id DESC LIMIT $3",
                &[&state, &filter.all, &i64::from(filter.limit())],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(alert_of)
            .collect()
    }

    async fn alerts_action_due(&self, limit: u32) -> Result<Vec<Alert>> {
        self.client()
            .await?
            .query(
                "SELECT id, body, row_version FROM alerts WHERE action_due = 1 ORDER BY id LIMIT $1",
                &[&i64::from(limit)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(alert_of)
            .collect()
    }

    async fn alerts_notify_due(&self, now: i64, limit: u32) -> Result<Vec<Alert>> {
        self.client()
            .await?
            .query(
                "SELECT id, body, row_version FROM alerts WHERE notify_due <= $1 ORDER BY notify_due, id LIMIT $2",
                &[&now, &i64::from(limit)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(alert_of)
            .collect()
    }
}
