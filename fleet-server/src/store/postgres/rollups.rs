//! Telemetry rollups (see `crate::store::rollups`).

use super::*;
use crate::store::rollups::{NewRollup, Rollup, RollupStore, UnrolledBatch};

async fn insert_rows(tx: &deadpool_postgres::Transaction<'_>, rows: &[NewRollup]) -> Result<()> {
    let insert = tx
        .prepare(
            "INSERT INTO telemetry_rollups (grp, model, version, span, bucket, figures)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(pg)?;
    for row in rows {
        let figures = encode_stored("telemetry rollup", &row.figures)?;
        tx.execute(
            &insert,
            &[
                &row.group,
                &row.model,
                &row.version,
                &row.span,
                &row.bucket,
                &figures,
            ],
        )
        .await
        .map_err(pg)?;
    }
    Ok(())
}

/// A row of (device, seq, received, batch, group).
fn unrolled_batch(r: &Row) -> UnrolledBatch {
    let device: String = r.get(0);
    UnrolledBatch {
        batch: device_document(&device, "metrics batch", r.get(3)),
        seq: r.get::<_, i64>(1) as u64,
        received_us: r.get(2),
        group: r.get(4),
        device,
    }
}

#[async_trait]
impl RollupStore for PostgresStore {
    async fn unrolled_metrics(&self, limit: usize) -> Result<Vec<UnrolledBatch>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT m.device, m.seq, m.received, m.batch, COALESCE(d.grp, '')
                 FROM metrics_unrolled u
                 JOIN metrics_batches m ON m.device = u.device AND m.seq = u.seq
                 LEFT JOIN devices d ON d.id = m.device
                 ORDER BY u.received LIMIT $1",
                &[&(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(unrolled_batch).collect())
    }

    async fn unrolled_keys(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT device, seq FROM metrics_unrolled ORDER BY received LIMIT $1",
                &[&(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    async fn batches_by_key(&self, keys: &[(String, u64)]) -> Result<Vec<UnrolledBatch>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let devices: Vec<&str> = keys.iter().map(|(d, _)| d.as_str()).collect();
        let seqs: Vec<i64> = keys.iter().map(|(_, s)| *s as i64).collect();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT m.device, m.seq, m.received, m.batch, COALESCE(d.grp, '')
                 FROM unnest($1::TEXT[], $2::BIGINT[]) AS k(device, seq)
                 JOIN metrics_batches m ON m.device = k.device AND m.seq = k.seq
                 LEFT JOIN devices d ON d.id = m.device",
                &[&devices, &seqs],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(unrolled_batch).collect())
    }

    async fn add_rollups(&self, folded: &[(String, u64)], rows: &[NewRollup]) -> Result<bool> {
        let devices: Vec<&str> = folded.iter().map(|(d, _)| d.as_str()).collect();
        let seqs: Vec<i64> = folded.iter().map(|(_, s)| *s as i64).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // A concurrent server taking the same batch off the queue waits on its row lock, then
        // finds it gone: fewer rows go, and its transaction is dropped (rolled back).
        let marked = tx
            .execute(
                "DELETE FROM metrics_unrolled u
                 USING unnest($1::TEXT[], $2::BIGINT[]) AS f(device, seq)
                 WHERE u.device = f.device AND u.seq = f.seq",
                &[&devices, &seqs],
            )
            .await
            .map_err(pg)?;
        if marked != folded.len() as u64 {
            return Ok(false);
        }
        insert_rows(&tx, rows).await?;
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }

    async fn rollups(&self, span: i64, from: i64, until: i64) -> Result<Vec<Rollup>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, grp, model, version, span, bucket, figures FROM telemetry_rollups
                 WHERE span = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket, id",
                &[&span, &from, &until],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok(Rollup {
                    id: r.get(0),
                    row: NewRollup {
                        group: r.get(1),
                        model: r.get(2),
                        version: r.get(3),
                        span: r.get(4),
                        bucket: r.get(5),
                        figures: decode_stored("telemetry rollup", r.get(6))?,
                    },
                })
            })
            .collect()
    }

    async fn replace_rollups(&self, remove: &[i64], add: &[NewRollup]) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let deleted = tx
            .execute(
                "DELETE FROM telemetry_rollups WHERE id = ANY($1)",
                &[&remove],
            )
            .await
            .map_err(pg)?;
        if deleted != remove.len() as u64 {
            return Ok(false);
        }
        insert_rows(&tx, add).await?;
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }

    async fn prune_rollups(&self, before: i64) -> Result<u64> {
        self.client()
            .await?
            .execute(
                "DELETE FROM telemetry_rollups WHERE bucket < $1",
                &[&before],
            )
            .await
            .map_err(pg)
    }
}
