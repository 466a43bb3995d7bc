//! Figures for docs/BENCHMARKS.md: one fleet server (release build) under a simulated fleet of N
//! devices (`edgefleet-sim`, one MQTT connection per device; `EDGEFLEET_BENCH_DEVICES`, default
//! 1000), all running churn 1.0.0 and sending a metrics batch every 60 s at 1 prediction/s. The
//! broker is the embedded one or Mosquitto (`EDGEFLEET_BENCH_BROKER=embedded|mosquitto`), the
//! database SQLite or a PostgreSQL of the bench's own (`EDGEFLEET_BENCH_DATABASE=sqlite|postgres`).
//! On Mosquitto the fleet is enrolled in bulk first (`edgefleet-sim enroll`), the broker's
//! password file regenerated and reloaded, and only then connected. `EDGEFLEET_BENCH_BRIDGES=K`
//! (Mosquitto only) puts K Mosquittos bridging into the fleet's one in front of the devices, each
//! with its own simulator of N/K devices: how a fleet goes past the sockets one process may hold
//! (the server still has one connection to one broker).
//!
//! - connect storm: first connection to every device connected (the simulator's figure);
//! - server RSS before the fleet and with it connected (→ per device), and Mosquitto's;
//! - `rollout create` of 2.0.0 to the whole fleet (one wave, no bake) → completed;
//! - sustained telemetry for `EDGEFLEET_BENCH_MINUTES` (default 3) with nobody asking: server
//!   CPU (cores) and the database's growth (→ bytes per device-day);
//! - as long again with an operator and a Prometheus asking once a second each (a rollout's
//!   status, one device, a page of the device list, the fleet's last hour of telemetry, a
//!   `/metrics` scrape): their latency (p50/p99) and the server's CPU with them; then, once the
//!   last minutes' rollups settled, the payload bytes raw batches and rollups added per
//!   device-day (an upper bound for rollups: the minutes after the window, not yet merged, count
//!   too);
//! - the dashboard opened ten times in headless Chromium by a signed-in operator, the fleet
//!   still sending: first contentful paint and the first page of devices in the table;
//! - messages lost: every message the devices had acknowledged, against what the server counts
//!   stored once the simulators stopped.
//!
//! `EDGEFLEET_BENCH_LOAD_NICE=N` (default 0) runs the simulators and the bridging Mosquittos at
//! nice N once connected: on a 2-core machine the load generator takes the core the server does
//! not, and the asks' latency then measures the contention for the CPU as much as the server. At
//! 19 the server (with its broker and database) comes first, as if the devices were elsewhere.
//!
//! Uses the release binaries: `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench fleet`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/telemetry/browser.rs"]
mod browser;

use std::time::{Duration, Instant};

use edgefleet_e2e::bridge;
use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::postgres::Postgres;
use edgefleet_e2e::sim::{SimProcess, combined_summary};
use edgefleet_e2e::{cpu_seconds, peak_rss_mib, rss_mib};
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

/// Every thread of `pid` at nice `nice` (Linux keeps a nice value per thread; threads the process
/// starts later inherit their creator's).
fn renice(pid: u32, nice: i32) {
    use rustix::process::{Pid, setpriority_process};
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: i32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        // A thread may end between listing and renicing.
        let _ = setpriority_process(Pid::from_raw(tid), nice);
    }
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
    let bridges = env_number("EDGEFLEET_BENCH_BRIDGES", 0);
    let load_nice = i32::try_from(env_number("EDGEFLEET_BENCH_LOAD_NICE", 0))
        .ok()
        .filter(|n| *n <= 19)
        .expect("EDGEFLEET_BENCH_LOAD_NICE is a nice value, 0 to 19");
    assert!(
        bridges == 0 || mosquitto,
        "EDGEFLEET_BENCH_BRIDGES needs EDGEFLEET_BENCH_BROKER=mosquitto"
    );
    let simulators = bridges.max(1);
    let open_files = raise_open_file_limit();
    assert!(
        devices / simulators + 1_024 <= open_files,
        "{} devices on one broker need more open files than this machine allows a process \
         ({open_files}): set EDGEFLEET_BENCH_BRIDGES",
        devices / simulators
    );
    let tmp = tempfile::tempdir().unwrap();
    let postgres = (database == "postgres").then(Postgres::start);
    let fleet = demo::set_up(
        tmp.path(),
        &DemoOptions {
            mosquitto,
            database_url: postgres.as_ref().map(Postgres::url),
            // The shipped refresh of the fleet's figures, not the test harness's 1 s: the
            // scrapes below are once a second, and at 1 s each of them recomputed the figures
            // (every run before 2026-12-06's last measured that, not what a server answers).
            server_toml: "[metrics]\nrefresh_seconds = 15\n".into(),
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
    // Simulator k runs devices k·N/K .. (k+1)·N/K, ids `s<k>-sim-<n>` when bridged.
    let share = |k: u64| devices * (k + 1) / simulators - devices * k / simulators;
    let prefix = |k: u64| {
        if bridges == 0 {
            "sim".to_owned()
        } else {
            format!("s{k}")
        }
    };
    let config = |k: u64, broker_url: Option<String>| {
        format!(
            r#"server_url = "{server}"
admin_token_file = "{token}"
id_prefix = "{prefix}"
{broker}
duration_seconds = {duration}
connects_per_second = {pace}
source_addresses = {sources}
enroll_concurrency = 32
initial_target = "models/churn/1.0.0/model.onnx"
[telemetry]
window_seconds = 60
requests_per_second = 1.0
[[groups]]
name = "sim"
devices = {share}
install_delay_ms = 2000
"#,
            server = fleet.server.base_url(),
            token = token.display(),
            prefix = prefix(k),
            broker = broker_url.map_or(String::new(), |u| format!("broker_url = \"{u}\"")),
            duration = 3_600,
            pace = 2_000 / simulators,
            share = share(k),
            // Bridged, each simulator has a broker port of its own and connects from
            // 127.0.0.1 without binding, so the kernel picks ports per destination. Binding
            // source addresses with port 0 made all of them share those addresses' ~28,000
            // ports: 100,000 devices stopped at ~55,000 connections, the simulators busy in
            // the kernel's bind().
            sources = if bridges > 0 {
                1
            } else {
                share(k) / 10_000 + 1
            },
        )
    };
    let sim_dir = |k: u64| {
        let dir = tmp.path().join(format!("sim-{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let mut bridging = Vec::new();
    let (sims, bulk) = if mosquitto {
        let enrolled: Vec<_> = (0..simulators)
            .map(|k| SimProcess::enroll(&sim_dir(k), &config(k, None)))
            .collect();
        let enrolled_in = started.elapsed();
        let told = Instant::now();
        fleet.broker_learns_devices();
        let told_in = told.elapsed();
        let central = fleet.mosquitto.as_ref().unwrap();
        let settings = central.conf.with_file_name("edgefleet.conf");
        for k in 0..bridges {
            let user = format!("edgefleet-bridge-{k}");
            bridge::admit_bridge(central, &settings, &user, "bench-bridge-secret");
            let edge = bridge::start_bridge(
                &tmp.path().join(format!("bridge-{k}")),
                &settings,
                central,
                &user,
                "bench-bridge-secret",
            );
            std::fs::write(sim_dir(k).join("sim.toml"), config(k, Some(edge.url()))).unwrap();
            bridging.push(edge);
        }
        let mut sims: Vec<_> = (0..simulators)
            .map(|k| SimProcess::spawn(&sim_dir(k), Some(&enrolled[k as usize])))
            .collect();
        for sim in &mut sims {
            sim.wait_connected(Duration::from_secs(3_600));
        }
        (sims, Some((enrolled_in, told_in)))
    } else {
        let sim =
            SimProcess::start_connected(&sim_dir(0), &config(0, None), Duration::from_secs(3_600));
        (vec![sim], None)
    };
    let enrolled_and_connected = started.elapsed();
    if load_nice > 0 {
        for pid in sims
            .iter()
            .map(SimProcess::pid)
            .chain(bridging.iter().map(|b| b.child.id()))
        {
            renice(pid, load_nice);
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    let rss_connected = rss_mib(server_pid);
    let broker_rss_connected = broker_pid.map(rss_mib);
    let bridging_rss: f64 = bridging.iter().map(|b| rss_mib(b.child.id())).sum();

    let rollout_started = Instant::now();
    let id = fleet.create_rollout(&json!({
        "model": "churn", "version": "2.0.0", "group": "sim", "waves": [100.0],
        "bake_seconds": 0, "device_timeout_seconds": 1800,
    }));
    let create_seconds = rollout_started.elapsed().as_secs_f64();
    println!("rollout create answered in {create_seconds:.1} s");
    let finished = fleet.ended_rollout(&id, Duration::from_secs(3_600));
    let rollout_seconds = rollout_started.elapsed().as_secs_f64();
    let peak_after_rollout = peak_rss_mib(server_pid);
    assert_eq!(finished["state"]["state"], "completed", "{finished:#}");

    // Sustained telemetry with nobody asking: what the fleet alone costs the server.
    let cpu = |pid: u32| cpu_seconds(pid);
    let bridging_cpu = || -> f64 { bridging.iter().map(|b| cpu(b.child.id())).sum() };
    let quiet = Instant::now();
    let (cpu_before, broker_cpu_before, bridging_cpu_before) =
        (cpu(server_pid), broker_pid.map(cpu), bridging_cpu());
    let db_before = database.bytes();
    let (raw_before, rollups_before) = database.telemetry_payload_bytes();
    std::thread::sleep(Duration::from_secs(60 * minutes));
    let quiet_seconds = quiet.elapsed().as_secs_f64();
    let quiet_cores = (cpu(server_pid) - cpu_before) / quiet_seconds;
    let broker_cores = broker_pid
        .zip(broker_cpu_before)
        .map(|(pid, before)| (cpu(pid) - before) / quiet_seconds);
    let bridging_cores = (bridging_cpu() - bridging_cpu_before) / quiet_seconds;
    let db_growth = database.bytes().saturating_sub(db_before) as f64;
    let per_device_day = db_growth / devices as f64 / quiet_seconds * 86_400.0;

    // As long again with an operator and a Prometheus asking meanwhile.
    let first = prefix(0);
    let asks: [(&str, String, bool); 5] = [
        ("rollout status", format!("/api/v1/rollouts/{id}"), true),
        ("one device", format!("/api/v1/devices/{first}-sim-0"), true),
        (
            "device list, a dashboard page (100)",
            format!("/api/v1/devices?limit=100&after={first}-sim-5000"),
            true,
        ),
        (
            "fleet telemetry, last hour",
            "/api/v1/telemetry?model=churn&since_seconds=3600".into(),
            true,
        ),
        ("/metrics scrape", "/metrics".into(), false),
    ];
    let asked = Instant::now();
    let asked_cpu_before = cpu(server_pid);
    let mut timings: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    while asked.elapsed() < Duration::from_secs(60 * minutes) {
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
    let asked_seconds = asked.elapsed().as_secs_f64();
    let asked_cores = (cpu(server_pid) - asked_cpu_before) / asked_seconds;
    // With the fleet still sending: the dashboard as an operator opens it.
    let dashboard = dashboard_loads(&fleet.server.base_url(), &admin, DASHBOARD_LOADS);
    let seconds = quiet_seconds + asked_seconds;
    // Rollups settle (a minute's rows merge) 3 minutes after it ends: wait for that before
    // weighing them.
    std::thread::sleep(Duration::from_secs(200));
    let (raw_after, rollups_after) = database.telemetry_payload_bytes();
    let day = |bytes: u64| bytes as f64 / devices as f64 / seconds * 86_400.0;
    let raw_per_device_day = day(raw_after.saturating_sub(raw_before));
    let rollups_per_device_day = day(rollups_after.saturating_sub(rollups_before));

    let summaries: Vec<Value> = sims.into_iter().map(SimProcess::stop).collect();
    let summary = combined_summary(&summaries);
    let lost = lost_messages(&fleet, &summary);

    let database_name = match &database {
        Database::Sqlite(_) => "SQLite",
        Database::Postgres(_) => "PostgreSQL",
    };
    let broker_name = match (mosquitto, bridges) {
        (false, _) => "the embedded broker".to_owned(),
        (true, 0) => "Mosquitto".to_owned(),
        (true, k) => format!("{k} Mosquittos bridging into the fleet's Mosquitto"),
    };
    println!(
        "devices: {devices} (one MQTT connection each, {broker_name}, {database_name}, \
         {simulators} simulator process(es){})",
        if load_nice > 0 {
            format!(", simulators and bridges at nice {load_nice}")
        } else {
            String::new()
        }
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
            "fleet's Mosquitto RSS: {empty:.1} MiB empty, {connected:.1} MiB with the fleet \
             connected"
        );
    }
    if bridges > 0 {
        println!(
            "bridging Mosquittos' RSS with the fleet connected: {bridging_rss:.1} MiB in all \
             ({:.1} KiB per device)",
            bridging_rss * 1024.0 / devices as f64
        );
    }
    println!("rollout create -> completed (one wave, no bake): {rollout_seconds:.1} s");
    println!(
        "reports the broker had dropped, stored from its retained copies: {} (devices asked \
         for again: {})",
        fleet
            .server
            .metric_sum("edgefleet_server_reported_recovered_total"),
        fleet
            .server
            .metric_sum("edgefleet_server_reported_reread_total")
    );
    let server = &fleet.server;
    let messages = |outcome: &str| -> f64 {
        ["reported", "events", "metrics"]
            .iter()
            .map(|channel| {
                server.metric_sum(&format!(
                    "edgefleet_server_mqtt_messages_total{{channel=\"{channel}\",outcome=\"{outcome}\"}}"
                ))
            })
            .sum()
    };
    println!(
        "the server's broker connection: {} connection(s) (1: never lost); it waited {:.1} s in \
         all for the store to take device messages; one message stored in {:.1} ms on average \
         ({} stored, {} duplicates)",
        server.metric_sum("edgefleet_server_mqtt_connections_total"),
        server.metric_sum("edgefleet_server_ingest_wait_seconds_total"),
        1e3 * server.metric_sum("edgefleet_server_ingest_seconds_sum")
            / server.metric_sum("edgefleet_server_ingest_seconds_count"),
        messages("stored"),
        messages("duplicate"),
    );
    println!(
        "server memory high-water mark (VmHWM) at the rollout's end: {peak_after_rollout:.1} MiB"
    );
    println!(
        "telemetry at 60 s windows for {quiet_seconds:.0} s, nobody asking: server CPU \
         {quiet_cores:.2} cores; database grew {:.1} MiB = {:.0} kB per device-day",
        db_growth / 1_048_576.0,
        per_device_day / 1e3
    );
    if let Some(cores) = broker_cores {
        println!(
            "meanwhile: the fleet's Mosquitto {cores:.2} cores, the bridging ones \
             {bridging_cores:.2} cores"
        );
    }
    println!(
        "with the operator and Prometheus asking once a second each for {asked_seconds:.0} s: \
         server CPU {asked_cores:.2} cores"
    );
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
    let (mut paints, mut shown): (Vec<f64>, Vec<f64>) = dashboard.into_iter().unzip();
    paints.sort_by(f64::total_cmp);
    shown.sort_by(f64::total_cmp);
    println!(
        "dashboard, {} loads by a signed-in operator (headless Chromium): first contentful paint \
         p50 {:.0} ms, max {:.0} ms; first page of devices rendered p50 {:.0} ms, max {:.0} ms",
        shown.len(),
        percentile(&paints, 0.5),
        paints.last().copied().unwrap_or(f64::NAN),
        percentile(&shown, 0.5),
        shown.last().copied().unwrap_or(f64::NAN),
    );
    println!("lost (acknowledged to a device, not stored once the server caught up): {lost}");
    println!("simulator: {summary}");
}

/// Per channel, messages the devices had acknowledged that the server has not stored, once its
/// stored count stops moving (it catches up on what the brokers still queue for it).
/// Times the dashboard is opened after the asks.
const DASHBOARD_LOADS: usize = 10;

/// Opens the dashboard at `base` `loads` times in one headless Chromium tab, signed in with
/// `token`, each a fresh navigation. Per load, in ms from the navigation's start: the first
/// contentful paint (the browser's own figure) and when the device list's first page is in the
/// table (polled every 20 ms through chromedriver, so up to one poll late).
fn dashboard_loads(base: &str, token: &str, loads: usize) -> Vec<(f64, f64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (_driver, client) = browser::browser().await;
        browser::sign_in(&client, base, token).await;
        let mut out = Vec::with_capacity(loads);
        for _ in 0..loads {
            client.goto(base).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let shown = loop {
                let value = client
                    .execute(
                        "return document.querySelectorAll('#devices tbody tr').length > 0 \
                         ? performance.now() : null;",
                        vec![],
                    )
                    .await
                    .unwrap();
                if let Some(ms) = value.as_f64() {
                    break ms;
                }
                assert!(
                    Instant::now() < deadline,
                    "the dashboard showed no device within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let paint = client
                .execute(
                    "const p = performance.getEntriesByName('first-contentful-paint')[0]; \
                     return p ? p.startTime : null;",
                    vec![],
                )
                .await
                .unwrap()
                .as_f64()
                .unwrap_or(f64::NAN);
            out.push((paint, shown));
        }
        let _ = client.close().await;
        out
    })
}

fn lost_messages(fleet: &demo::Demo, summary: &Value) -> String {
    let stored = |channel: &str| {
        fleet.server.metric_sum(&format!(
            "edgefleet_server_mqtt_messages_total{{channel=\"{channel}\",outcome=\"stored\"}}"
        ))
    };
    ["reported", "events", "metrics"]
        .iter()
        .map(|channel| {
            let acked = summary["acked"][channel].as_f64().unwrap_or(0.0);
            let mut last = -1.0;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let now = stored(channel);
                if now >= acked || now == last || Instant::now() > deadline {
                    return format!("{channel} {} of {acked}", acked - now);
                }
                last = now;
                std::thread::sleep(Duration::from_secs(5));
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
