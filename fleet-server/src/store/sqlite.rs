//! The default store: one SQLite file in WAL mode. Calls run on tokio's blocking pool behind one
//! connection; a pilot fleet's write rate is far below what that serialises (see BENCHMARKS.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

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
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn role_of(text: &str) -> Result<Role> {
    Role::parse(text).ok_or_else(|| backend(format!("unknown role {text:?} in the database")))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
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
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| backend("a database call panicked earlier"))?;
            f(&mut guard)
        })
        .await
        .map_err(backend)?
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
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }

    async fn create_operator_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        now: i64,
    ) -> Result<i64> {
        let (name, hash) = (name.to_owned(), hash.to_owned());
        self.with(move |c| {
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
        self.with(move |c| {
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
        self.with(|c| {
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
        self.with(move |c| {
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

    async fn add_device(
        &self,
        device: &NewDevice,
        enrollment_hash: &str,
        expires_at: i64,
        now: i64,
        renew: bool,
    ) -> Result<()> {
        let device = device.clone();
        let hash = enrollment_hash.to_owned();
        self.with(move |c| {
            let tags = tags_json(&device.tags)?;
            let existing: Option<Option<i64>> = c
                .query_row(
                    "SELECT enrolled_at FROM devices WHERE id = ?1",
                    params![device.id.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            match judge_add_device(&device.id, existing, renew)? {
                AddDevice::Insert => {
                    c.execute(
                        "INSERT INTO devices (id, grp, tags, created_at, enrollment_hash, enrollment_expires_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![device.id.as_str(), device.group, tags, now, hash, expires_at],
                    )
                    .map_err(backend)?;
                }
                AddDevice::RenewToken => {
                    c.execute(
                        "UPDATE devices SET enrollment_hash = ?2, enrollment_expires_at = ?3 WHERE id = ?1",
                        params![device.id.as_str(), hash, expires_at],
                    )
                    .map_err(backend)?;
                }
            }
            Ok(())
        })
        .await
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
        let id = id.clone();
        let (enrollment_hash, credential_hash, mosquitto_hash) = (
            enrollment_hash.to_owned(),
            credential_hash.to_owned(),
            mosquitto_hash.to_owned(),
        );
        let public_key = public_key.map(str::to_owned);
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let row: Option<(Option<String>, Option<i64>, Option<i64>)> = tx
                .query_row(
                    "SELECT enrollment_hash, enrollment_expires_at, enrolled_at FROM devices WHERE id = ?1",
                    params![id.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(backend)?;
            super::judge_enrollment(row, &enrollment_hash, now)
            .map_err(|reason| StoreError::Enrollment { reason })?;
            tx.execute(
                "UPDATE devices SET enrollment_hash = NULL, enrollment_expires_at = NULL,
                 enrolled_at = ?2, credential_hash = ?3, mosquitto_hash = ?4, public_key = ?5
                 WHERE id = ?1",
                params![id.as_str(), now, credential_hash, mosquitto_hash, public_key],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn device_public_key(&self, id: &DeviceId) -> Result<Option<String>> {
        let id = id.clone();
        self.with(move |c| {
            c.query_row(
                "SELECT public_key FROM devices WHERE id = ?1",
                params![id.as_str()],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(backend)
        })
        .await
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<Device>> {
        let id = id.clone();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"),
                params![id.as_str()],
                device_row,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn devices(&self, filter: &DeviceFilter) -> Result<Vec<Device>> {
        let filter = filter.clone();
        self.with(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices
                     WHERE (?1 IS NULL OR grp = ?1) ORDER BY id"
                ))
                .map_err(backend)?;
            let devices = stmt
                .query_map(params![filter.group], device_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(devices
                .into_iter()
                .filter(|d| filter.tag_matches(d))
                .collect())
        })
        .await
    }

    async fn device_count(&self) -> Result<u64> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM devices", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(backend)
        })
        .await
    }

    async fn update_device(
        &self,
        id: &DeviceId,
        group: Option<&str>,
        tags: Option<&BTreeMap<String, String>>,
    ) -> Result<()> {
        let id = id.clone();
        let group = group.map(str::to_owned);
        let tags = tags.map(tags_json).transpose()?;
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE devices SET grp = COALESCE(?2, grp), tags = COALESCE(?3, tags) WHERE id = ?1",
                    params![id.as_str(), group, tags],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: format!("device {id}"),
                });
            }
            Ok(())
        })
        .await
    }

    async fn remove_device(&self, id: &DeviceId) -> Result<()> {
        let id = id.clone();
        self.with(move |c| {
            let n = c
                .execute("DELETE FROM devices WHERE id = ?1", params![id.as_str()])
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: format!("device {id}"),
                });
            }
            Ok(())
        })
        .await
    }

    async fn device_by_credential(&self, hash: &str) -> Result<Option<DeviceId>> {
        let hash = hash.to_owned();
        self.with(move |c| {
            let id: Option<String> = c
                .query_row(
                    "SELECT id FROM devices WHERE credential_hash = ?1",
                    params![hash],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            id.map(|id| DeviceId::new(id).map_err(backend)).transpose()
        })
        .await
    }

    async fn mqtt_credentials(&self) -> Result<Vec<(DeviceId, String)>> {
        self.with(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT id, mosquitto_hash FROM devices WHERE mosquitto_hash IS NOT NULL ORDER BY id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            rows.into_iter()
                .map(|(id, hash)| Ok((DeviceId::new(id).map_err(backend)?, hash)))
                .collect()
        })
        .await
    }

    async fn groups(&self) -> Result<BTreeMap<String, u64>> {
        self.with(|c| {
            let mut stmt = c
                .prepare("SELECT grp, COUNT(*) FROM devices GROUP BY grp ORDER BY grp")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<BTreeMap<_, _>>>()
                .map_err(backend)?;
            Ok(rows)
        })
        .await
    }

    async fn record_reported(&self, reported: &Reported, at: i64) -> Result<bool> {
        let id = reported.device.clone();
        let seq = reported.seq;
        let agent_version = reported.agent_version.clone();
        let text = encode_stored("reported state", reported)?;
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE devices SET reported = ?3, reported_seq = ?2, agent_version = ?4,
                     last_seen = MAX(COALESCE(last_seen, 0), ?5)
                     WHERE id = ?1 AND reported_seq < ?2",
                    params![id.as_str(), seq as i64, text, agent_version, at],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn record_event(&self, event: &StoredEvent) -> Result<bool> {
        let event = event.clone();
        let message = encode_stored("event", &event.message)?;
        self.with(move |c| {
            let n = c
                .execute(
                    "INSERT INTO events (device, message_id, seq, at, message) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (device, message_id) DO NOTHING",
                    params![
                        event.device.as_str(),
                        event.message.id.as_str(),
                        event.seq as i64,
                        event.at,
                        message
                    ],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn events(&self, id: Option<&DeviceId>, limit: u32) -> Result<Vec<StoredEvent>> {
        let id = id.map(|d| d.as_str().to_owned());
        self.with(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT device, seq, at, message FROM events WHERE (?1 IS NULL OR device = ?1)
                     ORDER BY at DESC, seq DESC LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![id, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            rows.into_iter()
                .map(|(device, seq, at, message)| {
                    Ok(StoredEvent {
                        device: DeviceId::new(device.clone()).map_err(backend)?,
                        seq: seq as u64,
                        at,
                        message: decode_stored(&format!("event {device}/{seq}"), &message)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn record_metrics(&self, batch: &MetricsBatch, received_us: i64) -> Result<bool> {
        let id = batch.device.clone();
        let seq = batch.seq;
        let text = encode_stored("metrics batch", batch)?;
        self.with(move |c| {
            let n = c
                .execute(
                    "INSERT INTO metrics_batches (device, seq, at, received, batch)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (device, seq) DO NOTHING",
                    params![
                        id.as_str(),
                        seq as i64,
                        received_us.div_euclid(1_000_000),
                        received_us,
                        text
                    ],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn metrics(&self, id: Option<&DeviceId>, since: i64) -> Result<Vec<StoredMetrics>> {
        let id = id.map(|d| d.as_str().to_owned());
        self.with(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT device, seq, received, batch FROM metrics_batches
                     WHERE (?1 IS NULL OR device = ?1) AND at >= ?2 ORDER BY received, seq",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![id, since], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(rows
                .into_iter()
                .filter_map(|(device, _, received_us, batch)| {
                    let batch = device_document(&device, "metrics batch", Some(batch))?;
                    Some(StoredMetrics::received(batch, received_us))
                })
                .collect())
        })
        .await
    }

    async fn prune_metrics(&self, before: i64) -> Result<u64> {
        self.with(move |c| {
            let n = c
                .execute("DELETE FROM metrics_batches WHERE at < ?1", params![before])
                .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }

    async fn touch(&self, id: &DeviceId, at: i64) -> Result<()> {
        let id = id.clone();
        self.with(move |c| {
            c.execute(
                "UPDATE devices SET last_seen = MAX(COALESCE(last_seen, 0), ?2) WHERE id = ?1",
                params![id.as_str(), at],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn set_desired(&self, desired: &Desired) -> Result<()> {
        let id = desired.device.clone();
        let revision = desired.revision;
        let text = encode_stored("desired state", desired)?;
        let targets: Vec<String> = desired.models.iter().map(|m| m.target.clone()).collect();
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let n = tx
                .execute(
                    "UPDATE devices SET desired = ?3, desired_revision = ?2
                     WHERE id = ?1 AND desired_revision < ?2",
                    params![id.as_str(), revision as i64, text],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::Conflict {
                    what: format!(
                        "desired state revision {revision} of device {id} (unknown device, or a newer revision is stored)"
                    ),
                });
            }
            for target in &targets {
                tx.execute(
                    "INSERT INTO assignments (device, target) VALUES (?1, ?2)
                     ON CONFLICT (device, target) DO NOTHING",
                    params![id.as_str(), target],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn all_desired(&self) -> Result<Vec<Desired>> {
        self.with(|c| {
            let mut stmt = c
                .prepare("SELECT id, desired FROM devices WHERE desired IS NOT NULL ORDER BY id")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, desired)| device_document(&id, "desired state", Some(desired)))
                .collect())
        })
        .await
    }

    async fn is_assigned(&self, id: &DeviceId, target: &str) -> Result<bool> {
        let id = id.clone();
        let target = target.to_owned();
        self.with(move |c| {
            c.query_row(
                "SELECT 1 FROM assignments WHERE device = ?1 AND target = ?2",
                params![id.as_str(), target],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(backend)
        })
        .await
    }

    async fn record_release(&self, release: &Release) -> Result<()> {
        let r = release.clone();
        self.with(move |c| {
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
        self.with(|c| {
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
        self.with(move |c| {
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

    async fn save_rollout(&self, rollout: &mut crate::rollout::Rollout) -> Result<()> {
        let expected = rollout.revision;
        let mut next = rollout.clone();
        next.revision = expected + 1;
        let body = serde_json::to_string(&next).map_err(backend)?;
        let (id, model, active, created) = (
            next.id.clone(),
            next.spec.model.clone(),
            i64::from(next.state.is_active()),
            next.created_at,
        );
        let saved = self
            .with(move |c| {
                let n = if expected == 0 {
                    c.execute(
                        "INSERT INTO rollouts (id, model, active, created_at, body, revision)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1) ON CONFLICT (id) DO NOTHING",
                        params![id, model, active, created, body],
                    )
                } else {
                    c.execute(
                        "UPDATE rollouts SET active = ?2, body = ?3, revision = ?4
                         WHERE id = ?1 AND revision = ?5",
                        params![id, active, body, expected as i64 + 1, expected as i64],
                    )
                }
                .map_err(backend)?;
                Ok(n == 1)
            })
            .await?;
        if !saved {
            return Err(super::stale_rollout(&rollout.id));
        }
        rollout.revision = expected + 1;
        Ok(())
    }

    async fn rollout(&self, id: &str) -> Result<Option<crate::rollout::Rollout>> {
        let id = id.to_owned();
        self.with(move |c| {
            let body: Option<String> = c
                .query_row(
                    "SELECT body FROM rollouts WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            body.map(|b| rollout_of(&b)).transpose()
        })
        .await
    }

    async fn rollouts(&self, active_only: bool) -> Result<Vec<crate::rollout::Rollout>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT body FROM rollouts WHERE (?1 = 0 OR active = 1)
                     ORDER BY created_at DESC, id DESC",
                )
                .map_err(backend)?;
            let bodies = stmt
                .query_map(params![i64::from(active_only)], |r| r.get::<_, String>(0))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            bodies.iter().map(|b| rollout_of(b)).collect()
        })
        .await
    }

    async fn lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.with(move |c| {
            let n = c
                .execute(
                    LEASE_SQL_SQLITE,
                    params![name, holder, now_ms + ttl_ms, now_ms],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.with(move |c| {
            c.execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn expired_leases(&self, prefix: &str, now_ms: i64) -> Result<Vec<String>> {
        let pattern = format!("{prefix}%");
        self.with(move |c| {
            let mut statement = c
                .prepare("SELECT name FROM leases WHERE name LIKE ?1 AND expires_at <= ?2")
                .map_err(backend)?;
            let names = statement
                .query_map(params![pattern, now_ms], |row| row.get(0))
                .map_err(backend)?
                .collect::<std::result::Result<Vec<String>, _>>()
                .map_err(backend)?;
            Ok(names)
        })
        .await
    }

    async fn tuf_file(&self, file: &str) -> Result<Option<String>> {
        let file = file.to_owned();
        self.with(move |c| {
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
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let claimed = match based_on {
                None => tx.execute(TUF_CLAIM_SQL_SQLITE[0], params![timestamp_version as i64]),
                Some(v) => tx.execute(
                    TUF_CLAIM_SQL_SQLITE[1],
                    params![timestamp_version as i64, v as i64],
                ),
            }
            .map_err(backend)?;
            if claimed != 1 {
                return Err(super::concurrent_publication());
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

fn rollout_of(text: &str) -> Result<crate::rollout::Rollout> {
    serde_json::from_str(text).map_err(|e| backend(format!("stored rollout does not parse: {e}")))
}
