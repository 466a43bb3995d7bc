//! The store on PostgreSQL, for fleet-servers that share one database (several replicas, managed
//! databases such as RDS). Same schema (`super::SCHEMA`) and semantics as [`super::sqlite`]; the
//! whole store test suite (`tests/tests/store.rs`) runs against both.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use edgefleet_protocol::DeviceId;
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
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it holds the password.
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
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
        let mut added = 0;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls::pki_types::CertificateDer<'static> =
                cert.map_err(|e| backend(format!("database.ca_file {}: {e}", path.display())))?;
            roots.add(cert).map_err(backend)?;
            added += 1;
        }
        if added == 0 {
            return Err(backend(format!(
                "database.ca_file {}: no PEM certificate in it",
                path.display()
            )));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(backend)?
    .with_root_certificates(roots)
    .with_no_client_auth();
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
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => pg(e),
            other => backend(format!("postgres: {other}")),
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

fn rollout_of(text: &str) -> Result<crate::rollout::Rollout> {
    serde_json::from_str(text).map_err(|e| backend(format!("stored rollout does not parse: {e}")))
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

    async fn add_device(
        &self,
        device: &NewDevice,
        enrollment_hash: &str,
        expires_at: i64,
        now: i64,
        renew: bool,
    ) -> Result<()> {
        let tags = tags_json(&device.tags)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let existing: Option<Option<i64>> = tx
            .query_opt(
                "SELECT enrolled_at FROM devices WHERE id = $1 FOR UPDATE",
                &[&device.id.as_str()],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get(0));
        match judge_add_device(&device.id, existing, renew)? {
            AddDevice::Insert => {
                let inserted = tx
                    .execute(
                        "INSERT INTO devices (id, grp, tags, created_at, enrollment_hash, enrollment_expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&device.id.as_str(), &device.group, &tags, &now, &enrollment_hash, &expires_at],
                    )
                    .await;
                match inserted {
                    Ok(_) => {}
                    // Another replica added it between our check and insert.
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::Conflict {
                            what: format!("device {}", device.id),
                        });
                    }
                    Err(e) => return Err(pg(e)),
                }
            }
            AddDevice::RenewToken => {
                tx.execute(
                    "UPDATE devices SET enrollment_hash = $2, enrollment_expires_at = $3 WHERE id = $1",
                    &[&device.id.as_str(), &enrollment_hash, &expires_at],
                )
                .await
                .map_err(pg)?;
            }
        }
        tx.commit().await.map_err(pg)
    }

    async fn enroll(
        &self,
        id: &DeviceId,
        enrollment_hash: &str,
        credential_hash: &str,
        mosquitto_hash: &str,
        public_key: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let row: Option<(Option<String>, Option<i64>, Option<i64>)> = tx
            .query_opt(
                "SELECT enrollment_hash, enrollment_expires_at, enrolled_at FROM devices
                 WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await
            .map_err(pg)?
            .map(|r| (r.get(0), r.get(1), r.get(2)));
        super::judge_enrollment(row, enrollment_hash, now)
            .map_err(|reason| StoreError::Enrollment { reason })?;
        tx.execute(
            "UPDATE devices SET enrollment_hash = NULL, enrollment_expires_at = NULL,
             enrolled_at = $2, credential_hash = $3, mosquitto_hash = $4, public_key = $5
             WHERE id = $1",
            &[
                &id.as_str(),
                &now,
                &credential_hash,
                &mosquitto_hash,
                &public_key,
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn device_public_key(&self, id: &DeviceId) -> Result<Option<String>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT public_key FROM devices WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(pg)?
            .and_then(|r| r.get::<_, Option<String>>(0)))
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<Device>> {
        self.client()
            .await?
            .query_opt(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"),
                &[&id.as_str()],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(device_row)
            .transpose()
    }

    async fn devices(&self, filter: &DeviceFilter) -> Result<Vec<Device>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices
                     WHERE ($1::text IS NULL OR grp = $1) ORDER BY id"
                ),
                &[&filter.group],
            )
            .await
            .map_err(pg)?;
        let devices = rows.iter().map(device_row).collect::<Result<Vec<_>>>()?;
        Ok(devices
            .into_iter()
            .filter(|d| filter.tag_matches(d))
            .collect())
    }

    async fn device_count(&self) -> Result<u64> {
        let row = self
            .client()
            .await?
            .query_one("SELECT COUNT(*) FROM devices", &[])
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn update_device(
        &self,
        id: &DeviceId,
        group: Option<&str>,
        tags: Option<&BTreeMap<String, String>>,
    ) -> Result<()> {
        let tags = tags.map(tags_json).transpose()?;
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE devices SET grp = COALESCE($2, grp), tags = COALESCE($3, tags) WHERE id = $1",
                &[&id.as_str(), &group, &tags],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: format!("device {id}"),
            });
        }
        Ok(())
    }

    async fn remove_device(&self, id: &DeviceId) -> Result<()> {
        let n = self
            .client()
            .await?
            .execute("DELETE FROM devices WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: format!("device {id}"),
            });
        }
        Ok(())
    }

    async fn device_by_credential(&self, hash: &str) -> Result<Option<DeviceId>> {
        self.client()
            .await?
            .query_opt(
                "SELECT id FROM devices WHERE credential_hash = $1",
                &[&hash],
            )
            .await
            .map_err(pg)?
            .map(|r| DeviceId::new(r.get::<_, String>(0)).map_err(backend))
            .transpose()
    }

    async fn mqtt_credentials(&self) -> Result<Vec<(DeviceId, String)>> {
        self.client()
            .await?
            .query(
                "SELECT id, mosquitto_hash FROM devices WHERE mosquitto_hash IS NOT NULL ORDER BY id",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| Ok((DeviceId::new(r.get::<_, String>(0)).map_err(backend)?, r.get(1))))
            .collect()
    }

    async fn groups(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT grp, COUNT(*) FROM devices GROUP BY grp ORDER BY grp",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    async fn record_reported(&self, reported: &Reported, at: i64) -> Result<bool> {
        let text = encode_stored("reported state", reported)?;
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE devices SET reported = $3, reported_seq = $2, agent_version = $4,
                 last_seen = GREATEST(COALESCE(last_seen, 0), $5)
                 WHERE id = $1 AND reported_seq < $2",
                &[
                    &reported.device.as_str(),
                    &(reported.seq as i64),
                    &text,
                    &reported.agent_version,
                    &at,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    async fn record_event(&self, event: &StoredEvent) -> Result<bool> {
        let message = encode_stored("event", &event.message)?;
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO events (device, message_id, seq, at, message) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (device, message_id) DO NOTHING",
                &[
                    &event.device.as_str(),
                    &event.message.id.as_str(),
                    &(event.seq as i64),
                    &event.at,
                    &message,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    async fn events(&self, id: Option<&DeviceId>, limit: u32) -> Result<Vec<StoredEvent>> {
        self.client()
            .await?
            .query(
                "SELECT device, seq, at, message FROM events WHERE ($1::text IS NULL OR device = $1)
                 ORDER BY at DESC, seq DESC LIMIT $2",
                &[&id.map(DeviceId::as_str), &i64::from(limit)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                let device = r.get::<_, String>(0);
                let seq = r.get::<_, i64>(1) as u64;
                Ok(StoredEvent {
                    message: decode_stored(&format!("event {device}/{seq}"), r.get(3))?,
                    device: DeviceId::new(device).map_err(backend)?,
                    seq,
                    at: r.get(2),
                })
            })
            .collect()
    }

    async fn record_metrics(&self, batch: &MetricsBatch, received_us: i64) -> Result<bool> {
        let text = encode_stored("metrics batch", batch)?;
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO metrics_batches (device, seq, at, received, batch)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device, seq) DO NOTHING",
                &[
                    &batch.device.as_str(),
                    &(batch.seq as i64),
                    &received_us.div_euclid(1_000_000),
                    &received_us,
                    &text,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    async fn metrics(&self, id: Option<&DeviceId>, since: i64) -> Result<Vec<StoredMetrics>> {
        let id = id.map(|d| d.as_str().to_owned());
        let rows = self
            .client()
            .await?
            .query(
                "SELECT device, seq, received, batch FROM metrics_batches
                 WHERE ($1::TEXT IS NULL OR device = $1) AND at >= $2 ORDER BY received, seq",
                &[&id, &since],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let batch = device_document(r.get(0), "metrics batch", r.get(3))?;
                Some(StoredMetrics::received(batch, r.get(2)))
            })
            .collect())
    }

    async fn prune_metrics(&self, before: i64) -> Result<u64> {
        self.client()
            .await?
            .execute("DELETE FROM metrics_batches WHERE at < $1", &[&before])
            .await
            .map_err(pg)
    }

    async fn touch(&self, id: &DeviceId, at: i64) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE devices SET last_seen = GREATEST(COALESCE(last_seen, 0), $2) WHERE id = $1",
                &[&id.as_str(), &at],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn set_desired(&self, desired: &Desired) -> Result<()> {
        let id = &desired.device;
        let revision = desired.revision;
        let text = encode_stored("desired state", desired)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let n = tx
            .execute(
                "UPDATE devices SET desired = $3, desired_revision = $2
                 WHERE id = $1 AND desired_revision < $2",
                &[&id.as_str(), &(revision as i64), &text],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::Conflict {
                what: format!(
                    "desired state revision {revision} of device {id} (unknown device, or a newer revision is stored)"
                ),
            });
        }
        for target in desired.models.iter().map(|m| &m.target) {
            tx.execute(
                "INSERT INTO assignments (device, target) VALUES ($1, $2)
                 ON CONFLICT (device, target) DO NOTHING",
                &[&id.as_str(), target],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn all_desired(&self) -> Result<Vec<Desired>> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT id, desired FROM devices WHERE desired IS NOT NULL ORDER BY id",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .filter_map(|r| device_document(r.get(0), "desired state", r.get(1)))
            .collect())
    }

    async fn is_assigned(&self, id: &DeviceId, target: &str) -> Result<bool> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT 1 FROM assignments WHERE device = $1 AND target = $2",
                &[&id.as_str(), &target],
            )
            .await
            .map_err(pg)?
            .is_some())
    }

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

    async fn save_rollout(&self, rollout: &mut crate::rollout::Rollout) -> Result<()> {
        let expected = rollout.revision;
        let mut next = rollout.clone();
        next.revision = expected + 1;
        let body = serde_json::to_string(&next).map_err(backend)?;
        let client = self.client().await?;
        let n = if expected == 0 {
            client
                .execute(
                    "INSERT INTO rollouts (id, model, active, created_at, body, revision)
                     VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (id) DO NOTHING",
                    &[
                        &next.id,
                        &next.spec.model,
                        &i64::from(next.state.is_active()),
                        &next.created_at,
                        &body,
                    ],
                )
                .await
        } else {
            client
                .execute(
                    "UPDATE rollouts SET active = $2, body = $3, revision = $4
                     WHERE id = $1 AND revision = $5",
                    &[
                        &next.id,
                        &i64::from(next.state.is_active()),
                        &body,
                        &(expected as i64 + 1),
                        &(expected as i64),
                    ],
                )
                .await
        }
        .map_err(pg)?;
        if n != 1 {
            return Err(super::stale_rollout(&rollout.id));
        }
        rollout.revision = expected + 1;
        Ok(())
    }

    async fn rollout(&self, id: &str) -> Result<Option<crate::rollout::Rollout>> {
        self.client()
            .await?
            .query_opt("SELECT body FROM rollouts WHERE id = $1", &[&id])
            .await
            .map_err(pg)?
            .map(|r| rollout_of(r.get(0)))
            .transpose()
    }

    async fn rollouts(&self, active_only: bool) -> Result<Vec<crate::rollout::Rollout>> {
        self.client()
            .await?
            .query(
                "SELECT body FROM rollouts WHERE (NOT $1::boolean OR active = 1)
                 ORDER BY created_at DESC, id DESC",
                &[&active_only],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| rollout_of(r.get(0)))
            .collect()
    }

    async fn lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        // One statement: the row lock of INSERT ... ON CONFLICT makes take-or-renew atomic.
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
                &[&name, &holder, &(now_ms + ttl_ms), &now_ms],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn expired_leases(&self, prefix: &str, now_ms: i64) -> Result<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT name FROM leases WHERE name LIKE $1 AND expires_at <= $2",
                &[&format!("{prefix}%"), &now_ms],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
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
            return Err(super::concurrent_publication());
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
