//! Broker sessions of servers that are gone, drained by a server that runs.
//!
//! On an external broker every server keeps a persistent session in the shared subscription,
//! so device messages queue while it restarts. Brokers keep routing a share of the messages to
//! such a session while its server is away (Mosquitto does, round robin; measured in
//! docs/ARCHITECTURE.md §31), so a server that dies and never comes back under its client id
//! would strand them, and a rollout waiting on those devices would stall.
//!
//! So each server holds a lease `mqtt-session:<client id>` in the shared database while it runs
//! (renewed every second, 5 s long), gives it up when it stops, and every server looks for
//! leases that expired or were given up. The first to take one connects under that client id,
//! takes the queued messages (stored, then acknowledged, like its own), unsubscribes so the
//! broker routes nothing more there, waits until a second passes without a message, and ends
//! the session (a clean connect), then deletes the lease. A server coming back under its old id
//! waits until any such drain is over before it connects, so the two never take the session
//! from each other.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet};

use crate::broker::{MqttError, client_options, device_filters};
use crate::config::{BrokerAddress, Config};
use crate::ingest::{Ingested, ingest};
use crate::metrics::Metrics;
use crate::store::Store;

const LEASE_PREFIX: &str = "mqtt-session:";
const LEASE_MS: i64 = 5_000;
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A drained session is quiet when no message came for this long after the unsubscription.
const QUIET: Duration = Duration::from_secs(1);
/// How long a drain may take before it is abandoned (and retried once the lease expires).
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// Takes the session lease of the first of `users` (the replica slots, each a broker user) that
/// no running server holds, and returns that user name: it is this server's client id while it
/// runs. Waits while every slot is taken (a replica stopping frees its slot at once, one that
/// died within [`LEASE_MS`]). A slot left behind is taken over as it is: its queued messages
/// are then this server's, as they would be after a restart.
pub async fn claim_replica_slot(
    store: &dyn Store,
    users: &[String],
    instance: &str,
    clock: &dyn edgefleet_clock::Clock,
) -> String {
    let mut warned = false;
    loop {
        for user in users {
            match store
                .lease(
                    &format!("{LEASE_PREFIX}{user}"),
                    instance,
                    clock.unix_ms(),
                    LEASE_MS,
                )
                .await
            {
                Ok(true) => return user.clone(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take a replica slot's lease; retrying")
                }
            }
        }
        if !warned {
            tracing::warn!(
                slots = users.len(),
                "every server replica slot on the broker is taken; waiting for one to free (raise mqtt.replicas and rerun mosquitto-config to run more replicas)"
            );
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a server needs to keep its own session lease and drain others'.
#[derive(Clone)]
pub struct Sessions {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    pub address: BrokerAddress,
    pub password: String,
    pub share_group: String,
    /// This server process (the lease holder).
    pub instance: String,
    /// This server's own client id.
    pub client_id: String,
    /// Device keys, to open what the drained sessions hold.
    pub keys: Arc<crate::device_keys::DeviceKeys>,
    /// Session leases this server is draining now.
    pub draining: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    pub clock: Arc<dyn edgefleet_clock::Clock>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("client_id", &self.client_id)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    fn own_lease(&self) -> String {
        format!("{LEASE_PREFIX}{}", self.client_id)
    }

    /// Waits until this server holds its own session lease: at once, unless another server is
    /// still draining the session this client id left behind.
    pub async fn wait_until_ours(&self) {
        let mut waited = false;
        loop {
            match self
                .store
                .lease(
                    &self.own_lease(),
                    &self.instance,
                    self.clock.unix_ms(),
                    LEASE_MS,
                )
                .await
            {
                Ok(true) => return,
                Ok(false) if !waited => {
                    tracing::info!(client_id = %self.client_id, "another server is draining this client id's broker session; waiting for it");
                    waited = true;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take this server's session lease; retrying")
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Renews this server's lease and drains sessions left behind, until `shutdown`; a drain
    /// still running then is abandoned (its lease expires and another server takes it up).
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        let mut drains = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    drains.shutdown().await;
                    return;
                }
                _ = tick.tick() => {}
            }
            // Reap the drains that ended, so the set holds only those running.
            while drains.try_join_next().is_some() {}
            if let Err(e) = self
                .store
                .lease(
                    &self.own_lease(),
                    &self.instance,
                    self.clock.unix_ms(),
                    LEASE_MS,
                )
                .await
            {
                tracing::warn!(error = %e, "cannot renew this server's session lease");
            }
            let left = match self
                .store
                .expired_leases(LEASE_PREFIX, self.clock.unix_ms())
                .await
            {
                Ok(left) => left,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for broker sessions left behind");
                    continue;
                }
            };
            for lease in left {
                if lease == self.own_lease() {
                    continue;
                }
                match self
                    .store
                    .lease(
                        &lease,
                        &self.instance,
                        self.clock.unix_ms(),
                        DRAIN_LIMIT.as_millis() as i64,
                    )
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, lease, "cannot take a left-behind session lease");
                        continue;
                    }
                }
                // In a task of its own: a long drain must not hold up renewing this server's
                // own lease, or another server would take this live server's session.
                let Ok(mut draining) = self.draining.lock() else {
                    continue;
                };
                if !draining.insert(lease.clone()) {
                    continue;
                }
                drop(draining);
                drains.spawn(self.clone().drain_left_behind(lease));
            }
        }
    }

    async fn drain_left_behind(self, lease: String) {
        let client_id = &lease[LEASE_PREFIX.len()..];
        match tokio::time::timeout(DRAIN_LIMIT, self.drain(client_id)).await {
            Ok(Ok(messages)) => {
                tracing::info!(
                    client_id,
                    messages,
                    "drained and ended the broker session of a server that stopped"
                );
                self.metrics.mqtt_sessions_drained.inc();
                if let Err(e) = self.store.release_lease(&lease, &self.instance).await {
                    tracing::warn!(error = %e, lease, "cannot delete a drained session's lease");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, client_id, "draining a left-behind broker session failed; retrying later")
            }
            Err(_) => {
                tracing::warn!(
                    client_id,
                    "draining a left-behind broker session took too long; retrying later"
                )
            }
        }
        if let Ok(mut draining) = self.draining.lock() {
            draining.remove(&lease);
        }
    }

    /// Gives this server's lease up, so another server drains its session at once.
    pub async fn hand_over(&self) {
        if let Err(e) = self
            .store
            .lease(&self.own_lease(), &self.instance, 0, 0)
            .await
        {
            tracing::warn!(error = %e, "cannot give up this server's session lease");
        }
    }

    /// Takes what the session `client_id` holds, stops its subscription and ends it. Returns the
    /// number of messages taken.
    async fn drain(&self, client_id: &str) -> Result<usize, MqttError> {
        let options = client_options(
            &self.config,
            &self.address,
            &self.password,
            client_id,
            false,
        )?;
        let (client, mut events) = connection(options);
        let mut messages = 0;
        let mut unsubscribed = 0;
        let filters = device_filters(Some(&self.share_group));
        let mut acked = 0;
        loop {
            let wait = if unsubscribed == filters.len() {
                QUIET
            } else {
                DRAIN_LIMIT
            };
            let event = match tokio::time::timeout(wait, events.recv()).await {
                Err(_) => break,
                Ok(None) => return Err(MqttError::Publish("the broker connection closed".into())),
                Ok(Some(Err(e))) => return Err(MqttError::Publish(e)),
                Ok(Some(Ok(event))) => event,
            };
            match event {
                Event::Incoming(Packet::ConnAck(_)) => {
                    for filter in &filters {
                        client
                            .unsubscribe(filter.clone())
                            .await
                            .map_err(|e| MqttError::Publish(e.to_string()))?;
                    }
                }
                Event::Incoming(Packet::UnsubAck(_)) => unsubscribed += 1,
                Event::Incoming(Packet::Publish(publish)) => {
                    let outcome = ingest(
                        &*self.store,
                        &self.metrics,
                        &self.keys,
                        &publish.topic,
                        &publish.payload,
                        self.clock.unix_us(),
                    )
                    .await;
                    if let Ingested::Failed(reason) = outcome {
                        // Unacknowledged, it stays in the session for the next attempt.
                        return Err(MqttError::Publish(format!("storing failed: {reason}")));
                    }
                    messages += 1;
                    client
                        .ack(&publish)
                        .await
                        .map_err(|e| MqttError::Publish(e.to_string()))?;
                }
                Event::Outgoing(rumqttc::Outgoing::PubAck(_)) => acked += 1,
                _ => {}
            }
        }
        // Every acknowledgement on the wire before the session ends.
        while acked < messages {
            match tokio::time::timeout(QUIET, events.recv()).await {
                Ok(Some(Ok(Event::Outgoing(rumqttc::Outgoing::PubAck(_))))) => acked += 1,
                Ok(Some(Ok(_))) => {}
                _ => return Err(MqttError::Publish("acknowledgements were not sent".into())),
            }
        }
        disconnect(&client, &mut events).await;
        // A clean connect discards the (now empty, unsubscribed) session on the broker.
        let options = client_options(&self.config, &self.address, &self.password, client_id, true)?;
        let (client, mut events) = connection(options);
        loop {
            match tokio::time::timeout(DRAIN_LIMIT, events.recv()).await {
                Ok(Some(Ok(Event::Incoming(Packet::ConnAck(_))))) => break,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(MqttError::Publish(e)),
                _ => return Err(MqttError::Publish("no answer to a clean connect".into())),
            }
        }
        disconnect(&client, &mut events).await;
        Ok(messages)
    }
}

/// A drain connection's events; dropping it ends the connection's poller, so a drain abandoned
/// at shutdown leaves no task behind.
struct Events {
    rx: tokio::sync::mpsc::Receiver<Result<Event, String>>,
    poller: tokio::task::AbortHandle,
}

impl Events {
    async fn recv(&mut self) -> Option<Result<Event, String>> {
        self.rx.recv().await
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// A client whose event loop a task of its own drives (a poll is never cancelled midway); its
/// events arrive on a channel, which can be waited on with a timeout. The task ends with the
/// first connection error, and with the receiver.
fn connection(options: rumqttc::MqttOptions) -> (AsyncClient, Events) {
    let (client, mut eventloop) = AsyncClient::new(options, 1_000);
    let (tx, rx) = tokio::sync::mpsc::channel(1_000);
    let poller = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await.map_err(|e| e.to_string());
            let failed = event.is_err();
            if tx.send(event).await.is_err() || failed {
                return;
            }
        }
    });
    (
        client,
        Events {
            rx,
            poller: poller.abort_handle(),
        },
    )
}

async fn disconnect(client: &AsyncClient, events: &mut Events) {
    if client.disconnect().await.is_ok() {
        // The loop reports the disconnect going out, then ends.
        while let Ok(Some(Ok(event))) = tokio::time::timeout(QUIET, events.recv()).await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    }
}
