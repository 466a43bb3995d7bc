//! Read-only connections beside the single writer. In WAL mode readers see the last committed
//! state without waiting for the writer, so a device's authentication or an operator's list does
//! not queue behind a burst of telemetry inserts (the 10,000-device run in BENCHMARKS.md timed
//! out CONNECTs for exactly that reason).
//!
//! Hand-written rather than `r2d2_sqlite`/`deadpool-sqlite`: both pin an older rusqlite, and
//! `libsqlite3-sys` may exist once per build, so adopting either would hold the agent's and the
//! server's SQLite back to it. What is needed is small: a stack of connections and a semaphore.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::backend;
use crate::store::Result;

#[derive(Debug)]
pub(super) struct Readers {
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Opens `count` read-only connections to an existing, migrated database.
    pub(super) fn open(path: &Path, count: usize) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connections = (0..count.max(1))
            .map(|_| {
                let conn = Connection::open_with_flags(path, flags).map_err(|e| {
                    backend(format!("cannot open {} for reading: {e}", path.display()))
                })?;
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(backend)?;
                Ok(conn)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(connections.len())),
            idle: Mutex::new(connections),
        })
    }

    /// Runs `f` on an idle reader, waiting (without holding a thread) while all are busy.
    pub(super) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| backend("the read connections are closed"))?;
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let lent = Lent::take(&readers)?;
            let result = match &lent.conn {
                Some(conn) => f(conn),
                None => Err(backend("a lent read connection went missing")),
            };
            drop(lent);
            drop(permit);
            result
        })
        .await
        .map_err(backend)?
    }
}

/// A connection out of the stack; goes back on drop, so a panicking query cannot shrink the pool.
struct Lent<'a> {
    readers: &'a Readers,
    conn: Option<Connection>,
}

impl<'a> Lent<'a> {
    fn take(readers: &'a Readers) -> Result<Self> {
        let conn = readers
            .idle
            .lock()
            .map_err(|_| backend("the read connections' lock was poisoned"))?
            .pop()
            .ok_or_else(|| backend("no idle read connection despite a permit"))?;
        Ok(Self {
            readers,
            conn: Some(conn),
        })
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let (Some(conn), Ok(mut idle)) = (self.conn.take(), self.readers.idle.lock()) {
            idle.push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use crate::store::{DeviceStore, NewDevice, Store};
    use std::time::Duration;

    fn new_device(id: &str) -> NewDevice {
        NewDevice {
            id: edgefleet_protocol::DeviceId::new(id).unwrap(),
            group: "default".into(),
            tags: Default::default(),
        }
    }

    #[tokio::test]
    async fn reads_do_not_wait_for_a_held_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with_readers(&dir.path().join("fleet.db"), 2).unwrap();
        store
            .add_device(&new_device("cam-1"), "hash", i64::MAX, 0, false)
            .await
            .unwrap();
        // A write that holds the writer until told to finish.
        let (finish, wait) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = tokio::sync::oneshot::channel();
        let busy = store.clone();
        let write = tokio::spawn(async move {
            busy.write(move |_| {
                let _ = started.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
        });
        has_started.await.unwrap();
        let id = edgefleet_protocol::DeviceId::new("cam-1").unwrap();
        let found = tokio::time::timeout(Duration::from_secs(10), store.device(&id))
            .await
            .expect("a read waited for the writer")
            .unwrap();
        assert_eq!(found.unwrap().group, "default");
        finish.send(()).unwrap();
        write.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_reader_refuses_writes_and_a_panicking_query_returns_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with_readers(&dir.path().join("fleet.db"), 1).unwrap();
        let refused = store
            .read(|c| c.execute("DELETE FROM devices", []).map_err(super::backend))
            .await;
        assert!(refused.unwrap_err().to_string().contains("readonly"));
        let panicked = store
            .read(|_| -> crate::store::Result<()> { panic!("boom") })
            .await;
        assert!(panicked.is_err());
        // One connection: had the panic lost it, this would wait forever.
        tokio::time::timeout(Duration::from_secs(10), store.ping())
            .await
            .expect("the read connection was lost")
            .unwrap();
    }
}
