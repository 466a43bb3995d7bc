//! The embedded broker (rumqttd) for pilots, and who may connect to it.

use super::*;

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
            // What rumqttd keeps of each filter's traffic, delivered or not: a ring of 4 x 8 MiB
            // (it was 10 x 100 MiB: a device could hold a gigabyte of the server's memory with
            // junk). The server's filters are four: the three device channels it ingests and the
            // watcher's `#` (each message in a ring per filter it matches), so junk holds at most
            // 128 MiB of them. The device channels' rings never carry the server's own desired
            // states; at 10,000 devices the ingesting connection kept up with them, at 15,000
            // rumqttd's router thread saturated and skipped it ahead on metrics
            // (docs/BENCHMARKS.md), which is why the embedded broker is for smaller fleets.
            max_segment_size: 8 * 1024 * 1024,
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
