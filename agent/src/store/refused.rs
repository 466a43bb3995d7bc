//! The last candidate each model refused, with how every back-end fared, kept across restarts
//! until an install of that model succeeds: `GET /v1/models` shows why a device said no even
//! after a reboot (the reason alone is also the model's `last_error`).

use edgefleet_inference::select::Trial;
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS refused (
    model TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    trials TEXT NOT NULL
);
";

/// A candidate the device refused, and each back-end's trial of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub target: String,
    pub reason: String,
    pub trials: Vec<Trial>,
}

impl Store {
    pub fn refused(&self, model: &str) -> Result<Option<Refused>, StoreError> {
        let err = self.db_err();
        let row: Option<(String, String, String)> = self.with(|conn| {
            conn.query_row(
                "SELECT target, reason, trials FROM refused WHERE model = ?1",
                [model],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(&err)
        })?;
        Ok(row.map(|(target, reason, trials)| Refused {
            target,
            reason,
            // Trials written by another version that no longer read are only left out.
            trials: serde_json::from_str(&trials).unwrap_or_default(),
        }))
    }

    pub fn remember_refused(&self, model: &str, refused: &Refused) -> Result<(), StoreError> {
        let err = self.db_err();
        let trials = serde_json::to_string(&refused.trials).map_err(|e| StoreError::Corrupt {
            what: "runtime trials".into(),
            detail: e.to_string(),
        })?;
        self.with(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO refused (model, target, reason, trials) VALUES (?1, ?2, ?3, ?4)",
                params![model, refused.target, refused.reason, trials],
            )
            .map(|_| ())
            .map_err(&err)
        })
    }

    pub fn forget_refused(&self, model: &str) -> Result<(), StoreError> {
        let err = self.db_err();
        self.with(|conn| {
            conn.execute("DELETE FROM refused WHERE model = ?1", [model])
                .map(|_| ())
                .map_err(&err)
        })
    }
}
