//! An agent run in-process over a real store, real models and its local HTTP API on loopback,
//! with a clock the test moves (a label "three weeks later" without waiting three weeks).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use edge_agent::agent::Agent;
use serde_json::Value;

pub const DAY: i64 = 86_400;

/// The system's time plus an offset the test moves.
#[derive(Debug, Default)]
pub struct MovedClock {
    offset_seconds: AtomicI64,
}

impl MovedClock {
    pub fn set_offset(&self, seconds: i64) {
        self.offset_seconds.store(seconds, Ordering::SeqCst);
    }
}

impl edgefleet_clock::Clock for MovedClock {
    fn now(&self) -> jiff::Timestamp {
        let offset = jiff::SignedDuration::from_secs(self.offset_seconds.load(Ordering::SeqCst));
        jiff::Timestamp::now()
            .checked_add(offset)
            .expect("in range")
    }
}

pub struct Running {
    pub runtime: tokio::runtime::Runtime,
    pub agent: Arc<Agent>,
    pub url: String,
    pub clock: Arc<MovedClock>,
}

/// Starts an agent of device `dev-1` trusting `root`, with `extra` TOML appended to its
/// configuration (with the tests' wider latency budget, `with_test_latency_budget`: a 2 ms
/// health-check budget fails on two cores shared with other tests), serving its local API
/// (admin token `admin`) on a free loopback port.
pub fn start(dir: &std::path::Path, root: &std::path::Path, extra: &str) -> Running {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"dev-1\"\ndata_dir = \"{}\"\ntrusted_root_path = \"{}\"\n{}",
            dir.join("data").display(),
            root.display(),
            edgefleet_e2e::with_test_latency_budget(extra)
        ),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clock = Arc::new(MovedClock::default());
    let (agent, url) = runtime.block_on(async {
        let config = edge_agent::config::Config::load(&config).unwrap();
        let engine = edgefleet_inference::select::Engine::new(
            vec![Arc::new(edgefleet_inference::tract::TractRuntime)],
            vec![],
            config.inference.runtime,
        );
        let agent = Agent::open_with_clock(config, Arc::new(engine), clock.clone())
            .await
            .unwrap();
        agent.load_models().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = edge_agent::api::router(agent.clone(), "admin".into());
        let shutdown = agent.shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        });
        (agent, url)
    });
    Running {
        runtime,
        agent,
        url,
        clock,
    }
}

pub fn post(url: &str, body: &Value) -> Value {
    let (status, answer) = edgefleet_e2e::post_json(url, body);
    assert_eq!(status, 200, "{url}: {answer}");
    answer
}
