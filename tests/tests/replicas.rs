//! Several fleet-server replicas sharing PostgreSQL, an S3 artifact store (a real SeaweedFS node)
//! and Mosquitto: what one replica stored, every other one serves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::fleet::{Broker, FleetOperator, Mosquitto, ServerProcess, eventually};
use edgefleet_e2e::postgres::Postgres;
use edgefleet_e2e::seaweedfs::{self, SeaweedFs};
use edgefleet_e2e::{http, models_dir, run_ok};
use futures::TryStreamExt;
use object_store::ObjectStore;
use serde_json::{Value, json};

/// Mosquitto configured by `fleet-server mosquitto-config` for servers on `database_url`.
fn mosquitto(dir: &Path, database_url: &str) -> Mosquitto {
    demo::configured_mosquitto(
        dir,
        &dir.join("bootstrap"),
        &format!("[database]\nurl = \"{database_url}\"\n"),
        None,
    )
}

/// A replica: its own data directory, everything else shared.
fn replica(
    dir: &Path,
    broker: &Mosquitto,
    database_url: &str,
    s3: &SeaweedFs,
    keys: &Path,
) -> ServerProcess {
    ServerProcess::start_with_env(
        dir,
        Broker::External {
            url: broker.url(),
            password: demo::SERVER_PASSWORD.into(),
            ca_file: None,
        },
        &format!(
            "[database]\nurl = \"{database_url}\"\n[artifacts]\nurl = \"s3://{}/fleet\"\n\
             [tuf]\nonline_keys_dir = \"{}\"\n",
            seaweedfs::BUCKET,
            keys.display()
        ),
        s3.env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

/// Every object key in the bucket, read straight from SeaweedFS's S3 API.
fn bucket_keys(s3: &SeaweedFs) -> Vec<String> {
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(seaweedfs::BUCKET)
        .with_region(seaweedfs::REGION)
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_access_key_id(seaweedfs::ACCESS_KEY_ID)
        .with_secret_access_key(seaweedfs::SECRET_ACCESS_KEY)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut keys: Vec<String> = runtime
        .block_on(
            store
                .list(None)
                .map_ok(|m| m.location.to_string())
                .try_collect(),
        )
        .unwrap();
    keys.sort();
    keys
}

fn get(server: &ServerProcess, path: &str, token: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut request = http()
        .get(&server.url(path))
        .header("Authorization", &format!("Bearer {token}"));
    if let Some(range) = range {
        request = request.header("Range", range);
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_vec().unwrap())
}

#[test]
fn replicas_share_artifacts_on_s3_and_the_tuf_repository_in_postgresql() {
    let tmp = tempfile::tempdir().unwrap();
    let postgres = Postgres::start();
    let s3 = SeaweedFs::start();
    let broker = mosquitto(tmp.path(), &postgres.url());
    let keys = tmp.path().join("online-keys");
    let a = replica(&tmp.path().join("a"), &broker, &postgres.url(), &s3, &keys);
    let b = replica(&tmp.path().join("b"), &broker, &postgres.url(), &s3, &keys);

    // The repository is created through A; B serves the same bytes.
    let operator = FleetOperator::new(&tmp.path().join("operator"), &a);
    let token = operator.token();
    let metadata = |server: &ServerProcess, file: &str| {
        get(server, &format!("/tuf/metadata/{file}"), &token, None)
    };
    assert_eq!(
        metadata(&b, "timestamp.json"),
        metadata(&a, "timestamp.json")
    );
    assert_eq!(metadata(&b, "1.root.json").0, 200);

    // Pushed through B: the artifact goes to SeaweedFS, the metadata to PostgreSQL; A serves both.
    run_ok(operator.fleetctl().args([
        "login",
        "--server",
        &b.base_url(),
        "--token-file",
        "admin.token",
    ]));
    let name = operator.push("churn/1.0.0");
    let (status, timestamp_a) = metadata(&a, "timestamp.json");
    assert_eq!(status, 200);
    assert_eq!(metadata(&b, "timestamp.json").1, timestamp_a);
    let timestamp: Value = serde_json::from_slice(&timestamp_a).unwrap();
    assert_eq!(timestamp["signed"]["version"], 2, "{timestamp}");
    let onnx = std::fs::read(models_dir().join("churn/1.0.0/model.onnx")).unwrap();
    let sha = {
        let out = run_ok(
            std::process::Command::new("sha256sum")
                .arg(models_dir().join("churn/1.0.0/model.onnx")),
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    assert!(
        bucket_keys(&s3).contains(&format!("fleet/sha256/{sha}")),
        "{:?}",
        bucket_keys(&s3)
    );
    let target = format!(
        "/tuf/targets/{}",
        name.replace("model.onnx", &format!("{sha}.model.onnx"))
    );
    let (status, whole) = get(&a, &target, &token, None);
    assert_eq!((status, whole.len()), (200, onnx.len()));
    assert_eq!(whole, onnx);
    let (status, part) = get(&a, &target, &token, Some("bytes=100-199"));
    assert_eq!((status, &part[..]), (206, &onnx[100..200]));

    // A tampered upload through A leaves nothing in the bucket, and neither replica has it.
    // (The bucket holds the artifact and the release's three files: golden cases, baseline and
    // the model card.)
    let stored = bucket_keys(&s3);
    assert_eq!(stored.len(), 4, "{stored:?}");
    let bogus = "0".repeat(63) + "1";
    let response = http()
        .put(&a.url(&format!("/api/v1/artifacts/{bogus}")))
        .header("Authorization", &format!("Bearer {token}"))
        .send(&onnx[..])
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    assert_eq!(bucket_keys(&s3), stored);
    for server in [&a, &b] {
        let (status, _) = get(server, &format!("/api/v1/artifacts/{bogus}"), &token, None);
        assert_eq!(status, 404);
    }
}

/// A sample of the server's `/metrics` (unlabelled), or `None`.
fn metric(server: &ServerProcess, name: &str) -> Option<f64> {
    let mut response = http().get(&server.url("/metrics")).call().ok()?;
    let text = response.body_mut().read_to_string().ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn killing_the_replica_that_drives_a_rollout_of_100_agents_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let postgres = Postgres::start();
    let shared = tmp.path().join("shared");
    // Both replicas on one machine: a shared directory stands in for the object store here
    // (the test above runs S3), and they hold the same online keys.
    let server_toml = format!(
        "[artifacts]\nurl = \"{}\"\n[tuf]\nonline_keys_dir = \"{}\"\n",
        shared.join("artifacts").display(),
        shared.join("keys").display()
    );
    let options = DemoOptions {
        agents: 100,
        mosquitto: true,
        tls: false,
        verbose: false,
        tiny_artifact_limit: Vec::new(),
        latency_budget_factor: 200.0,
        database_url: Some(postgres.url()),
        server_toml: server_toml.clone(),
        agent_fleet_toml: String::new(),
    };
    // Replica A (the demo's server) with 100 enrolled agents on Mosquitto, then replica B.
    let mut fleet = demo::set_up(&tmp.path().join("fleet"), &options);
    let broker_url = fleet.mosquitto.as_ref().unwrap().url();
    let mut b = ServerProcess::start_with(
        &tmp.path().join("b"),
        Broker::External {
            url: broker_url,
            password: demo::SERVER_PASSWORD.into(),
            ca_file: None,
        },
        &format!("[database]\nurl = \"{}\"\n{server_toml}", postgres.url()),
    );
    let leader = "edgefleet_server_rollout_engine_leader";
    let drained = "edgefleet_server_mqtt_sessions_drained_total";

    // A stops as systemd or ECS stop it: B takes the rollouts over at once and drains A's broker
    // session; A comes back (under its old client id, after the drain) as the standby.
    fleet.server.stop_gracefully();
    eventually("B to drive the rollouts", Duration::from_secs(10), || {
        (metric(&b, leader) == Some(1.0)).then_some(())
    });
    eventually("B to drain A's session", Duration::from_secs(20), || {
        (metric(&b, drained) >= Some(1.0)).then_some(())
    });
    fleet.server.spawn();
    assert_eq!(metric(&fleet.server, leader), Some(0.0));

    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    let admin = fleet.operator.token();
    let (status, created) = fleet.server.call(
        "POST",
        "/api/v1/rollouts",
        Some(&admin),
        Some(&json!({
            "model": "churn", "version": "2.0.0", "group": "demo",
            "waves": [10.0, 50.0, 100.0], "bake_seconds": 1, "device_timeout_seconds": 120
        })),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let rollout = |server: &ServerProcess| {
        server
            .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None)
            .1
    };
    // Mid-wave: the second wave (devices 11-50) has started and is not done. Waiting for some
    // of it to be healthy as well missed the moment in a CI run: the 40 agents' reports were
    // stored together and one engine pass took the wave from 0 to 40 healthy.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = rollout(&b);
        let healthy = r["waves"][1]["healthy"].as_u64().unwrap_or(0);
        if r["state"]["wave"] == 2 && Some(healthy) < r["waves"][1]["devices"].as_u64() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second wave never seen under way; last seen: {:#}",
            json!({"state": r["state"], "waves": r["waves"], "history": r["history"]})
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mid = rollout(&b);
    b.kill();
    let killed = Instant::now();
    eventually(
        "A to take the rollouts over",
        Duration::from_secs(30),
        || (metric(&fleet.server, leader) == Some(1.0)).then_some(()),
    );
    let takeover = killed.elapsed();
    eventually("A to drain B's session", Duration::from_secs(60), || {
        (metric(&fleet.server, drained) >= Some(1.0)).then_some(())
    });
    let drain = killed.elapsed();
    demo::wait_until_completed(&fleet, &id);
    let done = killed.elapsed();
    eprintln!(
        "killed B with the second wave at {}/{} healthy: A drove the rollouts {:.1} s later, \
         had drained B's broker session after {:.1} s, rollout completed after {:.1} s",
        mid["waves"][1]["healthy"],
        mid["waves"][1]["devices"],
        takeover.as_secs_f64(),
        drain.as_secs_f64(),
        done.as_secs_f64()
    );

    let running = demo::running(&fleet);
    assert_eq!(running.len(), 100);
    assert!(running.iter().all(|r| r.ends_with(" 2.0.0")), "{running:?}");
    // Every device's update events reached the database once: none lost with B, none twice.
    for i in 1..=100 {
        let device = format!("dev-{i:02}");
        let (_, body) = fleet.server.call(
            "GET",
            &format!("/api/v1/events?device={device}&limit=100"),
            Some(&admin),
            None,
        );
        let events = body["events"].as_array().unwrap();
        for kind in ["verified", "staged", "installed", "committed"] {
            let n = events
                .iter()
                .filter(|e| {
                    e["message"]["kind"] == kind
                        && e["message"]["target"] == "models/churn/2.0.0/model.onnx"
                })
                .count();
            assert_eq!(n, 1, "{device} {kind}: {events:#?}");
        }
        let mut seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        let count = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), count, "{device}: an event was stored twice");
    }
}
