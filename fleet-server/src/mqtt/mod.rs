//! The server's side of MQTT: an embedded broker (rumqttd) for pilots or any external broker, and
//! the server's own connection ([`link`]) that consumes reported / events / metrics through a
//! shared subscription and, on an external broker, publishes each device's retained desired
//! state. Connection options live in
//! [`crate::broker`], what a device message does to the store in [`crate::ingest`], and
//! Mosquitto's files in [`crate::mosquitto`].
//!
//! The store, not the broker, is the source of truth: after every (re)connection the server
//! re-publishes every device's desired state, so a broker restart (the embedded one keeps nothing
//! on disk) loses nothing. Device messages are acknowledged only after they are stored.

mod device_order;
mod embedded;
mod handoff;
mod ingester;
mod link;
mod upkeep;
mod watcher;

pub use embedded::{
    Authenticator, EMBEDDED_HALF_OPEN_MAX, embedded_authenticator, start_embedded_broker,
};
use ingester::{Ingester, ingester};
use link::{Link, LinkConfig, LinkError, LinkHandle};
use upkeep::{RESTORE_QUEUE, desired_restorer, disconnect, drive_publisher, republisher};
use watcher::{DesiredGuard, Watcher, drive_watcher};

use std::collections::HashMap;
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
use crate::broker::{
    MAX_PACKET_BYTES, PUBLISH_SLOTS, SERVER_MAX_INCOMING_BYTES, client_options, device_filters,
    tls_config,
};
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
    /// Subscribes, acknowledges what it is handed, clears refused retained messages and, on an
    /// external broker, publishes desired states: at most [`PUBLISH_SLOTS`] queued or awaiting
    /// the broker's PUBACK, each kept to be sent again after a reconnection.
    link: LinkHandle,
    /// On the embedded broker, desired states go on a connection of their own, so that a
    /// rollout's thousands of queued publishes never hold back the acknowledgements of device
    /// messages: rumqttd stops delivering to a connection at 500 unacknowledged messages, and
    /// when the two shared a connection it stopped answering — pings included — until the
    /// connection dropped (10,000 devices, docs/BENCHMARKS.md). On an external broker each
    /// replica has one user and client id, and so one connection.
    publisher: Option<AsyncClient>,
    connected: Arc<AtomicBool>,
    republish: Arc<Notify>,
    /// On the embedded broker: what this server last published on each desired topic, for the
    /// watcher ([`watcher`]).
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

    /// Whether [`MqttHandle::reread_reported`] may be used: on an external broker only. rumqttd
    /// gives every new filter a log of its own that it never frees (a kilo-entry buffer each)
    /// and matches it against every topic it knows, so per-device filters would cost the
    /// embedded broker memory and time that grow with every round; its losses are the ring
    /// skips SERVER.md bounds by fleet size instead.
    pub fn rereads_reported(&self) -> bool {
        self.guard.is_none()
    }

    /// Asks the broker for the retained reported state of each of `devices` again, through
    /// the ingesting connection: a subscription to each device's topic, which has the broker
    /// hand over what it retains there, taken back at once. What arrives is stored like any
    /// report (a state already stored is a duplicate). Devices publish their reported state
    /// retained, so a report the broker dropped on its way to the server (its queue for the
    /// server full) is still there. Returns how many devices were asked for; the rest wait for
    /// the next call if the link has stopped.
    pub fn reread_reported(&self, devices: &[DeviceId]) -> usize {
        let mut asked = 0;
        for chunk in devices.chunks(REREAD_PER_SUBSCRIBE) {
            let topics: Vec<String> = chunk
                .iter()
                .map(|d| Topic::new(d.clone(), Channel::Reported).to_string())
                .collect();
            if let Err(e) = self.link.subscribe(topics.clone()) {
                tracing::warn!(error = %e, "cannot ask the broker for reported states again");
                break;
            }
            // Queued behind the subscription, so the broker hands over the retained messages
            // first. A subscription left behind (the server stopped in between) only delivers
            // that device's reports twice; the second is a duplicate.
            if let Err(e) = self.link.unsubscribe(topics) {
                tracing::warn!(error = %e, "cannot take back reported-state subscriptions");
            }
            asked += chunk.len();
        }
        asked
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
        match &self.publisher {
            Some(publisher) => publisher
                .publish(topic, QoS::AtLeastOnce, true, bytes)
                .await
                .map_err(|e| MqttError::Publish(e.to_string())),
            None => self
                .link
                .publish_retained(topic, bytes)
                .await
                .map_err(|e| MqttError::Publish(e.to_string())),
        }
    }
}

/// Topics per subscription when reported states are read again: each subscription is handed
/// at most its retained messages, and rumqttd hands over no more than its in-flight limit (500).
const REREAD_PER_SUBSCRIBE: usize = 100;

/// The broker connections' owners, each driven by [`run`].
pub struct EventLoops {
    link: Link,
    /// The embedded broker's desired-state publisher and watcher connections.
    embedded: Option<EmbeddedLoops>,
}

struct EmbeddedLoops {
    publisher: EventLoop,
    watcher: AsyncClient,
    watcher_loop: EventLoop,
}

impl std::fmt::Debug for EventLoops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoops")
            .field("embedded", &self.embedded.is_some())
            .finish_non_exhaustive()
    }
}

/// The client ids of the embedded broker's desired-state publisher and watcher: the server's
/// user name with slots 0 and 00, names no device may enrol under
/// ([`crate::config::MqttConfig::is_server_user`]) and no replica takes (replicas count from 1,
/// and only on an external broker), so none can connect under them and knock these off.
fn embedded_client_ids(username: &str) -> (String, String) {
    (format!("{username}-0"), format!("{username}-00"))
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
    metrics: Arc<Metrics>,
) -> Result<(MqttHandle, EventLoops), MqttError> {
    let embedded = config.mqtt.url.is_none();
    // On an external broker each replica is a user of its own whose name is its client id
    // (`use_username_as_clientid`), so no other client can take its session.
    let username = match config.mqtt.url {
        Some(_) => client_id.to_owned(),
        None => config.mqtt.username.clone(),
    };
    let (link, link_owner) = link::link(
        LinkConfig {
            host: address.host.clone(),
            port: address.port,
            tls: tls_config(config, address)?,
            client_id: client_id.to_owned(),
            username,
            password: password.to_owned(),
            keep_alive: Duration::from_secs(config.mqtt.keep_alive_seconds),
            clean_session: embedded,
            max_incoming: SERVER_MAX_INCOMING_BYTES,
            max_outgoing: MAX_PACKET_BYTES,
            publish_slots: PUBLISH_SLOTS,
        },
        metrics,
    );
    let (publisher, embedded_loops) = if embedded {
        let (publisher_id, watcher_id) = embedded_client_ids(&config.mqtt.username);
        let options = client_options(config, address, password, &publisher_id, true)?;
        let (publisher, publisher_loop) = AsyncClient::new(options, 10_000);
        let options = client_options(config, address, password, &watcher_id, true)?;
        let (watcher, watcher_loop) = AsyncClient::new(options, 10_000);
        (
            Some(publisher),
            Some(EmbeddedLoops {
                publisher: publisher_loop,
                watcher,
                watcher_loop,
            }),
        )
    } else {
        (None, None)
    };
    Ok((
        MqttHandle {
            link,
            publisher,
            connected: Arc::new(AtomicBool::new(false)),
            republish: Arc::new(Notify::new()),
            guard: embedded.then(|| Arc::new(DesiredGuard::default())),
        },
        EventLoops {
            link: link_owner,
            embedded: embedded_loops,
        },
    ))
}

/// How many device messages the server stores at once. SQLite: 64, which its one writer commits
/// in groups (operators read through readers of their own). PostgreSQL: 256, whose writes are
/// grouped per transaction too and wait without a pooled connection; what else storing one
/// takes holds at most half the pool ([`crate::store::Store::for_ingester`]). When each message
/// held a connection, all of them taken by a store that fell behind left the API and the rollout
/// engine in line behind device messages (a `rollout create` over 60 s at 100,000 devices;
/// `tests/slow_store.rs` locks a table and finds `/metrics` still answering). The window is
/// larger than SQLite's because a PostgreSQL group costs a round trip and a commit on another
/// process: more waiting writes make each group larger, not slower.
pub fn ingest_window(config: &Config) -> usize {
    match config.database.url {
        Some(_) => ingester::POSTGRES_INGEST_WINDOW,
        None => ingester::INGEST_WINDOW,
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
    /// `mqtt.retained_sweep_seconds` (the embedded broker's watcher).
    pub retained_sweep: Duration,
    /// Device messages stored at once ([`ingest_window`]).
    pub ingest_window: usize,
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
    let EventLoops { mut link, embedded } = loops;
    let ClientParts {
        store,
        tuf,
        metrics,
        keys,
        share_group,
        sessions,
        retained_sweep,
        ingest_window,
        shutdown,
        clock,
    } = parts;
    let mut helpers = tokio::task::JoinSet::new();
    if let (Some(loops), Some(guard), Some(publisher)) =
        (embedded, handle.guard.clone(), handle.publisher.clone())
    {
        helpers.spawn(drive_publisher(
            publisher,
            loops.publisher,
            shutdown.clone(),
        ));
        let (restore, to_restore) = tokio::sync::mpsc::channel(RESTORE_QUEUE);
        helpers.spawn(desired_restorer(
            handle.clone(),
            store.clone(),
            tuf.clone(),
            metrics.clone(),
            to_restore,
            shutdown.clone(),
        ));
        helpers.spawn(drive_watcher(Watcher {
            client: loops.watcher,
            eventloop: loops.watcher_loop,
            guard,
            sweep_every: retained_sweep,
            restore,
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        }));
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
    let (to_ingest, from_loop) = handoff::handoff(handoff::QUEUE_BYTES);
    helpers.spawn(ingester(
        Ingester {
            handle: handle.clone(),
            store: store.for_ingester().unwrap_or(store),
            metrics: metrics.clone(),
            keys,
            clock,
            clear_refused: handle.guard.is_some(),
            window: ingest_window,
            shutdown: shutdown.clone(),
        },
        from_loop,
    ));
    drive_link(
        &handle,
        &mut link,
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

/// Connects the link and serves each connection until the ingester disconnects it at shutdown
/// (or, at shutdown, the broker is away).
async fn drive_link(
    handle: &MqttHandle,
    link: &mut Link,
    to_ingest: &handoff::Sender,
    share_group: &Option<String>,
    sessions: &Option<crate::sessions::Sessions>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) {
    let republish = handle.republish.clone();
    let mut backoff = Duration::from_millis(200);
    let mut first_connection = true;
    loop {
        let connected = tokio::select! {
            connected = link.connect() => connected,
            () = shutdown.cancelled() => return,
        };
        let ended = match connected {
            Ok(connection) => {
                backoff = Duration::from_millis(200);
                handle.connected.store(true, Ordering::Relaxed);
                metrics.mqtt_connected.set(1);
                metrics.mqtt_connections.inc();
                tracing::info!(
                    session_present = connection.session_present,
                    "connected to the MQTT broker"
                );
                if let Err(e) = handle
                    .link
                    .subscribe(device_filters(share_group.as_deref()))
                {
                    tracing::error!(error = %e, "cannot queue the subscriptions");
                }
                // Retained desired states are re-signed and re-published wholesale only when the
                // broker may have lost them: at start, or when an external broker no longer had
                // this server's persistent session (it restarted without its state). The
                // embedded broker lives in this process, so only the first connection counts.
                let broker_forgot = share_group.is_some() && !connection.session_present;
                if first_connection || broker_forgot {
                    republish.notify_one();
                }
                first_connection = false;
                link.serve(connection, to_ingest, shutdown).await
            }
            Err(e) => Err(e),
        };
        match ended {
            Ok(()) => return,
            Err(_) if shutdown.is_cancelled() => return,
            Err(e @ LinkError::IngesterStopped) => {
                tracing::error!(error = %e, "the server's broker link stops");
                return;
            }
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
