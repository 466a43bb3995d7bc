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

pub fn link_path(data_dir: &Path) -> PathBuf {
    data_dir.join("fleet.json")
}

/// The saved link, if this device was enrolled.
pub fn load_link(data_dir: &Path) -> Result<Option<FleetLink>, FleetError> {
    let path = link_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| FleetError::File {
                path,
                detail: format!("not a fleet link ({e}); enroll again"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FleetError::File {
            path,
            detail: e.to_string(),
        }),
    }
}

/// Trades a one-time enrollment token for this device's credential and saves the link.
pub async fn enroll(
    data_dir: &Path,
    device_id: &DeviceId,
    server_url: &str,
    token: &str,
) -> Result<FleetLink, FleetError> {
    let server_url = server_url.trim_end_matches('/');
    // A server (or something posing as one) that answers slowly or endlessly must not hang
    // enrollment: the whole exchange has a deadline, and the answer is small.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(ENROLL_TIMEOUT)
        .build()
        .map_err(|e| FleetError::Enroll(format!("HTTP client: {e}")))?;
    let key = crate::device_key::prepare(data_dir)?;
    let response = client
        .post(format!("{server_url}/api/v1/enroll"))
        .json(&EnrollRequest {
            device_id: device_id.to_string(),
            token: token.trim().to_owned(),
            public_key: Some(key.public_key().to_hex()),
        })
        .send()
        .await
        .map_err(|e| FleetError::Enroll(format!("cannot reach {server_url}: {e}")))?;
    let status = response.status();
    let mut response = response;
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FleetError::Enroll(format!("reading {server_url}'s answer: {e}")))?
    {
        if bytes.len() + chunk.len() > MAX_ENROLL_ANSWER_BYTES {
            return Err(FleetError::Enroll(format!(
                "{server_url}'s answer is over {MAX_ENROLL_ANSWER_BYTES} bytes; not an enrollment"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let why = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| "no details".into());
        return Err(FleetError::Enroll(format!(
            "{server_url} answered {status}: {why}"
        )));
    }
    let answer: EnrollResponse = serde_json::from_slice(&bytes).map_err(|e| {
        FleetError::Enroll(format!("{server_url}'s answer is not an enrollment: {e}"))
    })?;
    if answer.device_id != *device_id {
        return Err(FleetError::Enroll(format!(
            "{server_url} enrolled {} instead of {device_id}",
            answer.device_id
        )));
    }
    let link = FleetLink {
        device_id: device_id.clone(),
        credential: answer.credential,
        server_url: answer.server_url,
        mqtt_url: answer.mqtt_url,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| FleetError::File {
        path: data_dir.to_path_buf(),
        detail: e.to_string(),
    })?;
    crate::device_key::commit(data_dir)?;
    let path = link_path(data_dir);
    edgefleet_files::write_private(&path, &serde_json::to_vec_pretty(&link).unwrap_or_default())
        .map_err(|e| FleetError::File {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    Ok(link)
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
        let verified = trusted_root(&self.agent.config).and_then(|root| {
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

    /// Sends outbox rows not yet sent on this connection, oldest first.
    async fn publish_outbox(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.wake_publisher.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = self.agent.shutdown.cancelled() => return,
            }
            if !self.is_connected() {
                continue;
            }
            let outbox = self.outbox.clone();
            let pending = tokio::task::spawn_blocking(move || outbox.claim_for_sending(200)).await;
            let Ok(Ok(pending)) = pending else { continue };
            let full = pending.len() == 200;
            for q in pending {
                let channel = if q.channel == "metrics" {
                    Channel::Metrics
                } else {
                    Channel::Events
                };
                if !self.send(channel, q.payload, false, Some(q.seq)) {
                    if let Err(e) = self.outbox.unclaim_from(q.seq) {
                        warn!(error = %e, "cannot put unsent messages back in the outbox queue");
                    }
                    break;
                }
            }
            if full {
                self.wake_publisher.notify_one();
            }
        }
    }

    /// Turns the agent's install steps into events, and re-reports state after each.
    async fn relay_notices(self: Arc<Self>) {
        let mut notices = self.agent.notices.subscribe();
        loop {
            let notice = tokio::select! {
                notice = notices.recv() => notice,
                () = self.agent.shutdown.cancelled() => return,
            };
            match notice {
                Ok(notice) => {
                    self.emit(notice).await;
                    self.publish_reported();
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "install notices overflowed; reported state still follows"
                    );
                    self.publish_reported();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Every telemetry window, queues a metrics batch in the outbox (it survives restarts and
    /// outages there; when full, the oldest batches go first and the next batch says how many).
    async fn telemetry_loop(self: Arc<Self>) {
        let every = Duration::from_secs(self.agent.config.fleet.telemetry_seconds);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // After the process was stopped or the device slept, one batch covers the gap: a burst
        // of empty windows would only push real batches out of a full outbox.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut window_start = self.agent.now_unix();
        loop {
            // A stop closes the window early: its figures go in the outbox, not down with the
            // process.
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                () = self.agent.shutdown.cancelled() => true,
            };
            let window_end = self.agent.now_unix();
            let models = self.agent.telemetry.take();
            if stopping && models.is_empty() {
                return;
            }
            let process = crate::telemetry::process_stats();
            let metrics = &self.agent.metrics;
            metrics.process_cpu_seconds.set(process.cpu_seconds);
            metrics.process_resident_bytes.set(process.rss_bytes as i64);
            for m in &models {
                for (feature, psi) in &m.drift_psi {
                    metrics
                        .drift_psi
                        .get_or_create(&crate::metrics::FeatureLabels {
                            model: m.model.to_string(),
                            version: m.version.to_string(),
                            feature: feature.clone(),
                        })
                        .set(*psi);
                }
            }
            let device = self.link.device_id.clone();
            let outbox = self.outbox.clone();
            let queued = tokio::task::spawn_blocking(move || -> Result<(), String> {
                let seq = outbox.next_seq().map_err(|e| e.to_string())?;
                let dropped = outbox.take_dropped().map_err(|e| e.to_string())?;
                let batch = MetricsBatch {
                    schema: SCHEMA_VERSION,
                    id: MessageId::from_random(random_bytes()),
                    device,
                    seq,
                    window_start_unix: window_start,
                    window_end_unix: window_end,
                    dropped_batches: dropped,
                    process,
                    models,
                };
                let bytes = message::encode(&batch).map_err(|e| e.to_string())?;
                outbox
                    .push_carrying(seq, "metrics", &bytes, dropped)
                    .map_err(|e| e.to_string())
            })
            .await;
            window_start = window_end;
            match queued {
                Ok(Ok(())) => {
                    self.agent.metrics.telemetry_batches.inc();
                    self.wake_publisher.notify_one();
                }
                Ok(Err(e)) => warn!(error = %e, "cannot queue a telemetry batch"),
                Err(e) => warn!(error = %e, "cannot queue a telemetry batch"),
            }
            if stopping {
                return;
            }
        }
    }

    /// Queues an event in the outbox (it survives restarts there) and wakes the publisher.
    pub async fn emit(&self, notice: Notice) {
        let Ok(model) = ModelName::new(notice.model.clone()) else {
            return;
        };
        let rollout = self
            .rollouts
            .lock()
            .ok()
            .and_then(|r| r.get(&notice.model).cloned());
        let device = self.link.device_id.clone();
        let outbox = self.outbox.clone();
        let at_unix = self.agent.now_unix();
        let queued = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let seq = outbox.next_seq().map_err(|e| e.to_string())?;
            let event = Event {
                schema: SCHEMA_VERSION,
                id: MessageId::from_random(random_bytes()),
                device,
                seq,
                at_unix,
                kind: notice.kind,
                model,
                target: notice.target,
                rollout,
                detail: notice.detail,
            };
            let bytes = message::encode(&event).map_err(|e| e.to_string())?;
            outbox
                .push(seq, "events", &bytes)
                .map_err(|e| e.to_string())
        })
        .await;
        match queued {
            Ok(Ok(())) => self.wake_publisher.notify_one(),
            Ok(Err(e)) => warn!(error = %e, "cannot queue an event"),
            Err(e) => warn!(error = %e, "cannot queue an event"),
        }
    }

    /// Publishes what really runs, retained, if connected (also after a local rollback).
    fn publish_reported(&self) {
        if !self.is_connected() {
            return; // sent on the next connection
        }
        let build = || -> Result<Vec<u8>, String> {
            let models = self.agent.reported_models().map_err(|e| e.to_string())?;
            let reported = Reported {
                schema: SCHEMA_VERSION,
                id: MessageId::from_random(random_bytes()),
                device: self.link.device_id.clone(),
                seq: self.outbox.bump(REPORTED_SEQ).map_err(|e| e.to_string())?,
                at_unix: self.agent.now_unix(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                desired_revision: self
                    .outbox
                    .counter(DESIRED_REVISION)
                    .map_err(|e| e.to_string())?,
                models,
            };
            message::encode(&reported).map_err(|e| e.to_string())
        };
        match build() {
            Ok(bytes) => {
                self.send(Channel::Reported, bytes, true, None);
            }
            Err(e) => warn!(error = %e, "cannot build the reported state"),
        }
    }

    /// Acts on the newest desired state; retries failed downloads with backoff and jitter.
    async fn reconcile_loop(self: Arc<Self>, mut desired: watch::Receiver<Option<Desired>>) {
        let mut backoff = Duration::from_secs(1);
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut last_recheck: Option<tokio::time::Instant> = None;
        let mut recheck_at: Option<tokio::time::Instant> = None;
        loop {
            let sleep_until = retry_at.unwrap_or_else(|| tokio::time::Instant::now() + FAR);
            let recheck_until = recheck_at.unwrap_or_else(|| tokio::time::Instant::now() + FAR);
            tokio::select! {
                () = self.agent.shutdown.cancelled() => return,
                changed = desired.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(sleep_until), if retry_at.is_some() => {}
                () = self.recheck_unverified.notified() => {
                    // At most one refresh a minute on behalf of messages that did not verify, so
                    // a stream of forgeries costs the server nothing; one asked for sooner is
                    // put off, not dropped (a second key rotation within the minute).
                    match last_recheck {
                        Some(t) if t.elapsed() < RECHECK_EVERY => {
                            recheck_at = Some(t + RECHECK_EVERY);
                        }
                        _ => {
                            last_recheck = Some(tokio::time::Instant::now());
                            self.recheck_after_refresh().await;
                        }
                    }
                    continue;
                }
                () = tokio::time::sleep_until(recheck_until), if recheck_at.is_some() => {
                    recheck_at = None;
                    last_recheck = Some(tokio::time::Instant::now());
                    self.recheck_after_refresh().await;
                    continue;
                }
            }
            // After a retry timer, the newest desired state (the same one, or a newer one).
            let Some(wanted) = desired.borrow_and_update().clone() else {
                continue;
            };
            match self.reconcile(&wanted).await {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    retry_at = None;
                }
                Err(e) => {
                    let wait = backoff.mul_f64(0.5 + jitter());
                    warn!(error = %e, retry_in_s = wait.as_secs_f64(), "update not possible now; retrying");
                    retry_at = Some(tokio::time::Instant::now() + wait);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// Refreshes TUF (which follows root rotations) and verifies the kept unverified desired
    /// state again.
    async fn recheck_after_refresh(&self) {
        let Some(bytes) = self.unverified.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        if let Err(e) = self.refresh_tuf().await {
            warn!(error = %e, "TUF refresh for an unverified desired state failed");
            return;
        }
        let verified = trusted_root(&self.agent.config).and_then(|root| {
            desired::verify(&bytes, &root, &self.link.device_id).map_err(|e| e.to_string())
        });
        match verified {
            Ok(d) => {
                info!(
                    revision = d.revision,
                    "desired state verified after learning rotated keys"
                );
                self.offer_desired(d);
            }
            Err(why) => warn!(why, "desired state still refused after a TUF refresh"),
        }
    }

    /// Brings the device to `wanted`. `Err` only for transient trouble worth a retry (network,
    /// server); a refused target is final for that revision and reported as an event.
    async fn reconcile(&self, wanted: &Desired) -> Result<(), String> {
        let acted = self
            .outbox
            .counter(DESIRED_REVISION)
            .map_err(|e| e.to_string())?;
        let running = self.agent.reported_models().map_err(|e| e.to_string())?;
        let (todo, first_time, revision) = match reconcile::triage(wanted, acted, &running) {
            Triage::Stale { acted } => {
                warn!(
                    revision = wanted.revision,
                    acted,
                    "desired state older than one already acted on: ignored (replayed or reordered)"
                );
                return Ok(());
            }
            Triage::Settled { advance_to } => {
                self.remember_rollouts(wanted);
                if let Some(revision) = advance_to {
                    self.outbox
                        .set_counter(DESIRED_REVISION, revision)
                        .map_err(|e| e.to_string())?;
                }
                self.publish_reported();
                return Ok(());
            }
            Triage::Needs {
                todo,
                first_time,
                revision,
            } => (todo, first_time, revision),
        };
        self.remember_rollouts(wanted);
        let mut trusted = self.refresh_tuf().await?;
        // Resolved before planning: a target of a delegated role loads that role's metadata.
        let mut resolved = std::collections::HashMap::new();
        for wanted in &todo {
            let target = trusted
                .model_target(&wanted.target)
                .await
                .map_err(|e| e.to_string());
            resolved.insert(wanted.target.clone(), target);
        }
        let steps = reconcile::plan(
            &todo,
            first_time,
            |name| {
                resolved
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| Err(name.to_string()))
            },
            self,
        );
        for step in steps {
            let (m, target) = match step {
                Step::Refuse { wanted, why } => {
                    self.refuse(&wanted, why).await;
                    continue;
                }
                Step::Install { wanted, target } => (wanted, target),
            };
            let mut target = target;
            let staging = self.agent.config.data_dir.join("store/staging");
            match trusted.fetch_release_files(&mut target, &staging).await {
                Ok(()) => {}
                // Fetched and matching its signed hash, yet not valid for the release: the
                // operator signed a bad file, and no retry will mend it.
                Err(e @ edgefleet_tuf::Error::Target { .. }) => {
                    self.refuse(&m, e.to_string()).await;
                    continue;
                }
                Err(e) => return Err(format!("release files of {}: {e}", target.name)),
            }
            let source = if self.agent.has_artifact_of(&target) {
                self.emit(Notice {
                    model: m.model.to_string(),
                    kind: EventKind::Verified,
                    target: Some(target.name.clone()),
                    detail: Some(
                        "the same model file is already stored: not downloaded again".into(),
                    ),
                })
                .await;
                ArtifactSource::Stored
            } else {
                ArtifactSource::Downloaded(self.download(&m, &target, &trusted).await?)
            };
            match self.agent.install(&target, source).await {
                Ok(report) => info!(?report, "over-the-air install"),
                Err(InstallError::Rejected { .. }) => {
                    self.remember_failed(m.model.as_str(), &reconcile::candidate_key(&target));
                }
                Err(e @ (InstallError::Verify(_) | InstallError::TooLarge { .. })) => {
                    self.refuse(&m, e.to_string()).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        // The message is genuine (its signature verified): once every step ran, this revision
        // is acted on, refusals included (they were reported).
        if first_time {
            self.outbox
                .set_counter(DESIRED_REVISION, revision)
                .map_err(|e| e.to_string())?;
        }
        self.publish_reported();
        Ok(())
    }

    fn remember_rollouts(&self, wanted: &Desired) {
        if let Ok(mut r) = self.rollouts.lock() {
            for m in &wanted.models {
                match &m.rollout {
                    Some(id) => r.insert(m.model.to_string(), id.clone()),
                    None => r.remove(m.model.as_str()),
                };
            }
        }
    }

    fn remember_failed(&self, model: &str, version_key: &str) {
        let _ = self.outbox.bump(&format!("failed:{model}:{version_key}"));
    }

    async fn refuse(&self, m: &edgefleet_protocol::message::DesiredModel, why: String) {
        warn!(model = %m.model, target = %m.target, why, "desired target refused");
        self.emit(Notice {
            model: m.model.to_string(),
            kind: EventKind::Rejected,
            target: Some(m.target.clone()),
            detail: Some(format!("refused: {why}")),
        })
        .await;
    }

    /// Downloads `target` into the store's staging directory, verified against its signed
    /// length and sha256, and reports each step.
    async fn download(
        &self,
        m: &edgefleet_protocol::message::DesiredModel,
        target: &client::ModelTarget,
        trusted: &client::TrustedRepo,
    ) -> Result<client::VerifiedArtifact, String> {
        self.emit(Notice {
            model: m.model.to_string(),
            kind: EventKind::Downloading,
            target: Some(target.name.clone()),
            detail: None,
        })
        .await;
        let staging = self.agent.config.data_dir.join("store/staging");
        let artifact = trusted
            .fetch(target, &staging)
            .await
            .map_err(|e| format!("download of {}: {e}", target.name))?;
        self.emit(Notice {
            model: m.model.to_string(),
            kind: EventKind::Verified,
            target: Some(target.name.clone()),
            detail: Some(format!(
                "{} bytes, sha256 and length as signed",
                artifact.length()
            )),
        })
        .await;
        Ok(artifact)
    }

    async fn refresh_tuf(&self) -> Result<client::TrustedRepo, String> {
        let config = &self.agent.config;
        let tuf_dir = config.data_dir.join("tuf");
        if !tuf_dir.join("root.json").exists() {
            let root = std::fs::read(&config.trusted_root_path)
                .map_err(|e| format!("{}: {e}", config.trusted_root_path.display()))?;
            client::init(&tuf_dir, &root).map_err(|e| e.to_string())?;
        }
        let base = self.link.server_url.trim_end_matches('/');
        let url = |sub: &str| {
            url::Url::parse(&format!("{base}/tuf/{sub}/")).map_err(|e| format!("{base}: {e}"))
        };
        let client_config = ClientConfig {
            metadata_dir: tuf_dir,
            metadata_url: url("metadata")?,
            targets_url: url("targets")?,
            limits: ClientLimits {
                max_artifact_bytes: config.limits.max_artifact_bytes,
                max_release_file_bytes: config.limits.max_release_file_bytes,
                min_bytes_per_second: config.fleet.min_download_bytes_per_second,
                ..ClientLimits::default()
            },
        };
        let transport =
            FleetTransport::new(self.link.credential.clone()).map_err(|e| e.to_string())?;
        client::refresh(&client_config, transport.clone())
            .await
            .map(|trusted| trusted.with_resume(Arc::new(transport)))
            .map_err(|e| format!("TUF refresh from {base}: {e}"))
    }
}

impl reconcile::Local for Fleet {
    fn floor(&self, model: &ModelName) -> u64 {
        // An unreadable store counts as the highest floor: refuse rather than risk a rollback.
        match self.agent.store.record(model.as_str()) {
            Ok(record) => record.map_or(0, |r| r.floor),
            Err(e) => {
                warn!(error = %e, %model, "cannot read the model's floor; refusing updates to it");
                u64::MAX
            }
        }
    }

    fn already_failed(&self, model: &ModelName, version_key: &str) -> bool {
        self.outbox
            .counter(&format!("failed:{model}:{version_key}"))
            .is_ok_and(|n| n > 0)
    }

    fn max_artifact_bytes(&self) -> u64 {
        self.agent.config.limits.max_artifact_bytes
    }

    fn max_release_file_bytes(&self) -> u64 {
        self.agent.config.limits.max_release_file_bytes
    }
}

/// The root this device trusts now: the newest one TUF verified (`<data_dir>/tuf/root.json`), or
/// the one it shipped with before its first refresh.
fn trusted_root(config: &crate::config::Config) -> Result<tough::schema::Root, String> {
    let refreshed = config.data_dir.join("tuf/root.json");
    let path = if refreshed.exists() {
        refreshed
    } else {
        config.trusted_root_path.clone()
    };
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let root: tough::schema::Signed<tough::schema::Root> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a TUF root: {e}", path.display()))?;
    Ok(root.signed)
}

/// An enrollment answer is a few hundred bytes.
const MAX_ENROLL_ANSWER_BYTES: usize = 64 * 1024;

/// The whole enrollment exchange, connection to last byte.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

/// No retry pending: a wait that never ends in practice.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// How often a desired state that did not verify may trigger a TUF refresh.
const RECHECK_EVERY: Duration = Duration::from_secs(60);

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
