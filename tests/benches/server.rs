//! Figures for docs/BENCHMARKS.md: artifact upload and download throughput on loopback for a
//! 100 MB artifact, operator API requests/s on a read endpoint, and server RSS idle and with 1,000
//! enrolled devices.
//!
//! Uses the release binaries: `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench server`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgefleet_e2e::fleet::{Broker, FleetOperator, ServerProcess};
use edgefleet_e2e::{http, models_dir, rss_mib, run_ok};
use serde_json::json;

/// A release directory whose model.onnx is `bytes` long: the server and the wire never look
/// inside an artifact, so transport is measured with a big one.
fn big_release(dir: &std::path::Path, bytes: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for file in ["interface.json", "health.json", "baseline.json"] {
        std::fs::copy(models_dir().join("churn/2.0.0").join(file), dir.join(file)).unwrap();
    }
    let mut release: serde_json::Value = serde_json::from_slice(
        &std::fs::read(models_dir().join("churn/2.0.0/release.json")).unwrap(),
    )
    .unwrap();
    release["model"] = json!("bulk");
    release["version"] = json!("1.0.0");
    release["sequence"] = json!(1);
    std::fs::write(dir.join("release.json"), release.to_string()).unwrap();
    // Incompressible bytes (loopback does not compress, but be honest anyway).
    let mut data = vec![0u8; bytes];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(dir.join("model.onnx"), data).unwrap();
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&tmp.path().join("server"), Broker::Embedded);
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = rss_mib(server.child.id());
    let op = FleetOperator::new(&tmp.path().join("op"), &server);
    let admin = op.token();

    const SIZE: usize = 100 * 1024 * 1024;
    let release = tmp.path().join("bulk");
    big_release(&release, SIZE);
    let started = Instant::now();
    let out = run_ok(op.fleetctl().args(["push", "--server"]).arg(&release));
    let push = started.elapsed();
    println!(
        "upload + publish of a 100 MiB artifact (fleetctl push --server): {:.2} s = {:.0} MB/s ({})",
        push.as_secs_f64(),
        SIZE as f64 / 1e6 / push.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );

    let credential = op.enroll(&server, "bench-device", "bench");
    let (status, desired) = server.call(
        "PUT",
        "/api/v1/devices/bench-device/desired",
        Some(&admin),
        Some(&json!({"models": [{"model": "bulk", "version": "1.0.0"}]})),
    );
    assert_eq!(status, 200, "{desired}");
    let url = desired["models"][0]["artifact_urls"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let mut response = http()
            .get(&url)
            .header("Authorization", &format!("Bearer {credential}"))
            .call()
            .unwrap();
        let mut reader = response.body_mut().as_reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, SIZE);
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "download of the 100 MiB artifact by a device (best of 3): {best:.2} s = {:.0} MB/s",
        SIZE as f64 / 1e6 / best
    );

    let started = Instant::now();
    for i in 0..1000 {
        let (status, body) = server.call(
            "POST",
            "/api/v1/devices",
            Some(&admin),
            Some(&json!({"id": format!("dev-{i:04}"), "group": format!("g{}", i % 10)})),
        );
        assert_eq!(status, 201, "{body}");
        let (status, body) = server.call(
            "POST",
            "/api/v1/enroll",
            None,
            Some(&json!({"device_id": format!("dev-{i:04}"), "token": body["enrollment_token"]})),
        );
        assert_eq!(status, 200, "{body}");
    }
    let enroll = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "1,000 devices registered and enrolled over the API, one after another: {:.1} s ({:.1} ms each)",
        enroll.as_secs_f64(),
        enroll.as_secs_f64() // 1,000 devices: seconds in total = milliseconds each
    );
    let rss_devices = rss_mib(server.child.id());

    // Read endpoint throughput: GET one device (with its recent events) from 8 clients.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..8 {
        let (stop, done, admin) = (stop.clone(), done.clone(), admin.clone());
        let url = server.url(&format!("/api/v1/devices/dev-{:04}", t * 100));
        threads.push(std::thread::spawn(move || {
            let agent = http();
            while !stop.load(Ordering::Relaxed) {
                let r = agent
                    .get(&url)
                    .header("Authorization", &format!("Bearer {admin}"))
                    .call()
                    .unwrap();
                assert_eq!(r.status(), 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    let before = done.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let requests = done.load(Ordering::Relaxed) - before;
    let rate = requests as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    println!(
        "GET /api/v1/devices/{{id}} with 8 clients (token check + 2 queries): {rate:.0} requests/s"
    );
    let started = Instant::now();
    let (status, list) = server.call("GET", "/api/v1/devices", Some(&admin), None);
    assert_eq!(status, 200);
    println!(
        "GET /api/v1/devices listing {} devices: {:.1} ms",
        list["devices"].as_array().unwrap().len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "server RSS: idle {rss_idle:.1} MiB; with 1,000 enrolled devices and a 100 MiB artifact served {rss_devices:.1} MiB"
    );
}
