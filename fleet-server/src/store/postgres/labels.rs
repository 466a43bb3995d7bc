//! Ground truth waiting for its devices.

use super::*;
use crate::store::LabelStore;

#[async_trait]
impl LabelStore for PostgresStore {
    async fn add_labels(&self, labels: &[(String, String, String)], now: i64) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let insert = tx
            .prepare(
                "INSERT INTO labels (device, model, body, received_at) VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(pg)?;
        for (device, model, body) in labels {
            tx.execute(&insert, &[device, model, body, &now])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(labels.len() as u64)
    }

    async fn labels_for(
        &self,
        device: &DeviceId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, String, String)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, model, body FROM labels WHERE device = $1 AND id > $2
                 ORDER BY id LIMIT $3",
                &[
                    &device.as_str(),
                    &i64::try_from(after).unwrap_or(i64::MAX),
                    &i64::from(limit),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2)))
            .collect())
    }

    async fn ack_labels(&self, device: &DeviceId, through: u64) -> Result<u64> {
        self.client()
            .await?
            .execute(
                "DELETE FROM labels WHERE device = $1 AND id <= $2",
                &[
                    &device.as_str(),
                    &i64::try_from(through).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(pg)
    }

    async fn prune_labels(&self, before: i64) -> Result<u64> {
        self.client()
            .await?
            .execute("DELETE FROM labels WHERE received_at < $1", &[&before])
            .await
            .map_err(pg)
    }
}
