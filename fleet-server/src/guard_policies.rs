//! Guard policies set per group: an operator's policy for one model in one device group, in place
//! of what the releases sign (`guard` in a release's metadata).
//!
//! A canary group may need a tighter guard than the release's, a group of devices in a noisy
//! place a looser one, without signing a new release for each. Such a policy is the server's,
//! not the release's: the server judges that group's telemetry by it (`crate::fleet_guard`) and
//! takes its fleet action (`crate::engine`). A device's own guard keeps to the signed policy,
//! because a device acts alone only on what the operator signed (docs/ARCHITECTURE.md,
//! decision 65).

use edgefleet_protocol::guard::GuardPolicy;
use edgefleet_protocol::target::ModelTargetMeta;
use serde::{Deserialize, Serialize};

/// One group's policy for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupGuard {
    pub group: String,
    pub model: String,
    pub policy: GuardPolicy,
    /// Who set it (the operator token's name) and when (Unix seconds).
    pub set_by: String,
    pub set_at: i64,
}

/// Where the policy a version is judged by in a group comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// Signed with the release.
    Signed,
    /// Set for the group by an operator.
    Group,
}

impl PolicySource {
    pub fn describe(self, group: &str) -> String {
        match self {
            PolicySource::Signed => "the release's signed guard policy".into(),
            PolicySource::Group => format!("group {group}'s guard policy"),
        }
    }
}

/// The policy `release` is judged by in `group`: the group's for its model if one is set, else
/// the release's own; none when neither exists.
pub fn effective<'a>(
    release: &'a ModelTargetMeta,
    group: &str,
    overrides: &'a [GroupGuard],
) -> Option<(&'a GuardPolicy, PolicySource)> {
    overrides
        .iter()
        .find(|g| g.group == group && g.model == release.model.as_str())
        .map(|g| (&g.policy, PolicySource::Group))
        .or_else(|| release.guard.as_ref().map(|p| (p, PolicySource::Signed)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn policy(max_error_ratio: f64) -> GuardPolicy {
        serde_json::from_value(serde_json::json!({ "max_error_ratio": max_error_ratio })).unwrap()
    }

    #[test]
    fn a_groups_policy_replaces_the_signed_one_in_that_group_only() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/churn/2.0.0");
        let mut release = edgefleet_tuf::operator::read_release_dir(&dir).unwrap().1;
        release.guard = None;
        let canary = GroupGuard {
            group: "canary".into(),
            model: "churn".into(),
            policy: policy(0.01),
            set_by: "alice".into(),
            set_at: 1,
        };
        let overrides = vec![canary.clone()];
        assert_eq!(effective(&release, "default", &overrides), None);
        assert_eq!(
            effective(&release, "canary", &overrides),
            Some((&canary.policy, PolicySource::Group))
        );
        release.guard = Some(policy(0.1));
        assert_eq!(
            effective(&release, "default", &overrides).map(|(p, s)| (p.max_error_ratio, s)),
            Some((Some(0.1), PolicySource::Signed))
        );
        assert_eq!(
            effective(&release, "canary", &overrides).map(|(p, _)| p.max_error_ratio),
            Some(Some(0.01))
        );
        let mut other = canary;
        other.model = "iris".into();
        assert_eq!(
            effective(&release, "canary", &[other]).map(|(_, s)| s),
            Some(PolicySource::Signed)
        );
    }
}
