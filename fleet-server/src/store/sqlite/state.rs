//! What devices report and are told: reported and desired state, events, metrics.

use super::*;
use crate::store::StateStore;

#[async_trait]
impl StateStore for SqliteStore {
    async fn record_reported(&self, reported: &Reported, at: i64) -> Result<bool> {
        let id = reported.device.clone();
        let seq = reported.seq;
        let agent_version = reported.agent_version.clone();
        let text = encode_stored("reported state", reported)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE devices SET reported = ?3, reported_seq = ?2, agent_version = ?4,
                     last_seen = MAX(COALESCE(last_seen, 0), ?5), reported_at = ?5
                     WHERE id = ?1 AND reported_seq < ?2",
                    params![id.as_str(), seq as i64, text, agent_version, at],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn record_event(&self, event: &StoredEvent) -> Result<bool> {
        let event = event.clone();
        let message = encode_stored("event", &event.message)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "INSERT INTO events (device, message_id, seq, at, message) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (device, message_id) DO NOTHING",
                    params![
                        event.device.as_str(),
                        event.message.id.as_str(),
                        event.seq as i64,
                        event.at,
                        message
                    ],
                )
                .map_err(backend)?;
            if n == 1 {
                seen(c, event.device.as_str(), event.at)?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn events(&self, id: Option<&DeviceId>, limit: u32) -> Result<Vec<StoredEvent>> {
        let id = id.map(|d| d.as_str().to_owned());
        self.read(move |c| {
            // One statement per case: with `?1 IS NULL OR device = ?1` SQLite cannot search
            // the device's rows by key and walks the whole table by time instead (a device page
            // took 100 ms at 300,000 events).
            let mut stmt = c
                .prepare(if id.is_some() {
                    DEVICE_EVENTS
                } else {
                    FLEET_EVENTS
                })
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![id, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            rows.into_iter()
                .map(|(device, seq, at, message)| {
                    Ok(StoredEvent {
                        device: DeviceId::new(device.clone()).map_err(backend)?,
                        seq: seq as u64,
                        at,
                        message: decode_stored(&format!("event {device}/{seq}"), &message)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn record_metrics(&self, batch: &MetricsBatch, received_us: i64) -> Result<bool> {
        let id = batch.device.clone();
        let seq = batch.seq;
        let text = encode_stored("metrics batch", batch)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "INSERT INTO metrics_batches (device, seq, at, received, batch)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (device, seq) DO NOTHING",
                    params![
                        id.as_str(),
                        seq as i64,
                        received_us.div_euclid(1_000_000),
                        received_us,
                        text
                    ],
                )
                .map_err(backend)?;
            if n == 1 {
                c.execute(
                    "INSERT INTO metrics_unrolled (device, seq, received) VALUES (?1, ?2, ?3)",
                    params![id.as_str(), seq as i64, received_us],
                )
                .map_err(backend)?;
                seen(c, id.as_str(), received_us.div_euclid(1_000_000))?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn metrics(&self, id: Option<&DeviceId>, since: i64) -> Result<Vec<StoredMetrics>> {
        let id = id.map(|d| d.as_str().to_owned());
        self.read(move |c| {
            // One statement per case, as for events: a device's batches by its key.
            let mut stmt = c
                .prepare(if id.is_some() {
                    DEVICE_METRICS
                } else {
                    FLEET_METRICS
                })
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![id, since], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(rows
                .into_iter()
                .filter_map(|(device, _, received_us, batch)| {
                    let batch = device_document(&device, "metrics batch", Some(batch))?;
                    Some(StoredMetrics::received(batch, received_us))
                })
                .collect())
        })
        .await
    }

    async fn prune_metrics(&self, before: i64) -> Result<u64> {
        self.write(move |c| {
            let n = c
                .execute(
                    "DELETE FROM metrics_batches WHERE at < ?1 AND NOT EXISTS (
                         SELECT 1 FROM metrics_unrolled u
                         WHERE u.device = metrics_batches.device AND u.seq = metrics_batches.seq
                     )",
                    params![before],
                )
                .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }

    async fn set_desired(&self, desired: &Desired) -> Result<()> {
        let id = desired.device.clone();
        let revision = desired.revision;
        let text = encode_stored("desired state", desired)?;
        let targets: Vec<String> = desired.targets().map(str::to_owned).collect();
        self.write(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let n = tx
                .execute(
                    "UPDATE devices SET desired = ?3, desired_revision = ?2
                     WHERE id = ?1 AND desired_revision < ?2",
                    params![id.as_str(), revision as i64, text],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::Conflict {
                    what: format!(
                        "desired state revision {revision} of device {id} (unknown device, or a newer revision is stored)"
                    ),
                });
            }
            for target in &targets {
                tx.execute(
                    "INSERT INTO assignments (device, target) VALUES (?1, ?2)
                     ON CONFLICT (device, target) DO NOTHING",
                    params![id.as_str(), target],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn all_desired(&self) -> Result<Vec<Desired>> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT id, desired FROM devices WHERE desired IS NOT NULL ORDER BY id")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, desired)| device_document(&id, "desired state", Some(desired)))
                .collect())
        })
        .await
    }

    async fn is_assigned(&self, id: &DeviceId, target: &str) -> Result<bool> {
        let id = id.clone();
        let target = target.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT 1 FROM assignments WHERE device = ?1 AND target = ?2",
                params![id.as_str(), target],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(backend)
        })
        .await
    }
}

/// Moves the device's `last_seen` forward to `at`, in the write that stored its message; the row
/// is rewritten only when it moves.
fn seen(c: &rusqlite::Connection, device: &str, at: i64) -> Result<()> {
    c.execute(
        "UPDATE devices SET last_seen = ?2 WHERE id = ?1 AND COALESCE(last_seen, 0) < ?2",
        params![device, at],
    )
    .map_err(backend)?;
    Ok(())
}

// The fleet-wide statements number their parameters as the device's do (`?2`, `?1` unused), so
// that one parameter list binds either.
const DEVICE_EVENTS: &str = "SELECT device, seq, at, message FROM events WHERE device = ?1
     ORDER BY at DESC, seq DESC LIMIT ?2";
const FLEET_EVENTS: &str =
    "SELECT device, seq, at, message FROM events ORDER BY at DESC, seq DESC LIMIT ?2";
const DEVICE_METRICS: &str = "SELECT device, seq, received, batch FROM metrics_batches
     WHERE device = ?1 AND at >= ?2 ORDER BY received, seq";
const FLEET_METRICS: &str = "SELECT device, seq, received, batch FROM metrics_batches
     WHERE at >= ?2 ORDER BY received, seq";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_devices_events_and_batches_are_searched_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("fleet.db")).unwrap();
        for (sql, index) in [
            (
                DEVICE_EVENTS,
                "USING INDEX sqlite_autoindex_events_1 (device=?)",
            ),
            (DEVICE_METRICS, "USING INDEX metrics_by_arrival (device=?)"),
        ] {
            let plan = store
                .read(move |c| {
                    let mut stmt = c
                        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .map_err(backend)?;
                    let rows = stmt
                        .query_map(params![None::<String>, None::<i64>], |r| {
                            r.get::<_, String>(3)
                        })
                        .map_err(backend)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
                })
                .await
                .unwrap();
            assert!(
                plan.iter()
                    .any(|step| step.starts_with("SEARCH") && step.ends_with(index))
                    && !plan.iter().any(|step| step.starts_with("SCAN")),
                "{sql}: {plan:?}"
            );
        }
    }
}
