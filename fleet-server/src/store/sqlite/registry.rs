//! The model registry and the TUF repository's metadata.

use super::*;
use crate::store::RegistryStore;

#[async_trait]
impl RegistryStore for SqliteStore {
    async fn record_release(&self, release: &Release) -> Result<()> {
        let r = release.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO releases (target, model, version, sequence, sha256, length, stage, pushed_by, pushed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (target) DO UPDATE SET sha256 = excluded.sha256, length = excluded.length,
                 sequence = excluded.sequence, pushed_by = excluded.pushed_by, pushed_at = excluded.pushed_at",
                params![
                    r.target,
                    r.model,
                    r.version,
                    r.sequence as i64,
                    r.sha256,
                    r.length as i64,
                    r.stage.as_str(),
                    r.pushed_by,
                    r.pushed_at
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn releases(&self) -> Result<Vec<Release>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT target, model, version, sequence, sha256, length, stage, pushed_by, pushed_at
                     FROM releases ORDER BY model, sequence",
                )
                .map_err(backend)?;
            stmt.query_map([], release_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
        })
        .await
    }

    async fn set_stage(&self, model: &str, version: &str, stage: Stage) -> Result<()> {
        let (model, version) = (model.to_owned(), version.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE releases SET stage = ?3 WHERE model = ?1 AND version = ?2",
                    params![model, version, stage.as_str()],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: format!("release {model} {version}"),
                });
            }
            Ok(())
        })
        .await
    }

    async fn tuf_file(&self, file: &str) -> Result<Option<String>> {
        let file = file.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT body FROM tuf_metadata WHERE file = ?1",
                params![file],
                |row| row.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn publish_tuf(
        &self,
        files: Vec<(String, String)>,
        based_on: Option<u64>,
        timestamp_version: u64,
    ) -> Result<()> {
        self.write(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let claimed = match based_on {
                None => tx.execute(TUF_CLAIM_SQL_SQLITE[0], params![timestamp_version as i64]),
                Some(v) => tx.execute(
                    TUF_CLAIM_SQL_SQLITE[1],
                    params![timestamp_version as i64, v as i64],
                ),
            }
            .map_err(backend)?;
            if claimed != 1 {
                return Err(crate::store::concurrent_publication());
            }
            for (file, body) in files {
                tx.execute(
                    "INSERT INTO tuf_metadata (file, body, version) VALUES (?1, ?2, 0)
                     ON CONFLICT (file) DO UPDATE SET body = excluded.body",
                    params![file, body],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }
}
