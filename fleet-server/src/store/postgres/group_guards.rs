//! Guard policies set per group.

use super::*;
use crate::guard_policies::GroupGuard;
use crate::store::GroupGuardStore;

#[async_trait]
impl GroupGuardStore for PostgresStore {
    async fn set_group_guard(&self, guard: &GroupGuard) -> Result<()> {
        let body = encode_stored("a group's guard policy", guard)?;
        self.client()
            .await?
            .execute(
                "INSERT INTO group_guards (grp, model, body) VALUES ($1, $2, $3)
                 ON CONFLICT (grp, model) DO UPDATE SET body = excluded.body",
                &[&guard.group, &guard.model, &body],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn clear_group_guard(&self, group: &str, model: &str) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM group_guards WHERE grp = $1 AND model = $2",
                &[&group, &model],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn group_guards(&self) -> Result<Vec<GroupGuard>> {
        self.client()
            .await?
            .query("SELECT body FROM group_guards ORDER BY grp, model", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|row| decode_stored("group guard policy", row.get::<_, &str>(0)))
            .collect()
    }
}
