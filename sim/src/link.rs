//! One device's MQTT 3.1.1 connection, on a socket the simulator opens itself so that it can be
//! bound to the device's own loopback source address. Packets are framed by rumqttc's codec;
//! the session logic is small because a device's is: subscribe to its desired topic, publish at
//! QoS 1, keep what is not yet acknowledged and send it again after a reconnection (as the
//! agent's outbox does), ping when idle.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use edgefleet_protocol::topic::{Channel, Topic};
use edgefleet_sealed::DeviceKey;
use rumqttc::mqttbytes::{self, QoS, v4};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::device::{Catalog, Now, Outgoing, SimDevice};

/// The largest packet read: a desired state is at most tens of kilobytes.
const MAX_INCOMING: usize = 512 * 1024;
const MAX_OUTGOING: usize = 512 * 1024;
/// How long a stopping device waits for the acknowledgements of what it already sent.
const DRAIN: Duration = Duration::from_secs(15);

/// Counters shared by every device of a run.
#[derive(Debug, Default)]
pub struct Tally {
    pub connected: AtomicU64,
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub connection_errors: AtomicU64,
    pub desired_received: AtomicU64,
    pub desired_errors: AtomicU64,
    pub sent: [AtomicU64; 3],
    pub acked: [AtomicU64; 3],
    pub unacked_at_stop: AtomicU64,
}

/// Index of a device channel in [`Tally::sent`] and [`Tally::acked`].
pub fn slot(channel: Channel) -> usize {
    match channel {
        Channel::Reported => 0,
        Channel::Events => 1,
        _ => 2,
    }
}

/// Where and as whom a device connects.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub broker: SocketAddr,
    pub source: Option<Ipv4Addr>,
    pub keep_alive: Duration,
    pub credential: String,
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("MQTT: {0}")]
    Codec(#[from] mqttbytes::Error),
    #[error("the broker refused the connection: {0:?}")]
    Refused(v4::ConnectReturnCode),
    #[error("the broker closed the connection")]
    Closed,
    #[error("the broker refused the subscription to the device's desired topic")]
    SubscriptionRefused,
    #[error("no answer from the broker within {0:?}")]
    Silent(Duration),
}

/// A sent message waiting for its PUBACK; sent again, as it was, after a reconnection.
#[derive(Debug, Clone)]
struct Unacked {
    channel: Channel,
    topic: String,
    payload: bytes::Bytes,
}

/// What every device of a run shares: the registry's releases, the run's clock, the counters.
#[derive(Debug)]
pub struct Shared {
    pub catalog: Catalog,
    pub started: Instant,
    pub started_unix: u64,
    pub tally: Tally,
}

impl Shared {
    pub fn now(&self) -> Now {
        let elapsed = self.started.elapsed();
        Now {
            elapsed,
            unix: self.started_unix + elapsed.as_secs(),
        }
    }
}

/// Runs one device until `stop`, reconnecting (with backoff) whenever the connection drops.
pub async fn run(
    mut device: SimDevice,
    key: DeviceKey,
    settings: LinkSettings,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> SimDevice {
    let mut session = Session {
        key,
        settings,
        unacked: BTreeMap::new(),
        next_pkid: 1,
    };
    let mut backoff = Duration::from_millis(250);
    let tally = &shared.tally;
    loop {
        if stop.is_cancelled() {
            break;
        }
        match session.connected(&mut device, &shared, &stop).await {
            Ok(()) => break,
            Err(e) => {
                match e {
                    LinkError::Refused(_) => tally.refused.fetch_add(1, Ordering::Relaxed),
                    _ => tally.connection_errors.fetch_add(1, Ordering::Relaxed),
                };
                tracing::debug!(device = %device.id(), error = %e, "connection lost; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64())) => {}
                    () = stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    tally
        .unacked_at_stop
        .fetch_add(session.unacked.len() as u64, Ordering::Relaxed);
    device
}

struct Session {
    key: DeviceKey,
    settings: LinkSettings,
    /// Packet id → message, in flight on this connection.
    unacked: BTreeMap<u16, Unacked>,
    next_pkid: u16,
}

impl Session {
    /// One connection, from CONNECT to the clean DISCONNECT at `stop` (`Ok`) or a failure.
    async fn connected(
        &mut self,
        device: &mut SimDevice,
        shared: &Shared,
        stop: &CancellationToken,
    ) -> Result<(), LinkError> {
        let tally = &shared.tally;
        let mut stream = self.connect(device).await?;
        tally.connections.fetch_add(1, Ordering::Relaxed);
        tally.connected.fetch_add(1, Ordering::Relaxed);
        let result = self.serve(&mut stream, device, shared, stop).await;
        tally.connected.fetch_sub(1, Ordering::Relaxed);
        result
    }

    async fn connect(&self, device: &SimDevice) -> Result<TcpStream, LinkError> {
        let socket = TcpSocket::new_v4()?;
        if let Some(source) = self.settings.source {
            socket.bind(SocketAddr::from((source, 0)))?;
        }
        let timeout = Duration::from_secs(10);
        let mut stream = tokio::time::timeout(timeout, socket.connect(self.settings.broker))
            .await
            .map_err(|_| LinkError::Silent(timeout))??;
        stream.set_nodelay(true)?;
        let mut connect = v4::Connect::new(device.id().as_str());
        connect.keep_alive = u16::try_from(self.settings.keep_alive.as_secs()).unwrap_or(60);
        connect.clean_session = true;
        connect.set_login(device.id().as_str(), self.settings.credential.as_str());
        let mut buf = BytesMut::new();
        v4::Packet::Connect(connect).write(&mut buf, MAX_OUTGOING)?;
        stream.write_all(&buf).await?;
        let mut incoming = BytesMut::new();
        let ack = tokio::time::timeout(timeout, read_packet(&mut stream, &mut incoming))
            .await
            .map_err(|_| LinkError::Silent(timeout))??;
        match ack {
            v4::Packet::ConnAck(ack) if ack.code == v4::ConnectReturnCode::Success => Ok(stream),
            v4::Packet::ConnAck(ack) => Err(LinkError::Refused(ack.code)),
            _ => Err(LinkError::Closed),
        }
    }

    fn pkid(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.unacked.contains_key(&id) {
                return id;
            }
        }
    }

    fn queue(
        &mut self,
        device: &SimDevice,
        out: Vec<Outgoing>,
        buf: &mut BytesMut,
        tally: &Tally,
    ) -> Result<(), LinkError> {
        for o in out {
            let topic = Topic::new(device.id().clone(), o.channel).to_string();
            let payload = bytes::Bytes::from(self.key.seal(&topic, &o.payload));
            self.send(
                Unacked {
                    channel: o.channel,
                    topic,
                    payload,
                },
                buf,
            )?;
            tally.sent[slot(o.channel)].fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn send(&mut self, message: Unacked, buf: &mut BytesMut) -> Result<(), LinkError> {
        let pkid = self.pkid();
        let mut publish = v4::Publish::from_bytes(
            message.topic.clone(),
            QoS::AtLeastOnce,
            message.payload.clone(),
        );
        publish.pkid = pkid;
        publish.retain = message.channel.retained();
        v4::Packet::Publish(publish).write(buf, MAX_OUTGOING)?;
        self.unacked.insert(pkid, message);
        Ok(())
    }

    async fn serve(
        &mut self,
        stream: &mut TcpStream,
        device: &mut SimDevice,
        shared: &Shared,
        stop: &CancellationToken,
    ) -> Result<(), LinkError> {
        let (catalog, tally) = (&shared.catalog, &shared.tally);
        let now = || shared.now();
        let mut out = BytesMut::new();
        let desired_topic = Topic::new(device.id().clone(), Channel::Desired).to_string();
        let mut subscribe = v4::Subscribe::new(desired_topic.as_str(), QoS::AtLeastOnce);
        // A SUBSCRIBE needs a non-zero packet id: Mosquitto drops the connection over a zero
        // (rumqttd let it pass).
        subscribe.pkid = self.pkid();
        v4::Packet::Subscribe(subscribe).write(&mut out, MAX_OUTGOING)?;
        // What the last connection left unacknowledged goes first, in its order.
        for (_, message) in std::mem::take(&mut self.unacked) {
            self.send(message, &mut out)?;
        }
        let first = device
            .on_connected(now())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.queue(device, first, &mut out, tally)?;
        let keep_alive = self.settings.keep_alive;
        let mut last_sent = Instant::now();
        let mut last_heard = Instant::now();
        let mut incoming = BytesMut::with_capacity(4096);
        let mut draining: Option<tokio::time::Instant> = None;
        loop {
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
                last_sent = Instant::now();
            }
            if draining.is_some() && self.unacked.is_empty() {
                break;
            }
            let due = now();
            let wake = tokio::time::Instant::now() + device.next_due().saturating_sub(due.elapsed);
            let ping_at = tokio::time::Instant::from_std(last_sent + keep_alive / 2);
            tokio::select! {
                read = stream.read_buf(&mut incoming) => {
                    if read? == 0 {
                        return Err(LinkError::Closed);
                    }
                    last_heard = Instant::now();
                    loop {
                        let packet = match v4::Packet::read(&mut incoming, MAX_INCOMING) {
                            Ok(p) => p,
                            Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                            Err(e) => return Err(e.into()),
                        };
                        self.take(packet, &desired_topic, device, shared, &mut out, draining.is_some())?;
                    }
                }
                () = tokio::time::sleep_until(wake), if draining.is_none() => {
                    let due = device.on_tick(catalog, now()).map_err(|e| std::io::Error::other(e.to_string()))?;
                    self.queue(device, due, &mut out, tally)?;
                }
                () = tokio::time::sleep_until(ping_at) => {
                    if last_heard.elapsed() > keep_alive * 2 {
                        return Err(LinkError::Silent(keep_alive * 2));
                    }
                    v4::Packet::PingReq.write(&mut out, MAX_OUTGOING)?;
                }
                () = stop.cancelled(), if draining.is_none() => {
                    draining = Some(tokio::time::Instant::now() + DRAIN);
                }
                () = sleep_until_opt(draining) => break,
            }
        }
        v4::Packet::Disconnect.write(&mut out, MAX_OUTGOING)?;
        stream.write_all(&out).await?;
        let _ = stream.shutdown().await;
        Ok(())
    }

    fn take(
        &mut self,
        packet: v4::Packet,
        desired_topic: &str,
        device: &mut SimDevice,
        shared: &Shared,
        out: &mut BytesMut,
        draining: bool,
    ) -> Result<(), LinkError> {
        let tally = &shared.tally;
        match packet {
            v4::Packet::PubAck(ack) => {
                if let Some(m) = self.unacked.remove(&ack.pkid) {
                    tally.acked[slot(m.channel)].fetch_add(1, Ordering::Relaxed);
                }
            }
            v4::Packet::Publish(p) => {
                if p.qos != QoS::AtMostOnce {
                    v4::Packet::PubAck(v4::PubAck::new(p.pkid)).write(out, MAX_OUTGOING)?;
                }
                if p.topic != desired_topic || p.payload.is_empty() || draining {
                    return Ok(());
                }
                tally.desired_received.fetch_add(1, Ordering::Relaxed);
                match device.on_desired(&p.payload, &shared.catalog, shared.now()) {
                    Ok(answer) => self.queue(device, answer, out, tally)?,
                    Err(e) => {
                        tally.desired_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(device = %device.id(), error = %e, "desired state not acted on");
                    }
                }
            }
            v4::Packet::SubAck(ack)
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, v4::SubscribeReasonCode::Failure)) =>
            {
                return Err(LinkError::SubscriptionRefused);
            }
            v4::Packet::Disconnect => return Err(LinkError::Closed),
            _ => {}
        }
        Ok(())
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn read_packet(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<v4::Packet, LinkError> {
    loop {
        match v4::Packet::read(buf, MAX_INCOMING) {
            Ok(p) => return Ok(p),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(LinkError::Closed);
        }
    }
}

/// Counts as plain numbers, for the summary.
pub fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
