//! One simulated device as a plain state machine: it is told what arrived and what time it is,
//! and answers with the messages an agent would publish. No sockets, no clock: the link drives it
//! and the tests below drive it directly.
//!
//! It mirrors what the rollout engine reads from a real agent: on a desired state it reports the
//! revision it acted on and `downloading`; after the group's install delay it either runs the
//! target (`committed`, the old version kept as previous) or refuses it (`rejected`, with a
//! reason) and keeps what it ran. Lifecycle events go out alongside, and a metrics batch per
//! window for the version it runs. The signature on desired state is not checked here: the agent's
//! verification has its own tests, and the simulator exists to load the server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_protocol::baseline::Baseline;
use edgefleet_protocol::message::{
    self, Desired, Event, EventKind, InstalledVersion, MetricsBatch, ProcessStats, Reported,
    ReportedModel, UpdateState,
};
use edgefleet_protocol::topic::Channel;
use edgefleet_protocol::{DeviceId, MessageId, ModelName};
use serde::Deserialize;

use crate::config::{GroupConfig, TelemetryConfig};
use crate::traffic;

/// What the registry says about one signed target.
#[derive(Debug, Clone)]
pub struct Release {
    pub model: ModelName,
    pub version: semver::Version,
    pub sequence: u64,
    pub sha256: String,
    pub baseline: Option<Arc<Baseline>>,
}

/// Signed target name → release.
pub type Catalog = BTreeMap<String, Release>;

/// A message for the link to seal and publish (QoS 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub channel: Channel,
    pub payload: Vec<u8>,
}

/// When, for the state machine: time since the run began (schedules) and the wall clock
/// (timestamps in messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub elapsed: Duration,
    pub unix: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("desired state is not a signed statement: {0}")]
    Desired(String),
    #[error("desired state is for {named}, not {own}")]
    OtherDevice { named: String, own: String },
    #[error("cannot encode a {kind} message: {detail}")]
    Encode { kind: &'static str, detail: String },
}

/// The desired state as the server publishes it: signed by the timestamp role. Only the statement
/// is read (see the module's note on signatures).
#[derive(Debug, Deserialize)]
struct SignedDesired {
    signed: Statement,
}

#[derive(Debug, Deserialize)]
struct Statement {
    desired: Desired,
}

#[derive(Debug, Clone)]
struct Slot {
    active: Option<InstalledVersion>,
    previous: Option<InstalledVersion>,
    state: UpdateState,
    last_error: Option<String>,
}

#[derive(Debug, Clone)]
struct PendingInstall {
    model: ModelName,
    target: String,
    rollout: Option<String>,
    due: Duration,
}

/// What a device did over the run, for the totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    pub desired: u64,
    pub committed: u64,
    pub rejected: u64,
    pub predictions: u64,
}

#[derive(Debug)]
pub struct SimDevice {
    id: DeviceId,
    group: Arc<GroupConfig>,
    telemetry: Arc<TelemetryConfig>,
    rng: fastrand::Rng,
    seed: u64,
    /// Events and metrics batches share one sequence, as the agent's outbox rows do.
    seq: u64,
    reported_seq: u64,
    desired_revision: u64,
    models: BTreeMap<ModelName, Slot>,
    pending: Vec<PendingInstall>,
    next_window: Duration,
    window_start_unix: u64,
    pub counts: DeviceCounts,
}

impl SimDevice {
    /// A device that runs `initial` (if any) from the start; its first window ends at a point of
    /// the window drawn from the seed, so a fleet's batches do not all arrive at once.
    pub fn new(
        id: DeviceId,
        group: Arc<GroupConfig>,
        telemetry: Arc<TelemetryConfig>,
        seed: u64,
        initial: Option<(&str, &Release)>,
        now: Now,
    ) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let window = Duration::from_secs(telemetry.window_seconds);
        let offset = window.mul_f64(rng.f64());
        let mut models = BTreeMap::new();
        if let Some((target, release)) = initial {
            models.insert(
                release.model.clone(),
                Slot {
                    active: Some(installed(target, release)),
                    previous: None,
                    state: UpdateState::Committed,
                    last_error: None,
                },
            );
        }
        Self {
            id,
            group,
            telemetry,
            rng,
            seed,
            seq: 0,
            reported_seq: 0,
            desired_revision: 0,
            models,
            pending: Vec::new(),
            next_window: now.elapsed + offset,
            window_start_unix: now.unix,
            counts: DeviceCounts::default(),
        }
    }

    pub fn id(&self) -> &DeviceId {
        &self.id
    }

    /// After every (re)connection: the retained reported state, as the agent sends it.
    pub fn on_connected(&mut self, now: Now) -> Result<Vec<Outgoing>, DeviceError> {
        Ok(vec![self.reported(now)?])
    }

    /// A desired-state message arrived. One with a revision not above the last acted on is a
    /// replay or the retained copy of what was already done: ignored.
    pub fn on_desired(
        &mut self,
        payload: &[u8],
        catalog: &Catalog,
        now: Now,
    ) -> Result<Vec<Outgoing>, DeviceError> {
        let signed: SignedDesired =
            serde_json::from_slice(payload).map_err(|e| DeviceError::Desired(e.to_string()))?;
        let desired = signed.signed.desired;
        if desired.device != self.id {
            return Err(DeviceError::OtherDevice {
                named: desired.device.to_string(),
                own: self.id.to_string(),
            });
        }
        if desired.revision <= self.desired_revision {
            return Ok(Vec::new());
        }
        self.desired_revision = desired.revision;
        self.counts.desired += 1;
        let mut out = Vec::new();
        for wanted in &desired.models {
            let slot = self.models.entry(wanted.model.clone()).or_insert(Slot {
                active: None,
                previous: None,
                state: UpdateState::Idle,
                last_error: None,
            });
            let runs_it = slot.active.as_ref().map(|a| a.target.as_str()) == Some(&wanted.target);
            // A newer desired state replaces an install still in progress for the model.
            self.pending.retain(|p| p.model != wanted.model);
            if runs_it {
                slot.state = UpdateState::Committed;
                continue;
            }
            if !catalog.contains_key(&wanted.target) {
                slot.state = UpdateState::Rejected;
                slot.last_error = Some(format!(
                    "{} is not a signed target this device can find",
                    wanted.target
                ));
                continue;
            }
            slot.state = UpdateState::Downloading;
            slot.last_error = None;
            self.pending.push(PendingInstall {
                model: wanted.model.clone(),
                target: wanted.target.clone(),
                rollout: wanted.rollout.clone(),
                due: now.elapsed + Duration::from_millis(self.group.install_delay_ms),
            });
            out.push(self.event(
                now,
                EventKind::Downloading,
                &wanted.model,
                &wanted.target,
                wanted.rollout.clone(),
                None,
            )?);
        }
        out.push(self.reported(now)?);
        Ok(out)
    }

    /// When the device next has something to do on its own.
    pub fn next_due(&self) -> Duration {
        self.pending
            .iter()
            .map(|p| p.due)
            .chain([self.next_window])
            .min()
            .unwrap_or(self.next_window)
    }

    /// Finishes the installs and the telemetry window that are due.
    pub fn on_tick(&mut self, catalog: &Catalog, now: Now) -> Result<Vec<Outgoing>, DeviceError> {
        let mut out = Vec::new();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.due <= now.elapsed);
        self.pending = later;
        for install in &due {
            out.extend(self.finish_install(install, catalog, now)?);
        }
        if !due.is_empty() {
            out.push(self.reported(now)?);
        }
        if now.elapsed >= self.next_window {
            out.push(self.metrics(catalog, now)?);
            self.next_window = now.elapsed + Duration::from_secs(self.telemetry.window_seconds);
            self.window_start_unix = now.unix;
        }
        Ok(out)
    }

    fn finish_install(
        &mut self,
        install: &PendingInstall,
        catalog: &Catalog,
        now: Now,
    ) -> Result<Vec<Outgoing>, DeviceError> {
        let Some(release) = catalog.get(&install.target) else {
            return Ok(Vec::new());
        };
        let fails = self.fails(&install.target);
        let Some(slot) = self.models.get_mut(&install.model) else {
            return Ok(Vec::new());
        };
        let kind = if fails {
            slot.state = UpdateState::Rejected;
            slot.last_error = Some(format!(
                "health check failed on {} (simulated failure)",
                install.target
            ));
            self.counts.rejected += 1;
            EventKind::Rejected
        } else {
            slot.previous = slot.active.take();
            slot.active = Some(installed(&install.target, release));
            slot.state = UpdateState::Committed;
            slot.last_error = None;
            self.counts.committed += 1;
            EventKind::Committed
        };
        let detail = slot.last_error.clone();
        Ok(vec![self.event(
            now,
            kind,
            &install.model,
            &install.target,
            install.rollout.clone(),
            detail,
        )?])
    }

    /// Whether this device's install of `target` fails: drawn from the seed and the target alone,
    /// so a run's failing devices do not depend on timing.
    fn fails(&self, target: &str) -> bool {
        // FNV-1a: a stable hash of the name (std's hasher may change between releases).
        let hash = target.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        fastrand::Rng::with_seed(self.seed ^ hash).f64() < self.group.install_failure_ratio
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn message_id(&mut self) -> MessageId {
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes);
        MessageId::from_random(bytes)
    }

    fn event(
        &mut self,
        now: Now,
        kind: EventKind,
        model: &ModelName,
        target: &str,
        rollout: Option<String>,
        detail: Option<String>,
    ) -> Result<Outgoing, DeviceError> {
        let event = Event {
            schema: message::SCHEMA_VERSION,
            id: self.message_id(),
            device: self.id.clone(),
            seq: self.next_seq(),
            at_unix: now.unix,
            kind,
            model: model.clone(),
            target: Some(target.to_owned()),
            rollout,
            detail,
            evidence: Vec::new(),
        };
        encode(Channel::Events, &event)
    }

    fn reported(&mut self, now: Now) -> Result<Outgoing, DeviceError> {
        self.reported_seq += 1;
        let reported = Reported {
            schema: message::SCHEMA_VERSION,
            id: self.message_id(),
            device: self.id.clone(),
            seq: self.reported_seq,
            at_unix: now.unix,
            agent_version: concat!("edgefleet-sim/", env!("CARGO_PKG_VERSION")).to_owned(),
            desired_revision: self.desired_revision,
            models: self
                .models
                .iter()
                .map(|(model, slot)| ReportedModel {
                    model: model.clone(),
                    active: slot.active.clone(),
                    previous: slot.previous.clone(),
                    state: slot.state,
                    last_error: slot.last_error.clone(),
                    shadow: None,
                    shadow_refused: None,
                })
                .collect(),
        };
        encode(Channel::Reported, &reported)
    }

    fn metrics(&mut self, catalog: &Catalog, now: Now) -> Result<Outgoing, DeviceError> {
        let mut models = Vec::new();
        let running: Vec<(ModelName, String)> = self
            .models
            .iter()
            .filter_map(|(m, s)| s.active.as_ref().map(|a| (m.clone(), a.target.clone())))
            .collect();
        for (model, target) in running {
            let Some(release) = catalog.get(&target) else {
                continue;
            };
            let requests = traffic::requests_in(&mut self.rng, &self.telemetry);
            self.counts.predictions += requests;
            models.push(traffic::window_metrics(
                &mut self.rng,
                &self.telemetry,
                &model,
                &release.version,
                release.baseline.as_deref(),
                self.group.drift.as_ref(),
                requests,
            ));
        }
        let batch = MetricsBatch {
            schema: message::SCHEMA_VERSION,
            id: self.message_id(),
            device: self.id.clone(),
            seq: self.next_seq(),
            window_start_unix: self.window_start_unix,
            window_end_unix: now.unix.max(self.window_start_unix),
            dropped_batches: 0,
            process: ProcessStats {
                cpu_seconds: now.elapsed.as_secs_f64() * 0.01,
                rss_bytes: 12 << 20,
            },
            models,
        };
        encode(Channel::Metrics, &batch)
    }
}

fn installed(target: &str, release: &Release) -> InstalledVersion {
    InstalledVersion {
        version: release.version.clone(),
        sequence: release.sequence,
        target: target.to_owned(),
        sha256: release.sha256.clone(),
        runtime: Some("tract".into()),
    }
}

fn encode<M: message::WireMessage>(channel: Channel, m: &M) -> Result<Outgoing, DeviceError> {
    let payload = message::encode(m).map_err(|e| DeviceError::Encode {
        kind: M::KIND,
        detail: e.to_string(),
    })?;
    Ok(Outgoing { channel, payload })
}

#[cfg(test)]
mod tests;
