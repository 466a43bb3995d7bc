//! Guard policies set per group.

use super::*;
use crate::guard_policies::GroupGuard;
use crate::store::GroupGuardStore;

#[async_trait]
impl GroupGuardStore for SqliteStore {
    async fn set_group_guard(&self, guard: &GroupGuard) -> Result<()> {
        let body = encode_stored("a group's guard policy", guard)?;
        let (group, model) = (guard.group.clone(), guard.model.clone());
        self.write(move |c| {
            c.execute(
                "INSERT INTO group_guards (grp, model, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (grp, model) DO UPDATE SET body = excluded.body",
                params![group, model, body],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn clear_group_guard(&self, group: &str, model: &str) -> Result<bool> {
        let (group, model) = (group.to_owned(), model.to_owned());
        self.write(move |c| {
            c.execute(
                "DELETE FROM group_guards WHERE grp = ?1 AND model = ?2",
                params![group, model],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn group_guards(&self) -> Result<Vec<GroupGuard>> {
        let bodies = self
            .read(|c| {
                let mut statement = c
                    .prepare_cached("SELECT body FROM group_guards ORDER BY grp, model")
                    .map_err(backend)?;
                let rows = statement
                    .query_map([], |r| r.get::<_, String>(0))
                    .map_err(backend)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
            })
            .await?;
        bodies
            .iter()
            .map(|b| decode_stored("group guard policy", b))
            .collect()
    }
}
