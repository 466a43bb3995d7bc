//! Device messages from the broker into the store, acknowledged only once stored.

use super::device_order::DeviceOrder;
use super::link::Delivery;
use super::*;

/// Stores device messages concurrently (up to [`super::ingest_window`] at a time, over the
/// store's pool) and acknowledges them strictly in arrival order, as MQTT requires. One at a time, a
/// server on PostgreSQL spent its time waiting on round trips (docs/BENCHMARKS.md). One
/// device's reported states are still stored in the order it sent them ([`DeviceOrder`]).
///
/// On the embedded broker (`clear_refused`), a refused message's topic is cleared of any
/// retained message (an empty retained publish): whatever a device left on a device channel,
/// forged or junk, goes, and the broker's memory of retained messages stays bounded by what the
/// server accepts. (Other topics are the watcher's, [`super::watcher`].)
pub(super) async fn ingester(parts: Ingester, mut from_loop: super::handoff::Receiver) {
    let Ingester {
        handle,
        store,
        metrics,
        keys,
        clock,
        clear_refused,
        window,
        shutdown,
    } = parts;
    let mut in_flight: FuturesOrdered<IngestFuture> = FuturesOrdered::new();
    let mut order = DeviceOrder::default();
    let mut open = true;
    loop {
        metrics.ingest_queued.set(from_loop.len() as i64);
        // With nothing left to take or store, every branch below would be disabled.
        if !open && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            Some((delivery, outcome, reporter)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(device) = &reporter {
                    order.finished(device);
                }
                let Delivery { publish, ack } = delivery;
                if clear_refused && matches!(outcome, Ingested::Refused(_)) {
                    match handle.link.clear_retained(&publish.topic) {
                        Ok(()) => {
                            metrics.mqtt_retained_cleared.inc();
                        }
                        Err(e) => tracing::warn!(topic = %publish.topic, error = %e, "cannot clear a refused message's topic"),
                    };
                }
                if finish(&metrics, &publish, outcome, reporter.is_some())
                    && let Err(e) = handle.link.ack(ack)
                {
                    tracing::warn!(error = %e, "cannot acknowledge a stored device message");
                }
            }
            received = from_loop.recv(), if open && in_flight.len() < window => match received {
                Some(queued) => {
                    let store = store.clone();
                    let metrics = metrics.clone();
                    let keys = keys.clone();
                    // Stamped here, in arrival order, though stored concurrently.
                    let received_us = clock.unix_us();
                    // Only reported state is order-sensitive (a stale one is refused); events
                    // and batches are stored once per id or seq in any order, and waiting for a
                    // device's previous one would cut a chatty device (an outbox flushed after an
                    // outage) to one store round trip at a time.
                    let reporter = Topic::parse(&queued.delivery.publish.topic)
                        .ok()
                        .filter(|topic| topic.channel == Channel::Reported)
                        .map(|topic| topic.device);
                    let mut turn = reporter.as_ref().map(|device| order.take_turn(device));
                    in_flight.push_back(Box::pin(async move {
                        if let Some(turn) = &mut turn {
                            turn.wait().await;
                        }
                        let started = std::time::Instant::now();
                        let publish = &queued.delivery.publish;
                        let outcome =
                            ingest(&*store, &metrics, &keys, &publish.topic, &publish.payload, received_us)
                                .await;
                        drop(turn);
                        let took = started.elapsed();
                        metrics.ingest_seconds.observe(took.as_secs_f64());
                        if took >= SLOW_STORE {
                            tracing::warn!(topic = %publish.topic, seconds = took.as_secs_f64(),
                                "storing one device message took this long; the store is too slow for the fleet");
                        }
                        (queued.done(), outcome, reporter)
                    }) as IngestFuture);
                }
                None => open = false,
            },
            () = shutdown.cancelled(), if open => open = false,
        }
    }
    // Everything taken is stored and its acknowledgement queued ahead of the disconnect, which
    // ends the link's connection once sent.
    if shutdown.is_cancelled()
        && let Err(e) = handle.link.disconnect()
    {
        tracing::warn!(error = %e, "cannot queue the disconnect from the broker");
    }
}

/// What the ingester works with.
pub(super) struct Ingester {
    pub(super) handle: MqttHandle,
    pub(super) store: Arc<dyn Store>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) keys: Arc<DeviceKeys>,
    pub(super) clock: Arc<dyn edgefleet_clock::Clock>,
    /// On the embedded broker: clear the topic of a refused message.
    pub(super) clear_refused: bool,
    /// Messages stored at once ([`super::ingest_window`]).
    pub(super) window: usize,
    pub(super) shutdown: CancellationToken,
}

/// Device messages being stored at once by one server on SQLite ([`super::ingest_window`]).
pub(super) const INGEST_WINDOW: usize = 64;
/// The same on PostgreSQL ([`super::ingest_window`]).
pub(super) const POSTGRES_INGEST_WINDOW: usize = 256;

/// A store of one message this slow is logged: the store is too slow for the fleet.
const SLOW_STORE: Duration = Duration::from_secs(5);

type IngestFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Delivery, Ingested, Option<DeviceId>)> + Send + 'static>,
>;

/// Counts a stored (or refused) message; returns whether to acknowledge it. A failed one stays
/// unacknowledged so the broker delivers it again after a reconnect. `reported`: it was a
/// device's reported state.
pub(super) fn finish(
    metrics: &Metrics,
    publish: &rumqttc::Publish,
    outcome: Ingested,
    reported: bool,
) -> bool {
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
            return false;
        }
        Ingested::Refused(reason) => {
            tracing::warn!(topic = %publish.topic, reason, "refused a device message");
        }
        // Brokers forward a live message without its retain flag and set it on the retained
        // copy a new subscription is handed: this report had been lost on the way.
        Ingested::Stored if publish.retain && reported => {
            metrics.reported_recovered.inc();
            tracing::info!(topic = %publish.topic, "stored a reported state from the broker's retained copy");
        }
        Ingested::Stored | Ingested::Duplicate | Ingested::Ignored => {}
    }
    true
}

pub(super) fn channel_label(topic: &str) -> String {
    Topic::parse(topic)
        .map(|t| t.channel.as_str().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
