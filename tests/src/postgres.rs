//! A real PostgreSQL server for tests: the store suite runs on it and the fleet-server runs on it
//! end to end. PostgreSQL's server binaries must be installed (`scripts/setup.sh` installs
//! postgresql-15); `EDGEFLEET_PG_BIN` points at another `bin/` directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A PostgreSQL server of a test's own, stopped (fast shutdown) when dropped.
#[derive(Debug)]
pub struct Postgres {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn postgres_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDGEFLEET_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries are not installed: run scripts/setup.sh (apt-get install postgresql-15)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/postgres: run scripts/setup.sh")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// PostgreSQL refuses to run as root: as root, run it as the `postgres` system user.
fn as_postgres_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// initdb into a temporary directory, then `postgres` on a free loopback port (no Unix
    /// socket, fsync off: test data only).
    pub fn start() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if is_root() {
            let status = Command::new("chmod")
                .arg("0755")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&data)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "chown postgres: is the postgres user there?"
            );
        }
        let out = as_postgres_user(&bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=edgefleet",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // TCP accepting is not PostgreSQL ready (it refuses clients while starting up), and a
        // free port may be taken by another test's process before postgres binds it: wait for
        // pg_isready, and start again on another port if postgres exits.
        let mut attempts = 0;
        let (child, port) = loop {
            attempts += 1;
            let port = free_port();
            let mut child = as_postgres_user(&bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "unix_socket_directories="])
                .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            let ready = loop {
                let accepting = Command::new(bin.join("pg_isready"))
                    .args([
                        "-q",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "-U",
                        "edgefleet",
                    ])
                    .status()
                    .is_ok_and(|s| s.success());
                if accepting {
                    break true;
                }
                if child.try_wait().unwrap().is_some() {
                    break false;
                }
                assert!(
                    Instant::now() < deadline,
                    "postgres did not accept connections within 30 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            if ready {
                break (child, port);
            }
            assert!(
                attempts < 3,
                "postgres exited at start three times (ports taken?)"
            );
        };
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// A URL for the `edgefleet` superuser (trust authentication, no TLS).
    pub fn url(&self) -> String {
        format!(
            "postgres://edgefleet@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }
}

impl Postgres {
    /// The one number `sql` selects, asked through `psql` (benchmarks weigh the database so).
    pub fn scalar(&self, sql: &str) -> i64 {
        let out = Command::new(postgres_bin().join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "edgefleet", "-d", "postgres", "-At", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("psql {sql}: {text:?}: {e}"))
    }
}

impl Postgres {
    /// A `psql` session read from its standard input (piped), quiet and stopping at the first
    /// error: for a test that holds a transaction or a lock open while the server works.
    pub fn session(&self) -> crate::fleet::KillOnDrop {
        crate::fleet::KillOnDrop(
            Command::new(postgres_bin().join("psql"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args([
                    "-U",
                    "edgefleet",
                    "-d",
                    "postgres",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT, PostgreSQL's fast shutdown: it disconnects clients rather than waiting for them
        // (the test's runtime, blocked here, would never close its pooled connections).
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
