//! Rollouts, and the leases that share background work between servers.

use super::*;
use crate::store::RolloutStore;

#[async_trait]
impl RolloutStore for PostgresStore {
    async fn save_rollout(&self, rollout: &mut crate::rollout::Rollout) -> Result<()> {
        let expected = rollout.revision;
        let write = self.rollout_rows.write_of(rollout)?;
        let record = serde_json::to_string(&rollout.release_record()).map_err(backend)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let n = if expected == 0 {
            tx.execute(
                "INSERT INTO rollouts (id, model, active, created_at, body, revision, target, record, summary)
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                &[
                    &rollout.id,
                    &rollout.spec.model,
                    &i64::from(rollout.state.is_active()),
                    &rollout.created_at,
                    &write.body,
                    &rollout.spec.target,
                    &record,
                    &write.summary,
                ],
            )
            .await
        } else {
            tx.execute(
                "UPDATE rollouts SET active = $2, body = $3, revision = $4, target = $6, record = $7,
                 summary = $8 WHERE id = $1 AND revision = $5",
                &[
                    &rollout.id,
                    &i64::from(rollout.state.is_active()),
                    &write.body,
                    &(expected as i64 + 1),
                    &(expected as i64),
                    &rollout.spec.target,
                    &record,
                    &write.summary,
                ],
            )
            .await
        }
        .map_err(pg)?;
        if n != 1 {
            return Err(crate::store::stale_rollout(&rollout.id));
        }
        let deleted = if write.whole {
            tx.execute(
                "DELETE FROM rollout_devices WHERE rollout = $1",
                &[&rollout.id],
            )
            .await
        } else {
            tx.execute(
                "DELETE FROM rollout_devices WHERE rollout = $1 AND idx >= $2",
                &[&rollout.id, &write.keep_below],
            )
            .await
        };
        deleted.map_err(pg)?;
        // One statement for every changed device, however many.
        let indexes: Vec<i64> = write.rows.iter().map(|(index, _, _)| *index).collect();
        let bodies: Vec<&str> = write
            .rows
            .iter()
            .map(|(_, body, _)| body.as_str())
            .collect();
        let problems: Vec<i64> = write
            .rows
            .iter()
            .map(|(_, _, problem)| i64::from(*problem))
            .collect();
        tx.execute(
            "INSERT INTO rollout_devices (rollout, idx, body, problem)
             SELECT $1, i, b, p FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::BIGINT[]) AS u (i, b, p)
             ON CONFLICT (rollout, idx) DO UPDATE SET body = excluded.body, problem = excluded.problem",
            &[&rollout.id, &indexes, &bodies, &problems],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        rollout.revision = expected + 1;
        self.rollout_rows.remember(rollout);
        Ok(())
    }

    async fn release_records(
        &self,
        target: Option<&str>,
    ) -> Result<Vec<crate::rollout::ReleaseRecord>> {
        self.client()
            .await?
            .query(
                "SELECT record FROM rollouts
                 WHERE record IS NOT NULL AND ($1::TEXT IS NULL OR target = $1)
                 ORDER BY created_at, id",
                &[&target],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).map_err(backend))
            .collect()
    }

    async fn rollout(&self, id: &str) -> Result<Option<crate::rollout::Rollout>> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let Some(row) = tx
            .query_opt("SELECT body FROM rollouts WHERE id = $1", &[&id])
            .await
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let body: String = row.get(0);
        self.whole_rollout(&tx, &body).await.map(Some)
    }

    async fn active_rollouts(&self) -> Result<Vec<crate::rollout::Rollout>> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let rows = tx
            .query(
                "SELECT body FROM rollouts WHERE active = 1 ORDER BY created_at DESC, id DESC",
                &[],
            )
            .await
            .map_err(pg)?;
        let mut rollouts = Vec::with_capacity(rows.len());
        for row in rows {
            let body: String = row.get(0);
            rollouts.push(self.whole_rollout(&tx, &body).await?);
        }
        Ok(rollouts)
    }

    async fn rollout_page(
        &self,
        id: &str,
        page: crate::rollout::DevicePage,
    ) -> Result<Option<crate::rollout::RolloutView>> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let Some(row) = tx
            .query_opt("SELECT summary, body FROM rollouts WHERE id = $1", &[&id])
            .await
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let summary: Option<String> = row.get(0);
        let Some(summary) = summary else {
            // Saved before summaries and device rows: the whole rollout, paged here.
            let whole = self.whole_rollout(&tx, row.get(1)).await?;
            return Ok(Some(crate::rollout::RolloutView::paged(&whole, page)));
        };
        let problem_count = if page.problems_only {
            let count: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM rollout_devices WHERE rollout = $1 AND problem >= 1",
                    &[&id],
                )
                .await
                .map_err(pg)?
                .get(0);
            Some(usize::try_from(count).unwrap_or(0))
        } else {
            None
        };
        let from = i64::try_from(page.from).unwrap_or(i64::MAX);
        let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
        let rows = if page.problems_only {
            tx.query(
                "SELECT body FROM rollout_devices WHERE rollout = $1 AND problem >= 1
                 ORDER BY idx LIMIT $2 OFFSET $3",
                &[&id, &limit, &from],
            )
            .await
        } else {
            // Rows are numbered from 0 in the rollout's order, so a page is a range of the
            // primary key: no plan can read the rollout's other rows to find it.
            tx.query(
                "SELECT body FROM rollout_devices WHERE rollout = $1 AND idx >= $2 AND idx < $3
                 ORDER BY idx",
                &[&id, &from, &from.saturating_add(limit)],
            )
            .await
        };
        let devices: Vec<String> = rows.map_err(pg)?.iter().map(|r| r.get(0)).collect();
        crate::store::rollout_rows::RolloutRows::page_view(&summary, &devices, problem_count, page)
            .map(Some)
    }

    async fn rollout_summaries(
        &self,
        active_only: bool,
        limit: usize,
    ) -> Result<Vec<crate::store::RolloutSummary>> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let rows = tx
            .query(
                "SELECT revision, summary, body FROM rollouts WHERE (NOT $1::boolean OR active = 1)
                 ORDER BY created_at DESC, id DESC LIMIT $2",
                &[&active_only, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(pg)?;
        let mut summaries = Vec::with_capacity(rows.len());
        for row in rows {
            let revision: i64 = row.get(0);
            let summary: Option<String> = row.get(1);
            let whole = match summary {
                Some(_) => None,
                None => Some(self.whole_rollout(&tx, row.get(2)).await?),
            };
            summaries.push(self.rollout_rows.summary(
                revision.max(0) as u64,
                summary.as_deref(),
                || whole.ok_or_else(|| backend("a rollout without a summary was not read")),
            )?);
        }
        Ok(summaries)
    }

    async fn lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        // One statement: the row lock of INSERT ... ON CONFLICT makes take-or-renew atomic.
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
                &[&name, &holder, &(now_ms + ttl_ms), &now_ms],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn expired_leases(&self, prefix: &str, now_ms: i64) -> Result<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT name FROM leases WHERE name LIKE $1 AND expires_at <= $2",
                &[&format!("{prefix}%"), &now_ms],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// A read-only transaction that sees one snapshot: a rollout's row and its device rows agree.
async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)
}

impl PostgresStore {
    /// The rollout whose row is `body`, with its devices: from the body, as known at its
    /// revision, or from its device rows read in `tx`'s snapshot.
    async fn whole_rollout(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        body: &str,
    ) -> Result<crate::rollout::Rollout> {
        let mut rollout = self.rollout_rows.parse(body)?;
        if !self.rollout_rows.complete(&mut rollout) {
            let rows: Vec<String> = tx
                .query(
                    "SELECT body FROM rollout_devices WHERE rollout = $1 ORDER BY idx",
                    &[&rollout.id],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            self.rollout_rows.with_rows(&mut rollout, &rows)?;
        }
        Ok(rollout)
    }
}
