//! The device's prediction log: every `:predict` answer under its id, kept for
//! `quality.retain_days` so that a label arriving weeks later joins the prediction it belongs to
//! on the device. Only counts of joined labels leave the device (in the telemetry window, as
//! [`QualityCounts`]); the answers and the ids stay here.
//!
//! The serving path only appends to a bounded in-memory queue; [`PredictionLog::flush`] writes it
//! in one transaction (every second, from [`run`], and before a label is joined) and prunes by age
//! and count. A full queue drops the newest answers and counts them: a burst must not grow the
//! agent's memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edgefleet_protocol::ModelName;
use edgefleet_protocol::quality::{Observation, QualityCounts};
use rusqlite::{Connection, OptionalExtension, params};
use tracing::warn;

use crate::config::QualitySettings;

/// Answers waiting for the next flush, at most. About 150 bytes each.
const MAX_PENDING: usize = 20_000;
/// Ids and reasons named in a feedback answer, at most (the counts are always whole).
const MAX_NAMED: usize = 100;

#[derive(Debug, thiserror::Error)]
#[error("prediction log {path}: {detail}")]
pub struct LogError {
    path: String,
    detail: String,
}

/// What the model answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A classifier's label; for a binary one also its positive label and that label's score.
    Class {
        label: String,
        positive: Option<(String, f64)>,
    },
    /// A regressor's first output.
    Value(f64),
}

/// One answer to log.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub id: String,
    pub model: String,
    pub version: String,
    pub at_unix: u64,
    pub answer: Answer,
}

/// The ground truth for one prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum Truth {
    Label(String),
    Value(f64),
}

/// What a batch of labels did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct FeedbackOutcome {
    /// Labels joined to their prediction.
    pub accepted: u64,
    /// Ids already labelled: the first label stands.
    pub duplicates: u64,
    /// Ids this device has no prediction of `model` for (never made here, or past retention).
    pub unknown: u64,
    /// Labels of the wrong kind for their prediction (a value for a classifier, or a label for a
    /// regressor).
    pub refused: u64,
    /// The first ids that were not accepted, each with why.
    pub not_accepted: Vec<NotAccepted>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NotAccepted {
    pub id: String,
    pub reason: &'static str,
}

enum Refusal {
    Unknown,
    Duplicate,
    WrongKind(&'static str),
}

#[derive(Debug, Default)]
struct Pending {
    answers: Vec<Logged>,
}

#[derive(Debug)]
pub struct PredictionLog {
    path: String,
    db: Mutex<Connection>,
    pending: Mutex<Pending>,
    settings: QualitySettings,
    dropped: AtomicU64,
}

impl PredictionLog {
    pub fn open(path: &Path, settings: QualitySettings) -> Result<Self, LogError> {
        let err = |e: rusqlite::Error| LogError {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            // As the outbox: a small write-ahead log, folded back often (flash wears).
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 256;
             PRAGMA journal_size_limit = 1048576;
             CREATE TABLE IF NOT EXISTS predictions (
                 id TEXT PRIMARY KEY,
                 model TEXT NOT NULL,
                 version TEXT NOT NULL,
                 at_unix INTEGER NOT NULL,
                 label TEXT,
                 positive TEXT,
                 score REAL,
                 value REAL,
                 actual_label TEXT,
                 actual_value REAL,
                 labelled_at INTEGER,
                 reported INTEGER NOT NULL DEFAULT 0
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS predictions_at ON predictions(at_unix);
             CREATE INDEX IF NOT EXISTS predictions_unreported ON predictions(reported)
                 WHERE labelled_at IS NOT NULL AND reported = 0;
             CREATE INDEX IF NOT EXISTS predictions_joined ON predictions(model, labelled_at)
                 WHERE labelled_at IS NOT NULL;",
        )
        .map_err(err)?;
        Ok(Self {
            path: path.display().to_string(),
            db: Mutex::new(conn),
            pending: Mutex::default(),
            settings,
            dropped: AtomicU64::new(0),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> LogError {
        LogError {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    /// Queues one answer for the next flush (the serving path: no I/O).
    pub fn record(&self, logged: Logged) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if pending.answers.len() >= MAX_PENDING {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.answers.push(logged);
    }

    /// Answers dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn with_db<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, LogError> {
        let mut db = self.db.lock().map_err(|e| self.err(e))?;
        f(&mut db).map_err(|e| self.err(e))
    }

    /// Writes the queued answers and drops what is past retention or over the count. Returns how
    /// many answers were written.
    pub fn flush(&self, now_unix: u64) -> Result<usize, LogError> {
        let answers = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut pending.answers),
            Err(e) => return Err(self.err(e)),
        };
        let cutoff = now_unix.saturating_sub(self.settings.retain_days.saturating_mul(86_400));
        let max_rows = self.settings.max_predictions;
        self.with_db(|db| {
            let tx = db.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO predictions
                     (id, model, version, at_unix, label, positive, score, value)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for a in &answers {
                    let (label, positive, score, value) = match &a.answer {
                        Answer::Class { label, positive } => (
                            Some(label.as_str()),
                            positive.as_ref().map(|(p, _)| p.as_str()),
                            positive.as_ref().map(|(_, s)| *s),
                            None,
                        ),
                        Answer::Value(v) => (None, None, None, Some(*v)),
                    };
                    insert.execute(params![
                        a.id,
                        a.model,
                        a.version,
                        sql_int(a.at_unix),
                        label,
                        positive,
                        score,
                        value
                    ])?;
                }
            }
            tx.execute(
                "DELETE FROM predictions WHERE at_unix < ?1",
                [sql_int(cutoff)],
            )?;
            let rows: i64 = tx.query_row("SELECT COUNT(*) FROM predictions", [], |r| r.get(0))?;
            let over = rows - sql_int(max_rows);
            if over > 0 {
                tx.execute(
                    "DELETE FROM predictions WHERE id IN
                     (SELECT id FROM predictions ORDER BY at_unix LIMIT ?1)",
                    [over],
                )?;
            }
            tx.commit()
        })?;
        Ok(answers.len())
    }

    /// Joins labels of `model`'s predictions to them (late and in any order; the first label of
    /// an id stands).
    pub fn feedback(
        &self,
        model: &str,
        labels: &[(String, Truth)],
        now_unix: u64,
    ) -> Result<FeedbackOutcome, LogError> {
        self.flush(now_unix)?;
        self.with_db(|db| {
            let tx = db.transaction()?;
            let mut outcome = FeedbackOutcome::default();
            {
                let mut find = tx.prepare_cached(
                    "SELECT label IS NOT NULL, labelled_at IS NOT NULL
                     FROM predictions WHERE id = ?1 AND model = ?2",
                )?;
                let mut set = tx.prepare_cached(
                    "UPDATE predictions SET actual_label = ?3, actual_value = ?4, labelled_at = ?5
                     WHERE id = ?1 AND model = ?2 AND labelled_at IS NULL",
                )?;
                for (id, truth) in labels {
                    let found: Option<(bool, bool)> = find
                        .query_row(params![id, model], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    let refusal = match (found, truth) {
                        (None, _) => Some(Refusal::Unknown),
                        (Some((_, true)), _) => Some(Refusal::Duplicate),
                        (Some((true, _)), Truth::Value(_)) => {
                            Some(Refusal::WrongKind("the prediction is a label, not a value"))
                        }
                        (Some((false, _)), Truth::Label(_)) => {
                            Some(Refusal::WrongKind("the prediction is a value, not a label"))
                        }
                        (Some(_), truth) => {
                            let (label, value) = match truth {
                                Truth::Label(l) => (Some(l.as_str()), None),
                                Truth::Value(v) => (None, Some(*v)),
                            };
                            set.execute(params![id, model, label, value, sql_int(now_unix)])?;
                            None
                        }
                    };
                    let Some(refusal) = refusal else {
                        outcome.accepted += 1;
                        continue;
                    };
                    let reason = match refusal {
                        Refusal::Unknown => {
                            outcome.unknown += 1;
                            "no prediction of this model with this id is kept on this device"
                        }
                        Refusal::Duplicate => {
                            outcome.duplicates += 1;
                            "already labelled; the first label stands"
                        }
                        Refusal::WrongKind(why) => {
                            outcome.refused += 1;
                            why
                        }
                    };
                    if outcome.not_accepted.len() < MAX_NAMED {
                        outcome.not_accepted.push(NotAccepted {
                            id: id.clone(),
                            reason,
                        });
                    }
                }
            }
            tx.commit()?;
            Ok(outcome)
        })
    }

    /// The labels joined since the last call, counted per model version, and marked as
    /// reported (the telemetry window that carries them to the server).
    pub fn take_unreported(
        &self,
    ) -> Result<BTreeMap<(ModelName, semver::Version), QualityCounts>, LogError> {
        self.with_db(|db| {
            let tx = db.transaction()?;
            let counts = counts_where(&tx, "labelled_at IS NOT NULL AND reported = 0", [])?;
            tx.execute(
                "UPDATE predictions SET reported = 1 WHERE labelled_at IS NOT NULL AND reported = 0",
                [],
            )?;
            tx.commit()?;
            Ok(counts)
        })
    }

    /// Quality of `model`'s versions over predictions made in `[since, until)` that have a
    /// label and are still kept.
    pub fn quality(
        &self,
        model: &str,
        since: u64,
        until: u64,
    ) -> Result<BTreeMap<semver::Version, QualityCounts>, LogError> {
        self.with_db(|db| {
            let counts = counts_where(
                db,
                "labelled_at IS NOT NULL AND model = ?1 AND at_unix >= ?2 AND at_unix < ?3",
                params![model, sql_int(since), sql_int(until)],
            )?;
            Ok(counts.into_iter().map(|((_, v), c)| (v, c)).collect())
        })
    }
}

impl PredictionLog {
    /// Quality of one version of `model` over the labels joined in `[since, until)`, whenever
    /// their predictions were made: what the guard after commit judges (a label a month late
    /// counts when it arrives).
    pub fn quality_joined(
        &self,
        model: &str,
        version: &semver::Version,
        since: u64,
        until: u64,
    ) -> Result<QualityCounts, LogError> {
        self.with_db(|db| {
            let counts = counts_where(
                db,
                "labelled_at IS NOT NULL AND model = ?1 AND version = ?2 AND labelled_at >= ?3 \
                 AND labelled_at < ?4",
                params![model, version.to_string(), sql_int(since), sql_int(until)],
            )?;
            Ok(counts.into_values().next().unwrap_or_default())
        })
    }
}

impl PredictionLog {
    /// Up to `limit` ids of `model` `version`'s predictions whose label, joined in
    /// `[since, until)`, disagreed with the answer (classifiers), newest first: the sample a
    /// guard breach carries for people to review.
    pub fn wrong_sample(
        &self,
        model: &str,
        version: &semver::Version,
        since: u64,
        until: u64,
        limit: u32,
    ) -> Result<Vec<String>, LogError> {
        self.with_db(|db| {
            let mut statement = db.prepare_cached(
                "SELECT id FROM predictions WHERE labelled_at IS NOT NULL AND model = ?1
                 AND version = ?2 AND labelled_at >= ?3 AND labelled_at < ?4
                 AND label IS NOT NULL AND actual_label IS NOT NULL AND label != actual_label
                 ORDER BY labelled_at DESC LIMIT ?5",
            )?;
            let ids = statement
                .query_map(
                    params![
                        model,
                        version.to_string(),
                        sql_int(since),
                        sql_int(until),
                        limit
                    ],
                    |r| r.get(0),
                )?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(ids)
        })
    }
}

fn counts_where(
    db: &Connection,
    condition: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<BTreeMap<(ModelName, semver::Version), QualityCounts>> {
    let mut statement = db.prepare(&format!(
        "SELECT model, version, label, positive, score, value, actual_label, actual_value
         FROM predictions WHERE {condition}"
    ))?;
    let mut rows = statement.query(params)?;
    let mut counts: BTreeMap<(ModelName, semver::Version), QualityCounts> = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let (Ok(model), Ok(version)) = (
            ModelName::new(row.get::<_, String>(0)?),
            semver::Version::parse(&row.get::<_, String>(1)?),
        ) else {
            continue;
        };
        let label: Option<String> = row.get(2)?;
        let positive: Option<String> = row.get(3)?;
        let score: Option<f64> = row.get(4)?;
        let value: Option<f64> = row.get(5)?;
        let actual_label: Option<String> = row.get(6)?;
        let actual_value: Option<f64> = row.get(7)?;
        let observation = match (label, value, actual_label, actual_value) {
            (Some(predicted), _, Some(actual), _) => Observation::Class {
                positive_score: positive.zip(score).map(|(p, s)| (s, p == actual)),
                predicted,
                actual,
            },
            (None, Some(predicted), _, Some(actual)) => Observation::Value { predicted, actual },
            _ => continue,
        };
        counts
            .entry((model, version))
            .or_default()
            .add(&observation);
    }
    Ok(counts)
}

fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Flushes the log every second until the agent stops, then once more.
pub async fn run(
    log: std::sync::Arc<PredictionLog>,
    clock: std::sync::Arc<dyn edgefleet_clock::Clock>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = shutdown.cancelled() => true,
        };
        let now = u64::try_from(clock.unix()).unwrap_or(0);
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.flush(now)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot write the prediction log"),
            Err(e) => warn!(error = %e, "cannot write the prediction log"),
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
