//! The agent's configuration: TOML, every default documented here, validated before any port is
//! bound or file written. `edge-agent check-config` prints every problem, by key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use edgefleet_protocol::DeviceId;
use edgefleet_protocol::target::RuntimePreference;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This device's id, `[A-Za-z0-9._-]{1,64}`. Required.
    pub device_id: DeviceId,
    /// Where the model store, its SQLite database and TUF metadata live.
    /// Default `/var/lib/edgefleet`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The TUF root this device trusts (shipped with it, out of band). Default
    /// `/etc/edgefleet/root.json`.
    #[serde(default = "default_trusted_root")]
    pub trusted_root_path: PathBuf,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub probation: Probation,
    #[serde(default)]
    pub fleet: FleetSettings,
    #[serde(default)]
    pub inference: InferenceSettings,
    #[serde(default)]
    pub quality: QualitySettings,
}

/// The prediction log that labels join on the device ([`crate::predictions`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualitySettings {
    /// Days a prediction is kept for its label to arrive. Default 35 (a month of label delay and
    /// some slack).
    pub retain_days: u64,
    /// Most predictions kept; the oldest go first. Default 200,000 (about 30 MB on disk).
    pub max_predictions: u64,
    /// How often the guard after commit judges a version whose release signs a guard policy,
    /// in seconds. Default 30.
    pub guard_check_seconds: u64,
    /// Whether answers may leave this device at all, as the release's signed sampling policy
    /// allows (`false`: none leave, whatever the release says; labels still join here).
    /// Default true.
    pub share_samples: bool,
}

impl Default for QualitySettings {
    fn default() -> Self {
        Self {
            retain_days: 35,
            max_predictions: 200_000,
            guard_check_seconds: 30,
            share_samples: true,
        }
    }
}

/// Which inference back-ends this device has and how a model's is chosen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceSettings {
    /// `auto` (measure every available back-end on the model's golden vectors and serve with the
    /// fastest that passes), `tract` or `onnxruntime`. A target's own `runtime` overrides it.
    /// Default `auto`.
    pub runtime: RuntimePreference,
    /// ONNX Runtime's shared library (1.22 or newer). Absent or unloadable: tract alone serves,
    /// and the agent logs why. Default `/usr/lib/edgefleet/libonnxruntime.so`.
    pub onnxruntime_library: PathBuf,
    /// Threads one inference may use, on either back-end (on tract only in builds with the
    /// `tract-threads` feature, a default one). Default 1: concurrent requests already spread
    /// over the cores; raise it for one large model on an idle multi-core board.
    pub threads: usize,
    /// Inferences run at once, over all models; more requests wait their turn (without a
    /// thread). Each running inference holds its model's scratch state, so this bounds the
    /// memory a burst of clients can take. Default 0: the number of cores.
    pub max_parallel: usize,
    /// tract keeps models of at least this many bytes as NNEF in `<data_dir>/cache/tract` and
    /// reloads them from there (ResNet50: 534 → 184 ms); smaller ones gain nothing. Default 16 MiB.
    pub tract_cache_min_bytes: usize,
}

impl InferenceSettings {
    /// `max_parallel`, with 0 read as the number of cores.
    pub fn parallel_inferences(&self) -> usize {
        match self.max_parallel {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            runtime: RuntimePreference::Auto,
            onnxruntime_library: PathBuf::from("/usr/lib/edgefleet/libonnxruntime.so"),
            threads: 1,
            max_parallel: 0,
            tract_cache_min_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The link to a fleet server, used once the device is enrolled (`edge-agent enroll`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSettings {
    /// Most messages (events, metrics batches) kept while the broker is unreachable; beyond it
    /// the oldest go first and their number is reported. Default 10000.
    pub outbox_max_messages: u64,
    /// MQTT keep-alive, in seconds. Default 30.
    pub keep_alive_seconds: u64,
    /// A download slower than this on average (after 10 s) is abandoned and retried later.
    /// Default 16384 B/s.
    pub min_download_bytes_per_second: u64,
    /// How often the device fetches the labels uploaded to the server for its predictions, in
    /// seconds. Default 60.
    pub labels_poll_seconds: u64,
    /// PEM of the CA that signed an `mqtts://` broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// Length of a telemetry window: every this many seconds the agent queues one metrics
    /// batch (per model version: requests, errors, latency quantiles, predicted labels, input
    /// drift; the process's CPU and memory). Default 60.
    pub telemetry_seconds: u64,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            outbox_max_messages: 10_000,
            keep_alive_seconds: 30,
            min_download_bytes_per_second: 16 * 1024,
            ca_file: None,
            labels_poll_seconds: 60,
            telemetry_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `HOST:PORT` (loopback by default: the API has no authentication) or `unix:/path`.
    /// Default `127.0.0.1:8700`.
    pub listen: String,
    /// Largest request body, in bytes. Default 8 MiB (a 224x224 image as JSON fits).
    pub max_body_bytes: usize,
    /// The most a model's signed interface may raise its own `/v2/models/{name}/infer` body
    /// limit to (`max_request_bytes`), in bytes; never below `max_body_bytes`. Default 64 MiB.
    pub max_model_body_bytes: usize,
    /// Request bodies held in memory at once, in bytes: past it, a request waits for others to
    /// finish before its body is read (one larger than this runs alone). It bounds what many
    /// concurrent clients cost, whatever the models' own limits. Default 16 MiB.
    pub max_inflight_body_bytes: usize,
    /// Seconds a request body may take to arrive once reading it starts; a slower one gets a 408
    /// and gives its share of `max_inflight_body_bytes` back. Default 30.
    pub body_read_seconds: u64,
    /// Seconds in-flight requests get to finish at shutdown. Default 10.
    pub shutdown_grace_seconds: u64,
    /// Local installs (`edge-agent install DIR`) take repositories under this directory only
    /// (after resolving links and `..`). Default `/media` (where removable media are mounted).
    pub install_from: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8700".into(),
            max_body_bytes: 8 * 1024 * 1024,
            max_model_body_bytes: 64 * 1024 * 1024,
            max_inflight_body_bytes: 16 * 1024 * 1024,
            body_read_seconds: 30,
            shutdown_grace_seconds: 10,
            install_from: PathBuf::from("/media"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest model artifact accepted, in bytes. Default 512 MiB.
    pub max_artifact_bytes: u64,
    /// Largest release file (a release's golden cases or baseline) accepted, in bytes: these are
    /// parsed in memory for the health check. Default 64 MiB.
    pub max_release_file_bytes: u64,
    /// Free space that must remain on the data dir's file system after staging, in bytes.
    /// Default 64 MiB.
    pub min_free_disk_bytes: u64,
    /// Multiplies the target's health-check p99 budget (default 1.0): a slow board can be given
    /// headroom without re-signing the model.
    pub latency_budget_factor: f64,
    /// Largest challenger model file the shadow slot takes, in bytes (a loaded model needs
    /// about its file's size in memory, beside the champion's). Default 128 MiB; 0 turns the
    /// shadow slot off, and a shadow rollout falls back to canary for this device.
    pub max_shadow_artifact_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_artifact_bytes: 512 * 1024 * 1024,
            max_release_file_bytes: 64 * 1024 * 1024,
            min_free_disk_bytes: 64 * 1024 * 1024,
            latency_budget_factor: 1.0,
            max_shadow_artifact_bytes: 128 * 1024 * 1024,
        }
    }
}

/// After activation, live traffic decides whether the new version stays.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Probation {
    /// Length of the probation window, in seconds. Default 60.
    pub window_seconds: u64,
    /// Requests needed before the error ratio is judged. Default 20.
    pub min_requests: u64,
    /// Largest acceptable share of failed inferences. Default 0.05.
    pub max_error_ratio: f64,
    /// Live p99 may be this many times the health check's budget. Default 3.0 (live traffic
    /// queues; the health check does not).
    pub latency_factor: f64,
}

impl Default for Probation {
    fn default() -> Self {
        Self {
            window_seconds: 60,
            min_requests: 20,
            max_error_ratio: 0.05,
            latency_factor: 3.0,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgefleet")
}

fn default_trusted_root() -> PathBuf {
    PathBuf::from("/etc/edgefleet/root.json")
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid agent configuration: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path} has {} problem(s):\n  {}", problems.len(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(config)
    }

    /// Every problem, not just the first, so one edit fixes them all.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key, problem: String| out.push(Problem { key, problem });
        if !self.data_dir.is_absolute() {
            bad(
                "data_dir",
                format!("{} must be an absolute path", self.data_dir.display()),
            );
        }
        if !self.trusted_root_path.is_absolute() {
            bad(
                "trusted_root_path",
                format!(
                    "{} must be an absolute path",
                    self.trusted_root_path.display()
                ),
            );
        }
        if !self.api.install_from.is_absolute() {
            bad(
                "api.install_from",
                format!(
                    "{} must be an absolute path",
                    self.api.install_from.display()
                ),
            );
        }
        if let Err(e) = self.listen() {
            bad("api.listen", e);
        }
        if !(1..=3650).contains(&self.quality.retain_days) {
            bad(
                "quality.retain_days",
                format!("{} must be between 1 and 3650", self.quality.retain_days),
            );
        }
        if self.quality.max_predictions == 0 {
            bad(
                "quality.max_predictions",
                "must be at least 1 (a device that keeps none cannot join labels)".into(),
            );
        }
        if !(1..=86_400).contains(&self.fleet.labels_poll_seconds) {
            bad(
                "fleet.labels_poll_seconds",
                format!(
                    "{} must be between 1 and 86400",
                    self.fleet.labels_poll_seconds
                ),
            );
        }
        if !(1..=3600).contains(&self.quality.guard_check_seconds) {
            bad(
                "quality.guard_check_seconds",
                format!(
                    "{} must be between 1 and 3600",
                    self.quality.guard_check_seconds
                ),
            );
        }
        if self.api.max_body_bytes < 1024 {
            bad("api.max_body_bytes", "must be at least 1024".into());
        }
        if self.api.max_inflight_body_bytes < 1024 {
            bad(
                "api.max_inflight_body_bytes",
                "must be at least 1024".into(),
            );
        }
        if self.api.body_read_seconds == 0 {
            bad("api.body_read_seconds", "must be at least 1".into());
        }
        if self.limits.max_artifact_bytes == 0 {
            bad("limits.max_artifact_bytes", "must be above 0".into());
        }
        if self.limits.max_release_file_bytes == 0 {
            bad("limits.max_release_file_bytes", "must be above 0".into());
        }
        if !(self.limits.latency_budget_factor.is_finite()
            && self.limits.latency_budget_factor >= 1.0)
        {
            bad(
                "limits.latency_budget_factor",
                "must be a number >= 1.0".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.probation.max_error_ratio) {
            bad(
                "probation.max_error_ratio",
                "must be between 0 and 1".into(),
            );
        }
        if !(self.probation.latency_factor.is_finite() && self.probation.latency_factor >= 1.0) {
            bad("probation.latency_factor", "must be a number >= 1.0".into());
        }
        if !(1..=256).contains(&self.inference.threads) {
            bad("inference.threads", "must be between 1 and 256".into());
        }
        if self.fleet.outbox_max_messages == 0 {
            bad("fleet.outbox_max_messages", "must be above 0".into());
        }
        if !(1..=86_400).contains(&self.fleet.telemetry_seconds) {
            bad(
                "fleet.telemetry_seconds",
                format!("{} is outside 1..=86400", self.fleet.telemetry_seconds),
            );
        }
        if !(5..=3600).contains(&self.fleet.keep_alive_seconds) {
            bad(
                "fleet.keep_alive_seconds",
                "must be between 5 and 3600".into(),
            );
        }
        if let Some(ca) = &self.fleet.ca_file
            && !ca.is_absolute()
        {
            bad(
                "fleet.ca_file",
                format!("{} must be an absolute path", ca.display()),
            );
        }
        out
    }

    pub fn listen(&self) -> Result<Listen, String> {
        if let Some(path) = self.api.listen.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "unix socket path {} must be absolute",
                    path.display()
                ));
            }
            return Ok(Listen::Unix(path));
        }
        self.api.listen.parse().map(Listen::Tcp).map_err(|e| {
            format!(
                "{:?} is neither HOST:PORT nor unix:/path ({e})",
                self.api.listen
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Config {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_fill_everything_but_the_device_id() {
        let c = parse("device_id = \"pump-1\"");
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(
            c.listen().unwrap(),
            Listen::Tcp("127.0.0.1:8700".parse().unwrap())
        );
        assert_eq!(c.probation.window_seconds, 60);
    }

    #[test]
    fn every_problem_is_reported_by_key() {
        let c = parse(
            r#"
            device_id = "a"
            data_dir = "relative"
            [api]
            listen = "nonsense"
            [probation]
            max_error_ratio = 2.0
            [inference]
            threads = 0
            "#,
        );
        let keys: Vec<_> = c.problems().iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "data_dir",
                "api.listen",
                "probation.max_error_ratio",
                "inference.threads"
            ]
        );
    }

    #[test]
    fn the_runtime_preference_is_one_of_three_words() {
        let c = parse("device_id = \"x\"\n[inference]\nruntime = \"onnxruntime\"");
        assert_eq!(c.inference.runtime, RuntimePreference::Onnxruntime);
        assert_eq!(
            parse("device_id = \"x\"").inference.runtime,
            RuntimePreference::Auto
        );
        let err = toml::from_str::<Config>("device_id = \"x\"\n[inference]\nruntime = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime") && err.contains("tract"), "{err}");
    }

    #[test]
    fn an_invalid_device_id_is_refused_naming_the_key() {
        let err = toml::from_str::<Config>("device_id = \"a/#\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("device_id") && err.contains("invalid device id"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_not_ignored() {
        assert!(toml::from_str::<Config>("device_id = \"x\"\nprobaton = 1").is_err());
    }

    #[test]
    fn unix_sockets_are_supported() {
        let c = parse("device_id = \"x\"\n[api]\nlisten = \"unix:/run/edgefleet/agent.sock\"");
        assert_eq!(
            c.listen().unwrap(),
            Listen::Unix("/run/edgefleet/agent.sock".into())
        );
    }
}
