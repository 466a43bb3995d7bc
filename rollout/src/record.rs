//! What the model registry keeps of a rollout, with the release it rolled out: who started and
//! approved it, how it ended, and every champion–challenger verdict its waves took, with the
//! figures and the window they were judged on. Small (no device list), so a registry listing
//! reads it for every release.

use serde::{Deserialize, Serialize};

use crate::{Approval, Rollout, ShadowCheck, Strategy};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ReleaseRecord {
    pub rollout: String,
    /// The release's TUF target name.
    pub target: String,
    #[cfg_attr(feature = "schema", schema(inline))]
    pub strategy: Strategy,
    /// The rollout's state when last saved (`running`, `halted`, `completed`, ...).
    pub state: String,
    pub started_by: String,
    pub started_at: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
    /// Each wave's final decision (`promoted` or `stopped`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<ShadowCheck>,
}

impl ReleaseRecord {
    /// The newest verdict.
    pub fn latest(&self) -> Option<&ShadowCheck> {
        self.verdicts.last()
    }
}

impl Rollout {
    pub fn release_record(&self) -> ReleaseRecord {
        ReleaseRecord {
            rollout: self.id.clone(),
            target: self.spec.target.clone(),
            strategy: self.spec.strategy,
            state: self.state.name().to_owned(),
            started_by: self.created_by.clone(),
            started_at: self.created_at,
            approvals: self.approvals.clone(),
            verdicts: self.verdicts.clone(),
        }
    }
}
