//! The upstream outbox: device messages (events, metrics batches) wait here, in their own SQLite
//! file, until the broker acknowledges them. Bounded: when full, the oldest metrics batches go
//! first (events only when no batch is left: they tell what happened to an update), and how many
//! were dropped is kept, to be reported upstream. A batch that carried such a count and is itself
//! dropped gives its count back, so no drop goes unreported.
//!
//! A message handed to the broker and not yet acknowledged ("on the wire") is never dropped: the
//! broker may already have passed it on, and counting it as dropped as well would report a loss
//! that did not happen. So the bound is `max_messages` plus what is on the wire on the current
//! connection (at most what the publisher sends before acknowledgements come back); when the
//! connection ends, everything is waiting again and the bound applies to all of it. (What was
//! on the wire when a connection died is the one case QoS 1 cannot settle: if the broker had
//! passed it on and the outbox overflows before the next connection, it is counted dropped too.)
//!
//! The row id is the message's `seq`: strictly increasing per device and never reused
//! (`AUTOINCREMENT`), so the server can store each (device, seq) once and in order.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, thiserror::Error)]
#[error("outbox {path}: {detail}")]
pub struct OutboxError {
    path: String,
    detail: String,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    /// Highest seq handed to the broker on the current connection: rows up to it are on the
    /// wire (or acknowledged and gone) and are not evicted. Behind the same lock as the rows so
    /// that claiming rows for sending and evicting them cannot interleave.
    on_wire_up_to: u64,
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub seq: u64,
    /// The channel it goes on (`events`, `metrics`).
    pub channel: String,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    path: String,
    max_messages: u64,
}

impl Outbox {
    pub fn open(path: &Path, max_messages: u64) -> Result<Self, OutboxError> {
        let err = |detail: String| OutboxError {
            path: path.display().to_string(),
            detail,
        };
        let conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
        conn.execute_batch(
            // A device's disk is small and its flash wears: the write-ahead log is folded back
            // every 64 pages (256 kB at 4 kB pages) and cut back to 512 kB, so an outbox at its
            // bound stays near its rows' size (SQLite's default lets the log reach ~4 MB).
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 64;
             PRAGMA journal_size_limit = 524288;
             CREATE TABLE IF NOT EXISTS outbox (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 channel TEXT NOT NULL,
                 payload BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )
        .map_err(|e| err(e.to_string()))?;
        // Outboxes written before batches carried drop counts lack the column.
        let has_carried: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('outbox') WHERE name = 'carried'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| err(e.to_string()))?
            > 0;
        if !has_carried {
            conn.execute_batch("ALTER TABLE outbox ADD COLUMN carried INTEGER NOT NULL DEFAULT 0")
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(Self {
            inner: Mutex::new(Inner {
                conn,
                on_wire_up_to: 0,
            }),
            path: path.display().to_string(),
            max_messages: max_messages.max(1),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> OutboxError {
        OutboxError {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, OutboxError> {
        let mut inner = self.inner.lock().map_err(|_| self.err("poisoned"))?;
        f(&mut inner.conn).map_err(|e| self.err(e))
    }

    fn with_inner<T>(
        &self,
        f: impl FnOnce(&mut Inner) -> rusqlite::Result<T>,
    ) -> Result<T, OutboxError> {
        let mut inner = self.inner.lock().map_err(|_| self.err("poisoned"))?;
        f(&mut inner).map_err(|e| self.err(e))
    }

    /// The seq the next message will get: build the message with it, then [`Outbox::push`].
    pub fn next_seq(&self) -> Result<u64, OutboxError> {
        self.with(|c| {
            let from_sequence: Option<i64> = c
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(from_sequence.unwrap_or(0) as u64 + 1)
        })
    }

    /// Queues a message under `seq` (from [`Outbox::next_seq`], under the same caller's lock);
    /// drops the oldest beyond the bound, metrics batches before events.
    pub fn push(&self, seq: u64, channel: &str, payload: &[u8]) -> Result<(), OutboxError> {
        self.push_carrying(seq, channel, payload, 0)
    }

    /// [`Outbox::push`] for a message that reports `carried` earlier drops (from
    /// [`Outbox::take_dropped`]): if it is dropped in turn, they count as dropped again.
    pub fn push_carrying(
        &self,
        seq: u64,
        channel: &str,
        payload: &[u8],
        carried: u64,
    ) -> Result<(), OutboxError> {
        let max = self.max_messages as i64;
        self.with_inner(|inner| {
            let on_wire_up_to = inner.on_wire_up_to as i64;
            let tx = inner.conn.transaction()?;
            tx.execute(
                "INSERT INTO outbox (seq, channel, payload, carried) VALUES (?1, ?2, ?3, ?4)",
                params![seq as i64, channel, payload, carried as i64],
            )?;
            let count: i64 = tx.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
            if count > max {
                let excess = count - max;
                let evicted: Vec<(i64, i64)> = {
                    let mut oldest = tx.prepare(
                        "SELECT seq, carried FROM outbox WHERE seq > ?2
                         ORDER BY channel = 'events', seq LIMIT ?1",
                    )?;
                    oldest
                        .query_map(params![excess, on_wire_up_to], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?
                        .collect::<rusqlite::Result<_>>()?
                };
                let mut dropped = 0i64;
                for (seq, carried) in evicted {
                    tx.execute("DELETE FROM outbox WHERE seq = ?1", params![seq])?;
                    dropped += 1 + carried;
                }
                tx.execute(
                    "INSERT INTO counters (name, value) VALUES ('dropped', ?1)
                     ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                    params![dropped],
                )?;
            }
            tx.commit()
        })
    }

    /// Up to `limit` messages not yet on the wire on this connection, oldest first; they are on
    /// the wire from now on (not evicted) until [`Outbox::unclaim_from`] or
    /// [`Outbox::connection_ended`].
    pub fn claim_for_sending(&self, limit: u32) -> Result<Vec<Queued>, OutboxError> {
        self.with_inner(|inner| {
            let rows = pending_after(&inner.conn, inner.on_wire_up_to, limit)?;
            if let Some(last) = rows.last() {
                inner.on_wire_up_to = last.seq;
            }
            Ok(rows)
        })
    }

    /// The message `seq` and those after it could not be handed to the broker after all: they
    /// wait again (and may be evicted).
    pub fn unclaim_from(&self, seq: u64) -> Result<(), OutboxError> {
        self.with_inner(|inner| {
            inner.on_wire_up_to = inner.on_wire_up_to.min(seq.saturating_sub(1));
            Ok(())
        })
    }

    /// The connection ended (or a new one began): what was on the wire and not acknowledged
    /// waits again, to be sent on the next connection or evicted.
    pub fn connection_ended(&self) -> Result<(), OutboxError> {
        self.with_inner(|inner| {
            inner.on_wire_up_to = 0;
            Ok(())
        })
    }

    /// Messages after `after_seq`, oldest first.
    #[cfg(test)]
    pub fn pending(&self, after_seq: u64, limit: u32) -> Result<Vec<Queued>, OutboxError> {
        self.with(|c| pending_after(c, after_seq, limit))
    }

    /// The broker has it: forget it.
    pub fn acknowledge(&self, seq: u64) -> Result<(), OutboxError> {
        self.with(|c| {
            c.execute("DELETE FROM outbox WHERE seq = ?1", params![seq as i64])
                .map(|_| ())
        })
    }

    pub fn len(&self) -> Result<u64, OutboxError> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
    }

    pub fn is_empty(&self) -> Result<bool, OutboxError> {
        self.len().map(|n| n == 0)
    }

    /// Messages dropped because the outbox was full, and not yet reported; resets the count.
    pub fn take_dropped(&self) -> Result<u64, OutboxError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n: Option<i64> = tx
                .query_row(
                    "SELECT value FROM counters WHERE name = 'dropped'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute("UPDATE counters SET value = 0 WHERE name = 'dropped'", [])?;
            tx.commit()?;
            Ok(n.unwrap_or(0) as u64)
        })
    }

    /// A persistent counter (e.g. the reported-state seq); returns the new value.
    pub fn bump(&self, name: &str) -> Result<u64, OutboxError> {
        self.with(|c| {
            c.query_row(
                "INSERT INTO counters (name, value) VALUES (?1, 1)
                 ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
                params![name],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v as u64)
        })
    }

    pub fn counter(&self, name: &str) -> Result<u64, OutboxError> {
        self.with(|c| {
            c.query_row(
                "SELECT value FROM counters WHERE name = ?1",
                params![name],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.unwrap_or(0) as u64)
        })
    }

    pub fn set_counter(&self, name: &str, value: u64) -> Result<(), OutboxError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value as i64],
            )
            .map(|_| ())
        })
    }
}

fn pending_after(c: &Connection, after_seq: u64, limit: u32) -> rusqlite::Result<Vec<Queued>> {
    let mut stmt =
        c.prepare("SELECT seq, channel, payload FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    stmt.query_map(params![after_seq as i64, limit], |r| {
        Ok(Queued {
            seq: r.get::<_, i64>(0)? as u64,
            channel: r.get(1)?,
            payload: r.get(2)?,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(o: &Outbox, channel: &str, payload: &[u8]) -> u64 {
        let seq = o.next_seq().unwrap();
        o.push(seq, channel, payload).unwrap();
        seq
    }

    #[test]
    fn messages_wait_in_order_until_acknowledged_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        {
            let o = Outbox::open(&path, 100).unwrap();
            assert_eq!(push(&o, "events", b"a"), 1);
            assert_eq!(push(&o, "events", b"b"), 2);
            o.acknowledge(1).unwrap();
            assert_eq!(o.bump("reported_seq").unwrap(), 1);
        }
        let o = Outbox::open(&path, 100).unwrap();
        assert_eq!(
            o.pending(0, 10)
                .unwrap()
                .iter()
                .map(|q| q.seq)
                .collect::<Vec<_>>(),
            [2]
        );
        // Sequence numbers are never reused, even after the newest was acknowledged.
        o.acknowledge(2).unwrap();
        assert_eq!(push(&o, "events", b"c"), 3);
        assert_eq!(o.bump("reported_seq").unwrap(), 2);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("outbox.db"), 3).unwrap();
        for i in 0..5u8 {
            push(&o, "metrics", &[i]);
        }
        let left: Vec<_> = o
            .pending(0, 10)
            .unwrap()
            .into_iter()
            .map(|q| q.payload[0])
            .collect();
        assert_eq!(left, [2, 3, 4]);
        assert_eq!(o.take_dropped().unwrap(), 2);
        assert_eq!(o.take_dropped().unwrap(), 0);
    }

    #[test]
    fn metrics_batches_go_before_events_and_a_dropped_count_is_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("outbox.db"), 3).unwrap();
        push(&o, "events", b"e1");
        push(&o, "metrics", b"m1");
        push(&o, "events", b"e2");
        push(&o, "metrics", b"m2"); // full: m1 goes, not the older e1
        let left = |o: &Outbox| -> Vec<Vec<u8>> {
            o.pending(0, 10)
                .unwrap()
                .into_iter()
                .map(|q| q.payload)
                .collect()
        };
        assert_eq!(left(&o), [b"e1".to_vec(), b"e2".to_vec(), b"m2".to_vec()]);
        // A batch reporting that drop is itself dropped: it gives its count back.
        let carried = o.take_dropped().unwrap();
        assert_eq!(carried, 1);
        let seq = o.next_seq().unwrap();
        o.push_carrying(seq, "metrics", b"m3", carried).unwrap(); // m2 goes
        push(&o, "metrics", b"m4"); // m3 goes, with the drop it carried
        assert_eq!(left(&o), [b"e1".to_vec(), b"e2".to_vec(), b"m4".to_vec()]);
        assert_eq!(o.take_dropped().unwrap(), 1 + 1 + 1);
        // With no batch left, events go too, oldest first.
        for _ in 0..3 {
            push(&o, "events", b"e");
        }
        assert_eq!(left(&o), [b"e".to_vec(), b"e".to_vec(), b"e".to_vec()]);
    }

    /// A message the broker may already have passed on is not also counted dropped: made =
    /// delivered + reported dropped holds when batches keep coming while the outbox drains.
    #[test]
    fn a_message_on_the_wire_is_never_evicted_and_made_equals_delivered_plus_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("outbox.db"), 3).unwrap();
        for i in 0..3u8 {
            push(&o, "metrics", &[i]);
        }
        let on_wire: Vec<u64> = o
            .claim_for_sending(2)
            .unwrap()
            .iter()
            .map(|q| q.seq)
            .collect();
        assert_eq!(on_wire, [1, 2]);
        // Two more while 1 and 2 are on the wire: only 3 and 4 can go.
        push(&o, "metrics", &[3]);
        push(&o, "metrics", &[4]);
        let seqs =
            |o: &Outbox| -> Vec<u64> { o.pending(0, 10).unwrap().iter().map(|q| q.seq).collect() };
        assert_eq!(seqs(&o), [1, 2, 5]);
        assert_eq!(o.take_dropped().unwrap(), 2);
        // The broker acknowledges 1; 2 could not be sent after all and waits again.
        o.acknowledge(1).unwrap();
        o.unclaim_from(2).unwrap();
        push(&o, "metrics", &[5]);
        push(&o, "metrics", &[6]);
        assert_eq!(seqs(&o), [5, 6, 7]);
        assert_eq!(o.take_dropped().unwrap(), 1);
        // Claimed again on a connection that then ends: everything is evictable.
        assert_eq!(o.claim_for_sending(10).unwrap().len(), 3);
        o.connection_ended().unwrap();
        push(&o, "metrics", &[7]);
        assert_eq!(seqs(&o), [6, 7, 8]);
        // Made 8 = delivered 1 + dropped 2 + 1 + 1 + waiting 3.
        assert_eq!(o.take_dropped().unwrap(), 1);
    }

    #[test]
    fn an_outbox_written_before_drop_counts_were_carried_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, payload BLOB NOT NULL);
                 INSERT INTO outbox (channel, payload) VALUES ('events', x'01');",
            )
            .unwrap();
        }
        let o = Outbox::open(&path, 10).unwrap();
        assert_eq!(o.pending(0, 10).unwrap().len(), 1);
        assert_eq!(push(&o, "metrics", b"m"), 2);
    }
}
