//! Keeping the broker true to the store: restoring tampered desired state, sweeping stray
//! retained messages, re-publishing after a reconnection.

use super::*;

/// Devices whose desired topic held a message this server did not write, waiting to be restored.
pub(super) const RESTORE_QUEUE: usize = 1024;

/// Puts back what the server wants on a desired topic where a device published something else
/// (embedded broker, see [`DesiredGuard`]): the stored desired state signed afresh, or nothing
/// (an empty retained message) for a device the server wants nothing of or does not know.
pub(super) async fn desired_restorer(
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
pub(super) const SWEEP_FILTERS: [&str; 2] = ["#", "+/#"];

/// On the embedded broker, every `every`, has rumqttd hand over every retained message again so
/// that the ingester clears those it refuses: live clearing misses junk published faster than
/// the server reads (rumqttd's ring moves on without it). rumqttd forwards retained messages only
/// on a filter new to the connection, so the server moves between two filters that match the
/// same topics, `#` and `+/#`: the new one first, the old one dropped once the new one has had
/// time to deliver, so no live message falls in a gap (some arrive twice meanwhile; storing is
/// idempotent).
pub(super) async fn retained_sweeper(
    handle: MqttHandle,
    every: Duration,
    shutdown: CancellationToken,
) {
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

pub(super) async fn republisher(
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

/// Drives the embedded broker's desired-state publisher connection (see
/// [`MqttHandle::publisher`]) until shutdown, reconnecting as the main connection does. Publishes
/// still queued at shutdown are lost with the embedded broker itself; the next start publishes
/// every desired state again.
pub(super) async fn drive_publisher(
    handle: MqttHandle,
    mut eventloop: EventLoop,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let polled = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                tracing::debug!("the desired-state publisher connected to the embedded broker");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the desired-state publisher lost the embedded broker; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    if handle.publisher.try_disconnect().is_ok() {
        // A broker that is already gone must not hold shutdown up.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}
