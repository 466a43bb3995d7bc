//! Figures for docs/BENCHMARKS.md, through the real fleet server: what a device running one
//! model (m00) fetches to refresh its TUF metadata and find its release, cold and warm, and per
//! update, when the repository holds m00 alone (20 releases) and then 50 models × 20 releases,
//! one role per model, each release pushed by `fleetctl push --server` with its golden cases and
//! baseline as release files; then again with m00's role pruned to its two newest releases. The
//! device is the agent's TUF client with the agent's HTTP transport (bearer credential, gzip),
//! talking to the server through a counting relay (`tests/src/relay.rs`): bytes both ways, HTTP
//! headers included.
//!
//! Uses the release binaries: `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench delegations`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edge_agent::transport::FleetTransport;
use edgefleet_e2e::fleet::{Broker, FleetOperator, ServerProcess};
use edgefleet_e2e::relay::Relay;
use edgefleet_e2e::{models_dir, run_ok};
use edgefleet_tuf::client::{self, ClientConfig, ClientLimits};
use serde_json::json;

const MODELS: usize = 50;
const RELEASES: u64 = 20;

/// churn 1.0.0's files as release `1.<release>.0` of `model`, each release with bytes of its
/// own (as real releases have: identical ones would flatter gzip): the artifact carries a
/// `doc_string` naming the release (a protobuf field appended; the last one wins), the golden
/// cases are renamed, the baseline's row count differs.
fn release_dir(root: &Path, model: &str, release: u64) -> PathBuf {
    let dir = root.join(format!("{model}-{release}"));
    std::fs::create_dir_all(&dir).unwrap();
    let source = models_dir().join("churn/1.0.0");
    std::fs::copy(source.join("interface.json"), dir.join("interface.json")).unwrap();
    let tag = format!("{model} 1.{release}.0");
    let mut onnx = std::fs::read(source.join("model.onnx")).unwrap();
    onnx.extend([0x32, u8::try_from(tag.len()).unwrap()]);
    onnx.extend(tag.as_bytes());
    std::fs::write(dir.join("model.onnx"), onnx).unwrap();
    let mut health: serde_json::Value =
        serde_json::from_slice(&std::fs::read(source.join("health.json")).unwrap()).unwrap();
    for case in health["cases"].as_array_mut().unwrap() {
        case["name"] = json!(format!("{} ({tag})", case["name"].as_str().unwrap()));
    }
    std::fs::write(dir.join("health.json"), health.to_string()).unwrap();
    let mut baseline: serde_json::Value =
        serde_json::from_slice(&std::fs::read(source.join("baseline.json")).unwrap()).unwrap();
    baseline["rows"] = json!(baseline["rows"].as_u64().unwrap() + release);
    std::fs::write(dir.join("baseline.json"), baseline.to_string()).unwrap();
    let release_json = json!({
        "model": model,
        "version": format!("1.{release}.0"),
        "sequence": release + 1,
    });
    std::fs::write(dir.join("release.json"), release_json.to_string()).unwrap();
    dir
}

fn push_model(op: &FleetOperator, scratch: &Path, model: &str, releases: std::ops::Range<u64>) {
    if releases.start == 0 {
        run_ok(op.fleetctl().args(["delegate", "--server", model]));
    }
    for r in releases {
        let dir = release_dir(scratch, model, r);
        run_ok(op.fleetctl().args(["push", "--server"]).arg(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

struct Device {
    dir: tempfile::TempDir,
    credential: String,
    relay: Relay,
}

/// (metadata bytes on the wire, requests, release-file bytes on the wire, time)
struct Run {
    metadata: u64,
    requests: usize,
    files: u64,
    time: Duration,
}

impl Device {
    fn new(server: &ServerProcess, op: &FleetOperator, id: &str) -> Self {
        let credential = op.enroll(server, id, "bench");
        let dir = tempfile::tempdir().unwrap();
        let root = edgefleet_e2e::http()
            .get(&server.url("/tuf/metadata/1.root.json"))
            .header("Authorization", &format!("Bearer {credential}"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap();
        client::init(&dir.path().join("tuf"), &root).unwrap();
        Device {
            dir,
            credential,
            relay: Relay::start(server.addr(), None),
        }
    }

    fn assign(&self, server: &ServerProcess, op: &FleetOperator, id: &str, release: u64) {
        let (status, body) = server.call(
            "PUT",
            &format!("/api/v1/devices/{id}/desired"),
            Some(&op.token()),
            Some(&json!({"models": [{"model": "m00", "version": format!("1.{release}.0")}]})),
        );
        assert_eq!(status, 200, "{body}");
    }

    /// Refresh, look m00's release up, fetch its release files (if `files`).
    async fn run(&self, release: u64, files: bool) -> Run {
        let base = self.relay.http_url();
        let config = ClientConfig {
            metadata_dir: self.dir.path().join("tuf"),
            metadata_url: format!("{base}/tuf/metadata/").parse().unwrap(),
            targets_url: format!("{base}/tuf/targets/").parse().unwrap(),
            limits: ClientLimits::default(),
        };
        let transport = FleetTransport::new(self.credential.clone()).unwrap();
        let (bytes_before, requests_before) =
            (self.relay.total_bytes(), self.relay.requests().len());
        let started = Instant::now();
        let mut trusted = client::refresh(&config, transport).await.unwrap();
        let mut target = trusted
            .model_target(&format!("models/m00/1.{release}.0/model.onnx"))
            .await
            .unwrap();
        let time = started.elapsed();
        let metadata = self.relay.total_bytes() - bytes_before;
        let requests = self.relay.requests().len() - requests_before;
        if files {
            trusted
                .fetch_release_files(&mut target, &self.dir.path().join("staging"))
                .await
                .unwrap();
        }
        Run {
            metadata,
            requests,
            files: self.relay.total_bytes() - bytes_before - metadata,
            time,
        }
    }
}

fn cell(run: &Run) -> String {
    format!(
        "{} B in {} requests, {:.1} ms",
        run.metadata,
        run.requests,
        run.time.as_secs_f64() * 1e3
    )
}

async fn measure(
    label: &str,
    server: &ServerProcess,
    op: &FleetOperator,
    scratch: &Path,
    id: &str,
    newest: u64,
) -> (Run, Run) {
    let device = Device::new(server, op, id);
    device.assign(server, op, id, newest);
    let cold = device.run(newest, true).await;
    let warm = device.run(newest, false).await;
    push_model(op, scratch, "m00", newest + 1..newest + 2);
    device.assign(server, op, id, newest + 1);
    let update = device.run(newest + 1, true).await;
    println!(
        "| {label} | {} (+ release files {} B) | {} | {} (+ release files {} B) |",
        cell(&cold),
        cold.files,
        cell(&warm),
        cell(&update),
        update.files
    );
    (cold, update)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&tmp.path().join("server"), Broker::Embedded);
    let op = FleetOperator::new(&tmp.path().join("op"), &server);
    let scratch = tmp.path().join("releases");
    let started = Instant::now();
    push_model(&op, &scratch, "m00", 0..RELEASES);
    eprintln!(
        "m00: {RELEASES} releases pushed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "| repository (device runs m00) | cold: refresh + lookup | warm, nothing changed | after one push to m00 |"
    );
    println!("|---|---|---|---|");
    let (alone_cold, alone_update) = measure(
        &format!("m00 alone ({RELEASES} releases)"),
        &server,
        &op,
        &scratch,
        "alone",
        RELEASES - 1,
    )
    .await;
    // Back to 20 releases of m00, as the first device saw it.
    run_ok(op.fleetctl().args([
        "revoke",
        "--server",
        &format!("models/m00/1.{RELEASES}.0/model.onnx"),
    ]));
    let started = Instant::now();
    for m in 1..MODELS {
        push_model(&op, &scratch, &format!("m{m:02}"), 0..RELEASES);
    }
    eprintln!(
        "{} more models × {RELEASES} releases pushed in {:.1} s",
        MODELS - 1,
        started.elapsed().as_secs_f64()
    );
    let (cold, update) = measure(
        &format!("{MODELS} models × {RELEASES} releases"),
        &server,
        &op,
        &scratch,
        "among-fifty",
        RELEASES - 1,
    )
    .await;
    // The operator keeps m00's role short: the newest two releases (the way back included).
    run_ok(
        op.fleetctl()
            .args(["prune", "--server", "m00", "--keep", "2"]),
    );
    measure(
        &format!("{MODELS} models × {RELEASES} releases, m00 pruned to 2 (`fleetctl prune`)"),
        &server,
        &op,
        &scratch,
        "pruned",
        RELEASES,
    )
    .await;
    let pct = |a: u64, b: u64| 100.0 * (a as f64 - b as f64) / b as f64;
    println!(
        "\nbeside m00 alone: cold {:+.1} %, per update {:+.1} %",
        pct(cold.metadata, alone_cold.metadata),
        pct(update.metadata, alone_update.metadata)
    );
}
