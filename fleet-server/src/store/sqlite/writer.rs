//! The single writer, with group commit: every write goes to one thread that owns the writing
//! connection; the writes waiting when it comes round run in one transaction, each inside its
//! own savepoint, and every caller hears back only after the commit. Ingesting device messages
//! (up to 64 in flight) thus pays one commit per group instead of one per message.
//!
//! Each job runs in a savepoint: one that fails (or panics) undoes all it wrote and nothing of
//! the others'. Should an error abort the whole transaction (SQLite does so for a full disk or an
//! I/O error), the jobs already run in it are told so, and the rest start a new one.

use std::panic::AssertUnwindSafe;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::backend;
use crate::store::{Result, StoreError};

/// At most this many writes share a transaction, so a burst does not hold every caller until
/// the whole burst is written.
const MAX_GROUP: usize = 256;
/// Writes queued for the writer before callers wait to hand theirs over.
const QUEUE: usize = 1024;

/// Tells a job's caller how it went, once its transaction's fate is known.
type Deliver = Box<dyn FnOnce(Result<()>) + Send>;
/// Runs a write; says whether it succeeded (else its savepoint is rolled back).
type Job = Box<dyn FnOnce(&mut Connection) -> (bool, Deliver) + Send>;

#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`. The thread ends once every `Writer` is dropped and the
    /// writes queued before have been committed.
    pub(super) fn start(conn: Connection) -> Result<Self> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_until_closed(conn, queue))
            .map_err(|e| backend(format!("cannot start the database writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| Err(backend("a database write panicked; it was undone")));
            let succeeded = outcome.is_ok();
            let deliver: Deliver = Box::new(move |committed: Result<()>| {
                let _ = reply.send(outcome.and_then(|value| committed.map(|()| value)));
            });
            (succeeded, deliver)
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| backend("the database writer has stopped"))?;
        answer
            .await
            .map_err(|_| backend("the database writer stopped before answering"))?
    }
}

fn write_until_closed(mut conn: Connection, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&mut conn, group);
    }
}

fn commit_group(conn: &mut Connection, group: Vec<Job>) {
    let mut ran: Vec<Deliver> = Vec::with_capacity(group.len());
    let mut open = false;
    for job in group {
        if !open {
            // A failed BEGIN leaves the job in autocommit: slower, still correct.
            open = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
        }
        if !open {
            job(conn).1(Ok(()));
            continue;
        }
        let in_savepoint = conn.execute_batch("SAVEPOINT edgefleet_write").is_ok();
        let (succeeded, deliver) = job(conn);
        if in_savepoint && !conn.is_autocommit() {
            let end = if succeeded {
                "RELEASE edgefleet_write"
            } else {
                "ROLLBACK TO edgefleet_write; RELEASE edgefleet_write"
            };
            if conn.execute_batch(end).is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        if conn.is_autocommit() {
            // Something rolled the whole transaction back, and with it the jobs before.
            for undone in ran.drain(..).chain(std::iter::once(deliver)) {
                undone(Err(rolled_back()));
            }
            open = false;
        } else {
            ran.push(deliver);
        }
    }
    if !open {
        return;
    }
    let committed = conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        format!("committing a group of writes failed: {e}")
    });
    for deliver in ran {
        deliver(committed.clone().map_err(backend));
    }
}

fn rolled_back() -> StoreError {
    backend(
        "the write was undone when another in its transaction failed the whole transaction; retry it",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, Writer, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        (dir, Writer::start(conn).unwrap(), reader)
    }

    fn rows(reader: &Connection) -> Vec<i64> {
        let mut statement = reader.prepare("SELECT x FROM t ORDER BY x").unwrap();
        statement
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn insert(x: i64) -> impl FnOnce(&mut Connection) -> Result<()> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO t (x) VALUES (?1)", [x])
                .map(|_| ())
                .map_err(backend)
        }
    }

    type TestWrite<T> = Box<dyn FnOnce(&mut Connection) -> Result<T> + Send>;

    /// Queues `jobs` behind a write that holds the writer, so they all form one group.
    async fn as_one_group<T: Send + 'static>(
        writer: &Writer,
        jobs: Vec<TestWrite<T>>,
    ) -> Vec<Result<T>> {
        let (finish, wait) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = oneshot::channel();
        let gate = writer.clone();
        let gate = tokio::spawn(async move {
            gate.run(move |_| {
                let _ = started.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
        });
        has_started.await.unwrap();
        let pending: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.run(job).await })
            })
            .collect();
        while writer.jobs.capacity() > QUEUE - pending.len() {
            tokio::task::yield_now().await;
        }
        finish.send(()).unwrap();
        gate.await.unwrap().unwrap();
        let mut results = Vec::new();
        for job in pending {
            results.push(job.await.unwrap());
        }
        results
    }

    #[tokio::test]
    async fn a_failing_or_panicking_write_undoes_only_itself() {
        let (_dir, writer, reader) = writer();
        let results = as_one_group(
            &writer,
            vec![
                Box::new(insert(1)),
                Box::new(insert(1)), // the primary key refuses it
                Box::new(|c: &mut Connection| {
                    let tx = c.savepoint().map_err(backend)?;
                    tx.execute("INSERT INTO t (x) VALUES (2)", [])
                        .map_err(backend)?;
                    tx.execute("INSERT INTO t (x) VALUES (1)", [])
                        .map_err(backend)?;
                    tx.commit().map_err(backend)
                }),
                Box::new(|c: &mut Connection| {
                    c.execute("INSERT INTO t (x) VALUES (3)", []).unwrap();
                    panic!("a bug in a write")
                }),
                Box::new(insert(4)),
            ],
        )
        .await;
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, false, false, true]);
        assert!(
            results[3]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("panicked")
        );
        // 2 went with its savepoint, 3 with the write's own.
        assert_eq!(rows(&reader), [1, 4]);
    }

    #[tokio::test]
    async fn a_write_that_aborts_the_transaction_fails_those_before_it_and_not_those_after() {
        let (_dir, writer, reader) = writer();
        let results = as_one_group(
            &writer,
            vec![
                Box::new(insert(1)),
                Box::new(|c: &mut Connection| {
                    // What SQLite does itself on a full disk or an I/O error.
                    c.execute_batch("ROLLBACK").map_err(backend)
                }),
                Box::new(insert(2)),
            ],
        )
        .await;
        assert!(
            results[0]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("retry")
        );
        assert!(results[1].is_err());
        assert!(results[2].is_ok());
        assert_eq!(rows(&reader), [2]);
    }

    #[tokio::test]
    async fn concurrent_writes_all_land_and_each_caller_hears_after_the_commit() {
        let (_dir, writer, reader) = writer();
        let tasks: Vec<_> = (0..500)
            .map(|x| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.run(insert(x)).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(rows(&reader), (0..500).collect::<Vec<_>>());
    }
}
