//! The model registry and the TUF repository's metadata.

use super::*;
use crate::store::RegistryStore;

#[async_trait]
impl RegistryStore for PostgresStore {
    async fn record_release(&self, r: &Release) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO releases (target, model, version, sequence, sha256, length, stage, pushed_by, pushed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (target) DO UPDATE SET sha256 = excluded.sha256, length = excluded.length,
                 sequence = excluded.sequence, pushed_by = excluded.pushed_by, pushed_at = excluded.pushed_at",
                &[
                    &r.target,
                    &r.model,
                    &r.version,
                    &(r.sequence as i64),
                    &r.sha256,
                    &(r.length as i64),
                    &r.stage.as_str(),
                    &r.pushed_by,
                    &r.pushed_at,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn releases(&self) -> Result<Vec<Release>> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT target, model, version, sequence, sha256, length, stage, pushed_by, pushed_at
                 FROM releases ORDER BY model, sequence",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(release_row)
            .collect())
    }

    async fn set_stage(&self, model: &str, version: &str, stage: Stage) -> Result<()> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE releases SET stage = $3 WHERE model = $1 AND version = $2",
                &[&model, &version, &stage.as_str()],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: format!("release {model} {version}"),
            });
        }
        Ok(())
    }

    async fn tuf_file(&self, file: &str) -> Result<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT body FROM tuf_metadata WHERE file = $1", &[&file])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn publish_tuf(
        &self,
        files: Vec<(String, String)>,
        based_on: Option<u64>,
        timestamp_version: u64,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // The row lock taken here makes a concurrent publication wait, then find the version
        // moved and claim nothing.
        let claimed = match based_on {
            None => {
                tx.execute(
                    "INSERT INTO tuf_metadata (file, body, version) VALUES ('timestamp.json', '', $1)
                     ON CONFLICT (file) DO NOTHING",
                    &[&(timestamp_version as i64)],
                )
                .await
            }
            Some(v) => {
                tx.execute(
                    "UPDATE tuf_metadata SET version = $1
                     WHERE file = 'timestamp.json' AND version = $2",
                    &[&(timestamp_version as i64), &(v as i64)],
                )
                .await
            }
        }
        .map_err(pg)?;
        if claimed != 1 {
            return Err(crate::store::concurrent_publication());
        }
        for (file, body) in &files {
            tx.execute(
                "INSERT INTO tuf_metadata (file, body, version) VALUES ($1, $2, 0)
                 ON CONFLICT (file) DO UPDATE SET body = excluded.body",
                &[file, body],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }
}
