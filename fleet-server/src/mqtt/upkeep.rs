//! Keeping the broker true to the store: restoring tampered desired state, re-publishing after
//! a reconnection.

use super::*;

/// Devices whose desired topic held a message this server did not write, waiting to be restored.
pub(super) const RESTORE_QUEUE: usize = 1024;

/// Puts back what the server wants on a desired topic where a device published something else
/// (embedded broker, see [`super::watcher`]): the stored desired state signed afresh, or nothing
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
    publisher: AsyncClient,
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
    disconnect(&publisher, &mut eventloop).await;
}

/// Sends a DISCONNECT on a helper connection at shutdown and waits (up to a second: a broker
/// that is already gone must not hold shutdown up) until it is out.
pub(super) async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
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
