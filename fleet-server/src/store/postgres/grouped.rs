//! Device messages' writes on PostgreSQL, grouped per transaction: reported states, events,
//! telemetry batches and `last_seen`. Stored one statement and one commit each, 100,000 devices
//! sending a batch a minute (~1,670 a second) were at PostgreSQL's limit on this machine
//! (~2,000 a second; docs/BENCHMARKS.md) and rollouts crawled behind them. Here one task takes
//! whatever writes are waiting when it comes round and stores them in one transaction, one
//! array-valued statement per kind, so the cost of a round trip and a commit is shared by the
//! group; callers wait without holding a pooled connection.
//!
//! A group PostgreSQL refuses (a deadlock with another transaction, a row a constraint or
//! trigger refuses) is stored again one write at a time, so one bad write fails alone and the
//! others are not held up. A group that failed because the database could not be reached or
//! dropped the connection fails as a whole at once: one write at a time would fail the same way
//! as many times over (each waiting for a connection), and the messages stay unacknowledged
//! for the broker to deliver again.
//! The task ends once every handle is dropped (with its store) and the writes queued before are
//! stored.

use std::collections::HashSet;

use deadpool_postgres::{Client, Pool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{backend, pg, pool_error};
use crate::store::{Result, StoreError};

/// At most this many writes share a transaction, so one group's statements stay short.
const MAX_GROUP: usize = 512;
/// Writes queued before callers wait to hand theirs over.
const QUEUE: usize = 4096;

/// One write of a device message, as the store's columns hold it.
#[derive(Debug, Clone)]
pub(super) enum Write {
    /// Stored only if newer than the device's stored one; `at` also moves `last_seen`.
    Reported {
        device: String,
        seq: i64,
        text: String,
        agent_version: String,
        at: i64,
    },
    /// Stored once per (device, message id); if stored, `at` (its arrival) moves `last_seen`.
    Event {
        device: String,
        message_id: String,
        seq: i64,
        at: i64,
        text: String,
    },
    /// Stored once per (device, seq); if stored, `at` (its arrival) moves `last_seen`.
    Metrics {
        device: String,
        seq: i64,
        at: i64,
        received: i64,
        text: String,
    },
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<bool>>,
}

/// Hands writes to the grouping task.
#[derive(Debug, Clone)]
pub(super) struct Grouped {
    jobs: mpsc::Sender<Job>,
}

impl Grouped {
    /// Starts the grouping task on `pool` (one pooled connection per group).
    pub(super) fn start(pool: Pool) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(write_until_closed(pool, queue));
        Self { jobs }
    }

    /// Stores `write` with whatever else is waiting; whether it stored anything (a reported
    /// state newer than the stored one, an event or batch not stored before).
    pub(super) async fn write(&self, write: Write) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, reply })
            .await
            .map_err(|_| backend("the database's grouped writer has stopped"))?;
        answer
            .await
            .map_err(|_| backend("the database's grouped writer stopped before answering"))?
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("write", &self.write).finish()
    }
}

async fn write_until_closed(pool: Pool, mut queue: mpsc::Receiver<Job>) {
    while let Some(group) = next_group(&mut queue, MAX_GROUP).await {
        write_group(&pool, group).await;
    }
}

/// The next group from `queue`: the first job waited for, then whatever else is already
/// waiting, at most `max` in all. `None` once every sender is gone and the queue is empty.
pub(super) async fn next_group<T>(queue: &mut mpsc::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let mut group = vec![queue.recv().await?];
    while group.len() < max {
        match queue.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    Some(group)
}

async fn write_group(pool: &Pool, group: Vec<Job>) {
    let writes: Vec<&Write> = group.iter().map(|job| &job.write).collect();
    let refused = match in_one_transaction(pool, &writes).await {
        Ok(stored) => {
            for (job, stored) in group.into_iter().zip(stored) {
                let _ = job.reply.send(Ok(stored));
            }
            return;
        }
        Err(Failure::Refused(e)) if group.len() > 1 => e,
        Err(Failure::Refused(e) | Failure::Unreachable(e)) => {
            for job in group {
                let _ = job.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    tracing::warn!(writes = group.len(), error = %refused,
        "PostgreSQL refused a group of device-message writes; storing them one at a time");
    for job in group {
        let outcome = in_one_transaction(pool, &[&job.write])
            .await
            .map(|stored| stored[0])
            .map_err(Failure::into_error);
        let _ = job.reply.send(outcome);
    }
}

/// Why a group was not stored, which decides whether storing its writes one at a time can help.
#[derive(Debug)]
enum Failure {
    /// PostgreSQL ran the statements and refused one (a constraint, a trigger, a deadlock).
    Refused(StoreError),
    /// No connection, or it was lost or shut down (SQLSTATE classes 08, 53, 57, 58).
    Unreachable(StoreError),
}

impl Failure {
    fn into_error(self) -> StoreError {
        match self {
            Failure::Refused(e) | Failure::Unreachable(e) => e,
        }
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        let refused = e.as_db_error().is_some_and(|db| {
            !["08", "53", "57", "58"].contains(&db.code().code().get(..2).unwrap_or(""))
        });
        if refused && !e.is_closed() {
            Failure::Refused(pg(e))
        } else {
            Failure::Unreachable(pg(e))
        }
    }
}

type Grouping<T> = std::result::Result<T, Failure>;

/// Stores `writes` in one transaction; per write, whether it stored anything.
async fn in_one_transaction(pool: &Pool, writes: &[&Write]) -> Grouping<Vec<bool>> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| Failure::Unreachable(pool_error(e)))?;
    let outcome = in_transaction_on(&mut client, writes).await;
    if let Err(Failure::Unreachable(_)) = outcome {
        // Back in the pool, a connection the server has just closed can look open (its task
        // has not read the close yet) and would fail the next group too.
        drop(deadpool_postgres::Object::take(client));
    }
    outcome
}

async fn in_transaction_on(client: &mut Client, writes: &[&Write]) -> Grouping<Vec<bool>> {
    let tx = client.transaction().await?;
    let mut stored = vec![false; writes.len()];
    metrics(&tx, writes, &mut stored).await?;
    events(&tx, writes, &mut stored).await?;
    reported(&tx, writes, &mut stored).await?;
    seen_at_arrival(&tx, writes, &stored).await?;
    tx.commit().await?;
    Ok(stored)
}

async fn metrics(tx: &Transaction<'_>, writes: &[&Write], stored: &mut [bool]) -> Grouping<()> {
    let (mut at_index, mut devices, mut seqs, mut ats, mut received, mut texts) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (index, write) in writes.iter().enumerate() {
        if let Write::Metrics {
            device,
            seq,
            at,
            received: when,
            text,
        } = write
        {
            at_index.push(index);
            devices.push(device.as_str());
            seqs.push(*seq);
            ats.push(*at);
            received.push(*when);
            texts.push(text.as_str());
        }
    }
    if at_index.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare_cached(
            "WITH stored AS (
                 INSERT INTO metrics_batches (device, seq, at, received, batch)
                 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[],
                                      $5::TEXT[])
                 ON CONFLICT (device, seq) DO NOTHING RETURNING device, seq, received
             ), queued AS (
                 INSERT INTO metrics_unrolled (device, seq, received)
                 SELECT device, seq, received FROM stored
             )
             SELECT device, seq FROM stored",
        )
        .await?;
    let rows = tx
        .query(&statement, &[&devices, &seqs, &ats, &received, &texts])
        .await?;
    let mut inserted: HashSet<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    // A batch twice in one group is inserted once: the first of them says so.
    for (n, index) in at_index.into_iter().enumerate() {
        stored[index] = inserted.remove(&(devices[n].to_owned(), seqs[n]));
    }
    Ok(())
}

async fn events(tx: &Transaction<'_>, writes: &[&Write], stored: &mut [bool]) -> Grouping<()> {
    let (mut at_index, mut devices, mut ids, mut seqs, mut ats, mut texts) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (index, write) in writes.iter().enumerate() {
        if let Write::Event {
            device,
            message_id,
            seq,
            at,
            text,
        } = write
        {
            at_index.push(index);
            devices.push(device.as_str());
            ids.push(message_id.as_str());
            seqs.push(*seq);
            ats.push(*at);
            texts.push(text.as_str());
        }
    }
    if at_index.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare_cached(
            "INSERT INTO events (device, message_id, seq, at, message)
             SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::TEXT[])
             ON CONFLICT (device, message_id) DO NOTHING RETURNING device, message_id",
        )
        .await?;
    let rows = tx
        .query(&statement, &[&devices, &ids, &seqs, &ats, &texts])
        .await?;
    let mut inserted: HashSet<(String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for (n, index) in at_index.into_iter().enumerate() {
        stored[index] = inserted.remove(&(devices[n].to_owned(), ids[n].to_owned()));
    }
    Ok(())
}

/// Reported states in rounds, each naming a device at most once, in the order they were
/// handed over: one statement cannot update a row twice, and a device's later report must be
/// judged against its earlier one.
async fn reported(tx: &Transaction<'_>, writes: &[&Write], stored: &mut [bool]) -> Grouping<()> {
    let mut waiting: Vec<usize> = writes
        .iter()
        .enumerate()
        .filter(|(_, write)| matches!(write, Write::Reported { .. }))
        .map(|(index, _)| index)
        .collect();
    while !waiting.is_empty() {
        let mut in_round = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = waiting.into_iter().partition(|&index| {
            let Write::Reported { device, .. } = writes[index] else {
                unreachable!("only reported states wait here")
            };
            in_round.insert(device.as_str())
        });
        waiting = later;
        reported_round(tx, writes, &round, stored).await?;
    }
    Ok(())
}

async fn reported_round(
    tx: &Transaction<'_>,
    writes: &[&Write],
    round: &[usize],
    stored: &mut [bool],
) -> Grouping<()> {
    let (mut devices, mut seqs, mut texts, mut versions, mut ats) =
        (vec![], vec![], vec![], vec![], vec![]);
    for &index in round {
        if let Write::Reported {
            device,
            seq,
            text,
            agent_version,
            at,
        } = writes[index]
        {
            devices.push(device.as_str());
            seqs.push(*seq);
            texts.push(text.as_str());
            versions.push(agent_version.as_str());
            ats.push(*at);
        }
    }
    let statement = tx
        .prepare_cached(
            "UPDATE devices AS d SET reported = v.reported, reported_seq = v.seq,
                 agent_version = v.agent_version,
                 last_seen = GREATEST(COALESCE(d.last_seen, 0), v.at), reported_at = v.at
             FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[])
                 AS v (id, seq, reported, agent_version, at)
             WHERE d.id = v.id AND d.reported_seq < v.seq RETURNING d.id",
        )
        .await?;
    let rows = tx
        .query(&statement, &[&devices, &seqs, &texts, &versions, &ats])
        .await?;
    let updated: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    for (n, &index) in round.iter().enumerate() {
        stored[index] = updated.contains(devices[n]);
    }
    Ok(())
}

/// `last_seen` moved forward to the arrival of every event and batch this group stored (a
/// reported state moves it itself), so storing a device message is one round, not two. A row is
/// rewritten only when its `last_seen` moves.
async fn seen_at_arrival(tx: &Transaction<'_>, writes: &[&Write], stored: &[bool]) -> Grouping<()> {
    let (mut devices, mut ats) = (vec![], vec![]);
    for (index, write) in writes.iter().enumerate() {
        let seen = match write {
            Write::Event { device, at, .. } | Write::Metrics { device, at, .. }
                if stored[index] =>
            {
                Some((device, at))
            }
            _ => None,
        };
        if let Some((device, at)) = seen {
            devices.push(device.as_str());
            ats.push(*at);
        }
    }
    if devices.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare_cached(
            "UPDATE devices AS d SET last_seen = v.at
             FROM (SELECT id, MAX(at) AS at FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS u (id, at)
                   GROUP BY id) AS v
             WHERE d.id = v.id AND COALESCE(d.last_seen, 0) < v.at",
        )
        .await?;
    tx.execute(&statement, &[&devices, &ats]).await?;
    Ok(())
}
