//! A real repository on disk, made with the operator and repository code, and a device client
//! pointed at it (file:// by default; tests tamper with a copy to play the attacker).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use edgefleet_protocol::target::ModelTargetMeta;
use edgefleet_tuf::client::{self, ClientConfig, ClientLimits, TrustedRepo};
use edgefleet_tuf::keys::{self, PemKeySource};
use edgefleet_tuf::operator::{self, Expiries, RoleSpec, RootSpec};
use edgefleet_tuf::repo::{OnlineKeys, RepoStore};
use jiff::Timestamp;
use tough::key_source::KeySource;
use tough::schema::{Root, Signed, Targets};
use url::Url;

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub keys: PathBuf,
    pub repo: RepoStore,
    pub repo_dir: PathBuf,
    pub client_dir: PathBuf,
}

pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

pub fn release(dir: &str) -> (Vec<u8>, ModelTargetMeta) {
    operator::read_release_dir(&models_dir().join(dir)).unwrap()
}

pub fn source(keys: &Path, name: &str) -> Box<dyn KeySource> {
    Box::new(PemKeySource {
        path: keys.join(format!("{name}.pem")),
    })
}

pub fn public(keys: &Path, name: &str) -> tough::schema::key::Key {
    keys::read_public(&keys.join(format!("{name}.pub.json"))).unwrap()
}

pub fn spec(keys: &Path, root: &[&str], root_threshold: u64) -> RootSpec {
    RootSpec {
        root: RoleSpec {
            keys: root.iter().map(|n| public(keys, n)).collect(),
            threshold: root_threshold,
        },
        targets: RoleSpec {
            keys: vec![public(keys, "targets")],
            threshold: 1,
        },
        snapshot: RoleSpec {
            keys: vec![public(keys, "snapshot")],
            threshold: 1,
        },
        timestamp: RoleSpec {
            keys: vec![public(keys, "timestamp")],
            threshold: 1,
        },
    }
}

pub fn online(keys: &Path) -> OnlineKeys {
    OnlineKeys {
        snapshot: source(keys, "snapshot"),
        timestamp: source(keys, "timestamp"),
    }
}

impl Fixture {
    /// A repository created at `now` (pass a past time to make its metadata expire) holding
    /// churn 1.0.0.
    pub async fn new_at(now: Timestamp) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("keys");
        for name in [
            "root",
            "root-2",
            "root-3",
            "targets",
            "snapshot",
            "timestamp",
            "intruder",
        ] {
            keys::generate(&keys, name).unwrap();
        }
        let root = operator::build_root(
            &spec(&keys, &["root"], 1),
            1,
            operator::days_after(now, 365).unwrap(),
        )
        .unwrap();
        let root_bytes = operator::sign_root(&root, &[&root], &[source(&keys, "root")])
            .await
            .unwrap();
        let targets = operator::empty_targets(1, operator::days_after(now, 90).unwrap()).unwrap();
        let targets = operator::sign_with(targets, &root, &[source(&keys, "targets")])
            .await
            .unwrap();
        let repo_dir = tmp.path().join("repo");
        let (repo, _) = RepoStore::create(
            &repo_dir,
            &root_bytes,
            &operator::to_bytes(&targets).unwrap(),
            online(&keys),
            Expiries::default(),
            now,
        )
        .await
        .unwrap();
        let client_dir = tmp.path().join("device/tuf");
        client::init(&client_dir, &root_bytes).unwrap();
        let mut f = Self {
            tmp,
            keys,
            repo,
            repo_dir,
            client_dir,
        };
        f.push("churn/1.0.0", now).await;
        f
    }

    pub async fn new() -> Self {
        Self::new_at(Timestamp::now()).await
    }

    pub async fn root(&self) -> Root {
        self.repo.root().await.unwrap().signed
    }

    pub async fn current_targets(&self) -> Targets {
        self.repo.targets().await.unwrap().0.signed
    }

    /// Signs the next targets with the release added (operator side) and publishes it, its
    /// golden cases and baseline inline (the form releases had before release files).
    pub async fn push(&mut self, release_dir: &str, now: Timestamp) -> String {
        let (bytes, meta) = release(release_dir);
        self.publish_release(&bytes, &meta, now).await
    }

    /// [`Fixture::push`] as `fleetctl push` does it today: golden cases, baseline and model card
    /// as release files stored beside the artifact.
    pub async fn push_with_files(&mut self, release_dir: &str, now: Timestamp) -> String {
        let (bytes, mut meta) = release(release_dir);
        let mut files = edgefleet_tuf::release_files::detach(&mut meta, u64::MAX).unwrap();
        if let Ok(card) = std::fs::read(models_dir().join(release_dir).join("MODEL_CARD.md")) {
            files.push(edgefleet_tuf::release_files::card(&mut meta, card, u64::MAX).unwrap());
        }
        for file in files {
            self.repo.store_artifact(&file.name, &file.bytes).unwrap();
        }
        self.publish_release(&bytes, &meta, now).await
    }

    async fn publish_release(
        &mut self,
        bytes: &[u8],
        meta: &ModelTargetMeta,
        now: Timestamp,
    ) -> String {
        let (name, target) = operator::model_target(bytes, meta).unwrap();
        self.repo.store_artifact(&name, bytes).unwrap();
        let next = operator::with_target(
            &self.current_targets().await,
            &name,
            target,
            operator::days_after(now, 90).unwrap(),
        )
        .unwrap();
        let signed =
            operator::sign_with(next, &self.root().await, &[source(&self.keys, "targets")])
                .await
                .unwrap();
        self.repo
            .accept_targets(&operator::to_bytes(&signed).unwrap(), now)
            .await
            .unwrap();
        name
    }

    /// The current targets with `target` added (sequence checked), expiring in 90 days.
    pub async fn current_with(
        &self,
        name: &str,
        target: tough::schema::Target,
    ) -> Result<Targets, edgefleet_tuf::Error> {
        operator::with_target(
            &self.current_targets().await,
            name,
            target,
            operator::days_after(Timestamp::now(), 90).unwrap(),
        )
    }

    /// `targets` signed with the operator's targets key, as published bytes.
    pub async fn sign_targets(&self, targets: Targets) -> Vec<u8> {
        let signed = operator::sign_with(
            targets,
            &self.root().await,
            &[source(&self.keys, "targets")],
        )
        .await
        .unwrap();
        operator::to_bytes(&signed).unwrap()
    }

    /// Offers operator-signed targets to the repository, as an upload would.
    pub async fn offer(
        &self,
        bytes: &[u8],
    ) -> Result<edgefleet_tuf::repo::Published, edgefleet_tuf::Error> {
        self.repo.accept_targets(bytes, Timestamp::now()).await
    }

    pub fn config_for(&self, repo_dir: &Path) -> ClientConfig {
        ClientConfig {
            metadata_dir: self.client_dir.clone(),
            metadata_url: Url::from_directory_path(repo_dir.join("metadata")).unwrap(),
            targets_url: Url::from_directory_path(repo_dir.join("targets")).unwrap(),
            limits: ClientLimits::default(),
        }
    }

    pub async fn refresh(&self) -> Result<TrustedRepo, edgefleet_tuf::Error> {
        client::refresh(&self.config_for(&self.repo_dir), tough::FilesystemTransport).await
    }

    pub async fn refresh_from(&self, mirror: &Path) -> Result<TrustedRepo, edgefleet_tuf::Error> {
        client::refresh(&self.config_for(mirror), tough::FilesystemTransport).await
    }

    /// A copy of the repository an attacker can edit.
    pub fn mirror(&self) -> PathBuf {
        let dst = self.tmp.path().join(format!("mirror-{}", rand_suffix()));
        copy_dir(&self.repo_dir, &dst);
        dst
    }

    /// The device's cached trusted metadata (file name and sha256), to check that a refused
    /// update changed nothing.
    pub fn client_state(&self) -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(&self.client_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            // The clock record moves on every refresh; the trusted metadata must not.
            .filter(|e| e.file_name() != "latest-time")
            .map(|e| {
                let bytes = std::fs::read(e.path()).unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    edgefleet_tuf::client::sha256_hex(&bytes),
                )
            })
            .collect();
        files.sort();
        files
    }
}

pub fn read_signed<T: serde::de::DeserializeOwned>(path: &Path) -> Signed<T> {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}
