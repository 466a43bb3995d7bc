//! Telemetry rollups (see `crate::store::rollups`).

use super::*;
use crate::store::rollups::{NewRollup, Rollup, RollupStore, UnrolledBatch};

/// Parameters SQLite takes in one statement (its default limit is 32,766): id lists are sent in
/// chunks of this many.
const IDS_PER_STATEMENT: usize = 500;

fn insert_rows(c: &rusqlite::Connection, rows: &[(NewRollup, String)]) -> Result<()> {
    let mut insert = c
        .prepare_cached(
            "INSERT INTO telemetry_rollups (grp, model, version, span, bucket, figures)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(backend)?;
    for (row, figures) in rows {
        insert
            .execute(params![
                row.group,
                row.model,
                row.version,
                row.span,
                row.bucket,
                figures
            ])
            .map_err(backend)?;
    }
    Ok(())
}

fn encoded(rows: &[NewRollup]) -> Result<Vec<(NewRollup, String)>> {
    rows.iter()
        .map(|r| Ok((r.clone(), encode_stored("telemetry rollup", &r.figures)?)))
        .collect()
}

/// A stored batch as read: device, seq, received, batch JSON, group.
type StoredBatch = (String, i64, i64, String, String);

fn stored_batch(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredBatch> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn unrolled_batch((device, seq, received_us, batch, group): StoredBatch) -> UnrolledBatch {
    UnrolledBatch {
        batch: device_document(&device, "metrics batch", Some(batch)),
        device,
        seq: seq as u64,
        received_us,
        group,
    }
}

#[async_trait]
impl RollupStore for SqliteStore {
    async fn unrolled_metrics(&self, limit: usize) -> Result<Vec<UnrolledBatch>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT m.device, m.seq, m.received, m.batch, COALESCE(d.grp, '')
                     FROM metrics_unrolled u
                     JOIN metrics_batches m ON m.device = u.device AND m.seq = u.seq
                     LEFT JOIN devices d ON d.id = m.device
                     ORDER BY u.received LIMIT ?1",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![limit as i64], stored_batch)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(rows.into_iter().map(unrolled_batch).collect())
        })
        .await
    }

    async fn unrolled_keys(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT device, seq FROM metrics_unrolled ORDER BY received LIMIT ?1",
                )
                .map_err(backend)?;
            stmt.query_map(params![limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(backend)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(backend)
        })
        .await
    }

    async fn batches_by_key(&self, keys: &[(String, u64)]) -> Result<Vec<UnrolledBatch>> {
        let keys = keys.to_vec();
        self.read(move |c| {
            // One lookup of the primary key each: SQLite answers them in-process.
            let mut stmt = c
                .prepare_cached(
                    "SELECT m.device, m.seq, m.received, m.batch, COALESCE(d.grp, '')
                     FROM metrics_batches m LEFT JOIN devices d ON d.id = m.device
                     WHERE m.device = ?1 AND m.seq = ?2",
                )
                .map_err(backend)?;
            let mut rows = Vec::with_capacity(keys.len());
            for (device, seq) in &keys {
                if let Some(row) = stmt
                    .query_row(params![device, *seq as i64], stored_batch)
                    .optional()
                    .map_err(backend)?
                {
                    rows.push(row);
                }
            }
            Ok(rows.into_iter().map(unrolled_batch).collect())
        })
        .await
    }

    async fn add_rollups(&self, folded: &[(String, u64)], rows: &[NewRollup]) -> Result<bool> {
        let folded = folded.to_vec();
        let rows = encoded(rows)?;
        self.write(move |c| {
            let sp = c.savepoint().map_err(backend)?;
            {
                let mut mark = sp
                    .prepare_cached("DELETE FROM metrics_unrolled WHERE device = ?1 AND seq = ?2")
                    .map_err(backend)?;
                for (device, seq) in &folded {
                    if mark
                        .execute(params![device, *seq as i64])
                        .map_err(backend)?
                        != 1
                    {
                        return Ok(false); // dropping the savepoint undoes the marks
                    }
                }
            }
            insert_rows(&sp, &rows)?;
            sp.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn rollups(&self, span: i64, from: i64, until: i64) -> Result<Vec<Rollup>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT id, grp, model, version, span, bucket, figures FROM telemetry_rollups
                     WHERE span = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket, id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![span, from, until], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        NewRollup {
                            group: r.get(1)?,
                            model: r.get(2)?,
                            version: r.get(3)?,
                            span: r.get(4)?,
                            bucket: r.get(5)?,
                            figures: Default::default(),
                        },
                        r.get::<_, String>(6)?,
                    ))
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            rows.into_iter()
                .map(|(id, mut row, figures)| {
                    row.figures = decode_stored("telemetry rollup", &figures)?;
                    Ok(Rollup { id, row })
                })
                .collect()
        })
        .await
    }

    async fn replace_rollups(&self, remove: &[i64], add: &[NewRollup]) -> Result<bool> {
        let remove = remove.to_vec();
        let rows = encoded(add)?;
        self.write(move |c| {
            let sp = c.savepoint().map_err(backend)?;
            for chunk in remove.chunks(IDS_PER_STATEMENT) {
                let marks = vec!["?"; chunk.len()].join(", ");
                let deleted = sp
                    .execute(
                        &format!("DELETE FROM telemetry_rollups WHERE id IN ({marks})"),
                        rusqlite::params_from_iter(chunk),
                    )
                    .map_err(backend)?;
                if deleted != chunk.len() {
                    return Ok(false);
                }
            }
            insert_rows(&sp, &rows)?;
            sp.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn prune_rollups(&self, before: i64) -> Result<u64> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM telemetry_rollups WHERE bucket < ?1",
                params![before],
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }
}
