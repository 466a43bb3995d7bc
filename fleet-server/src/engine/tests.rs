//! The rollout engine run in-process against a real SQLite store and simulated devices, with
//! time stepped by hand one second at a time: waves, bakes, timeouts, halts with roll-back,
//! approvals and the hand-over of the engine lease, each in milliseconds. What the devices do is
//! simulated here (they "install" a few seconds after their desired state changes, and report
//! through the store as the broker client would); the cross-process suite keeps proving the
//! wiring with real agents.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use edgefleet_protocol::message::{
    Desired, DesiredModel, Event, EventKind, InstalledVersion, Reported, ReportedModel,
    SCHEMA_VERSION, UpdateState,
};
use edgefleet_protocol::{DeviceId, MessageId, ModelName};

use super::{Assigner, BaselineSource, PassMemory, run_pass, take_lease};
use crate::desired::{DesiredError, WantedShadow};
use crate::rollout::StageRules;
use crate::rollout::{DeviceState, Gates, Rollout, RolloutSpec, RolloutState};
use crate::store::sqlite::SqliteStore;
use crate::store::{
    DeviceStore, NewDevice, RegistryStore, Release, RolloutStore, Stage, StateStore, StoredEvent,
};

const START: i64 = 1_800_000_000;

/// A desired change a device has not acted on yet: (revision, version, set at).
type Pending = (u64, Option<String>, i64);
const MODEL: &str = "churn";

fn target(version: &str) -> String {
    format!("models/{MODEL}/{version}/model.onnx")
}

fn installed(version: &str) -> InstalledVersion {
    InstalledVersion {
        version: semver::Version::parse(version).unwrap(),
        sequence: 1,
        target: target(version),
        sha256: "00".repeat(32),
        runtime: None,
    }
}

/// A fleet of simulated devices over a real store. Each acts on a desired-state change
/// `install_seconds` after it: installs the version (or, if it is `failing`, rejects it and
/// keeps what it ran), then reports. `silent` devices never act.
struct Fleet {
    store: SqliteStore,
    _dir: tempfile::TempDir,
    install_seconds: i64,
    failing: BTreeSet<String>,
    /// Devices that refuse the new version before installing it (too large, say): they keep
    /// what they run, report no install error, and say why in a rejected event.
    refusing: BTreeSet<String>,
    silent: BTreeSet<String>,
    /// Devices whose desired state cannot be set (the signer fails for them).
    unsignable: BTreeSet<String>,
    now: Mutex<i64>,
    /// Desired changes not yet acted on, by device.
    pending: Mutex<HashMap<String, Pending>>,
    /// Every desired change made: (time, device, version).
    changes: Mutex<Vec<(i64, String, Option<String>)>>,
    /// Each device's reported sequence and what it runs.
    running: Mutex<BTreeMap<String, (u64, Option<String>)>>,
    rules: StageRules,
    /// What the engine keeps between passes (telemetry, reported states).
    memory: tokio::sync::Mutex<PassMemory>,
}

impl Fleet {
    async fn new(devices: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("fleet.db")).unwrap();
        let fleet = Self {
            store,
            _dir: dir,
            install_seconds: 3,
            failing: BTreeSet::new(),
            refusing: BTreeSet::new(),
            silent: BTreeSet::new(),
            unsignable: BTreeSet::new(),
            now: Mutex::new(START),
            pending: Mutex::new(HashMap::new()),
            changes: Mutex::new(Vec::new()),
            running: Mutex::new(BTreeMap::new()),
            rules: StageRules::default(),
            memory: Default::default(),
        };
        for (sequence, version) in [(1, "1.0.0"), (2, "2.0.0")] {
            let release = Release {
                target: target(version),
                model: MODEL.into(),
                version: version.into(),
                sequence,
                sha256: "00".repeat(32),
                length: 1,
                stage: Stage::Staging,
                pushed_by: "op".into(),
                pushed_at: START - 100,
            };
            fleet.store.record_release(&release).await.unwrap();
        }
        for i in 0..devices {
            let id = DeviceId::new(format!("d{i:02}")).unwrap();
            let new = NewDevice {
                id: id.clone(),
                group: "g".into(),
                tags: BTreeMap::new(),
            };
            fleet
                .store
                .add_device(&new, "t", START + 3600, START - 10, false)
                .await
                .unwrap();
            fleet
                .store
                .enroll(&id, "t", &format!("c{i}"), "m", None, START - 5)
                .await
                .unwrap();
            fleet
                .report(id.as_str(), 0, Some("1.0.0"), UpdateState::Committed)
                .await;
        }
        fleet
    }

    async fn report(&self, device: &str, revision: u64, version: Option<&str>, state: UpdateState) {
        let seq = {
            let mut running = self.running.lock().unwrap();
            let entry = running.entry(device.to_owned()).or_insert((0, None));
            entry.0 += 1;
            entry.1 = version.map(str::to_owned);
            entry.0
        };
        let reported = Reported {
            schema: SCHEMA_VERSION,
            id: MessageId::from_random([seq as u8; 16]),
            device: DeviceId::new(device).unwrap(),
            seq,
            at_unix: 0,
            agent_version: "sim".into(),
            desired_revision: revision,
            models: vec![ReportedModel {
                shadow_refused: None,
                shadow: None,
                model: ModelName::new(MODEL).unwrap(),
                active: version.map(installed),
                previous: None,
                state,
                last_error: (state == UpdateState::Rejected).then(|| "health check failed".into()),
            }],
        };
        let now = *self.now.lock().unwrap();
        assert!(self.store.record_reported(&reported, now).await.unwrap());
    }

    /// The devices whose install time has come act on their desired state.
    async fn devices_act(&self, now: i64) {
        let due: Vec<(String, u64, Option<String>)> = {
            let mut pending = self.pending.lock().unwrap();
            let due: Vec<_> = pending
                .iter()
                .filter(|(d, (_, _, at))| {
                    now >= at + self.install_seconds && !self.silent.contains(*d)
                })
                .map(|(d, (rev, version, _))| (d.clone(), *rev, version.clone()))
                .collect();
            for (d, ..) in &due {
                pending.remove(d);
            }
            due
        };
        for (device, revision, version) in due {
            if self.refusing.contains(&device) && version.as_deref() != Some("1.0.0") {
                self.refuse(&device, revision, version.as_deref()).await;
            } else if self.failing.contains(&device) && version.as_deref() != Some("1.0.0") {
                let kept = self.running.lock().unwrap()[&device].1.clone();
                self.report(&device, revision, kept.as_deref(), UpdateState::Rejected)
                    .await;
            } else {
                self.report(
                    &device,
                    revision,
                    version.as_deref(),
                    UpdateState::Committed,
                )
                .await;
            }
        }
    }

    async fn refuse(&self, device: &str, revision: u64, version: Option<&str>) {
        let seq = self.running.lock().unwrap()[device].0 + 1;
        let event = Event {
            schema: SCHEMA_VERSION,
            id: MessageId::from_random([200; 16]),
            device: DeviceId::new(device).unwrap(),
            seq,
            at_unix: 0,
            kind: EventKind::Rejected,
            model: ModelName::new(MODEL).unwrap(),
            target: version.map(target),
            rollout: None,
            detail: Some("the artifact is over this device's max_artifact_bytes".into()),
            evidence: Vec::new(),
        };
        let now = *self.now.lock().unwrap();
        self.store
            .record_event(&StoredEvent::received(event, now))
            .await
            .unwrap();
        let kept = self.running.lock().unwrap()[device].1.clone();
        self.report(device, revision, kept.as_deref(), UpdateState::Idle)
            .await;
    }

    fn changes_to(&self, device: &str) -> Vec<(i64, Option<String>)> {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, d, _)| d == device)
            .map(|(t, _, v)| (*t, v.clone()))
            .collect()
    }

    async fn start_rollout(&self, gates: Gates, waves: &[f64], rollback_on_halt: bool) -> String {
        let devices = self.store.devices(&Default::default()).await.unwrap();
        let plan = devices
            .iter()
            .map(|d| (d.id.to_string(), Some("1.0.0".to_owned())))
            .collect();
        let spec = RolloutSpec {
            strategy: Default::default(),
            shadow: None,
            model: MODEL.into(),
            version: "2.0.0".into(),
            target: target("2.0.0"),
            selector: Default::default(),
            waves: waves.to_vec(),
            gates,
            rollback_on_halt,
        };
        let mut rollout = Rollout::new("r-1".into(), spec, plan, "test".into(), START).unwrap();
        self.store.save_rollout(&mut rollout).await.unwrap();
        rollout.id
    }

    async fn rollout(&self, id: &str) -> Rollout {
        self.store.rollout(id).await.unwrap().unwrap()
    }

    async fn pass(&self, now: i64) {
        let mut memory = self.memory.lock().await;
        run_pass(&self.store, &mut memory, self, self, &self.rules, now).await;
    }

    /// Passes for `seconds` from `from`, whatever happens.
    async fn idle(&self, from: i64, seconds: i64) {
        for now in from..from + seconds {
            *self.now.lock().unwrap() = now;
            self.devices_act(now).await;
            self.pass(now).await;
        }
    }

    /// Steps time a second at a time from `from`: devices act, then the engine passes; stops
    /// when `done` says so or after `seconds`. Returns the time it stopped at.
    async fn run(&self, id: &str, from: i64, seconds: i64, done: impl Fn(&Rollout) -> bool) -> i64 {
        for now in from..from + seconds {
            *self.now.lock().unwrap() = now;
            self.devices_act(now).await;
            self.pass(now).await;
            if done(&self.rollout(id).await) {
                return now;
            }
        }
        panic!(
            "not done after {seconds} s: {:?}",
            self.rollout(id).await.state
        );
    }
}

/// The simulated devices send no drift counts: no baseline is needed.
#[async_trait]
impl BaselineSource for Fleet {
    async fn baselines(&self) -> crate::baselines::Baselines {
        Default::default()
    }
}

#[async_trait]
impl Assigner for Fleet {
    async fn set_model_version(
        &self,
        device: &DeviceId,
        model: &str,
        version: Option<&str>,
        rollout: Option<&str>,
        shadow: Option<&WantedShadow>,
    ) -> Result<u64, DesiredError> {
        if self.unsignable.contains(device.as_str()) {
            return Err(DesiredError::NothingSigned);
        }
        let now = *self.now.lock().unwrap();
        let current = self
            .store
            .device(device)
            .await?
            .ok_or_else(|| DesiredError::UnknownDevice(device.clone()))?;
        let desired = Desired {
            schema: SCHEMA_VERSION,
            id: MessageId::from_random([1; 16]),
            device: device.clone(),
            revision: current.desired_revision + 1,
            issued_at_unix: now as u64,
            models: version
                .map(|v| DesiredModel {
                    shadow: shadow.map(|s| edgefleet_protocol::shadow::DesiredShadow {
                        target: target(&s.version),
                        artifact_urls: vec![],
                        share_ppm: edgefleet_protocol::shadow::to_ppm(s.share),
                        max_cpu_ppm: edgefleet_protocol::shadow::to_ppm(s.max_cpu_share),
                        mode: edgefleet_protocol::shadow::SlotMode::Shadow,
                    }),
                    model: ModelName::new(model).unwrap(),
                    target: target(v),
                    artifact_urls: vec![],
                    rollout: rollout.map(str::to_owned),
                })
                .into_iter()
                .collect(),
        };
        self.store.set_desired(&desired).await?;
        self.pending.lock().unwrap().insert(
            device.to_string(),
            (desired.revision, version.map(str::to_owned), now),
        );
        self.changes
            .lock()
            .unwrap()
            .push((now, device.to_string(), version.map(str::to_owned)));
        Ok(desired.revision)
    }
}

fn completed(r: &Rollout) -> bool {
    r.state == RolloutState::Completed
}

#[tokio::test]
async fn ten_devices_go_wave_by_wave_with_a_bake_between_and_each_installs_once() {
    let fleet = Fleet::new(10).await;
    let gates = Gates {
        bake_seconds: 30,
        ..Gates::default()
    };
    let id = fleet
        .start_rollout(gates, &[10.0, 50.0, 100.0], false)
        .await;
    let end = fleet.run(&id, START, 600, completed).await;

    let rollout = fleet.rollout(&id).await;
    assert!(
        rollout
            .devices
            .iter()
            .all(|d| d.state == DeviceState::Healthy)
    );
    // Wave 1 (1 device) at once; wave 2 (4 more) after its install and bake; wave 3 after
    // theirs. Every device gets the new version exactly once.
    let first_change = |d: &str| fleet.changes_to(d)[0].0;
    assert_eq!(first_change("d00"), START);
    for d in ["d01", "d02", "d03", "d04"] {
        assert!(first_change(d) >= START + 3 + 30, "{d} too early");
    }
    for d in ["d05", "d09"] {
        assert!(
            first_change(d) >= first_change("d01") + 3 + 30,
            "{d} too early"
        );
    }
    for i in 0..10 {
        let d = format!("d{i:02}");
        assert_eq!(
            fleet.changes_to(&d),
            [(first_change(&d), Some("2.0.0".into()))]
        );
    }
    assert!(end - START < 3 * (3 + 30) + 10, "took {} s", end - START);
}

impl Fleet {
    async fn stage(&self, version: &str) -> Stage {
        let releases = self.store.releases().await.unwrap();
        releases
            .iter()
            .find(|r| r.version == version)
            .map(|r| r.stage)
            .unwrap()
    }
}

/// A wave larger than one pass makes changes for: each pass starts at most 2,000 of its pending
/// devices, the next passes the rest, and every device still updates once.
#[tokio::test]
async fn a_wave_over_a_passs_budget_is_started_over_several_passes_each_device_once() {
    let fleet = Fleet::new(2_500).await;
    let id = fleet.start_rollout(Gates::default(), &[100.0], false).await;
    let changed = || fleet.changes.lock().unwrap().len();
    fleet.pass(START).await;
    assert_eq!(changed(), 2_000);
    fleet.pass(START + 1).await;
    assert_eq!(changed(), 2_500);
    fleet.run(&id, START + 1, 60, completed).await;
    for i in [0, 1_999, 2_000, 2_499] {
        assert_eq!(fleet.changes_to(&format!("d{i:02}")).len(), 1, "d{i:02}");
    }
}

#[tokio::test]
async fn a_completed_rollout_promotes_its_version_and_archives_the_one_no_device_runs_any_more() {
    let mut fleet = Fleet::new(4).await;
    fleet.rules.archive_replaced = true;
    let id = fleet
        .start_rollout(Gates::default(), &[50.0, 100.0], true)
        .await;
    // Halfway, nothing has changed in the registry yet.
    fleet.idle(START, 4).await;
    assert_eq!(fleet.stage("2.0.0").await, Stage::Staging);
    fleet.run(&id, START + 4, 120, completed).await;
    assert_eq!(fleet.stage("2.0.0").await, Stage::Production);
    assert_eq!(fleet.stage("1.0.0").await, Stage::Archived);
    let history: Vec<String> = fleet
        .rollout(&id)
        .await
        .history
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(
        history.iter().any(|t| t == "churn 2.0.0 is now production"),
        "{history:?}"
    );
    assert!(
        history.iter().any(|t| t == "churn 1.0.0 is now archived"),
        "{history:?}"
    );
}

#[tokio::test]
async fn a_halted_rollout_changes_no_stage_and_promotion_can_be_turned_off() {
    let mut fleet = Fleet::new(4).await;
    fleet.failing.insert("d03".into());
    let id = fleet
        .start_rollout(Gates::default(), &[50.0, 100.0], true)
        .await;
    fleet
        .run(&id, START, 120, |r| {
            matches!(r.state, RolloutState::Halted { .. })
        })
        .await;
    fleet.idle(START + 120, 10).await;
    assert_eq!(fleet.stage("2.0.0").await, Stage::Staging);
    assert_eq!(fleet.stage("1.0.0").await, Stage::Staging);

    let mut quiet = Fleet::new(2).await;
    quiet.rules.promote_on_completion = false;
    quiet.rules.archive_replaced = false;
    let id = quiet.start_rollout(Gates::default(), &[100.0], true).await;
    quiet.run(&id, START, 60, completed).await;
    assert_eq!(quiet.stage("2.0.0").await, Stage::Staging);
    assert_eq!(quiet.stage("1.0.0").await, Stage::Staging);
}

#[tokio::test]
async fn a_failure_in_wave_two_halts_at_once_and_the_updated_devices_go_back() {
    let mut fleet = Fleet::new(10).await;
    fleet.failing.insert("d01".into());
    let gates = Gates {
        bake_seconds: 10,
        ..Gates::default()
    };
    let id = fleet.start_rollout(gates, &[10.0, 50.0, 100.0], true).await;
    let halted = |r: &Rollout| matches!(r.state, RolloutState::Halted { .. });
    let at = fleet.run(&id, START, 300, halted).await;

    let rollout = fleet.rollout(&id).await;
    let RolloutState::Halted { wave, reason } = &rollout.state else {
        unreachable!()
    };
    assert_eq!(*wave, 1, "{reason}");
    assert!(at <= START + 3 + 10 + 3 + 2, "halted at +{} s", at - START);
    let failed = rollout.devices.iter().find(|d| d.id == "d01").unwrap();
    assert_eq!(failed.detail.as_deref(), Some("health check failed"));
    assert!(
        rollout.history.iter().any(|(_, h)| h.contains("d01")),
        "{:?}",
        rollout.history
    );
    // Every device of waves 1 and 2 is set back to 1.0.0 (the one that failed too, whatever
    // it left behind); wave 3 never hears of 2.0.0.
    for d in ["d00", "d01", "d02", "d03", "d04"] {
        let changes = fleet.changes_to(d);
        assert_eq!(
            changes.last().unwrap().1.as_deref(),
            Some("1.0.0"),
            "{d}: {changes:?}"
        );
    }
    for i in 5..10 {
        assert!(fleet.changes_to(&format!("d{i:02}")).is_empty());
    }
}

#[tokio::test]
async fn a_silent_device_times_out_and_counts_as_a_failure_within_the_tolerance() {
    let mut fleet = Fleet::new(4).await;
    fleet.silent.insert("d02".into());
    let gates = Gates {
        max_failure_ratio: 0.5,
        device_timeout_seconds: 60,
        ..Gates::default()
    };
    let id = fleet.start_rollout(gates, &[100.0], false).await;
    let end = fleet.run(&id, START, 300, completed).await;
    let rollout = fleet.rollout(&id).await;
    let silent = rollout.devices.iter().find(|d| d.id == "d02").unwrap();
    assert_eq!(silent.state, DeviceState::TimedOut);
    assert!(
        end >= START + 60,
        "completed before the timeout: +{} s",
        end - START
    );
}

#[tokio::test]
async fn approval_holds_every_wave_until_an_operator_approves() {
    let fleet = Fleet::new(4).await;
    let gates = Gates {
        require_approval: true,
        ..Gates::default()
    };
    let id = fleet.start_rollout(gates, &[25.0, 100.0], false).await;
    let waiting = |r: &Rollout| matches!(r.state, RolloutState::AwaitingApproval { .. });
    let at = fleet.run(&id, START, 60, waiting).await;
    // An hour without approval moves nothing.
    let quiet = fleet.changes.lock().unwrap().len();
    assert_eq!(quiet, 1, "the first wave only");
    fleet.idle(at + 1, 3600).await;
    assert!(waiting(&fleet.rollout(&id).await));
    assert_eq!(fleet.changes.lock().unwrap().len(), quiet);
    let mut rollout = fleet.rollout(&id).await;
    rollout
        .command(crate::rollout::Command::Approve, at + 3601, "ops")
        .unwrap();
    fleet.store.save_rollout(&mut rollout).await.unwrap();
    fleet.run(&id, at + 3601, 60, completed).await;
    assert_eq!(fleet.changes.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn another_server_takes_the_engine_over_when_its_holder_stops_renewing() {
    let fleet = Fleet::new(6).await;
    let gates = Gates {
        bake_seconds: 5,
        ..Gates::default()
    };
    let id = fleet.start_rollout(gates, &[50.0, 100.0], false).await;
    let mut driver: Vec<(i64, &str)> = Vec::new();
    // Server a drives for 4 s and then dies (stops renewing); b asks every second throughout.
    let (mut cache_a, mut cache_b) = (PassMemory::default(), PassMemory::default());
    for now in START..START + 120 {
        *fleet.now.lock().unwrap() = now;
        fleet.devices_act(now).await;
        let ms = now * 1000;
        let a = now < START + 4 && take_lease(&fleet.store, "a", ms).await;
        let b = !a && take_lease(&fleet.store, "b", ms).await;
        if a || b {
            driver.push((now, if a { "a" } else { "b" }));
            // Each server gathers the rollout's telemetry afresh.
            let cache = if a { &mut cache_a } else { &mut cache_b };
            run_pass(&fleet.store, cache, &fleet, &fleet, &fleet.rules, now).await;
        }
        if completed(&fleet.rollout(&id).await) {
            break;
        }
    }
    assert!(completed(&fleet.rollout(&id).await));
    let by = |who: &str| -> Vec<i64> {
        driver
            .iter()
            .filter(|(_, d)| *d == who)
            .map(|(t, _)| *t)
            .collect()
    };
    assert_eq!(by("a"), (START..START + 4).collect::<Vec<_>>());
    // b took over once a's last renewal (at +3 s) had expired, and no device was told twice.
    let b = by("b");
    assert_eq!(b[0], START + 3 + super::ENGINE_LEASE_MS / 1000);
    for i in 0..6 {
        assert_eq!(fleet.changes_to(&format!("d{i:02}")).len(), 1);
    }
}

#[tokio::test]
async fn a_device_that_refuses_before_installing_fails_with_the_reason_from_its_event() {
    let mut fleet = Fleet::new(3).await;
    fleet.refusing.insert("d01".into());
    let id = fleet.start_rollout(Gates::default(), &[100.0], false).await;
    let halted = |r: &Rollout| matches!(r.state, RolloutState::Halted { .. });
    fleet.run(&id, START, 60, halted).await;
    let rollout = fleet.rollout(&id).await;
    let refused = rollout.devices.iter().find(|d| d.id == "d01").unwrap();
    assert_eq!(refused.state, DeviceState::Failed);
    assert_eq!(
        refused.detail.as_deref(),
        Some("the artifact is over this device's max_artifact_bytes")
    );
}

#[tokio::test]
async fn changes_that_fail_for_many_devices_are_one_history_line_said_once_while_they_last() {
    let mut fleet = Fleet::new(12).await;
    fleet.unsignable = (0..10).map(|i| format!("d{i:02}")).collect();
    let id = fleet.start_rollout(Gates::default(), &[100.0], true).await;
    fleet.idle(START, 20).await;
    let rollout = fleet.rollout(&id).await;
    let notes: Vec<&str> = rollout
        .history
        .iter()
        .map(|(_, t)| t.as_str())
        .filter(|t| t.contains("desired state not set"))
        .collect();
    assert_eq!(
        notes,
        [
            "10 devices (d00, d01, d02, d03, d04, …): desired state not set: signing desired state returned nothing"
        ],
        "{:#?}",
        rollout.history
    );
    // The others went ahead.
    let healthy = rollout
        .devices
        .iter()
        .filter(|d| d.state == DeviceState::Healthy)
        .count();
    assert_eq!(healthy, 2, "{:?}", rollout.devices);

    // Now failing for one device only: a note of its own, once.
    fleet.unsignable = ["d00".to_owned()].into();
    fleet.idle(START + 20, 5).await;
    let rollout = fleet.rollout(&id).await;
    let once = "device d00: desired state not set: signing desired state returned nothing";
    assert_eq!(
        rollout.history.iter().filter(|(_, t)| t == once).count(),
        1,
        "{:#?}",
        rollout.history
    );
}
