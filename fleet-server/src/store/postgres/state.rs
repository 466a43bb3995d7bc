//! What devices report and are told: reported and desired state, events, metrics.

use super::grouped::Write;
use super::*;
use crate::store::StateStore;
use tokio_postgres::types::ToSql;

#[async_trait]
impl StateStore for PostgresStore {
    async fn record_reported(&self, reported: &Reported, at: i64) -> Result<bool> {
        self.grouped
            .write(Write::Reported {
                device: reported.device.as_str().to_owned(),
                seq: reported.seq as i64,
                text: encode_stored("reported state", reported)?,
                agent_version: reported.agent_version.clone(),
                at,
            })
            .await
    }

    async fn record_event(&self, event: &StoredEvent) -> Result<bool> {
        self.grouped
            .write(Write::Event {
                device: event.device.as_str().to_owned(),
                message_id: event.message.id.as_str().to_owned(),
                seq: event.seq as i64,
                at: event.at,
                text: encode_stored("event", &event.message)?,
            })
            .await
    }

    async fn events(&self, id: Option<&DeviceId>, limit: u32) -> Result<Vec<StoredEvent>> {
        let limit = i64::from(limit);
        let device = id.map(DeviceId::as_str);
        // One statement per case: a prepared statement's generic plan for `$1 IS NULL OR
        // device = $1` cannot search the device's rows by key.
        let (sql, params): (&str, Vec<&(dyn ToSql + Sync)>) = match &device {
            Some(device) => (
                "SELECT device, seq, at, message FROM events WHERE device = $1
                 ORDER BY at DESC, seq DESC LIMIT $2",
                vec![device, &limit],
            ),
            None => (
                "SELECT device, seq, at, message FROM events ORDER BY at DESC, seq DESC LIMIT $1",
                vec![&limit],
            ),
        };
        self.client()
            .await?
            .query(sql, &params)
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                let device = r.get::<_, String>(0);
                let seq = r.get::<_, i64>(1) as u64;
                Ok(StoredEvent {
                    message: decode_stored(&format!("event {device}/{seq}"), r.get(3))?,
                    device: DeviceId::new(device).map_err(backend)?,
                    seq,
                    at: r.get(2),
                })
            })
            .collect()
    }

    async fn record_metrics(&self, batch: &MetricsBatch, received_us: i64) -> Result<bool> {
        self.grouped
            .write(Write::Metrics {
                device: batch.device.as_str().to_owned(),
                seq: batch.seq as i64,
                at: received_us.div_euclid(1_000_000),
                received: received_us,
                text: encode_stored("metrics batch", batch)?,
            })
            .await
    }

    async fn metrics(&self, id: Option<&DeviceId>, since: i64) -> Result<Vec<StoredMetrics>> {
        let device = id.map(DeviceId::as_str);
        // One statement per case, as for events.
        let (sql, params): (&str, Vec<&(dyn ToSql + Sync)>) = match &device {
            Some(device) => (
                "SELECT device, seq, received, batch FROM metrics_batches
                 WHERE device = $1 AND at >= $2 ORDER BY received, seq",
                vec![device, &since],
            ),
            None => (
                "SELECT device, seq, received, batch FROM metrics_batches
                 WHERE at >= $1 ORDER BY received, seq",
                vec![&since],
            ),
        };
        let rows = self.client().await?.query(sql, &params).await.map_err(pg)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let batch = device_document(r.get(0), "metrics batch", r.get(3))?;
                Some(StoredMetrics::received(batch, r.get(2)))
            })
            .collect())
    }

    async fn prune_metrics(&self, before: i64) -> Result<u64> {
        self.client()
            .await?
            .execute(
                "DELETE FROM metrics_batches m WHERE m.at < $1 AND NOT EXISTS (
                     SELECT 1 FROM metrics_unrolled u WHERE u.device = m.device AND u.seq = m.seq
                 )",
                &[&before],
            )
            .await
            .map_err(pg)
    }

    async fn set_desired(&self, desired: &Desired) -> Result<()> {
        let id = &desired.device;
        let revision = desired.revision;
        let text = encode_stored("desired state", desired)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let n = tx
            .execute(
                "UPDATE devices SET desired = $3, desired_revision = $2
                 WHERE id = $1 AND desired_revision < $2",
                &[&id.as_str(), &(revision as i64), &text],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::Conflict {
                what: format!(
                    "desired state revision {revision} of device {id} (unknown device, or a newer revision is stored)"
                ),
            });
        }
        for target in desired.targets() {
            tx.execute(
                "INSERT INTO assignments (device, target) VALUES ($1, $2)
                 ON CONFLICT (device, target) DO NOTHING",
                &[&id.as_str(), &target],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn all_desired(&self) -> Result<Vec<Desired>> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT id, desired FROM devices WHERE desired IS NOT NULL ORDER BY id",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .filter_map(|r| device_document(r.get(0), "desired state", r.get(1)))
            .collect())
    }

    async fn is_assigned(&self, id: &DeviceId, target: &str) -> Result<bool> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT 1 FROM assignments WHERE device = $1 AND target = $2",
                &[&id.as_str(), &target],
            )
            .await
            .map_err(pg)?
            .is_some())
    }
}
