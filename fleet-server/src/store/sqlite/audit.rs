//! The audit log.

use super::*;
use crate::audit::{AuditEntry, AuditFilter, AuditRecord, seal, unreadable};
use crate::store::AuditStore;

/// An entry that no longer decodes is listed as unreadable and named by the chain's walk: one
/// edited row must not hide the rest of the log.
fn chain_entry(seq: i64, body: &str) -> AuditEntry {
    serde_json::from_str(body).unwrap_or_else(|_| unreadable(seq as u64))
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, record: AuditRecord) -> Result<AuditEntry> {
        self.write(move |c| {
            // One connection serialises appends; the transaction keeps read and write together.
            let tx = c.savepoint().map_err(backend)?;
            let last: Option<(i64, String)> = tx
                .query_row(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(backend)?;
            let entry = seal(
                last.as_ref().map(|(seq, hash)| (*seq as u64, hash.as_str())),
                record,
            );
            tx.execute(
                "INSERT INTO audit (seq, at, actor, route, body, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    entry.seq as i64,
                    entry.record.at,
                    entry.record.actor,
                    entry.record.route,
                    encode_stored("an audit entry", &entry)?,
                    entry.hash
                ],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(entry)
        })
        .await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let filter = filter.clone();
        self.read(move |c| {
            let mut statement = c
                .prepare(
                    "SELECT seq, body FROM audit
                     WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR route = ?2)
                       AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR seq < ?4)
                     ORDER BY seq DESC LIMIT ?5",
                )
                .map_err(backend)?;
            let bodies = statement
                .query_map(
                    params![
                        filter.actor,
                        filter.route,
                        filter.since,
                        filter.before.map(|b| b as i64),
                        filter.limit()
                    ],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(bodies
                .iter()
                .map(|(seq, body)| chain_entry(*seq, body))
                .collect())
        })
        .await
    }

    async fn audit_chain(&self) -> Result<Vec<AuditEntry>> {
        self.read(move |c| {
            let mut statement = c
                .prepare("SELECT seq, body FROM audit ORDER BY seq")
                .map_err(backend)?;
            let rows = statement
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(rows
                .iter()
                .map(|(seq, body)| chain_entry(*seq, body))
                .collect())
        })
        .await
    }

    async fn prune_audit(&self, before: i64) -> Result<u64> {
        self.write(move |c| {
            let n = c
                .execute("DELETE FROM audit WHERE at < ?1", params![before])
                .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }
}
