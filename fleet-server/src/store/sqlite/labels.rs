//! Ground truth waiting for its devices.

use super::*;
use crate::store::LabelStore;

#[async_trait]
impl LabelStore for SqliteStore {
    async fn add_labels(&self, labels: &[(String, String, String)], now: i64) -> Result<u64> {
        let labels = labels.to_vec();
        self.write(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO labels (device, model, body, received_at) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(backend)?;
                for (device, model, body) in &labels {
                    insert
                        .execute(params![device, model, body, now])
                        .map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)?;
            Ok(labels.len() as u64)
        })
        .await
    }

    async fn labels_for(
        &self,
        device: &DeviceId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, String, String)>> {
        let device = device.to_string();
        self.read(move |c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT id, model, body FROM labels WHERE device = ?1 AND id > ?2
                     ORDER BY id LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = statement
                .query_map(
                    params![
                        device,
                        i64::try_from(after).unwrap_or(i64::MAX),
                        i64::from(limit)
                    ],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
                )
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn ack_labels(&self, device: &DeviceId, through: u64) -> Result<u64> {
        let device = device.to_string();
        self.write(move |c| {
            c.execute(
                "DELETE FROM labels WHERE device = ?1 AND id <= ?2",
                params![device, i64::try_from(through).unwrap_or(i64::MAX)],
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }

    async fn prune_labels(&self, before: i64) -> Result<u64> {
        self.write(move |c| {
            c.execute("DELETE FROM labels WHERE received_at < ?1", params![before])
                .map(|n| n as u64)
                .map_err(backend)
        })
        .await
    }
}
