//! The store on PostgreSQL, for fleet-servers that share one database (several replicas, managed
//! databases such as RDS). Same schema (`super::SCHEMA`) and semantics as [`super::sqlite`]; the
//! whole store test suite (`tests/tests/store.rs`) runs against both.

mod alerts;
mod audit;
mod devices;
mod group_guards;
mod grouped;
mod labels;
mod registry;
mod rollouts;
mod rollups;
mod samples;
mod state;
mod tokens;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use edgefleet_protocol::DeviceId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::{
    AddDevice, Device, DeviceFilter, NewDevice, OperatorToken, Release, Result, Stage, Store,
    StoreError, StoredEvent, StoredMetrics, decode_stored, device_document, encode_stored,
    judge_add_device,
};
use crate::auth::Role;
use edgefleet_protocol::message::{Desired, MetricsBatch, Reported};

/// Serialises migrations between replicas starting at once (an arbitrary constant of ours).
const MIGRATION_LOCK: i64 = 0x0065_6467_6566_6c74;

#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    rollout_rows: std::sync::Arc<crate::store::rollout_rows::RolloutRows>,
    grouped: grouped::Grouped,
    /// Appends to the audit log, grouped ([`audit::Appender`]).
    audit: audit::Appender,
    /// Set on the broker ingester's view ([`Store::for_ingester`]): the connections it may hold
    /// at once.
    lane: Option<Arc<Semaphore>>,
}

/// A pooled connection, with the ingester's permit for it while the ingester holds it.
struct Conn {
    object: deadpool_postgres::Object,
    _lane: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::Object;

    fn deref(&self) -> &Self::Target {
        &self.object
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.object
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it holds the password.
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .field("ingester_lane", &self.lane.is_some())
            .finish()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    // tokio-postgres' Display is only "db error"; the server's message says what was wrong.
    match e.as_db_error() {
        Some(db) => {
            StoreError::Backend(format!("postgres: {} ({})", db.message(), db.code().code()))
        }
        None => StoreError::Backend(format!("postgres: {e}")),
    }
}

/// A connection the pool could not give: PostgreSQL's own message when it refused one.
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => backend(format!("postgres: {other}")),
    }
}

fn role_of(text: &str) -> Result<Role> {
    Role::parse(text).ok_or_else(|| backend(format!("unknown role {text:?} in the database")))
}

/// TLS for `sslmode=prefer|require`: the system's roots plus `ca_file` (e.g. the RDS bundle).
fn tls(ca_file: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| backend(format!("database.ca_file {}: {e}", path.display())))?;
        crate::tls_roots::add_pem(&mut roots, &pem)
            .map_err(|e| backend(format!("database.ca_file {}: {e}", path.display())))?;
    }
    let config = crate::tls_roots::client_config(roots).map_err(backend)?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db?sslmode=require`) with a pool of
    /// `pool_size` connections and applies pending migrations.
    pub async fn connect(url: &str, pool_size: usize, ca_file: Option<&Path>) -> Result<Self> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| backend(format!("database.url does not parse: {e}")))?;
        let manager = Manager::from_config(
            config,
            tls(ca_file)?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(backend)?;
        let store = Self {
            grouped: grouped::Grouped::start(pool.clone()),
            audit: audit::Appender::start(pool.clone()),
            pool,
            rollout_rows: Default::default(),
            lane: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<Conn> {
        let lane = match &self.lane {
            Some(lane) => Some(
                lane.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| backend("the ingester's connections were closed"))?,
            ),
            None => None,
        };
        let object = self.pool.get().await.map_err(pool_error)?;
        Ok(Conn {
            object,
            _lane: lane,
        })
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)",
        )
        .await
        .map_err(pg)?;
        let applied: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if applied > super::SCHEMA_VERSION {
            return Err(backend(format!(
                "the database is at schema version {applied}, newer than this server knows ({}); \
                 run the newer fleet-server",
                super::SCHEMA_VERSION
            )));
        }
        let migrations =
            super::migrations("id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY");
        for (index, sql) in migrations.iter().enumerate().skip(applied as usize) {
            tx.batch_execute(sql).await.map_err(pg)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&(index as i64 + 1)],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }
}

const DEVICE_COLUMNS: &str = "id, grp, tags, created_at, enrolled_at, last_seen, agent_version, \
                              reported, desired, desired_revision";

fn device_row(row: &Row) -> Result<Device> {
    let id = row.get::<_, String>(0);
    Ok(Device {
        reported: device_document(&id, "reported state", row.get(7)),
        desired: device_document(&id, "desired state", row.get(8)),
        id: DeviceId::new(id).map_err(backend)?,
        group: row.get(1),
        tags: serde_json::from_str(row.get::<_, &str>(2)).unwrap_or_default(),
        created_at: row.get(3),
        enrolled_at: row.get(4),
        last_seen: row.get(5),
        agent_version: row.get(6),
        desired_revision: row.get::<_, i64>(9) as u64,
    })
}

fn release_row(row: &Row) -> Release {
    Release {
        target: row.get(0),
        model: row.get(1),
        version: row.get(2),
        sequence: row.get::<_, i64>(3) as u64,
        sha256: row.get(4),
        length: row.get::<_, i64>(5) as u64,
        stage: Stage::parse(row.get(6)).unwrap_or(Stage::Staging),
        pushed_by: row.get(7),
        pushed_at: row.get(8),
    }
}

fn token_row(row: &Row) -> Result<OperatorToken> {
    Ok(OperatorToken {
        id: row.get(0),
        name: row.get(1),
        role: role_of(row.get(2))?,
        created_at: row.get(3),
    })
}

fn tags_json(tags: &BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(tags).map_err(backend)
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        self.client()
            .await?
            .query_one("SELECT 1", &[])
            .await
            .map(|_| ())
            .map_err(pg)
    }

    /// Half the pool: device messages' writes are grouped ([`grouped`]) and hold no connection
    /// while they wait, but the rest of what storing one takes (a device's key, samples) does.
    fn for_ingester(&self) -> Option<Arc<dyn Store>> {
        let connections = (self.pool.status().max_size / 2).max(1);
        Some(Arc::new(Self {
            lane: Some(Arc::new(Semaphore::new(connections))),
            ..self.clone()
        }))
    }
}
