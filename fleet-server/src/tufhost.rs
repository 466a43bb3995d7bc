//! The server's TUF repository: metadata and targets served to devices, operator-signed targets
//! and roots accepted, snapshot and timestamp re-signed with the online keys.
//!
//! The operator's offline keys never reach the server. It holds only `snapshot.pem` and
//! `timestamp.pem`; root and targets arrive already signed (`fleetctl init|push --server`).
//!
//! The metadata lives in the server's database and the artifacts in its artifact store, so every
//! replica serves the same repository; a publication is one database transaction that moves
//! timestamp.json from the version it was computed from, so two replicas publishing at once
//! cannot interleave (the later one gets a conflict and nothing is written). Every replica must
//! hold the same online keys, which start-up checks against the current root.

use std::path::Path;
use std::sync::Arc;

use edgefleet_protocol::message::Desired;
use edgefleet_protocol::release_files::{
    ReleaseFileKind, parse_release_file_name, release_file_name,
};
use edgefleet_protocol::target::ModelTargetMeta;
use edgefleet_tuf::operator::{Expiries, target_meta};
use edgefleet_tuf::repo::{OnlineKeys, Published, RepoBackend, RepoStore};
use edgefleet_tuf::{Error as TufError, keys::PemKeySource};
use jiff::Timestamp;
use tokio::sync::Mutex;
use tough::schema::{Signed, Targets};

use crate::artifacts::BlobStore;
use crate::store::{Store, StoreError};

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
    #[error(
        "this server's online keys ({dir}) are not the ones the repository's root authorizes: \
         {detail}; every server of one fleet must hold the same snapshot.pem and timestamp.pem"
    )]
    ForeignKeys { dir: String, detail: String },
    #[error("importing the repository from {dir}: {detail}")]
    Import { dir: String, detail: String },
    #[error(transparent)]
    Rotation(#[from] crate::online_keys::RotationError),
    #[error(transparent)]
    Tuf(#[from] TufError),
}

/// One signed model target, as the registry shows it.
#[derive(Debug, Clone)]
pub struct SignedModel {
    pub name: String,
    pub sha256: String,
    pub length: u64,
    pub meta: ModelTargetMeta,
}

/// The repository's storage: metadata in the database, artifacts in the artifact store.
#[derive(Debug, Clone)]
pub struct SharedRepo {
    store: Arc<dyn Store>,
    blobs: BlobStore,
}

fn storage(e: impl std::fmt::Display) -> TufError {
    TufError::Storage(e.to_string())
}

impl RepoBackend for SharedRepo {
    async fn read(&self, file: &str) -> Result<Option<Vec<u8>>, TufError> {
        let body = self.store.tuf_file(file).await.map_err(storage)?;
        Ok(body.map(String::into_bytes))
    }

    async fn publish(
        &self,
        files: Vec<(String, Vec<u8>)>,
        based_on: Option<u64>,
    ) -> Result<(), TufError> {
        let files = files
            .into_iter()
            .map(|(file, bytes)| {
                String::from_utf8(bytes)
                    .map(|body| (file.clone(), body))
                    .map_err(|_| TufError::Malformed {
                        what: file,
                        detail: "not UTF-8 JSON".into(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = based_on.unwrap_or(0) + 1;
        match self.store.publish_tuf(files, based_on, next).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(TufError::Concurrent {
                repository: self.describe(),
            }),
            Err(e) => Err(storage(e)),
        }
    }

    async fn artifact_length(
        &self,
        _name: &str,
        sha256_hex: &str,
    ) -> Result<Option<u64>, TufError> {
        let blob = self.blobs.get(sha256_hex).await.map_err(storage)?;
        Ok(blob.map(|b| b.length))
    }

    fn describe(&self) -> String {
        format!(
            "in the server's database (artifacts in {})",
            self.blobs.describe()
        )
    }
}

#[derive(Debug)]
pub struct TufHost {
    repo: RepoStore<SharedRepo>,
    keys_dir: std::path::PathBuf,
    /// This server's own publications one at a time; other servers are kept out by the
    /// database (see the module comment).
    writing: Mutex<()>,
}

impl TufHost {
    /// Opens the shared repository. A repository an older server kept in `legacy_dir`
    /// (`<data_dir>/tuf`) is imported once into an empty database.
    pub async fn open(
        store: Arc<dyn Store>,
        blobs: BlobStore,
        keys_dir: &Path,
        expiries: Expiries,
        legacy_dir: &Path,
    ) -> Result<Self, HostError> {
        let keys = OnlineKeys {
            snapshot: Box::new(PemKeySource {
                path: keys_dir.join("snapshot.pem"),
            }),
            timestamp: Box::new(PemKeySource {
                path: keys_dir.join("timestamp.pem"),
            }),
        };
        let host = Self {
            repo: RepoStore::with_backend(SharedRepo { store, blobs }, keys, expiries),
            keys_dir: keys_dir.to_path_buf(),
            writing: Mutex::new(()),
        };
        if !host.repo.exists().await? && legacy_dir.join("metadata/root.json").exists() {
            host.import(legacy_dir).await?;
        }
        if host.repo.exists().await? {
            host.repo
                .verify_online_keys()
                .await
                .map_err(|e| HostError::ForeignKeys {
                    dir: keys_dir.display().to_string(),
                    detail: e.to_string(),
                })?;
        }
        Ok(host)
    }

    async fn import(&self, dir: &Path) -> Result<(), HostError> {
        let fail = |detail: String| HostError::Import {
            dir: dir.display().to_string(),
            detail,
        };
        let metadata = dir.join("metadata");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&metadata).map_err(|e| fail(e.to_string()))? {
            let path = entry.map_err(|e| fail(e.to_string()))?.path();
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if metadata_name_ok(file) || file == "timestamp.json" {
                let body = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
                files.push((file.to_owned(), body));
            }
        }
        let timestamp = files
            .iter()
            .find(|(f, _)| f == "timestamp.json")
            .ok_or_else(|| fail("no timestamp.json".into()))?;
        let version = serde_json::from_str::<Signed<tough::schema::Timestamp>>(&timestamp.1)
            .map_err(|e| fail(e.to_string()))?
            .signed
            .version
            .get();
        // timestamp.json last, as every publication writes it.
        files.sort_by_key(|(f, _)| f == "timestamp.json");
        match self
            .repo
            .backend()
            .store
            .publish_tuf(files, None, version)
            .await
        {
            Ok(()) | Err(StoreError::Conflict { .. }) => {
                tracing::info!(from = %dir.display(), timestamp_version = version, "TUF repository imported into the database");
                Ok(())
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    pub async fn is_initialised(&self) -> Result<bool, HostError> {
        Ok(self.repo.exists().await?)
    }

    pub fn online_keys_dir(&self) -> &Path {
        &self.keys_dir
    }

    /// Creates the repository from an operator-signed root (version 1) and targets.
    pub async fn init(
        &self,
        root: &[u8],
        targets: &[u8],
        now: Timestamp,
    ) -> Result<(Published, Vec<SignedModel>), HostError> {
        let _writing = self.writing.lock().await;
        if self.repo.exists().await? {
            return Err(HostError::AlreadyInitialised);
        }
        self.check_uploaded(targets).await?;
        let published = match self.repo.initialise(root, targets, now).await {
            Err(TufError::RepositoryExists { .. } | TufError::Concurrent { .. }) => {
                return Err(HostError::AlreadyInitialised);
            }
            other => other?,
        };
        Ok((published, models_of(targets)?))
    }

    /// Accepts operator-signed targets (version exactly one above) and re-signs snapshot and
    /// timestamp. Returns the models it now signs.
    pub async fn accept_targets(
        &self,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(Published, Vec<SignedModel>), HostError> {
        let _writing = self.writing.lock().await;
        self.ensure_initialised().await?;
        self.check_uploaded(bytes).await?;
        let published = self.repo.accept_targets(bytes, now).await?;
        Ok((published, models_of(bytes)?))
    }

    /// Accepts the next version of a model's delegated role, signed as the current top-level
    /// targets delegate it. Returns the models it now signs.
    pub async fn accept_delegated(
        &self,
        role: &str,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(Published, Vec<SignedModel>), HostError> {
        let _writing = self.writing.lock().await;
        self.ensure_initialised().await?;
        self.check_uploaded(bytes).await?;
        let published = self.repo.accept_delegated(role, bytes, now).await?;
        Ok((published, models_of(bytes)?))
    }

    /// Accepts top-level targets that delegate a model together with that model's role, in one
    /// publication (`fleetctl delegate`: the model's releases move into its role).
    pub async fn accept_delegation(
        &self,
        targets: &[u8],
        role: &str,
        role_bytes: &[u8],
        now: Timestamp,
    ) -> Result<(Published, Vec<SignedModel>), HostError> {
        let _writing = self.writing.lock().await;
        self.ensure_initialised().await?;
        self.check_uploaded(targets).await?;
        self.check_uploaded(role_bytes).await?;
        let published = self
            .repo
            .accept_targets_with_delegated(targets, role, role_bytes, now)
            .await?;
        let mut models = models_of(targets)?;
        models.extend(models_of(role_bytes)?);
        Ok((published, models))
    }

    /// An offline bundle's metadata, valid for `valid_days` (`edgefleet_tuf::repo::Bundle`); the
    /// live repository moves past its versions.
    pub async fn bundle(
        &self,
        valid_days: u32,
        now: Timestamp,
    ) -> Result<edgefleet_tuf::repo::Bundle, HostError> {
        let _writing = self.writing.lock().await;
        self.ensure_initialised().await?;
        Ok(self.repo.bundle(valid_days, now).await?)
    }

    /// The current version of a delegated role, byte for byte; `None` when never published.
    pub async fn current_delegated(&self, role: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.ensure_initialised().await?;
        Ok(self.repo.delegated(role).await?.map(|(_, bytes)| bytes))
    }

    pub async fn accept_root(&self, bytes: &[u8], now: Timestamp) -> Result<Published, HostError> {
        self.accept_rotation(bytes, None, now).await
    }

    /// Accepts a rotated root, with the targets re-signed under it when its targets keys
    /// changed. Where it lists an online role's next key (see [`crate::online_keys`]), that key
    /// becomes current first, so snapshot and timestamp are re-signed with it; if the root is
    /// refused, the keys are as they were.
    pub async fn accept_rotation(
        &self,
        root: &[u8],
        targets: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<Published, HostError> {
        let _writing = self.writing.lock().await;
        self.ensure_initialised().await?;
        let parsed: Signed<tough::schema::Root> =
            serde_json::from_slice(root).map_err(|e| TufError::Malformed {
                what: "root.json".into(),
                detail: e.to_string(),
            })?;
        if let Some(targets) = targets {
            self.check_uploaded(targets).await?;
        }
        let promotion =
            crate::online_keys::promote_for(&self.keys_dir, &parsed.signed, now.as_second())?;
        let published = self.repo.accept_rotation(root, targets, now).await?;
        promotion.keep();
        Ok(published)
    }

    /// The public half of the next key for an online role, made if none waits.
    pub fn next_online_key(
        &self,
        role: crate::online_keys::OnlineRole,
    ) -> Result<tough::schema::key::Key, HostError> {
        Ok(crate::online_keys::next_key(&self.keys_dir, role)?)
    }

    /// Re-signs online metadata when it is at half its validity. Another server doing it at
    /// the same moment is not an error: one of the two re-signed.
    pub async fn refresh(&self, now: Timestamp) -> Result<bool, HostError> {
        let _writing = self.writing.lock().await;
        if !self.repo.exists().await? {
            return Ok(false);
        }
        match self.repo.refresh(now).await {
            Ok(done) => Ok(done),
            Err(TufError::Concurrent { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Signs desired states with the timestamp key (`edgefleet_tuf::desired`), reading the root
    /// once for all of them. The bytes are what goes on each device's desired topic.
    pub async fn sign_desired(
        &self,
        desired: Vec<Desired>,
    ) -> Result<Vec<(Desired, Vec<u8>)>, HostError> {
        self.ensure_initialised().await?;
        let root = self.repo.root().await?;
        let mut signed = Vec::with_capacity(desired.len());
        for d in desired {
            let bytes = self.repo.sign_desired(&root.signed, d.clone()).await?;
            signed.push((d, bytes));
        }
        Ok(signed)
    }

    /// The current signed targets, byte for byte as the operator signed them.
    pub async fn current_targets(&self) -> Result<Vec<u8>, HostError> {
        self.ensure_initialised().await?;
        Ok(self.repo.targets().await?.1)
    }

    /// Every model the current targets sign, in the top-level role and in each role it
    /// delegates to (a role no longer delegated to signs nothing); empty before `init`.
    pub async fn models(&self) -> Result<Vec<SignedModel>, HostError> {
        if !self.repo.exists().await? {
            return Ok(Vec::new());
        }
        let (top, bytes) = self.repo.targets().await?;
        let mut models = models_of(&bytes)?;
        for role in top.signed.delegations.iter().flat_map(|d| &d.roles) {
            if let Some((_, bytes)) = self.repo.delegated(&role.name).await? {
                models.extend(models_of(&bytes)?);
            }
        }
        Ok(models)
    }

    /// The bytes behind `/tuf/metadata/{file}`: `root.json`, `timestamp.json`, `N.root.json`,
    /// `N.snapshot.json`, `N.targets.json`, `N.model-<model>.json`. `None` for any other name or
    /// a file not there.
    pub async fn metadata(&self, file: &str) -> Result<Option<Vec<u8>>, HostError> {
        if !(file == "timestamp.json" || metadata_name_ok(file)) {
            return Ok(None);
        }
        Ok(self.repo.backend().read(file).await?)
    }

    async fn ensure_initialised(&self) -> Result<(), HostError> {
        if self.repo.exists().await? {
            Ok(())
        } else {
            Err(HostError::NotInitialised)
        }
    }

    /// Names the first target whose artifact was not uploaded, before the repository code
    /// gives a less specific refusal.
    async fn check_uploaded(&self, targets: &[u8]) -> Result<(), HostError> {
        for model in models_of(targets)? {
            let files =
                model.meta.files.iter().map(|(kind, file)| {
                    (release_file_name(&model.name, kind), file.sha256.clone())
                });
            for (name, sha256) in
                std::iter::once((model.name.clone(), model.sha256.clone())).chain(files)
            {
                let stored = self.repo.backend().artifact_length(&name, &sha256).await?;
                if stored.is_none() {
                    return Err(HostError::MissingArtifact { name, sha256 });
                }
            }
        }
        Ok(())
    }
}

/// `root.json` or `N.root.json`, `N.snapshot.json`, `N.targets.json`, `N.model-<model>.json`.
fn metadata_name_ok(file: &str) -> bool {
    let delegated = |rest: &str| {
        rest.strip_prefix("model-")
            .and_then(|r| r.strip_suffix(".json"))
            .is_some_and(|model| edgefleet_protocol::ModelName::new(model).is_ok())
    };
    file == "root.json"
        || file.split_once('.').is_some_and(|(n, rest)| {
            !n.is_empty()
                && n.len() <= 20
                && n.bytes().all(|b| b.is_ascii_digit())
                && (matches!(rest, "root.json" | "snapshot.json" | "targets.json")
                    || delegated(rest))
        })
}

/// What `/tuf/targets/{path}` asks for: a release's artifact
/// (`models/<m>/<v>/<sha256>.model.onnx`) or one of its files (`<sha256>.golden.json`,
/// `<sha256>.baseline.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedFile {
    /// The release's target name, `models/<m>/<v>/model.onnx`.
    pub release: String,
    /// `None` for the artifact itself.
    pub kind: Option<ReleaseFileKind>,
    pub sha256: String,
}

impl ServedFile {
    /// Whether `model` (the current signed release of that name) names exactly this content.
    pub fn is_signed_in(&self, model: &SignedModel) -> bool {
        model.name == self.release
            && match self.kind {
                None => model.sha256 == self.sha256,
                Some(kind) => model
                    .meta
                    .files
                    .get(kind)
                    .is_some_and(|f| f.sha256 == self.sha256),
            }
    }
}

/// Parses a target download path; `None` for anything that is not exactly one of the forms.
pub fn target_of(path: &str) -> Option<ServedFile> {
    let (dirs, file) = path.rsplit_once('/')?;
    let (sha256, plain) = file.split_once('.')?;
    crate::artifacts::check_digest(sha256).ok()?;
    let name = format!("{dirs}/{plain}");
    let (release, kind) = match edgefleet_protocol::target::parse_target_name(&name) {
        Ok(_) => (name, None),
        Err(_) => {
            let (release, kind) = parse_release_file_name(&name).ok()?;
            (release, Some(kind))
        }
    };
    Some(ServedFile {
        release,
        kind,
        sha256: sha256.to_owned(),
    })
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
    fn only_tuf_metadata_names_are_served() {
        for ok in [
            "root.json",
            "3.root.json",
            "12.snapshot.json",
            "7.targets.json",
            "2.model-churn.json",
        ] {
            assert!(metadata_name_ok(ok), "{ok}");
        }
        for bad in [
            "../x",
            "snapshot.json",
            ".root.json",
            "1.timestamp.json",
            "x.targets.json",
            "1.targets.json/..",
            "model-churn.json",
            "1.model-.json",
            "1.model-../x.json",
            "1.other.json",
        ] {
            assert!(!metadata_name_ok(bad), "{bad}");
        }
    }

    #[test]
    fn only_model_artifact_paths_name_targets() {
        let sha = "a".repeat(64);
        let served = target_of(&format!("models/churn/2.0.0/{sha}.model.onnx")).unwrap();
        assert_eq!(served.release, "models/churn/2.0.0/model.onnx");
        assert_eq!((served.kind, served.sha256.as_str()), (None, sha.as_str()));
        let golden = target_of(&format!("models/churn/2.0.0/{sha}.golden.json")).unwrap();
        assert_eq!(golden.release, "models/churn/2.0.0/model.onnx");
        assert_eq!(golden.kind, Some(ReleaseFileKind::Golden));
        for bad in [
            format!("models/../2.0.0/{sha}.model.onnx"),
            format!("models/churn/2.0.0/../{sha}.model.onnx"),
            "models/churn/2.0.0/model.onnx".to_string(),
            format!("models/churn/2.0.0/{sha}.other.bin"),
            format!("x/churn/2.0.0/{sha}.model.onnx"),
        ] {
            assert!(target_of(&bad).is_none(), "{bad}");
        }
    }
}
