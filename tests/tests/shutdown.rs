//! A server and an agent stopped under load stop whole: in-flight requests answered, the device
//! messages taken stored, and not one of their tasks left running when they return. Both run in
//! this process, each on a runtime of its own (so the runtime can be asked how many tasks are
//! alive); the load comes from threads with runtimes of their own: HTTP clients, and an enrolled
//! device publishing events over the embedded broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use edgefleet_e2e::fleet::call;
use edgefleet_e2e::{free_port, http};
use edgefleet_protocol::message::{self, Event, EventKind, SCHEMA_VERSION};
use edgefleet_protocol::topic::{Channel, Topic};
use edgefleet_protocol::{DeviceId, MessageId, ModelName};
use fleet_server::server::Stopped;
use serde_json::json;

/// Publishes events as `device` (QoS 1) until `stop`, counting those the broker acknowledged.
fn publish_events(
    mqtt_port: u16,
    device: DeviceId,
    password: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut options = rumqttc::MqttOptions::new(device.as_str(), "127.0.0.1", mqtt_port);
            options.set_credentials(device.as_str(), password);
            let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
            let topic = Topic::new(device.clone(), Channel::Events).to_string();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let event = Event {
                    schema: SCHEMA_VERSION,
                    id: MessageId::from_random(seq.to_le_bytes().repeat(2).try_into().unwrap()),
                    device: device.clone(),
                    seq,
                    at_unix: seq,
                    kind: EventKind::Committed,
                    model: ModelName::new("churn").unwrap(),
                    target: None,
                    rollout: None,
                    detail: None,
                    evidence: Vec::new(),
                };
                let _ = client.try_publish(
                    &topic,
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    message::encode(&event).unwrap(),
                );
                // Drive the connection a little between messages.
                let _ = tokio::time::timeout(Duration::from_millis(5), async {
                    loop {
                        match eventloop.poll().await {
                            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                })
                .await;
            }
        });
    })
}

/// The runtime's alive tasks once those that finished are released (within a second).
fn alive_after(runtime: &tokio::runtime::Runtime) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let alive = runtime.metrics().num_alive_tasks();
        if alive == 0 || std::time::Instant::now() > deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_loaded_server_and_agent_stop_with_every_task_joined() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, mqtt_port) = (free_port(), free_port());
    let data = dir.path().join("data");
    let text = format!(
        "listen = \"127.0.0.1:{http_port}\"\ndata_dir = \"{}\"\n[mqtt]\nembedded_listen = \"127.0.0.1:{mqtt_port}\"\n",
        data.display()
    );
    let config =
        fleet_server::config::Config::from_toml(&dir.path().join("server.toml"), &text, [])
            .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let running = runtime
        .block_on(fleet_server::server::start(config))
        .unwrap();
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(fleet_server::server::serve(running, async {
        let _ = stopped.await;
    }));
    let base = format!("http://127.0.0.1:{http_port}");
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();

    // One enrolled device (plain messages: no key registered).
    let (status, added) = call(
        &format!("{base}/api/v1/devices"),
        "POST",
        Some(&admin),
        Some(&json!({"id": "dev-1"})),
    );
    assert_eq!(status, 201, "{added}");
    let (status, enrolled) = call(
        &format!("{base}/api/v1/enroll"),
        "POST",
        None,
        Some(&json!({"device_id": "dev-1", "token": added["enrollment_token"]})),
    );
    assert_eq!(status, 200, "{enrolled}");

    let stop_load = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let publisher = publish_events(
        mqtt_port,
        DeviceId::new("dev-1").unwrap(),
        enrolled["credential"].as_str().unwrap().to_owned(),
        stop_load.clone(),
        acked.clone(),
    );
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let (base, admin, stop) = (base.clone(), admin.clone(), stop_load.clone());
            std::thread::spawn(move || {
                let path = ["/metrics", "/api/v1/devices", "/api/v1/events", "/healthz"][i];
                let mut answered = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    match http()
                        .get(format!("{base}{path}"))
                        .header("authorization", format!("Bearer {admin}"))
                        .call()
                    {
                        Ok(_) => answered += 1,
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
                answered
            })
        })
        .collect();

    // A real agent, enrolled and linked to the fleet, reporting telemetry every second.
    let (status, added) = call(
        &format!("{base}/api/v1/devices"),
        "POST",
        Some(&admin),
        Some(&json!({"id": "dev-2"})),
    );
    assert_eq!(status, 201, "{added}");
    let agent_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent_config = agent_dir.join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "device_id = \"dev-2\"\ndata_dir = \"{}\"\ntrusted_root_path = \"{}\"\n[fleet]\ntelemetry_seconds = 1\n",
            agent_dir.join("data").display(),
            agent_dir.join("root.json").display()
        ),
    )
    .unwrap();
    let agent = agent_runtime.block_on(async {
        let config = edge_agent::config::Config::load(&agent_config).unwrap();
        let engine = edgefleet_inference::select::Engine::new(
            vec![Arc::new(edgefleet_inference::tract::TractRuntime)],
            vec![],
            config.inference.runtime,
        );
        let agent = edge_agent::agent::Agent::open(config, Arc::new(engine))
            .await
            .unwrap();
        let device = DeviceId::new("dev-2").unwrap();
        let link = edge_agent::fleet::enroll(
            &agent.config.data_dir,
            &device,
            &base,
            added["enrollment_token"].as_str().unwrap(),
        )
        .await
        .unwrap();
        edge_agent::fleet::Fleet::start(agent.clone(), link).unwrap();
        agent
    });

    // Load for a while, then SIGTERM's path while it goes on.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) < 200 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        acked.load(Ordering::Relaxed) >= 200,
        "the device's events are not taken"
    );
    // The agent's telemetry reached the server.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let reported = loop {
        let (_, device) = call(
            &format!("{base}/api/v1/devices/dev-2"),
            "GET",
            Some(&admin),
            None,
        );
        if !device["reported"].is_null() || std::time::Instant::now() > until {
            break device["reported"].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(reported["device"], "dev-2", "the agent never reported");
    let agent_tasks = agent_runtime.metrics().num_alive_tasks();
    assert!(
        agent_tasks >= 5,
        "the agent's fleet link should be running: {agent_tasks}"
    );
    let aborted = agent_runtime.block_on(agent.stop(Duration::from_secs(10)));
    assert_eq!(aborted, 0, "agent tasks ignored the stop");
    drop(agent);
    assert_eq!(
        alive_after(&agent_runtime),
        0,
        "agent tasks left running after stop"
    );
    let alive_before = runtime.metrics().num_alive_tasks();
    assert!(
        alive_before >= 6,
        "the server's tasks should be running: {alive_before}"
    );
    stop_server.send(()).unwrap();
    let served =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(60), serving).await });
    assert!(
        matches!(served, Ok(Ok(Ok(Stopped { aborted: 0 })))),
        "serve did not return in time, or had to abort tasks that ignored the shutdown: {served:?}"
    );
    // A task counts as alive until the runtime has released it, a moment after it finished.
    assert_eq!(
        alive_after(&runtime),
        0,
        "tasks left running after serve returned"
    );
    stop_load.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let answered: u32 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(answered > 0, "the readers got no answer at all");
    drop(runtime);

    // The device's events were being stored all along, and the database is whole afterwards.
    let db = rusqlite::Connection::open(data.join("fleet.db")).unwrap();
    let stored: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM events WHERE device = 'dev-1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stored > 0, "no event stored");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
