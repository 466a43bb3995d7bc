//! The device side: the specification's client workflow (§5) over a narrow [`Transport`], and
//! Edgefleet's rules on top.
//!
//! The rules live in [`crate::trusted`] (what may become trusted, in which order) and
//! [`crate::search`] (which role answers for a target path); this module does the I/O: it reads
//! the trusted copies, fetches what is newer with every download capped and stall-timed while it
//! arrives, and writes each role the moment it becomes trusted. The metadata directory holds the
//! trusted metadata as the exact bytes received (`root.json`, `timestamp.json`, `snapshot.json`,
//! `targets.json`, and each delegated role loaded as `<percent-encoded name>.json`) plus
//! `latest-time`, the latest time the device has seen, which makes a clock set back an error
//! instead of a way to revive expired metadata. Delegated roles are loaded only when a search
//! needs them. On top of the workflow: thresholds are counted per distinct public key, a target
//! must be listed in the current metadata (removal revokes), a model target's custom fields must
//! be valid model metadata whose name matches, and its `sequence` must not be below the
//! device's floor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgefleet_protocol::target::ModelTargetMeta;
use futures::StreamExt;
use tough::{TargetName, Transport, TransportErrorKind};
use url::Url;

pub use crate::artifact::VerifiedArtifact;
pub use crate::limits::ClientLimits;
pub use crate::metadata::PlainTarget;
use crate::metadata::{TargetFile, quote_role};
use crate::operator::model_meta;
use crate::search::Search;
pub use crate::sha256_hex;
use crate::trusted::{TimestampUpdate, TrustedSet};
use crate::{Error, write_atomic};

mod download;

/// The most root versions one refresh walks through.
const MAX_ROOT_ROTATIONS: u64 = 1024;

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
    TrustedSet::new(trusted_root, jiff::Timestamp::now())?;
    write_atomic(&metadata_dir.join("root.json"), trusted_root)?;
    Ok(())
}

/// A verified view of the repository after a successful refresh. Delegated roles are fetched
/// through it as target searches need them.
pub struct TrustedRepo {
    set: TrustedSet,
    config: ClientConfig,
    transport: Box<dyn Transport>,
    /// When set, artifact downloads continue what an earlier attempt left ([`Self::with_resume`]).
    resumable: Option<Arc<dyn crate::artifact::ResumableFetch>>,
    /// (role, delegator) pairs whose signatures were checked: a role reached again through the
    /// same delegator needs no second check, through another it does.
    verified_via: Vec<(String, String)>,
}

impl std::fmt::Debug for TrustedRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedRepo")
            .field("root", &self.set.root().version())
            .field("metadata_url", &self.config.metadata_url.as_str())
            .finish_non_exhaustive()
    }
}

/// One model target, verified and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelTarget {
    pub name: String,
    pub meta: ModelTargetMeta,
    pub length: u64,
    pub sha256_hex: String,
}

/// Why a fetch of one metadata file failed.
enum FetchError {
    /// The server says it has no such file (403, 404, 410, or no such local file).
    NotFound(Url),
    Other(Error),
}

impl From<FetchError> for Error {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::NotFound(url) => {
                Error::Update(format!("{url}: the repository has no such metadata file"))
            }
            FetchError::Other(e) => e,
        }
    }
}

/// Fetches one metadata file whole, refusing more than `cap` bytes while it arrives and any
/// chunk slower than the stall timeout.
async fn fetch_capped(
    transport: &dyn Transport,
    url: Url,
    cap: u64,
    limits: &ClientLimits,
) -> Result<Vec<u8>, FetchError> {
    let fail = |detail: String| {
        FetchError::Other(Error::Download {
            name: url.to_string(),
            detail,
        })
    };
    let mut stream = match transport.fetch(url.clone()).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == TransportErrorKind::FileNotFound => {
            return Err(FetchError::NotFound(url));
        }
        Err(e) => return Err(fail(error_chain(&e))),
    };
    let mut bytes = Vec::new();
    loop {
        let next = tokio::time::timeout(limits.stall_timeout, stream.next())
            .await
            .map_err(|_| fail(format!("no data for {:?}", limits.stall_timeout)))?;
        let Some(chunk) = next else { break };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            // HTTP transports learn the status only once the body is polled.
            Err(e) if bytes.is_empty() && e.kind() == TransportErrorKind::FileNotFound => {
                return Err(FetchError::NotFound(url));
            }
            Err(e) => return Err(fail(error_chain(&e))),
        };
        if (bytes.len() + chunk.len()) as u64 > cap {
            return Err(fail(format!(
                "metadata larger than this device's limit of {cap} bytes for it (the signed \
                 length when there is one)"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Runs the client workflow: root rotation (§5.3), timestamp (§5.4), snapshot (§5.5) and
/// top-level targets (§5.6), each verified before it is written; delegated roles follow when a
/// target search needs them ([`TrustedRepo::resolve`]). A failure part-way keeps what was
/// verified before it (a newer root stays trusted), as the workflow requires.
pub async fn refresh<T: Transport + Clone + Send + Sync + 'static>(
    config: &ClientConfig,
    transport: T,
) -> Result<TrustedRepo, Error> {
    let dir = &config.metadata_dir;
    let now = clock_not_set_back(dir)?;
    // tough's datastore, from before the workflow was ours: the files beside it are the same
    // trusted state, so nothing is lost.
    let _ = std::fs::remove_dir_all(dir.join(".tough"));
    let root_path = dir.join("root.json");
    let trusted_root = std::fs::read(&root_path).map_err(Error::io(&root_path))?;
    let mut repo = TrustedRepo {
        set: TrustedSet::new(&trusted_root, now)?,
        config: config.clone(),
        transport: Box::new(transport),
        resumable: None,
        verified_via: Vec::new(),
    };
    repo.update_root().await?;
    repo.update_timestamp().await?;
    repo.update_snapshot().await?;
    repo.load_targets("targets", "root").await?;
    Ok(repo)
}

/// How far the clock may step back between refreshes (an NTP correction, a clock pinned by a
/// test harness) without counting as set back. Far below any expiry period we sign.
const CLOCK_SLACK: jiff::SignedDuration = jiff::SignedDuration::from_secs(600);

/// The current time, unless it is well before the latest time this metadata directory has seen
/// (then the clock was set back, and expired metadata could look valid again); records the
/// latest.
fn clock_not_set_back(dir: &Path) -> Result<jiff::Timestamp, Error> {
    let now = jiff::Timestamp::now();
    let path = dir.join("latest-time");
    let seen = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<jiff::Timestamp>().ok());
    if let Some(seen) = seen
        && now < seen - CLOCK_SLACK
    {
        return Err(Error::Update(format!(
            "the system clock ({now}) is behind the latest time this device has seen \
                 ({seen}); set the clock right before updating"
        )));
    }
    let latest = seen.map_or(now, |seen| seen.max(now));
    write_atomic(&path, latest.to_string().as_bytes())?;
    Ok(now)
}

impl TrustedRepo {
    fn metadata_url(&self, file: &str) -> Result<Url, Error> {
        self.config
            .metadata_url
            .join(file)
            .map_err(|e| Error::Update(format!("metadata URL for {file:?}: {e}")))
    }

    fn persist(&self, file: &str, bytes: &[u8]) -> Result<(), Error> {
        write_atomic(&self.config.metadata_dir.join(file), bytes)
    }

    async fn fetch_metadata(&self, file: &str, cap: u64) -> Result<Vec<u8>, FetchError> {
        let url = self.metadata_url(file).map_err(FetchError::Other)?;
        fetch_capped(self.transport.as_ref(), url, cap, &self.config.limits).await
    }

    /// §5.3: every newer root in turn, until the repository has no next version.
    async fn update_root(&mut self) -> Result<(), Error> {
        for _ in 0..MAX_ROOT_ROTATIONS {
            let next = self.set.root().version() + 1;
            let cap = self.config.limits.max_metadata_bytes;
            match self.fetch_metadata(&format!("{next}.root.json"), cap).await {
                Ok(bytes) => {
                    self.set.update_root(&bytes)?;
                    self.persist("root.json", &bytes)?;
                }
                Err(FetchError::NotFound(_)) => return Ok(()),
                Err(FetchError::Other(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// §5.4: the trusted copy (if it still verifies under the current root) is the rollback
    /// reference; a new one of the same version leaves it in place.
    async fn update_timestamp(&mut self) -> Result<(), Error> {
        if let Ok(local) = std::fs::read(self.config.metadata_dir.join("timestamp.json")) {
            // Invalid under the current root (say, its keys were rotated): no reference. Expired:
            // still the reference, and the fresh one must not be older.
            let _ = self.set.update_timestamp(&local);
        }
        let bytes = self
            .fetch_metadata("timestamp.json", self.config.limits.max_metadata_bytes)
            .await?;
        if self.set.update_timestamp(&bytes)? == TimestampUpdate::Accepted {
            self.persist("timestamp.json", &bytes)?;
        }
        Ok(())
    }

    /// §5.5: the trusted copy serves if it is the version timestamp names; otherwise the new
    /// one, which must not roll back any role the trusted copy lists.
    async fn update_snapshot(&mut self) -> Result<(), Error> {
        if let Ok(local) = std::fs::read(self.config.metadata_dir.join("snapshot.json"))
            && self.set.update_snapshot(&local, true).is_ok()
        {
            return Ok(());
        }
        let meta = self
            .set
            .timestamp()
            .ok_or_else(|| Error::Update("no timestamp loaded".into()))?
            .signed
            .snapshot_meta()
            .clone();
        let file = if self.set.root().signed.consistent_snapshot {
            format!("{}.snapshot.json", meta.version)
        } else {
            "snapshot.json".to_string()
        };
        let bytes = self
            .fetch_metadata(
                &file,
                self.cap(meta.length, self.config.limits.max_metadata_bytes),
            )
            .await?;
        self.set.update_snapshot(&bytes, false)?;
        self.persist("snapshot.json", &bytes)
    }

    /// The signed length when there is one (never above the device's limit), else the limit.
    fn cap(&self, signed: Option<u64>, limit: u64) -> u64 {
        signed.map_or(limit, |length| length.min(limit))
    }

    /// §5.6 for `targets`, §5.7.6 for a delegated role: a role already trusted is checked again
    /// against this delegator's keys for it (a role reached through a second delegator gains
    /// nothing from the first); otherwise the trusted copy if it is the version snapshot names,
    /// else the repository's.
    async fn load_targets(&mut self, role: &str, delegator: &str) -> Result<(), Error> {
        if let Some(trusted) = self.set.targets(role) {
            let pair = (role.to_string(), delegator.to_string());
            if self.verified_via.contains(&pair) {
                return Ok(());
            }
            self.set.verify_delegated(role, delegator, trusted)?;
            self.verified_via.push(pair);
            return Ok(());
        }
        let local_name = format!("{}.json", quote_role(role));
        if let Ok(local) = std::fs::read(self.config.metadata_dir.join(&local_name))
            && self.set.update_targets(role, delegator, &local).is_ok()
        {
            self.verified_via
                .push((role.to_string(), delegator.to_string()));
            return Ok(());
        }
        let snapshot = self
            .set
            .snapshot()
            .ok_or_else(|| Error::Update("no snapshot loaded".into()))?;
        let meta = snapshot
            .signed
            .meta
            .get(&format!("{role}.json"))
            .cloned()
            .ok_or_else(|| {
                Error::Update(format!(
                    "{role} is delegated but snapshot does not list it, so it cannot be trusted"
                ))
            })?;
        let file = if self.set.root().signed.consistent_snapshot {
            format!("{}.{local_name}", meta.version)
        } else {
            local_name.clone()
        };
        let bytes = self
            .fetch_metadata(
                &file,
                self.cap(meta.length, self.config.limits.max_targets_bytes),
            )
            .await?;
        self.set.update_targets(role, delegator, &bytes)?;
        self.verified_via
            .push((role.to_string(), delegator.to_string()));
        self.persist(&local_name, &bytes)
    }

    /// With artifact downloads through `fetch`, continuing from the bytes an earlier attempt (or
    /// an earlier run of the process) left in the staging directory, instead of starting over.
    pub fn with_resume(mut self, fetch: Arc<dyn crate::artifact::ResumableFetch>) -> Self {
        self.resumable = Some(fetch);
        self
    }

    pub fn root_version(&self) -> u64 {
        self.set.root().version()
    }

    pub fn targets_version(&self) -> u64 {
        self.set.targets("targets").map_or(0, |t| t.version())
    }

    /// The signed description of target `name`: a search of `targets` and, lazily, the roles it
    /// delegates to for that path (§5.7.7). A name that path resolution would change (`a/../b`)
    /// is refused rather than resolved.
    pub async fn resolve(&mut self, name: &str) -> Result<PlainTarget, Error> {
        let file = self.locate(name).await?;
        Ok(PlainTarget::from_file(name, &file))
    }

    /// The entry for `name` in the role the search finds answering for it.
    async fn locate(&mut self, name: &str) -> Result<TargetFile, Error> {
        let unknown = || Error::UnknownTarget {
            name: name.chars().take(200).collect(),
        };
        let target_name = TargetName::new(name).map_err(|_| unknown())?;
        if target_name.resolved() != name {
            return Err(unknown());
        }
        let mut search = Search::new(name);
        while let Some(visit) = search.next_role() {
            self.load_targets(&visit.role, &visit.delegator).await?;
            let Some(role) = self.set.targets(&visit.role) else {
                break;
            };
            if search.visit(&visit, &role.signed) {
                return Ok(role.signed.targets[name].clone());
            }
        }
        Err(unknown())
    }

    /// A model target of the current signed metadata, with its model metadata checked.
    pub async fn model_target(&mut self, name: &str) -> Result<ModelTarget, Error> {
        let file = self.locate(name).await?;
        let bad = |detail: &str| Error::Target {
            name: name.chars().take(200).collect(),
            detail: detail.to_string(),
        };
        let sha256_hex = file
            .hashes
            .get("sha256")
            .cloned()
            .ok_or_else(|| bad("a model target must list a sha256 hash"))?;
        let Some(serde_json::Value::Object(custom)) = file.custom else {
            return Err(bad("custom fields are not an object"));
        };
        Ok(ModelTarget {
            name: name.to_string(),
            meta: model_meta(name, custom)?,
            length: file.length,
            sha256_hex,
        })
    }

    /// Every valid model target the repository signs (invalid ones are skipped): the top-level
    /// role's and those of every role delegated from it, each loaded and verified. For tools
    /// that audit a whole repository and for a standalone device that installs everything; a
    /// device on a fleet looks up only its own targets ([`Self::model_target`]).
    pub async fn all_model_targets(&mut self) -> Result<Vec<ModelTarget>, Error> {
        let mut queue = vec![("targets".to_string(), "root".to_string())];
        let mut loaded: Vec<String> = Vec::new();
        while let Some((role, delegator)) = queue.pop() {
            if loaded.contains(&role) || loaded.len() >= crate::search::MAX_DELEGATIONS {
                continue;
            }
            self.load_targets(&role, &delegator).await?;
            let Some(targets) = self.set.targets(&role) else {
                continue;
            };
            for child in targets.signed.delegations.iter().flat_map(|d| &d.roles) {
                queue.push((child.name.clone(), role.clone()));
            }
            loaded.push(role);
        }
        let mut names: Vec<String> = loaded
            .iter()
            .filter_map(|role| self.set.targets(role))
            .flat_map(|t| t.signed.targets.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // The search decides which role answers for each name, as it would for a device.
            if let Ok(target) = self.model_target(&name).await {
                out.push(target);
            }
        }
        Ok(out)
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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
