//! Which back-end serves a model, remembered: `auto` measures every back-end with the model's
//! whole health check, which for a handful of models held a restart for seconds (6.7 s for six).
//! The choice is stored under a key naming everything it depends on (see
//! [`crate::agent`]'s `trial_key`), so a restart loads each model once, on the back-end chosen
//! before, and anything that could change the verdict measures again.

use edgefleet_inference::select::Trial;
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runtime_choice (
    key TEXT PRIMARY KEY,
    runtime TEXT NOT NULL,
    trials TEXT NOT NULL,
    at_unix INTEGER NOT NULL
);
";

/// Choices kept: enough for the active and previous version of many models; older ones are
/// only measured again.
const KEEP: i64 = 64;

impl Store {
    /// The back-end chosen before under `key`, with the trials that chose it.
    pub fn runtime_choice(&self, key: &str) -> Result<Option<(String, Vec<Trial>)>, StoreError> {
        let err = self.db_err();
        let row: Option<(String, String)> = self.with(|conn| {
            conn.query_row(
                "SELECT runtime, trials FROM runtime_choice WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(&err)
        })?;
        // An entry that no longer reads (written by another version) is only a cache miss.
        Ok(row.and_then(|(runtime, trials)| Some((runtime, serde_json::from_str(&trials).ok()?))))
    }

    pub fn remember_runtime_choice(
        &self,
        key: &str,
        runtime: &str,
        trials: &[Trial],
        now_unix: i64,
    ) -> Result<(), StoreError> {
        let err = self.db_err();
        let trials = serde_json::to_string(trials).map_err(|e| StoreError::Corrupt {
            what: "runtime trials".into(),
            detail: e.to_string(),
        })?;
        self.with(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO runtime_choice (key, runtime, trials, at_unix) VALUES (?1, ?2, ?3, ?4)",
                params![key, runtime, trials, now_unix],
            )
            .map_err(&err)?;
            conn.execute(
                "DELETE FROM runtime_choice WHERE key NOT IN \
                 (SELECT key FROM runtime_choice ORDER BY at_unix DESC, rowid DESC LIMIT ?1)",
                [KEEP],
            )
            .map_err(&err)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_inference::select::TrialOutcome;

    #[test]
    fn a_choice_reads_back_and_old_ones_are_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let trials = vec![
            Trial {
                runtime: "tract".into(),
                load_ms: Some(2.5),
                outcome: TrialOutcome::Passed {
                    p50_ms: 0.1,
                    p99_ms: 0.2,
                },
            },
            Trial {
                runtime: "onnxruntime".into(),
                load_ms: None,
                outcome: TrialOutcome::Failed("could not load".into()),
            },
        ];
        assert_eq!(store.runtime_choice("k").unwrap(), None);
        store
            .remember_runtime_choice("k", "tract", &trials, 1)
            .unwrap();
        assert_eq!(
            store.runtime_choice("k").unwrap(),
            Some(("tract".into(), trials.clone()))
        );
        for i in 0..KEEP {
            store
                .remember_runtime_choice(&format!("k{i}"), "tract", &trials, 2 + i)
                .unwrap();
        }
        assert_eq!(
            store.runtime_choice("k").unwrap(),
            None,
            "the oldest is pruned"
        );
        // Survives reopening: that is the point.
        drop(store);
        let store = Store::open(tmp.path()).unwrap();
        assert!(
            store
                .runtime_choice(&format!("k{}", KEEP - 1))
                .unwrap()
                .is_some()
        );
    }
}
