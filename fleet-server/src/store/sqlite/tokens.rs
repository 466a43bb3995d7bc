//! Operator tokens.

use super::*;
use crate::store::TokenStore;

#[async_trait]
impl TokenStore for SqliteStore {
    async fn create_operator_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        now: i64,
    ) -> Result<i64> {
        let (name, hash) = (name.to_owned(), hash.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO operator_tokens (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, role.as_str(), hash, now],
            )
            .map_err(backend)?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn operator_by_hash(&self, hash: &str) -> Result<Option<OperatorToken>> {
        let hash = hash.to_owned();
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT id, name, role, created_at FROM operator_tokens
                     WHERE hash = ?1 AND revoked_at IS NULL",
                    params![hash],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )
                .optional()
                .map_err(backend)?;
            row.map(|(id, name, role, created_at)| {
                Ok(OperatorToken {
                    id,
                    name,
                    role: role_of(&role)?,
                    created_at,
                })
            })
            .transpose()
        })
        .await
    }

    async fn operator_tokens(&self) -> Result<Vec<OperatorToken>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT id, name, role, created_at FROM operator_tokens
                     WHERE revoked_at IS NULL ORDER BY id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            rows.into_iter()
                .map(|(id, name, role, created_at)| {
                    Ok(OperatorToken {
                        id,
                        name,
                        role: role_of(&role)?,
                        created_at,
                    })
                })
                .collect()
        })
        .await
    }

    async fn revoke_operator_token(&self, id: i64, now: i64) -> Result<()> {
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE operator_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, now],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: format!("operator token {id}"),
                });
            }
            Ok(())
        })
        .await
    }
}
