//! Rollouts, and the leases that share background work between servers.

use super::*;
use crate::store::RolloutStore;

#[async_trait]
impl RolloutStore for PostgresStore {
    async fn save_rollout(&self, rollout: &mut crate::rollout::Rollout) -> Result<()> {
        let expected = rollout.revision;
        let mut next = rollout.clone();
        next.revision = expected + 1;
        let body = serde_json::to_string(&next).map_err(backend)?;
        let record = serde_json::to_string(&next.release_record()).map_err(backend)?;
        let client = self.client().await?;
        let n = if expected == 0 {
            client
                .execute(
                    "INSERT INTO rollouts (id, model, active, created_at, body, revision, target, record)
                     VALUES ($1, $2, $3, $4, $5, 1, $6, $7) ON CONFLICT (id) DO NOTHING",
                    &[
                        &next.id,
                        &next.spec.model,
                        &i64::from(next.state.is_active()),
                        &next.created_at,
                        &body,
                        &next.spec.target,
                        &record,
                    ],
                )
                .await
        } else {
            client
                .execute(
                    "UPDATE rollouts SET active = $2, body = $3, revision = $4, target = $6, record = $7
                     WHERE id = $1 AND revision = $5",
                    &[
                        &next.id,
                        &i64::from(next.state.is_active()),
                        &body,
                        &(expected as i64 + 1),
                        &(expected as i64),
                        &next.spec.target,
                        &record,
                    ],
                )
                .await
        }
        .map_err(pg)?;
        if n != 1 {
            return Err(crate::store::stale_rollout(&rollout.id));
        }
        rollout.revision = expected + 1;
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
        self.client()
            .await?
            .query_opt("SELECT body FROM rollouts WHERE id = $1", &[&id])
            .await
            .map_err(pg)?
            .map(|r| rollout_of(r.get(0)))
            .transpose()
    }

    async fn rollouts(&self, active_only: bool) -> Result<Vec<crate::rollout::Rollout>> {
        self.client()
            .await?
            .query(
                "SELECT body FROM rollouts WHERE (NOT $1::boolean OR active = 1)
                 ORDER BY created_at DESC, id DESC",
                &[&active_only],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| rollout_of(r.get(0)))
            .collect()
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
