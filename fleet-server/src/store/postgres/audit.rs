//! The audit log.

use super::*;
use crate::audit::{AuditEntry, AuditFilter, AuditRecord, seal, unreadable};
use crate::store::AuditStore;

/// Serialises appends across every server sharing the database (the chain has one order).
const AUDIT_LOCK: i64 = 0x6564_6765_6175_6474; // "edgeaudt"

/// An entry that no longer decodes is listed as unreadable and named by the chain's walk: one
/// edited row must not hide the rest of the log.
fn chain_entry(seq: i64, body: &str) -> AuditEntry {
    serde_json::from_str(body).unwrap_or_else(|_| unreadable(seq as u64))
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, record: AuditRecord) -> Result<AuditEntry> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
            .await
            .map_err(pg)?;
        let last = tx
            .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])
            .await
            .map_err(pg)?
            .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)));
        let entry = seal(
            last.as_ref()
                .map(|(seq, hash)| (*seq as u64, hash.as_str())),
            record,
        );
        tx.execute(
            "INSERT INTO audit (seq, at, actor, route, body, hash) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &(entry.seq as i64),
                &entry.record.at,
                &entry.record.actor,
                &entry.record.route,
                &encode_stored("an audit entry", &entry)?,
                &entry.hash,
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(entry)
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let before = filter.before.map(|b| b as i64);
        let limit = i64::from(filter.limit());
        self.client()
            .await?
            .query(
                "SELECT seq, body FROM audit
                 WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR route = $2)
                   AND ($3::bigint IS NULL OR at >= $3) AND ($4::bigint IS NULL OR seq < $4)
                 ORDER BY seq DESC LIMIT $5",
                &[&filter.actor, &filter.route, &filter.since, &before, &limit],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| Ok(chain_entry(r.get(0), r.get(1))))
            .collect()
    }

    async fn audit_chain(&self) -> Result<Vec<AuditEntry>> {
        self.client()
            .await?
            .query("SELECT seq, body FROM audit ORDER BY seq", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| Ok(chain_entry(r.get(0), r.get(1))))
            .collect()
    }

    async fn prune_audit(&self, before: i64) -> Result<u64> {
        self.client()
            .await?
            .execute("DELETE FROM audit WHERE at < $1", &[&before])
            .await
            .map_err(pg)
    }
}
