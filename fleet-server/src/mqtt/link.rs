//! The server's ingesting connection to its broker, whose reading and writing are tasks of their
//! own.
//!
//! rumqttc drives a connection from one loop that, each turn, either reads up to ten packets or
//! sends one request: an acknowledgement, a publish, a subscription. Once reading waits for the
//! store, acknowledgements leave at a fraction of the rate messages arrive, the PINGRESP waits
//! behind everything the broker sent before it, and the connection is declared lost every
//! minute (100,000 devices on PostgreSQL, docs/BENCHMARKS.md). Here the reader hands each device
//! message to the ingester and, when the ingester is full, stops reading — back-pressure the
//! broker sees as TCP flow control — while the writer sends acknowledgements, desired states and
//! pings as soon as they are queued. The broker is declared gone only when a read itself has
//! waited two keep-alives without a byte (pings go out every keep-alive), never while the server
//! is the one not reading.
//!
//! Packets are rumqttc's MQTT 3.1.1 codec; only the connection's shape is ours.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use rumqttc::{
    Codec, ConnAck, Connect, ConnectReturnCode, Login, Packet, Protocol, PubAck, Publish, QoS,
    Subscribe, SubscribeFilter, SubscribeReasonCode, Unsubscribe,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::handoff;
use crate::metrics::Metrics;

/// How long connecting (TCP, TLS and the broker's CONNACK) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes the writer gathers from its queue into one write.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// A wait of the reader this long for the ingester (the hand-off full) is logged.
const LONG_INGEST_WAIT: Duration = Duration::from_secs(5);

/// Where and as whom the link connects.
#[derive(Debug, Clone)]
pub(super) struct LinkConfig {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    pub(super) client_id: String,
    pub(super) username: String,
    pub(super) password: String,
    pub(super) keep_alive: Duration,
    pub(super) clean_session: bool,
    /// Largest packet taken from the broker.
    pub(super) max_incoming: usize,
    /// Largest packet sent.
    pub(super) max_outgoing: usize,
    /// Desired states queued or awaiting the broker's PUBACK at once.
    pub(super) publish_slots: usize,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum LinkError {
    #[error("cannot reach the broker: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker did not accept the connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error(
        "the broker refused the connection: {0:?} (check mqtt.username, the password and the broker's ACL)"
    )]
    Refused(ConnectReturnCode),
    #[error("{0} is not a name TLS can verify the broker's certificate for")]
    ServerName(String),
    #[error("the broker sent a malformed or oversized packet: {0:?}")]
    Packet(rumqttc::mqttbytes::Error),
    #[error("the broker sent {0}, which it never should to this client")]
    Unexpected(&'static str),
    #[error("the broker closed the connection")]
    Closed,
    #[error("nothing came from the broker for {0:?} although pings were sent")]
    Silent(Duration),
    #[error("the ingester stopped; device messages are no longer stored")]
    IngesterStopped,
    #[error("the broker link has stopped")]
    Stopped,
}

/// What acknowledges one delivered message: its packet id on the connection it came on. An
/// acknowledgement for an earlier connection is dropped: the broker delivers that message again,
/// and the same packet id may by then name another message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AckToken {
    connection: u64,
    pkid: u16,
}

/// A device message as the link read it.
#[derive(Debug)]
pub(super) struct Delivery {
    pub(super) publish: Publish,
    /// `None` for a QoS 0 message, which nothing acknowledges.
    pub(super) ack: Option<AckToken>,
}

enum Outbound {
    Ack(AckToken),
    /// A retained QoS 1 publish, holding a slot until the broker's PUBACK.
    Publish {
        topic: String,
        payload: Bytes,
        slot: OwnedSemaphorePermit,
    },
    /// An empty retained QoS 0 publish, which deletes what is retained on the topic.
    Clear(String),
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    Disconnect,
}

/// Packet ids in use: desired states awaiting their PUBACK (sent again after a reconnection
/// until acknowledged) and subscriptions awaiting theirs.
#[derive(Default)]
struct Pending {
    publishes: BTreeMap<u16, Unacknowledged>,
    requests: HashSet<u16>,
    last: u16,
}

struct Unacknowledged {
    topic: String,
    payload: Bytes,
    _slot: OwnedSemaphorePermit,
}

impl Pending {
    fn allocate(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.last = self.last.checked_add(1).unwrap_or(1);
            if !self.publishes.contains_key(&self.last) && !self.requests.contains(&self.last) {
                return Some(self.last);
            }
        }
        None
    }
}

/// Queues what the link sends; cheap to clone.
#[derive(Clone)]
pub(super) struct LinkHandle {
    outbound: mpsc::UnboundedSender<Outbound>,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle")
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl LinkHandle {
    fn queue(&self, request: Outbound) -> Result<(), LinkError> {
        self.outbound.send(request).map_err(|_| LinkError::Stopped)
    }

    /// Acknowledges a stored message (a QoS 0 one has nothing to acknowledge).
    pub(super) fn ack(&self, token: Option<AckToken>) -> Result<(), LinkError> {
        let Some(token) = token else { return Ok(()) };
        self.metrics.mqtt_unsent_acks.inc();
        self.queue(Outbound::Ack(token))
    }

    /// Publishes `payload` retained at QoS 1 once fewer than `publish_slots` desired states are
    /// queued or unacknowledged; kept (and sent again after a reconnection) until the broker's
    /// PUBACK.
    pub(super) async fn publish_retained(
        &self,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<(), LinkError> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LinkError::Stopped)?;
        self.queue(Outbound::Publish {
            topic,
            payload: payload.into(),
            slot,
        })
    }

    pub(super) fn clear_retained(&self, topic: &str) -> Result<(), LinkError> {
        self.queue(Outbound::Clear(topic.to_owned()))
    }

    /// Subscribes to `filters` at QoS 1, in one packet.
    pub(super) fn subscribe(&self, filters: Vec<String>) -> Result<(), LinkError> {
        self.queue(Outbound::Subscribe(filters))
    }

    pub(super) fn unsubscribe(&self, filters: Vec<String>) -> Result<(), LinkError> {
        self.queue(Outbound::Unsubscribe(filters))
    }

    /// Sends DISCONNECT after everything queued before it; the connection then ends.
    pub(super) fn disconnect(&self) -> Result<(), LinkError> {
        self.queue(Outbound::Disconnect)
    }
}

/// The connection's owner: connects, and serves each connection until it ends.
pub(super) struct Link {
    config: LinkConfig,
    outbound: mpsc::UnboundedReceiver<Outbound>,
    pending: Arc<Mutex<Pending>>,
    metrics: Arc<Metrics>,
    connections: u64,
}

pub(super) fn link(config: LinkConfig, metrics: Arc<Metrics>) -> (LinkHandle, Link) {
    let (outbound, queued) = mpsc::unbounded_channel();
    let slots = Arc::new(Semaphore::new(config.publish_slots));
    (
        LinkHandle {
            outbound,
            slots,
            metrics: metrics.clone(),
        },
        Link {
            config,
            outbound: queued,
            pending: Arc::default(),
            metrics,
            connections: 0,
        },
    )
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// An established connection, to be served with [`Link::serve`].
pub(super) struct Connection {
    reader: FramedRead<Reader, Codec>,
    writer: Writer,
    pub(super) session_present: bool,
}

impl Link {
    /// Connects and logs in; the broker's CONNACK says whether it kept this client's session.
    pub(super) async fn connect(&mut self) -> Result<Connection, LinkError> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.open())
            .await
            .map_err(|_| LinkError::ConnectTimeout(CONNECT_TIMEOUT))?
    }

    async fn open(&mut self) -> Result<Connection, LinkError> {
        let config = &self.config;
        let tcp = tokio::net::TcpStream::connect((config.host.as_str(), config.port)).await?;
        tcp.set_nodelay(true)?;
        let (reader, writer): (Reader, Writer) = match &config.tls {
            None => {
                let (r, w) = tcp.into_split();
                (Box::new(r), Box::new(w))
            }
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(config.host.clone())
                    .map_err(|_| LinkError::ServerName(config.host.clone()))?;
                let stream = rumqttc::tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await?;
                let (r, w) = tokio::io::split(stream);
                (Box::new(r), Box::new(w))
            }
        };
        let codec = Codec {
            max_incoming_size: config.max_incoming,
            max_outgoing_size: config.max_outgoing,
        };
        let mut reader = FramedRead::new(reader, codec);
        let mut writer = writer;
        let connect = Connect {
            protocol: Protocol::V4,
            keep_alive: u16::try_from(config.keep_alive.as_secs()).unwrap_or(u16::MAX),
            client_id: config.client_id.clone(),
            clean_session: config.clean_session,
            last_will: None,
            login: Some(Login::new(&config.username, &config.password)),
        };
        write_packets(
            &mut writer,
            &[Packet::Connect(connect)],
            config.max_outgoing,
        )
        .await?;
        let ack: ConnAck = match reader.next().await {
            Some(Ok(Packet::ConnAck(ack))) => ack,
            Some(Ok(_)) => return Err(LinkError::Unexpected("a packet before its CONNACK")),
            Some(Err(e)) => return Err(LinkError::Packet(e)),
            None => return Err(LinkError::Closed),
        };
        if ack.code != ConnectReturnCode::Success {
            return Err(LinkError::Refused(ack.code));
        }
        Ok(Connection {
            reader,
            writer,
            session_present: ack.session_present,
        })
    }

    /// Serves `connection` until it ends: `Ok` once DISCONNECT is sent, an error otherwise.
    /// Device messages go to `to_ingest`; at shutdown (`shutdown` cancelled) those the ingester
    /// no longer takes stay unacknowledged, for the broker to deliver again.
    pub(super) async fn serve(
        &mut self,
        connection: Connection,
        to_ingest: &handoff::Sender,
        shutdown: &CancellationToken,
    ) -> Result<(), LinkError> {
        self.connections += 1;
        let this = self.connections;
        self.metrics.mqtt_unacknowledged.set(0);
        // Subscriptions awaiting an answer on the previous connection get none.
        lock(&self.pending).requests.clear();
        let reading = read_loop(
            connection.reader,
            to_ingest,
            &self.pending,
            &self.metrics,
            this,
            self.config.keep_alive,
            shutdown,
        );
        let writing = write_loop(
            connection.writer,
            &mut self.outbound,
            &self.pending,
            &self.metrics,
            this,
            &self.config,
        );
        tokio::select! {
            read = reading => read,
            written = writing => written,
        }
    }
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // A panic while holding it leaves the maps whole (each change is one insert or remove).
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn write_packets(
    writer: &mut Writer,
    packets: &[Packet],
    max_outgoing: usize,
) -> Result<(), LinkError> {
    let mut buffer = BytesMut::new();
    for packet in packets {
        packet
            .write(&mut buffer, max_outgoing)
            .map_err(LinkError::Packet)?;
    }
    writer.write_all(&buffer).await?;
    writer.flush().await?;
    Ok(())
}

async fn read_loop(
    mut reader: FramedRead<Reader, Codec>,
    to_ingest: &handoff::Sender,
    pending: &Mutex<Pending>,
    metrics: &Metrics,
    connection: u64,
    keep_alive: Duration,
    shutdown: &CancellationToken,
) -> Result<(), LinkError> {
    let silence = keep_alive * 2;
    loop {
        let packet = match tokio::time::timeout(silence, reader.next()).await {
            Err(_) => return Err(LinkError::Silent(silence)),
            Ok(None) => return Err(LinkError::Closed),
            Ok(Some(Err(e))) => return Err(LinkError::Packet(e)),
            Ok(Some(Ok(packet))) => packet,
        };
        match packet {
            Packet::Publish(mut publish) => {
                // The codec hands out the payload as a slice of the read buffer, and one slice
                // keeps the whole buffer it was cut from: the hand-off's byte bound would count a
                // 4 kB batch while it held the buffer's 8 kB or more. Copied, a waiting message
                // holds only itself, and the read buffer is reused.
                publish.payload = Bytes::copy_from_slice(&publish.payload);
                let ack = match publish.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(AckToken {
                        connection,
                        pkid: publish.pkid,
                    }),
                    QoS::ExactlyOnce => return Err(LinkError::Unexpected("a QoS 2 message")),
                };
                if ack.is_some() {
                    metrics.mqtt_unacknowledged.inc();
                }
                deliver(Delivery { publish, ack }, to_ingest, metrics, shutdown).await?;
            }
            Packet::PubAck(PubAck { pkid }) => {
                let mut pending = lock(pending);
                pending.publishes.remove(&pkid);
                metrics
                    .desired_unacknowledged
                    .set(pending.publishes.len() as i64);
            }
            Packet::SubAck(ack) => {
                lock(pending).requests.remove(&ack.pkid);
                if ack
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, SubscribeReasonCode::Failure))
                {
                    tracing::error!(
                        "the broker refused a subscription of the server's; check its ACL for the server's user"
                    );
                }
            }
            Packet::UnsubAck(ack) => {
                lock(pending).requests.remove(&ack.pkid);
            }
            Packet::PingResp => {}
            Packet::ConnAck(_) => return Err(LinkError::Unexpected("a second CONNACK")),
            Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => {
                return Err(LinkError::Unexpected("a QoS 2 flow"));
            }
            Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Disconnect => return Err(LinkError::Unexpected("a client's packet")),
        }
    }
}

/// Hands a message to the ingester, waiting (and so reading no more) while it is full.
async fn deliver(
    delivery: Delivery,
    to_ingest: &handoff::Sender,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<(), LinkError> {
    let delivery = match to_ingest.try_send(delivery) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(delivery)) => delivery,
        // At shutdown the ingester takes nothing more: the message stays unacknowledged and the
        // broker delivers it again (to this server's session, or a drainer).
        Err(handoff::Closed) if shutdown.is_cancelled() => return Ok(()),
        Err(handoff::Closed) => return Err(LinkError::IngesterStopped),
    };
    let waiting = std::time::Instant::now();
    tokio::select! {
        sent = to_ingest.send(delivery) => if sent.is_err() && !shutdown.is_cancelled() {
            return Err(LinkError::IngesterStopped);
        },
        () = shutdown.cancelled() => {}
    }
    let waited = waiting.elapsed();
    metrics.ingest_wait_seconds.inc_by(waited.as_secs_f64());
    if waited >= LONG_INGEST_WAIT {
        tracing::info!(
            seconds = waited.as_secs_f64(),
            "the server read nothing from the broker this long while the store caught up"
        );
    }
    Ok(())
}

async fn write_loop(
    mut writer: Writer,
    outbound: &mut mpsc::UnboundedReceiver<Outbound>,
    pending: &Mutex<Pending>,
    metrics: &Metrics,
    connection: u64,
    config: &LinkConfig,
) -> Result<(), LinkError> {
    // Desired states the broker had not acknowledged go again, first.
    let resend: Vec<Packet> = lock(pending)
        .publishes
        .iter()
        .map(|(pkid, p)| Packet::Publish(desired_publish(&p.topic, p.payload.clone(), *pkid, true)))
        .collect();
    write_packets(&mut writer, &resend, config.max_outgoing).await?;
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + config.keep_alive,
        config.keep_alive,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buffer = BytesMut::new();
    loop {
        let first = tokio::select! {
            request = outbound.recv() => match request {
                Some(request) => request,
                // Every handle is gone: nothing more will be sent.
                None => return Err(LinkError::Stopped),
            },
            _ = ping.tick() => {
                write_packets(&mut writer, &[Packet::PingReq], config.max_outgoing).await?;
                continue;
            }
        };
        let mut request = Some(first);
        let mut disconnect = false;
        while let Some(next) = request.take() {
            if let Some(packet) = encode(next, pending, metrics, connection, &mut disconnect) {
                packet
                    .write(&mut buffer, config.max_outgoing)
                    .map_err(LinkError::Packet)?;
            }
            if disconnect || buffer.len() >= WRITE_BATCH_BYTES {
                break;
            }
            request = outbound.try_recv().ok();
        }
        writer.write_all(&buffer).await?;
        writer.flush().await?;
        buffer.clear();
        if disconnect {
            let _ = writer.shutdown().await;
            return Ok(());
        }
    }
}

/// The packet for one queued request on connection `connection`, if it still needs one.
fn encode(
    request: Outbound,
    pending: &Mutex<Pending>,
    metrics: &Metrics,
    connection: u64,
    disconnect: &mut bool,
) -> Option<Packet> {
    match request {
        Outbound::Ack(token) => {
            metrics.mqtt_unsent_acks.dec();
            if token.connection != connection {
                return None;
            }
            metrics.mqtt_unacknowledged.dec();
            Some(Packet::PubAck(PubAck::new(token.pkid)))
        }
        Outbound::Publish {
            topic,
            payload,
            slot,
        } => {
            let mut pending = lock(pending);
            let Some(pkid) = pending.allocate() else {
                tracing::error!(%topic, "no packet id is free on the broker link; the desired state is dropped and published again with the next change");
                return None;
            };
            let packet = desired_publish(&topic, payload.clone(), pkid, false);
            pending.publishes.insert(
                pkid,
                Unacknowledged {
                    topic,
                    payload,
                    _slot: slot,
                },
            );
            metrics
                .desired_unacknowledged
                .set(pending.publishes.len() as i64);
            Some(Packet::Publish(packet))
        }
        Outbound::Clear(topic) => {
            let mut clear = Publish::new(topic, QoS::AtMostOnce, Vec::new());
            clear.retain = true;
            Some(Packet::Publish(clear))
        }
        Outbound::Subscribe(filters) => {
            let pkid = lock(pending).allocate_request(&filters)?;
            let filters = filters
                .into_iter()
                .map(|path| SubscribeFilter::new(path, QoS::AtLeastOnce))
                .collect();
            Some(Packet::Subscribe(Subscribe { pkid, filters }))
        }
        Outbound::Unsubscribe(topics) => {
            let pkid = lock(pending).allocate_request(&topics)?;
            Some(Packet::Unsubscribe(Unsubscribe { pkid, topics }))
        }
        Outbound::Disconnect => {
            *disconnect = true;
            Some(Packet::Disconnect)
        }
    }
}

impl Pending {
    /// A packet id for a subscription or unsubscription of `filters`, or `None` (logged: the
    /// request is dropped) when every id is in use.
    fn allocate_request(&mut self, filters: &[String]) -> Option<u16> {
        let Some(pkid) = self.allocate() else {
            tracing::error!(
                ?filters,
                "no packet id is free on the broker link; a (un)subscription is dropped"
            );
            return None;
        };
        self.requests.insert(pkid);
        Some(pkid)
    }
}

fn desired_publish(topic: &str, payload: Bytes, pkid: u16, dup: bool) -> Publish {
    Publish {
        dup,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: topic.to_owned(),
        pkid,
        payload,
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
