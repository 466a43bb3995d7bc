//! Rollouts, and the leases that share background work between servers.

use super::*;
use crate::store::RolloutStore;

#[async_trait]
impl RolloutStore for SqliteStore {
    async fn save_rollout(&self, rollout: &mut crate::rollout::Rollout) -> Result<()> {
        let expected = rollout.revision;
        let write = self.rollout_rows.write_of(rollout)?;
        let record = serde_json::to_string(&rollout.release_record()).map_err(backend)?;
        let (id, model, active, created, target) = (
            rollout.id.clone(),
            rollout.spec.model.clone(),
            i64::from(rollout.state.is_active()),
            rollout.created_at,
            rollout.spec.target.clone(),
        );
        let saved = self
            .write(move |c| {
                let (body, summary) = (&write.body, &write.summary);
                let n = if expected == 0 {
                    c.execute(
                        "INSERT INTO rollouts (id, model, active, created_at, body, revision, target, record, summary)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8) ON CONFLICT (id) DO NOTHING",
                        params![id, model, active, created, body, target, record, summary],
                    )
                } else {
                    c.execute(
                        "UPDATE rollouts SET active = ?2, body = ?3, revision = ?4, target = ?6, record = ?7,
                         summary = ?8 WHERE id = ?1 AND revision = ?5",
                        params![
                            id,
                            active,
                            body,
                            expected as i64 + 1,
                            expected as i64,
                            target,
                            record,
                            summary
                        ],
                    )
                }
                .map_err(backend)?;
                if n != 1 {
                    return Ok(false);
                }
                write_device_rows(c, &id, &write)?;
                Ok(true)
            })
            .await?;
        if !saved {
            return Err(crate::store::stale_rollout(&rollout.id));
        }
        rollout.revision = expected + 1;
        self.rollout_rows.remember(rollout);
        Ok(())
    }

    async fn rollout(&self, id: &str) -> Result<Option<crate::rollout::Rollout>> {
        let id = id.to_owned();
        let rows = self.rollout_rows.clone();
        self.read(move |c| {
            // One snapshot for the rollout's row and its device rows.
            let c = c.unchecked_transaction().map_err(backend)?;
            let body: Option<String> = c
                .query_row(
                    "SELECT body FROM rollouts WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            body.map(|b| rows.assemble(&b, |id| device_rows(&c, id)))
                .transpose()
        })
        .await
    }

    async fn active_rollouts(&self) -> Result<Vec<crate::rollout::Rollout>> {
        let rows = self.rollout_rows.clone();
        self.read(move |c| {
            let c = c.unchecked_transaction().map_err(backend)?;
            let mut stmt = c
                .prepare(
                    "SELECT body FROM rollouts WHERE active = 1
                     ORDER BY created_at DESC, id DESC",
                )
                .map_err(backend)?;
            let bodies = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            bodies
                .iter()
                .map(|b| rows.assemble(b, |id| device_rows(&c, id)))
                .collect()
        })
        .await
    }

    async fn rollout_page(
        &self,
        id: &str,
        page: crate::rollout::DevicePage,
    ) -> Result<Option<crate::rollout::RolloutView>> {
        let id = id.to_owned();
        let rows = self.rollout_rows.clone();
        self.read(move |c| {
            let c = c.unchecked_transaction().map_err(backend)?;
            let found: Option<(Option<String>, String)> = c
                .query_row(
                    "SELECT summary, body FROM rollouts WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(backend)?;
            let Some((summary, body)) = found else {
                return Ok(None);
            };
            let Some(summary) = summary else {
                // Saved before summaries and device rows: the whole rollout, paged here.
                let whole = rows.assemble(&body, |id| device_rows(&c, id))?;
                return Ok(Some(crate::rollout::RolloutView::paged(&whole, page)));
            };
            let problem_count = if page.problems_only {
                let count: i64 = c
                    .query_row(
                        "SELECT COUNT(*) FROM rollout_devices WHERE rollout = ?1 AND problem >= 1",
                        params![id],
                        |r| r.get(0),
                    )
                    .map_err(backend)?;
                Some(usize::try_from(count).unwrap_or(0))
            } else {
                None
            };
            let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
            let from = i64::try_from(page.from).unwrap_or(i64::MAX);
            // Without a problem filter a page is a range of the primary key (rows are numbered
            // from 0 in the rollout's order).
            let (sql, bounds) = if page.problems_only {
                (
                    "SELECT body FROM rollout_devices WHERE rollout = ?1 AND problem >= 1
                     ORDER BY idx LIMIT ?2 OFFSET ?3",
                    [limit, from],
                )
            } else {
                (
                    "SELECT body FROM rollout_devices WHERE rollout = ?1 AND idx >= ?2 AND idx < ?3
                     ORDER BY idx",
                    [from, from.saturating_add(limit)],
                )
            };
            let devices = c
                .prepare_cached(sql)
                .map_err(backend)?
                .query_map(params![id, bounds[0], bounds[1]], |r| r.get(0))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(backend)?;
            crate::store::rollout_rows::RolloutRows::page_view(
                &summary,
                &devices,
                problem_count,
                page,
            )
            .map(Some)
        })
        .await
    }

    async fn rollout_summaries(
        &self,
        active_only: bool,
        limit: usize,
    ) -> Result<Vec<crate::store::RolloutSummary>> {
        let rows = self.rollout_rows.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let c = c.unchecked_transaction().map_err(backend)?;
            let mut stmt = c
                .prepare(
                    "SELECT revision, summary, id FROM rollouts WHERE (?1 = 0 OR active = 1)
                     ORDER BY created_at DESC, id DESC LIMIT ?2",
                )
                .map_err(backend)?;
            let found = stmt
                .query_map(params![i64::from(active_only), limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            found
                .into_iter()
                .map(|(revision, summary, id)| {
                    rows.summary(revision.max(0) as u64, summary.as_deref(), || {
                        let body: String = c
                            .query_row(
                                "SELECT body FROM rollouts WHERE id = ?1",
                                params![id],
                                |r| r.get(0),
                            )
                            .map_err(backend)?;
                        rows.assemble(&body, |id| device_rows(&c, id))
                    })
                })
                .collect()
        })
        .await
    }

    async fn release_records(
        &self,
        target: Option<&str>,
    ) -> Result<Vec<crate::rollout::ReleaseRecord>> {
        let target = target.map(str::to_owned);
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT record FROM rollouts
                     WHERE record IS NOT NULL AND (?1 IS NULL OR target = ?1)
                     ORDER BY created_at, id",
                )
                .map_err(backend)?;
            let records = stmt
                .query_map(params![target], |r| r.get::<_, String>(0))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            records
                .iter()
                .map(|r| serde_json::from_str(r).map_err(backend))
                .collect()
        })
        .await
    }

    async fn lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    LEASE_SQL_SQLITE,
                    params![name, holder, now_ms + ttl_ms, now_ms],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |c| {
            c.execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn expired_leases(&self, prefix: &str, now_ms: i64) -> Result<Vec<String>> {
        let pattern = format!("{prefix}%");
        self.read(move |c| {
            let mut statement = c
                .prepare("SELECT name FROM leases WHERE name LIKE ?1 AND expires_at <= ?2")
                .map_err(backend)?;
            let names = statement
                .query_map(params![pattern, now_ms], |row| row.get(0))
                .map_err(backend)?
                .collect::<std::result::Result<Vec<String>, _>>()
                .map_err(backend)?;
            Ok(names)
        })
        .await
    }
}

/// Writes what a save changed of a rollout's device rows.
fn write_device_rows(
    c: &Connection,
    rollout: &str,
    write: &crate::store::rollout_rows::RolloutWrite,
) -> Result<()> {
    if write.whole {
        c.execute(
            "DELETE FROM rollout_devices WHERE rollout = ?1",
            params![rollout],
        )
        .map_err(backend)?;
    } else {
        c.execute(
            "DELETE FROM rollout_devices WHERE rollout = ?1 AND idx >= ?2",
            params![rollout, write.keep_below],
        )
        .map_err(backend)?;
    }
    let mut upsert = c
        .prepare_cached(
            "INSERT INTO rollout_devices (rollout, idx, body, problem) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (rollout, idx) DO UPDATE SET body = excluded.body, problem = excluded.problem",
        )
        .map_err(backend)?;
    for (index, body, problem) in &write.rows {
        upsert
            .execute(params![rollout, index, body, i64::from(*problem)])
            .map_err(backend)?;
    }
    Ok(())
}

/// A rollout's device rows, in order.
fn device_rows(c: &Connection, rollout: &str) -> Result<Vec<String>> {
    let mut stmt = c
        .prepare_cached("SELECT body FROM rollout_devices WHERE rollout = ?1 ORDER BY idx")
        .map_err(backend)?;
    stmt.query_map(params![rollout], |r| r.get(0))
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(backend)
}
