//! Figures for docs/BENCHMARKS.md: what ground truth uploaded to the server costs it. One
//! million labels for 100 devices arrive as ten CSV uploads of 100,000 (the most one upload may
//! hold) into a fleet server on its defaults (SQLite); then every device fetches its 10,000 in
//! pages of 1,000, each fetch acknowledging the page before (as agents do). Measured: wall time
//! and the server's CPU for each phase, the database's growth while the labels wait, and what is
//! left once every device took its own.
//!
//! Uses the release binaries: `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench labels`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use edgefleet_e2e::cpu_seconds;
use edgefleet_e2e::fleet::{Broker, FleetOperator, ServerProcess, call};
use edgefleet_e2e::http;
use serde_json::Value;

const DEVICES: usize = 100;
const UPLOADS: usize = 10;
const PER_UPLOAD: usize = 100_000;

/// The SQLite database with its write-ahead log, in the server's data directory.
fn database_bytes(server_dir: &std::path::Path) -> u64 {
    std::fs::read_dir(server_dir.join("data"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("fleet.db"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let server_dir = tmp.path().join("server");
    let server = ServerProcess::start(&server_dir, Broker::Embedded);
    let op = FleetOperator::new(&tmp.path().join("op"), &server);
    let admin = op.token();
    let credentials: Vec<String> = (0..DEVICES)
        .map(|d| op.enroll(&server, &format!("dev-{d:03}"), "bench"))
        .collect();
    let pid = server.child.id();
    let db_before = database_bytes(&server_dir);

    let mut upload_seconds = Vec::new();
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut n = 0u64;
    for _ in 0..UPLOADS {
        let mut csv = String::with_capacity(PER_UPLOAD * 60);
        csv.push_str("device,model,id,label\n");
        for _ in 0..PER_UPLOAD {
            let device = n as usize % DEVICES;
            let label = if n.is_multiple_of(3) { "churn" } else { "stay" };
            csv.push_str(&format!("dev-{device:03},churn,{n:032x},{label}\n"));
            n += 1;
        }
        let one = Instant::now();
        let mut response = http()
            .post(&server.url("/api/v1/feedback"))
            .header("Authorization", &format!("Bearer {admin}"))
            .header("Content-Type", "text/csv")
            .send(csv.as_bytes())
            .unwrap();
        let body: Value = response.body_mut().read_json().unwrap();
        assert_eq!(response.status(), 200, "{body}");
        assert_eq!(body["accepted"], PER_UPLOAD as u64, "{body}");
        upload_seconds.push(one.elapsed().as_secs_f64());
    }
    let upload_wall = started.elapsed().as_secs_f64();
    let upload_cpu = cpu_seconds(pid) - cpu0;
    let db_full = database_bytes(&server_dir);

    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut fetched = 0usize;
    let mut requests = 0usize;
    for credential in &credentials {
        let mut after = 0u64;
        loop {
            let (status, page) = call(
                &server.url(&format!("/api/v1/device/labels?after={after}")),
                "GET",
                Some(credential),
                None,
            );
            requests += 1;
            assert_eq!(status, 200, "{page}");
            let labels = page["labels"].as_array().unwrap();
            fetched += labels.len();
            match labels.last() {
                Some(last) => after = last["seq"].as_u64().unwrap(),
                None => break,
            }
        }
    }
    let fetch_wall = started.elapsed().as_secs_f64();
    let fetch_cpu = cpu_seconds(pid) - cpu0;
    assert_eq!(fetched, UPLOADS * PER_UPLOAD);
    let db_after = database_bytes(&server_dir);

    let total = (UPLOADS * PER_UPLOAD) as f64;
    println!(
        "ground truth at the server: {} labels for {DEVICES} devices, fleet-server (release) on SQLite",
        UPLOADS * PER_UPLOAD
    );
    println!(
        "  upload: {UPLOADS} CSV uploads of {PER_UPLOAD} in {upload_wall:.1} s ({:.0} labels/s; each {:.2}–{:.2} s); server CPU {upload_cpu:.1} s ({:.1} µs a label)",
        total / upload_wall,
        upload_seconds.iter().copied().fold(f64::INFINITY, f64::min),
        upload_seconds.iter().copied().fold(0.0, f64::max),
        upload_cpu / total * 1e6
    );
    println!(
        "  waiting: the database grew {:.1} MB ({:.0} B a label)",
        (db_full.saturating_sub(db_before)) as f64 / 1e6,
        (db_full.saturating_sub(db_before)) as f64 / total
    );
    println!(
        "  fetched by the devices: {requests} requests of up to 1,000 in {fetch_wall:.1} s ({:.0} labels/s); server CPU {fetch_cpu:.1} s ({:.1} µs a label)",
        total / fetch_wall,
        fetch_cpu / total * 1e6
    );
    println!(
        "  after every device took its own: {:.1} MB on disk (SQLite keeps freed pages for reuse)",
        db_after as f64 / 1e6
    );
}
