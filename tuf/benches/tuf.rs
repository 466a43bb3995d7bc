//! Figures for docs/BENCHMARKS.md: TUF refresh + verify time for a repository of 1,000 model
//! targets, and artifact verify throughput while streaming.
//!
//! `cargo bench -p edgefleet-tuf --bench tuf`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::source;
use edgefleet_tuf::client::{self, ClientConfig, ClientLimits, PlainTarget};
use edgefleet_tuf::operator;
use jiff::Timestamp;
use url::Url;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let common::Empty {
        keys: keys_dir,
        root,
        root_bytes,
        repo_dir,
        store,
    } = common::empty_repository(tmp.path(), now).await;

    // 1,000 releases of a real model's metadata (iris: interface, health, baseline).
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/iris/1.0.0");
    let (artifact, base_meta) = operator::read_release_dir(&models).unwrap();
    let mut targets = operator::empty_targets(1, operator::days_after(now, 90).unwrap()).unwrap();
    for i in 0..1000u64 {
        let mut meta = base_meta.clone();
        meta.version = semver::Version::new(1, 0, i);
        meta.sequence = i + 1;
        let mut bytes = artifact.clone();
        bytes.extend_from_slice(&i.to_le_bytes());
        let (name, target) = operator::model_target(&bytes, &meta).unwrap();
        store.store_artifact(&name, &bytes).unwrap();
        targets
            .targets
            .insert(tough::TargetName::new(name).unwrap(), target);
    }
    targets.version = std::num::NonZeroU64::new(2).unwrap();
    let signed = operator::sign_with(targets, &root, &[source(&keys_dir, "targets")])
        .await
        .unwrap();
    let targets_bytes = operator::to_bytes(&signed).unwrap();
    store.accept_targets(&targets_bytes, now).await.unwrap();

    let config = |dir: &Path| ClientConfig {
        metadata_dir: dir.to_path_buf(),
        metadata_url: Url::from_directory_path(repo_dir.join("metadata")).unwrap(),
        targets_url: Url::from_directory_path(repo_dir.join("targets")).unwrap(),
        limits: ClientLimits::default(),
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut parse = Vec::new();
    for run in 0..7 {
        let dir = tmp.path().join(format!("device-{run}"));
        client::init(&dir, &root_bytes).unwrap();
        let started = Instant::now();
        let mut trusted = client::refresh(&config(&dir), tough::FilesystemTransport)
            .await
            .unwrap();
        cold.push(started.elapsed());
        let started = Instant::now();
        client::refresh(&config(&dir), tough::FilesystemTransport)
            .await
            .unwrap();
        warm.push(started.elapsed());
        let started = Instant::now();
        assert_eq!(trusted.all_model_targets().await.unwrap().len(), 1000);
        parse.push(started.elapsed());
    }
    println!(
        "repository: 1,000 model targets, targets.json {} bytes",
        targets_bytes.len()
    );
    println!(
        "refresh + verify, first (empty cache): median {:?}",
        median(cold)
    );
    println!(
        "refresh + verify, again (same versions): median {:?}",
        median(warm)
    );
    println!(
        "parse + validate all 1,000 model metadata: median {:?}",
        median(parse)
    );

    // Streaming verify throughput: sha256 alone, then the whole fetch path (file transport,
    // length cap, hash, staging file write + fsync).
    let size = 128 * 1024 * 1024;
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let started = Instant::now();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for chunk in data.chunks(64 * 1024) {
        ctx.update(chunk);
    }
    let digest = ctx.finish();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sha256 streaming (64 KiB chunks): {:.0} MB/s",
        size as f64 / 1e6 / secs
    );

    let mut meta = base_meta.clone();
    meta.version = semver::Version::new(9, 0, 0);
    meta.sequence = 5000;
    let (name, mut target) = operator::model_target(&data, &meta).unwrap();
    assert_eq!(target.hashes.sha256.as_ref(), digest.as_ref());
    target.length = data.len() as u64;
    store.store_artifact(&name, &data).unwrap();
    let next = operator::with_target(
        &signed.signed,
        &name,
        target,
        operator::days_after(now, 90).unwrap(),
    )
    .unwrap();
    let signed = operator::sign_with(next, &root, &[source(&keys_dir, "targets")])
        .await
        .unwrap();
    store
        .accept_targets(&operator::to_bytes(&signed).unwrap(), now)
        .await
        .unwrap();
    let dir = tmp.path().join("device-big");
    client::init(&dir, &root_bytes).unwrap();
    let mut trusted = client::refresh(&config(&dir), tough::FilesystemTransport)
        .await
        .unwrap();
    let plain: PlainTarget = trusted.resolve(&name).await.unwrap();
    let started = Instant::now();
    let bytes = trusted
        .fetch_plain(&plain, &tmp.path().join("staging"))
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(bytes.length(), size as u64);
    println!(
        "fetch + verify + stage 128 MiB (file transport): {:.0} MB/s",
        size as f64 / 1e6 / secs
    );
}
