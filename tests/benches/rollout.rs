//! Figures for docs/BENCHMARKS.md: time from `rollout create` to every device healthy for N
//! agents (separate `edge-agent` processes; `EDGEFLEET_BENCH_AGENTS`, default 50) on this
//! machine, with the server's CPU time and RSS during it, the device-message rate the server
//! stored meanwhile, and the bytes one device exchanged with the fleet (HTTP and MQTT, counted
//! by relays on its links) per update beyond the artifact itself. `EDGEFLEET_BENCH_POSTGRES=1`
//! runs the server on a real PostgreSQL the bench starts (SQLite otherwise).
//!
//! Uses the release binaries: `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench rollout`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::relay::Relay;
use edgefleet_e2e::{cpu_seconds, rss_mib};
use serde_json::json;

fn stored_messages(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("edgefleet_server_mqtt_messages_total")
                && l.contains("outcome=\"stored\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn socket(url: &str) -> std::net::SocketAddr {
    url.split_once("://").unwrap().1.parse().unwrap()
}

fn main() {
    let agents: usize = std::env::var("EDGEFLEET_BENCH_AGENTS")
        .ok()
        .map_or(50, |n| {
            n.parse().expect("EDGEFLEET_BENCH_AGENTS is a number")
        });
    let postgres = std::env::var("EDGEFLEET_BENCH_POSTGRES")
        .is_ok_and(|v| v == "1")
        .then(edgefleet_e2e::postgres::Postgres::start);
    println!(
        "store: {}",
        if postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let tmp = tempfile::tempdir().unwrap();
    let options = DemoOptions {
        agents,
        mosquitto: false,
        tls: false,
        verbose: false,
        tiny_artifact_limit: Vec::new(),
        latency_budget_factor: 200.0,
        database_url: postgres
            .as_ref()
            .map(edgefleet_e2e::postgres::Postgres::url),
        server_toml: String::new(),
        agent_fleet_toml: String::new(),
    };
    let started = Instant::now();
    let mut fleet = demo::set_up(tmp.path(), &options);
    println!(
        "{agents} agents enrolled, started and connected in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let pid = fleet.server.child.id();
    let admin = fleet.operator.token();
    // dev-01 talks to the server and the broker through counting relays.
    let link: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("agents/dev-01/data/fleet.json")).unwrap(),
    )
    .unwrap();
    let http_relay = Relay::start(socket(link["server_url"].as_str().unwrap()), None);
    let mqtt_relay = Relay::start(socket(link["mqtt_url"].as_str().unwrap()), None);
    demo::reroute(
        &mut fleet,
        0,
        Some(&http_relay.http_url()),
        Some(&mqtt_relay.mqtt_url()),
        "",
    );
    edgefleet_e2e::fleet::eventually("dev-01 back online", Duration::from_secs(30), || {
        let (_, d) = fleet
            .server
            .call("GET", "/api/v1/devices/dev-01", Some(&admin), None);
        (d["online"] == true).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    for (version, waves, artifact) in [
        ("1.0.0", vec![100.0], 408u64),
        ("2.0.0", vec![10.0, 50.0, 100.0], 2240),
    ] {
        let requests_before = http_relay.requests().len();
        let wire_before = http_relay.total_bytes() + mqtt_relay.total_bytes();
        let mqtt_before = mqtt_relay.total_bytes();
        let metrics = || String::from_utf8(ureq_get(&fleet.server.url("/metrics"))).unwrap();
        let messages_before = stored_messages(&metrics());
        let cpu_before = cpu_seconds(pid);
        let t0 = Instant::now();
        let (status, created) = fleet.server.call(
            "POST",
            "/api/v1/rollouts",
            Some(&admin),
            Some(&json!({"model": "churn", "version": version, "group": "demo", "waves": waves})),
        );
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let mut peak_rss: f64 = 0.0;
        loop {
            peak_rss = peak_rss.max(rss_mib(pid));
            let (_, r) =
                fleet
                    .server
                    .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None);
            match r["state"]["state"].as_str() {
                Some("completed") => break,
                Some("running" | "baking") => {}
                other => panic!("rollout ended {other:?}: {r}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let wall = t0.elapsed().as_secs_f64();
        let wire = http_relay.total_bytes() + mqtt_relay.total_bytes() - wire_before;
        let mqtt = mqtt_relay.total_bytes() - mqtt_before;
        let cpu = cpu_seconds(pid) - cpu_before;
        let messages = stored_messages(&metrics()) - messages_before;
        println!(
            "rollout churn {version} to {agents} agents in waves {waves:?}: all healthy after {wall:.1} s \
             (3 s probation per wave included); server CPU {cpu:.2} s ({:.0}% of one core), peak RSS {peak_rss:.1} MiB; \
             {messages} device messages stored ({:.0}/s, {:.1} per device); \
             dev-01 exchanged {wire} bytes for it, {} beyond the {artifact}-byte artifact ({mqtt} of them MQTT)",
            100.0 * cpu / wall,
            messages / wall,
            messages / agents as f64,
            wire - artifact
        );
        println!(
            "dev-01's HTTP requests: {:?}",
            &http_relay.requests()[requests_before..]
        );
    }
}

fn ureq_get(url: &str) -> Vec<u8> {
    edgefleet_e2e::http()
        .get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap()
}
