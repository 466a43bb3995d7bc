//! The set of metadata a client trusts, and every rule for adding to it: the specification's
//! client workflow (§5.3–5.6) as a state machine over bytes, with no I/O and the time passed in.
//!
//! Order is enforced: root updates only before timestamp, timestamp only before snapshot,
//! targets roles only once snapshot is final. Each `update_*` either makes the new metadata
//! trusted or leaves the set as it was and says why. Expiry is checked after the new metadata has
//! become the rollback reference, as the specification orders it: an expired timestamp still
//! protects against a replay of older ones.

use std::collections::HashMap;

use crate::Error;
use crate::metadata::{
    Delegations, Envelope, Root, Snapshot, Targets, Timestamp, check_length_and_hashes,
};

/// What became of a timestamp offered to [`TrustedSet::update_timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampUpdate {
    /// It is now the trusted timestamp: persist it.
    Accepted,
    /// It has the trusted version: the trusted one stays, even if this one's content differs.
    SameVersion,
}

#[derive(Debug)]
pub struct TrustedSet {
    now: jiff::Timestamp,
    root: Envelope<Root>,
    timestamp: Option<Envelope<Timestamp>>,
    snapshot: Option<Envelope<Snapshot>>,
    /// `targets` and the delegated roles loaded so far, by role name.
    targets: HashMap<String, Envelope<Targets>>,
}

fn version_error(role: &str, found: u64, expected: String) -> Error {
    Error::Version {
        role: role.to_string(),
        found,
        expected,
    }
}

impl TrustedSet {
    /// Starts from the root the device already trusts (shipped with it, or the last one it
    /// verified). It must be signed by a threshold of its own keys; its expiry is judged only
    /// once no newer root is found.
    pub fn new(root: &[u8], now: jiff::Timestamp) -> Result<Self, Error> {
        let root = Envelope::<Root>::parse(root)?;
        root.signed.verify(&root)?;
        Ok(TrustedSet {
            now,
            root,
            timestamp: None,
            snapshot: None,
            targets: HashMap::new(),
        })
    }

    pub fn root(&self) -> &Envelope<Root> {
        &self.root
    }

    pub fn timestamp(&self) -> Option<&Envelope<Timestamp>> {
        self.timestamp.as_ref()
    }

    pub fn snapshot(&self) -> Option<&Envelope<Snapshot>> {
        self.snapshot.as_ref()
    }

    /// A targets role loaded so far (`targets` or a delegated role).
    pub fn targets(&self, role: &str) -> Option<&Envelope<Targets>> {
        self.targets.get(role)
    }

    fn expired(&self, role: &str, expires: jiff::Timestamp) -> Result<(), Error> {
        if expires <= self.now {
            return Err(Error::Expired {
                role: role.to_string(),
                expires: expires.to_string(),
                now: self.now.to_string(),
            });
        }
        Ok(())
    }

    /// §5.3: the next root, signed by a threshold of the trusted root's keys and of its own, with
    /// exactly the next version.
    pub fn update_root(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.timestamp.is_some() {
            return Err(Error::Update(
                "root cannot change after timestamp was loaded".into(),
            ));
        }
        let new = Envelope::<Root>::parse(bytes)?;
        self.root.signed.verify(&new)?;
        let expected = self.root.version() + 1;
        if new.version() != expected {
            return Err(version_error(
                "root",
                new.version(),
                format!("expected {expected}"),
            ));
        }
        new.signed.verify(&new)?;
        self.root = new;
        Ok(())
    }

    /// §5.4: a timestamp signed by root's timestamp keys, never older than the trusted one and
    /// never pointing at an older snapshot. The final root must not have expired.
    pub fn update_timestamp(&mut self, bytes: &[u8]) -> Result<TimestampUpdate, Error> {
        if self.snapshot.is_some() {
            return Err(Error::Update(
                "timestamp cannot change after snapshot was loaded".into(),
            ));
        }
        self.expired("root", self.root.expires())?;
        let new = Envelope::<Timestamp>::parse(bytes)?;
        self.root.signed.verify(&new)?;
        if let Some(trusted) = &self.timestamp {
            if new.version() < trusted.version() {
                return Err(version_error(
                    "timestamp",
                    new.version(),
                    format!("older than the trusted version {}", trusted.version()),
                ));
            }
            if new.version() == trusted.version() {
                return Ok(TimestampUpdate::SameVersion);
            }
            let (old, now) = (
                trusted.signed.snapshot_meta().version,
                new.signed.snapshot_meta().version,
            );
            if now < old {
                return Err(version_error(
                    "snapshot (as listed in timestamp)",
                    now,
                    format!("older than the trusted snapshot version {old}"),
                ));
            }
        }
        self.timestamp = Some(new);
        self.final_timestamp()?;
        Ok(TimestampUpdate::Accepted)
    }

    fn final_timestamp(&self) -> Result<&Envelope<Timestamp>, Error> {
        let timestamp = self
            .timestamp
            .as_ref()
            .ok_or_else(|| Error::Update("no timestamp loaded".into()))?;
        self.expired("timestamp", timestamp.expires())?;
        Ok(timestamp)
    }

    /// §5.5: a snapshot matching timestamp's hashes and length (not checked for the local copy,
    /// `from_disk`: timestamp may already name a newer one), signed by root's snapshot keys,
    /// dropping no targets role and rolling none back. It is final once its version is the one
    /// timestamp names and it has not expired.
    pub fn update_snapshot(&mut self, bytes: &[u8], from_disk: bool) -> Result<(), Error> {
        if self.targets.contains_key("targets") {
            return Err(Error::Update(
                "snapshot cannot change after targets was loaded".into(),
            ));
        }
        let meta = self.final_timestamp()?.signed.snapshot_meta().clone();
        if !from_disk {
            check_length_and_hashes(
                "snapshot metadata",
                bytes,
                meta.length,
                meta.hashes.as_ref(),
            )?;
        }
        let new = Envelope::<Snapshot>::parse(bytes)?;
        self.root.signed.verify(&new)?;
        if let Some(trusted) = &self.snapshot {
            for (file, old) in &trusted.signed.meta {
                let Some(listed) = new.signed.meta.get(file) else {
                    return Err(Error::Update(format!(
                        "the new snapshot drops {file}, which the trusted one lists"
                    )));
                };
                if listed.version < old.version {
                    return Err(version_error(
                        file,
                        listed.version,
                        format!("older than the trusted version {}", old.version),
                    ));
                }
            }
        }
        self.snapshot = Some(new);
        self.final_snapshot()?;
        Ok(())
    }

    fn final_snapshot(&self) -> Result<&Envelope<Snapshot>, Error> {
        let snapshot = self
            .snapshot
            .as_ref()
            .ok_or_else(|| Error::Update("no snapshot loaded".into()))?;
        self.expired("snapshot", snapshot.expires())?;
        let expected = self.final_timestamp()?.signed.snapshot_meta().version;
        if snapshot.version() != expected {
            return Err(version_error(
                "snapshot",
                snapshot.version(),
                format!("timestamp names version {expected}"),
            ));
        }
        Ok(snapshot)
    }

    /// The keys that may sign `role` as delegated by `delegator` (`root` for `targets`), checked
    /// on every use: a role reached through a second delegator is judged by that one's keys.
    pub fn verify_delegated(
        &self,
        role: &str,
        delegator: &str,
        envelope: &Envelope<Targets>,
    ) -> Result<(), Error> {
        if delegator == "root" {
            return self.root.signed.verify(envelope);
        }
        let delegations: &Delegations = self
            .targets
            .get(delegator)
            .and_then(|d| d.signed.delegations.as_ref())
            .ok_or_else(|| {
                Error::Update(format!("{delegator} is not loaded or delegates nothing"))
            })?;
        delegations.verify(role, envelope)
    }

    /// §5.6 and §5.7.6: a targets role (`targets` by root, or one delegated by `delegator`),
    /// matching snapshot's hashes and length for it, signed by the delegator's keys for it, with
    /// exactly the version snapshot lists, not expired.
    pub fn update_targets(
        &mut self,
        role: &str,
        delegator: &str,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let snapshot = self.final_snapshot()?;
        let file = format!("{role}.json");
        let meta = snapshot.signed.meta.get(&file).cloned().ok_or_else(|| {
            Error::Update(format!(
                "snapshot does not list {file}, so {role} cannot be trusted"
            ))
        })?;
        check_length_and_hashes(
            &format!("{role} metadata"),
            bytes,
            meta.length,
            meta.hashes.as_ref(),
        )?;
        let new = Envelope::<Targets>::parse(bytes)?;
        self.verify_delegated(role, delegator, &new)?;
        if new.version() != meta.version {
            return Err(version_error(
                role,
                new.version(),
                format!("snapshot names version {}", meta.version),
            ));
        }
        self.expired(role, new.expires())?;
        self.targets.insert(role.to_string(), new);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
