//! The server's TUF repository: metadata and targets served to devices, operator-signed targets
//! and roots accepted, snapshot and timestamp re-signed with the online keys.
//!
//! The operator's offline keys never reach the server. It holds only `snapshot.pem` and
//! `timestamp.pem`; root and targets arrive already signed (`fleetctl init|push --server`).

use std::path::{Path, PathBuf};

use edgefleet_protocol::target::ModelTargetMeta;
use edgefleet_tuf::operator::{Expiries, target_meta};
use edgefleet_tuf::repo::{OnlineKeys, Published, RepoStore};
use edgefleet_tuf::{Error as TufError, keys::PemKeySource};
use jiff::Timestamp;
use tokio::sync::Mutex;
use tough::schema::{Signed, Targets};

use crate::artifacts::BlobStore;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the server has no TUF repository yet; create one with `fleetctl init --server URL`")]
    NotInitialised,
    #[error("the server already has a TUF repository")]
    AlreadyInitialised,
    #[error(
        "target {name:?}: artifact sha256 {sha256} was not uploaded; upload it (PUT /api/v1/artifacts/{sha256}) before the metadata"
    )]
    MissingArtifact { name: String, sha256: String },
    #[error(transparent)]
    Tuf(#[from] TufError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One signed model target, as the registry shows it.
#[derive(Debug, Clone)]
pub struct SignedModel {
    pub name: String,
    pub sha256: String,
    pub length: u64,
    pub meta: ModelTargetMeta,
}

#[derive(Debug)]
pub struct TufHost {
    dir: PathBuf,
    keys_dir: PathBuf,
    expiries: Expiries,
    repo: Mutex<Option<RepoStore>>,
}

impl TufHost {
    pub fn open(dir: &Path, keys_dir: &Path, expiries: Expiries) -> Result<Self, HostError> {
        let host = Self {
            dir: dir.to_path_buf(),
            keys_dir: keys_dir.to_path_buf(),
            expiries,
            repo: Mutex::new(None),
        };
        let repo = if dir.join("metadata/root.json").exists() {
            Some(RepoStore::open(dir, host.online_keys(), expiries)?)
        } else {
            None
        };
        Ok(Self {
            repo: Mutex::new(repo),
            ..host
        })
    }

    fn online_keys(&self) -> OnlineKeys {
        OnlineKeys {
            snapshot: Box::new(PemKeySource {
                path: self.keys_dir.join("snapshot.pem"),
            }),
            timestamp: Box::new(PemKeySource {
                path: self.keys_dir.join("timestamp.pem"),
            }),
        }
    }

    pub async fn is_initialised(&self) -> bool {
        self.repo.lock().await.is_some()
    }

    /// Creates the repository from an operator-signed root (version 1) and targets.
    pub async fn init(
        &self,
        root: &[u8],
        targets: &[u8],
        blobs: &BlobStore,
        now: Timestamp,
    ) -> Result<(Published, Vec<SignedModel>), HostError> {
        let mut guard = self.repo.lock().await;
        if guard.is_some() {
            return Err(HostError::AlreadyInitialised);
        }
        let had_metadata = self.dir.join("metadata").exists();
        let linked = self.link_artifacts(targets, blobs)?;
        match RepoStore::create(
            &self.dir,
            root,
            targets,
            self.online_keys(),
            self.expiries,
            now,
        )
        .await
        {
            Ok((repo, published)) => {
                *guard = Some(repo);
                Ok((published, models_of(targets)?))
            }
            Err(e) => {
                unlink(&linked);
                // `create` checks everything before writing; clear what a failed write left.
                if !had_metadata {
                    let _ = std::fs::remove_dir_all(self.dir.join("metadata"));
                }
                Err(e.into())
            }
        }
    }

    /// Accepts operator-signed targets (version exactly one above) and re-signs snapshot and
    /// timestamp. Returns the models it now signs.
    pub async fn accept_targets(
        &self,
        bytes: &[u8],
        blobs: &BlobStore,
        now: Timestamp,
    ) -> Result<(Published, Vec<SignedModel>), HostError> {
        let guard = self.repo.lock().await;
        let repo = guard.as_ref().ok_or(HostError::NotInitialised)?;
        let linked = self.link_artifacts_into(repo, bytes, blobs)?;
        match repo.accept_targets(bytes, now).await {
            Ok(published) => Ok((published, models_of(bytes)?)),
            Err(e) => {
                unlink(&linked);
                Err(e.into())
            }
        }
    }

    pub async fn accept_root(&self, bytes: &[u8], now: Timestamp) -> Result<Published, HostError> {
        let guard = self.repo.lock().await;
        let repo = guard.as_ref().ok_or(HostError::NotInitialised)?;
        Ok(repo.accept_root(bytes, now).await?)
    }

    /// Re-signs online metadata when it is at half its validity.
    pub async fn refresh(&self, now: Timestamp) -> Result<bool, HostError> {
        let guard = self.repo.lock().await;
        match guard.as_ref() {
            Some(repo) => Ok(repo.refresh(now).await?),
            None => Ok(false),
        }
    }

    /// The current signed targets, byte for byte as the operator signed them.
    pub async fn current_targets(&self) -> Result<Vec<u8>, HostError> {
        let guard = self.repo.lock().await;
        let repo = guard.as_ref().ok_or(HostError::NotInitialised)?;
        Ok(repo.targets()?.1)
    }

    /// Every model the current targets sign; empty before `init`.
    pub async fn models(&self) -> Result<Vec<SignedModel>, HostError> {
        let guard = self.repo.lock().await;
        match guard.as_ref() {
            Some(repo) => models_of(&repo.targets()?.1),
            None => Ok(Vec::new()),
        }
    }

    /// The file behind `/tuf/metadata/{file}`: `root.json`, `timestamp.json`, `N.root.json`,
    /// `N.snapshot.json`, `N.targets.json`. Anything else is `None`.
    pub fn metadata_file(&self, file: &str) -> Option<PathBuf> {
        let valid = matches!(file, "root.json" | "timestamp.json")
            || file.split_once('.').is_some_and(|(n, rest)| {
                !n.is_empty()
                    && n.len() <= 20
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && matches!(rest, "root.json" | "snapshot.json" | "targets.json")
            });
        valid.then(|| self.dir.join("metadata").join(file))
    }

    /// The file behind `/tuf/targets/{path}` (`models/<m>/<v>/<sha256>.model.onnx`), with the
    /// target name and sha256 it is stored under. Anything else is `None`.
    pub fn target_file(&self, path: &str) -> Option<(PathBuf, String, String)> {
        let (dirs, file) = path.rsplit_once('/')?;
        let (sha256, plain) = file.split_once('.')?;
        crate::artifacts::check_digest(sha256).ok()?;
        let name = format!("{dirs}/{plain}");
        edgefleet_protocol::target::parse_target_name(&name).ok()?;
        // parse_target_name admits only validated model names and semver versions: no `..`.
        Some((self.dir.join("targets").join(path), name, sha256.to_owned()))
    }

    /// Hard-links (or copies, across file systems) uploaded blobs to where the repository wants
    /// each target's artifact, for targets not already there. Returns the paths it created.
    fn link_artifacts(&self, targets: &[u8], blobs: &BlobStore) -> Result<Vec<PathBuf>, HostError> {
        let parsed = parse_targets(targets)?;
        let mut created = Vec::new();
        for (name, target) in parsed.signed.targets.iter() {
            let sha256 = hex::encode(&target.hashes.sha256);
            let (model, version) = edgefleet_protocol::target::parse_target_name(name.raw())
                .map_err(|e| TufError::Target {
                    name: name.raw().to_owned(),
                    detail: e.to_string(),
                })?;
            let dest = self.dir.join(format!(
                "targets/models/{model}/{version}/{sha256}.model.onnx"
            ));
            if let Err(e) = place(&dest, &sha256, name.raw(), blobs, &mut created) {
                unlink(&created);
                return Err(e);
            }
        }
        Ok(created)
    }

    fn link_artifacts_into(
        &self,
        repo: &RepoStore,
        targets: &[u8],
        blobs: &BlobStore,
    ) -> Result<Vec<PathBuf>, HostError> {
        let parsed = parse_targets(targets)?;
        let mut created = Vec::new();
        for (name, target) in parsed.signed.targets.iter() {
            let sha256 = hex::encode(&target.hashes.sha256);
            let dest = repo.artifact_path(name.raw(), &sha256)?;
            if let Err(e) = place(&dest, &sha256, name.raw(), blobs, &mut created) {
                unlink(&created);
                return Err(e);
            }
        }
        Ok(created)
    }
}

fn place(
    dest: &Path,
    sha256: &str,
    name: &str,
    blobs: &BlobStore,
    created: &mut Vec<PathBuf>,
) -> Result<(), HostError> {
    if dest.exists() {
        return Ok(());
    }
    let blob = blobs.path(sha256).map_err(|_| HostError::MissingArtifact {
        name: name.to_owned(),
        sha256: sha256.to_owned(),
    })?;
    if !blob.exists() {
        return Err(HostError::MissingArtifact {
            name: name.to_owned(),
            sha256: sha256.to_owned(),
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HostError::Io { path, source }
    };
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    if std::fs::hard_link(&blob, dest).is_err() {
        std::fs::copy(&blob, dest).map_err(io(dest))?;
    }
    created.push(dest.to_path_buf());
    Ok(())
}

fn unlink(paths: &[PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

fn parse_targets(bytes: &[u8]) -> Result<Signed<Targets>, HostError> {
    serde_json::from_slice(bytes).map_err(|e| {
        HostError::Tuf(TufError::Malformed {
            what: "targets.json".into(),
            detail: e.to_string(),
        })
    })
}

fn models_of(bytes: &[u8]) -> Result<Vec<SignedModel>, HostError> {
    let targets = parse_targets(bytes)?;
    targets
        .signed
        .targets
        .iter()
        .map(|(name, target)| {
            Ok(SignedModel {
                name: name.raw().to_owned(),
                sha256: hex::encode(&target.hashes.sha256),
                length: target.length,
                meta: target_meta(name.raw(), target)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tuf_metadata_names_map_to_files() {
        let host = TufHost::open(
            Path::new("/nonexistent"),
            Path::new("/k"),
            Expiries::default(),
        )
        .unwrap();
        for ok in [
            "root.json",
            "timestamp.json",
            "3.root.json",
            "12.snapshot.json",
            "7.targets.json",
        ] {
            assert!(host.metadata_file(ok).is_some(), "{ok}");
        }
        for bad in [
            "../x",
            "snapshot.json",
            ".root.json",
            "1.timestamp.json",
            "x.targets.json",
            "1.targets.json/..",
        ] {
            assert!(host.metadata_file(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_model_artifact_paths_map_to_files() {
        let host = TufHost::open(Path::new("/r"), Path::new("/k"), Expiries::default()).unwrap();
        let sha = "a".repeat(64);
        let (path, name, digest) = host
            .target_file(&format!("models/churn/2.0.0/{sha}.model.onnx"))
            .unwrap();
        assert_eq!(name, "models/churn/2.0.0/model.onnx");
        assert_eq!(digest, sha);
        assert!(path.starts_with("/r/targets"));
        for bad in [
            format!("models/../2.0.0/{sha}.model.onnx"),
            format!("models/churn/2.0.0/../{sha}.model.onnx"),
            "models/churn/2.0.0/model.onnx".to_string(),
            format!("models/churn/2.0.0/{sha}.other.bin"),
            format!("x/churn/2.0.0/{sha}.model.onnx"),
        ] {
            assert!(host.target_file(&bad).is_none(), "{bad}");
        }
    }
}
