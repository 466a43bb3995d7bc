//! The main job, end to end over real processes: a fleet server on embedded defaults (or on
//! Mosquitto), N enrolled agents, churn 1.0.0 rolled out, 2.0.0 rolled out in waves, and a 3.0.0
//! whose health check fails on the canary — halted and rolled back automatically — while a
//! client keeps asking every agent for predictions. `edgefleet-demo` prints it as a timeline;
//! `tests/demo.rs` runs the same scenario and checks the outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fleet::{Broker, FleetOperator, Mosquitto, ServerProcess, TlsFiles, eventually};
use crate::{AgentProcess, binary, free_port, http, run_ok};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub agents: usize,
    pub mosquitto: bool,
    /// With `mosquitto`: the broker speaks TLS (a throwaway CA), server and agents verify it.
    pub tls: bool,
    /// Print the timeline as it happens.
    pub verbose: bool,
    /// Failure injection for tests: these devices accept no artifact over 1000 bytes, so they
    /// refuse churn 2.0.0 (2240 bytes) but take 1.0.0 (408 bytes).
    pub tiny_artifact_limit: Vec<String>,
    /// Multiplies every model's p99 budget on the agents: this machine simulates a fleet, so
    /// each "device" has a sliver of two cores (10 for a handful, more for dozens).
    pub latency_budget_factor: f64,
    /// The server's `database.url` (PostgreSQL); `None`: SQLite in its data directory.
    pub database_url: Option<String>,
    /// More TOML for the server's config (sections such as `[artifacts]`).
    pub server_toml: String,
    /// More settings for every agent's `[fleet]` section (`telemetry_seconds = 3`).
    pub agent_fleet_toml: String,
}

impl DemoOptions {
    /// A quiet fleet of `agents` on the embedded broker and SQLite, with the latency budget a
    /// handful of devices on two cores needs.
    pub fn embedded(agents: usize) -> Self {
        Self {
            agents,
            mosquitto: false,
            tls: false,
            verbose: false,
            tiny_artifact_limit: Vec::new(),
            latency_budget_factor: 10.0,
            database_url: None,
            server_toml: String::new(),
            agent_fleet_toml: String::new(),
        }
    }
}

impl Demo {
    /// On Mosquitto: regenerates its password and ACL files from the store
    /// (`fleet-server mosquitto-config`) and has it re-read them, so that devices enrolled since
    /// may connect. The embedded broker asks the store itself.
    pub fn broker_learns_devices(&self) {
        if let Some(broker) = &self.mosquitto {
            run_ok(
                self.server
                    .command("mosquitto-config")
                    .arg("--out-dir")
                    .arg(broker.conf.parent().unwrap()),
            );
            broker.reload();
        }
    }

    /// The port devices reach the broker on: Mosquitto's, or the server's embedded broker.
    pub fn mqtt_port(&self) -> u16 {
        self.mosquitto
            .as_ref()
            .map_or(self.server.mqtt_port, |m| m.port)
    }

    /// The credential enrolled device `device` saved under `dir` (the demo's directory).
    pub fn credential_of(dir: &Path, device: &str) -> String {
        let link: Value = serde_json::from_slice(
            &std::fs::read(dir.join("agents").join(device).join("data/fleet.json")).unwrap(),
        )
        .unwrap();
        link["credential"].as_str().unwrap().to_owned()
    }

    /// Takes over enrolled device `device` (its agent stopped, by the caller): connects to the
    /// broker with the credential the agent saved under `dir` (the demo's directory).
    pub fn intruder_as(&self, dir: &Path, device: &str) -> crate::fleet::MqttDevice {
        crate::fleet::MqttDevice::connect(
            self.mqtt_port(),
            device,
            device,
            &Self::credential_of(dir, device),
        )
        .unwrap()
    }
}

/// What the demo saw.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoReport {
    pub predictions: u64,
    pub failed_predictions: u64,
    /// Final state name of each rollout: v1, v2, v3.
    pub rollout_states: Vec<String>,
    /// What each device runs at the end.
    pub running: Vec<String>,
    pub server_url: String,
}

/// A demo that is up; dropping it stops every process.
#[derive(Debug)]
pub struct Demo {
    pub server: ServerProcess,
    pub operator: FleetOperator,
    pub agents: Vec<AgentProcess>,
    pub mosquitto: Option<Mosquitto>,
    started: Instant,
    verbose: bool,
}

impl Demo {
    fn say(&self, text: &str) {
        if self.verbose {
            let t = self.started.elapsed().as_secs_f64();
            #[allow(clippy::print_stdout)]
            {
                println!("[{t:6.1}s] {text}");
            }
        }
    }
}

/// The broker password `start_server` gives the server on Mosquitto (replicas reuse it).
pub const SERVER_PASSWORD: &str = "demo-server-secret";

/// Mosquitto configured by `fleet-server mosquitto-config` for a server with data in `data_dir`
/// and `server_toml` (its `[database]`, ...), its files in `dir/mosquitto`.
///
/// Mosquitto must run before the server can connect, and needs the server's own entry in its
/// password file: the files are first written for the server alone (no devices yet), from a
/// bootstrap config whose broker URL only has to be well-formed.
pub fn configured_mosquitto(
    dir: &Path,
    data_dir: &Path,
    server_toml: &str,
    tls: Option<&TlsFiles>,
) -> Mosquitto {
    let conf_dir = dir.join("mosquitto");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let bootstrap = dir.join("bootstrap.toml");
    std::fs::write(
        &bootstrap,
        format!(
            "data_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\npassword = \"{SERVER_PASSWORD}\"\n{server_toml}",
            data_dir.display()
        ),
    )
    .unwrap();
    run_ok(
        std::process::Command::new(binary("fleet-server"))
            .args(["mosquitto-config", "--config"])
            .arg(&bootstrap)
            .arg("--out-dir")
            .arg(&conf_dir),
    );
    Mosquitto::start(&conf_dir, &conf_dir.join("edgefleet.conf"), tls)
}

/// Starts the server (embedded broker, or Mosquitto configured by `mosquitto-config`).
pub fn start_server(
    dir: &Path,
    mosquitto: bool,
    tls: Option<&TlsFiles>,
    database_url: Option<&str>,
    server_toml: &str,
) -> (ServerProcess, Option<Mosquitto>) {
    let database = database_url
        .map(|url| format!("[database]\nurl = \"{url}\"\n"))
        .unwrap_or_default()
        + server_toml;
    if !mosquitto {
        return (
            ServerProcess::start_with(&dir.join("server"), Broker::Embedded, &database),
            None,
        );
    }
    let password = SERVER_PASSWORD;
    let broker = configured_mosquitto(dir, &dir.join("server/data"), &database, tls);
    let server = ServerProcess::start_with(
        &dir.join("server"),
        Broker::External {
            url: if tls.is_some() {
                broker.tls_url()
            } else {
                broker.url()
            },
            password: password.into(),
            ca_file: tls.map(|t| t.ca.clone()),
        },
        &database,
    );
    (server, Some(broker))
}

/// Sets everything up: server, operator, signed releases, N enrolled agents connected.
pub fn set_up(dir: &Path, options: &DemoOptions) -> Demo {
    let started = Instant::now();
    let tls = options.tls.then(|| TlsFiles::make(&dir.join("tls")));
    let (server, mosquitto) = start_server(
        dir,
        options.mosquitto,
        tls.as_ref(),
        options.database_url.as_deref(),
        &options.server_toml,
    );
    let operator = FleetOperator::new(&dir.join("operator"), &server);
    let mut demo = Demo {
        server,
        operator,
        agents: Vec::new(),
        mosquitto,
        started,
        verbose: options.verbose,
    };
    demo.say(&format!(
        "fleet server up at {} (broker: {})",
        demo.server.base_url(),
        if options.mosquitto {
            "Mosquitto"
        } else {
            "embedded"
        }
    ));
    for release in ["churn/1.0.0", "churn/2.0.0", "bad/nan"] {
        let target = demo.operator.push(release);
        demo.say(&format!("operator signed and pushed {target}"));
    }
    for i in 1..=options.agents {
        let id = format!("dev-{i:02}");
        let out = run_ok(demo.operator.fleetctl().args([
            "device",
            "add",
            &id,
            "--group",
            "demo",
            "--tag",
            &format!("site=s{}", i % 2),
            "--json",
        ]));
        let added: Value = serde_json::from_slice(&out.stdout).unwrap();
        let agent_dir = dir.join("agents").join(&id);
        std::fs::create_dir_all(&agent_dir).unwrap();
        std::fs::write(
            agent_dir.join("token"),
            added["enrollment_token"].as_str().unwrap(),
        )
        .unwrap();
        let port = free_port();
        let config = agent_dir.join("agent.toml");
        let artifact_limit = if options.tiny_artifact_limit.contains(&id) {
            "max_artifact_bytes = 1000\n"
        } else {
            ""
        };
        // A short probation keeps the demo brisk. The latency budget is widened because the
        // demo runs every agent, the server and the client on one small machine.
        std::fs::write(
            &config,
            format!(
                "device_id = \"{id}\"\ndata_dir = \"{}\"\ntrusted_root_path = \"{}\"\n\
                 [api]\nlisten = \"127.0.0.1:{port}\"\n[limits]\n{artifact_limit}latency_budget_factor = {latency}\n\
                 [probation]\nwindow_seconds = 3\nmin_requests = 5\n[fleet]\nkeep_alive_seconds = 5\n{ca}{fleet}\n",
                agent_dir.join("data").display(),
                demo.operator.trusted_root().display(),
                latency = options.latency_budget_factor,
                ca = tls
                    .as_ref()
                    .map(|t| format!("ca_file = \"{}\"\n", t.ca.display()))
                    .unwrap_or_default(),
                fleet = options.agent_fleet_toml,
            ),
        )
        .unwrap();
        run_ok(
            std::process::Command::new(binary("edge-agent"))
                .args(["enroll", "--config"])
                .arg(&config)
                .args(["--server", &demo.server.base_url(), "--token-file"])
                .arg(agent_dir.join("token")),
        );
        demo.agents.push(AgentProcess::spawn(config, port, &[]));
    }
    demo.broker_learns_devices();
    let admin = demo.operator.token();
    let online = crate::fleet::eventually("agents online", Duration::from_secs(60), || {
        let (_, body) = demo
            .server
            .call("GET", "/api/v1/devices", Some(&admin), None);
        let devices = body["devices"].as_array()?.clone();
        (devices.iter().filter(|d| d["online"] == true).count() == options.agents)
            .then_some(devices.len())
    });
    demo.say(&format!("{online} agents enrolled and connected over MQTT"));
    demo
}

/// Restarts agent `index` with its links to the server and the broker changed (its
/// `fleet.json` rewritten, as when the fleet moves behind another address — here, relays that
/// count or slow the traffic) and `fleet_settings` added to the `[fleet]` section of its config.
pub fn reroute(
    demo: &mut Demo,
    index: usize,
    server_url: Option<&str>,
    mqtt_url: Option<&str>,
    fleet_settings: &str,
) {
    let agent = &mut demo.agents[index];
    agent.kill();
    let (config, port) = (agent.config.clone(), agent.port);
    let link_file = config.parent().unwrap().join("data/fleet.json");
    let mut link: Value = serde_json::from_slice(&std::fs::read(&link_file).unwrap()).unwrap();
    if let Some(url) = server_url {
        link["server_url"] = json!(url);
    }
    if let Some(url) = mqtt_url {
        link["mqtt_url"] = json!(url);
    }
    std::fs::write(&link_file, serde_json::to_vec(&link).unwrap()).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[fleet]\n", &format!("[fleet]\n{fleet_settings}\n")),
    )
    .unwrap();
    demo.agents[index] = AgentProcess::spawn(config, port, &[]);
}

/// Starts a rollout and follows it to an end state, narrating its history. Returns the state.
pub fn roll_out(demo: &Demo, version: &str, waves: &[f64], bake: u64) -> String {
    roll_out_model(demo, "churn", version, waves, bake)
}

/// [`roll_out`] of any model.
pub fn roll_out_model(demo: &Demo, model: &str, version: &str, waves: &[f64], bake: u64) -> String {
    let admin = demo.operator.token();
    let (status, created) = demo.server.call(
        "POST",
        "/api/v1/rollouts",
        Some(&admin),
        Some(&json!({
            "model": model, "version": version, "group": "demo", "waves": waves,
            "bake_seconds": bake, "device_timeout_seconds": 120
        })),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let mut printed = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, r) = demo
            .server
            .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None);
        let history = r["history"].as_array().cloned().unwrap_or_default();
        for h in history.iter().skip(printed) {
            demo.say(&format!("  {id}: {}", h["text"].as_str().unwrap_or("")));
        }
        printed = history.len();
        let state = r["state"]["state"].as_str().unwrap_or("").to_owned();
        if matches!(state.as_str(), "completed" | "halted" | "aborted") {
            return state;
        }
        assert!(Instant::now() < deadline, "rollout {id} did not end: {r}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Demo {
    /// Creates a rollout from `body` as the admin; returns its id.
    pub fn create_rollout(&self, body: &Value) -> String {
        // A create plans every wave from the group's devices: at 100,000 devices on a loaded
        // PostgreSQL it took over the usual minute (docs/BENCHMARKS.md).
        let patient: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        let (status, created) = crate::fleet::call_within(
            &self.server.url("/api/v1/rollouts"),
            "POST",
            Some(&self.operator.token()),
            Some(body),
            &patient,
        );
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    /// Rollout `id` as the API shows it, once it has ended (completed, halted or aborted).
    pub fn ended_rollout(&self, id: &str, within: Duration) -> Value {
        let admin = self.operator.token();
        eventually(&format!("rollout {id} to end"), within, || {
            let (_, r) =
                self.server
                    .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None);
            matches!(
                r["state"]["state"].as_str(),
                Some("completed" | "halted" | "aborted")
            )
            .then_some(r)
        })
    }
}

/// Waits until rollout `id` completes; panics if it ends any other way or takes over 2 minutes.
pub fn wait_until_completed(demo: &Demo, id: &str) {
    let admin = demo.operator.token();
    crate::fleet::eventually("the rollout to complete", Duration::from_secs(120), || {
        let (_, r) = demo
            .server
            .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None);
        match r["state"]["state"].as_str() {
            Some("completed") => Some(()),
            Some("running" | "baking") => None,
            other => panic!("rollout ended {other:?}: {r:#}"),
        }
    });
}

/// Keeps asking every agent for predictions until stopped; counts failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub total: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Load")
    }
}

impl Load {
    pub fn start(urls: Vec<String>) -> Self {
        // Traffic like churn's training data, as a real fleet would see.
        Self::with_rows(urls, crate::baseline_rows("churn/2.0.0", 600, 7, &[]))
    }

    /// Asks with `rows` in turn (every agent starts at another one).
    pub fn with_rows(urls: Vec<String>, rows: Vec<Value>) -> Self {
        let rows = Arc::new(rows);
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = urls
            .into_iter()
            .enumerate()
            .map(|(start, url)| {
                let (stop, total, failed) = (stop.clone(), total.clone(), failed.clone());
                let rows = rows.clone();
                std::thread::spawn(move || {
                    let agent = http();
                    let mut i = start * 7;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let row = &rows[i % rows.len()];
                        let ok = agent
                            .post(&url)
                            .send_json(row)
                            .is_ok_and(|r| r.status() == 200);
                        total.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Self {
            stop,
            total,
            failed,
            threads,
        }
    }

    pub fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.total.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// What each device runs, from the server's view.
pub fn running(demo: &Demo) -> Vec<String> {
    let (_, body) = demo
        .server
        .call("GET", "/api/v1/devices", Some(&demo.operator.token()), None);
    body["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            format!(
                "{} {}",
                d["id"].as_str().unwrap_or(""),
                d["running"]["churn"]["version"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// The whole scenario. The processes are left running in the returned `Demo`.
pub fn run(dir: &Path, options: &DemoOptions) -> (Demo, DemoReport) {
    let demo = set_up(dir, options);
    let mut states = Vec::new();
    demo.say("rolling out churn 1.0.0 to every device");
    states.push(roll_out(&demo, "1.0.0", &[100.0], 0));
    let urls = demo
        .agents
        .iter()
        .map(|a| a.url("/v1/models/churn:predict"))
        .collect();
    let load = Load::start(urls);
    demo.say("a client now asks every agent for predictions, all the time");
    demo.say("rolling out churn 2.0.0 in waves of 20 %, 60 %, 100 % (2 s bake)");
    states.push(roll_out(&demo, "2.0.0", &[20.0, 60.0, 100.0], 2));
    demo.say(
        "rolling out churn 3.0.0-nan (emits NaN: fails its health check) to a 20 % canary first",
    );
    states.push(roll_out(&demo, "3.0.0-nan", &[20.0, 100.0], 0));
    std::thread::sleep(Duration::from_secs(2));
    let (total, failed) = load.stop();
    let running = running(&demo);
    demo.say(&format!("devices now run: {}", running.join(", ")));
    demo.say(&format!(
        "predictions served during the rollouts: {total}, failed: {failed}"
    ));
    let report = DemoReport {
        predictions: total,
        failed_predictions: failed,
        rollout_states: states,
        running,
        server_url: demo.server.base_url(),
    };
    (demo, report)
}

/// Where the demo keeps its files: `dir` if given, else a fresh temporary directory.
pub fn work_dir(dir: Option<PathBuf>) -> (PathBuf, Option<tempfile::TempDir>) {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            (d, None)
        }
        None => {
            let tmp = tempfile::tempdir().unwrap();
            (tmp.path().to_path_buf(), Some(tmp))
        }
    }
}
