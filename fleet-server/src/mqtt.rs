//! The server's side of MQTT: an embedded broker (rumqttd) for pilots or any external broker, and
//! the server's own client that publishes each device's retained desired state and consumes
//! reported / events / metrics through a shared subscription. Connection options live in
//! [`crate::broker`], what a device message does to the store in [`crate::ingest`], and
//! Mosquitto's files in [`crate::mosquitto`].
//!
//! The store, not the broker, is the source of truth: after every (re)connection the server
//! re-publishes every device's desired state, so a broker restart (the embedded one keeps nothing
//! on disk) loses nothing. Device messages are acknowledged only after they are stored.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgefleet_protocol::DeviceId;
use edgefleet_protocol::topic::{Channel, Topic};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rumqttc::{AsyncClient, EventLoop, Packet, QoS};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::secret_hash;
use crate::broker::{MAX_PACKET_BYTES, client_options, device_filters};
pub use crate::broker::{MqttError, broker_of};
use crate::config::{BrokerAddress, Config};
use crate::device_keys::DeviceKeys;
use crate::ingest::{Ingested, ingest};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tufhost::TufHost;

/// The server's connection to the broker.
#[derive(Debug, Clone)]
pub struct MqttHandle {
    client: AsyncClient,
    connected: Arc<AtomicBool>,
    republish: Arc<Notify>,
    /// On the embedded broker: what this server last published on each desired topic.
    guard: Option<Arc<DesiredGuard>>,
}

impl MqttHandle {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Has every device's desired state signed afresh and re-published (after an online key
    /// rotation, so retained messages carry the key devices' new root lists).
    pub fn republish_all(&self) {
        self.republish.notify_one();
    }

    /// Publishes a desired state, signed ([`crate::tufhost::TufHost::sign_desired`]), retained
    /// at QoS 1 on the device's desired topic.
    pub async fn publish_desired(
        &self,
        device: &DeviceId,
        signed: Vec<u8>,
    ) -> Result<(), MqttError> {
        self.publish_retained(device, signed).await
    }

    /// Clears the retained desired state of a removed device.
    pub async fn clear_desired(&self, device: &DeviceId) -> Result<(), MqttError> {
        self.publish_retained(device, Vec::new()).await
    }

    async fn publish_retained(&self, device: &DeviceId, bytes: Vec<u8>) -> Result<(), MqttError> {
        let topic = Topic::new(device.clone(), Channel::Desired).to_string();
        if let Some(guard) = &self.guard {
            guard.record(device, &bytes);
        }
        self.client
            .publish(topic, QoS::AtLeastOnce, true, bytes)
            .await
            .map_err(|e| MqttError::Publish(e.to_string()))
    }
}

/// The digest of the last desired state this server published per device. On the embedded broker
/// (no topic rights) a device can publish — and retain — on another device's desired topic: a
/// forgery or a replay the victim refuses, or an empty message that wipes its retained state.
/// Either way a victim that reconnects would find nothing genuine retained. The server sees every
/// desired message there (its own come back to it), so one it did not write is noticed and the
/// genuine state restored ([`desired_restorer`]).
#[derive(Debug, Default)]
struct DesiredGuard {
    published: std::sync::Mutex<HashMap<String, Published>>,
}

/// What the server published on one desired topic: the last message (what should be retained)
/// and those whose echo has not come back yet, oldest first.
#[derive(Debug, Default)]
struct Published {
    last: [u8; 32],
    awaiting_echo: VecDeque<[u8; 32]>,
}

/// More publications than this for one device before their echoes return: the oldest is
/// forgotten (and its late echo restores the last, harmlessly).
const MAX_AWAITING_ECHO: usize = 16;

impl DesiredGuard {
    fn digest(bytes: &[u8]) -> [u8; 32] {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    fn record(&self, device: &DeviceId, bytes: &[u8]) {
        let digest = Self::digest(bytes);
        if let Ok(mut published) = self.published.lock() {
            let entry = published.entry(device.to_string()).or_default();
            entry.last = digest;
            entry.awaiting_echo.push_back(digest);
            if entry.awaiting_echo.len() > MAX_AWAITING_ECHO {
                entry.awaiting_echo.pop_front();
            }
        }
    }

    /// Whether `bytes` seen on `device`'s desired topic is this server's: the echo of one of its
    /// publications, or what it last published (handed over again by a sweep). With nothing
    /// published, only an empty message is (nothing to restore either).
    fn is_ours(&self, device: &DeviceId, bytes: &[u8]) -> bool {
        let Ok(mut published) = self.published.lock() else {
            return true;
        };
        let Some(entry) = published.get_mut(device.as_str()) else {
            return bytes.is_empty();
        };
        let digest = Self::digest(bytes);
        if let Some(at) = entry.awaiting_echo.iter().position(|d| *d == digest) {
            entry.awaiting_echo.drain(..=at);
            if entry.awaiting_echo.is_empty() {
                entry.awaiting_echo = VecDeque::new(); // a fleet of idle entries holds no buffers
            }
            return true;
        }
        entry.last == digest
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    #[test]
    fn echoes_and_the_last_state_are_ours_and_anything_else_is_restored_once() {
        let guard = DesiredGuard::default();
        let dev = DeviceId::new("dev-01").unwrap();
        assert!(
            guard.is_ours(&dev, b""),
            "nothing published, nothing to restore"
        );
        assert!(!guard.is_ours(&dev, b"forged"));
        guard.record(&dev, b"d1");
        guard.record(&dev, b"d2");
        // Echoes in order, then a sweep handing the retained one over again.
        assert!(guard.is_ours(&dev, b"d1"));
        assert!(guard.is_ours(&dev, b"d2"));
        assert!(guard.is_ours(&dev, b"d2"));
        // A replay of an older genuine message, a forgery, a wipe: not ours.
        assert!(!guard.is_ours(&dev, b"d1"));
        assert!(!guard.is_ours(&dev, b"forged"));
        assert!(!guard.is_ours(&dev, b""));
        // Restoring publishes again while earlier echoes are still coming: no ping-pong.
        guard.record(&dev, b"d3");
        guard.record(&dev, b"d3-restored");
        assert!(guard.is_ours(&dev, b"d3"));
        assert!(guard.is_ours(&dev, b"d3-restored"));
        assert!(guard.is_ours(&dev, b"d3-restored"));
    }
}

/// What the broker's authentication asks: is this a known principal?
pub type Authenticator = Arc<
    dyn Fn(
            String,
            String,
            String,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

/// Authentication for the embedded broker: the server's own credential, or an enrolled device
/// whose client id, user name and device id agree and whose password is its credential.
///
/// rumqttd has no per-topic ACLs, so on the embedded broker an enrolled device could publish on
/// another device's topics; the server still checks every message's device against its topic.
/// Production fleets use Mosquitto with `fleet-server mosquitto-config` (docs/SERVER.md).
pub fn embedded_authenticator(
    store: Arc<dyn Store>,
    server_user: String,
    server_password: String,
) -> Authenticator {
    Arc::new(move |client_id, username, password| {
        let store = store.clone();
        let server_ok = username == server_user && password == server_password;
        Box::pin(async move {
            if server_ok {
                return true;
            }
            let Ok(device) = DeviceId::new(username.clone()) else {
                return false;
            };
            if client_id != username {
                return false;
            }
            matches!(
                store.device_by_credential(&secret_hash(&password)).await,
                Ok(Some(found)) if found == device
            )
        })
    })
}

/// rumqttd has no cap on connections that have not sent CONNECT yet; it closes each after this
/// deadline and accepts at most one connection per [`EMBEDDED_ACCEPT_INTERVAL_MS`]. Together they
/// bound the files silent connections can hold in this process to
/// [`EMBEDDED_HALF_OPEN_MAX`], which the HTTP listener's budget leaves room for: a flood on the
/// broker's port cannot take the descriptors HTTP, the database and the store need.
const EMBEDDED_CONNECT_DEADLINE_MS: u16 = 10_000;
const EMBEDDED_ACCEPT_INTERVAL_MS: u64 = 2;
pub const EMBEDDED_HALF_OPEN_MAX: usize =
    (EMBEDDED_CONNECT_DEADLINE_MS as u64 / EMBEDDED_ACCEPT_INTERVAL_MS) as usize;

/// Starts rumqttd on `listen` in its own threads.
pub async fn start_embedded_broker(
    listen: SocketAddr,
    authenticator: Authenticator,
) -> Result<(), MqttError> {
    let mut connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: EMBEDDED_CONNECT_DEADLINE_MS,
        max_payload_size: MAX_PACKET_BYTES,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    connections.set_auth_handler(move |client_id, user, pass| authenticator(client_id, user, pass));
    let server = rumqttd::ServerSettings {
        name: "edgefleet-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: EMBEDDED_ACCEPT_INTERVAL_MS,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 100_000,
            max_outgoing_packet_count: 1000,
            // What rumqttd keeps of each subscription's traffic, delivered or not: a ring of
            // 4 x 16 MiB (it was 10 x 100 MiB: a device could hold a gigabyte of the server's
            // memory with junk). Messages are at most 512 KiB, so the server, reading as they
            // come, is never a ring behind.
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: rumqttd::Strategy::default(),
        },
        v4: Some(HashMap::from([("edgefleet".to_string(), server)])),
        ..rumqttd::Config::default()
    };
    // rumqttd reports a taken port only in its log; find out here, with a clear message.
    drop(
        std::net::TcpListener::bind(listen).map_err(|e| MqttError::Embedded {
            listen,
            detail: format!("{e} (set mqtt.embedded_listen to a free port)"),
        })?,
    );
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            let result = broker.start();
            let _ = tx.send(result.map_err(|e| e.to_string()));
        })
        .map_err(|e| MqttError::Embedded {
            listen,
            detail: e.to_string(),
        })?;
    // The server's client retries until the broker accepts; only an early exit is an error.
    // (Probing the port would make rumqttd log an aborted connection.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    match rx.try_recv() {
        Ok(result) => Err(MqttError::Embedded {
            listen,
            detail: result.err().unwrap_or_else(|| "it stopped".into()),
        }),
        Err(_) => Ok(()),
    }
}

/// Connects the server's client. Returns the handle and the event loop to drive with [`run`].
///
/// On an external broker the session is persistent (`client_id` must then be stable and unique
/// to this server): QoS 1 device messages published while the server is away or slow queue in
/// the broker instead of being dropped. The embedded broker lives and dies with this process, so
/// there a session would outlive nothing.
pub fn connect(
    config: &Config,
    address: &BrokerAddress,
    password: &str,
    client_id: &str,
) -> Result<(MqttHandle, EventLoop), MqttError> {
    let options = client_options(
        config,
        address,
        password,
        client_id,
        config.mqtt.url.is_none(),
    )?;
    let (client, eventloop) = AsyncClient::new(options, 10_000);
    Ok((
        MqttHandle {
            client,
            connected: Arc::new(AtomicBool::new(false)),
            republish: Arc::new(Notify::new()),
            guard: config
                .mqtt
                .url
                .is_none()
                .then(|| Arc::new(DesiredGuard::default())),
        },
        eventloop,
    ))
}

/// What the server subscribes to. On an external broker, the device channels (shared). On the
/// embedded broker, everything: rumqttd has no topic rights, so a device may publish — and
/// retain, which rumqttd keeps forever — anywhere; the server sees it all and clears what it
/// refuses (see [`ingester`]).
fn subscriptions(share_group: Option<&str>) -> Vec<String> {
    match share_group {
        Some(_) => device_filters(share_group),
        None => vec![SWEEP_FILTERS[0].into()],
    }
}

/// What the server's broker client works with.
#[derive(Debug)]
pub struct ClientParts {
    pub store: Arc<dyn Store>,
    pub tuf: Arc<TufHost>,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<DeviceKeys>,
    /// `None` on the embedded broker: only this process reads it, and rumqttd 0.20 delivers
    /// only the first message per topic to a shared subscription (found by `tests/server.rs`),
    /// so a plain subscription is both sufficient and correct there.
    pub share_group: Option<String>,
    pub sessions: Option<crate::sessions::Sessions>,
    /// `mqtt.retained_sweep_seconds` (used on the embedded broker only).
    pub retained_sweep: Duration,
    /// Cancelled at shutdown: the client stores and acknowledges the messages it holds, then
    /// disconnects; what arrives after is left to the broker to deliver again.
    pub shutdown: CancellationToken,
    /// Stamps each device message's arrival.
    pub clock: Arc<dyn edgefleet_clock::Clock>,
}

/// Drives the client until shutdown: subscribes after every connection, re-publishes desired
/// state, stores device messages and only then acknowledges them. Returns once its helper tasks
/// have all finished.
pub async fn run(handle: MqttHandle, mut eventloop: EventLoop, parts: ClientParts) {
    let ClientParts {
        store,
        tuf,
        metrics,
        keys,
        share_group,
        sessions,
        retained_sweep,
        shutdown,
        clock,
    } = parts;
    let mut helpers = tokio::task::JoinSet::new();
    if share_group.is_none() {
        helpers.spawn(retained_sweeper(
            handle.clone(),
            retained_sweep,
            shutdown.clone(),
        ));
    }
    let (restore, to_restore) = tokio::sync::mpsc::channel(RESTORE_QUEUE);
    if handle.guard.is_some() {
        helpers.spawn(desired_restorer(
            handle.clone(),
            store.clone(),
            tuf.clone(),
            metrics.clone(),
            to_restore,
            shutdown.clone(),
        ));
    }
    let republish = handle.republish.clone();
    helpers.spawn(republisher(
        handle.clone(),
        store.clone(),
        tuf.clone(),
        metrics.clone(),
        republish.clone(),
        shutdown.clone(),
    ));
    let (to_ingest, from_loop) = tokio::sync::mpsc::channel(INGEST_WINDOW);
    helpers.spawn(ingester(
        Ingester {
            handle: handle.clone(),
            store,
            metrics: metrics.clone(),
            keys,
            clock,
            embedded: handle.guard.is_some().then_some(restore),
            shutdown: shutdown.clone(),
        },
        from_loop,
    ));
    poll_until_disconnected(
        &handle,
        &mut eventloop,
        &to_ingest,
        &share_group,
        &sessions,
        &metrics,
        &shutdown,
    )
    .await;
    drop(to_ingest);
    while helpers.join_next().await.is_some() {}
}

/// Reads the broker connection until the ingester disconnects it at shutdown (or, at shutdown,
/// the broker is away).
async fn poll_until_disconnected(
    handle: &MqttHandle,
    eventloop: &mut EventLoop,
    to_ingest: &tokio::sync::mpsc::Sender<rumqttc::Publish>,
    share_group: &Option<String>,
    sessions: &Option<crate::sessions::Sessions>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) {
    let republish = handle.republish.clone();
    let mut backoff = Duration::from_millis(200);
    let mut first_connection = true;
    // `poll` is never cancelled (its cancel safety is undocumented): device messages go to the
    // ingester through a bounded channel, whose back-pressure pauses this loop.
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(200);
                handle.connected.store(true, Ordering::Relaxed);
                metrics.mqtt_connected.set(1);
                metrics.mqtt_connections.inc();
                tracing::info!("connected to the MQTT broker");
                for filter in subscriptions(share_group.as_deref()) {
                    if let Err(e) = handle.client.try_subscribe(filter, QoS::AtLeastOnce) {
                        tracing::error!(error = %e, "cannot queue a subscription");
                    }
                }
                // Retained desired states are re-signed and re-published wholesale only when the
                // broker may have lost them: at start, or when an external broker no longer had
                // this server's persistent session (it restarted without its state). The
                // embedded broker lives in this process, so only the first connection counts.
                let broker_forgot = share_group.is_some() && !ack.session_present;
                if first_connection || broker_forgot {
                    republish.notify_one();
                }
                first_connection = false;
            }
            Ok(rumqttc::Event::Incoming(Packet::Publish(publish))) => {
                // At shutdown the ingester takes nothing more: the message stays unacknowledged
                // and the broker delivers it again (to this server's session, or a drainer).
                tokio::select! {
                    sent = to_ingest.send(publish) => if sent.is_err() && !shutdown.is_cancelled() {
                        tracing::error!("the ingester stopped; device messages are no longer stored");
                        return;
                    },
                    () = shutdown.cancelled() => {}
                }
            }
            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))
                if shutdown.is_cancelled() =>
            {
                return;
            }
            Ok(_) => {}
            Err(_) if shutdown.is_cancelled() => return,
            Err(e) => {
                if handle.connected.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "lost the MQTT broker; reconnecting");
                } else {
                    tracing::debug!(error = %e, "MQTT broker unreachable; retrying");
                }
                metrics.mqtt_connected.set(0);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                // Had another server taken this session to drain it, connecting now would take
                // it back midway.
                if let Some(sessions) = &sessions {
                    sessions.wait_until_ours().await;
                }
            }
        }
    }
}

/// Stores device messages concurrently (up to [`INGEST_WINDOW`] at a time, over the store's
/// pool) and acknowledges them strictly in arrival order, as MQTT requires. One at a time, a
/// server on PostgreSQL spent its time waiting on round trips (docs/BENCHMARKS.md).
///
/// On the embedded broker (`embedded` holds where desired topics in need of restoring go), a
/// refused message's topic is cleared of any retained message (an empty retained publish):
/// whatever a device left there, forged or junk, goes, and the broker's memory of retained
/// messages stays bounded by what the server accepts.
async fn ingester(parts: Ingester, mut from_loop: tokio::sync::mpsc::Receiver<rumqttc::Publish>) {
    let Ingester {
        handle,
        store,
        metrics,
        keys,
        clock,
        embedded,
        shutdown,
    } = parts;
    let mut in_flight: FuturesOrdered<IngestFuture> = FuturesOrdered::new();
    // Acknowledgements the client's request queue had no room for yet, oldest first.
    let mut unsent_acks = VecDeque::new();
    let mut retry = tokio::time::interval(Duration::from_millis(20));
    let mut open = true;
    loop {
        flush_acks(&handle, &mut unsent_acks);
        // Checked after the flush: with nothing left to take, store or acknowledge, every
        // branch below would be disabled.
        if !open && in_flight.is_empty() && unsent_acks.is_empty() {
            break;
        }
        tokio::select! {
            Some((publish, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                if embedded.is_some() && matches!(outcome, Ingested::Refused(_)) {
                    clear_retained(&handle, &metrics, &publish.topic);
                }
                finish(&metrics, publish, outcome, &mut unsent_acks);
            }
            received = from_loop.recv(), if open && in_flight.len() < INGEST_WINDOW => match received {
                Some(publish) => {
                    if let Some(guard) = &handle.guard
                        && let Some(restore) = &embedded
                        && let Ok(topic) = Topic::parse(&publish.topic)
                        && topic.channel == Channel::Desired
                        && !guard.is_ours(&topic.device, &publish.payload)
                    {
                        // Full: the next sweep hands this message over again.
                        let _ = restore.try_send(topic.device);
                    }
                    let store = store.clone();
                    let metrics = metrics.clone();
                    let keys = keys.clone();
                    // Stamped here, in arrival order, though stored concurrently.
                    let received_us = clock.unix_us();
                    in_flight.push_back(Box::pin(async move {
                        let outcome =
                            ingest(&*store, &metrics, &keys, &publish.topic, &publish.payload, received_us)
                                .await;
                        (publish, outcome)
                    }) as IngestFuture);
                }
                None => open = false,
            },
            _ = retry.tick(), if !unsent_acks.is_empty() => {}
            () = shutdown.cancelled(), if open => open = false,
        }
    }
    // Everything taken is stored and its acknowledgement queued ahead of the disconnect, which
    // ends the client's event loop once sent.
    if shutdown.is_cancelled()
        && let Err(e) = handle.client.try_disconnect()
    {
        tracing::warn!(error = %e, "cannot queue the disconnect from the broker");
    }
}

/// What the ingester works with.
struct Ingester {
    handle: MqttHandle,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    keys: Arc<DeviceKeys>,
    clock: Arc<dyn edgefleet_clock::Clock>,
    /// On the embedded broker: where desired topics in need of restoring go.
    embedded: Option<tokio::sync::mpsc::Sender<DeviceId>>,
    shutdown: CancellationToken,
}

/// Device messages being stored at once by one server.
const INGEST_WINDOW: usize = 64;

type IngestFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = (rumqttc::Publish, Ingested)> + Send + 'static>,
>;

/// Counts a stored (or refused) message and queues its acknowledgement; a failed one stays
/// unacknowledged so the broker delivers it again after a reconnect.
fn finish(
    metrics: &Metrics,
    publish: rumqttc::Publish,
    outcome: Ingested,
    acks: &mut VecDeque<rumqttc::Publish>,
) {
    metrics
        .mqtt_messages
        .get_or_create(&crate::metrics::MessageLabels {
            channel: channel_label(&publish.topic),
            outcome: outcome.label(),
        })
        .inc();
    match &outcome {
        Ingested::Failed(reason) => {
            tracing::warn!(topic = %publish.topic, reason, "could not store a device message");
            return;
        }
        Ingested::Refused(reason) => {
            tracing::warn!(topic = %publish.topic, reason, "refused a device message");
        }
        Ingested::Stored | Ingested::Duplicate | Ingested::Ignored => {}
    }
    acks.push_back(publish);
}

/// Devices whose desired topic held a message this server did not write, waiting to be restored.
const RESTORE_QUEUE: usize = 1024;

/// Puts back what the server wants on a desired topic where a device published something else
/// (embedded broker, see [`DesiredGuard`]): the stored desired state signed afresh, or nothing
/// (an empty retained message) for a device the server wants nothing of or does not know.
async fn desired_restorer(
    handle: MqttHandle,
    store: Arc<dyn Store>,
    tuf: Arc<TufHost>,
    metrics: Arc<Metrics>,
    mut devices: tokio::sync::mpsc::Receiver<DeviceId>,
    shutdown: CancellationToken,
) {
    loop {
        let device = tokio::select! {
            received = devices.recv() => match received {
                Some(device) => device,
                None => return,
            },
            () = shutdown.cancelled() => return,
        };
        let wanted = match store.device(&device).await {
            Ok(found) => found.and_then(|d| d.desired),
            Err(e) => {
                tracing::warn!(%device, error = %e, "cannot read the desired state to restore");
                continue;
            }
        };
        let bytes = match wanted {
            Some(desired) => match tuf.sign_desired(vec![desired]).await {
                Ok(mut signed) => match signed.pop() {
                    Some((_, bytes)) => bytes,
                    None => continue,
                },
                Err(e) => {
                    tracing::warn!(%device, error = %e, "cannot sign the desired state to restore");
                    continue;
                }
            },
            None => Vec::new(),
        };
        tracing::warn!(%device, "a desired state this server did not publish was on the device's topic; restored");
        metrics.desired_restored.inc();
        if let Err(e) = handle.publish_retained(&device, bytes).await {
            tracing::warn!(%device, error = %e, "cannot restore the desired state");
        }
    }
}

/// Two filters that match every topic a device may publish on (see [`retained_sweeper`]); a
/// connection starts on the first.
const SWEEP_FILTERS: [&str; 2] = ["#", "+/#"];

/// On the embedded broker, every `every`, has rumqttd hand over every retained message again so
/// that the ingester clears those it refuses: live clearing misses junk published faster than
/// the server reads (rumqttd's ring moves on without it). rumqttd forwards retained messages only
/// on a filter new to the connection, so the server moves between two filters that match the
/// same topics, `#` and `+/#`: the new one first, the old one dropped once the new one has had
/// time to deliver, so no live message falls in a gap (some arrive twice meanwhile; storing is
/// idempotent).
async fn retained_sweeper(handle: MqttHandle, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !handle.connected.load(Ordering::Relaxed) {
            continue; // a new connection subscribes to `#` and gets every retained message
        }
        let next = 1 - live;
        if let Err(e) = handle
            .client
            .try_subscribe(SWEEP_FILTERS[next], QoS::AtLeastOnce)
        {
            tracing::warn!(error = %e, "cannot queue the retained-message sweep");
            continue;
        }
        tokio::time::sleep(every.min(Duration::from_secs(10)) / 2).await;
        if let Err(e) = handle.client.try_unsubscribe(SWEEP_FILTERS[live]) {
            tracing::warn!(error = %e, "cannot drop the previous subscription after a sweep");
        }
        live = next;
    }
}

/// Publishes an empty retained message on `topic`, which deletes what a device retained there.
/// The server sees its own empty publish come back and ignores it ([`ingest`]), so this never
/// loops.
fn clear_retained(handle: &MqttHandle, metrics: &Metrics, topic: &str) {
    match handle
        .client
        .try_publish(topic, QoS::AtMostOnce, true, Vec::new())
    {
        Ok(()) => {
            metrics.mqtt_retained_cleared.inc();
        }
        Err(e) => tracing::warn!(topic, error = %e, "cannot clear a refused message's topic"),
    }
}

/// Hands queued acknowledgements to the client in order, as far as its request queue has room
/// (the event loop drains it; awaiting here instead could stall the loop that must drain it).
fn flush_acks(handle: &MqttHandle, acks: &mut VecDeque<rumqttc::Publish>) {
    while let Some(publish) = acks.front() {
        if handle.client.try_ack(publish).is_err() {
            return;
        }
        acks.pop_front();
    }
}

fn channel_label(topic: &str) -> String {
    Topic::parse(topic)
        .map(|t| t.channel.as_str().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

async fn republisher(
    handle: MqttHandle,
    store: Arc<dyn Store>,
    tuf: Arc<TufHost>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = shutdown.cancelled() => return,
        }
        metrics.desired_republished.inc();
        let desired = match store.all_desired().await {
            Ok(all) => all,
            Err(e) => {
                tracing::error!(error = %e, "cannot read desired state to re-publish");
                continue;
            }
        };
        if desired.is_empty() {
            continue;
        }
        // Signed afresh, so a rotated timestamp key takes effect for every device.
        let signed = match tuf.sign_desired(desired).await {
            Ok(signed) => signed,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign desired state to re-publish");
                continue;
            }
        };
        let count = signed.len();
        for (desired, bytes) in signed {
            if let Err(e) = handle.publish_retained(&desired.device, bytes).await {
                tracing::warn!(error = %e, "re-publishing desired state stopped");
                break;
            }
        }
        tracing::info!(devices = count, "re-published desired state");
    }
}
