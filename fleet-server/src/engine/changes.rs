//! The desired-state changes a pass makes for a rollout. Each is read, signed, stored and
//! published, a few milliseconds mostly spent waiting on the store; one after another, a
//! fleet-wide wave of 100,000 took the engine more than eight minutes. So the changes that start
//! pending devices (the bulk of a wave, each device at most once) go several at a time, and at
//! most [`PENDING_CHANGES_PER_PASS`] in a pass; every other change (a revert, a promotion, a
//! fallback) is made one at a time, in order, as before.

use std::collections::HashMap;

use edgefleet_protocol::DeviceId;
use futures::StreamExt;

use super::pass::Assigner;
use crate::desired::{DesiredError, WantedShadow};
use crate::rollout::{Action, DeviceState, Rollout};

/// Changes one pass makes for a rollout's pending devices. A pending device's change is asked
/// for again at every pass until it is made, so the rest wait for the next passes, and a pass —
/// which the operator's commands wait for — stays short.
pub(super) const PENDING_CHANGES_PER_PASS: usize = 2_000;
/// Pending devices' changes in flight at once: the store commits their writes together.
const CONCURRENT_CHANGES: usize = 64;

/// One desired-state change, read from the rollout before it is made.
struct Change {
    device: String,
    version: Option<String>,
    tag: Option<String>,
    shadow: Option<WantedShadow>,
}

/// Makes `actions` for `rollout` and records their outcomes in it.
pub(super) async fn make(
    assigner: &dyn Assigner,
    rollout: &mut Rollout,
    actions: Vec<Action>,
    now: i64,
) {
    if actions.is_empty() {
        return;
    }
    let position: HashMap<String, usize> = rollout
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.clone(), i))
        .collect();
    let mut starts = Vec::new();
    let mut others = Vec::new();
    for action in actions {
        let index = position.get(device_of(&action)).copied();
        let pending = index.is_some_and(|i| rollout.devices[i].state == DeviceState::Pending);
        if pending && !matches!(action, Action::Revert { .. }) {
            if starts.len() < PENDING_CHANGES_PER_PASS {
                starts.push((index, action));
            }
        } else {
            others.push((index, action));
        }
    }
    let model = rollout.spec.model.clone();
    let made: Vec<_> = {
        let rollout = &*rollout;
        futures::stream::iter(starts)
            .map(|(index, action)| {
                let change = change_for(rollout, index, &action);
                let model = &model;
                async move {
                    let result = set(assigner, model, &change).await;
                    (index, action, change.device, result)
                }
            })
            .buffered(CONCURRENT_CHANGES)
            .collect()
            .await
    };
    let mut failures = Failures::default();
    for (index, action, device, result) in made {
        record(rollout, index, &action, &device, result, now, &mut failures);
    }
    for (index, action) in others {
        let change = change_for(rollout, index, &action);
        let result = set(assigner, &model, &change).await;
        record(
            rollout,
            index,
            &action,
            &change.device,
            result,
            now,
            &mut failures,
        );
    }
    failures.note(rollout, now);
}

/// Devices a pass could not change, by what went wrong.
#[derive(Default)]
struct Failures(std::collections::BTreeMap<String, Vec<String>>);

/// History entries a new failure note is compared with: a failure lasting many passes (retried
/// at every one) is said once while it lasts, not twice a second.
const RECENT_NOTES: usize = 50;
/// Devices a failure note names.
const DEVICES_NAMED: usize = 5;

impl Failures {
    /// One history entry per distinct error (whatever the number of devices: a wave of 100,000
    /// failing at once is one line, not 100,000), unless a recent entry says the same.
    fn note(self, rollout: &mut Rollout, now: i64) {
        for (error, devices) in self.0 {
            let text = match devices.as_slice() {
                [device] => format!("device {device}: desired state not set: {error}"),
                _ => {
                    let mut named = devices[..DEVICES_NAMED.min(devices.len())].join(", ");
                    if devices.len() > DEVICES_NAMED {
                        named.push_str(", …");
                    }
                    format!(
                        "{} devices ({named}): desired state not set: {error}",
                        devices.len()
                    )
                }
            };
            let recent = rollout.history.len().saturating_sub(RECENT_NOTES);
            if !rollout.history[recent..].iter().any(|(_, t)| *t == text) {
                rollout.history.push((now, text));
            }
        }
    }
}

fn device_of(action: &Action) -> &str {
    match action {
        Action::Update { device } | Action::Shadow { device } | Action::Revert { device, .. } => {
            device
        }
    }
}

/// What `action` asks of its device; `index` is the device's place in the rollout's list.
fn change_for(rollout: &Rollout, index: Option<usize>, action: &Action) -> Change {
    match action {
        Action::Update { device } => Change {
            device: device.clone(),
            version: Some(rollout.spec.version.clone()),
            tag: Some(rollout.id.clone()),
            shadow: None,
        },
        // The champion it runs stays; the rollout's version goes beside it.
        Action::Shadow { device } => {
            let options = rollout.spec.shadow.clone().unwrap_or_default();
            Change {
                device: device.clone(),
                version: index.and_then(|i| rollout.devices[i].previous_version.clone()),
                tag: Some(rollout.id.clone()),
                shadow: Some(WantedShadow {
                    version: rollout.spec.version.clone(),
                    share: options.share,
                    max_cpu_share: options.max_cpu_share,
                    mode: rollout.spec.strategy.slot_mode(),
                }),
            }
        }
        Action::Revert { device, version } => Change {
            device: device.clone(),
            version: version.clone(),
            tag: None,
            shadow: None,
        },
    }
}

/// Makes one change; `None` for an id no device can have (nothing to do).
async fn set(
    assigner: &dyn Assigner,
    model: &str,
    change: &Change,
) -> Option<Result<u64, DesiredError>> {
    let id = DeviceId::new(change.device.clone()).ok()?;
    let result = assigner
        .set_model_version(
            &id,
            model,
            change.version.as_deref(),
            change.tag.as_deref(),
            change.shadow.as_ref(),
        )
        .await;
    Some(result)
}

fn record(
    rollout: &mut Rollout,
    index: Option<usize>,
    action: &Action,
    device: &str,
    result: Option<Result<u64, DesiredError>>,
    now: i64,
    failures: &mut Failures,
) {
    match result {
        None => {}
        Some(Ok(revision)) => {
            if let (Action::Update { .. } | Action::Shadow { .. }, Some(i)) = (action, index) {
                rollout.notified_at(i, revision, now);
            }
        }
        Some(Err(e)) => {
            tracing::warn!(rollout = %rollout.id, device, error = %e, "could not set desired state");
            failures
                .0
                .entry(e.to_string())
                .or_default()
                .push(device.to_owned());
        }
    }
}
