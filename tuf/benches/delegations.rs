//! Figures for docs/BENCHMARKS.md: what a device running one model fetches, with one role per
//! model (`delegation.rs`), from a repository of 50 models × 20 releases, against the same model
//! alone in a repository and against the old layout (every release in the top-level role, golden
//! cases and baseline inline). Counted as the bytes of every file the device's client asks for
//! (file transport: bodies only, no HTTP headers), the metadata apart from the release files of
//! the release it installs, and timed.
//!
//! `cargo bench -p edgefleet-tuf --bench delegations`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::source;
use edgefleet_protocol::ModelName;
use edgefleet_protocol::target::ModelTargetMeta;
use edgefleet_tuf::client::{self, ClientConfig, ClientLimits};
use edgefleet_tuf::delegation::{role_of, sign_delegated, with_delegation};
use edgefleet_tuf::keys;
use edgefleet_tuf::operator;
use edgefleet_tuf::repo::RepoStore;
use jiff::Timestamp;
use tough::{FilesystemTransport, Transport, TransportError, TransportStream};
use url::Url;

const MODELS: u64 = 50;
const RELEASES: u64 = 20;

/// Counts the bytes of every file fetched.
#[derive(Debug, Clone, Default)]
struct Counting {
    bytes: Arc<Mutex<(u64, u64)>>,
}

#[async_trait::async_trait]
impl Transport for Counting {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let length = url
            .to_file_path()
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        {
            let mut b = self.bytes.lock().unwrap();
            b.0 += length;
            b.1 += 1;
        }
        FilesystemTransport.fetch(url).await
    }
}

impl Counting {
    fn take(&self) -> (u64, u64) {
        std::mem::take(&mut *self.bytes.lock().unwrap())
    }
}

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    keys: PathBuf,
    root_bytes: Vec<u8>,
    store: RepoStore,
    artifact: Vec<u8>,
    base: ModelTargetMeta,
    /// Releases carry their golden cases and baseline as release files (as `fleetctl push`
    /// signs them), not inline (the layout before).
    release_files: bool,
}

impl Repo {
    async fn new(release_files: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let empty = common::empty_repository(tmp.path(), Timestamp::now()).await;
        // A real model's metadata (churn: interface, health check with golden vectors, baseline).
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/churn/1.0.0");
        let (artifact, base) = operator::read_release_dir(&models).unwrap();
        Repo {
            _tmp: tmp,
            dir: empty.repo_dir,
            keys: empty.keys,
            root_bytes: empty.root_bytes,
            store: empty.store,
            artifact,
            base,
            release_files,
        }
    }

    fn release(&self, model: u64, release: u64) -> (String, tough::schema::Target) {
        let mut meta = self.base.clone();
        meta.model = ModelName::new(format!("m{model:02}")).unwrap();
        meta.version = semver::Version::new(1, release, 0);
        meta.sequence = release + 1;
        meta.min_sequence = release;
        if self.release_files {
            for file in edgefleet_tuf::release_files::detach(&mut meta, u64::MAX).unwrap() {
                self.store.store_artifact(&file.name, &file.bytes).unwrap();
            }
        }
        let (name, target) = operator::model_target(&self.artifact, &meta).unwrap();
        self.store.store_artifact(&name, &self.artifact).unwrap();
        (name, target)
    }

    fn expires() -> Timestamp {
        operator::days_after(Timestamp::now(), 90).unwrap()
    }

    async fn sign_top(&self, targets: tough::schema::Targets) -> Vec<u8> {
        let root = self.store.root().await.unwrap().signed;
        let signed = operator::sign_with(targets, &root, &[source(&self.keys, "targets")])
            .await
            .unwrap();
        operator::to_bytes(&signed).unwrap()
    }

    /// `models` models with `releases` releases each, every model in a role of its own.
    async fn delegated(models: u64, releases: u64, release_files: bool) -> Self {
        let repo = Self::new(release_files).await;
        for m in 0..models {
            let model = format!("m{m:02}");
            let mut role = operator::empty_targets(1, Self::expires()).unwrap();
            for r in 0..releases {
                let (name, target) = repo.release(m, r);
                role.targets
                    .insert(tough::TargetName::new(name).unwrap(), target);
            }
            let (top, _) = repo.store.targets().await.unwrap();
            let (next, _) = with_delegation(
                &top.signed,
                None,
                &model,
                &[keys::read_public(&repo.keys.join("targets.pub.json")).unwrap()],
                1,
                Self::expires(),
            )
            .unwrap();
            let top = repo.sign_top(next).await;
            let role = sign_delegated(role, &[source(&repo.keys, "targets")])
                .await
                .unwrap();
            repo.store
                .accept_targets_with_delegated(
                    &top,
                    &role_of(&model),
                    &operator::to_bytes(&role).unwrap(),
                    Timestamp::now(),
                )
                .await
                .unwrap();
        }
        repo
    }

    /// The same releases, every one in the top-level role, cases inline (the layout before
    /// delegations and release files).
    async fn flat(models: u64, releases: u64) -> Self {
        let repo = Self::new(false).await;
        let (top, _) = repo.store.targets().await.unwrap();
        let mut next = top.signed.clone();
        next.version = next.version.checked_add(1).unwrap();
        for m in 0..models {
            for r in 0..releases {
                let (name, target) = repo.release(m, r);
                next.targets
                    .insert(tough::TargetName::new(name).unwrap(), target);
            }
        }
        let bytes = repo.sign_top(next).await;
        repo.store
            .accept_targets(&bytes, Timestamp::now())
            .await
            .unwrap();
        repo
    }

    /// One more release of m00, where the layout puts it.
    async fn push_m00(&self, release: u64) {
        let (name, target) = self.release(0, release);
        match self.store.delegated(&role_of("m00")).await.unwrap() {
            Some((role, _)) => {
                let next =
                    operator::with_target(&role.signed, &name, target, Self::expires()).unwrap();
                let signed = sign_delegated(next, &[source(&self.keys, "targets")])
                    .await
                    .unwrap();
                self.store
                    .accept_delegated(
                        &role_of("m00"),
                        &operator::to_bytes(&signed).unwrap(),
                        Timestamp::now(),
                    )
                    .await
                    .unwrap();
            }
            None => {
                let (top, _) = self.store.targets().await.unwrap();
                let next =
                    operator::with_target(&top.signed, &name, target, Self::expires()).unwrap();
                let bytes = self.sign_top(next).await;
                self.store
                    .accept_targets(&bytes, Timestamp::now())
                    .await
                    .unwrap();
            }
        }
    }
}

/// What one device run fetched: metadata and release files apart.
struct Run {
    metadata: (u64, u64),
    release_files: (u64, u64),
    time: Duration,
}

/// A device's refresh and lookup of m00's newest release, then that release's files.
async fn device_run(repo: &Repo, device: &Path, counting: &Counting, release: u64) -> Run {
    let config = ClientConfig {
        metadata_dir: device.to_path_buf(),
        metadata_url: Url::from_directory_path(repo.dir.join("metadata")).unwrap(),
        targets_url: Url::from_directory_path(repo.dir.join("targets")).unwrap(),
        limits: ClientLimits::default(),
    };
    let started = Instant::now();
    let mut trusted = client::refresh(&config, counting.clone()).await.unwrap();
    let mut target = trusted
        .model_target(&format!("models/m00/1.{release}.0/model.onnx"))
        .await
        .unwrap();
    let metadata = counting.take();
    trusted
        .fetch_release_files(&mut target, &device.join("staging"))
        .await
        .unwrap();
    Run {
        metadata,
        release_files: counting.take(),
        time: started.elapsed(),
    }
}

async fn measure(label: &str, repo: &Repo) {
    let device = repo.dir.parent().unwrap().join(format!("device-{label}"));
    client::init(&device, &repo.root_bytes).unwrap();
    let counting = Counting::default();
    let cold = device_run(repo, &device, &counting, RELEASES - 1).await;
    // Warm: a refresh that finds nothing new (the release files were fetched by the cold run).
    let started = Instant::now();
    let config = ClientConfig {
        metadata_dir: device.clone(),
        metadata_url: Url::from_directory_path(repo.dir.join("metadata")).unwrap(),
        targets_url: Url::from_directory_path(repo.dir.join("targets")).unwrap(),
        limits: ClientLimits::default(),
    };
    client::refresh(&config, counting.clone()).await.unwrap();
    let (warm, warm_files) = counting.take();
    let warm_time = started.elapsed();
    repo.push_m00(RELEASES).await;
    let update = device_run(repo, &device, &counting, RELEASES).await;
    let cell = |run: &Run| {
        format!(
            "{} B in {} files + release files {} B in {} files, {:.1} ms",
            run.metadata.0,
            run.metadata.1,
            run.release_files.0,
            run.release_files.1,
            run.time.as_secs_f64() * 1e3
        )
    };
    println!(
        "| {label} | {} | {warm} B in {warm_files} files, {:.1} ms | {} |",
        cell(&cold),
        warm_time.as_secs_f64() * 1e3,
        cell(&update),
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!(
        "| repository (device runs m00) | cold refresh + lookup | warm, nothing changed | after one push to m00 |"
    );
    println!("|---|---|---|---|");
    for (files, how) in [(true, "release files"), (false, "cases inline")] {
        measure(
            &format!("{MODELS} models × {RELEASES} releases, one role per model, {how}"),
            &Repo::delegated(MODELS, RELEASES, files).await,
        )
        .await;
        measure(
            &format!("m00 alone ({RELEASES} releases), in its role, {how}"),
            &Repo::delegated(1, RELEASES, files).await,
        )
        .await;
    }
    measure(
        &format!("{MODELS} models × {RELEASES} releases, all in top-level targets"),
        &Repo::flat(MODELS, RELEASES).await,
    )
    .await;
}
