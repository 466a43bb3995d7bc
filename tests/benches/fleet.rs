//! Figures for docs/BENCHMARKS.md: one fleet server (release build) under a simulated fleet of N
//! devices (`edgefleet-sim`, one MQTT connection per device; `EDGEFLEET_BENCH_DEVICES`, default
//! 1000), all running churn 1.0.0 and sending a metrics batch every 60 s at 1 prediction/s. The
//! broker is the embedded one or Mosquitto (`EDGEFLEET_BENCH_BROKER=embedded|mosquitto`), the
//! database SQLite or a PostgreSQL of the bench's own (`EDGEFLEET_BENCH_DATABASE=sqlite|postgres`).
//! On Mosquitto the fleet is enrolled in bulk first (`edgefleet-sim enroll`), the broker's
//! password file regenerated and reloaded, and only then connected.
//!
//! - connect storm: first connection to every device connected (the simulator's figure);
//! - server RSS before the fleet and with it connected (→ per device), and Mosquitto's;
//! - `rollout create` of 2.0.0 to the whole fleet (one wave, no bake) → completed;
//! - sustained telemetry for `EDGEFLEET_BENCH_MINUTES` (default 3): server CPU (cores), the
//!   database's growth (→ bytes per device-day), operator API latency (p50/p99 of a rollout's
//!   status, one device, the device list, the fleet's last hour of telemetry) and a `/metrics`
//!   scrape, asked once a second meanwhile; then, once the last minutes' rollups settled, the
//!   payload bytes raw batches and rollups added per device-day (an upper bound for rollups:
//!   the minutes after the window, not yet merged, count too).
//!
//! Uses the release binaries: `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench fleet`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::postgres::Postgres;
use edgefleet_e2e::sim::SimProcess;
use edgefleet_e2e::{cpu_seconds, rss_mib};
use serde_json::{Value, json};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| {
        v.parse().unwrap_or_else(|_| panic!("{name} is a number"))
    })
}

fn env_choice<'a>(name: &str, choices: &[&'a str]) -> &'a str {
    match std::env::var(name) {
        Err(_) => choices[0],
        Ok(v) => choices
            .iter()
            .find(|c| **c == v)
            .unwrap_or_else(|| panic!("{name} is one of {choices:?}")),
    }
}

/// Where the server keeps its data, weighed as a reader sees it.
enum Database {
    /// The server's directory.
    Sqlite(std::path::PathBuf),
    Postgres(Postgres),
}

impl Database {
    fn sqlite(dir: &std::path::Path) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            dir.join("data").join("fleet.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// Bytes of the database in use. SQLite: pages less free pages (WAL frames not yet
    /// checkpointed included, file growth in large steps and free pages not). PostgreSQL:
    /// `pg_database_size` (dead rows not yet vacuumed included).
    fn bytes(&self) -> u64 {
        match self {
            Self::Sqlite(dir) => {
                let db = Self::sqlite(dir);
                let pragma = |name: &str| -> u64 {
                    db.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                        .unwrap() as u64
                };
                (pragma("page_count") - pragma("freelist_count")) * pragma("page_size")
            }
            Self::Postgres(pg) => pg.scalar("SELECT pg_database_size(current_database())") as u64,
        }
    }

    /// Payload bytes (the columns' lengths, not pages) of raw batches and of telemetry rollups.
    fn telemetry_payload_bytes(&self) -> (u64, u64) {
        const RAW: &str = "SELECT COALESCE(SUM(OCTET_LENGTH(batch) + OCTET_LENGTH(device) + 32), 0) FROM metrics_batches";
        const ROLLUPS: &str = "SELECT COALESCE(SUM(OCTET_LENGTH(figures) + OCTET_LENGTH(grp) + OCTET_LENGTH(model) + OCTET_LENGTH(version) + 32), 0) FROM telemetry_rollups";
        match self {
            Self::Sqlite(dir) => {
                let db = Self::sqlite(dir);
                // SQLite's LENGTH counts bytes of a blob, characters of text: all ASCII here.
                let sum = |sql: &str| -> u64 {
                    db.query_row(&sql.replace("OCTET_LENGTH", "LENGTH"), [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .unwrap() as u64
                };
                (sum(RAW), sum(ROLLUPS))
            }
            Self::Postgres(pg) => (pg.scalar(RAW) as u64, pg.scalar(ROLLUPS) as u64),
        }
    }
}

/// One socket per device in the broker: Mosquitto, a child of this process, inherits the limit
/// raised to its maximum here.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let nofile = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: nofile.maximum,
        maximum: nofile.maximum,
    };
    setrlimit(Resource::Nofile, raised).unwrap();
    nofile.maximum.unwrap_or(u64::MAX)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn main() {
    let devices = env_number("EDGEFLEET_BENCH_DEVICES", 1_000);
    let minutes = env_number("EDGEFLEET_BENCH_MINUTES", 3);
    let broker = env_choice("EDGEFLEET_BENCH_BROKER", &["embedded", "mosquitto"]);
    let database = env_choice("EDGEFLEET_BENCH_DATABASE", &["sqlite", "postgres"]);
    let mosquitto = broker == "mosquitto";
    let open_files = raise_open_file_limit();
    assert!(
        devices + 1_024 <= open_files,
        "{devices} devices need more open files than this machine allows a process ({open_files})"
    );
    let tmp = tempfile::tempdir().unwrap();
    let postgres = (database == "postgres").then(Postgres::start);
    let fleet = demo::set_up(
        tmp.path(),
        &DemoOptions {
            mosquitto,
            database_url: postgres.as_ref().map(Postgres::url),
            ..DemoOptions::embedded(0)
        },
    );
    let database = match postgres {
        Some(pg) => Database::Postgres(pg),
        None => Database::Sqlite(fleet.server.dir.clone()),
    };
    let server_pid = fleet.server.child.id();
    let broker_pid = fleet.mosquitto.as_ref().map(|m| m.child.id());
    let admin = fleet.operator.token();
    let token = tmp.path().join("admin.token");
    std::fs::write(&token, &admin).unwrap();
    let rss_empty = rss_mib(server_pid);
    let broker_rss_empty = broker_pid.map(rss_mib);
    let started = Instant::now();
    let config = format!(
        r#"server_url = "{server}"
admin_token_file = "{token}"
duration_seconds = {duration}
connects_per_second = 2000
source_addresses = {sources}
enroll_concurrency = 32
initial_target = "models/churn/1.0.0/model.onnx"
[telemetry]
window_seconds = 60
requests_per_second = 1.0
[[groups]]
name = "sim"
devices = {devices}
install_delay_ms = 2000
"#,
        server = fleet.server.base_url(),
        token = token.display(),
        duration = 3_600,
        sources = devices / 10_000 + 1,
    );
    let (sim, bulk) = if mosquitto {
        let enrolled = SimProcess::enroll(tmp.path(), &config);
        let enrolled_in = started.elapsed();
        let told = Instant::now();
        fleet.broker_learns_devices();
        let told_in = told.elapsed();
        (
            SimProcess::start_enrolled(tmp.path(), &enrolled, Duration::from_secs(3_600)),
            Some((enrolled_in, told_in)),
        )
    } else {
        (
            SimProcess::start_connected(tmp.path(), &config, Duration::from_secs(3_600)),
            None,
        )
    };
    let enrolled_and_connected = started.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let rss_connected = rss_mib(server_pid);
    let broker_rss_connected = broker_pid.map(rss_mib);

    let rollout_started = Instant::now();
    let id = fleet.create_rollout(&json!({
        "model": "churn", "version": "2.0.0", "group": "sim", "waves": [100.0],
        "bake_seconds": 0, "device_timeout_seconds": 1800,
    }));
    let finished = fleet.ended_rollout(&id, Duration::from_secs(3_600));
    let rollout_seconds = rollout_started.elapsed().as_secs_f64();
    assert_eq!(finished["state"]["state"], "completed", "{finished:#}");

    // Sustained telemetry, with an operator and a Prometheus asking meanwhile.
    let cpu_before = cpu_seconds(server_pid);
    let broker_cpu_before = broker_pid.map(cpu_seconds);
    let db_before = database.bytes();
    let (raw_before, rollups_before) = database.telemetry_payload_bytes();
    let steady = Instant::now();
    let mut timings: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let asks: [(&str, String, bool); 6] = [
        ("rollout status", format!("/api/v1/rollouts/{id}"), true),
        ("one device", "/api/v1/devices/sim-sim-0".into(), true),
        ("device list, whole fleet", "/api/v1/devices".into(), true),
        (
            "device list, a dashboard page (100)",
            "/api/v1/devices?limit=100&after=sim-sim-5000".into(),
            true,
        ),
        (
            "fleet telemetry, last hour",
            "/api/v1/telemetry?model=churn&since_seconds=3600".into(),
            true,
        ),
        ("/metrics scrape", "/metrics".into(), false),
    ];
    while steady.elapsed() < Duration::from_secs(60 * minutes) {
        let round = Instant::now();
        for (name, path, authed) in &asks {
            let t = Instant::now();
            if *authed {
                let (status, _): (u16, Value) = fleet.server.call("GET", path, Some(&admin), None);
                assert_eq!(status, 200, "{path}");
            } else {
                let _ = fleet.server.metrics_text();
            }
            timings
                .entry(name)
                .or_default()
                .push(t.elapsed().as_secs_f64() * 1e3);
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
    }
    let seconds = steady.elapsed().as_secs_f64();
    let cores = (cpu_seconds(server_pid) - cpu_before) / seconds;
    let broker_cores = broker_pid
        .zip(broker_cpu_before)
        .map(|(pid, before)| (cpu_seconds(pid) - before) / seconds);
    let db_growth = database.bytes().saturating_sub(db_before) as f64;
    let per_device_day = db_growth / devices as f64 / seconds * 86_400.0;
    // Rollups settle (a minute's rows merge) 3 minutes after it ends: wait for that before
    // weighing them.
    std::thread::sleep(Duration::from_secs(200));
    let (raw_after, rollups_after) = database.telemetry_payload_bytes();
    let day = |bytes: u64| bytes as f64 / devices as f64 / seconds * 86_400.0;
    let raw_per_device_day = day(raw_after.saturating_sub(raw_before));
    let rollups_per_device_day = day(rollups_after.saturating_sub(rollups_before));

    let summary = sim.stop();

    let database_name = match &database {
        Database::Sqlite(_) => "SQLite",
        Database::Postgres(_) => "PostgreSQL",
    };
    println!(
        "devices: {devices} (one MQTT connection each, {} broker, {database_name})",
        if mosquitto { "Mosquitto" } else { "embedded" }
    );
    match bulk {
        Some((enrolled_in, told_in)) => println!(
            "enrolled in {:.1} s (edgefleet-sim enroll), broker's password file written and \
             reloaded in {:.1} s, connect storm {:.1} s",
            enrolled_in.as_secs_f64(),
            told_in.as_secs_f64(),
            summary["connect_storm_seconds"]
                .as_f64()
                .unwrap_or(f64::NAN),
        ),
        None => println!(
            "enrolled and connected in {:.1} s (enrollment {:.1} s, connect storm {:.1} s)",
            enrolled_and_connected.as_secs_f64(),
            summary["enroll_seconds"].as_f64().unwrap_or(f64::NAN),
            summary["connect_storm_seconds"]
                .as_f64()
                .unwrap_or(f64::NAN),
        ),
    }
    println!(
        "server RSS: {rss_empty:.1} MiB empty, {rss_connected:.1} MiB with the fleet connected \
         ({:.1} KiB per device)",
        (rss_connected - rss_empty) * 1024.0 / devices as f64
    );
    if let (Some(empty), Some(connected)) = (broker_rss_empty, broker_rss_connected) {
        println!(
            "Mosquitto RSS: {empty:.1} MiB empty, {connected:.1} MiB with the fleet connected \
             ({:.1} KiB per device)",
            (connected - empty) * 1024.0 / devices as f64
        );
    }
    println!("rollout create -> completed (one wave, no bake): {rollout_seconds:.1} s");
    println!(
        "telemetry at 60 s windows for {seconds:.0} s: server CPU {cores:.2} cores; database grew \
         {:.1} MiB = {:.0} kB per device-day",
        db_growth / 1_048_576.0,
        per_device_day / 1e3
    );
    if let Some(cores) = broker_cores {
        println!("Mosquitto CPU meanwhile: {cores:.2} cores");
    }
    println!(
        "payload per device-day: raw batches {:.0} kB (kept telemetry.raw_retention_hours), \
         rollups {:.2} kB (kept telemetry.retention_days)",
        raw_per_device_day / 1e3,
        rollups_per_device_day / 1e3
    );
    for (name, mut ms) in timings {
        ms.sort_by(f64::total_cmp);
        println!(
            "{name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} asks)",
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN),
            ms.len()
        );
    }
    println!("simulator: {summary}");
}
