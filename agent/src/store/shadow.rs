//! Which challenger each model's shadow slot holds. Only its model file's place in the store
//! depends on this row (garbage collection keeps the file, so promoting the challenger needs no
//! second download); what runs in the slot is rebuilt from the desired state after a restart.

use rusqlite::params;

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shadow (
    model TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    target TEXT NOT NULL
);
";

impl Store {
    /// Records `target` (whose file is `sha256`) as `model`'s challenger.
    pub fn set_shadow(&self, model: &str, target: &str, sha256: &str) -> Result<(), StoreError> {
        let err = self.db_err();
        self.with(|conn| {
            conn.execute(
                "INSERT INTO shadow (model, sha256, target) VALUES (?1, ?2, ?3)
                 ON CONFLICT (model) DO UPDATE SET sha256 = excluded.sha256, target = excluded.target",
                params![model, sha256, target],
            )
            .map(drop)
            .map_err(&err)
        })
    }

    /// Forgets `model`'s challenger and removes its file unless a version uses it.
    pub fn clear_shadow(&self, model: &str) -> Result<(), StoreError> {
        let err = self.db_err();
        self.with(|conn| {
            conn.execute("DELETE FROM shadow WHERE model = ?1", [model])
                .map(drop)
                .map_err(&err)
        })?;
        self.collect_garbage(model)
    }
}
