//! Alerts.

use super::*;
use crate::alerts::{Alert, AlertFilter};
use crate::store::AlertStore;

const COLUMNS: &str = "id, body, row_version";

fn alert_of(id: i64, body: &str, row_version: i64) -> Result<Alert> {
    let mut alert: Alert = decode_stored(&format!("alert {id}"), body)?;
    alert.id = id;
    alert.row_version = row_version;
    Ok(alert)
}

fn collect(rows: Vec<(i64, String, i64)>) -> Result<Vec<Alert>> {
    rows.iter()
        .map(|(id, body, row_version)| alert_of(*id, body, *row_version))
        .collect()
}

#[async_trait]
impl AlertStore for SqliteStore {
    async fn insert_alert(&self, alert: &Alert) -> Result<i64> {
        let body = encode_stored("an alert", alert)?;
        let alert = alert.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO alerts (fingerprint, state, updated_at, action_due, notify_due, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    alert.fingerprint,
                    alert.state.as_str(),
                    alert.updated_at,
                    i64::from(alert.action_due),
                    alert.notify_due,
                    body
                ],
            )
            .map_err(backend)?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn update_alert(&self, alert: &Alert) -> Result<()> {
        let body = encode_stored("an alert", alert)?;
        let alert = alert.clone();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE alerts SET state = ?2, updated_at = ?3, action_due = ?4,
                     notify_due = ?5, body = ?6, row_version = row_version + 1
                     WHERE id = ?1 AND row_version = ?7",
                    params![
                        alert.id,
                        alert.state.as_str(),
                        alert.updated_at,
                        i64::from(alert.action_due),
                        alert.notify_due,
                        body,
                        alert.row_version
                    ],
                )
                .map_err(backend)?;
            if n == 0 {
                let exists = c
                    .query_row(
                        "SELECT COUNT(*) FROM alerts WHERE id = ?1",
                        params![alert.id],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(backend)?
                    > 0;
                let what = format!("alert {} (changed since it was read)", alert.id);
                return Err(if exists {
                    StoreError::Conflict { what }
                } else {
                    StoreError::NotFound {
                        what: format!("alert {}", alert.id),
                    }
                });
            }
            Ok(())
        })
        .await
    }

    async fn alert(&self, id: i64) -> Result<Option<Alert>> {
        let sql = format!("SELECT {COLUMNS} FROM alerts WHERE id = ?1");
        Ok(self.query_alerts(sql, vec![id.into()]).await?.pop())
    }

    async fn open_alert(&self, fingerprint: &str) -> Result<Option<Alert>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM alerts WHERE fingerprint = ?1 AND state != 'resolved'
             ORDER BY id DESC LIMIT 1"
        );
        Ok(self
            .query_alerts(sql, vec![fingerprint.to_owned().into()])
            .await?
            .pop())
    }

    async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>> {
        let state = filter.state.map(|s| s.as_str());
        let (all, limit) = (filter.all, i64::from(filter.limit()));
        let rows = self
            .read(move |c| {
                let mut statement = c
                    .prepare(&format!(
                        "SELECT {COLUMNS} FROM alerts
                         WHERE (?1 IS NULL OR state = ?1)
                           AND (?1 IS NOT NULL OR ?2 OR state != 'resolved')
                         ORDER BY updated_at DESC, id DESC LIMIT ?3"
                    ))
                    .map_err(backend)?;
                let rows = statement
                    .query_map(params![state, all, limit], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .map_err(backend)?;
                rows.collect::<rusqlite::Result<Vec<(i64, String, i64)>>>()
                    .map_err(backend)
            })
            .await?;
        collect(rows)
    }

    async fn alerts_action_due(&self, limit: u32) -> Result<Vec<Alert>> {
        let sql = format!("SELECT {COLUMNS} FROM alerts WHERE action_due = 1 ORDER BY id LIMIT ?1");
        self.query_alerts(sql, vec![i64::from(limit).into()]).await
    }

    async fn alerts_notify_due(&self, now: i64, limit: u32) -> Result<Vec<Alert>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM alerts WHERE notify_due <= ?1 ORDER BY notify_due, id LIMIT ?2"
        );
        self.query_alerts(sql, vec![now.into(), i64::from(limit).into()])
            .await
    }
}

impl SqliteStore {
    async fn query_alerts(
        &self,
        sql: String,
        args: Vec<rusqlite::types::Value>,
    ) -> Result<Vec<Alert>> {
        let rows = self
            .read(move |c| {
                let mut statement = c.prepare(&sql).map_err(backend)?;
                let rows = statement
                    .query_map(rusqlite::params_from_iter(args), |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .map_err(backend)?;
                rows.collect::<rusqlite::Result<Vec<(i64, String, i64)>>>()
                    .map_err(backend)
            })
            .await?;
        collect(rows)
    }
}
