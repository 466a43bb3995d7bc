//! How the server reaches an MQTT broker: where (the external broker, or the embedded one), the
//! connection options of each of its clients, and the topic filters device messages arrive on.
//! Shared by the server's main client ([`crate::mqtt`]) and the drainers of sessions other
//! servers left ([`crate::sessions`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_protocol::topic::{self, Channel, TOPIC_PREFIX};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use crate::config::{BrokerAddress, Config, broker_address};

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt.url: {0}")]
    Url(String),
    #[error("cannot read mqtt.ca_file {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the embedded MQTT broker did not start on {listen}: {detail}")]
    Embedded { listen: SocketAddr, detail: String },
    #[error("publishing to the broker failed: {0}")]
    Publish(String),
    #[error("encoding a message failed: {0}")]
    Encode(String),
}

/// Largest MQTT packet a broker should take from any client: the protocol's biggest message plus
/// headers. The embedded broker enforces it, and `mosquitto-config` writes it as Mosquitto's
/// `max_packet_size`.
pub const MAX_PACKET_BYTES: usize = 512 * 1024;

/// Largest packet the server's own client accepts: twice the brokers' limit, so that a message a
/// broker let through is never one the server must refuse. (Refusing one drops the connection,
/// and a persistent session hands the same message back at once: one device's oversized
/// message stopped a whole Mosquitto fleet that way.)
pub(crate) const SERVER_MAX_INCOMING_BYTES: usize = 2 * MAX_PACKET_BYTES;

/// Desired states the server may have queued or unacknowledged at once on an external broker,
/// where they share the ingesting connection (`mqtt::MqttHandle::link`), each kept until the
/// broker's PUBACK to be sent again after a reconnection: ~40 MB at the ~4 kB a signed desired
/// state takes. A PUBACK arrives behind every device message the broker sent before it, so
/// while the server reads a backlog these slots are what paces a rollout: at 1,000, with ~30 s
/// of backlog at 100,000 devices on PostgreSQL, a wave went out at ~16 devices a second
/// (docs/BENCHMARKS.md).
pub(crate) const PUBLISH_SLOTS: usize = 10_000;

/// The server's connection options under `client_id`, acknowledging manually.
pub(crate) fn client_options(
    config: &Config,
    address: &BrokerAddress,
    password: &str,
    client_id: &str,
    clean_session: bool,
) -> Result<MqttOptions, MqttError> {
    let mut options = MqttOptions::new(client_id, address.host.clone(), address.port);
    // On an external broker each replica is a user of its own whose name is its client id
    // (`use_username_as_clientid`), so no other client can take its session.
    let user = match config.mqtt.url {
        Some(_) => client_id.to_owned(),
        None => config.mqtt.username.clone(),
    };
    options
        .set_credentials(user, password.to_owned())
        .set_keep_alive(Duration::from_secs(config.mqtt.keep_alive_seconds))
        .set_clean_session(clean_session)
        .set_manual_acks(true)
        .set_max_packet_size(SERVER_MAX_INCOMING_BYTES, MAX_PACKET_BYTES);
    if address.tls {
        options.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca: read_ca(config)?,
            alpn: None,
            client_auth: None,
        }));
    }
    Ok(options)
}

fn read_ca(config: &Config) -> Result<Vec<u8>, MqttError> {
    match &config.mqtt.ca_file {
        Some(path) => std::fs::read(path).map_err(|source| MqttError::CaFile {
            path: path.clone(),
            source,
        }),
        None => Err(MqttError::Url(
            "mqtts:// needs mqtt.ca_file (the PEM of the broker's CA)".into(),
        )),
    }
}

/// TLS for the server's own link to an `mqtts://` broker: the certificates of `mqtt.ca_file`
/// as the only roots.
pub(crate) fn tls_config(
    config: &Config,
    address: &BrokerAddress,
) -> Result<Option<Arc<rustls::ClientConfig>>, MqttError> {
    if !address.tls {
        return Ok(None);
    }
    let pem = read_ca(config)?;
    let path = config.mqtt.ca_file.clone().unwrap_or_default();
    let bad = |e: crate::tls_roots::RootsError| {
        MqttError::Url(format!("mqtt.ca_file {}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    crate::tls_roots::add_pem(&mut roots, &pem).map_err(bad)?;
    let tls = crate::tls_roots::client_config(roots).map_err(bad)?;
    Ok(Some(Arc::new(tls)))
}

/// The topic filters the server subscribes to: shared on an external broker.
pub(crate) fn device_filters(share_group: Option<&str>) -> Vec<String> {
    [Channel::Reported, Channel::Events, Channel::Metrics]
        .into_iter()
        .map(|channel| match share_group {
            Some(group) => topic::server_subscription(group, channel),
            None => format!("{TOPIC_PREFIX}/+/{}", channel.as_str()),
        })
        .collect()
}

/// Where the server's client connects: the external broker, or the embedded one.
pub fn broker_of(config: &Config) -> Result<BrokerAddress, MqttError> {
    match &config.mqtt.url {
        Some(url) => broker_address(url).map_err(MqttError::Url),
        None => Ok(BrokerAddress {
            host: config.mqtt.embedded_listen.ip().to_string(),
            port: config.mqtt.embedded_listen.port(),
            tls: false,
        }),
    }
}
