//! Offline bundles (`fleetctl bundle`, `fleetctl resign-bundle`): one signed model version and
//! the repository's metadata, as a directory `edge-agent install DIR` takes with no network,
//! valid for the days the operator chose. Why the bundle has a timestamp and snapshot of its own,
//! and what a long validity costs, is in `edgefleet_tuf::repo::bundle` and docs/BUNDLES.md.
//!
//! The directory is built beside the destination (`DIR.partial`), checked the way a device
//! checks it (every file it names downloaded and verified), and only then renamed into place:
//! a bundle directory that exists is a complete one.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use edgefleet_protocol::api::{BundleMetadata, BundleRequest};
use edgefleet_protocol::bundle::{BundleManifest, MANIFEST_FILE};
use edgefleet_protocol::release_files::release_file_name;
use edgefleet_tuf::client::{self, ClientConfig, ClientLimits};
use edgefleet_tuf::operator::Expiries;
use edgefleet_tuf::repo::{Bundle, DirBackend, OnlineKeys, RepoStore, resign_bundle};
use jiff::Timestamp;
use reqwest::Method;

use crate::remote::Client;

#[derive(Debug)]
pub(crate) struct BundleSpec {
    pub(crate) model: String,
    pub(crate) version: String,
    pub(crate) valid_days: u32,
    pub(crate) out: PathBuf,
}

/// A bundle of a version the fleet server signs: the server signs the bundle's timestamp and
/// snapshot with its online keys; the files come from its targets.
pub(crate) async fn from_server(client: &Client, spec: &BundleSpec) -> anyhow::Result<()> {
    let staging = staging_for(&spec.out)?;
    let request = BundleRequest {
        model: spec.model.clone(),
        version: spec.version.clone(),
        valid_days: spec.valid_days,
    };
    let made: BundleMetadata = client
        .send_json(Method::POST, "/api/v1/bundles", &request, "making a bundle")
        .await?;
    let result = async {
        for (file, text) in &made.metadata {
            write_metadata(&staging, file, text.as_bytes())?;
        }
        for (name, sha256) in files_of(&staging, &made.target).await? {
            let dest = DirBackend::new(&staging).artifact_path(&name, &sha256)?;
            let relative = dest
                .strip_prefix(staging.join("targets"))
                .context("target path outside targets/")?
                .to_string_lossy()
                .into_owned();
            client
                .download(&format!("/tuf/targets/{relative}"), &dest, &name)
                .await?;
        }
        finish(&staging, &spec.out, &made.target, &made.expires).await
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// A bundle of an offline repository (`--repo`), signed with its online keys from `--keys`.
pub(crate) async fn from_repo(
    repo: &Path,
    keys: OnlineKeys,
    spec: &BundleSpec,
) -> anyhow::Result<()> {
    let target = target_name(&spec.model, &spec.version)?;
    let store = RepoStore::open(repo, keys, Expiries::default())?;
    // Before anything is signed: the version must be in the repository.
    files_of(repo, &target).await?;
    let staging = staging_for(&spec.out)?;
    let result = async {
        let bundle: Bundle = store.bundle(spec.valid_days, Timestamp::now()).await?;
        for (file, bytes) in &bundle.metadata {
            write_metadata(&staging, file, bytes)?;
        }
        for (name, sha256) in files_of(&staging, &target).await? {
            let from = store.artifact_path(&name, &sha256)?;
            let dest = DirBackend::new(&staging).artifact_path(&name, &sha256)?;
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&from, &dest).with_context(|| {
                format!("{name}: {} is missing from the repository", from.display())
            })?;
        }
        finish(&staging, &spec.out, &target, &bundle.expires.to_string()).await
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Re-signs the bundle in `dir` for `valid_days` from now with the operator's online keys, and
/// checks it again.
pub(crate) async fn resign(dir: &Path, keys: OnlineKeys, valid_days: u32) -> anyhow::Result<()> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let mut manifest: BundleManifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).with_context(|| {
            format!(
                "{} is not a bundle made by `fleetctl bundle`",
                dir.display()
            )
        })?)
        .with_context(|| manifest_path.display().to_string())?;
    let bundle = resign_bundle(&dir.join("metadata"), &keys, valid_days, Timestamp::now()).await?;
    manifest.expires = bundle.expires.to_string();
    for target in &manifest.targets {
        check(dir, target).await?;
    }
    edgefleet_files::write_atomic(
        &manifest_path,
        &serde_json::to_vec_pretty(&manifest)?,
        edgefleet_files::Visibility::Public,
    )?;
    println!(
        "re-signed {}: valid until {} ({valid_days} days), timestamp version {}",
        dir.display(),
        manifest.expires,
        bundle.timestamp_version
    );
    Ok(())
}

fn target_name(model: &str, version: &str) -> anyhow::Result<String> {
    let model = edgefleet_protocol::ids::ModelName::new(model)
        .with_context(|| format!("{model:?} is not a model name"))?;
    let version = semver_of(version)?;
    Ok(edgefleet_protocol::target_name::target_name(
        &model, &version,
    ))
}

fn semver_of(version: &str) -> anyhow::Result<semver::Version> {
    semver::Version::parse(version)
        .with_context(|| format!("{version:?} is not a version (MAJOR.MINOR.PATCH)"))
}

fn staging_for(out: &Path) -> anyhow::Result<PathBuf> {
    if out.exists() {
        bail!(
            "{} already exists; choose another --out or move it away",
            out.display()
        );
    }
    let mut name = out
        .file_name()
        .context("--out needs a directory name")?
        .to_os_string();
    name.push(".partial");
    let staging = out.with_file_name(name);
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(staging.join("metadata"))
        .with_context(|| staging.display().to_string())?;
    Ok(staging)
}

/// Writes one metadata file; its name comes from the server, so it must be a plain file name.
fn write_metadata(staging: &Path, file: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let plain = !file.is_empty()
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'%'));
    if !plain {
        bail!("the bundle names a metadata file {file:?}, which is not a plain file name");
    }
    let path = staging.join("metadata").join(file);
    std::fs::write(&path, bytes).with_context(|| path.display().to_string())
}

/// The files a device fetches for `target` (artifact and release files), as (name, sha256), from
/// the bundle's metadata verified from its first root.
async fn files_of(bundle: &Path, target: &str) -> anyhow::Result<Vec<(String, String)>> {
    let scratch = tempfile_dir(bundle)?;
    let (mut trusted, _) = open(bundle, &scratch).await?;
    let found = trusted.model_target(target).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let found = found
        .with_context(|| format!("{target} in the signed metadata of {}", bundle.display()))?;
    let mut files = vec![(found.name.clone(), found.sha256_hex.clone())];
    for (kind, file) in found.meta.files.iter() {
        files.push((release_file_name(&found.name, kind), file.sha256.clone()));
    }
    Ok(files)
}

fn tempfile_dir(bundle: &Path) -> anyhow::Result<PathBuf> {
    let mut name = bundle
        .file_name()
        .context("bundle directory has no name")?
        .to_os_string();
    name.push(".check");
    let scratch = bundle.with_file_name(name);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(scratch)
}

async fn open(
    bundle: &Path,
    scratch: &Path,
) -> anyhow::Result<(client::TrustedRepo, ClientConfig)> {
    let bundle = std::fs::canonicalize(bundle).with_context(|| bundle.display().to_string())?;
    let root_path = bundle.join("metadata/1.root.json");
    let root = std::fs::read(&root_path).with_context(|| root_path.display().to_string())?;
    client::init(&scratch.join("metadata"), &root)?;
    let url = |sub: &str| {
        url::Url::from_directory_path(bundle.join(sub))
            .map_err(|()| anyhow::anyhow!("{} is not an absolute path", bundle.display()))
    };
    let config = ClientConfig {
        metadata_dir: scratch.join("metadata"),
        metadata_url: url("metadata")?,
        targets_url: url("targets")?,
        limits: ClientLimits::default(),
    };
    let trusted = client::refresh(&config, tough::FilesystemTransport).await?;
    Ok((trusted, config))
}

/// Verifies `target` and its release files in the bundle as a device would.
async fn check(bundle: &Path, target: &str) -> anyhow::Result<()> {
    let scratch = tempfile_dir(bundle)?;
    let result = async {
        let (mut trusted, _) = open(bundle, &scratch).await?;
        let mut found = trusted.model_target(target).await?;
        trusted
            .fetch(&found, &scratch.join("staging"))
            .await
            .with_context(|| format!("artifact of {target}"))?;
        trusted
            .fetch_release_files(&mut found, &scratch.join("staging"))
            .await
            .with_context(|| format!("release files of {target}"))?;
        anyhow::Ok(found.length)
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result.map(drop)
}

async fn finish(staging: &Path, out: &Path, target: &str, expires: &str) -> anyhow::Result<()> {
    check(staging, target).await?;
    let manifest = BundleManifest {
        targets: vec![target.to_owned()],
        expires: expires.to_owned(),
    };
    std::fs::write(
        staging.join(MANIFEST_FILE),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    std::fs::rename(staging, out)
        .with_context(|| format!("moving {} to {}", staging.display(), out.display()))?;
    println!(
        "bundle {}: {target}, valid until {expires}; on the device: edge-agent install {}",
        out.display(),
        out.display()
    );
    Ok(())
}
