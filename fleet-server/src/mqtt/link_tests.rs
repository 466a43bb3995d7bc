//! The link against the embedded broker (rumqttd, in this process), and against a peer that
//! speaks MQTT from a script for what no broker does on demand: fall silent, refuse a login, drop
//! a connection between a publish and its PUBACK.

use std::collections::HashSet;

use futures::SinkExt;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

use super::*;
use crate::mqtt::handoff;

fn config(port: u16, keep_alive: Duration) -> LinkConfig {
    LinkConfig {
        host: "127.0.0.1".into(),
        port,
        tls: None,
        client_id: "fleet-server-test".into(),
        username: "fleet-server".into(),
        password: "secret".into(),
        keep_alive,
        clean_session: true,
        max_incoming: 1 << 20,
        max_outgoing: 1 << 20,
        publish_slots: 100,
    }
}

async fn embedded_broker() -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let anyone: crate::mqtt::Authenticator = Arc::new(|_, _, _| Box::pin(async { true }));
    crate::mqtt::start_embedded_broker(([127, 0, 0, 1], port).into(), anyone)
        .await
        .unwrap();
    port
}

/// A device publishing `count` QoS 1 messages on `topic`, acknowledged by the broker.
async fn device_publishes(port: u16, topic: &str, count: usize) {
    let mut options = rumqttc::MqttOptions::new("device-1", "127.0.0.1", port);
    options.set_credentials("device-1", "pw");
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, count + 10);
    for i in 0..count {
        client
            .publish(topic, QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    let mut acknowledged = 0;
    while acknowledged < count {
        if let rumqttc::Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
            acknowledged += 1;
        }
    }
}

/// Connects the link once and serves the connection until it ends.
async fn serve_until_done(
    mut link: Link,
    to_ingest: handoff::Sender,
    shutdown: CancellationToken,
) -> (usize, Result<(), LinkError>) {
    let connection = match link.connect().await {
        Ok(c) => c,
        Err(e) => return (0, Err(e)),
    };
    (1, link.serve(connection, &to_ingest, &shutdown).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_and_pings_go_out_while_the_reader_waits_for_the_store() {
    let port = embedded_broker().await;
    let metrics = Arc::new(Metrics::default());
    // One second of keep-alive: rumqttd drops a client silent for 1.5 s, and the link declares
    // the broker gone after 2 s without a byte.
    let (handle, link) = link(config(port, Duration::from_secs(1)), metrics.clone());
    // Room for a few messages only: the reader soon waits for the "store" below.
    let (to_ingest, mut from_link) = handoff::handoff(4 * 1024);
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(serve_until_done(link, to_ingest, shutdown.clone()));
    handle.subscribe(vec!["edgefleet/#".into()]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // More than rumqttd's in-flight window (500) for the server: the rest flows only as the
    // server acknowledges.
    const SENT: usize = 1_200;
    device_publishes(port, "edgefleet/v1/devices/device-1/events", SENT).await;

    // The store takes nothing for 5 s — five keep-alives — while the reader waits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !served.is_finished(),
        "the connection ended: {:?}",
        served.await
    );
    let mut seen = HashSet::new();
    let mut most_unacknowledged = 0;
    while seen.len() < SENT {
        let queued = tokio::time::timeout(Duration::from_secs(10), from_link.recv())
            .await
            .expect("every message arrives once the store takes them")
            .unwrap();
        most_unacknowledged = most_unacknowledged.max(metrics.mqtt_unacknowledged.get());
        let delivery = queued.done();
        seen.insert(delivery.publish.payload.clone());
        handle.ack(delivery.ack).unwrap();
    }
    assert!(
        most_unacknowledged <= 500,
        "rumqttd's window holds: {most_unacknowledged}"
    );
    handle.disconnect().unwrap();
    let (connections, ended) = served.await.unwrap();
    assert_eq!(connections, 1);
    assert!(ended.is_ok(), "ended by the disconnect: {ended:?}");
    assert_eq!(metrics.mqtt_unsent_acks.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_states_take_slots_that_the_brokers_pubacks_give_back() {
    let port = embedded_broker().await;
    let metrics = Arc::new(Metrics::default());
    let (handle, link) = link(config(port, Duration::from_secs(5)), metrics);
    let (to_ingest, _from_link) = handoff::handoff(1 << 20);
    let served = tokio::spawn(serve_until_done(link, to_ingest, CancellationToken::new()));
    // Ten times the slots: the publishes complete only if PUBACKs give slots back.
    for i in 0..1_000 {
        tokio::time::timeout(
            Duration::from_secs(10),
            handle.publish_retained(format!("edgefleet/v1/devices/d{i}/desired"), vec![1; 100]),
        )
        .await
        .expect("a slot comes back with each PUBACK")
        .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while handle.slots.available_permits() < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every slot back once the broker acknowledged all");
    handle.disconnect().unwrap();
    assert!(served.await.unwrap().1.is_ok());
}

/// A peer speaking MQTT from a script.
struct Peer {
    listener: TcpListener,
}

impl Peer {
    /// The peer, and a link to it with `keep_alive`.
    async fn with_link(keep_alive: Duration) -> (Self, LinkHandle, Link) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (handle, link) = link(config(port, keep_alive), Arc::new(Metrics::default()));
        (Self { listener }, handle, link)
    }

    /// Accepts a connection, takes its CONNECT and answers with `code`.
    async fn accept(
        &self,
        code: ConnectReturnCode,
        session_present: bool,
    ) -> Framed<tokio::net::TcpStream, Codec> {
        let (stream, _) = self.listener.accept().await.unwrap();
        let mut framed = Framed::new(
            stream,
            Codec {
                max_incoming_size: 1 << 20,
                max_outgoing_size: 1 << 20,
            },
        );
        assert!(matches!(framed.next().await, Some(Ok(Packet::Connect(_)))));
        framed
            .send(Packet::ConnAck(ConnAck::new(code, session_present)))
            .await
            .unwrap();
        framed
    }
}

/// A message waiting in the hand-off holds its own bytes, not the read buffer it arrived in: the
/// hand-off's bound counts topic and payload, so a payload that kept its whole read buffer
/// alive made the server hold far more than the bound while the store was behind.
#[tokio::test]
async fn a_waiting_message_holds_only_its_own_bytes() {
    let (peer, _handle, link) = Peer::with_link(Duration::from_secs(30)).await;
    let (to_ingest, mut from_link) = handoff::handoff(handoff::QUEUE_BYTES);
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(serve_until_done(link, to_ingest, shutdown.clone()));
    let mut broker = peer.accept(ConnectReturnCode::Success, false).await;
    // Many messages in one write, so that the link reads several of them at once.
    for n in 0..64u16 {
        let mut publish = Publish::new(
            "edgefleet/v1/devices/d1/metrics",
            QoS::AtLeastOnce,
            vec![b'x'; 1_000],
        );
        publish.pkid = n + 1;
        broker.feed(Packet::Publish(publish)).await.unwrap();
    }
    broker.flush().await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..64 {
        let queued = tokio::time::timeout(Duration::from_secs(10), from_link.recv())
            .await
            .expect("every message is handed over")
            .unwrap();
        waiting.push(queued);
    }
    for queued in &waiting {
        let publish = &queued.delivery.publish;
        assert_eq!(publish.payload.len(), 1_000);
        assert!(
            publish.payload.is_unique(),
            "a waiting message shares its payload's bytes with the read buffer or another message"
        );
    }
    drop(broker);
    let (_, ended) = served.await.unwrap();
    assert!(
        ended.is_err(),
        "the broker closed the connection: {ended:?}"
    );
}

#[tokio::test]
async fn a_broker_silent_for_two_keep_alives_is_declared_gone() {
    let (peer, _handle, mut link) = Peer::with_link(Duration::from_secs(1)).await;
    let (to_ingest, _from_link) = handoff::handoff(1 << 20);
    let accepted = tokio::spawn(async move {
        let mut framed = peer.accept(ConnectReturnCode::Success, false).await;
        // Takes the pings and answers none.
        while framed.next().await.is_some() {}
    });
    let connection = link.connect().await.unwrap();
    let started = std::time::Instant::now();
    let ended = link
        .serve(connection, &to_ingest, &CancellationToken::new())
        .await;
    assert!(matches!(ended, Err(LinkError::Silent(_))), "{ended:?}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    accepted.abort();
}

#[tokio::test]
async fn a_refused_login_says_what_to_check() {
    let (peer, _handle, mut link) = Peer::with_link(Duration::from_secs(5)).await;
    let accepted = tokio::spawn(async move {
        let _framed = peer
            .accept(ConnectReturnCode::BadUserNamePassword, false)
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let refused = link.connect().await.err().expect("refused");
    assert!(matches!(refused, LinkError::Refused(_)));
    assert!(refused.to_string().contains("mqtt.username"), "{refused}");
    accepted.await.unwrap();
}

#[tokio::test]
async fn a_desired_state_unacknowledged_when_the_connection_drops_goes_again() {
    let (peer, handle, mut link) = Peer::with_link(Duration::from_secs(5)).await;
    let (to_ingest, _from_link) = handoff::handoff(1 << 20);
    let script = tokio::spawn(async move {
        let mut first = peer.accept(ConnectReturnCode::Success, false).await;
        let Some(Ok(Packet::Publish(sent))) = first.next().await else {
            panic!("a publish first")
        };
        assert!(!sent.dup);
        drop(first); // gone before its PUBACK
        let mut second = peer.accept(ConnectReturnCode::Success, true).await;
        let Some(Ok(Packet::Publish(again))) = second.next().await else {
            panic!("the publish again first")
        };
        assert!(again.dup, "marked as sent before");
        assert_eq!((again.pkid, &again.topic), (sent.pkid, &sent.topic));
        second
            .send(Packet::PubAck(PubAck::new(again.pkid)))
            .await
            .unwrap();
        // The link's DISCONNECT.
        while let Some(Ok(packet)) = second.next().await {
            if packet == Packet::Disconnect {
                return;
            }
        }
        panic!("no DISCONNECT");
    });
    handle
        .publish_retained("edgefleet/v1/devices/d1/desired".into(), b"signed".to_vec())
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let connection = link.connect().await.unwrap();
    let first = link.serve(connection, &to_ingest, &shutdown).await;
    assert!(matches!(first, Err(LinkError::Closed)), "{first:?}");
    assert_eq!(handle.slots.available_permits(), 99, "the slot is kept");
    let connection = link.connect().await.unwrap();
    let serving = async { link.serve(connection, &to_ingest, &shutdown).await };
    let waiting = async {
        while handle.slots.available_permits() < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        handle.disconnect().unwrap();
    };
    let (second, ()) = tokio::join!(serving, waiting);
    assert!(second.is_ok(), "{second:?}");
    script.await.unwrap();
}

#[test]
fn an_acknowledgement_from_an_earlier_connection_is_dropped() {
    let metrics = Metrics::default();
    let pending = Mutex::new(Pending::default());
    let mut disconnect = false;
    let old = AckToken {
        connection: 1,
        pkid: 7,
    };
    let current = AckToken {
        connection: 2,
        pkid: 7,
    };
    metrics.mqtt_unsent_acks.set(2);
    metrics.mqtt_unacknowledged.set(1);
    assert!(encode(Outbound::Ack(old), &pending, &metrics, 2, &mut disconnect).is_none());
    assert_eq!(
        encode(
            Outbound::Ack(current),
            &pending,
            &metrics,
            2,
            &mut disconnect
        ),
        Some(Packet::PubAck(PubAck::new(7)))
    );
    assert_eq!(metrics.mqtt_unsent_acks.get(), 0);
    assert_eq!(metrics.mqtt_unacknowledged.get(), 0);
}

#[test]
fn packet_ids_skip_those_in_use_and_never_zero() {
    let mut pending = Pending {
        last: u16::MAX - 1,
        ..Pending::default()
    };
    pending.requests.insert(u16::MAX);
    pending.requests.insert(1);
    assert_eq!(pending.allocate(), Some(2));
    pending.requests.extend(2..=u16::MAX - 1);
    assert_eq!(pending.allocate(), None, "every id in use");
}
