//! Offline bundles: the repository's metadata as of now, for a device that installs from a
//! directory (a USB stick) instead of the network, valid for as long as the operator chooses.
//!
//! The live timestamp lives a day and the live snapshot a week so that a device that stops
//! hearing from the server notices within a day. A stick has to outlive that, so a bundle gets a
//! timestamp and snapshot of its own, signed by the same online keys with the expiry asked for,
//! at the version right after the live one; the live repository then republishes one version
//! further on. So a device that trusts nothing newer than the live repository of the bundle's
//! making accepts the bundle, and once it syncs again it moves past the bundle as usual; a device
//! that synced after the bundle was made refuses it as older than what it trusts, which is what
//! TUF's rollback protection is for. Root, targets and the delegated roles are the live ones,
//! unchanged: a bundle cannot last longer than they do, and is refused when asked to.
//!
//! The trade-off the operator takes with a long validity: until it expires, the bundle is
//! valid metadata to any device that has not synced since, so a target revoked after the bundle
//! was made still installs from it on such a device (the sequence floor still refuses going
//! back past what the device ran).

use std::collections::HashMap;
use std::path::Path;

use jiff::Timestamp;
use tough::schema::{Metafile, Root, Signed, Snapshot, Targets, Timestamp as TimestampRole};

use super::{
    OnlineKeys, RepoBackend, RepoStore, check_online_keys, meta_version, parse, sign_online,
};
use crate::metadata::quote_role;
use crate::operator::days_after;
use crate::{Error, write_atomic};

/// The longest validity a bundle may be given: a year, the default root's life.
pub const MAX_BUNDLE_DAYS: u32 = 366;

/// The metadata of one offline bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Files as a repository's `metadata/` directory holds them: every root version, every
    /// targets role the snapshot lists, the bundle's snapshot and `timestamp.json`.
    pub metadata: Vec<(String, Vec<u8>)>,
    /// When the bundle's timestamp and snapshot expire.
    pub expires: Timestamp,
    pub timestamp_version: u64,
}

fn bundle_expiry(valid_days: u32, now: Timestamp) -> Result<Timestamp, Error> {
    if !(1..=MAX_BUNDLE_DAYS).contains(&valid_days) {
        return Err(Error::Bundle(format!(
            "a bundle's validity must be 1 to {MAX_BUNDLE_DAYS} days, not {valid_days}"
        )));
    }
    // Whole seconds: the expiry is shown to people (and written on sticks' labels).
    days_after(now, valid_days)?
        .round(jiff::Unit::Second)
        .map_err(|e| Error::malformed("expiry", e))
}

/// The file each targets role the snapshot lists is stored under (`N.targets.json`,
/// `N.<quoted role>.json`), with the role's name.
fn role_files(meta: &HashMap<String, Metafile>) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = meta
        .iter()
        .filter_map(|(name, file)| {
            let role = name.strip_suffix(".json")?;
            Some((
                role.to_string(),
                format!("{}.{}.json", file.version, quote_role(role)),
            ))
        })
        .collect();
    files.sort();
    files
}

/// Refuses a bundle that would outlive root, top-level targets or a role top-level targets
/// delegates to: devices would refuse it from that day on anyway, with a less helpful message.
/// Roles no longer delegated to (revoked models) are never loaded, so their expiry is moot.
fn check_lasting(
    root: &Signed<Root>,
    roles: &HashMap<String, Signed<Targets>>,
    expires: Timestamp,
    now: Timestamp,
) -> Result<(), Error> {
    let outlived = |role: &str, role_expires: Timestamp| {
        if role_expires >= expires {
            return Ok(());
        }
        let days = role_expires.duration_since(now).as_hours().max(0) / 24;
        Err(Error::Bundle(format!(
            "{role} metadata expires at {role_expires}, before the bundle would ({expires}); \
             re-sign {role} with a later expiry first, or ask for at most {days} days"
        )))
    };
    outlived("root", root.signed.expires)?;
    let top = roles
        .get("targets")
        .ok_or_else(|| Error::malformed("snapshot", "it does not list targets.json"))?;
    outlived("targets", top.signed.expires)?;
    let delegated = top.signed.delegations.iter().flat_map(|d| d.roles.iter());
    for role in delegated {
        if let Some(signed) = roles.get(&role.name) {
            outlived(&role.name, signed.signed.expires)?;
        }
    }
    Ok(())
}

impl<B: RepoBackend> RepoStore<B> {
    /// The metadata of a bundle valid for `valid_days` from `now`; the live repository moves one
    /// version past it (see the module's documentation).
    pub async fn bundle(&self, valid_days: u32, now: Timestamp) -> Result<Bundle, Error> {
        let expires = bundle_expiry(valid_days, now)?;
        let root = self.root().await?;
        let timestamp = self.timestamp().await?;
        let snapshot = self.snapshot().await?;
        let mut metadata = Vec::new();
        for version in 1..=root.signed.version.get() {
            let file = format!("{version}.root.json");
            metadata.push((file.clone(), self.read(&file).await?));
        }
        let mut roles = HashMap::new();
        for (role, file) in role_files(&snapshot.signed.meta) {
            let bytes = self.read(&file).await?;
            roles.insert(role, parse::<Signed<Targets>>(&file, &bytes)?);
            metadata.push((file, bytes));
        }
        check_lasting(&root, &roles, expires, now)?;

        let snapshot_version = snapshot.signed.version.get() + 1;
        let timestamp_version = timestamp.signed.version.get() + 1;
        let online = sign_online(
            &self.keys,
            &root.signed,
            snapshot.signed.meta.clone(),
            (snapshot_version, expires),
            (timestamp_version, expires),
        )
        .await?;
        metadata.push((format!("{snapshot_version}.snapshot.json"), online.snapshot));
        metadata.push(("timestamp.json".to_string(), online.timestamp));

        let (targets, targets_bytes) = self.targets().await?;
        let live = self
            .publish_after(&root.signed, None, &targets, &targets_bytes, &[], now, 1)
            .await?;
        if live.timestamp_version != timestamp_version + 1 {
            // Another publication came between: the bundle's versions may be taken.
            return Err(Error::Concurrent {
                repository: self.backend.describe(),
            });
        }
        Ok(Bundle {
            metadata,
            expires,
            timestamp_version,
        })
    }
}

/// Re-signs the bundle in `metadata_dir` (its `metadata/` directory) to be valid for
/// `valid_days` from `now`, with `keys`, which its newest root must list for snapshot and
/// timestamp: a new snapshot and timestamp one version up, written timestamp last. Needs no
/// network: the keys are the operator's (an offline repository's online keys).
pub async fn resign_bundle(
    metadata_dir: &Path,
    keys: &OnlineKeys,
    valid_days: u32,
    now: Timestamp,
) -> Result<Bundle, Error> {
    let expires = bundle_expiry(valid_days, now)?;
    let read = |file: &str| {
        let path = metadata_dir.join(file);
        std::fs::read(&path).map_err(Error::io(path))
    };
    let mut root_version = 1u64;
    while metadata_dir
        .join(format!("{}.root.json", root_version + 1))
        .exists()
    {
        root_version += 1;
    }
    let root: Signed<Root> = parse("root", &read(&format!("{root_version}.root.json"))?)?;
    check_online_keys(keys, &root.signed).await.map_err(|e| {
        Error::Bundle(format!(
            "{e}: only the keys that signed the bundle's timestamp and snapshot can re-sign it \
             (for a fleet server's repository those are the server's: make a new bundle instead)"
        ))
    })?;
    let timestamp: Signed<TimestampRole> = parse("timestamp.json", &read("timestamp.json")?)?;
    let old_snapshot = meta_version(&timestamp.signed.meta, "snapshot.json")?;
    let snapshot_file = format!("{old_snapshot}.snapshot.json");
    let snapshot: Signed<Snapshot> = parse(&snapshot_file, &read(&snapshot_file)?)?;
    let mut roles = HashMap::new();
    for (role, file) in role_files(&snapshot.signed.meta) {
        roles.insert(role, parse::<Signed<Targets>>(&file, &read(&file)?)?);
    }
    check_lasting(&root, &roles, expires, now)?;

    let snapshot_version = old_snapshot + 1;
    let timestamp_version = timestamp.signed.version.get() + 1;
    let online = sign_online(
        keys,
        &root.signed,
        snapshot.signed.meta,
        (snapshot_version, expires),
        (timestamp_version, expires),
    )
    .await?;
    let new_snapshot = format!("{snapshot_version}.snapshot.json");
    write_atomic(&metadata_dir.join(&new_snapshot), &online.snapshot)?;
    write_atomic(&metadata_dir.join("timestamp.json"), &online.timestamp)?;
    let _ = std::fs::remove_file(metadata_dir.join(&snapshot_file));
    Ok(Bundle {
        metadata: vec![
            (new_snapshot, online.snapshot),
            ("timestamp.json".to_string(), online.timestamp),
        ],
        expires,
        timestamp_version,
    })
}
