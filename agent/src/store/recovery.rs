//! What start-up does with installs the journal says were in flight ([`lifecycle::recover`]
//! decides), and the probation clock that lets a stopped agent resume a probation instead of
//! failing it.

use std::time::Duration;

use rusqlite::{Connection, params};

use super::{Candidate, Store, StoreError, finish};
use crate::lifecycle::{self, InstallState, Interruption, Outcome, Recovery};

/// What [`Store::recover`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recovered {
    /// Installs it ended, and how.
    pub finished: Vec<(String, Outcome)>,
    /// Probations to go on: the candidate is the active version and keeps serving.
    pub resumed: Vec<Resumed>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    pub model: String,
    /// Probation time the candidate had already served.
    pub served: Duration,
    /// Whether it is resumed after a crash (a stop is not counted).
    pub after_crash: bool,
}

/// Journals written before probations could be resumed lack these columns.
pub(super) fn add_probation_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (column, declaration) in [
        ("probation_served_ms", "INTEGER NOT NULL DEFAULT 0"),
        ("stopped_cleanly", "INTEGER NOT NULL DEFAULT 0"),
        ("crashes", "INTEGER NOT NULL DEFAULT 0"),
    ] {
        let present: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('install') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )?;
        if present == 0 {
            conn.execute_batch(&format!(
                "ALTER TABLE install ADD COLUMN {column} {declaration}"
            ))?;
        }
    }
    Ok(())
}

/// An install in flight: its candidate, then how it stood when the agent went down.
struct InstallRow {
    model: String,
    key: String,
    sha256: String,
    target: String,
    meta: String,
    state: String,
    previous_before: Option<String>,
    served_ms: i64,
    stopped: bool,
    crashes: u32,
    has_previous: bool,
}

impl Store {
    /// Settles every install the journal says was in flight (after a stop, a crash or power
    /// loss), as [`lifecycle::recover`] decides, and removes files nothing points to.
    pub fn recover(&self, now_unix: u64) -> Result<Recovered, StoreError> {
        let err = self.db_err();
        let (recovered, finished_shas) = self.with(|conn| {
            let tx = conn.transaction().map_err(&err)?;
            let rows: Vec<InstallRow> = {
                let mut stmt = tx
                    .prepare(
                        "SELECT i.model, i.key, i.sha256, i.target, i.meta, i.state, i.previous_before,
                                i.probation_served_ms, i.stopped_cleanly, i.crashes,
                                m.previous_key IS NOT NULL
                         FROM install i LEFT JOIN models m ON m.name = i.model",
                    )
                    .map_err(&err)?;
                stmt.query_map([], |r| {
                    Ok(InstallRow {
                        model: r.get(0)?,
                        key: r.get(1)?,
                        sha256: r.get(2)?,
                        target: r.get(3)?,
                        meta: r.get(4)?,
                        state: r.get(5)?,
                        previous_before: r.get(6)?,
                        served_ms: r.get(7)?,
                        stopped: r.get::<_, i64>(8)? != 0,
                        crashes: r.get::<_, i64>(9)?.clamp(0, i64::from(u32::MAX)) as u32,
                        has_previous: r.get::<_, Option<bool>>(10)?.unwrap_or(false),
                    })
                })
                .map_err(&err)?
                .collect::<Result<_, _>>()
                .map_err(&err)?
            };
            let mut recovered = Recovered::default();
            let mut finished_shas = Vec::new();
            for row in rows {
                let model = row.model.clone();
                let stopped = row.stopped;
                let state = InstallState::parse(&row.state).unwrap_or(InstallState::Staging);
                let how = Interruption {
                    stopped_cleanly: stopped,
                    has_previous: row.has_previous,
                    crashes: row.crashes,
                };
                match lifecycle::recover(state, how) {
                    Recovery::ResumeProbation => {
                        tx.execute(
                            "UPDATE install SET stopped_cleanly = 0, crashes = crashes + ?2
                             WHERE model = ?1",
                            params![model, i64::from(!stopped)],
                        )
                        .map_err(&err)?;
                        recovered.resumed.push(Resumed {
                            model,
                            served: Duration::from_millis(row.served_ms.max(0) as u64),
                            after_crash: !stopped,
                        });
                    }
                    Recovery::Finish(outcome) => {
                        finished_shas.push(row.sha256.clone());
                        let how = if stopped { "was stopped" } else { "stopped" };
                        let detail = format!(
                            "the agent {how} during {state}; {}",
                            outcome.as_str().replace('_', " ")
                        );
                        let candidate = Candidate {
                            key: &row.key,
                            sha256: &row.sha256,
                            target: &row.target,
                            meta: &row.meta,
                        };
                        finish(
                            &tx,
                            &model,
                            &candidate,
                            row.previous_before.as_deref(),
                            outcome,
                            Some(&detail),
                            now_unix,
                        )
                        .map_err(&err)?;
                        recovered.finished.push((model, outcome));
                    }
                }
            }
            tx.commit().map_err(&err)?;
            Ok((recovered, finished_shas))
        })?;
        for model in self.model_names()? {
            self.collect_garbage(&model)?;
        }
        let staging = self.root.join("staging");
        if let Ok(entries) = std::fs::read_dir(&staging) {
            // Half-written install directories go, and the verified download of an install the
            // journal just finished (it is decided). Part files of downloads cut short stay: the
            // next attempt continues them, and opening one removes those no download wants
            // (`edgefleet_tuf::artifact`).
            for entry in entries.flatten() {
                let path = entry.path();
                let finished = finished_shas
                    .iter()
                    .any(|sha| path.file_stem().is_some_and(|stem| *stem == **sha));
                if path.extension().is_some_and(|e| e == "part") && !finished {
                    continue;
                }
                let _ = match entry.file_type() {
                    Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                    _ => std::fs::remove_file(&path),
                };
            }
        }
        Ok(recovered)
    }

    /// Records how long `model`'s candidate has served its probation (so a crash loses at most
    /// the time since the last record). `stopped` also marks the agent as stopping on purpose:
    /// the next start resumes the probation instead of judging it a failure.
    pub fn record_probation(
        &self,
        model: &str,
        served: Duration,
        stopped: bool,
    ) -> Result<(), StoreError> {
        let err = self.db_err();
        let served_ms = i64::try_from(served.as_millis()).unwrap_or(i64::MAX);
        self.with(|conn| {
            conn.execute(
                // Only start-up clears the stop mark: a record the watch makes while the
                // process winds down must not turn a stop back into a crash.
                "UPDATE install SET probation_served_ms = MAX(probation_served_ms, ?2),
                                    stopped_cleanly = MAX(stopped_cleanly, ?3)
                 WHERE model = ?1 AND state = ?4",
                params![
                    model,
                    served_ms,
                    i64::from(stopped),
                    InstallState::Probation.as_str()
                ],
            )
            .map(|_| ())
            .map_err(&err)
        })
    }
}
