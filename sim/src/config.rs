//! The simulator's settings (TOML): where the fleet is, how many devices in which groups, and how
//! each group behaves. Every field but `server_url` and the groups has a default; `validate` says
//! what is wrong before a single device connects.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{path}: not a simulator configuration: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The fleet server's HTTP address (registry, device registration, enrollment).
    pub server_url: String,
    /// A file holding an operator token allowed to register devices (`fleetctl` keeps one).
    pub admin_token_file: PathBuf,
    /// Device ids are `<id_prefix>-<group>-<n>`; a second run with the same prefix re-registers
    /// nothing and fails on the first id taken, so give each run its own.
    #[serde(default = "default_id_prefix")]
    pub id_prefix: String,
    /// The run ends by itself after this long (connections closed cleanly, totals printed).
    pub duration_seconds: u64,
    /// New MQTT connections per second during the connect storm.
    #[serde(default = "default_connects_per_second")]
    pub connects_per_second: u32,
    /// Devices are spread over this many loopback source addresses (127.1.0.1 onwards), so that a
    /// run can go past one address's ~28,000 ephemeral ports; 1 connects from 127.0.0.1.
    #[serde(default = "default_source_addresses")]
    pub source_addresses: u32,
    /// Registrations and enrollments in flight at once.
    #[serde(default = "default_enroll_concurrency")]
    pub enroll_concurrency: usize,
    /// Seeds every random draw: the same seed and configuration make the same traffic.
    #[serde(default)]
    pub seed: u64,
    /// Connect to this broker (`mqtt://host:port`) instead of the one the server named at
    /// enrollment: a bridging broker in front of the server's, which is how one fleet grows
    /// past the sockets a single broker process may hold.
    #[serde(default)]
    pub broker_url: Option<String>,
    /// A device's keep-alive; the broker drops it after 1.5 times this without a packet.
    #[serde(default = "default_keep_alive_seconds")]
    pub keep_alive_seconds: u16,
    /// What every device starts out running, if anything (a signed target name): as if it had
    /// been provisioned with it.
    #[serde(default)]
    pub initial_target: Option<String>,
    pub telemetry: TelemetryConfig,
    pub groups: Vec<GroupConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// A device sends one metrics batch per window (the agent's default is 60 s).
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
    /// Predictions each device serves per second, on average.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: f64,
    /// Share of predictions that fail.
    #[serde(default)]
    pub error_ratio: f64,
    /// Typical prediction latency; each answer's is drawn around it.
    #[serde(default = "default_latency_ms")]
    pub latency_ms: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The fleet group the devices are registered in.
    pub name: String,
    pub devices: u32,
    /// How long an install takes from the desired state's arrival to the outcome.
    #[serde(default = "default_install_delay_ms")]
    pub install_delay_ms: u64,
    /// Share of installs that fail (the device reports the target rejected and keeps its
    /// version); which devices fail follows from the seed.
    #[serde(default)]
    pub install_failure_ratio: f64,
    /// Input drift on this group's devices, whatever version they run.
    #[serde(default)]
    pub drift: Option<DriftConfig>,
}

/// Moves a share of each named feature's values into its top baseline bin: a shift towards
/// values above anything seen in training, which is what drift most often looks like (prices,
/// counts and durations that grew).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// Features to shift; empty shifts every feature of the baseline.
    #[serde(default)]
    pub features: Vec<String>,
    /// Share of values moved, 0 to 1.
    pub strength: f64,
}

fn default_id_prefix() -> String {
    "sim".into()
}
fn default_connects_per_second() -> u32 {
    500
}
fn default_source_addresses() -> u32 {
    1
}
fn default_enroll_concurrency() -> usize {
    16
}
fn default_keep_alive_seconds() -> u16 {
    60
}
fn default_window_seconds() -> u64 {
    60
}
fn default_requests_per_second() -> f64 {
    1.0
}
fn default_latency_ms() -> f64 {
    5.0
}
fn default_install_delay_ms() -> u64 {
    2_000
}

/// The most devices one run simulates: far above what one machine's broker holds, low enough
/// that a typo cannot ask for billions of sockets.
pub const MAX_DEVICES: u32 = 1_000_000;

impl SimConfig {
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.server_url.starts_with("http://") || self.server_url.starts_with("https://")) {
            return Err(invalid("server_url", "must start with http:// or https://"));
        }
        if self.duration_seconds == 0 {
            return Err(invalid("duration_seconds", "must be at least 1"));
        }
        if self.connects_per_second == 0 {
            return Err(invalid("connects_per_second", "must be at least 1"));
        }
        if !(1..=65_000).contains(&self.source_addresses) {
            return Err(invalid("source_addresses", "must be 1 to 65000"));
        }
        if self.enroll_concurrency == 0 {
            return Err(invalid("enroll_concurrency", "must be at least 1"));
        }
        if let Some(url) = &self.broker_url {
            let address = edgefleet_protocol::broker::BrokerAddress::parse(url)
                .map_err(|e| invalid("broker_url", e.to_string()))?;
            if address.tls {
                return Err(invalid(
                    "broker_url",
                    "the simulator speaks plain MQTT: give a mqtt:// listener",
                ));
            }
        }
        if self.keep_alive_seconds < 5 {
            return Err(invalid("keep_alive_seconds", "must be at least 5"));
        }
        if let Some(target) = &self.initial_target {
            edgefleet_protocol::target_name::parse_target_name(target)
                .map_err(|e| invalid("initial_target", e.to_string()))?;
        }
        let t = &self.telemetry;
        if t.window_seconds == 0
            || t.window_seconds > edgefleet_protocol::message::MAX_WINDOW_SECONDS
        {
            return Err(invalid(
                "telemetry.window_seconds",
                "must be 1 to 86400 (a day)",
            ));
        }
        if !(t.requests_per_second >= 0.0 && t.requests_per_second <= 10_000.0) {
            return Err(invalid(
                "telemetry.requests_per_second",
                "must be 0 to 10000",
            ));
        }
        ratio("telemetry.error_ratio", t.error_ratio)?;
        if !(t.latency_ms > 0.0 && t.latency_ms < 60_000.0) {
            return Err(invalid(
                "telemetry.latency_ms",
                "must be above 0 and below 60000",
            ));
        }
        if self.groups.is_empty() {
            return Err(invalid(
                "groups",
                "name at least one [[groups]] with devices",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            let field = |f: &str| format!("groups[{i}].{f}");
            if g.name.is_empty()
                || !g
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(field("name"), "letters, digits, - and _ only"));
            }
            if !names.insert(g.name.as_str()) {
                return Err(invalid(
                    field("name"),
                    format!("{:?} is named twice", g.name),
                ));
            }
            if g.devices == 0 {
                return Err(invalid(field("devices"), "must be at least 1"));
            }
            ratio(&field("install_failure_ratio"), g.install_failure_ratio)?;
            if let Some(d) = &g.drift {
                ratio(&field("drift.strength"), d.strength)?;
            }
        }
        if self.devices() > u64::from(MAX_DEVICES) {
            return Err(invalid(
                "groups",
                format!("{} devices in all; at most {MAX_DEVICES}", self.devices()),
            ));
        }
        Ok(())
    }

    pub fn devices(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.devices)).sum()
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_seconds)
    }

    /// The loopback address device number `n` connects from.
    pub fn source_address(&self, n: u64) -> Option<Ipv4Addr> {
        if self.source_addresses <= 1 {
            return None;
        }
        let k = u32::try_from(n % u64::from(self.source_addresses)).unwrap_or(0);
        // 127.1.x.y with y in 1..=254: never a network or broadcast-looking address.
        let [_, _, x, y] = (k / 254 * 256 + k % 254 + 1).to_be_bytes();
        Some(Ipv4Addr::new(127, 1, x, y))
    }
}

fn ratio(field: &str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, "must be between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<SimConfig, String> {
        let text = format!(
            "server_url = \"http://127.0.0.1:8080\"\nadmin_token_file = \"t\"\n\
             duration_seconds = 60\n{extra}\n[telemetry]\n\
             [[groups]]\nname = \"a\"\ndevices = 10\n"
        );
        let c: SimConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = config("").unwrap();
        assert_eq!(c.telemetry.window_seconds, 60);
        assert_eq!(c.connects_per_second, 500);
        assert_eq!(c.devices(), 10);
        assert_eq!(c.source_address(5), None);
    }

    #[test]
    fn the_example_file_is_valid_and_says_the_defaults() {
        let example: SimConfig = toml::from_str(include_str!("../sim.example.toml"))
            .unwrap_or_else(|e| panic!("sim.example.toml: {e}"));
        example.validate().unwrap_or_else(|e| panic!("{e}"));
        let defaults = config("").unwrap();
        assert_eq!(example.connects_per_second, defaults.connects_per_second);
        assert_eq!(example.source_addresses, defaults.source_addresses);
        assert_eq!(example.enroll_concurrency, defaults.enroll_concurrency);
        assert_eq!(example.keep_alive_seconds, defaults.keep_alive_seconds);
        assert_eq!(
            example.telemetry.window_seconds,
            defaults.telemetry.window_seconds
        );
        assert_eq!(
            example.telemetry.requests_per_second,
            defaults.telemetry.requests_per_second
        );
        assert_eq!(example.telemetry.latency_ms, defaults.telemetry.latency_ms);
        assert_eq!(example.groups[0].install_delay_ms, 2_000);
    }

    #[test]
    fn bad_values_name_their_field() {
        for (extra, field) in [
            ("source_addresses = 0", "source_addresses"),
            ("keep_alive_seconds = 1", "keep_alive_seconds"),
            ("initial_target = \"churn\"", "initial_target"),
            ("connects_per_second = 0", "connects_per_second"),
            ("broker_url = \"mqtts://127.0.0.1:8883\"", "broker_url"),
            ("broker_url = \"127.0.0.1\"", "broker_url"),
        ] {
            let err = config(extra).unwrap_err();
            assert!(err.starts_with(field), "{extra}: {err}");
        }
        assert!(config("surprise = 1").unwrap_err().contains("surprise"));
    }

    #[test]
    fn source_addresses_spread_over_127_1_and_skip_0_and_255() {
        let c = config("source_addresses = 600").unwrap();
        let all: std::collections::BTreeSet<_> =
            (0..600).filter_map(|n| c.source_address(n)).collect();
        assert_eq!(all.len(), 600);
        assert!(all.iter().all(|a| {
            let [a, b, _, d] = a.octets();
            a == 127 && b == 1 && d != 0 && d != 255
        }));
        assert_eq!(c.source_address(0), c.source_address(600));
    }
}
