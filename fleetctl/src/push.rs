//! `fleetctl push`, `revoke` and `prune`: one flow for a local repository and the fleet server,
//! for a model listed in the top-level targets and for one delegated to its own role.
//!
//! A push signs the release's metadata (lineage included) with its golden cases, baseline and
//! model card moved out into release files named by hash (`edgefleet_tuf::release_files`), stores the artifact and those files
//! first and publishes the metadata last, so nothing a device can see names a file that is not
//! there.

use std::path::Path;

use edgefleet_tuf::delegation::role_of;
use edgefleet_tuf::operator::{self, ReleaseDir};
use edgefleet_tuf::release_files;
use jiff::Timestamp;
use tough::schema::Targets;

use crate::cli::{ReleaseArgs, RepoArgs};
use crate::delegate::{self, Repository, current_role, is_delegated, publish_into_role};
use crate::repo::targets_signers;

/// Where a release is signed into: the top-level targets or the model's own role.
enum Place {
    Top(tough::schema::Root),
    Role(String),
}

/// The role a model's releases are listed in, its current contents, and where to sign.
async fn place_of(
    repo: &Repository<'_>,
    args: &RepoArgs,
    model: &str,
) -> anyhow::Result<(Targets, Place)> {
    let (root, top, top_bytes) = repo.top(args).await?;
    if is_delegated(&top.signed, model) {
        let current = current_role(repo, &top_bytes, model).await?;
        Ok((current, Place::Role(role_of(model))))
    } else {
        Ok((top.signed, Place::Top(root)))
    }
}

/// Signs `next` where it belongs and publishes it; returns "ROLE version N" for the operator.
async fn publish(
    repo: &Repository<'_>,
    args: &RepoArgs,
    place: Place,
    next: Targets,
) -> anyhow::Result<String> {
    match place {
        Place::Top(root) => {
            let signed = operator::sign_with(next, &root, &targets_signers(args)?).await?;
            let version = repo.publish_top(operator::to_bytes(&signed)?).await?;
            Ok(format!("targets version {version}"))
        }
        Place::Role(role) => {
            let version = publish_into_role(repo, args, &args.model_keys, &role, next).await?;
            Ok(format!("{role} version {version}"))
        }
    }
}

pub(crate) async fn push(
    repo: &Repository<'_>,
    args: &RepoArgs,
    release_args: &ReleaseArgs,
    model_dir: &Path,
) -> anyhow::Result<()> {
    let mut release: ReleaseDir = operator::read_release(model_dir)?;
    let (current, place) = place_of(repo, args, release.meta.model.as_str()).await?;
    release_args.settle(&current, &mut release)?;
    let max_file_bytes = release_args
        .max_release_file_mib
        .saturating_mul(1024 * 1024);
    let mut files = if release_args.inline_release_files {
        Vec::new()
    } else {
        release_files::detach(&mut release.meta, max_file_bytes)?
    };
    // The model card is always a file: it is for people, and devices never fetch it.
    if let Some(card) = release.card.take() {
        files.push(release_files::card(
            &mut release.meta,
            card,
            max_file_bytes,
        )?);
    }
    let (artifact, meta) = (&release.artifact, &release.meta);
    let (name, target) = operator::model_target(artifact, meta)?;
    let sha = hex::encode(&target.hashes.sha256);
    let next = operator::with_target(
        &current,
        &name,
        target,
        operator::days_after(Timestamp::now(), args.targets_days)?,
    )?;
    let uploaded = repo
        .store_artifact(&name, artifact, &model_dir.join("model.onnx"), &sha)
        .await?;
    let mut file_notes = Vec::new();
    for file in &files {
        repo.store_file(&file.name, &file.bytes, &file.sha256_hex)
            .await?;
        file_notes.push(format!("{} {} bytes", file.kind, file.bytes.len()));
    }
    let published = publish(repo, args, place, next).await?;
    println!(
        "pushed {name} (sequence {}, floor {}{}, {} bytes{}, sha256 {sha}{}); {published}",
        meta.sequence,
        meta.min_sequence,
        downgrade_note(meta),
        artifact.len(),
        if uploaded { "" } else { ", already uploaded" },
        if file_notes.is_empty() {
            String::new()
        } else {
            format!("; {}", file_notes.join(", "))
        },
    );
    Ok(())
}

pub(crate) async fn revoke(
    repo: &Repository<'_>,
    args: &RepoArgs,
    target: &str,
) -> anyhow::Result<()> {
    let model = delegate::model_of_target(target).unwrap_or_default();
    let (current, place) = place_of(repo, args, &model).await?;
    let next = operator::without_target(
        &current,
        target,
        operator::days_after(Timestamp::now(), args.targets_days)?,
    )?;
    let published = publish(repo, args, place, next).await?;
    println!("revoked {target}; {published}");
    Ok(())
}

/// Drops all but the `keep` newest releases of `model` from the role that lists them, in one
/// publication.
pub(crate) async fn prune(
    repo: &Repository<'_>,
    args: &RepoArgs,
    model: &str,
    keep: usize,
) -> anyhow::Result<()> {
    let (current, place) = place_of(repo, args, model).await?;
    let (next, dropped) = operator::pruned(
        &current,
        model,
        keep,
        operator::days_after(Timestamp::now(), args.targets_days)?,
    )?;
    if dropped.is_empty() {
        println!("nothing to prune: {model} lists {keep} release(s) or fewer");
        return Ok(());
    }
    let published = publish(repo, args, place, next).await?;
    println!(
        "pruned {} release(s) of {model}: {}; {published}",
        dropped.len(),
        dropped.join(", ")
    );
    Ok(())
}

fn downgrade_note(meta: &edgefleet_protocol::target::ModelTargetMeta) -> String {
    meta.downgrade_from
        .as_ref()
        .map(|from| format!(", a signed downgrade from {from}"))
        .unwrap_or_default()
}
