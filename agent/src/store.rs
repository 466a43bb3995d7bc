//! The model store: content-addressed model files under the data dir and a SQLite database
//! (WAL) that holds, per model, the active and previous version, the sequence floor, the
//! in-flight install and a journal of every transition.
//!
//! Crash safety: an install's state is journaled before its side effects; files are written to
//! `staging/`, fsynced and renamed into `models/<model>/<sha256>/`; the active/previous pointers
//! flip in one transaction. Whatever the moment of a crash, [`Store::recover`] leaves exactly one
//! good version active and the previous one intact.
//!
//! One `Mutex<Connection>` owns the database; callers in async code go through
//! `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use edgefleet_protocol::target::ModelTargetMeta;
use edgefleet_tuf::client::VerifiedArtifact;
use rusqlite::{Connection, OptionalExtension, params};

use crate::lifecycle::{self, Event, InstallState, Next, Outcome};

mod recovery;
mod refused;
mod schema;
mod shadow;
#[cfg(test)]
mod tests;
mod trials;
pub use recovery::{Recovered, Resumed};
pub use refused::Refused;
pub use schema::version_key;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("model {model:?} already has an install in flight ({state}); wait for it to finish")]
    Busy { model: String, state: InstallState },
    #[error("model {model:?} has no install in flight")]
    NoInstall { model: String },
    #[error("corrupt store record for {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::IllegalTransition),
    #[error(
        "not enough disk space in {path}: {needed} bytes needed (artifact and a margin of {margin}), {available} available"
    )]
    DiskFull {
        path: PathBuf,
        needed: u64,
        available: u64,
        margin: u64,
    },
}

/// A version in the store: a signed target (its name, its artifact's sha256 and the verified
/// metadata it was installed with). Versions are told apart by [`StoredVersion::key`]; their
/// files by the artifact's sha256, so versions with the same bytes share one file.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVersion {
    pub sha256: String,
    pub target: String,
    pub meta: ModelTargetMeta,
}

impl StoredVersion {
    /// The version a verified target would be once stored.
    pub fn of(target: &edgefleet_tuf::client::ModelTarget) -> Self {
        Self {
            sha256: target.sha256_hex.clone(),
            target: target.name.clone(),
            meta: target.meta.clone(),
        }
    }

    /// This version's identity in the store (see [`version_key`]).
    pub fn key(&self) -> String {
        version_key(&self.target, &self.sha256, &self.meta)
    }
}

/// Per-model state, as `GET /v1/models` and the reported state show it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRecord {
    pub model: String,
    pub active: Option<StoredVersion>,
    pub previous: Option<StoredVersion>,
    pub floor: u64,
    pub install: Option<(StoredVersion, InstallState)>,
    pub last_outcome: Option<Outcome>,
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    db_path: PathBuf,
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let root = data_dir.join("store");
        for dir in [root.join("models"), root.join("staging")] {
            std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let db_path = data_dir.join("agent.db");
        let db = |source| StoreError::Db {
            path: db_path.clone(),
            source,
        };
        let mut conn = Connection::open(&db_path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        // FULL: a committed pointer flip survives power loss, not just a process crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        schema::migrate(&mut conn).map_err(|e| match e {
            schema::MigrateError::Db(source) => db(source),
            schema::MigrateError::Meta(row) => StoreError::Corrupt {
                what: format!("stored metadata of {}", row.target),
                detail: format!("{}; the store cannot be migrated", row.detail),
            },
        })?;
        conn.execute_batch(trials::SCHEMA).map_err(db)?;
        conn.execute_batch(refused::SCHEMA).map_err(db)?;
        conn.execute_batch(shadow::SCHEMA).map_err(db)?;
        Ok(Self {
            root,
            db_path,
            conn: Mutex::new(conn),
        })
    }

    fn db_err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Db {
            path: self.db_path.clone(),
            source,
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Corrupt {
            what: "database handle".into(),
            detail: "a thread panicked while holding it".into(),
        })?;
        f(&mut conn)
    }

    pub fn version_dir(&self, model: &str, sha256: &str) -> PathBuf {
        self.root.join("models").join(model).join(sha256)
    }

    /// Whether the model file with this sha256 is stored for `model` (by a version in place or
    /// in flight): a release that ships it again needs no download. What it holds is checked
    /// again when it loads.
    pub fn has_artifact(&self, model: &str, sha256: &str) -> bool {
        self.version_dir(model, sha256).join("model.onnx").is_file()
    }

    /// Refuses to stage `size` bytes unless the data dir keeps `margin` bytes free afterwards.
    pub fn check_free_space(&self, size: u64, margin: u64) -> Result<(), StoreError> {
        let stat = rustix::fs::statvfs(&self.root).map_err(|e| StoreError::Io {
            path: self.root.clone(),
            source: e.into(),
        })?;
        let available = stat.f_bavail.saturating_mul(stat.f_frsize);
        let needed = size.saturating_add(margin);
        if available < needed {
            return Err(StoreError::DiskFull {
                path: self.root.clone(),
                needed,
                available,
                margin,
            });
        }
        Ok(())
    }

    /// Journals the start of an install (state `staging`). Fails if one is already in flight.
    pub fn begin(&self, version: &StoredVersion, now_unix: u64) -> Result<(), StoreError> {
        let meta = serde_json::to_string(&version.meta).map_err(|e| StoreError::Corrupt {
            what: version.target.clone(),
            detail: e.to_string(),
        })?;
        let model = version.meta.model.to_string();
        let err = self.db_err();
        self.with(|conn| {
            let tx = conn.transaction().map_err(&err)?;
            if let Some(state) = tx
                .query_row("SELECT state FROM install WHERE model = ?1", [&model], |r| r.get::<_, String>(0))
                .optional()
                .map_err(&err)?
            {
                return Err(StoreError::Busy {
                    model,
                    state: InstallState::parse(&state).unwrap_or(InstallState::Staging),
                });
            }
            tx.execute("INSERT OR IGNORE INTO models (name) VALUES (?1)", [&model]).map_err(&err)?;
            tx.execute(
                "INSERT INTO install (model, key, sha256, target, meta, state, started_unix) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![model, version.key(), version.sha256, version.target, meta, InstallState::Staging.as_str(), now_unix as i64],
            )
            .map_err(&err)?;
            journal(&tx, &model, &version.sha256, &version.target, InstallState::Staging.as_str(), None, now_unix).map_err(&err)?;
            tx.commit().map_err(&err)
        })
    }

    /// Moves a verified artifact into its content-addressed directory, atomically (a directory
    /// rename) and durably (synced). The artifact's file must be on the store's file system: the
    /// TUF client downloads into `store/staging`. The metadata lives in the database only: one
    /// file may serve several versions.
    pub fn write_files(
        &self,
        version: &StoredVersion,
        artifact: VerifiedArtifact,
    ) -> Result<(), StoreError> {
        let model = version.meta.model.as_str();
        if self.has_artifact(model, &version.sha256) {
            return Ok(());
        }
        let dest = self.version_dir(model, &version.sha256);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let staging = self
            .root
            .join("staging")
            .join(format!("{model}-{}", version.sha256));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let model_path = staging.join("model.onnx");
        artifact.persist(&model_path).map_err(io(&model_path))?;
        sync_dir(&staging).map_err(io(&staging))?;
        let parent = dest.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        std::fs::rename(&staging, &dest).map_err(io(&dest))?;
        sync_dir(&parent).map_err(io(&parent))?;
        Ok(())
    }

    /// Applies a lifecycle event to the model's in-flight install in one transaction, including
    /// the pointer flips of activation and rollback, and journals it. Returns where it led.
    pub fn transition(
        &self,
        model: &str,
        event: Event,
        detail: Option<&str>,
        now_unix: u64,
    ) -> Result<Next, StoreError> {
        let err = self.db_err();
        let next = self.with(|conn| {
            let tx = conn.transaction().map_err(&err)?;
            let row: Option<(String, String, String, String, String, Option<String>)> = tx
                .query_row(
                    "SELECT key, sha256, target, meta, state, previous_before FROM install WHERE model = ?1",
                    [model],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()
                .map_err(&err)?;
            let Some((key, sha, target, meta, state, previous_before)) = row else {
                return Err(StoreError::NoInstall { model: model.into() });
            };
            let state = InstallState::parse(&state).ok_or_else(|| StoreError::Corrupt {
                what: format!("install of {model}"),
                detail: format!("unknown state {state:?}"),
            })?;
            let next = lifecycle::next(state, event)?;
            let candidate = Candidate { key: &key, sha256: &sha, target: &target, meta: &meta };
            match next {
                Next::Continue(new_state) => {
                    if event == Event::Activated {
                        tx.execute(
                            "INSERT OR REPLACE INTO versions (model, key, sha256, target, meta) VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![model, key, sha, target, meta],
                        )
                        .map_err(&err)?;
                        tx.execute(
                            "UPDATE install SET previous_before = (SELECT previous_key FROM models WHERE name = ?1) WHERE model = ?1",
                            [model],
                        )
                        .map_err(&err)?;
                        tx.execute(
                            "UPDATE models SET previous_key = active_key, active_key = ?2 WHERE name = ?1",
                            params![model, key],
                        )
                        .map_err(&err)?;
                    }
                    tx.execute(
                        "UPDATE install SET state = ?2 WHERE model = ?1",
                        params![model, new_state.as_str()],
                    )
                    .map_err(&err)?;
                    journal(&tx, model, &sha, &target, new_state.as_str(), detail, now_unix).map_err(&err)?;
                }
                Next::Done(outcome) => {
                    finish(&tx, model, &candidate, previous_before.as_deref(), outcome, detail, now_unix).map_err(&err)?;
                }
            }
            tx.commit().map_err(&err)?;
            Ok(next)
        })?;
        if matches!(next, Next::Done(_)) {
            self.collect_garbage(model)?;
        }
        Ok(next)
    }

    pub fn model_names(&self) -> Result<Vec<String>, StoreError> {
        let err = self.db_err();
        self.with(|conn| {
            let mut stmt = conn
                .prepare("SELECT name FROM models ORDER BY name")
                .map_err(&err)?;
            let names = stmt
                .query_map([], |r| r.get(0))
                .map_err(&err)?
                .collect::<Result<_, _>>()
                .map_err(&err)?;
            Ok(names)
        })
    }

    /// Everything known about one model.
    pub fn record(&self, model: &str) -> Result<Option<ModelRecord>, StoreError> {
        let err = self.db_err();
        self.with(|conn| {
            let row: Option<ModelRow> = conn
                .query_row(
                    "SELECT active_key, previous_key, floor, last_outcome, last_error FROM models WHERE name = ?1",
                    [model],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()
                .map_err(&err)?;
            let Some((active, previous, floor, last_outcome, last_error)) = row else {
                return Ok(None);
            };
            let version = |key: Option<String>| -> Result<Option<StoredVersion>, StoreError> {
                let Some(key) = key else { return Ok(None) };
                let row: Option<(String, String, String)> = conn
                    .query_row(
                        "SELECT sha256, target, meta FROM versions WHERE model = ?1 AND key = ?2",
                        params![model, key],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()
                    .map_err(&err)?;
                row.map(|(sha, target, meta)| stored(sha, target, &meta)).transpose()
            };
            let install: Option<(String, String, String, String)> = conn
                .query_row(
                    "SELECT sha256, target, meta, state FROM install WHERE model = ?1",
                    [model],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(&err)?;
            let install = install
                .map(|(sha, target, meta, state)| {
                    Ok::<_, StoreError>((
                        stored(sha, target, &meta)?,
                        InstallState::parse(&state).unwrap_or(InstallState::Staging),
                    ))
                })
                .transpose()?;
            Ok(Some(ModelRecord {
                model: model.to_string(),
                active: version(active)?,
                previous: version(previous)?,
                floor: u64::try_from(floor).unwrap_or(0),
                install,
                last_outcome: last_outcome.as_deref().and_then(Outcome::parse),
                last_error,
            }))
        })
    }

    /// Removes the rows of `model`'s versions that are neither active nor previous, and the
    /// files no active, previous, in-flight or shadow version uses.
    fn collect_garbage(&self, model: &str) -> Result<(), StoreError> {
        let err = self.db_err();
        let keep: Vec<String> = self.with(|conn| {
            conn.execute(
                "DELETE FROM versions WHERE model = ?1 AND key NOT IN (
                    SELECT active_key FROM models WHERE name = ?1 AND active_key IS NOT NULL
                    UNION SELECT previous_key FROM models WHERE name = ?1 AND previous_key IS NOT NULL)",
                [model],
            )
            .map_err(&err)?;
            let mut stmt = conn
                .prepare(
                    "SELECT sha256 FROM versions WHERE model = ?1
                     UNION SELECT sha256 FROM install WHERE model = ?1
                     UNION SELECT sha256 FROM shadow WHERE model = ?1",
                )
                .map_err(&err)?;
            let keep = stmt
                .query_map([model], |r| r.get(0))
                .map_err(&err)?
                .collect::<Result<_, _>>()
                .map_err(&err)?;
            Ok(keep)
        })?;
        let dir = self.root.join("models").join(model);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                std::fs::remove_dir_all(entry.path()).map_err(|source| StoreError::Io {
                    path: entry.path(),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

/// `models` row: active key, previous key, floor, last outcome, last error.
type ModelRow = (
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
);

fn stored(sha256: String, target: String, meta: &str) -> Result<StoredVersion, StoreError> {
    let meta = serde_json::from_str(meta).map_err(|e| StoreError::Corrupt {
        what: target.clone(),
        detail: e.to_string(),
    })?;
    Ok(StoredVersion {
        sha256,
        target,
        meta,
    })
}

fn journal(
    tx: &rusqlite::Transaction<'_>,
    model: &str,
    sha: &str,
    target: &str,
    state: &str,
    detail: Option<&str>,
    now_unix: u64,
) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO journal (model, sha256, target, state, detail, at_unix) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![model, sha, target, state, detail, now_unix as i64],
    )
}

/// The install row's version, as `finish` needs it.
struct Candidate<'a> {
    key: &'a str,
    sha256: &'a str,
    target: &'a str,
    meta: &'a str,
}

/// Ends an install: commit raises the floor, rollback restores the pointers, all drop the
/// install row and journal the outcome.
fn finish(
    tx: &rusqlite::Transaction<'_>,
    model: &str,
    candidate: &Candidate<'_>,
    previous_before: Option<&str>,
    outcome: Outcome,
    detail: Option<&str>,
    now_unix: u64,
) -> rusqlite::Result<()> {
    match outcome {
        Outcome::Committed => {
            let min_sequence = serde_json::from_str::<ModelTargetMeta>(candidate.meta)
                .map(|m| m.min_sequence)
                .unwrap_or(0);
            tx.execute(
                "UPDATE models SET floor = MAX(floor, ?2), last_outcome = 'committed', last_error = NULL WHERE name = ?1",
                params![model, min_sequence as i64],
            )?;
        }
        Outcome::Rejected => {
            tx.execute(
                "UPDATE models SET last_outcome = 'rejected', last_error = ?2 WHERE name = ?1",
                params![model, detail],
            )?;
        }
        Outcome::RolledBack => {
            tx.execute(
                "UPDATE models SET active_key = previous_key, previous_key = ?2, last_outcome = 'rolled_back', last_error = ?3
                 WHERE name = ?1 AND active_key = ?4",
                params![model, previous_before, detail, candidate.key],
            )?;
        }
    }
    tx.execute("DELETE FROM install WHERE model = ?1", [model])?;
    journal(
        tx,
        model,
        candidate.sha256,
        candidate.target,
        outcome.as_str(),
        detail,
        now_unix,
    )?;
    Ok(())
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}
