//! The repository side, run with the online `snapshot` and `timestamp` keys: by the fleet server,
//! or by `fleetctl` for an offline repository (a USB stick).
//!
//! Where the metadata lives is the [`RepoBackend`]'s business: [`DirBackend`] keeps a directory
//! (`fleetctl`'s offline repository), the fleet server keeps it in its database so that every
//! replica serves and publishes the same repository. Publishing goes through one
//! [`RepoBackend::publish`] call that names the timestamp version it was computed from, so a
//! backend shared by several writers can refuse the loser of a race instead of interleaving two
//! publications.
//!
//! Layout of a repository directory (consistent snapshots, as root declares):
//!
//! ```text
//! metadata/root.json          newest root (also as N.root.json for every version N)
//! metadata/N.targets.json     exactly the bytes the operator signed
//! metadata/N.model-<m>.json   a model's delegated role, exactly as signed (delegation.rs)
//! metadata/N.snapshot.json    every targets role, top-level and delegated
//! metadata/timestamp.json     written last: publishing is atomic for clients
//! targets/models/<model>/<version>/<sha256>.model.onnx
//! ```
//!
//! Everything offered is checked before anything is written, so refused input leaves the
//! repository exactly as it was.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use tough::key_source::KeySource;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::{
    Hashes, Metafile, Root, Signed, Snapshot, Targets, Timestamp as TimestampRole,
};

use crate::metadata::quote_role;
use crate::operator::{Expiries, days_after, sign_with, target_meta, to_compact_bytes};

mod bundle;
mod delegated;
use crate::verify::verify_distinct;
use crate::{Error, SPEC_VERSION, sha256, write_atomic};
pub use bundle::{Bundle, resign_bundle};
pub use delegated::DelegatedFile;

/// The online keys the repository signs with.
#[derive(Debug)]
pub struct OnlineKeys {
    pub snapshot: Box<dyn KeySource>,
    pub timestamp: Box<dyn KeySource>,
}

/// Storage of a repository's metadata files, and the lookup of its artifacts.
pub trait RepoBackend: Send + Sync {
    /// A metadata file (`root.json`, `timestamp.json`, `N.root.json`, `N.snapshot.json`,
    /// `N.targets.json`), or `None` when there is none of that name.
    fn read(&self, file: &str) -> impl Future<Output = Result<Option<Vec<u8>>, Error>> + Send;

    /// Stores one publication so that readers see all of it or none of it (`timestamp.json`
    /// last). `based_on` is the timestamp version the publication was computed from (`None` for
    /// a new repository); when the stored one differs, another writer published first and the
    /// backend refuses with [`Error::Concurrent`].
    fn publish(
        &self,
        files: Vec<(String, Vec<u8>)>,
        based_on: Option<u64>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The stored length of the artifact a target names, `None` when it is not stored.
    fn artifact_length(
        &self,
        name: &str,
        sha256_hex: &str,
    ) -> impl Future<Output = Result<Option<u64>, Error>> + Send;

    /// Where the repository is, for messages.
    fn describe(&self) -> String;
}

/// A repository in a directory, laid out as above.
#[derive(Debug, Clone)]
pub struct DirBackend {
    dir: PathBuf,
}

impl DirBackend {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.join("metadata")
    }

    pub fn targets_dir(&self) -> PathBuf {
        self.dir.join("targets")
    }

    /// Where a target's artifact, or a release file (`models/<m>/<v>/golden.json`), lives
    /// (consistent-snapshot name).
    pub fn artifact_path(&self, name: &str, sha256_hex: &str) -> Result<PathBuf, Error> {
        let known = edgefleet_protocol::target::parse_target_name(name).is_ok()
            || edgefleet_protocol::release_files::parse_release_file_name(name).is_ok();
        let (dir, file) = name
            .rsplit_once('/')
            .filter(|_| known)
            .ok_or_else(|| Error::Target {
                name: name.chars().take(200).collect(),
                detail: "not a model artifact or release file name".into(),
            })?;
        if sha256_hex.len() != 64
            || !sha256_hex
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(Error::Target {
                name: name.to_string(),
                detail: "its sha256 is not 64 lowercase hex digits".into(),
            });
        }
        Ok(self
            .targets_dir()
            .join(format!("{dir}/{sha256_hex}.{file}")))
    }

    fn read_sync(&self, file: &str) -> Result<Option<Vec<u8>>, Error> {
        let path = self.metadata_dir().join(file);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path)(e)),
        }
    }
}

impl RepoBackend for DirBackend {
    async fn read(&self, file: &str) -> Result<Option<Vec<u8>>, Error> {
        self.read_sync(file)
    }

    async fn publish(
        &self,
        files: Vec<(String, Vec<u8>)>,
        based_on: Option<u64>,
    ) -> Result<(), Error> {
        let current = match self.read_sync("timestamp.json")? {
            Some(bytes) => Some(
                parse::<Signed<TimestampRole>>("timestamp.json", &bytes)?
                    .signed
                    .version
                    .get(),
            ),
            None => None,
        };
        if current != based_on {
            return Err(Error::Concurrent {
                repository: self.describe(),
            });
        }
        let dir = self.metadata_dir();
        // Callers list timestamp.json last; writing in order keeps every earlier file in place
        // before the one that makes them reachable.
        for (file, bytes) in &files {
            write_atomic(&dir.join(file), bytes)?;
        }
        Ok(())
    }

    async fn artifact_length(&self, name: &str, sha256_hex: &str) -> Result<Option<u64>, Error> {
        let path = self.artifact_path(name, sha256_hex)?;
        match std::fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path)(e)),
        }
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

#[derive(Debug)]
pub struct RepoStore<B = DirBackend> {
    backend: B,
    keys: OnlineKeys,
    expiries: Expiries,
}

/// What publishing a new targets role changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub targets_version: u64,
    pub snapshot_version: u64,
    pub timestamp_version: u64,
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::malformed(what, e))
}

fn check_not_expired(role: &str, expires: Timestamp, now: Timestamp) -> Result<(), Error> {
    if expires <= now {
        return Err(Error::Expired {
            role: role.to_string(),
            expires: expires.to_string(),
            now: now.to_string(),
        });
    }
    Ok(())
}

impl RepoStore<DirBackend> {
    /// Creates a repository in `dir` from an operator-signed root (version 1) and targets.
    pub async fn create(
        dir: &Path,
        root_bytes: &[u8],
        targets_bytes: &[u8],
        keys: OnlineKeys,
        expiries: Expiries,
        now: Timestamp,
    ) -> Result<(Self, Published), Error> {
        let store = Self::with_backend(DirBackend::new(dir), keys, expiries);
        let published = store.initialise(root_bytes, targets_bytes, now).await?;
        Ok((store, published))
    }

    /// Opens the repository in `dir`.
    pub fn open(dir: &Path, keys: OnlineKeys, expiries: Expiries) -> Result<Self, Error> {
        if !dir.join("metadata/root.json").exists() {
            return Err(Error::NoRepository {
                location: dir.display().to_string(),
            });
        }
        Ok(Self::with_backend(DirBackend::new(dir), keys, expiries))
    }

    pub fn dir(&self) -> &DirBackend {
        &self.backend
    }

    /// Where a target's artifact lives (consistent-snapshot name).
    pub fn artifact_path(&self, name: &str, sha256_hex: &str) -> Result<PathBuf, Error> {
        self.backend.artifact_path(name, sha256_hex)
    }

    /// Stores an artifact under its content address. Its hash is computed here, not trusted.
    pub fn store_artifact(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, Error> {
        let path = self.artifact_path(name, &hex::encode(sha256(bytes)))?;
        write_atomic(&path, bytes)?;
        Ok(path)
    }
}

impl<B: RepoBackend> RepoStore<B> {
    /// A repository on `backend`, created or not: check [`RepoStore::exists`].
    pub fn with_backend(backend: B, keys: OnlineKeys, expiries: Expiries) -> Self {
        Self {
            backend,
            keys,
            expiries,
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Whether the backend holds a repository (a root).
    pub async fn exists(&self) -> Result<bool, Error> {
        Ok(self.backend.read("root.json").await?.is_some())
    }

    /// Creates the repository on this store's backend, which must hold none yet, from an
    /// operator-signed root (version 1) and targets.
    pub async fn initialise(
        &self,
        root_bytes: &[u8],
        targets_bytes: &[u8],
        now: Timestamp,
    ) -> Result<Published, Error> {
        if self.exists().await? {
            return Err(Error::RepositoryExists {
                location: self.backend.describe(),
            });
        }
        let root: Signed<Root> = parse("root.json", root_bytes)?;
        if root.signed.version.get() != 1 {
            return Err(Error::Version {
                role: "root".into(),
                found: root.signed.version.get(),
                expected: "a new repository starts at root version 1".into(),
            });
        }
        verify_distinct(&root.signed, &root)?;
        check_not_expired("root", root.signed.expires, now)?;
        let targets = self
            .check_targets(&root.signed, None, targets_bytes, now)
            .await?;
        self.check_online_keys(&root.signed).await?;
        self.publish(
            &root.signed,
            Some((root_bytes, 1)),
            &targets,
            targets_bytes,
            now,
        )
        .await
    }

    /// Fails unless the current root authorizes this store's online keys.
    pub async fn verify_online_keys(&self) -> Result<(), Error> {
        let root = self.root().await?;
        self.check_online_keys(&root.signed).await
    }

    async fn read(&self, file: &str) -> Result<Vec<u8>, Error> {
        self.backend
            .read(file)
            .await?
            .ok_or_else(|| Error::NoRepository {
                location: format!("{} ({file} is missing)", self.backend.describe()),
            })
    }

    /// The newest root.
    pub async fn root(&self) -> Result<Signed<Root>, Error> {
        parse("root.json", &self.read("root.json").await?)
    }

    pub async fn timestamp(&self) -> Result<Signed<TimestampRole>, Error> {
        parse("timestamp.json", &self.read("timestamp.json").await?)
    }

    pub async fn snapshot(&self) -> Result<Signed<Snapshot>, Error> {
        let version = meta_version(&self.timestamp().await?.signed.meta, "snapshot.json")?;
        parse(
            "snapshot.json",
            &self.read(&format!("{version}.snapshot.json")).await?,
        )
    }

    /// Signs `desired` with the timestamp key for the device to verify against its trusted root
    /// ([`crate::desired`]), under `root` (the newest, from [`RepoStore::root`]: read it once for
    /// many devices). Returns the bytes to publish.
    pub async fn sign_desired(
        &self,
        root: &Root,
        desired: edgefleet_protocol::message::Desired,
    ) -> Result<Vec<u8>, Error> {
        let signed = sign_with(
            crate::desired::DesiredStatement::new(desired),
            root,
            std::slice::from_ref(&self.keys.timestamp),
        )
        .await?;
        crate::desired::encode(&signed)
    }

    /// The current targets role and its exact published bytes.
    pub async fn targets(&self) -> Result<(Signed<Targets>, Vec<u8>), Error> {
        let version = meta_version(&self.snapshot().await?.signed.meta, "targets.json")?;
        let bytes = self.read(&format!("{version}.targets.json")).await?;
        Ok((parse("targets.json", &bytes)?, bytes))
    }

    /// Verifies operator-signed targets against `root`: threshold of distinct keys, version
    /// exactly one above the current (or 1 for a new repository), not expired, every target a
    /// valid model release whose artifact is present with the signed length and hash.
    async fn check_targets(
        &self,
        root: &Root,
        current: Option<&Targets>,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<Signed<Targets>, Error> {
        let targets: Signed<Targets> = parse("targets.json", bytes)?;
        verify_distinct(root, &targets)?;
        let expected = current.map_or(1, |c| c.version.get() + 1);
        if targets.signed.version.get() != expected {
            return Err(Error::Version {
                role: "targets".into(),
                found: targets.signed.version.get(),
                expected: format!("must be exactly {expected}"),
            });
        }
        check_not_expired("targets", targets.signed.expires, now)?;
        for (name, target) in targets.signed.targets.iter() {
            let meta = target_meta(name.raw(), target)?;
            let sha256_hex = hex::encode(&target.hashes.sha256);
            self.check_stored(name.raw(), target.length, &sha256_hex, &meta)
                .await?;
        }
        Ok(targets)
    }

    /// A release's artifact and every file its metadata names must be stored with the signed
    /// length before the metadata that lists them is published.
    pub(crate) async fn check_stored(
        &self,
        name: &str,
        length: u64,
        sha256_hex: &str,
        meta: &edgefleet_protocol::target::ModelTargetMeta,
    ) -> Result<(), Error> {
        let files = meta.files.iter().map(|(kind, file)| {
            (
                edgefleet_protocol::release_files::release_file_name(name, kind),
                file.length,
                file.sha256.as_str(),
            )
        });
        for (file, length, sha256_hex) in
            std::iter::once((name.to_string(), length, sha256_hex)).chain(files)
        {
            if self.backend.artifact_length(&file, sha256_hex).await? != Some(length) {
                return Err(Error::Target {
                    name: file,
                    detail: format!(
                        "sha256 {sha256_hex} is missing or not {length} bytes in {}; upload it \
                         before the metadata",
                        self.backend.describe()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Accepts a new operator-signed targets role and publishes it.
    pub async fn accept_targets(&self, bytes: &[u8], now: Timestamp) -> Result<Published, Error> {
        let root = self.root().await?;
        let (current, _) = self.targets().await?;
        let targets = self
            .check_targets(&root.signed, Some(&current.signed), bytes, now)
            .await?;
        self.publish(&root.signed, None, &targets, bytes, now).await
    }

    /// Accepts a new root (a key rotation): version exactly one above, signed by a threshold of
    /// the old root's keys and of its own, not expired, and authorizing the online keys this
    /// repository signs with. Then re-publishes snapshot and timestamp under it.
    pub async fn accept_root(&self, bytes: &[u8], now: Timestamp) -> Result<Published, Error> {
        self.accept_rotation(bytes, None, now).await
    }

    /// [`RepoStore::accept_root`], with the targets re-signed by the new root's targets keys
    /// (version exactly one above the current) published in the same step, so no client ever
    /// sees a root whose targets do not verify: how the targets keys are rotated.
    pub async fn accept_rotation(
        &self,
        bytes: &[u8],
        targets: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<Published, Error> {
        let old = self.root().await?;
        let new: Signed<Root> = parse("root.json", bytes)?;
        if new.signed.version.get() != old.signed.version.get() + 1 {
            return Err(Error::Version {
                role: "root".into(),
                found: new.signed.version.get(),
                expected: format!("must be exactly {}", old.signed.version.get() + 1),
            });
        }
        verify_distinct(&old.signed, &new)?;
        verify_distinct(&new.signed, &new)?;
        check_not_expired("root", new.signed.expires, now)?;
        self.check_online_keys(&new.signed).await?;
        let (current, current_bytes) = self.targets().await?;
        let (targets, targets_bytes) = match targets {
            Some(resigned) => (
                self.check_targets(&new.signed, Some(&current.signed), resigned, now)
                    .await?,
                resigned.to_vec(),
            ),
            None => {
                verify_distinct(&new.signed, &current).map_err(|e| {
                    Error::InvalidRoot(format!(
                        "the current targets would not verify under it ({e}); publish targets signed with the new targets keys together with it (`fleetctl rotate-keys --role targets`)"
                    ))
                })?;
                (current, current_bytes)
            }
        };
        self.publish(
            &new.signed,
            Some((bytes, new.signed.version.get())),
            &targets,
            &targets_bytes,
            now,
        )
        .await
    }

    /// Re-signs timestamp (and snapshot) when less than half their validity is left, so clients
    /// never see expired online metadata while the server runs. Returns whether it re-signed.
    pub async fn refresh(&self, now: Timestamp) -> Result<bool, Error> {
        let root = self.root().await?;
        let timestamp = self.timestamp().await?;
        let snapshot = self.snapshot().await?;
        let half = |days: u32| jiff::SignedDuration::from_hours(i64::from(days) * 12);
        let snapshot_due = snapshot.signed.expires
            <= now
                .saturating_add(half(self.expiries.snapshot_days))
                .unwrap_or(now);
        let timestamp_due = timestamp.signed.expires
            <= now
                .saturating_add(half(self.expiries.timestamp_days))
                .unwrap_or(now);
        if !snapshot_due && !timestamp_due {
            return Ok(false);
        }
        let (targets, targets_bytes) = self.targets().await?;
        self.publish(&root.signed, None, &targets, &targets_bytes, now)
            .await?;
        Ok(true)
    }

    async fn check_online_keys(&self, root: &Root) -> Result<(), Error> {
        check_online_keys(&self.keys, root).await
    }

    /// Publishes a new root (when given, with its version), targets (exact bytes), a new
    /// snapshot and a new timestamp in one backend write.
    async fn publish(
        &self,
        root: &Root,
        new_root: Option<(&[u8], u64)>,
        targets: &Signed<Targets>,
        targets_bytes: &[u8],
        now: Timestamp,
    ) -> Result<Published, Error> {
        self.publish_with(root, new_root, targets, targets_bytes, &[], now)
            .await
    }

    /// [`Self::publish`], also publishing new versions of delegated roles (`role`, version, exact
    /// bytes). Every delegated role the current snapshot lists stays listed: a client refuses a
    /// snapshot that drops a role it trusts, so a revoked model's role is left in place and
    /// simply no longer delegated to.
    async fn publish_with(
        &self,
        root: &Root,
        new_root: Option<(&[u8], u64)>,
        targets: &Signed<Targets>,
        targets_bytes: &[u8],
        delegated: &[DelegatedFile<'_>],
        now: Timestamp,
    ) -> Result<Published, Error> {
        self.publish_after(root, new_root, targets, targets_bytes, delegated, now, 0)
            .await
    }

    /// [`Self::publish_with`], leaving `reserved` snapshot and timestamp versions unused between
    /// the current publication and this one (an offline bundle signs them, [`Self::bundle`]).
    #[allow(clippy::too_many_arguments)]
    async fn publish_after(
        &self,
        root: &Root,
        new_root: Option<(&[u8], u64)>,
        targets: &Signed<Targets>,
        targets_bytes: &[u8],
        delegated: &[DelegatedFile<'_>],
        now: Timestamp,
        reserved: u64,
    ) -> Result<Published, Error> {
        let based_on = match self.backend.read("timestamp.json").await? {
            Some(bytes) => Some(parse::<Signed<TimestampRole>>("timestamp.json", &bytes)?),
            None => None,
        };
        let (snapshot_version, timestamp_version) = match &based_on {
            Some(ts) => {
                let snap = meta_version(&ts.signed.meta, "snapshot.json")?;
                (snap + 1 + reserved, ts.signed.version.get() + 1 + reserved)
            }
            None => (1, 1),
        };
        let mut meta = HashMap::new();
        if let Some(ts) = &based_on {
            let current = meta_version(&ts.signed.meta, "snapshot.json")?;
            let listed: Signed<Snapshot> = parse(
                "snapshot.json",
                &self.read(&format!("{current}.snapshot.json")).await?,
            )?;
            meta = listed.signed.meta;
        }
        meta.insert(
            "targets.json".to_string(),
            metafile(targets.signed.version.get(), targets_bytes)?,
        );
        for file in delegated {
            // Version and length only: the role is signed and named by its version, so a hash
            // adds nothing a device checks, and snapshot grows with every model of the fleet.
            meta.insert(
                format!("{}.json", file.role),
                Metafile {
                    length: Some(file.bytes.len() as u64),
                    hashes: None,
                    version: nz(file.version)?,
                    _extra: HashMap::new(),
                },
            );
        }
        let online = sign_online(
            &self.keys,
            root,
            meta,
            (
                snapshot_version,
                days_after(now, self.expiries.snapshot_days)?,
            ),
            (
                timestamp_version,
                days_after(now, self.expiries.timestamp_days)?,
            ),
        )
        .await?;
        let (snapshot_bytes, timestamp_bytes) = (online.snapshot, online.timestamp);

        let targets_version = targets.signed.version.get();
        let mut files = Vec::with_capacity(5);
        if let Some((bytes, version)) = new_root {
            files.push((format!("{version}.root.json"), bytes.to_vec()));
            files.push(("root.json".to_string(), bytes.to_vec()));
        }
        files.push((
            format!("{targets_version}.targets.json"),
            targets_bytes.to_vec(),
        ));
        for file in delegated {
            files.push((
                format!("{}.{}.json", file.version, quote_role(file.role)),
                file.bytes.to_vec(),
            ));
        }
        files.push((format!("{snapshot_version}.snapshot.json"), snapshot_bytes));
        files.push(("timestamp.json".to_string(), timestamp_bytes));
        self.backend
            .publish(files, based_on.map(|ts| ts.signed.version.get()))
            .await?;
        Ok(Published {
            targets_version,
            snapshot_version,
            timestamp_version,
        })
    }
}

/// Fails unless `root` lists `keys` for the snapshot and timestamp roles.
pub(crate) async fn check_online_keys(keys: &OnlineKeys, root: &Root) -> Result<(), Error> {
    for (role, source) in [
        (tough::schema::RoleType::Snapshot, &keys.snapshot),
        (tough::schema::RoleType::Timestamp, &keys.timestamp),
    ] {
        let key = source
            .as_sign()
            .await
            .map_err(|e| Error::Signing {
                role: role.to_string(),
                detail: e.to_string(),
            })?
            .tuf_key();
        let id = key
            .key_id()
            .map_err(|e| Error::InvalidRoot(e.to_string()))?;
        let authorized = root
            .roles
            .get(&role)
            .is_some_and(|r| r.keyids.contains(&id));
        if !authorized {
            return Err(Error::InvalidRoot(format!(
                "root does not list this repository's online {role} key {}",
                hex::encode(&id)
            )));
        }
    }
    Ok(())
}

/// A snapshot listing `meta` and the timestamp naming it, each at the (version, expiry) given,
/// signed with the online keys `root` authorizes.
pub(crate) struct OnlineSigned {
    pub(crate) snapshot: Vec<u8>,
    pub(crate) timestamp: Vec<u8>,
}

pub(crate) async fn sign_online(
    keys: &OnlineKeys,
    root: &Root,
    meta: HashMap<String, Metafile>,
    (snapshot_version, snapshot_expires): (u64, Timestamp),
    (timestamp_version, timestamp_expires): (u64, Timestamp),
) -> Result<OnlineSigned, Error> {
    let mut snapshot = Snapshot::new(
        SPEC_VERSION.to_string(),
        nz(snapshot_version)?,
        snapshot_expires,
    );
    snapshot.meta = meta;
    let snapshot = sign_with(snapshot, root, std::slice::from_ref(&keys.snapshot)).await?;
    let snapshot_bytes = to_compact_bytes(&snapshot)?;
    let mut timestamp = TimestampRole::new(
        SPEC_VERSION.to_string(),
        nz(timestamp_version)?,
        timestamp_expires,
    );
    timestamp.meta.insert(
        "snapshot.json".to_string(),
        metafile(snapshot_version, &snapshot_bytes)?,
    );
    let timestamp = sign_with(timestamp, root, std::slice::from_ref(&keys.timestamp)).await?;
    Ok(OnlineSigned {
        snapshot: snapshot_bytes,
        timestamp: to_compact_bytes(&timestamp)?,
    })
}

fn nz(v: u64) -> Result<std::num::NonZeroU64, Error> {
    std::num::NonZeroU64::new(v).ok_or_else(|| Error::malformed("version", "zero"))
}

fn metafile(version: u64, bytes: &[u8]) -> Result<Metafile, Error> {
    Ok(Metafile {
        length: Some(bytes.len() as u64),
        hashes: Some(Hashes {
            sha256: Decoded::<Hex>::from(sha256(bytes)),
            _extra: HashMap::new(),
        }),
        version: nz(version)?,
        _extra: HashMap::new(),
    })
}

fn meta_version(meta: &HashMap<String, Metafile>, file: &str) -> Result<u64, Error> {
    meta.get(file)
        .map(|m| m.version.get())
        .ok_or_else(|| Error::malformed(file, "not listed in the metadata above it"))
}
