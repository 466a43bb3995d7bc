//! Rollouts, and the leases that share background work between servers.

use super::*;
use crate::store::RolloutStore;

#[async_trait]
impl RolloutStore for SqliteStore {
    async fn save_rollout(&self, rollout: &mut crate::rollout::Rollout) -> Result<()> {
        let expected = rollout.revision;
        let mut next = rollout.clone();
        next.revision = expected + 1;
        let body = serde_json::to_string(&next).map_err(backend)?;
        let record = serde_json::to_string(&next.release_record()).map_err(backend)?;
        let (id, model, active, created, target) = (
            next.id.clone(),
            next.spec.model.clone(),
            i64::from(next.state.is_active()),
            next.created_at,
            next.spec.target.clone(),
        );
        let saved = self
            .write(move |c| {
                let n = if expected == 0 {
                    c.execute(
                        "INSERT INTO rollouts (id, model, active, created_at, body, revision, target, record)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                        params![id, model, active, created, body, target, record],
                    )
                } else {
                    c.execute(
                        "UPDATE rollouts SET active = ?2, body = ?3, revision = ?4, target = ?6, record = ?7
                         WHERE id = ?1 AND revision = ?5",
                        params![
                            id,
                            active,
                            body,
                            expected as i64 + 1,
                            expected as i64,
                            target,
                            record
                        ],
                    )
                }
                .map_err(backend)?;
                Ok(n == 1)
            })
            .await?;
        if !saved {
            return Err(crate::store::stale_rollout(&rollout.id));
        }
        rollout.revision = expected + 1;
        Ok(())
    }

    async fn rollout(&self, id: &str) -> Result<Option<crate::rollout::Rollout>> {
        let id = id.to_owned();
        self.read(move |c| {
            let body: Option<String> = c
                .query_row(
                    "SELECT body FROM rollouts WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            body.map(|b| rollout_of(&b)).transpose()
        })
        .await
    }

    async fn rollouts(&self, active_only: bool) -> Result<Vec<crate::rollout::Rollout>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT body FROM rollouts WHERE (?1 = 0 OR active = 1)
                     ORDER BY created_at DESC, id DESC",
                )
                .map_err(backend)?;
            let bodies = stmt
                .query_map(params![i64::from(active_only)], |r| r.get::<_, String>(0))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            bodies.iter().map(|b| rollout_of(b)).collect()
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
