//! Delegated targets roles in the repository: accepted only when they verify against the
//! delegation the current top-level role makes (the same checks a device runs, from
//! [`crate::metadata`] and [`crate::search`]), at exactly the next version, with every target
//! inside the paths delegated and its artifact stored.

use jiff::Timestamp;
use tough::schema::{Signed, Targets};

use super::Published;
use super::{RepoBackend, RepoStore, check_not_expired, meta_version, parse};
use crate::Error;
use crate::metadata::{self, Envelope};
use crate::operator::model_meta;
use crate::search::delegates;

/// A delegated role's new version, published with the top-level role and snapshot.
#[derive(Debug, Clone, Copy)]
pub struct DelegatedFile<'a> {
    pub role: &'a str,
    pub version: u64,
    pub bytes: &'a [u8],
}

impl<B: RepoBackend> RepoStore<B> {
    /// The current version of delegated role `role` and its exact bytes, `None` when the
    /// repository has never published it.
    pub async fn delegated(&self, role: &str) -> Result<Option<(Signed<Targets>, Vec<u8>)>, Error> {
        let Some(version) = self.delegated_version(role).await? else {
            return Ok(None);
        };
        let file = format!("{version}.{}.json", metadata::quote_role(role));
        let bytes = self.read(&file).await?;
        Ok(Some((parse(&file, &bytes)?, bytes)))
    }

    async fn delegated_version(&self, role: &str) -> Result<Option<u64>, Error> {
        let snapshot = self.snapshot().await?;
        let file = format!("{role}.json");
        if !snapshot.signed.meta.contains_key(&file) {
            return Ok(None);
        }
        meta_version(&snapshot.signed.meta, &file).map(Some)
    }

    /// Accepts a new version of delegated role `role`, signed as the current top-level role
    /// delegates it, and publishes it.
    pub async fn accept_delegated(
        &self,
        role: &str,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<Published, Error> {
        let root = self.root().await?;
        let (top, top_bytes) = self.targets().await?;
        let version = self.check_delegated(&top_bytes, role, bytes, now).await?;
        self.publish_with(
            &root.signed,
            None,
            &top,
            &top_bytes,
            &[DelegatedFile {
                role,
                version,
                bytes,
            }],
            now,
        )
        .await
    }

    /// Accepts a new top-level role together with the first (or next) version of a delegated
    /// role it delegates, in one publication: how a model's releases move from the top-level role
    /// into their own without a moment in which a device could not find them.
    pub async fn accept_targets_with_delegated(
        &self,
        targets: &[u8],
        role: &str,
        role_bytes: &[u8],
        now: Timestamp,
    ) -> Result<Published, Error> {
        let root = self.root().await?;
        let (current, _) = self.targets().await?;
        let top = self
            .check_targets(&root.signed, Some(&current.signed), targets, now)
            .await?;
        let version = self.check_delegated(targets, role, role_bytes, now).await?;
        self.publish_with(
            &root.signed,
            None,
            &top,
            targets,
            &[DelegatedFile {
                role,
                version,
                bytes: role_bytes,
            }],
            now,
        )
        .await
    }

    /// Checks `bytes` as the next version of `role` under the top-level role `top_bytes`.
    /// Returns its version.
    async fn check_delegated(
        &self,
        top_bytes: &[u8],
        role: &str,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<u64, Error> {
        let top = Envelope::<metadata::Targets>::parse(top_bytes)?;
        let delegation = top
            .signed
            .delegations
            .as_ref()
            .and_then(|d| d.roles.iter().find(|r| r.name == role).map(|r| (d, r)));
        let Some((delegations, delegated)) = delegation else {
            return Err(Error::Target {
                name: role.to_string(),
                detail: "the top-level targets role does not delegate to it; delegate the model first (`fleetctl delegate`)".into(),
            });
        };
        let new = Envelope::<metadata::Targets>::parse(bytes)?;
        delegations.verify(role, &new)?;
        let expected = self.delegated_version(role).await?.map_or(1, |v| v + 1);
        if new.version() != expected {
            return Err(Error::Version {
                role: role.to_string(),
                found: new.version(),
                expected: format!("must be exactly {expected}"),
            });
        }
        check_not_expired(role, new.expires(), now)?;
        for (name, target) in &new.signed.targets {
            let bad = |detail: String| Error::Target {
                name: name.clone(),
                detail,
            };
            if !delegates(delegated, name) {
                return Err(bad(format!("outside the paths delegated to {role}")));
            }
            let custom = match &target.custom {
                Some(serde_json::Value::Object(custom)) => custom.clone(),
                _ => return Err(bad("no model metadata in its custom fields".into())),
            };
            let meta = model_meta(name, custom)?;
            let sha256_hex = target
                .hashes
                .get("sha256")
                .ok_or_else(|| bad("a model target must list a sha256 hash".into()))?;
            self.check_stored(name, target.length, sha256_hex, &meta)
                .await?;
        }
        Ok(new.version())
    }
}
