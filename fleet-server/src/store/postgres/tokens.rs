//! Operator tokens.

use super::*;
use crate::store::TokenStore;

#[async_trait]
impl TokenStore for PostgresStore {
    async fn create_operator_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        now: i64,
    ) -> Result<i64> {
        let row = self
            .client()
            .await?
            .query_one(
                "INSERT INTO operator_tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4)
                 RETURNING id",
                &[&name, &role.as_str(), &hash, &now],
            )
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    async fn operator_by_hash(&self, hash: &str) -> Result<Option<OperatorToken>> {
        self.client()
            .await?
            .query_opt(
                "SELECT id, name, role, created_at FROM operator_tokens
                 WHERE hash = $1 AND revoked_at IS NULL",
                &[&hash],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(token_row)
            .transpose()
    }

    async fn operator_tokens(&self) -> Result<Vec<OperatorToken>> {
        self.client()
            .await?
            .query(
                "SELECT id, name, role, created_at FROM operator_tokens
                 WHERE revoked_at IS NULL ORDER BY id",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(token_row)
            .collect()
    }

    async fn revoke_operator_token(&self, id: i64, now: i64) -> Result<()> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE operator_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &now],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: format!("operator token {id}"),
            });
        }
        Ok(())
    }
}
