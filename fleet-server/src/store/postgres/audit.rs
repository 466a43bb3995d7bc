//! The audit log.

use deadpool_postgres::{Client, Pool};
use tokio::sync::{mpsc, oneshot};

use super::grouped::next_group;
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

/// Appends to the audit log, grouped: every request an operator or a device makes is audited,
/// and the chain has one order across every server, so each append holds the database-wide
/// lock for its transaction. One append per transaction held the audited requests of every
/// server to ~1,000 a second: ~500 devices enrolled a second, registration and enrollment
/// appending one each (a fifth of SQLite's pace, whose one writer commits in groups). Here one
/// task takes whatever entries are waiting, seals them in the order handed over and stores them
/// in one transaction under one lock.
#[derive(Debug, Clone)]
pub(super) struct Appender {
    records: mpsc::Sender<Append>,
}

struct Append {
    record: AuditRecord,
    reply: oneshot::Sender<Result<AuditEntry>>,
}

/// At most this many entries share a transaction.
const MAX_GROUP: usize = 256;

impl Appender {
    /// Starts the appending task on `pool`; it ends once every handle is dropped (with its store)
    /// and the entries queued before are stored.
    pub(super) fn start(pool: Pool) -> Self {
        let (records, mut queue) = mpsc::channel::<Append>(MAX_GROUP * 4);
        tokio::spawn(async move {
            while let Some(group) = next_group(&mut queue, MAX_GROUP).await {
                let (records, replies): (Vec<_>, Vec<_>) =
                    group.into_iter().map(|a| (a.record, a.reply)).unzip();
                match append_group(&pool, records).await {
                    Ok(entries) => {
                        for (reply, entry) in replies.into_iter().zip(entries) {
                            let _ = reply.send(Ok(entry));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { records }
    }

    async fn append(&self, record: AuditRecord) -> Result<AuditEntry> {
        let (reply, answer) = oneshot::channel();
        self.records
            .send(Append { record, reply })
            .await
            .map_err(|_| backend("the audit log's appender has stopped"))?;
        answer
            .await
            .map_err(|_| backend("the audit log's appender stopped before answering"))?
    }
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Append")
            .field("record", &self.record)
            .finish()
    }
}

/// Seals `records` after the chain's last entry, in order, and stores them in one transaction.
/// Nothing here depends on one record rather than another (no constraint but the sequence the
/// lock keeps), so a failure is the database's and fails the group.
async fn append_group(pool: &Pool, records: Vec<AuditRecord>) -> Result<Vec<AuditEntry>> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let appended = append_on(&mut client, records).await;
    if appended.is_err() {
        // Most likely the connection was lost, and back in the pool it could look open for a
        // moment and fail the next group too: a new one costs little beside a missing entry.
        drop(deadpool_postgres::Object::take(client));
    }
    appended
}

async fn append_on(client: &mut Client, records: Vec<AuditRecord>) -> Result<Vec<AuditEntry>> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
        .await
        .map_err(pg)?;
    let mut last = tx
        .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])
        .await
        .map_err(pg)?
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, String>(1)));
    let mut entries = Vec::with_capacity(records.len());
    for record in records {
        let entry = seal(
            last.as_ref().map(|(seq, hash)| (*seq, hash.as_str())),
            record,
        );
        last = Some((entry.seq, entry.hash.clone()));
        entries.push(entry);
    }
    let (mut seqs, mut ats, mut actors, mut routes, mut bodies, mut hashes) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for entry in &entries {
        seqs.push(entry.seq as i64);
        ats.push(entry.record.at);
        actors.push(entry.record.actor.as_str());
        routes.push(entry.record.route.as_str());
        bodies.push(encode_stored("an audit entry", entry)?);
        hashes.push(entry.hash.as_str());
    }
    let statement = tx
        .prepare_cached(
            "INSERT INTO audit (seq, at, actor, route, body, hash)
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                                  $6::TEXT[])",
        )
        .await
        .map_err(pg)?;
    tx.execute(
        &statement,
        &[&seqs, &ats, &actors, &routes, &bodies, &hashes],
    )
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(entries)
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, record: AuditRecord) -> Result<AuditEntry> {
        self.audit.append(record).await
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
