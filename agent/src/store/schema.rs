//! The store's tables, the identity of a stored version, and the migration from the first
//! schema (versions keyed by the artifact's sha256).
//!
//! A version is the *signed target* — its name, its artifact's sha256 and its metadata — not
//! the artifact's bytes: a release that ships the same model file with a new interface, golden
//! vectors, tolerance or runtime pin is a different version and activates with its own metadata.
//! Model files stay content-addressed on disk (`models/<model>/<sha256>/`), so such a release
//! shares the file already stored and is never downloaded twice.

use std::collections::HashMap;

use edgefleet_protocol::target::ModelTargetMeta;
use rusqlite::{Connection, params};

/// `PRAGMA user_version` of the current schema. 0 is the first schema (or a new database).
pub(super) const VERSION: i64 = 2;

pub(super) const TABLES: &str = "
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    active_key TEXT,
    previous_key TEXT,
    floor INTEGER NOT NULL DEFAULT 0,
    last_outcome TEXT,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL,
    key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    target TEXT NOT NULL,
    meta TEXT NOT NULL,
    PRIMARY KEY (model, key)
);
CREATE TABLE IF NOT EXISTS install (
    model TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    target TEXT NOT NULL,
    meta TEXT NOT NULL,
    state TEXT NOT NULL,
    previous_before TEXT,
    started_unix INTEGER NOT NULL,
    probation_served_ms INTEGER NOT NULL DEFAULT 0,
    stopped_cleanly INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    target TEXT,
    state TEXT NOT NULL,
    detail TEXT,
    at_unix INTEGER NOT NULL
);
";

/// The identity of a signed target: a digest of its name, its artifact's sha256 and its
/// metadata as the agent stores it (serde's field order, so the same metadata always gives the
/// same key).
pub fn version_key(target: &str, sha256_hex: &str, meta: &ModelTargetMeta) -> String {
    // The signed form: a release is the same candidate before its files are fetched and after.
    let meta = serde_json::to_string(&meta.signed_form()).unwrap_or_default();
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [target, sha256_hex, meta.as_str()] {
        digest.update(&(part.len() as u64).to_le_bytes());
        digest.update(part.as_bytes());
    }
    hex::encode(digest.finish())
}

/// A stored row the migration cannot read.
#[derive(Debug)]
pub(super) struct Unreadable {
    pub target: String,
    pub detail: String,
}

#[derive(Debug)]
pub(super) enum MigrateError {
    Db(rusqlite::Error),
    Meta(Unreadable),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e)
    }
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        params![table, column],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Brings the database to [`VERSION`], in one transaction: a crash during the migration
/// leaves the first schema as it was.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    if has_column(&tx, "models", "active_sha")? {
        super::recovery::add_probation_columns(&tx)?;
        from_first_schema(&tx)?;
    }
    tx.execute_batch(TABLES)?;
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

/// The first schema keyed versions, pointers and installs by the artifact's sha256; each
/// becomes its signed target's key.
fn from_first_schema(tx: &rusqlite::Transaction<'_>) -> Result<(), MigrateError> {
    let key_of = |target: &str, sha: &str, meta: &str| -> Result<String, MigrateError> {
        let meta: ModelTargetMeta = serde_json::from_str(meta).map_err(|e| {
            MigrateError::Meta(Unreadable {
                target: target.to_owned(),
                detail: e.to_string(),
            })
        })?;
        Ok(version_key(target, sha, &meta))
    };
    // (model, sha256) was the first schema's primary key: each maps to exactly one key.
    let mut keys: HashMap<(String, String), String> = HashMap::new();
    let versions: Vec<(String, String, String, String)> = tx
        .prepare("SELECT model, sha256, target, meta FROM versions")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    tx.execute_batch(
        "CREATE TABLE versions_v2 (
            model TEXT NOT NULL, key TEXT NOT NULL, sha256 TEXT NOT NULL,
            target TEXT NOT NULL, meta TEXT NOT NULL, PRIMARY KEY (model, key));",
    )?;
    for (model, sha, target, meta) in versions {
        let key = key_of(&target, &sha, &meta)?;
        tx.execute(
            "INSERT INTO versions_v2 (model, key, sha256, target, meta) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![model, key, sha, target, meta],
        )?;
        keys.insert((model, sha), key);
    }
    tx.execute_batch(
        "DROP TABLE versions;
         ALTER TABLE versions_v2 RENAME TO versions;
         ALTER TABLE models RENAME COLUMN active_sha TO active_key;
         ALTER TABLE models RENAME COLUMN previous_sha TO previous_key;
         ALTER TABLE install ADD COLUMN key TEXT NOT NULL DEFAULT '';
         ALTER TABLE journal ADD COLUMN target TEXT;",
    )?;
    let lookup = |model: &str, sha: Option<String>| {
        sha.and_then(|sha| keys.get(&(model.to_owned(), sha)).cloned())
    };
    let pointers: Vec<(String, Option<String>, Option<String>)> = tx
        .prepare("SELECT name, active_key, previous_key FROM models")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (name, active, previous) in pointers {
        tx.execute(
            "UPDATE models SET active_key = ?2, previous_key = ?3 WHERE name = ?1",
            params![name, lookup(&name, active), lookup(&name, previous)],
        )?;
    }
    let installs: Vec<(String, String, String, String, Option<String>)> = tx
        .prepare("SELECT model, sha256, target, meta, previous_before FROM install")?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    for (model, sha, target, meta, previous_before) in installs {
        let key = key_of(&target, &sha, &meta)?;
        tx.execute(
            "UPDATE install SET key = ?2, previous_before = ?3 WHERE model = ?1",
            params![model, key, lookup(&model, previous_before)],
        )?;
    }
    Ok(())
}
