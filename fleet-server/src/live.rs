//! What `GET /api/v1/stream` tells dashboards: device events, rollout changes and the status of
//! the devices each connection follows (the page it shows, at most [`DEVICES_FOLLOWED`]). One
//! poller per server reads the store once a second while anyone listens and shares what changed
//! with every connection. A connection starts with the whole picture, then gets the changes; it
//! holds at most [`BACKLOG`] ticks, and one further behind gets the whole picture again. So
//! neither the store's work nor a connection's memory grows with the number of open tabs or the
//! size of the fleet: the poller reads the followed devices, not the fleet, and rollouts as
//! summaries. Read from the store, not from what this server ingested, so every replica's stream
//! shows what any replica took in.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use edgefleet_protocol::api::{DeviceSummary, RunningModel};
use tokio::sync::broadcast;
use tokio::time::Instant;

use edgefleet_protocol::DeviceId;

use crate::store::Store;

/// A device heard from within this many seconds counts as online (agents report at least every
/// 60 s).
pub const ONLINE_SECONDS: i64 = 120;

/// How often the poller reads the store while anyone listens.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// Ticks a connection may fall behind before it is sent the whole picture again.
pub const BACKLOG: usize = 16;
/// The most recent events a new connection is shown.
const EVENTS_SHOWN: u32 = 200;
/// The most recent rollouts followed.
const ROLLOUTS_SHOWN: usize = 50;
/// A device's `last_seen` alone moving is sent at most this often (every message moves it).
const LAST_SEEN_STEP: i64 = 60;
/// The most devices one connection follows (a dashboard follows the page it shows).
pub const DEVICES_FOLLOWED: usize = 500;
/// The most devices the poller reads a tick, over every connection.
const DEVICES_READ: usize = 5_000;

/// How the API shows a device in lists and the stream.
pub fn device_summary(d: &crate::store::Device, now: i64) -> DeviceSummary {
    let running = d
        .reported
        .iter()
        .flat_map(|r| &r.models)
        .map(|m| {
            let running = RunningModel {
                version: m.active.as_ref().map(|a| a.version.to_string()),
                state: m.state,
            };
            (m.model.to_string(), running)
        })
        .collect();
    DeviceSummary {
        id: d.id.clone(),
        group: d.group.clone(),
        tags: d.tags.clone(),
        enrolled: d.enrolled_at.is_some(),
        enrolled_at: d.enrolled_at,
        last_seen: d.last_seen,
        online: d.last_seen.is_some_and(|t| now - t <= ONLINE_SECONDS),
        agent_version: d.agent_version.clone(),
        running,
        desired_revision: d.desired_revision,
    }
}

/// One thing to tell: its kind (`event`, `rollout`, `device`) and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: &'static str,
    pub data: Arc<str>,
    /// The device a `device` change is about: told only to connections following it.
    pub device: Option<Arc<str>>,
}

impl Change {
    fn new(kind: &'static str, value: &impl serde::Serialize) -> Option<Self> {
        let data = serde_json::to_string(value).ok()?;
        Some(Self {
            kind,
            data: data.into(),
            device: None,
        })
    }

    fn about(mut self, device: &str) -> Self {
        self.device = Some(device.into());
        self
    }
}

/// A device as far as the stream tells: its summary, `last_seen` in steps of
/// [`LAST_SEEN_STEP`].
fn coarse(summary: &DeviceSummary) -> DeviceSummary {
    DeviceSummary {
        last_seen: summary
            .last_seen
            .map(|t| t.div_euclid(LAST_SEEN_STEP) * LAST_SEEN_STEP),
        ..summary.clone()
    }
}

/// What the streams were last told, shared by all of them.
#[derive(Debug, Default)]
pub struct Picture {
    refreshed_at: Option<Instant>,
    /// The latest events, oldest first.
    events: VecDeque<((String, u64), Change)>,
    rollouts: HashMap<String, (u64, Change)>,
    devices: HashMap<String, (DeviceSummary, Change)>,
}

impl Picture {
    /// Everything, for a new connection: rollouts, devices, then the events oldest first.
    pub fn whole(&self) -> Vec<Change> {
        self.rollouts
            .values()
            .map(|(_, c)| c.clone())
            .chain(self.devices.values().map(|(_, c)| c.clone()))
            .chain(self.events.iter().map(|(_, c)| c.clone()))
            .collect()
    }

    /// Folds what the store now says into the picture; returns what changed.
    pub fn update(
        &mut self,
        mut events: Vec<crate::store::StoredEvent>,
        rollouts: &[crate::store::RolloutSummary],
        devices: &[crate::store::Device],
        now: i64,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        events.reverse();
        let known: HashSet<(String, u64)> = self.events.iter().map(|(k, _)| k.clone()).collect();
        for e in events {
            let key = (e.device.to_string(), e.seq);
            if !known.contains(&key)
                && let Some(change) = Change::new("event", &e)
            {
                out.push(change.clone());
                self.events.push_back((key, change));
            }
        }
        while self.events.len() > EVENTS_SHOWN as usize {
            self.events.pop_front();
        }
        for r in rollouts.iter().take(ROLLOUTS_SHOWN) {
            if self.rollouts.get(&r.view.id).map(|(rev, _)| *rev) != Some(r.revision)
                && let Some(change) = Change::new("rollout", &r.view)
            {
                out.push(change.clone());
                self.rollouts
                    .insert(r.view.id.clone(), (r.revision, change));
            }
        }
        let mut present = HashSet::with_capacity(devices.len());
        for d in devices {
            present.insert(d.id.as_str());
            let summary = device_summary(d, now);
            let told = coarse(&summary);
            if self.devices.get(d.id.as_str()).map(|(s, _)| s) != Some(&told)
                && let Some(change) =
                    Change::new("device", &summary).map(|c| c.about(d.id.as_str()))
            {
                out.push(change.clone());
                self.devices.insert(d.id.to_string(), (told, change));
            }
        }
        // A removed device, or one nobody follows any more, is forgotten (the dashboard learns
        // removals from the device list).
        self.devices.retain(|id, _| present.contains(id.as_str()));
        self.refreshed_at = Some(Instant::now());
        out
    }

    fn is_fresh(&self) -> bool {
        self.refreshed_at
            .is_some_and(|at| at.elapsed() < POLL_EVERY * 2)
    }
}

/// Which devices each open connection follows.
#[derive(Debug, Default)]
struct Followed {
    next: u64,
    by_connection: HashMap<u64, Arc<BTreeSet<String>>>,
}

/// The streams' shared poller state and the channel their changes go out on.
#[derive(Debug)]
pub struct Hub {
    ticks: broadcast::Sender<Arc<Vec<Change>>>,
    picture: tokio::sync::Mutex<Picture>,
    followed: Arc<Mutex<Followed>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            ticks: broadcast::channel(BACKLOG).0,
            picture: Default::default(),
            followed: Default::default(),
        }
    }
}

/// A connection's devices, followed until it is dropped (the connection closed).
#[derive(Debug)]
pub struct Following {
    id: u64,
    devices: Arc<BTreeSet<String>>,
    followed: Arc<Mutex<Followed>>,
}

impl Following {
    /// Whether this connection is told `change`.
    pub fn admits(&self, change: &Change) -> bool {
        change
            .device
            .as_ref()
            .is_none_or(|d| self.devices.contains(&**d))
    }

    /// Of `changes`, what this connection is told.
    pub fn filter(&self, changes: &[Change]) -> Vec<Change> {
        changes.iter().filter(|c| self.admits(c)).cloned().collect()
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_connection
            .remove(&self.id);
    }
}

/// A connection's subscription: the whole picture now, then the changes after it (filter them
/// with `following`).
#[derive(Debug)]
pub struct Subscription {
    pub whole: Vec<Change>,
    pub changes: broadcast::Receiver<Arc<Vec<Change>>>,
    pub following: Following,
}

impl Hub {
    /// Reads the store and tells every connection what changed (under the picture's lock, so a
    /// connection subscribing meanwhile gets either the old picture and these changes, or the
    /// new picture).
    async fn refresh(&self, picture: &mut Picture, store: &dyn Store, now: i64) {
        // A read that fails leaves that part as it was; the next tick tries again.
        let events = store.events(None, EVENTS_SHOWN).await.unwrap_or_default();
        let rollouts = store
            .rollout_summaries(false, ROLLOUTS_SHOWN)
            .await
            .unwrap_or_default();
        let followed: Vec<DeviceId> = self
            .followed_devices()
            .into_iter()
            .filter_map(|id| DeviceId::new(id).ok())
            .collect();
        let devices = if followed.is_empty() {
            Vec::new()
        } else {
            match store.devices_named(&followed).await {
                Ok(devices) => devices,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read devices for the live stream");
                    return;
                }
            }
        };
        let changes = picture.update(events, &rollouts, &devices, now);
        if !changes.is_empty() {
            // No receiver: nobody to tell.
            let _ = self.ticks.send(Arc::new(changes));
        }
    }

    /// Every device some connection follows (at most [`DEVICES_READ`]).
    fn followed_devices(&self) -> BTreeSet<String> {
        let followed = self.followed.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all = BTreeSet::new();
        for devices in followed.by_connection.values() {
            for id in devices.iter() {
                if all.len() >= DEVICES_READ {
                    tracing::warn!(
                        limit = DEVICES_READ,
                        "the live streams follow more devices than are read a tick"
                    );
                    return all;
                }
                all.insert(id.clone());
            }
        }
        all
    }

    /// A new connection following `devices`: the picture (refreshed first when nobody kept it
    /// fresh, or when it lacks devices this connection follows).
    pub async fn subscribe(
        &self,
        store: &dyn Store,
        now: i64,
        devices: BTreeSet<String>,
    ) -> Subscription {
        let devices = Arc::new(devices);
        let following = {
            let mut followed = self.followed.lock().unwrap_or_else(PoisonError::into_inner);
            followed.next += 1;
            let id = followed.next;
            followed.by_connection.insert(id, devices.clone());
            Following {
                id,
                devices,
                followed: self.followed.clone(),
            }
        };
        let mut picture = self.picture.lock().await;
        let missing = following
            .devices
            .iter()
            .any(|d| !picture.devices.contains_key(d));
        if !picture.is_fresh() || missing {
            self.refresh(&mut picture, store, now).await;
        }
        Subscription {
            changes: self.ticks.subscribe(),
            whole: following.filter(&picture.whole()),
            following,
        }
    }

    /// The whole picture again, for a connection that fell behind.
    pub async fn whole(&self, following: &Following) -> Vec<Change> {
        following.filter(&self.picture.lock().await.whole())
    }

    /// Polls the store every [`POLL_EVERY`] while any connection listens, until `shutdown`.
    pub async fn run(
        &self,
        store: Arc<dyn Store>,
        clock: Arc<dyn edgefleet_clock::Clock>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.ticks.receiver_count() == 0 {
                continue;
            }
            let mut picture = self.picture.lock().await;
            self.refresh(&mut picture, &*store, clock.unix()).await;
        }
    }
}

#[cfg(test)]
mod tests;
