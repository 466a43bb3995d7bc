//! Helpers for the cross-process tests under `tests/tests/`: they run the workspace's real
//! binaries as separate processes. The binaries must be built first (`cargo build --workspace
//! --bins`, which `scripts/test-all.sh` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod bridge;
pub mod demo;
pub mod fleet;
pub mod postgres;
pub mod relay;
pub mod seaweedfs;
pub mod sim;
pub mod wrk;

/// Path of a workspace binary in the current profile's target directory; `EDGEFLEET_AGENT_BINARY`
/// names another build of the agent to run (the benchmarks measure the device profile's so).
pub fn binary(name: &str) -> PathBuf {
    if name == "edge-agent"
        && let Some(path) = std::env::var_os("EDGEFLEET_AGENT_BINARY")
    {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target.join(profile).join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// ONNX Runtime's shared library from the onnxruntime wheel (`scripts/setup.sh` installs the
/// version `models/requirements.txt` pins), or `EDGEFLEET_ONNXRUNTIME_LIB`.
pub fn onnxruntime_library() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGEFLEET_ONNXRUNTIME_LIB") {
        return PathBuf::from(path);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os, glob; \
             print(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*'))[0])",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the onnxruntime wheel is missing (run scripts/setup.sh, or set EDGEFLEET_ONNXRUNTIME_LIB): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// CPU seconds (user + system) process `pid` has used, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of /proc/PID/stat (11 and 12 after the `)`).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// The most memory process `pid` has held resident since it started (its high-water mark), in
/// MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

/// A copy of the release `models/<from>` (e.g. `churn/2.0.0`) in `dir`, signed as `version` with
/// `sequence`: the same model file under new metadata, as an operator re-releases one. The copy's
/// other files can be edited before it is pushed.
pub fn copy_release(dir: &Path, from: &str, version: &str, sequence: u64) -> PathBuf {
    let model = from.split('/').next().expect("MODEL/VERSION");
    let release = dir.join(format!("{model}-{version}"));
    std::fs::create_dir_all(&release).unwrap();
    for entry in std::fs::read_dir(models_dir().join(from)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), release.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        release.join("release.json"),
        serde_json::json!({"model": model, "version": version, "sequence": sequence}).to_string(),
    )
    .unwrap();
    release
}

/// The repository's `models/` directory.
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An operator's workspace: keys and a TUF repository made by the real `fleetctl`.
#[derive(Debug)]
pub struct Operator {
    pub dir: PathBuf,
}

impl Operator {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let op = Self {
            dir: dir.to_path_buf(),
        };
        run_ok(op.fleetctl().arg("keygen"));
        run_ok(op.fleetctl().arg("init"));
        op
    }

    pub fn fleetctl(&self) -> Command {
        let mut cmd = Command::new(binary("fleetctl"));
        cmd.current_dir(&self.dir);
        cmd
    }

    /// Pushes a release directory under `models/` (e.g. `churn/2.0.0`); returns its target name.
    pub fn push(&self, release: &str) -> String {
        self.push_with(release, &[])
    }

    /// [`Operator::push`] with more `fleetctl push` flags (`--skip-graph-check`).
    pub fn push_with(&self, release: &str, flags: &[&str]) -> String {
        let out = run_ok(
            self.fleetctl()
                .arg("push")
                .args(flags)
                .arg(models_dir().join(release)),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .split_whitespace()
            .nth(1)
            .expect("pushed NAME")
            .to_string()
    }

    pub fn revoke(&self, target: &str) {
        run_ok(self.fleetctl().args(["revoke", target]));
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    pub fn trusted_root(&self) -> PathBuf {
        self.dir.join("repo/metadata/1.root.json")
    }
}

/// How many datagrams a Unix socket that is not read holds before a sender must wait or drop
/// (`net.unix.max_dgram_qlen`, 10 by default): what fills a stalled service manager's queue.
pub fn unix_datagram_queue() -> u64 {
    std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10)
}

/// A free loopback port (bound then released; the agent binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Tests run many agents and compilers in parallel on two cores, so a 2 ms p99 budget measured
/// on a busy machine says nothing about the model. Tests that are not about latency get a budget
/// ten times wider; the `slow` variant (hundreds of ms) still fails it, and a test that sets
/// `latency_budget_factor` itself keeps its own value. Agents started in the test's own process
/// get it too.
pub fn with_test_latency_budget(extra: &str) -> String {
    const WIDER: &str = "latency_budget_factor = 10.0\n";
    if extra.contains("latency_budget_factor") {
        extra.to_owned()
    } else if extra.contains("[limits]\n") {
        extra.replacen("[limits]\n", &format!("[limits]\n{WIDER}"), 1)
    } else {
        format!("[limits]\n{WIDER}{extra}")
    }
}

/// A running `edge-agent` process; killed when dropped.
#[derive(Debug)]
pub struct AgentProcess {
    pub child: Child,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Writes a config (`extra` is appended TOML) and starts the agent, waiting until it answers.
    pub fn start(
        dir: &Path,
        data_dir: &Path,
        trusted_root: &Path,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with_api(dir, data_dir, trusted_root, extra, "", env)
    }

    /// [`AgentProcess::start`] with `api` added to the config's `[api]` section (which the
    /// harness writes, for the port).
    pub fn start_with_api(
        dir: &Path,
        data_dir: &Path,
        trusted_root: &Path,
        extra: &str,
        api: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let config = dir.join("agent.toml");
        let extra = with_test_latency_budget(extra);
        std::fs::write(
            &config,
            format!(
                "device_id = \"dev-1\"\ndata_dir = \"{}\"\ntrusted_root_path = \"{}\"\n{extra}\n[api]\nlisten = \"127.0.0.1:{port}\"\ninstall_from = \"{}\"\n{api}\n",
                data_dir.display(),
                trusted_root.display(),
                dir.display()
            ),
        )
        .unwrap();
        Self::spawn(config, port, env)
    }

    /// Starts the agent on `config` and waits until it answers and has loaded the models it had
    /// stored (`/v2/health/ready` lists none as loading).
    pub fn spawn(config: PathBuf, port: u16, env: &[(&str, &str)]) -> Self {
        let agent = Self::launch(config, port, env);
        agent.wait_loaded(Duration::from_secs(60));
        agent
    }

    /// Starts the agent and waits only until it answers `/v2/health/live`.
    pub fn launch(config: PathBuf, port: u16, env: &[(&str, &str)]) -> Self {
        let log = config.with_extension(format!(
            "{}.log",
            std::process::id() as u64 + u64::from(port)
        ));
        let mut cmd = Command::new(binary("edge-agent"));
        cmd.args(["run", "--config"]).arg(&config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut agent = Self {
            child,
            port,
            config,
            log,
        };
        agent.wait_live();
        agent
    }

    fn wait_live(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "agent exited with {status} before serving; log:\n{}",
                    self.log_text()
                );
            }
            if http().get(&self.url("/v2/health/live")).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "agent did not come up; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `/v2/health/ready`: its status and body.
    pub fn readiness(&self) -> (u16, Value) {
        let mut response = http().get(&self.url("/v2/health/ready")).call().unwrap();
        let status = response.status().as_u16();
        let body = response.body_mut().read_json().unwrap_or(Value::Null);
        (status, body)
    }

    /// Waits until no model stored at start is still loading.
    pub fn wait_loaded(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (_, body) = self.readiness();
            if body["loading"].as_array().is_some_and(|l| l.is_empty()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "models still loading after {within:?}: {body}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `edge-agent install REPO [--target T]` as an operator with a USB stick runs it.
    pub fn install(&self, repo: &Path, target: Option<&str>) -> Output {
        let mut cmd = Command::new(binary("edge-agent"));
        cmd.args(["install", "--config"])
            .arg(&self.config)
            .arg(repo);
        if let Some(t) = target {
            cmd.args(["--target", t]);
        }
        cmd.output().unwrap()
    }

    /// A sample of the agent's Prometheus `/metrics` (`name` followed by a space or `{`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = http()
            .get(&self.url("/metrics"))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    pub fn models(&self) -> Value {
        get_json(&self.url("/v1/models"))
    }

    /// The `/v1/models` entry of one model.
    pub fn model(&self, name: &str) -> Value {
        self.models()["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until `model`'s state is one of `states`; returns the entry.
    pub fn wait_state(&self, model: &str, states: &[&str], within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let m = self.model(model);
            if states.iter().any(|s| m["state"] == *s) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{model} never reached {states:?}: {m}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the agent's log holds `text`: work the agent starts once its models are
    /// loaded (a resumed probation, say) is logged after readiness turns true.
    pub fn wait_log(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log_text();
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the agent never logged {text:?} within {within:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the agent cleanly (SIGTERM, as systemd does) and starts it again on the same
    /// configuration and port.
    pub fn restart(self) -> Self {
        let (config, port) = self.stop();
        Self::spawn(config, port, &[])
    }

    /// Stops the agent cleanly (SIGTERM) and waits for it to exit; returns its configuration
    /// and port for a later start.
    pub fn stop(mut self) -> (PathBuf, u16) {
        let pid = self.child.id().to_string();
        run_ok(Command::new("kill").args(["-TERM", &pid]));
        let _ = self.child.wait();
        (self.config.clone(), self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client that returns 4xx/5xx responses instead of errors.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

pub fn get_json(url: &str) -> Value {
    http()
        .get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// GETs `url`; the body as text, whatever the status.
pub fn get_text(url: &str) -> String {
    http()
        .get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// POSTs JSON; returns (status, body).
pub fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let mut response = http().post(url).send_json(body).unwrap();
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_json()
        .unwrap_or(Value::Null);
    (status, body)
}

/// Posts an Open Inference Protocol request in the binary tensor extension: `inputs` as raw
/// little-endian data after the JSON header, every output asked back as binary. Returns the
/// status and, for a 200, each output as a tensor read from the binary response.
pub fn post_infer_binary(
    url: &str,
    inputs: &[(&str, &edgefleet_protocol::Tensor)],
) -> (
    u16,
    Value,
    std::collections::BTreeMap<String, edgefleet_protocol::Tensor>,
) {
    let mut raw = Vec::new();
    let described: Vec<Value> = inputs
        .iter()
        .map(|(name, tensor)| {
            let start = raw.len();
            tensor.data.write_le_bytes(&mut raw);
            serde_json::json!({
                "name": name, "shape": tensor.shape, "datatype": tensor.dtype().kserve_name(),
                "parameters": {"binary_data_size": raw.len() - start}
            })
        })
        .collect();
    let head = serde_json::to_vec(
        &serde_json::json!({"inputs": described, "parameters": {"binary_data_output": true}}),
    )
    .unwrap();
    let mut body = head.clone();
    body.extend_from_slice(&raw);
    let mut response = http()
        .post(url)
        .header("Inference-Header-Content-Length", head.len().to_string())
        .header("Content-Type", "application/octet-stream")
        .send(&body[..])
        .unwrap();
    let status = response.status().as_u16();
    let length: Option<usize> = response
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let bytes = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .unwrap_or_default();
    let Some(length) = length else {
        return (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Default::default(),
        );
    };
    let head: Value = serde_json::from_slice(&bytes[..length]).unwrap();
    let mut rest = &bytes[length..];
    let mut outputs = std::collections::BTreeMap::new();
    for output in head["outputs"].as_array().unwrap() {
        let dtype =
            edgefleet_protocol::DType::from_kserve_name(output["datatype"].as_str().unwrap())
                .unwrap();
        let shape: Vec<usize> = serde_json::from_value(output["shape"].clone()).unwrap();
        let size = output["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        outputs.insert(
            output["name"].as_str().unwrap().to_string(),
            edgefleet_protocol::Tensor::from_le_bytes(dtype, shape, chunk, "output").unwrap(),
        );
    }
    assert!(rest.is_empty(), "binary data no output claims");
    (status, head, outputs)
}

/// A churn customer as the `:predict` endpoint takes it.
pub fn churn_row(tenure_months: f64) -> Value {
    serde_json::json!({
        "tenure_months": tenure_months, "monthly_charges": 70.0, "total_charges": 70.0 * tenure_months,
        "contract_type": "month-to-month", "payment_method": "bank-transfer",
        "internet_service": "dsl", "support_tickets": 1
    })
}

/// `n` churn requests drawn from a release's signed input baseline (`models/<release>/
/// baseline.json`): each feature independently, a bin by its share, then a value inside the bin.
/// Traffic like the training data, so its drift PSI stays low; `scale` multiplies the named
/// numeric features to shift them. Deterministic for a `seed`.
pub fn baseline_rows(release: &str, n: usize, seed: u64, scale: &[(&str, f64)]) -> Vec<Value> {
    let text = std::fs::read_to_string(models_dir().join(release).join("baseline.json")).unwrap();
    let baseline: Value = serde_json::from_str(&text).unwrap();
    let features = baseline["features"].as_object().unwrap();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        // xorshift64*: plenty for sampling test traffic.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let pick = |shares: &[f64], u: f64| {
        let mut seen = 0.0;
        for (i, s) in shares.iter().enumerate() {
            seen += s;
            if u < seen {
                return i;
            }
        }
        shares.len() - 1
    };
    (0..n)
        .map(|_| {
            let mut row = serde_json::Map::new();
            for (name, f) in features {
                let value = if f["kind"] == "numeric" {
                    let edges: Vec<f64> = serde_json::from_value(f["edges"].clone()).unwrap();
                    let shares: Vec<f64> = serde_json::from_value(f["shares"].clone()).unwrap();
                    let bin = pick(&shares, uniform());
                    let width = (edges[edges.len() - 1] - edges[0]) / edges.len() as f64;
                    let low = if bin == 0 {
                        edges[0] - width
                    } else {
                        edges[bin - 1]
                    };
                    let high = if bin == edges.len() {
                        low + width
                    } else {
                        edges[bin]
                    };
                    let x = low.max(0.0) + (high - low.max(0.0)) * (0.05 + 0.9 * uniform());
                    let factor = scale.iter().find(|(n, _)| n == name).map_or(1.0, |s| s.1);
                    serde_json::json!(x * factor)
                } else {
                    let shares = f["shares"].as_object().unwrap();
                    let names: Vec<&String> = shares.keys().collect();
                    let weights: Vec<f64> = shares.values().map(|v| v.as_f64().unwrap()).collect();
                    match names[pick(&weights, uniform())].as_str() {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        category => Value::String(category.to_owned()),
                    }
                };
                row.insert(name.clone(), value);
            }
            Value::Object(row)
        })
        .collect()
}

/// Tests that run a fleet of agent processes take turns within their test binary: on 2 cores
/// their health checks and latency figures would measure each other.
pub fn one_fleet_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_FLEET: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_FLEET
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A desired-state message naming `targets`, unsigned: what a device could forge on a broker
/// without topic rights. The model of each target comes from its name.
pub fn unsigned_desired(device: &str, revision: u64, targets: &[&str]) -> Vec<u8> {
    use edgefleet_protocol::message::{self, Desired, DesiredModel, SCHEMA_VERSION};
    use edgefleet_protocol::{DeviceId, MessageId, ModelName};
    message::encode(&Desired {
        schema: SCHEMA_VERSION,
        id: MessageId::from_random([revision as u8; 16]),
        device: DeviceId::new(device).unwrap(),
        revision,
        issued_at_unix: 1,
        models: targets
            .iter()
            .map(|target| {
                let (model, _) = edgefleet_protocol::target::parse_target_name(target).unwrap();
                DesiredModel {
                    shadow: None,
                    model: ModelName::new(model.to_string()).unwrap(),
                    target: (*target).into(),
                    artifact_urls: vec![],
                    rollout: None,
                }
            })
            .collect(),
    })
    .unwrap()
}
