//! What the server does about a guard alert, as the policy in force for the alert's group says
//! (`guard.fleet`: the group's own if an operator set one, else the release's signed one): only
//! alert, halt the version's rollouts, or also set the group's devices back to the version each
//! ran before. Run by the rollout engine's pass (so by one server of
//! many, under its lease), and recorded in the alert with what it did.

use edgefleet_protocol::DeviceId;
use edgefleet_protocol::guard::{FleetAction, Request};
use edgefleet_protocol::target::ModelTargetMeta;
use edgefleet_rollout::Command;

use super::Assigner;
use crate::alerting::{self as alerts, ActionTaken};
use crate::guard_policies;
use crate::store::{Device, DeviceFilter, Store};

/// Alerts handled per pass at most; the rest wait for the next (half a second later).
const PER_PASS: u32 = 20;

/// Takes the fleet actions due, as the policy in force says (`crate::guard_policies`); a
/// release unknown or without any policy only alerts.
pub async fn take_due(
    store: &dyn Store,
    assigner: &dyn Assigner,
    releases: &[ModelTargetMeta],
    now: i64,
) {
    let due = match store.alerts_action_due(PER_PASS).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the alerts with fleet actions due");
            return;
        }
    };
    if due.is_empty() {
        return;
    }
    let overrides = match store.group_guards().await {
        Ok(overrides) => overrides,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the groups' guard policies; retrying");
            return;
        }
    };
    for alert in due {
        let label = |k: &str| alert.labels.get(k).cloned().unwrap_or_default();
        let (model, version, group) = (label("model"), label("version"), label("group"));
        let release = releases
            .iter()
            .find(|r| r.model.as_str() == model && r.version.to_string() == version);
        let policy = release
            .and_then(|r| guard_policies::effective(r, &group, &overrides))
            .map(|(policy, _)| policy);
        let action = policy.map(|g| g.fleet).unwrap_or_default();
        let floor = release.map_or(0, |r| r.min_sequence);
        let sequence_of = |v: &str| {
            releases
                .iter()
                .find(|r| r.model.as_str() == model && r.version.to_string() == v)
                .map(|r| r.sequence)
        };
        let mut done = Vec::new();
        if matches!(action, FleetAction::Halt | FleetAction::RollBackGroup) {
            done.extend(halt(store, &model, &version, now).await);
        }
        if action == FleetAction::RollBackGroup {
            let plan = match store
                .devices(&DeviceFilter {
                    group: Some(group.clone()),
                    ..DeviceFilter::default()
                })
                .await
            {
                Ok(devices) => roll_back_plan(&devices, &model, &version, floor, &sequence_of),
                Err(e) => {
                    done.push(format!("could not read group {group} to roll it back: {e}"));
                    RollBackPlan::default()
                }
            };
            done.push(roll_back_group(assigner, &plan, &model, &version, &group).await);
        }
        if action == FleetAction::Alert {
            done.push("alerted only: the guard policy asks for nothing more".into());
        }
        if let Some(request) = policy.and_then(|g| g.request) {
            done.push(open_request(store, &alert, request, now).await);
        }
        // On the alert as it is now: an operator, the notifier or a new occurrence may have
        // changed it meanwhile, and their changes stay.
        let recorded = alerts::update_fresh(store, alert.id, |fresh| {
            fresh.action_due = false;
            fresh.actions.extend(done.iter().map(|what| ActionTaken {
                at: now,
                what: what.clone(),
            }));
            fresh.updated_at = now;
            true
        })
        .await;
        if let Err(e) = recorded {
            tracing::warn!(alert = alert.id, error = %e, "cannot record the fleet action taken");
        } else {
            tracing::warn!(
                alert = alert.id,
                model,
                version,
                group,
                ?action,
                "guard fleet action taken"
            );
        }
    }
}

/// Opens (or adds to) the tracked retraining or review request for the alert's version, with
/// the alert's newest evidence (the wrongly answered prediction ids among it).
async fn open_request(
    store: &dyn Store,
    alert: &alerts::Alert,
    request: Request,
    now: i64,
) -> String {
    let label = |k: &str| alert.labels.get(k).cloned().unwrap_or_default();
    let (model, version) = (label("model"), label("version"));
    let (name, what) = match request {
        Request::Retrain => ("EdgefleetRetrainRequested", "retraining requested"),
        Request::Review => ("EdgefleetReviewRequired", "review required"),
    };
    let Some(evidence) = alert.evidence.last().cloned() else {
        return format!("no evidence to open the {what} with");
    };
    let samples: usize = evidence.breaches.iter().map(|b| b.sample.len()).sum();
    let raised = alerts::Raised {
        fingerprint: format!("{}/{model}/{version}", request.as_str()),
        name: name.into(),
        severity: "ticket".into(),
        labels: std::collections::BTreeMap::from([
            ("model".to_owned(), model.clone()),
            ("version".to_owned(), version.clone()),
            ("request".to_owned(), request.as_str().to_owned()),
        ]),
        summary: format!(
            "{model} {version}: {what} after a guard breach (alert {})",
            alert.id
        ),
        description: format!(
            "{}; {samples} sampled prediction ids with the evidence",
            evidence.detail
        ),
        evidence,
        wants_action: false,
    };
    match alerts::raise(store, raised, now, true).await {
        Ok(opened) => format!("opened {what} (alert {})", opened.id),
        Err(e) => format!("could not open the {what}: {e}"),
    }
}

/// Pauses every running rollout of `model` to `version`.
async fn halt(store: &dyn Store, model: &str, version: &str, now: i64) -> Vec<String> {
    let rollouts = match store.active_rollouts().await {
        Ok(r) => r,
        Err(e) => return vec![format!("could not read the rollouts to halt them: {e}")],
    };
    let mut done = Vec::new();
    for mut rollout in rollouts
        .into_iter()
        .filter(|r| r.spec.model == model && r.spec.version == version)
    {
        if rollout.command(Command::Pause, now, "the guard").is_err() {
            continue;
        }
        match store.save_rollout(&mut rollout).await {
            Ok(()) => done.push(format!("paused rollout {}", rollout.id)),
            Err(e) => done.push(format!("could not pause rollout {}: {e}", rollout.id)),
        }
    }
    if done.is_empty() {
        done.push(format!("no running rollout of {model} {version} to halt"));
    }
    done
}

async fn roll_back_group(
    assigner: &dyn Assigner,
    plan: &RollBackPlan,
    model: &str,
    version: &str,
    group: &str,
) -> String {
    let (mut set, mut failed) = (Vec::new(), Vec::new());
    for (device, back) in &plan.set_back {
        match assigner
            .set_model_version(device, model, Some(back), None, None)
            .await
        {
            Ok(_) => set.push(format!("{device}→{back}")),
            Err(e) => failed.push(format!("{device}: {e}")),
        }
    }
    let mut said = format!(
        "set {} of group {group}'s devices on {model} {version} back to their previous version",
        set.len()
    );
    if !set.is_empty() {
        said.push_str(&format!(" ({})", set.join(", ")));
    }
    if !plan.nothing_to_go_back_to.is_empty() {
        said.push_str(&format!(
            "; no earlier version known for {}",
            plan.nothing_to_go_back_to.join(", ")
        ));
    }
    if !plan.below_floor.is_empty() {
        said.push_str(&format!(
            "; left on it (its rollback floor is {}, above what they ran before; roll forward to \
             a fixed release): {}",
            plan.floor,
            plan.below_floor.join(", ")
        ));
    }
    if !failed.is_empty() {
        said.push_str(&format!("; not set: {}", failed.join("; ")));
    }
    said
}

/// Which devices of a group go back, and to what.
#[derive(Debug, Default, PartialEq)]
pub struct RollBackPlan {
    pub set_back: Vec<(DeviceId, String)>,
    pub nothing_to_go_back_to: Vec<String>,
    /// Devices whose earlier version the bad release's rollback floor forbids.
    pub below_floor: Vec<String>,
    pub floor: u64,
}

/// Every device asked to run `model` `version` goes back to the version it ran before: what it
/// runs now if it already left `version` (its own guard rolled it back), else its previous one;
/// unless that version's sequence (`sequence_of`) is below the bad release's rollback `floor`,
/// which devices would refuse.
pub fn roll_back_plan(
    devices: &[Device],
    model: &str,
    version: &str,
    floor: u64,
    sequence_of: &dyn Fn(&str) -> Option<u64>,
) -> RollBackPlan {
    let mut plan = RollBackPlan {
        floor,
        ..RollBackPlan::default()
    };
    for device in devices {
        let asked = device.desired.as_ref().is_some_and(|d| {
            d.models.iter().any(|m| {
                m.model.as_str() == model
                    && edgefleet_protocol::target::parse_target_name(&m.target)
                        .is_ok_and(|(_, v)| v.to_string() == version)
            })
        });
        if !asked {
            continue;
        }
        let reported = device
            .reported
            .as_ref()
            .and_then(|r| r.models.iter().find(|m| m.model.as_str() == model));
        let other = |v: &Option<edgefleet_protocol::message::InstalledVersion>| {
            v.as_ref()
                .map(|i| i.version.to_string())
                .filter(|v| v != version)
        };
        match reported.and_then(|r| other(&r.active).or_else(|| other(&r.previous))) {
            Some(back) if sequence_of(&back).is_some_and(|s| s < floor) => {
                plan.below_floor.push(device.id.to_string());
            }
            Some(back) => plan.set_back.push((device.id.clone(), back)),
            None => plan.nothing_to_go_back_to.push(device.id.to_string()),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use edgefleet_protocol::message::{
        Desired, DesiredModel, InstalledVersion, Reported, ReportedModel, SCHEMA_VERSION,
        UpdateState,
    };
    use edgefleet_protocol::{DeviceId, MessageId, ModelName};

    use super::*;

    const T0: i64 = 1_800_000_000;

    fn installed(version: &str) -> InstalledVersion {
        InstalledVersion {
            version: semver::Version::parse(version).unwrap(),
            sequence: 1,
            target: format!("models/churn/{version}/model.onnx"),
            sha256: "00".repeat(32),
            runtime: None,
        }
    }

    fn device(id: &str, desired: &str, active: &str, previous: Option<&str>) -> Device {
        let id = DeviceId::new(id).unwrap();
        Device {
            id: id.clone(),
            group: "default".into(),
            tags: BTreeMap::new(),
            created_at: T0,
            enrolled_at: Some(T0),
            last_seen: Some(T0),
            agent_version: None,
            reported: Some(Reported {
                schema: SCHEMA_VERSION,
                id: MessageId::from_random([1; 16]),
                device: id.clone(),
                seq: 1,
                at_unix: T0 as u64,
                agent_version: "test".into(),
                desired_revision: 1,
                models: vec![ReportedModel {
                    shadow_refused: None,
                    shadow: None,
                    model: ModelName::new("churn").unwrap(),
                    active: Some(installed(active)),
                    previous: previous.map(installed),
                    state: UpdateState::Idle,
                    last_error: None,
                }],
            }),
            desired: Some(Desired {
                schema: SCHEMA_VERSION,
                id: MessageId::from_random([2; 16]),
                device: id,
                revision: 1,
                issued_at_unix: T0 as u64,
                models: vec![DesiredModel {
                    shadow: None,
                    model: ModelName::new("churn").unwrap(),
                    target: format!("models/churn/{desired}/model.onnx"),
                    artifact_urls: Vec::new(),
                    rollout: None,
                }],
            }),
            desired_revision: 1,
        }
    }

    #[test]
    fn the_group_goes_back_to_what_each_device_ran_before() {
        let devices = [
            // Still on the bad version: back to its previous one.
            device("on-bad", "2.0.0", "2.0.0", Some("1.0.0")),
            // Its own guard already rolled it back: stays on what it runs.
            device("guarded", "2.0.0", "1.1.0", Some("2.0.0")),
            // Never asked to run the bad version: left alone.
            device("elsewhere", "1.0.0", "1.0.0", None),
            // On the bad version with nothing before it.
            device("first", "2.0.0", "2.0.0", None),
        ];
        let sequence_of = |v: &str| match v {
            "1.0.0" => Some(1),
            "1.1.0" => Some(2),
            _ => None,
        };
        let plan = roll_back_plan(&devices, "churn", "2.0.0", 0, &sequence_of);
        let set: Vec<(String, String)> = plan
            .set_back
            .iter()
            .map(|(d, v)| (d.to_string(), v.clone()))
            .collect();
        assert_eq!(
            set,
            [
                ("on-bad".to_owned(), "1.0.0".to_owned()),
                ("guarded".to_owned(), "1.1.0".to_owned())
            ]
        );
        assert_eq!(plan.nothing_to_go_back_to, ["first"]);
        // A floor above 1.0.0's sequence: that device stays (it would refuse), the other goes back.
        let plan = roll_back_plan(&devices, "churn", "2.0.0", 2, &sequence_of);
        assert_eq!(plan.set_back.len(), 1);
        assert_eq!(plan.set_back[0].1, "1.1.0");
        assert_eq!(plan.below_floor, ["on-bad"]);
    }
}
