//! The device side: the TUF client workflow (via tough) over a narrow [`Transport`], and
//! Edgefleet's rules on top.
//!
//! The metadata directory holds the trusted metadata as the exact bytes received (`root.json`,
//! `timestamp.json`, `snapshot.json`, `targets.json`) plus tough's own state in `.tough/` (its
//! rollback copies and the latest time it has seen, which makes a clock that went backwards an
//! error instead of a way to revive expired metadata). Nothing is written outside it before the
//! whole chain verifies. On top of tough: thresholds are counted per distinct key, a target must
//! be listed in the current targets (removal revokes), its custom fields must be valid model
//! metadata whose name matches, and its `sequence` must not be below the device's floor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_protocol::target::ModelTargetMeta;
use futures::StreamExt;
use tough::schema::{Root, Signed};
use tough::{RepositoryLoader, TargetName, Transport, TransportError};
use url::Url;

pub use crate::artifact::VerifiedArtifact;
use crate::operator::target_meta;
use crate::verify::verify_distinct;
use crate::{Error, sha256, write_atomic};

/// Caps on what the network may make a device download.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Largest root, timestamp or snapshot file accepted, in bytes.
    pub max_metadata_bytes: u64,
    /// Largest targets file accepted when snapshot does not give its length, in bytes.
    pub max_targets_bytes: u64,
    /// Largest artifact accepted, whatever targets says, in bytes.
    pub max_artifact_bytes: u64,
    /// A download slower than this on average (after the first `grace`) is abandoned: the
    /// slow-retrieval attack.
    pub min_bytes_per_second: u64,
    pub grace: Duration,
    /// No single chunk may take longer than this.
    pub stall_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_metadata_bytes: 1024 * 1024,
            max_targets_bytes: 16 * 1024 * 1024,
            max_artifact_bytes: 512 * 1024 * 1024,
            min_bytes_per_second: 16 * 1024,
            grace: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Where a client keeps its trusted metadata and where it fetches from.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub metadata_dir: PathBuf,
    pub metadata_url: Url,
    pub targets_url: Url,
    pub limits: ClientLimits,
}

/// Installs the trusted root (shipped with the device, or `init` of the conformance CLI). The
/// root must be signed by a threshold of its own keys.
pub fn init(metadata_dir: &Path, trusted_root: &[u8]) -> Result<(), Error> {
    let root: Signed<Root> = serde_json::from_slice(trusted_root)
        .map_err(|e| Error::malformed("trusted root.json", e))?;
    verify_distinct(&root.signed, &root)?;
    write_atomic(&metadata_dir.join("root.json"), trusted_root)?;
    std::fs::create_dir_all(metadata_dir.join(".tough")).map_err(Error::io(metadata_dir))?;
    Ok(())
}

/// A transport wrapper that keeps the bytes of every metadata file it fetched, so the client can
/// cache exactly what it verified.
#[derive(Debug, Clone)]
struct Recording<T> {
    inner: T,
    metadata_url: Url,
    limits: ClientLimits,
    seen: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

#[async_trait::async_trait]
impl<T: Transport + Clone + 'static> Transport for Recording<T> {
    async fn fetch(&self, url: Url) -> Result<tough::TransportStream, TransportError> {
        let stream = self.inner.fetch(url.clone()).await?;
        let Some(file) = url
            .as_str()
            .strip_prefix(self.metadata_url.as_str())
            .map(str::to_string)
        else {
            return Ok(stream);
        };
        // Buffered to be recorded, so capped here while it arrives: tough's own size limits
        // apply only to what this returns, after the whole file would have been in memory.
        let cap = if file.ends_with("targets.json") {
            self.limits.max_targets_bytes
        } else {
            self.limits.max_metadata_bytes
        };
        let refuse = |why: String| {
            TransportError::new_with_cause(tough::TransportErrorKind::Other, url.as_str(), why)
        };
        let mut bytes = Vec::new();
        let mut stream = stream;
        loop {
            let next = tokio::time::timeout(self.limits.stall_timeout, stream.next())
                .await
                .map_err(|_| refuse(format!("no data for {:?}", self.limits.stall_timeout)))?;
            let Some(chunk) = next else { break };
            let chunk = chunk?;
            if (bytes.len() + chunk.len()) as u64 > cap {
                return Err(refuse(format!(
                    "metadata larger than this device's limit of {cap} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(file, bytes.clone());
        }
        Ok(Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(
            bytes,
        ))])))
    }
}

/// A verified view of the repository after a successful refresh.
#[derive(Debug)]
pub struct TrustedRepo {
    repo: tough::Repository,
    limits: ClientLimits,
    /// Artifacts are fetched by our own code (not tough's `read_target`, which in 0.24 names a
    /// consistent-snapshot target `HASH.dir/file` instead of the spec's `dir/HASH.file`).
    transport: Box<dyn Transport>,
    /// When set, artifact downloads continue what an earlier attempt left ([`Self::with_resume`]).
    resumable: Option<Arc<dyn crate::artifact::ResumableFetch>>,
    targets_url: Url,
}

/// Any target: what the signed metadata says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainTarget {
    pub name: String,
    pub length: u64,
    pub sha256_hex: String,
}

/// One model target, verified and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelTarget {
    pub name: String,
    pub meta: ModelTargetMeta,
    pub length: u64,
    pub sha256_hex: String,
}

/// Runs the TUF client workflow: root rotation, timestamp, snapshot, targets, each verified
/// (signatures by distinct keys, versions never going back, expiry against the system clock),
/// then caches the exact bytes.
pub async fn refresh<T: Transport + Clone + Send + Sync + 'static>(
    config: &ClientConfig,
    transport: T,
) -> Result<TrustedRepo, Error> {
    let dir = &config.metadata_dir;
    let root_path = dir.join("root.json");
    let trusted_root = std::fs::read(&root_path).map_err(Error::io(&root_path))?;
    let state = dir.join(".tough");
    std::fs::create_dir_all(&state).map_err(Error::io(&state))?;
    let recording = Recording {
        inner: transport.clone(),
        metadata_url: config.metadata_url.clone(),
        limits: config.limits,
        seen: Arc::default(),
    };
    let limits = tough::Limits {
        max_root_size: config.limits.max_metadata_bytes,
        max_targets_size: config.limits.max_targets_bytes,
        max_timestamp_size: config.limits.max_metadata_bytes,
        max_snapshot_size: config.limits.max_metadata_bytes,
        max_root_updates: 1024,
    };
    let loaded = RepositoryLoader::new(
        &trusted_root,
        config.metadata_url.clone(),
        config.targets_url.clone(),
    )
    .transport(recording.clone())
    .limits(limits)
    .datastore(&state)
    .load()
    .await;
    let seen = recording
        .seen
        .lock()
        .map_err(|_| Error::Update("recording lock poisoned".into()))?
        .clone();
    let repo = match loaded {
        Ok(repo) => repo,
        Err(e) => {
            // Roles verified before the one that failed (a newer root, say) stay trusted, as the
            // TUF workflow requires; nothing from the failing role on is.
            persist_trusted(dir, &state, &seen, Recheck::Yes)?;
            return Err(Error::Update(error_chain(&e)));
        }
    };
    let root = repo.root();
    verify_distinct(&root.signed, root)?;
    verify_distinct(&root.signed, repo.timestamp())?;
    verify_distinct(&root.signed, repo.snapshot())?;
    verify_distinct(&root.signed, repo.targets())?;
    persist_trusted(dir, &state, &seen, Recheck::No)?;
    Ok(TrustedRepo {
        repo,
        limits: config.limits,
        transport: Box::new(transport),
        resumable: None,
        targets_url: config.targets_url.clone(),
    })
}

/// Whether [`persist_trusted`] must check distinct-key thresholds itself (after a failed
/// refresh) or they were just checked on the whole loaded repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recheck {
    Yes,
    No,
}

/// Writes, for each top-level role tough now trusts (its `.tough/` copies), the exact bytes this
/// refresh received for that version.
fn persist_trusted(
    dir: &Path,
    state: &Path,
    seen: &HashMap<String, Vec<u8>>,
    recheck: Recheck,
) -> Result<(), Error> {
    fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
    fn version_of(bytes: &[u8]) -> Option<u64> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        v.get("signed")?.get("version")?.as_u64()
    }
    let Some(root) = read::<Signed<Root>>(&state.join("root.json")) else {
        return Ok(());
    };
    if verify_distinct(&root.signed, &root).is_err() {
        return Ok(());
    }
    let consistent = root.signed.consistent_snapshot;
    let versioned = |v: u64, role: &str| {
        if consistent {
            format!("{v}.{role}.json")
        } else {
            format!("{role}.json")
        }
    };
    let root_version = root.signed.version.get();
    if let Some(bytes) = seen
        .get(&format!("{root_version}.root.json"))
        .filter(|b| version_of(b) == Some(root_version))
    {
        write_atomic(&dir.join("root.json"), bytes)?;
    }
    for role in ["timestamp", "snapshot", "targets"] {
        let Some(trusted) = read::<serde_json::Value>(&state.join(format!("{role}.json"))) else {
            break;
        };
        let Some(version) = trusted
            .get("signed")
            .and_then(|s| s.get("version"))
            .and_then(serde_json::Value::as_u64)
        else {
            break;
        };
        let fetched = if role == "timestamp" {
            "timestamp.json".to_string()
        } else {
            versioned(version, role)
        };
        let Some(bytes) = seen
            .get(&fetched)
            .filter(|b| version_of(b) == Some(version))
        else {
            continue;
        };
        let distinct = match role {
            _ if recheck == Recheck::No => Ok(()),
            "timestamp" => serde_json::from_slice::<Signed<tough::schema::Timestamp>>(bytes)
                .map_err(|e| Error::malformed(role, e))
                .and_then(|m| verify_distinct(&root.signed, &m)),
            "snapshot" => serde_json::from_slice::<Signed<tough::schema::Snapshot>>(bytes)
                .map_err(|e| Error::malformed(role, e))
                .and_then(|m| verify_distinct(&root.signed, &m)),
            _ => serde_json::from_slice::<Signed<tough::schema::Targets>>(bytes)
                .map_err(|e| Error::malformed(role, e))
                .and_then(|m| verify_distinct(&root.signed, &m)),
        };
        if distinct.is_err() {
            break;
        }
        write_atomic(&dir.join(format!("{role}.json")), bytes)?;
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Edgefleet's rollback rule: a target whose `sequence` is below the device's recorded floor for
/// its model is refused. Returns the floor to record once the target is installed.
pub fn admit(target: &ModelTarget, floor: u64) -> Result<u64, Error> {
    if target.meta.sequence < floor {
        return Err(Error::BelowFloor {
            name: target.name.clone(),
            model: target.meta.model.to_string(),
            sequence: target.meta.sequence,
            floor,
        });
    }
    Ok(floor.max(target.meta.min_sequence))
}

impl TrustedRepo {
    /// Artifact downloads through `fetch` continue from the bytes an earlier attempt (or an
    /// earlier run of the process) left in the staging directory, instead of starting over.
    pub fn with_resume(mut self, fetch: Arc<dyn crate::artifact::ResumableFetch>) -> Self {
        self.resumable = Some(fetch);
        self
    }

    pub fn root(&self) -> &Signed<Root> {
        self.repo.root()
    }

    pub fn targets_version(&self) -> u64 {
        self.repo.targets().signed.version.get()
    }

    /// Any target of the current signed targets, delegated roles included. A name that path
    /// resolution would change (`a/../b`) is refused rather than resolved.
    pub fn plain_target(&self, name: &str) -> Result<PlainTarget, Error> {
        let (_, target) = self.find(name)?;
        Ok(PlainTarget {
            name: name.to_string(),
            length: target.length,
            sha256_hex: hex::encode(&target.hashes.sha256),
        })
    }

    fn find(&self, name: &str) -> Result<(TargetName, &tough::schema::Target), Error> {
        let unknown = || Error::UnknownTarget {
            name: name.chars().take(200).collect(),
        };
        let target_name = TargetName::new(name).map_err(|_| unknown())?;
        if target_name.resolved() != name {
            return Err(unknown());
        }
        let target = self
            .repo
            .targets()
            .signed
            .find_target(&target_name, false)
            .map_err(|_| unknown())?;
        Ok((target_name, target))
    }

    /// A model target of the current signed targets, with its model metadata checked.
    pub fn model_target(&self, name: &str) -> Result<ModelTarget, Error> {
        let (_, target) = self.find(name)?;
        let meta = target_meta(name, target)?;
        Ok(ModelTarget {
            name: name.to_string(),
            meta,
            length: target.length,
            sha256_hex: hex::encode(&target.hashes.sha256),
        })
    }

    /// Every valid model target currently signed (invalid ones are skipped).
    pub fn model_targets(&self) -> Vec<ModelTarget> {
        let mut names: Vec<String> = self
            .repo
            .all_targets()
            .map(|(n, _)| n.raw().to_string())
            .collect();
        names.sort();
        names
            .iter()
            .filter_map(|n| self.model_target(n).ok())
            .collect()
    }

    /// Downloads a target into `staging_dir`, streamed to disk while hashed (never whole in
    /// memory), capped at its signed length (and the device's own cap), abandoning slow or
    /// stalled transfers, and checks length and sha256. Returns the verified file, which the
    /// caller moves into place; dropped unused, it is deleted. On any failure nothing is left.
    pub async fn fetch(
        &self,
        target: &ModelTarget,
        staging_dir: &Path,
    ) -> Result<VerifiedArtifact, Error> {
        self.fetch_plain(
            &PlainTarget {
                name: target.name.clone(),
                length: target.length,
                sha256_hex: target.sha256_hex.clone(),
            },
            staging_dir,
        )
        .await
    }

    /// [`TrustedRepo::fetch`] for any target.
    pub async fn fetch_plain(
        &self,
        target: &PlainTarget,
        staging_dir: &Path,
    ) -> Result<VerifiedArtifact, Error> {
        let fail = |detail: String| Error::Download {
            name: target.name.clone(),
            detail,
        };
        if target.length > self.limits.max_artifact_bytes {
            return Err(fail(format!(
                "signed length {} exceeds this device's limit of {} bytes",
                target.length, self.limits.max_artifact_bytes
            )));
        }
        std::fs::create_dir_all(staging_dir).map_err(Error::io(staging_dir))?;
        let url = self.target_url(target).map_err(fail)?;
        let part = crate::artifact::Part::open(staging_dir, target).map_err(fail)?;
        let part = match part.into_verified_if_complete(target) {
            Ok(verified) => return Ok(verified),
            Err(part) => part,
        };
        let fetched = match &self.resumable {
            Some(resumable) if !part.is_empty() => {
                resumable.fetch_from(url.clone(), part.len()).await
            }
            _ => self.transport.fetch(url.clone()).await.map(|s| (s, 0)),
        };
        let (stream, start) = fetched.map_err(|e| fail(format!("{url}: {}", error_chain(&e))))?;
        crate::artifact::resume(part, start, stream, target, &self.limits)
            .await
            .map_err(fail)
    }

    /// The spec's download path: `dir/HASH.file` under consistent snapshots, `dir/file` otherwise.
    fn target_url(&self, target: &PlainTarget) -> Result<Url, String> {
        let path = if self.repo.root().signed.consistent_snapshot {
            match target.name.rsplit_once('/') {
                Some((dir, file)) => format!("{dir}/{}.{file}", target.sha256_hex),
                None => format!("{}.{}", target.sha256_hex, target.name),
            }
        } else {
            target.name.clone()
        };
        self.targets_url
            .join(&path)
            .map_err(|e| format!("target URL for {path:?}: {e}"))
    }
}

/// Hex sha256 of `bytes`, as targets metadata writes it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}
