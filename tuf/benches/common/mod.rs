//! What both TUF benches start from: operator keys for the four roles, a version-1 root over
//! them and a repository holding empty targets, made by the operator and repository code.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use edgefleet_tuf::keys::{self, PemKeySource};
use edgefleet_tuf::operator::{self, Expiries, RoleSpec, RootSpec};
use edgefleet_tuf::repo::{OnlineKeys, RepoStore};
use jiff::Timestamp;
use tough::key_source::KeySource;
use tough::schema::Root;

pub fn source(keys: &Path, name: &str) -> Box<dyn KeySource> {
    Box::new(PemKeySource {
        path: keys.join(format!("{name}.pem")),
    })
}

pub struct Empty {
    pub keys: PathBuf,
    pub root: Root,
    pub root_bytes: Vec<u8>,
    pub repo_dir: PathBuf,
    pub store: RepoStore,
}

/// Keys in `dir/keys`, and an empty repository in `dir/repo` created at `now`.
pub async fn empty_repository(dir: &Path, now: Timestamp) -> Empty {
    let keys_dir = dir.join("keys");
    for n in ["root", "targets", "snapshot", "timestamp"] {
        keys::generate(&keys_dir, n).unwrap();
    }
    let public = |n: &str| keys::read_public(&keys_dir.join(format!("{n}.pub.json"))).unwrap();
    let role = |n: &str| RoleSpec {
        keys: vec![public(n)],
        threshold: 1,
    };
    let root = operator::build_root(
        &RootSpec {
            root: role("root"),
            targets: role("targets"),
            snapshot: role("snapshot"),
            timestamp: role("timestamp"),
        },
        1,
        operator::days_after(now, 365).unwrap(),
    )
    .unwrap();
    let root_bytes = operator::sign_root(&root, &[&root], &[source(&keys_dir, "root")])
        .await
        .unwrap();
    let empty = operator::empty_targets(1, operator::days_after(now, 90).unwrap()).unwrap();
    let empty = operator::sign_with(empty, &root, &[source(&keys_dir, "targets")])
        .await
        .unwrap();
    let repo_dir = dir.join("repo");
    let (store, _) = RepoStore::create(
        &repo_dir,
        &root_bytes,
        &operator::to_bytes(&empty).unwrap(),
        OnlineKeys {
            snapshot: source(&keys_dir, "snapshot"),
            timestamp: source(&keys_dir, "timestamp"),
        },
        Expiries::default(),
        now,
    )
    .await
    .unwrap();
    Empty {
        keys: keys_dir,
        root,
        root_bytes,
        repo_dir,
        store,
    }
}
