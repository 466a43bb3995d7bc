//! The agent's link to a fleet server: enrollment, then MQTT (desired state in; reported state,
//! events out) and over-the-air installs through TUF over HTTPS.
//!
//! A desired-state message is only ever a hint. What gets installed is decided by the signed
//! TUF metadata the agent fetches itself: a forged, replayed or reordered desired message can at
//! most name a target that is signed, current and above this device's sequence floor — which the
//! operator released anyway. Events go through the SQLite outbox and are deleted only after the
//! broker's PUBACK, so a broker, network or agent restart loses none; the server stores each
//! (device, message id) once, so re-sends are not double-counted.

use edgefleet_protocol::api::{EnrollRequest, EnrollResponse, ErrorBody};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_protocol::message::{
    self, Desired, Event, EventKind, MetricsBatch, Reported, SCHEMA_VERSION,
};
use edgefleet_protocol::topic::{Channel, Topic};
use edgefleet_protocol::{DeviceId, MessageId, ModelName};
use edgefleet_tuf::client::{self, ClientConfig, ClientLimits};
use edgefleet_tuf::desired;
use rumqttc::{AsyncClient, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::agent::{Agent, ArtifactSource, InstallError, Notice};
use crate::outbox::Outbox;
use crate::reconcile::{self, Step, Triage};
use crate::transport::FleetTransport;

mod enroll;
mod labels;
mod outbound;
mod updates;

pub use enroll::{enroll, link_path, load_link};

/// What enrollment leaves on the device (`<data_dir>/fleet.json`, mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetLink {
    pub device_id: DeviceId,
    pub credential: String,
    pub server_url: String,
    pub mqtt_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("enrollment failed: {0}")]
    Enroll(String),
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("device key {0}")]
    DeviceKey(#[from] crate::device_key::KeyFileError),
    #[error("mqtt url {url:?}: {detail}")]
    MqttUrl { url: String, detail: String },
}

/// Host, port and TLS of the broker URL the server gave at enrollment (the same parser as the
/// server's own `mqtt.url`).
fn broker(url: &str) -> Result<(String, u16, bool), FleetError> {
    let address =
        edgefleet_protocol::broker::BrokerAddress::parse(url).map_err(|e| FleetError::MqttUrl {
            url: url.to_owned(),
            detail: e.to_string(),
        })?;
    Ok((address.host, address.port, address.tls))
}

/// The connection's publishing state. PUBACKs of QoS 1 messages come back in the order the
/// PUBLISHes were sent (MQTT 3.1.1 §4.6), so a FIFO of what was sent tells which outbox row
/// each acknowledgement is for (`None`: a reported-state message, not in the outbox).
#[derive(Debug, Default)]
struct Wire {
    connected: bool,
    awaiting_ack: VecDeque<Option<u64>>,
}

/// A running fleet link.
#[derive(Debug)]
pub struct Fleet {
    agent: Arc<Agent>,
    link: FleetLink,
    outbox: Arc<Outbox>,
    client: AsyncClient,
    wire: Mutex<Wire>,
    wake_publisher: Notify,
    /// The models' rollout ids from the last desired state, for tagging events.
    rollouts: Mutex<BTreeMap<String, String>>,
    /// The newest verified desired state, for the reconcile loop.
    desired: watch::Sender<Option<Desired>>,
    /// The last desired-state message whose signature did not verify, kept (one, bounded by the
    /// message limit) to try again after a TUF refresh: it may be signed by a rotated timestamp
    /// key this device has not learned yet.
    unverified: Mutex<Option<Vec<u8>>>,
    recheck_unverified: Notify,
    /// Seals every message this device publishes; `None` for a device enrolled before keys.
    key: Option<edgefleet_sealed::DeviceKey>,
}

const REPORTED_SEQ: &str = "reported_seq";
const DESIRED_REVISION: &str = "desired_revision";

impl Fleet {
    /// Connects to the broker and starts the link's tasks.
    pub fn start(agent: Arc<Agent>, link: FleetLink) -> Result<Arc<Self>, FleetError> {
        // Agents before the one-copy download kept a second copy of downloads here.
        let _ = std::fs::remove_dir_all(agent.config.data_dir.join("downloads"));
        let outbox_path = agent.config.data_dir.join("outbox.db");
        let outbox = Arc::new(
            Outbox::open(&outbox_path, agent.config.fleet.outbox_max_messages).map_err(|e| {
                FleetError::File {
                    path: outbox_path.clone(),
                    detail: e.to_string(),
                }
            })?,
        );
        let (host, port, tls) = broker(&link.mqtt_url)?;
        let key = crate::device_key::load(&agent.config.data_dir)?;
        if key.is_none() {
            warn!(
                "this device has no key of its own (enrolled before device keys): its messages go unsealed; enroll it again to seal them"
            );
        }
        let id = link.device_id.to_string();
        let mut options = MqttOptions::new(id.clone(), host, port);
        if tls {
            let Some(ca_file) = &agent.config.fleet.ca_file else {
                return Err(FleetError::MqttUrl {
                    url: link.mqtt_url.clone(),
                    detail: "mqtts:// needs fleet.ca_file (the PEM of the broker's CA)".into(),
                });
            };
            let ca = std::fs::read(ca_file).map_err(|e| FleetError::File {
                path: ca_file.clone(),
                detail: e.to_string(),
            })?;
            options.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth: None,
            }));
        }
        options
            .set_credentials(id, link.credential.clone())
            .set_keep_alive(Duration::from_secs(agent.config.fleet.keep_alive_seconds))
            .set_clean_session(true)
            .set_max_packet_size(512 * 1024, 512 * 1024);
        let (client, eventloop) = AsyncClient::new(options, 1000);
        let (desired, desired_rx) = watch::channel::<Option<Desired>>(None);
        let fleet = Arc::new(Self {
            agent,
            link,
            outbox,
            client,
            wire: Mutex::new(Wire::default()),
            wake_publisher: Notify::new(),
            rollouts: Mutex::new(BTreeMap::new()),
            desired,
            unverified: Mutex::new(None),
            recheck_unverified: Notify::new(),
            key,
        });
        let agent = &fleet.agent;
        agent.spawn(fleet.clone().drive(eventloop));
        agent.spawn(fleet.clone().publish_outbox());
        agent.spawn(fleet.clone().relay_notices());
        agent.spawn(fleet.clone().telemetry_loop());
        agent.spawn(fleet.clone().reconcile_loop(desired_rx));
        agent.spawn(fleet.clone().labels_loop());
        Ok(fleet)
    }

    fn topic(&self, channel: Channel) -> String {
        Topic::new(self.link.device_id.clone(), channel).to_string()
    }

    fn is_connected(&self) -> bool {
        self.wire.lock().map(|w| w.connected).unwrap_or(false)
    }

    /// Sends one QoS 1 message if connected; `seq` is its outbox row.
    fn send(&self, channel: Channel, payload: Vec<u8>, retain: bool, seq: Option<u64>) -> bool {
        let Ok(mut wire) = self.wire.lock() else {
            return false;
        };
        if !wire.connected {
            return false;
        }
        let topic = self.topic(channel);
        let payload = match &self.key {
            Some(key) => key.seal(&topic, &payload),
            None => payload,
        };
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .is_err()
        {
            return false;
        }
        wire.awaiting_ack.push_back(seq);
        true
    }

    /// The MQTT event loop: (re)connects with backoff and jitter, subscribes, hands desired state
    /// over, and matches PUBACKs to outbox rows.
    async fn drive(self: Arc<Self>, mut eventloop: rumqttc::EventLoop) {
        let desired_topic = self.topic(Channel::Desired);
        let mut backoff = Duration::from_millis(500);
        let shutdown = self.agent.shutdown.clone();
        let mut disconnecting = false;
        loop {
            let event = tokio::select! {
                event = eventloop.poll() => event,
                // The outbox keeps what was not acknowledged; it goes at the next start.
                () = shutdown.cancelled(), if !disconnecting => {
                    disconnecting = true;
                    if !self.is_connected() || self.client.try_disconnect().is_err() {
                        return;
                    }
                    continue;
                }
            };
            match event {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) if disconnecting => {
                    return;
                }
                Err(_) if disconnecting => return,
                Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(500);
                    if let Ok(mut wire) = self.wire.lock() {
                        *wire = Wire {
                            connected: true,
                            ..Wire::default()
                        };
                    }
                    self.outbox_connection_ended();
                    info!(broker = %self.link.mqtt_url, "connected to the fleet");
                    let _ = self
                        .client
                        .try_subscribe(desired_topic.clone(), QoS::AtLeastOnce);
                    self.publish_reported();
                    self.wake_publisher.notify_one();
                }
                Ok(rumqttc::Event::Incoming(Packet::Publish(p))) if p.topic == desired_topic => {
                    if p.payload.is_empty() {
                        continue; // cleared (device removed)
                    }
                    self.take_desired(&p.payload);
                }
                Ok(rumqttc::Event::Incoming(Packet::PubAck(_))) => {
                    let acked = self
                        .wire
                        .lock()
                        .ok()
                        .and_then(|mut w| w.awaiting_ack.pop_front())
                        .flatten();
                    if let Some(seq) = acked
                        && let Err(e) = self.outbox.acknowledge(seq)
                    {
                        warn!(error = %e, "cannot delete an acknowledged message");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let was = self
                        .wire
                        .lock()
                        .map(|mut w| std::mem::take(&mut *w).connected)
                        .unwrap_or(false);
                    if was {
                        warn!(error = %e, "lost the fleet broker; serving goes on, reconnecting");
                        self.outbox_connection_ended();
                    }
                    // Full jitter: a fleet that lost its broker does not come back in lockstep.
                    let wait = backoff.mul_f64(0.5 + jitter());
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Verifies a desired-state message against the trusted root and hands it to the reconcile
    /// loop. A message that does not verify moves nothing; one whose signature fails is kept to
    /// be tried again after a TUF refresh (the timestamp key may have rotated).
    fn take_desired(&self, bytes: &[u8]) {
        let verified = updates::trusted_root(&self.agent.config).and_then(|root| {
            desired::verify(bytes, &root, &self.link.device_id).map_err(|e| e.to_string())
        });
        match verified {
            Ok(d) => self.offer_desired(d),
            Err(why) => {
                self.agent.metrics.desired_refused.inc();
                warn!(why, "desired state refused: it moves nothing");
                if bytes.len() <= desired::MAX_SIGNED_DESIRED_BYTES
                    && let Ok(mut slot) = self.unverified.lock()
                {
                    *slot = Some(bytes.to_vec());
                    self.recheck_unverified.notify_one();
                }
            }
        }
    }

    /// Hands a verified desired state to the reconcile loop unless it already holds a newer one
    /// (a replayed genuine message must not displace one not yet acted on).
    fn offer_desired(&self, d: Desired) {
        self.desired.send_if_modified(|held| {
            if held.as_ref().is_some_and(|h| h.revision > d.revision) {
                return false;
            }
            *held = Some(d);
            true
        });
    }

    fn outbox_connection_ended(&self) {
        if let Err(e) = self.outbox.connection_ended() {
            warn!(error = %e, "cannot put unacknowledged messages back in the outbox queue");
        }
    }
}

/// No retry pending: a wait that never ends in practice.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes
}

/// A uniform number in [0, 1) for backoff jitter.
fn jitter() -> f64 {
    let b = random_bytes();
    f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_or_say_why() {
        assert_eq!(
            broker("mqtt://127.0.0.1:1883").unwrap(),
            ("127.0.0.1".into(), 1883, false)
        );
        assert_eq!(broker("mqtts://h:8883").unwrap(), ("h".into(), 8883, true));
        assert_eq!(broker("mqtt://h").unwrap(), ("h".into(), 1883, false));
        assert!(broker("tcp://h:1").is_err());
        assert!(broker("mqtt://h:x").is_err());
    }
}
