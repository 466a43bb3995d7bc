//! The repository side, run with the online `snapshot` and `timestamp` keys: by the fleet server,
//! or by `fleetctl` for an offline repository (a USB stick).
//!
//! Layout of a repository directory (consistent snapshots, as root declares):
//!
//! ```text
//! metadata/root.json          newest root (also as N.root.json for every version N)
//! metadata/N.targets.json     exactly the bytes the operator signed
//! metadata/N.snapshot.json
//! metadata/timestamp.json     written last: publishing is atomic for clients
//! targets/models/<model>/<version>/<sha256>.model.onnx
//! ```
//!
//! Everything offered is checked before anything is written, so refused input leaves the
//! repository exactly as it was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use tough::key_source::KeySource;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::{
    Hashes, Metafile, Root, Signed, Snapshot, Targets, Timestamp as TimestampRole,
};

use crate::operator::{Expiries, days_after, sign_with, target_meta, to_bytes};
use crate::verify::verify_distinct;
use crate::{Error, SPEC_VERSION, sha256, write_atomic};

/// The online keys the repository signs with.
#[derive(Debug)]
pub struct OnlineKeys {
    pub snapshot: Box<dyn KeySource>,
    pub timestamp: Box<dyn KeySource>,
}

#[derive(Debug)]
pub struct RepoStore {
    dir: PathBuf,
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

impl RepoStore {
    /// Creates a repository from an operator-signed root (version 1) and targets.
    pub async fn create(
        dir: &Path,
        root_bytes: &[u8],
        targets_bytes: &[u8],
        keys: OnlineKeys,
        expiries: Expiries,
        now: Timestamp,
    ) -> Result<(Self, Published), Error> {
        if dir.join("metadata").exists() {
            return Err(Error::RepositoryExists {
                path: dir.to_path_buf(),
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
        let store = Self {
            dir: dir.to_path_buf(),
            keys,
            expiries,
        };
        let targets = store.check_targets(&root.signed, None, targets_bytes, now)?;
        store.check_online_keys(&root.signed).await?;
        store.write_root(root_bytes, 1)?;
        let published = store
            .publish(&root.signed, &targets, targets_bytes, now)
            .await?;
        Ok((store, published))
    }

    /// Opens an existing repository.
    pub fn open(dir: &Path, keys: OnlineKeys, expiries: Expiries) -> Result<Self, Error> {
        if !dir.join("metadata/root.json").exists() {
            return Err(Error::NoRepository {
                path: dir.to_path_buf(),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            keys,
            expiries,
        })
    }

    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.join("metadata")
    }

    pub fn targets_dir(&self) -> PathBuf {
        self.dir.join("targets")
    }

    fn read(&self, file: &str) -> Result<Vec<u8>, Error> {
        let path = self.metadata_dir().join(file);
        std::fs::read(&path).map_err(Error::io(path))
    }

    /// The newest root.
    pub fn root(&self) -> Result<Signed<Root>, Error> {
        parse("root.json", &self.read("root.json")?)
    }

    pub fn timestamp(&self) -> Result<Signed<TimestampRole>, Error> {
        parse("timestamp.json", &self.read("timestamp.json")?)
    }

    pub fn snapshot(&self) -> Result<Signed<Snapshot>, Error> {
        let version = meta_version(&self.timestamp()?.signed.meta, "snapshot.json")?;
        parse(
            "snapshot.json",
            &self.read(&format!("{version}.snapshot.json"))?,
        )
    }

    /// The current targets role and its exact published bytes.
    pub fn targets(&self) -> Result<(Signed<Targets>, Vec<u8>), Error> {
        let version = meta_version(&self.snapshot()?.signed.meta, "targets.json")?;
        let bytes = self.read(&format!("{version}.targets.json"))?;
        Ok((parse("targets.json", &bytes)?, bytes))
    }

    /// Where a target's artifact lives (consistent-snapshot name).
    pub fn artifact_path(&self, name: &str, sha256_hex: &str) -> Result<PathBuf, Error> {
        let (model, version) =
            edgefleet_protocol::target::parse_target_name(name).map_err(|e| Error::Target {
                name: name.to_string(),
                detail: e.to_string(),
            })?;
        Ok(self
            .targets_dir()
            .join(format!("models/{model}/{version}/{sha256_hex}.model.onnx")))
    }

    /// Stores an artifact under its content address. Its hash is computed here, not trusted.
    pub fn store_artifact(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, Error> {
        let path = self.artifact_path(name, &hex::encode(sha256(bytes)))?;
        write_atomic(&path, bytes)?;
        Ok(path)
    }

    /// Verifies operator-signed targets against `root`: threshold of distinct keys, version
    /// exactly one above the current (or 1 for a new repository), not expired, every target a
    /// valid model release whose artifact is present with the signed length and hash.
    fn check_targets(
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
            target_meta(name.raw(), target)?;
            let path = self.artifact_path(name.raw(), &hex::encode(&target.hashes.sha256))?;
            let ok = std::fs::metadata(&path).is_ok_and(|m| m.len() == target.length);
            if !ok {
                return Err(Error::Target {
                    name: name.raw().to_string(),
                    detail: format!(
                        "artifact {} is missing or not {} bytes; upload it before the metadata",
                        path.display(),
                        target.length
                    ),
                });
            }
        }
        Ok(targets)
    }

    /// Accepts a new operator-signed targets role and publishes it.
    pub async fn accept_targets(&self, bytes: &[u8], now: Timestamp) -> Result<Published, Error> {
        let root = self.root()?;
        let (current, _) = self.targets()?;
        let targets = self.check_targets(&root.signed, Some(&current.signed), bytes, now)?;
        self.publish(&root.signed, &targets, bytes, now).await
    }

    /// Accepts a new root (a key rotation): version exactly one above, signed by a threshold of
    /// the old root's keys and of its own, not expired, and authorizing the online keys this
    /// repository signs with. Then re-publishes snapshot and timestamp under it.
    pub async fn accept_root(&self, bytes: &[u8], now: Timestamp) -> Result<Published, Error> {
        let old = self.root()?;
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
        let (targets, targets_bytes) = self.targets()?;
        verify_distinct(&new.signed, &targets).map_err(|e| {
            Error::InvalidRoot(format!(
                "the current targets would not verify under it ({e}); push targets signed with the new targets keys together with it"
            ))
        })?;
        self.write_root(bytes, new.signed.version.get())?;
        self.publish(&new.signed, &targets, &targets_bytes, now)
            .await
    }

    /// Re-signs timestamp (and snapshot) when less than half their validity is left, so clients
    /// never see expired online metadata while the server runs. Returns whether it re-signed.
    pub async fn refresh(&self, now: Timestamp) -> Result<bool, Error> {
        let root = self.root()?;
        let timestamp = self.timestamp()?;
        let snapshot = self.snapshot()?;
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
        let (targets, targets_bytes) = self.targets()?;
        self.publish(&root.signed, &targets, &targets_bytes, now)
            .await?;
        Ok(true)
    }

    async fn check_online_keys(&self, root: &Root) -> Result<(), Error> {
        for (role, source) in [
            (tough::schema::RoleType::Snapshot, &self.keys.snapshot),
            (tough::schema::RoleType::Timestamp, &self.keys.timestamp),
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

    fn write_root(&self, bytes: &[u8], version: u64) -> Result<(), Error> {
        let dir = self.metadata_dir();
        write_atomic(&dir.join(format!("{version}.root.json")), bytes)?;
        write_atomic(&dir.join("root.json"), bytes)
    }

    /// Writes targets (exact bytes), a new snapshot, then a new timestamp.
    async fn publish(
        &self,
        root: &Root,
        targets: &Signed<Targets>,
        targets_bytes: &[u8],
        now: Timestamp,
    ) -> Result<Published, Error> {
        let (snapshot_version, timestamp_version) = match self.timestamp() {
            Ok(ts) => {
                let snap = meta_version(&ts.signed.meta, "snapshot.json")?;
                (snap + 1, ts.signed.version.get() + 1)
            }
            Err(_) => (1, 1),
        };
        let mut snapshot = Snapshot::new(
            SPEC_VERSION.to_string(),
            nz(snapshot_version)?,
            days_after(now, self.expiries.snapshot_days)?,
        );
        snapshot.meta.insert(
            "targets.json".to_string(),
            metafile(targets.signed.version.get(), targets_bytes)?,
        );
        let snapshot = sign_with(snapshot, root, std::slice::from_ref(&self.keys.snapshot)).await?;
        let snapshot_bytes = to_bytes(&snapshot)?;
        let mut timestamp = TimestampRole::new(
            SPEC_VERSION.to_string(),
            nz(timestamp_version)?,
            days_after(now, self.expiries.timestamp_days)?,
        );
        timestamp.meta.insert(
            "snapshot.json".to_string(),
            metafile(snapshot_version, &snapshot_bytes)?,
        );
        let timestamp =
            sign_with(timestamp, root, std::slice::from_ref(&self.keys.timestamp)).await?;
        let timestamp_bytes = to_bytes(&timestamp)?;

        let dir = self.metadata_dir();
        let targets_version = targets.signed.version.get();
        write_atomic(
            &dir.join(format!("{targets_version}.targets.json")),
            targets_bytes,
        )?;
        write_atomic(
            &dir.join(format!("{snapshot_version}.snapshot.json")),
            &snapshot_bytes,
        )?;
        write_atomic(&dir.join("timestamp.json"), &timestamp_bytes)?;
        Ok(Published {
            targets_version,
            snapshot_version,
            timestamp_version,
        })
    }
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
