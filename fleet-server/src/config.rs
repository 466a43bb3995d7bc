//! The server's configuration: TOML, every default documented here, then environment overrides
//! (`EDGEFLEET_SERVER__SECTION__KEY=value`), then validation before any port is bound or file
//! written. `fleet-server check-config` prints every problem, by key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Prefix of environment overrides: `EDGEFLEET_SERVER__MQTT__URL=mqtt://broker:1883` sets
/// `mqtt.url`. Values parse as TOML when they can (`8800`, `true`), else as strings.
pub const ENV_PREFIX: &str = "EDGEFLEET_SERVER__";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Operator API, TUF repository and artifact downloads. Default `127.0.0.1:8800`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL devices reach this server at; artifact URLs in desired state start with it.
    /// Default `http://<listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// SQLite database, artifacts, the TUF repository and the online keys. Default
    /// `/var/lib/edgefleet-server`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub tuf: TufConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub enrollment: Enrollment,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub artifacts: ArtifactsConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// What the registry's stages mean for rollouts (`[registry]`; see docs/SERVER.md).
    #[serde(default)]
    pub registry: edgefleet_rollout::StageRules,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// Where the server's own alerts go (`crate::alerts`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Webhook URLs (http or https) that receive every alert as it opens and resolves, in
    /// Alertmanager's webhook format. Default none: alerts are only listed (API, dashboard,
    /// `fleetctl alerts`).
    pub webhooks: Vec<String>,
    /// Seconds one delivery may take. Default 10.
    pub timeout_seconds: u64,
    /// Deliveries tried per change before giving up (5 s doubling to 10 min between). Default 20
    /// (about two and a half hours).
    pub max_attempts: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            timeout_seconds: 10,
            max_attempts: 20,
        }
    }
}

/// The audit log of operator calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Entries older than this are deleted (hourly); the chain is then checked from the oldest
    /// entry kept. Default 400 days (a year and a bit, for yearly reviews).
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 400,
        }
    }
}

/// Device telemetry (metrics batches) kept for figures, charts and model gates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Telemetry rollups (the fleet's figures and charts) older than this are deleted (hourly).
    /// Default 14 days.
    pub retention_days: u32,
    /// Raw batches (one device's telemetry, a rollout's gates and charts) are kept this long once
    /// folded into rollups. Default 6 hours: about 1.5 MB per device at one 4 kB batch a minute.
    pub raw_retention_hours: u32,
    /// Rollups keep minutes this long, then hours. Default 24.
    pub minute_rollups_hours: u32,
    /// A version's accuracy or ROC AUC on labelled field traffic this far (absolute) below the
    /// figure its signed lineage claims, or its MAE/RMSE this fraction above, is flagged as
    /// decayed. Default 0.05.
    pub decay_tolerance: f64,
    /// Labels a version needs before it is judged for decay. Default 200.
    pub decay_min_labelled: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            retention_days: 14,
            raw_retention_hours: 6,
            minute_rollups_hours: 24,
            decay_tolerance: 0.05,
            decay_min_labelled: 200,
        }
    }
}

/// The Prometheus endpoint, `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A file holding the token a scraper must send (`Authorization: Bearer <token>`, Prometheus'
    /// `authorization.credentials_file`); at least 16 characters. Default: none, `/metrics` is
    /// public (it shows counts and model figures, no device names).
    pub token_file: Option<PathBuf>,
    /// The fleet's figures in `/metrics` (devices online, each version's telemetry over the last
    /// five minutes) are recomputed this often by a background task; a scrape only encodes the
    /// last ones, so scraping often (or many scrapers) costs the store nothing and a scrape never
    /// waits for it. Default 15.
    pub refresh_seconds: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            token_file: None,
            refresh_seconds: 15,
        }
    }
}

/// The scrape token in `metrics.token_file`, or why that file cannot be one.
pub fn read_metrics_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("metrics.token_file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 || token.chars().any(char::is_whitespace) {
        return Err(format!(
            "metrics.token_file {} must hold one token of at least 16 characters (e.g. `openssl rand -hex 32`)",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// Where uploaded model artifacts live.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactsConfig {
    /// `s3://bucket[/prefix]` (any S3-compatible store; credentials, region and endpoint from
    /// the usual `AWS_*` variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, or the ECS task role) or an absolute directory.
    /// Several servers must share one. Default: the directory `<data_dir>/artifacts`.
    pub url: Option<String>,
}

/// Where the server's state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite:///absolute/path.db` or `postgres://user:password@host:port/db?sslmode=require`
    /// (several servers may share one PostgreSQL). Default: SQLite at `<data_dir>/fleet.db`.
    pub url: Option<String>,
    /// PostgreSQL connections per server process. Default 16.
    pub pool_size: usize,
    /// SQLite: read-only connections beside the single writer, so reads (device authentication,
    /// operator lists, gates) neither wait for writes nor hold them up. Default 4.
    pub sqlite_readers: usize,
    /// PEM of the CA that signed PostgreSQL's certificate, beside the system's roots (e.g. the
    /// RDS bundle).
    pub ca_file: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: 16,
            sqlite_readers: 4,
            ca_file: None,
        }
    }
}

/// The database a [`DatabaseConfig`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TufConfig {
    /// Directory of the online keys, `snapshot.pem` and `timestamp.pem` (mode 0600). Default
    /// `<data_dir>/keys`.
    pub online_keys_dir: Option<PathBuf>,
    /// Days new snapshot metadata stays valid. Default 7.
    pub snapshot_days: u32,
    /// Days new timestamp metadata stays valid. Default 1; the server re-signs well before.
    pub timestamp_days: u32,
}

impl Default for TufConfig {
    fn default() -> Self {
        Self {
            online_keys_dir: None,
            snapshot_days: 7,
            timestamp_days: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Where the embedded broker listens when `url` is not set. Default `127.0.0.1:1883`.
    pub embedded_listen: SocketAddr,
    /// An external broker (Mosquitto, EMQX): `mqtt://host:port` or `mqtts://host:port`. When
    /// set, no broker is embedded.
    pub url: Option<String>,
    /// The server's own user name on the broker. Default `fleet-server`.
    pub username: String,
    /// Its password; required with `url`. For the embedded broker a random one is made at start.
    pub password: Option<String>,
    /// PEM file of the CA that signed an `mqtts://` broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// Shared-subscription group, so several servers split the device messages. Default
    /// `fleet-server`.
    pub share_group: String,
    /// The broker URL told to devices at enrollment. Default: `mqtt.url`, or
    /// `mqtt://<embedded_listen>`.
    pub device_url: Option<String>,
    /// This server's broker user name and client id on an external broker (the two are one:
    /// `mosquitto-config` sets `use_username_as_clientid`), where it keeps a persistent session
    /// (device messages queue there while the server is busy or restarting). Unique per server
    /// process. Default: the first free replica slot `<username>-1` … `<username>-<replicas>`,
    /// claimed through a lease in the shared database.
    pub client_id: Option<String>,
    /// How many server replicas may share an external broker: `mosquitto-config` writes one
    /// broker user per replica slot. Default 4.
    pub replicas: u16,
    /// Embedded broker only: every this many seconds the server's watcher connection connects
    /// afresh, which has rumqttd hand it retained messages again (at most 1,000), and undoes
    /// those it refuses. Catches junk a device retained faster than the watcher read it live.
    /// Default 300.
    pub retained_sweep_seconds: u64,
    /// External broker only: a device of a running rollout that has not answered this many
    /// seconds after it was told has its retained reported state read from the broker again,
    /// then every this many seconds until it answers: a broker whose queue for the server is
    /// full drops device messages it already acknowledged (Mosquitto's `max_queued_bytes`), and
    /// the device never sends them again. Default 60.
    pub reread_reported_seconds: u64,
    /// The keep-alive of the server's own broker connections: a ping goes out this often, and
    /// the connection counts as lost when its answer has not come back by the next one (and the
    /// broker counts the server gone after 1.5 times this without a packet). Between 1 and
    /// 65,535. Default 30.
    pub keep_alive_seconds: u64,
}

impl MqttConfig {
    /// The broker user names server replicas connect as on an external broker: one per replica
    /// slot, and the configured `client_id` if it is none of them.
    pub fn server_users(&self) -> Vec<String> {
        let mut users: Vec<String> = (1..=self.replicas)
            .map(|slot| format!("{}-{slot}", self.username))
            .collect();
        if let Some(id) = &self.client_id
            && !users.contains(id)
        {
            users.push(id.clone());
        }
        users
    }

    /// Whether `name` is, or could be, a server's broker user: a device may not take it.
    pub fn is_server_user(&self, name: &str) -> bool {
        let slot = name
            .strip_prefix(self.username.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        name == self.username || slot || self.client_id.as_deref() == Some(name)
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            embedded_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            url: None,
            username: "fleet-server".into(),
            password: None,
            ca_file: None,
            share_group: "fleet-server".into(),
            device_url: None,
            client_id: None,
            replicas: 4,
            retained_sweep_seconds: 300,
            reread_reported_seconds: 60,
            keep_alive_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest artifact upload, in bytes. Default 1 GiB.
    pub max_artifact_bytes: u64,
    /// Largest JSON request body, in bytes. Default 16 MiB: signed targets metadata for some
    /// 1,000 releases with their golden vectors (measured 4.9 MB) fits with room.
    pub max_json_bytes: usize,
    /// Open HTTP connections at most; more are closed at once. Default 16,384, and never above
    /// the process's open-file limit less 1,024 (kept for the database, broker and files).
    pub max_connections: usize,
    /// Open HTTP connections one client address may hold. Default 256.
    pub max_connections_per_client: usize,
    /// A connection that has not sent a whole request header within this many seconds (its
    /// first request, or the next on a kept-alive connection) is closed. Default 10.
    pub header_read_timeout_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_artifact_bytes: 1024 * 1024 * 1024,
            max_json_bytes: 16 * 1024 * 1024,
            max_connections: 16_384,
            max_connections_per_client: 256,
            header_read_timeout_seconds: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Enrollment {
    /// Hours an enrollment token stays valid. Default 24.
    pub token_hours: u32,
}

impl Default for Enrollment {
    fn default() -> Self {
        Self { token_hours: 24 }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8800))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgefleet-server")
}

/// Every problem found in a configuration, each naming its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment override {var}: {message}")]
    Env { var: String, message: String },
    #[error("config {path}: invalid settings:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl Config {
    /// Reads `path`, applies the process's environment overrides, and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(path, &text, std::env::vars())
    }

    /// Parses `text`, applies overrides from `env` and validates.
    pub fn from_toml(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        for (var, value) in env {
            if let Some(key) = var.strip_prefix(ENV_PREFIX) {
                apply_override(&mut table, &var, key, &value)?;
            }
        }
        let config: Config =
            Config::deserialize(table).map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=3_600).contains(&self.metrics.refresh_seconds) {
            problems.push("metrics.refresh_seconds must be 1 to 3600".into());
        }
        if let Some(path) = &self.metrics.token_file
            && let Err(problem) = read_metrics_token(path)
        {
            problems.push(problem);
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!(
                "public_url {url:?} must start with http:// or https://"
            ));
        }
        if let Some(url) = &self.mqtt.url {
            match broker_address(url) {
                Err(e) => problems.push(format!("mqtt.url: {e}")),
                Ok(_) if self.mqtt.password.is_none() => problems.push(
                    "mqtt.password is required with mqtt.url (the server's own broker credential)"
                        .into(),
                ),
                Ok(_) => {}
            }
        } else if self.mqtt.ca_file.is_some() {
            problems.push("mqtt.ca_file only applies to an external broker (mqtt.url)".into());
        }
        if let Some(url) = &self.mqtt.device_url
            && let Err(e) = broker_address(url)
        {
            problems.push(format!("mqtt.device_url: {e}"));
        }
        if self.mqtt.username.is_empty() || self.mqtt.username.contains(['+', '#', '/']) {
            problems.push(format!(
                "mqtt.username {:?} must be non-empty and contain no '+', '#' or '/'",
                self.mqtt.username
            ));
        }
        if self.mqtt.retained_sweep_seconds == 0 {
            problems.push(
                "mqtt.retained_sweep_seconds must be at least 1 (300 is the default)".to_owned(),
            );
        }
        if self.mqtt.reread_reported_seconds == 0 {
            problems.push(
                "mqtt.reread_reported_seconds must be at least 1 (60 is the default)".to_owned(),
            );
        }
        if !(1..=u64::from(u16::MAX)).contains(&self.mqtt.keep_alive_seconds) {
            problems.push(format!(
                "mqtt.keep_alive_seconds {} must be between 1 and 65535 (30 is the default)",
                self.mqtt.keep_alive_seconds
            ));
        }
        if self.mqtt.replicas == 0 || self.mqtt.replicas > 1000 {
            problems.push(format!(
                "mqtt.replicas {} must be between 1 and 1000 (one broker user per server replica)",
                self.mqtt.replicas
            ));
        }
        if let Some(id) = &self.mqtt.client_id
            && (id.is_empty() || id.contains(['+', '#', '/', ':']))
        {
            problems.push(format!(
                "mqtt.client_id {id:?} must be non-empty and contain no '+', '#', '/' or ':'"
            ));
        }
        if self.mqtt.share_group.is_empty() || self.mqtt.share_group.contains(['+', '#', '/']) {
            problems.push(format!(
                "mqtt.share_group {:?} must be non-empty and contain no '+', '#' or '/'",
                self.mqtt.share_group
            ));
        }
        if self.tuf.timestamp_days == 0 || self.tuf.snapshot_days < self.tuf.timestamp_days {
            problems.push(
                "tuf.timestamp_days must be at least 1 and tuf.snapshot_days at least as long"
                    .into(),
            );
        }
        if self.limits.max_artifact_bytes == 0 || self.limits.max_json_bytes < 4096 {
            problems.push(
                "limits.max_artifact_bytes must be positive and limits.max_json_bytes at least 4096"
                    .into(),
            );
        }
        if self.limits.max_connections == 0
            || self.limits.max_connections_per_client == 0
            || self.limits.max_connections_per_client > self.limits.max_connections
        {
            problems.push(
                "limits.max_connections and limits.max_connections_per_client must be at least 1, \
                 and the per-client cap at most the total"
                    .into(),
            );
        }
        if !(1..=3600).contains(&self.limits.header_read_timeout_seconds) {
            problems.push("limits.header_read_timeout_seconds must be between 1 and 3600".into());
        }
        if self.enrollment.token_hours == 0 {
            problems.push("enrollment.token_hours must be at least 1".into());
        }
        match self.database() {
            Err(e) => problems.push(format!("database.url: {e}")),
            Ok(Database::Sqlite(_)) if self.database.ca_file.is_some() => {
                problems.push("database.ca_file only applies to PostgreSQL".into())
            }
            Ok(_) => {}
        }
        if let Some(url) = &self.artifacts.url
            && !(url.starts_with('/') || url.starts_with("s3://") || url.starts_with("file:///"))
        {
            problems.push(format!(
                "artifacts.url {url:?} must be s3://bucket[/prefix] or an absolute directory"
            ));
        }
        if !(1..=1024).contains(&self.database.pool_size) {
            problems.push("database.pool_size must be 1 to 1024".into());
        }
        if !(1..=64).contains(&self.database.sqlite_readers) {
            problems.push("database.sqlite_readers must be 1 to 64".into());
        }
        if !(1..=3650).contains(&self.telemetry.retention_days) {
            problems.push("telemetry.retention_days must be 1 to 3650".into());
        }
        let retention_hours = u64::from(self.telemetry.retention_days) * 24;
        if self.telemetry.raw_retention_hours == 0
            || u64::from(self.telemetry.raw_retention_hours) > retention_hours
        {
            problems.push(
                "telemetry.raw_retention_hours must be 1 to telemetry.retention_days × 24".into(),
            );
        }
        if self.telemetry.minute_rollups_hours == 0
            || u64::from(self.telemetry.minute_rollups_hours) > retention_hours
        {
            problems.push(
                "telemetry.minute_rollups_hours must be 1 to telemetry.retention_days × 24".into(),
            );
        }
        if !(self.telemetry.decay_tolerance.is_finite()
            && (0.0..1.0).contains(&self.telemetry.decay_tolerance))
        {
            problems.push("telemetry.decay_tolerance must be at least 0 and below 1".into());
        }
        for hook in &self.alerts.webhooks {
            match url::Url::parse(hook) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(_) => problems.push(format!(
                    "alerts.webhooks: {hook} must be an http:// or https:// URL with a host"
                )),
                Err(e) => problems.push(format!("alerts.webhooks: {hook} is not a URL: {e}")),
            }
        }
        if !(1..=300).contains(&self.alerts.timeout_seconds) {
            problems.push("alerts.timeout_seconds must be 1 to 300".into());
        }
        if !(1..=1000).contains(&self.alerts.max_attempts) {
            problems.push("alerts.max_attempts must be 1 to 1000".into());
        }
        if !(1..=36_500).contains(&self.audit.retention_days) {
            problems.push("audit.retention_days must be 1 to 36500".into());
        }
        for (group, stages) in &self.registry.groups {
            if stages.is_empty() {
                problems.push(format!(
                    "registry.groups.{group} lists no stage: give staging and/or production, or leave the group out"
                ));
            }
            if stages.contains(&edgefleet_protocol::api::Stage::Archived) {
                problems.push(format!(
                    "registry.groups.{group} lists archived: archived versions are never rolled out"
                ));
            }
        }
        problems
    }

    /// The database `database.url` names (SQLite in `data_dir` when unset).
    pub fn database(&self) -> Result<Database, String> {
        let Some(url) = &self.database.url else {
            return Ok(Database::Sqlite(self.data_dir.join("fleet.db")));
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "{url:?}: the SQLite path must be absolute (sqlite:///var/lib/...)"
                ));
            }
            Ok(Database::Sqlite(path))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::Postgres(url.clone()))
        } else {
            // Never echo the URL: it may carry a password.
            Err("must start with sqlite:// or postgres://".into())
        }
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_owned()
    }

    pub fn device_mqtt_url(&self) -> String {
        self.mqtt
            .device_url
            .clone()
            .or_else(|| self.mqtt.url.clone())
            .unwrap_or_else(|| format!("mqtt://{}", self.mqtt.embedded_listen))
    }

    /// `artifacts.url`, or the default directory in `data_dir`.
    pub fn artifacts_url(&self) -> String {
        self.artifacts
            .url
            .clone()
            .unwrap_or_else(|| self.data_dir.join("artifacts").display().to_string())
    }

    pub fn online_keys_dir(&self) -> PathBuf {
        self.tuf
            .online_keys_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }
}

/// An external broker's address (one parser for the server and its devices).
pub use edgefleet_protocol::broker::BrokerAddress;

/// `url` as a broker address, or why not (for configuration errors).
pub fn broker_address(url: &str) -> Result<BrokerAddress, String> {
    BrokerAddress::parse(url).map_err(|e| e.to_string())
}

fn apply_override(
    table: &mut toml::Table,
    var: &str,
    key: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.into(),
            message: "expected EDGEFLEET_SERVER__KEY or EDGEFLEET_SERVER__SECTION__KEY".into(),
        });
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, sections) = path.split_last().ok_or_else(|| ConfigError::Env {
        var: var.into(),
        message: "empty key".into(),
    })?;
    let mut at = table;
    for section in sections {
        at = at
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::Env {
                var: var.into(),
                message: format!("{section} is not a section"),
            })?;
    }
    at.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml(
            Path::new("server.toml"),
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8800");
        assert_eq!(c.public_url(), "http://127.0.0.1:8800");
        assert_eq!(c.mqtt.embedded_listen.to_string(), "127.0.0.1:1883");
        assert!(c.mqtt.url.is_none());
        assert_eq!(c.mqtt.reread_reported_seconds, 60);
        let refused = load("[mqtt]\nreread_reported_seconds = 0", &[]).unwrap_err();
        assert!(
            refused.to_string().contains("mqtt.reread_reported_seconds"),
            "{refused}"
        );
        assert_eq!(c.mqtt.keep_alive_seconds, 30);
        for bad in ["0", "65536"] {
            let refused = load(&format!("[mqtt]\nkeep_alive_seconds = {bad}"), &[]).unwrap_err();
            assert!(
                refused.to_string().contains("mqtt.keep_alive_seconds"),
                "{refused}"
            );
        }
        assert_eq!(
            c.online_keys_dir(),
            Path::new("/var/lib/edgefleet-server/keys")
        );
    }

    #[test]
    fn environment_overrides_win_over_the_file_and_parse_as_toml() {
        let c = load(
            "listen = \"127.0.0.1:1\"\n[mqtt]\nusername = \"a\"",
            &[
                ("EDGEFLEET_SERVER__LISTEN", "127.0.0.1:9000"),
                ("EDGEFLEET_SERVER__MQTT__URL", "mqtts://broker.example:8883"),
                ("EDGEFLEET_SERVER__MQTT__PASSWORD", "s3cret"),
                ("EDGEFLEET_SERVER__ENROLLMENT__TOKEN_HOURS", "2"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.mqtt.username, "a");
        assert_eq!(c.enrollment.token_hours, 2);
        assert_eq!(
            broker_address(c.mqtt.url.as_deref().unwrap()).unwrap(),
            BrokerAddress {
                host: "broker.example".into(),
                port: 8883,
                tls: true
            }
        );
    }

    #[test]
    fn the_database_is_chosen_by_url_and_sqlite_stays_the_default() {
        let c = load("data_dir = \"/srv/fleet\"", &[]).unwrap();
        assert_eq!(
            c.database().unwrap(),
            Database::Sqlite(PathBuf::from("/srv/fleet/fleet.db"))
        );
        assert_eq!(c.database.pool_size, 16);
        assert_eq!(c.database.sqlite_readers, 4);
        let refused = load("[database]\nsqlite_readers = 0", &[]).unwrap_err();
        assert!(refused.to_string().contains("sqlite_readers"), "{refused}");
        let c = load(
            "",
            &[(
                "EDGEFLEET_SERVER__DATABASE__URL",
                "postgres://fleet:pw@db:5432/fleet?sslmode=require",
            )],
        )
        .unwrap();
        assert_eq!(
            c.database().unwrap(),
            Database::Postgres("postgres://fleet:pw@db:5432/fleet?sslmode=require".into())
        );
        let c = load("[database]\nurl = \"sqlite:///var/fleet.db\"", &[]).unwrap();
        assert_eq!(
            c.database().unwrap(),
            Database::Sqlite(PathBuf::from("/var/fleet.db"))
        );
        let err = load(
            "[database]\nurl = \"mysql://u:secretpw@h/db\"\npool_size = 0",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("database.url: must start with sqlite:// or postgres://"),
            "{err}"
        );
        assert!(err.contains("database.pool_size"), "{err}");
        assert!(
            !err.contains("secretpw"),
            "the password must not be echoed: {err}"
        );
        let err = load(
            "[database]\nurl = \"sqlite://relative.db\"\nca_file = \"/ca.pem\"",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be absolute"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_by_key() {
        let err = load(
            "public_url = \"ftp://x\"\n[mqtt]\nurl = \"tcp://x\"\nshare_group = \"a/b\"\n[enrollment]\ntoken_hours = 0\n[telemetry]\nretention_days = 0\n[registry.groups]\nprod = [\"archived\"]\nlab = []",
            &[],
        )
        .unwrap_err()
        .to_string();
        for key in [
            "public_url",
            "mqtt.url",
            "mqtt.share_group",
            "enrollment.token_hours",
            "telemetry.retention_days",
            "registry.groups.prod lists archived",
            "registry.groups.lab lists no stage",
        ] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
    }

    #[test]
    fn the_registry_rules_read_from_toml() {
        let config = load(
            "[registry]\npromote_on_completion = false\n[registry.groups]\nprod = [\"production\"]",
            &[],
        )
        .unwrap();
        assert!(!config.registry.promote_on_completion);
        assert!(!config.registry.archive_replaced);
        assert_eq!(
            config.registry.groups["prod"],
            [edgefleet_protocol::api::Stage::Production].into()
        );
        let err = load("[registry.groups]\nprod = [\"gold\"]", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("gold"), "{err}");
    }

    #[test]
    fn an_external_broker_needs_the_servers_password() {
        let err = load("[mqtt]\nurl = \"mqtt://localhost\"", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.password is required"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = load("[mqtt]\nurll = \"x\"", &[]).unwrap_err().to_string();
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn server_users_are_replica_slots_that_no_device_may_take() {
        let mut mqtt = MqttConfig {
            username: "fs".into(),
            replicas: 2,
            ..MqttConfig::default()
        };
        assert_eq!(mqtt.server_users(), ["fs-1", "fs-2"]);
        mqtt.client_id = Some("edge-a".into());
        assert_eq!(mqtt.server_users(), ["fs-1", "fs-2", "edge-a"]);
        for taken in ["fs", "fs-1", "fs-17", "edge-a"] {
            assert!(mqtt.is_server_user(taken), "{taken}");
        }
        for free in ["fs-", "fs-1a", "fsx-1", "d1"] {
            assert!(!mqtt.is_server_user(free), "{free}");
        }
    }
}
