//! The default store: one SQLite file in WAL mode. Writes go to one writer thread, which commits
//! the writes waiting at a time together ([`writer`]: SQLite takes one writer at a time anyway);
//! reads go to a few read-only connections beside it ([`readers`]), so they neither wait for
//! writes nor hold them up.

mod alerts;
mod audit;
mod devices;
mod group_guards;
mod labels;
mod readers;
mod registry;
mod rollouts;
mod rollups;
mod samples;
mod state;
mod tokens;
mod writer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use edgefleet_protocol::DeviceId;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AddDevice, Device, DeviceFilter, NewDevice, OperatorToken, Release, Result, Stage, Store,
    StoreError, StoredEvent, StoredMetrics, decode_stored, device_document, encode_stored,
    judge_add_device,
};
use crate::auth::Role;
use edgefleet_protocol::message::{Desired, MetricsBatch, Reported};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: writer::Writer,
    readers: Arc<readers::Readers>,
    rollout_rows: Arc<crate::store::rollout_rows::RolloutRows>,
}

/// Read-only connections opened beside the writer unless the configuration says otherwise.
pub const DEFAULT_READERS: usize = 4;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn role_of(text: &str) -> Result<Role> {
    Role::parse(text).ok_or_else(|| backend(format!("unknown role {text:?} in the database")))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations and opens
    /// [`DEFAULT_READERS`] read connections.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_readers(path, DEFAULT_READERS)
    }

    /// As [`SqliteStore::open`], with `readers` read-only connections beside the writer.
    pub fn open_with_readers(path: &Path, readers: usize) -> Result<Self> {
        let mut conn = Connection::open(path)
            .map_err(|e| backend(format!("cannot open {}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        migrate(&mut conn)?;
        Ok(Self {
            readers: Arc::new(readers::Readers::open(path, readers)?),
            writer: writer::Writer::start(conn)?,
            rollout_rows: Arc::default(),
        })
    }

    /// Runs a query that changes nothing on a read connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.readers.run(f).await
    }

    /// Runs a write on the writer thread; answers once its transaction has committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.run(f).await
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
        .map_err(backend)?;
    let applied: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(backend)?;
    if applied > super::SCHEMA_VERSION {
        return Err(backend(format!(
            "the database is at schema version {applied}, newer than this server knows ({}); \
             run the newer fleet-server",
            super::SCHEMA_VERSION
        )));
    }
    let migrations = super::migrations("id INTEGER PRIMARY KEY");
    for (index, sql) in migrations.iter().enumerate().skip(applied as usize) {
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES (?1)",
            params![index as i64 + 1],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
    }
    Ok(())
}

const DEVICE_COLUMNS: &str = "id, grp, tags, created_at, enrolled_at, last_seen, agent_version, \
                              reported, desired, desired_revision";

fn device_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    let id: String = row.get(0)?;
    let tags: String = row.get(2)?;
    Ok(Device {
        reported: device_document(&id, "reported state", row.get(7)?),
        desired: device_document(&id, "desired state", row.get(8)?),
        id: DeviceId::new(id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        group: row.get(1)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        created_at: row.get(3)?,
        enrolled_at: row.get(4)?,
        last_seen: row.get(5)?,
        agent_version: row.get(6)?,
        desired_revision: row.get::<_, i64>(9)? as u64,
    })
}

fn release_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Release> {
    let stage: String = row.get(6)?;
    Ok(Release {
        target: row.get(0)?,
        model: row.get(1)?,
        version: row.get(2)?,
        sequence: row.get::<_, i64>(3)? as u64,
        sha256: row.get(4)?,
        length: row.get::<_, i64>(5)? as u64,
        stage: Stage::parse(&stage).unwrap_or(Stage::Staging),
        pushed_by: row.get(7)?,
        pushed_at: row.get(8)?,
    })
}

fn tags_json(tags: &BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(tags).map_err(backend)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.write(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await?;
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }
}

/// Moves timestamp.json's version from `?2` to `?1`, or creates it at `?1` when `?2` is NULL.
const TUF_CLAIM_SQL_SQLITE: [&str; 2] = [
    "INSERT INTO tuf_metadata (file, body, version) VALUES ('timestamp.json', '', ?1)
     ON CONFLICT (file) DO NOTHING",
    "UPDATE tuf_metadata SET version = ?1 WHERE file = 'timestamp.json' AND version = ?2",
];

/// Takes a free or expired lease, or renews one's own; changes no row otherwise.
const LEASE_SQL_SQLITE: &str = "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
     WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4";
