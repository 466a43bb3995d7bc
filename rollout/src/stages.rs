//! What the registry's stages mean for rollouts: an archived version is never rolled out, a
//! group may take only some stages, and a completed rollout may promote its version to
//! production and archive the versions it replaced.

use std::collections::{BTreeMap, BTreeSet};

use edgefleet_protocol::api::Stage;
use serde::{Deserialize, Serialize};

use crate::{Rollout, RolloutState};

/// The registry's rules for rollouts (the server's `[registry]` configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageRules {
    /// The stages each listed group may be rolled out to, e.g. `production = ["production"]`.
    /// A group not listed takes staging and production versions.
    pub groups: BTreeMap<String, BTreeSet<Stage>>,
    /// A completed rollout promotes its version to production. Default true.
    pub promote_on_completion: bool,
    /// A completed rollout archives the versions it replaced once no device runs them any
    /// more. Default false: an archived version cannot be rolled out, and rolling back by a
    /// new rollout of the previous version should stay one command away unless asked otherwise.
    pub archive_replaced: bool,
}

impl Default for StageRules {
    fn default() -> Self {
        Self {
            groups: BTreeMap::new(),
            promote_on_completion: true,
            archive_replaced: false,
        }
    }
}

/// Why a version's stage keeps it from a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageRefusal {
    #[error("the version is archived; promote it back to staging first (fleetctl promote)")]
    Archived,
    #[error(
        "group {group} takes only {} versions and this one is {}; promote it first (fleetctl promote) or leave the group out",
        names(.allowed), .stage.as_str()
    )]
    NotForGroup {
        group: String,
        stage: Stage,
        allowed: Vec<Stage>,
    },
}

fn names(stages: &[Stage]) -> String {
    stages
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

impl StageRules {
    /// Whether a device of `group` may be given a version at `stage`.
    pub fn admits(&self, stage: Stage, group: &str) -> Result<(), StageRefusal> {
        if stage == Stage::Archived {
            return Err(StageRefusal::Archived);
        }
        match self.groups.get(group) {
            Some(allowed) if !allowed.contains(&stage) => Err(StageRefusal::NotForGroup {
                group: group.to_owned(),
                stage,
                allowed: allowed.iter().copied().collect(),
            }),
            _ => Ok(()),
        }
    }

    /// The stage changes a rollout asks for once it has completed: `(version, new stage)`.
    /// `stage_of` says where a version of the rollout's model stands now; `still_runs` whether
    /// any device still serves it.
    pub fn on_completion(
        &self,
        rollout: &Rollout,
        stage_of: impl Fn(&str) -> Option<Stage>,
        still_runs: impl Fn(&str) -> bool,
    ) -> Vec<(String, Stage)> {
        if rollout.state != RolloutState::Completed {
            return Vec::new();
        }
        let mut changes = Vec::new();
        let version = &rollout.spec.version;
        if self.promote_on_completion && stage_of(version) != Some(Stage::Production) {
            changes.push((version.clone(), Stage::Production));
        }
        if self.archive_replaced {
            let replaced: BTreeSet<&String> = rollout
                .devices
                .iter()
                .filter_map(|d| d.previous_version.as_ref())
                .filter(|v| *v != version)
                .collect();
            for old in replaced {
                let archivable = matches!(stage_of(old), Some(Stage::Staging | Stage::Production));
                if archivable && !still_runs(old) {
                    changes.push((old.clone(), Stage::Archived));
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{DeviceState, Gates, RolloutSpec, Selector};

    fn rules(groups: &[(&str, &[Stage])]) -> StageRules {
        StageRules {
            groups: groups
                .iter()
                .map(|(g, s)| ((*g).to_owned(), s.iter().copied().collect()))
                .collect(),
            ..StageRules::default()
        }
    }

    #[test]
    fn archived_versions_go_nowhere_and_a_group_takes_only_its_stages() {
        let rules = rules(&[("prod", &[Stage::Production])]);
        assert_eq!(
            rules.admits(Stage::Archived, "lab"),
            Err(StageRefusal::Archived)
        );
        assert!(rules.admits(Stage::Staging, "lab").is_ok());
        assert!(rules.admits(Stage::Production, "prod").is_ok());
        let refused = rules.admits(Stage::Staging, "prod").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "group prod takes only production versions and this one is staging; promote it first (fleetctl promote) or leave the group out"
        );
    }

    fn completed(previous: &[Option<&str>]) -> Rollout {
        let spec = RolloutSpec {
            strategy: Default::default(),
            shadow: None,
            model: "churn".into(),
            version: "2.0.0".into(),
            target: "models/churn/2.0.0/model.onnx".into(),
            selector: Selector::default(),
            waves: vec![100.0],
            gates: Gates::default(),
            rollback_on_halt: true,
        };
        let devices = previous
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("d{i}"), v.map(str::to_owned)))
            .collect();
        let mut r = Rollout::new("r".into(), spec, devices, "op".into(), 0).unwrap();
        for d in &mut r.devices {
            d.state = DeviceState::Healthy;
        }
        r.state = RolloutState::Completed;
        r
    }

    #[test]
    fn a_completed_rollout_promotes_its_version_and_archives_what_no_device_runs_any_more() {
        let r = completed(&[Some("1.0.0"), Some("1.5.0"), None, Some("2.0.0")]);
        let stage_of = |v: &str| match v {
            "1.0.0" | "2.0.0" => Some(Stage::Staging),
            "1.5.0" => Some(Stage::Production),
            _ => None,
        };
        let archiving = StageRules {
            archive_replaced: true,
            ..StageRules::default()
        };
        let changes = archiving.on_completion(&r, stage_of, |v| v == "1.0.0");
        assert_eq!(
            changes,
            [
                ("2.0.0".to_owned(), Stage::Production),
                ("1.5.0".to_owned(), Stage::Archived)
            ],
            "1.0.0 still runs somewhere else, so it stays"
        );
        let off = StageRules {
            promote_on_completion: false,
            archive_replaced: false,
            ..StageRules::default()
        };
        assert!(off.on_completion(&r, stage_of, |_| false).is_empty());
        let mut running = r;
        running.state = RolloutState::Running { wave: 0 };
        assert!(
            StageRules::default()
                .on_completion(&running, stage_of, |_| false)
                .is_empty()
        );
    }

    #[test]
    fn a_promoted_version_is_not_promoted_again_and_an_archived_one_not_archived_again() {
        let r = completed(&[Some("1.0.0")]);
        let stage_of = |v: &str| match v {
            "2.0.0" => Some(Stage::Production),
            _ => Some(Stage::Archived),
        };
        let archiving = StageRules {
            archive_replaced: true,
            ..StageRules::default()
        };
        assert!(archiving.on_completion(&r, stage_of, |_| false).is_empty());
    }

    #[test]
    fn unset_rules_take_their_defaults() {
        let rules: StageRules =
            serde_json::from_str(r#"{"groups": {"prod": ["production"]}}"#).unwrap();
        assert_eq!(rules, self::rules(&[("prod", &[Stage::Production])]));
        assert!(rules.promote_on_completion && !rules.archive_replaced);
    }
}
