//! Rotating the online snapshot and timestamp keys, which never leave the server.
//!
//! The operator asks for a next key (`<role>.next.pem`, made here, its public half returned),
//! signs a root that lists it with the root keys, and posts that root. When a root that lists a
//! role's next key — and not its current one — is accepted, the next key becomes the current one
//! (`<role>.pem`; the old pair is kept as `<role>.retired-<unix>.pem` for the record) before the
//! repository re-signs snapshot and timestamp under the new root. Key files are read at every
//! signature, so servers sharing `tuf.online_keys_dir` all sign with the new key from then on.

use std::path::{Path, PathBuf};

use edgefleet_tuf::keys;
use tough::schema::{RoleType, Root};

/// The two roles whose keys are online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnlineRole {
    Snapshot,
    Timestamp,
}

impl OnlineRole {
    pub const ALL: [OnlineRole; 2] = [OnlineRole::Snapshot, OnlineRole::Timestamp];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "snapshot" => Some(Self::Snapshot),
            "timestamp" => Some(Self::Timestamp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Timestamp => "timestamp",
        }
    }

    fn role_type(self) -> RoleType {
        match self {
            Self::Snapshot => RoleType::Snapshot,
            Self::Timestamp => RoleType::Timestamp,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("online key {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn key_error(path: &Path) -> impl FnOnce(edgefleet_tuf::Error) -> RotationError + '_ {
    move |e| RotationError::Key {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// The public half of `role`'s next key, made now unless one is already waiting (asking twice
/// before a rotation gives the same key, so an operator can retry).
pub fn next_key(dir: &Path, role: OnlineRole) -> Result<tough::schema::key::Key, RotationError> {
    let name = format!("{}.next", role.as_str());
    let public = dir.join(format!("{name}.pub.json"));
    if !public.exists() {
        keys::generate(dir, &name).map_err(key_error(&public))?;
    }
    keys::read_public(&public).map_err(key_error(&public))
}

/// A promotion of next keys to current, undone unless [`Promotion::keep`] is called.
#[derive(Debug)]
pub struct Promotion {
    moves: Vec<(PathBuf, PathBuf)>,
    kept: bool,
}

impl Promotion {
    /// Roles that got a new key.
    pub fn promoted(&self) -> usize {
        self.moves.len() / 4
    }

    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Promotion {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for (from, to) in self.moves.iter().rev() {
            if let Err(e) = std::fs::rename(to, from) {
                tracing::error!(error = %e, from = %to.display(), to = %from.display(), "cannot undo an online key promotion");
            }
        }
    }
}

/// Makes each role's next key current where `root` lists the next key and not the current one.
pub fn promote_for(dir: &Path, root: &Root, now_unix: i64) -> Result<Promotion, RotationError> {
    let mut promotion = Promotion {
        moves: Vec::new(),
        kept: false,
    };
    for role in OnlineRole::ALL {
        let name = role.as_str();
        let next_public = dir.join(format!("{name}.next.pub.json"));
        if !next_public.exists() {
            continue;
        }
        let listed = |path: &Path| -> Result<bool, RotationError> {
            let key = keys::read_public(path).map_err(key_error(path))?;
            let id = key.key_id().map_err(|e| RotationError::Key {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
            Ok(root
                .roles
                .get(&role.role_type())
                .is_some_and(|r| r.keyids.contains(&id)))
        };
        let current_public = dir.join(format!("{name}.pub.json"));
        if !listed(&next_public)? || listed(&current_public)? {
            continue;
        }
        for (from, to) in [
            (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}.retired-{now_unix}.pem")),
            ),
            (
                current_public.clone(),
                dir.join(format!("{name}.retired-{now_unix}.pub.json")),
            ),
            (
                dir.join(format!("{name}.next.pem")),
                dir.join(format!("{name}.pem")),
            ),
            (next_public.clone(), current_public.clone()),
        ] {
            std::fs::rename(&from, &to).map_err(|source| RotationError::Io {
                path: from.clone(),
                source,
            })?;
            promotion.moves.push((from, to));
        }
        tracing::info!(
            role = name,
            "a root listing this server's next online key arrived: it is the current key now"
        );
    }
    Ok(promotion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_tuf::operator::{RoleSpec, RootSpec, build_root};

    fn root_with(dir: &Path, snapshot: &str, timestamp: &str) -> Root {
        let key = |name: &str| keys::read_public(&dir.join(format!("{name}.pub.json"))).unwrap();
        let one = |name: &str| RoleSpec {
            keys: vec![key(name)],
            threshold: 1,
        };
        build_root(
            &RootSpec {
                root: one("root"),
                targets: one("root"),
                snapshot: one(snapshot),
                timestamp: one(timestamp),
            },
            2,
            jiff::Timestamp::now(),
        )
        .unwrap()
    }

    #[test]
    fn only_a_root_listing_the_next_key_promotes_it_and_an_undone_promotion_restores_all() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for name in ["root", "snapshot", "timestamp"] {
            keys::generate(dir, name).unwrap();
        }
        let next = next_key(dir, OnlineRole::Timestamp).unwrap();
        assert_eq!(
            next_key(dir, OnlineRole::Timestamp).unwrap(),
            next,
            "asked twice, one key"
        );
        let current = std::fs::read(dir.join("timestamp.pem")).unwrap();

        // A root still listing the current key promotes nothing.
        let unchanged = root_with(dir, "snapshot", "timestamp");
        assert_eq!(promote_for(dir, &unchanged, 1).unwrap().promoted(), 0);

        // Listing the next key promotes it; dropped without keep(), all is as before.
        let rotated = root_with(dir, "snapshot", "timestamp.next");
        let promotion = promote_for(dir, &rotated, 1).unwrap();
        assert_eq!(promotion.promoted(), 1);
        assert_eq!(
            keys::read_public(&dir.join("timestamp.pub.json")).unwrap(),
            next
        );
        drop(promotion);
        assert_eq!(std::fs::read(dir.join("timestamp.pem")).unwrap(), current);
        assert!(dir.join("timestamp.next.pem").exists());

        // Kept: the next key is current, the old one retired, no next key waits.
        promote_for(dir, &rotated, 2).unwrap().keep();
        assert_eq!(
            keys::read_public(&dir.join("timestamp.pub.json")).unwrap(),
            next
        );
        assert_eq!(
            std::fs::read(dir.join("timestamp.retired-2.pem")).unwrap(),
            current
        );
        assert!(!dir.join("timestamp.next.pem").exists());
    }
}
