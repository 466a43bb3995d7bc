//! The server's side of MQTT: an embedded broker (rumqttd) for pilots or any external broker, and
//! the server's own client that publishes each device's retained desired state and consumes
//! reported / events / metrics through a shared subscription. Connection options live in
//! [`crate::broker`], what a device message does to the store in [`crate::ingest`], and
//! Mosquitto's files in [`crate::mosquitto`].
//!
//! The store, not the broker, is the source of truth: after every (re)connection the server
//! re-publishes every device's desired state, so a broker restart (the embedded one keeps nothing
//! on disk) loses nothing. Device messages are acknowledged only after they are stored.

mod embedded;
mod ingester;
mod upkeep;

pub use embedded::{
    Authenticator, EMBEDDED_HALF_OPEN_MAX, embedded_authenticator, start_embedded_broker,
};
use ingester::{INGEST_WINDOW, Ingester, ingester};
use upkeep::{
    RESTORE_QUEUE, SWEEP_FILTERS, desired_restorer, drive_publisher, republisher, retained_sweeper,
};

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
    /// Subscribes, acknowledges what it is handed and clears refused retained messages.
    client: AsyncClient,
    /// Publishes desired state. On the embedded broker a connection of its own: the server's
    /// subscription there covers the desired topics too, so each publication comes back to be
    /// acknowledged, and with both on one connection a rollout's thousands of queued publishes
    /// held those acknowledgements back until rumqttd, at its cap of unacknowledged deliveries,
    /// stopped answering — pings included — and the connection dropped (10,000 devices,
    /// docs/BENCHMARKS.md). On an external broker the server does not subscribe to desired
    /// topics, so one connection serves.
    publisher: AsyncClient,
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
        self.publisher
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

/// The broker connections' event loops, each driven by [`run`].
pub struct EventLoops {
    main: EventLoop,
    /// The desired-state publisher's own connection (embedded broker only).
    publisher: Option<EventLoop>,
}

impl std::fmt::Debug for EventLoops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoops")
            .field("publisher", &self.publisher.is_some())
            .finish_non_exhaustive()
    }
}

/// The client id of the embedded broker's desired-state publisher: the server's user name with
/// slot 0, a name no device may enrol under ([`crate::config::MqttConfig::is_server_user`]), so
/// none can connect under it and knock the publisher off.
fn publisher_client_id(username: &str) -> String {
    format!("{username}-0")
}

/// Connects the server's client. Returns the handle and the event loops to drive with [`run`].
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
) -> Result<(MqttHandle, EventLoops), MqttError> {
    let embedded = config.mqtt.url.is_none();
    let options = client_options(config, address, password, client_id, embedded)?;
    let (client, main) = AsyncClient::new(options, 10_000);
    let (publisher, publisher_loop) = if embedded {
        let id = publisher_client_id(&config.mqtt.username);
        let options = client_options(config, address, password, &id, true)?;
        let (publisher, eventloop) = AsyncClient::new(options, 10_000);
        (publisher, Some(eventloop))
    } else {
        (client.clone(), None)
    };
    Ok((
        MqttHandle {
            client,
            publisher,
            connected: Arc::new(AtomicBool::new(false)),
            republish: Arc::new(Notify::new()),
            guard: embedded.then(|| Arc::new(DesiredGuard::default())),
        },
        EventLoops {
            main,
            publisher: publisher_loop,
        },
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
pub async fn run(handle: MqttHandle, loops: EventLoops, parts: ClientParts) {
    let EventLoops {
        main: mut eventloop,
        publisher,
    } = loops;
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
    if let Some(publisher) = publisher {
        helpers.spawn(drive_publisher(handle.clone(), publisher, shutdown.clone()));
    }
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
