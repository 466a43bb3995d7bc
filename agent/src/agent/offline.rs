//! Installs from a directory instead of the network: a repository made by `fleetctl`, or an
//! offline bundle (`fleetctl bundle`) on a USB stick, verified through TUF like any update.

use std::path::Path;
use std::sync::Arc;

use edgefleet_tuf::client::{self, ClientConfig, ClientLimits, ModelTarget};

use super::{Agent, ArtifactSource, InstallError, InstallReport};

impl Agent {
    /// `edge-agent install DIR`: verifies a repository directory (a USB stick made by
    /// `fleetctl`) against the trusted root, then installs the named targets — or, with none
    /// named, the highest-sequence release of every model in it.
    pub async fn install_from_repository(
        self: &Arc<Self>,
        repo: &Path,
        names: &[String],
    ) -> Result<Vec<InstallReport>, InstallError> {
        let tuf_dir = self.config.data_dir.join("tuf");
        if !tuf_dir.join("root.json").exists() {
            let root_path = &self.config.trusted_root_path;
            let root = std::fs::read(root_path)
                .map_err(|e| InstallError::Internal(format!("{}: {e}", root_path.display())))?;
            client::init(&tuf_dir, &root)?;
        }
        let repo = std::fs::canonicalize(repo)
            .map_err(|e| InstallError::Internal(format!("{}: {e}", repo.display())))?;
        let url = |sub: &str| {
            url::Url::from_directory_path(repo.join(sub))
                .map_err(|()| InstallError::Internal(format!("{} is not absolute", repo.display())))
        };
        let config = ClientConfig {
            metadata_dir: tuf_dir,
            metadata_url: url("metadata")?,
            targets_url: url("targets")?,
            limits: ClientLimits {
                max_artifact_bytes: self.config.limits.max_artifact_bytes,
                max_release_file_bytes: self.config.limits.max_release_file_bytes,
                ..ClientLimits::default()
            },
        };
        let mut trusted = client::refresh(&config, tough::FilesystemTransport)
            .await
            .map_err(|e| explain_offline(&repo, e))?;
        let names = if names.is_empty() {
            bundled_targets(&repo)?
        } else {
            names.to_vec()
        };
        let targets: Vec<ModelTarget> = if names.is_empty() {
            let mut newest: std::collections::BTreeMap<String, ModelTarget> = Default::default();
            for t in trusted.all_model_targets().await? {
                let keep = newest
                    .get(t.meta.model.as_str())
                    .is_none_or(|cur| cur.meta.sequence < t.meta.sequence);
                if keep {
                    newest.insert(t.meta.model.to_string(), t);
                }
            }
            newest.into_values().collect()
        } else {
            let mut targets = Vec::with_capacity(names.len());
            for name in &names {
                targets.push(trusted.model_target(name).await?);
            }
            targets
        };
        let staging = self.config.data_dir.join("store/staging");
        let mut reports = Vec::new();
        for mut target in targets {
            trusted.fetch_release_files(&mut target, &staging).await?;
            let source = if self.has_artifact_of(&target) {
                ArtifactSource::Stored
            } else {
                ArtifactSource::Downloaded(trusted.fetch(&target, &staging).await?)
            };
            reports.push(self.install(&target, source).await?);
        }
        Ok(reports)
    }
}

/// The targets a bundle (`fleetctl bundle`) names in its manifest; none for a plain repository,
/// whose newest release of every model is installed.
fn bundled_targets(repo: &Path) -> Result<Vec<String>, InstallError> {
    use edgefleet_protocol::bundle::{BundleManifest, MANIFEST_FILE};
    let path = repo.join(MANIFEST_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(InstallError::Internal(format!("{}: {e}", path.display()))),
    };
    let manifest: BundleManifest =
        serde_json::from_slice(&bytes).map_err(|e| InstallError::Repository {
            repository: repo.display().to_string(),
            detail: format!("{MANIFEST_FILE} is not a bundle manifest: {e}"),
        })?;
    Ok(manifest.targets)
}

/// Says what a refused offline repository means for the person holding the stick.
fn explain_offline(repo: &Path, e: edgefleet_tuf::Error) -> InstallError {
    let detail = match &e {
        edgefleet_tuf::Error::Expired { role, .. } if role == "timestamp" || role == "snapshot" => {
            format!(
                "{e}. The bundle is past the validity it was made with: make a new one \
                 (fleetctl bundle) or re-sign this one (fleetctl resign-bundle)"
            )
        }
        edgefleet_tuf::Error::Version { role, .. } if role == "timestamp" => format!(
            "{e}. This device has synced with its fleet since the bundle was made and trusts \
             newer metadata: make a new bundle"
        ),
        _ => return InstallError::Verify(e),
    };
    InstallError::Repository {
        repository: repo.display().to_string(),
        detail,
    }
}
