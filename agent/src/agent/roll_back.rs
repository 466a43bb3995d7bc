//! `edge-agent rollback MODEL`: the previous version back in service from the copy this device
//! kept, with no network and no repository, through the same checks as any install.

use std::sync::Arc;

use edgefleet_tuf::client::ModelTarget;

use super::{Agent, ArtifactSource, InstallError, InstallReport, blocking};

impl Agent {
    /// Installs `model`'s previous version again from the store: the sequence floor still
    /// applies (a release whose floor forbids going back keeps it forbidden), it is
    /// health-checked and goes through probation, and the version it replaces becomes the
    /// previous one, so a roll-back can itself be rolled back.
    pub async fn roll_back(self: &Arc<Self>, model: &str) -> Result<InstallReport, InstallError> {
        let record = {
            let store = self.store.clone();
            let name = model.to_owned();
            blocking(move || store.record(&name)).await??
        };
        let previous = record
            .and_then(|r| r.previous)
            .ok_or_else(|| InstallError::NoPrevious {
                model: model.to_owned(),
            })?;
        // The bytes were verified against this very target when it was installed, and are
        // checked against its sha256 again as they load.
        let target = ModelTarget {
            name: previous.target.clone(),
            meta: previous.meta.clone(),
            length: 0,
            sha256_hex: previous.sha256.clone(),
        };
        tracing::info!(model, target = %target.name, "rolling back to the previous version on disk");
        self.install(&target, ArtifactSource::Stored).await
    }
}
