//! The embedded broker's watcher: rumqttd has no topic rights, so an enrolled device can publish
//! — and retain — on any topic, another device's desired topic included. The watcher, a
//! connection of the server's own, subscribes to everything at QoS 0 and undoes what it must:
//! a desired state this server did not publish is replaced by the genuine one, and a topic that
//! is no device channel is cleared of what was retained there.
//!
//! Why a connection of its own, at QoS 0: everything published on the broker passes through it,
//! the server's own desired states included (a fleet-wide wave's worth at once, thousands of
//! signed statements). Through the ingesting connection that traffic shared one rumqttd ring
//! with the devices' reports, and at 15,000 devices the ring moved on past reports the broker had
//! already acknowledged (docs/BENCHMARKS.md). Here it has a ring of its own and needs no
//! acknowledgements; if the watcher ever falls a ring behind, it misses only what it would have
//! undone, and the periodic sweep ([`drive_watcher`]) hands retained messages over again.

use super::*;
use std::collections::VecDeque;

/// The digest of the last desired state this server published per device. On the embedded broker
/// (no topic rights) a device can publish — and retain — on another device's desired topic: a
/// forgery or a replay the victim refuses, or an empty message that wipes its retained state.
/// Either way a victim that reconnects would find nothing genuine retained. The watcher sees
/// every desired message (the server's own come back to it), so one the server did not write is
/// noticed and the genuine state restored ([`super::upkeep::desired_restorer`]).
#[derive(Debug, Default)]
pub(super) struct DesiredGuard {
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

    pub(super) fn record(&self, device: &DeviceId, bytes: &[u8]) {
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

/// What the watcher does about one message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing: the server's own, a device channel (the ingesting connection judges those), or
    /// an empty message on a topic that is thereby already clear.
    Pass,
    /// A desired state the server did not publish: put the genuine one back.
    Restore(DeviceId),
    /// No device channel: clear what may be retained there.
    Clear,
}

pub(super) fn judge(topic: &str, payload: &[u8], guard: &DesiredGuard) -> Verdict {
    match Topic::parse(topic) {
        Ok(t) if t.channel == Channel::Desired => {
            if guard.is_ours(&t.device, payload) {
                Verdict::Pass
            } else {
                Verdict::Restore(t.device)
            }
        }
        Ok(_) => Verdict::Pass,
        Err(_) if payload.is_empty() => Verdict::Pass,
        Err(_) => Verdict::Clear,
    }
}

/// The watcher's connection and what it works with.
pub(super) struct Watcher {
    pub(super) client: AsyncClient,
    pub(super) eventloop: EventLoop,
    pub(super) guard: Arc<DesiredGuard>,
    /// `mqtt.retained_sweep_seconds`.
    pub(super) sweep_every: Duration,
    pub(super) restore: tokio::sync::mpsc::Sender<DeviceId>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) shutdown: CancellationToken,
}

/// What the watcher subscribes to: every topic.
const EVERYTHING: &str = "#";

/// Drives the watcher's connection until shutdown: subscribes to everything after each
/// connection, judges every message ([`judge`]), reconnects with backoff.
///
/// Every `sweep_every` it also sweeps: it drops its connection and connects afresh, and rumqttd
/// hands a new connection's subscription the retained messages it matches, so the watcher
/// undoes what it missed live (it reads at QoS 0, and rumqttd's ring moves on without a reader
/// that falls behind). rumqttd forwards retained messages only on a filter new to the
/// connection; a second filter would keep a second ring of all traffic, a new connection does
/// not. Messages published in the moment between connections are not seen live; what of them is
/// retained comes with the new subscription. rumqttd 0.20 hands over at most
/// `max_outgoing_packet_count` (1,000) retained messages per subscription, in its map's order:
/// past a thousand retained topics a sweep covers only part of them.
pub(super) async fn drive_watcher(watcher: Watcher) {
    let Watcher {
        client,
        mut eventloop,
        guard,
        sweep_every,
        restore,
        metrics,
        shutdown,
    } = watcher;
    let mut sweep =
        tokio::time::interval_at(tokio::time::Instant::now() + sweep_every, sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Duration::from_millis(200);
    loop {
        // `poll` is cancelled only at shutdown and by a sweep, which drops the connection anyway
        // (its cancel safety is undocumented).
        let polled = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                eventloop.clean();
                continue;
            }
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                if let Err(e) = client.try_subscribe(EVERYTHING, QoS::AtMostOnce) {
                    tracing::error!(error = %e, "the embedded broker's watcher cannot subscribe");
                }
            }
            Ok(rumqttc::Event::Incoming(Packet::Publish(publish))) => {
                match judge(&publish.topic, &publish.payload, &guard) {
                    Verdict::Pass => {}
                    // Full: the next sweep hands this message over again.
                    Verdict::Restore(device) => {
                        let _ = restore.try_send(device);
                    }
                    Verdict::Clear => clear_retained(&client, &metrics, &publish.topic),
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the embedded broker's watcher lost the broker; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    disconnect(&client, &mut eventloop).await;
}

/// Publishes an empty retained message on `topic`, which deletes what a device retained there.
/// The server sees its own empty publish come back and lets it be ([`judge`]), so this never
/// loops.
fn clear_retained(client: &AsyncClient, metrics: &Metrics, topic: &str) {
    match client.try_publish(topic, QoS::AtMostOnce, true, Vec::new()) {
        Ok(()) => {
            metrics.mqtt_retained_cleared.inc();
        }
        Err(e) => tracing::warn!(topic, error = %e, "cannot clear a topic"),
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn forged_desired_states_are_restored_junk_topics_cleared_and_device_channels_left_alone() {
        let guard = DesiredGuard::default();
        let dev = DeviceId::new("dev-01").unwrap();
        guard.record(&dev, b"genuine");
        let desired = "edgefleet/v1/devices/dev-01/desired";
        assert_eq!(judge(desired, b"genuine", &guard), Verdict::Pass);
        assert_eq!(judge(desired, b"genuine", &guard), Verdict::Pass, "a sweep");
        assert_eq!(
            judge(desired, b"forged", &guard),
            Verdict::Restore(dev.clone())
        );
        assert_eq!(judge(desired, b"", &guard), Verdict::Restore(dev), "a wipe");
        for channel in ["reported", "events", "metrics"] {
            let topic = format!("edgefleet/v1/devices/dev-01/{channel}");
            assert_eq!(judge(&topic, b"junk", &guard), Verdict::Pass, "{topic}");
        }
        for junk in ["junk/1", "edgefleet/v1/devices/dev-01/x", "#", ""] {
            assert_eq!(judge(junk, b"junk", &guard), Verdict::Clear, "{junk}");
            // Its own clearing comes back to it: nothing more to do.
            assert_eq!(judge(junk, b"", &guard), Verdict::Pass, "{junk}");
        }
    }
}
