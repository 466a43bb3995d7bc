//! One targets role per model (`edgefleet_tuf::delegation`): `fleetctl delegate` and publishing
//! into a delegated role, on a local repository or through the fleet server, by the same code.
//!
//! `delegate MODEL` signs the next top-level targets with `models/MODEL/*/*` delegated to the
//! given keys (the targets keys by default; `--model-keys` limits signing for that model to keys
//! of its own) and moves the model's releases into its role in the same publication, so devices
//! find them all along. Afterwards `push` and `revoke` of that model sign its role with the
//! model keys (`--model-keys`, again defaulting to the targets keys) and leave the top-level role
//! alone.

use std::path::Path;

use anyhow::{Context, bail};
use edgefleet_tuf::delegation::{role_of, sign_delegated, with_delegation};
use edgefleet_tuf::metadata::{self, Envelope};
use edgefleet_tuf::operator;
use edgefleet_tuf::repo::RepoStore;
use jiff::Timestamp;
use serde_json::json;
use tough::schema::{Root, Signed, Targets};

use crate::cli::RepoArgs;
use crate::remote::Client;
use crate::repo::{open, public, server_targets, source, targets_signers};

/// Where the metadata is published: the operator's local repository or the fleet server.
pub(crate) enum Repository<'a> {
    Local(RepoStore),
    Server(&'a Client),
}

impl<'a> Repository<'a> {
    /// The server's repository when logged in with `--server`, else the local one of `args`.
    pub(crate) fn open(args: &RepoArgs, client: Option<&'a Client>) -> anyhow::Result<Self> {
        Ok(match client {
            Some(client) => Repository::Server(client),
            None => Repository::Local(open(args)?),
        })
    }

    /// The newest root and the current top-level targets (from a server: only if signed by the
    /// operator's own targets keys).
    pub async fn top(&self, args: &RepoArgs) -> anyhow::Result<(Root, Signed<Targets>, Vec<u8>)> {
        match self {
            Repository::Local(store) => {
                let (targets, bytes) = store.targets().await?;
                Ok((store.root().await?.signed, targets, bytes))
            }
            Repository::Server(client) => {
                let (root, targets) = server_targets(client, args).await?;
                let bytes = client
                    .get_bytes("/api/v1/tuf/targets", "fetching the current targets")
                    .await?;
                Ok((root, targets, bytes))
            }
        }
    }

    /// The current version of `role`, checked against the delegation `top_bytes` makes (a
    /// server cannot hand the operator a role to sign on top of that the model keys never
    /// signed). `None` when it was never published.
    pub async fn role(
        &self,
        top_bytes: &[u8],
        role: &str,
    ) -> anyhow::Result<Option<Signed<Targets>>> {
        let bytes = match self {
            Repository::Local(store) => store.delegated(role).await?.map(|(_, b)| b),
            Repository::Server(client) => {
                client
                    .get_bytes_optional(
                        &format!("/api/v1/tuf/delegated/{role}"),
                        "fetching the model's role",
                    )
                    .await?
            }
        };
        let Some(bytes) = bytes else { return Ok(None) };
        let top = Envelope::<metadata::Targets>::parse(top_bytes)?;
        let delegations =
            top.signed.delegations.as_ref().with_context(|| {
                format!("the top-level targets delegate nothing, not even {role}")
            })?;
        delegations
            .verify(role, &Envelope::<metadata::Targets>::parse(&bytes)?)
            .with_context(|| format!("the current {role} is not signed by the keys delegated to it; refusing to sign on top of it"))?;
        Ok(Some(
            serde_json::from_slice(&bytes).context("the role does not parse")?,
        ))
    }

    /// Publishes the next version of `role`; returns that version.
    pub async fn publish_role(&self, role: &str, bytes: Vec<u8>) -> anyhow::Result<u64> {
        match self {
            Repository::Local(store) => {
                store
                    .accept_delegated(role, &bytes, Timestamp::now())
                    .await?;
            }
            Repository::Server(client) => {
                let _: serde_json::Value = client
                    .post_bytes(
                        &format!("/api/v1/tuf/delegated/{role}"),
                        bytes.clone(),
                        "publishing the model's role",
                    )
                    .await?;
            }
        }
        Ok(Envelope::<metadata::Targets>::parse(&bytes)?.version())
    }

    /// Stores (locally) or uploads (to the server) a release's artifact before the metadata
    /// that names it. Returns false when the server already had it.
    pub async fn store_artifact(
        &self,
        name: &str,
        artifact: &[u8],
        file: &Path,
        sha256: &str,
    ) -> anyhow::Result<bool> {
        match self {
            Repository::Local(store) => {
                store.store_artifact(name, artifact)?;
                Ok(true)
            }
            Repository::Server(client) => {
                client
                    .upload_artifact(file, sha256, artifact.len() as u64)
                    .await
            }
        }
    }

    /// Stores (locally) or uploads (to the server) a release file before the metadata that
    /// names it. Returns false when the server already had it.
    pub async fn store_file(&self, name: &str, bytes: &[u8], sha256: &str) -> anyhow::Result<bool> {
        match self {
            Repository::Local(store) => {
                store.store_artifact(name, bytes)?;
                Ok(true)
            }
            Repository::Server(client) => client.upload_bytes(sha256, bytes.to_vec()).await,
        }
    }

    /// Publishes operator-signed top-level targets; returns the targets version now served.
    pub async fn publish_top(&self, bytes: Vec<u8>) -> anyhow::Result<u64> {
        match self {
            Repository::Local(store) => Ok(store
                .accept_targets(&bytes, Timestamp::now())
                .await?
                .targets_version),
            Repository::Server(client) => {
                let published: serde_json::Value = client
                    .post_bytes("/api/v1/tuf/targets", bytes, "publishing targets")
                    .await?;
                published["targets_version"]
                    .as_u64()
                    .context("the server's answer names no targets_version")
            }
        }
    }

    async fn publish_delegation(
        &self,
        top: Vec<u8>,
        role: &str,
        role_bytes: Vec<u8>,
    ) -> anyhow::Result<()> {
        match self {
            Repository::Local(store) => {
                store
                    .accept_targets_with_delegated(&top, role, &role_bytes, Timestamp::now())
                    .await?;
            }
            Repository::Server(client) => {
                let body = json!({
                    "targets": String::from_utf8(top)?,
                    "role": role,
                    "role_targets": String::from_utf8(role_bytes)?,
                });
                let _: serde_json::Value = client
                    .send_json(
                        reqwest::Method::POST,
                        "/api/v1/tuf/delegation",
                        &body,
                        "publishing the delegation",
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// Whether the top-level targets delegate `model` to a role of its own.
pub(crate) fn is_delegated(top: &Targets, model: &str) -> bool {
    let role = role_of(model);
    top.delegations
        .as_ref()
        .is_some_and(|d| d.roles.iter().any(|r| r.name == role))
}

/// The keys that sign a model's role: `--model-keys`, or the targets keys when none are given.
fn model_key_names<'a>(args: &'a RepoArgs, model_keys: &'a [String]) -> &'a [String] {
    if model_keys.is_empty() {
        &args.targets_keys
    } else {
        model_keys
    }
}

fn signers(
    args: &RepoArgs,
    names: &[String],
) -> anyhow::Result<Vec<Box<dyn tough::key_source::KeySource>>> {
    names.iter().map(|n| source(&args.keys, n)).collect()
}

/// The models the top-level targets list releases of (`fleetctl delegate --all`).
pub(crate) async fn listed_models(
    repo: &Repository<'_>,
    args: &RepoArgs,
) -> anyhow::Result<Vec<String>> {
    let (_, top, _) = repo.top(args).await?;
    let mut models: Vec<String> = top
        .signed
        .targets
        .keys()
        .filter_map(|name| model_of_target(name.raw()))
        .collect();
    models.sort();
    models.dedup();
    Ok(models)
}

/// `fleetctl delegate MODEL`: the next top-level targets delegating the model to `model_keys`
/// (a `threshold` of them), signed with the targets keys, and the model's releases moved into its
/// role, signed with the model keys, published together.
pub(crate) async fn delegate(
    repo: &Repository<'_>,
    args: &RepoArgs,
    model: &str,
    model_keys: &[String],
    threshold: u64,
) -> anyhow::Result<()> {
    edgefleet_protocol::ModelName::new(model)
        .with_context(|| format!("{model:?} is not a model name"))?;
    let key_names = model_key_names(args, model_keys);
    let keys = key_names
        .iter()
        .map(|n| public(&args.keys, n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (root, top, top_bytes) = repo.top(args).await?;
    let role = role_of(model);
    let current_role = repo.role(&top_bytes, &role).await?;
    let expires = operator::days_after(Timestamp::now(), args.targets_days)?;
    let (next_top, moved) = with_delegation(
        &top.signed,
        current_role.as_ref().map(|r| &r.signed),
        model,
        &keys,
        threshold,
        expires,
    )?;
    let next_top =
        operator::to_bytes(&operator::sign_with(next_top, &root, &targets_signers(args)?).await?)?;
    let role_signers = signers(args, key_names)?;
    // A role must exist for devices to search it; a model with nothing listed yet gets an empty
    // first version.
    let role_targets = match moved {
        Some(role_targets) => role_targets,
        None if current_role.is_none() => operator::empty_targets(1, expires)?,
        None => {
            // Only the keys changed: the role as it is must verify under them, so re-sign it.
            let mut next = current_role.map(|r| r.signed).context("no current role")?;
            next.version = next.version.checked_add(1).context("version overflow")?;
            next.expires = expires;
            next
        }
    };
    let moved_count = role_targets.targets.len();
    let role_bytes = operator::to_bytes(&sign_delegated(role_targets, &role_signers).await?)?;
    repo.publish_delegation(next_top, &role, role_bytes).await?;
    println!(
        "delegated models/{model}/*/* to role {role} ({} key(s), threshold {threshold}); {moved_count} release(s) in it",
        keys.len()
    );
    Ok(())
}

/// Signs `next` (the model's role with a release added or removed) with the model keys and
/// publishes it. Returns the role's new version.
pub(crate) async fn publish_into_role(
    repo: &Repository<'_>,
    args: &RepoArgs,
    model_keys: &[String],
    role: &str,
    next: Targets,
) -> anyhow::Result<u64> {
    let signers = signers(args, model_key_names(args, model_keys))?;
    let bytes = operator::to_bytes(&sign_delegated(next, &signers).await?)?;
    repo.publish_role(role, bytes).await
}

/// The current role of a delegated `model`, to add to or remove from.
pub(crate) async fn current_role(
    repo: &Repository<'_>,
    top_bytes: &[u8],
    model: &str,
) -> anyhow::Result<Targets> {
    let role = role_of(model);
    match repo.role(top_bytes, &role).await? {
        Some(current) => Ok(current.signed),
        None => bail!(
            "{model} is delegated to {role}, but that role was never published; run `fleetctl delegate {model}` again"
        ),
    }
}

/// The model a release directory or target name belongs to.
pub(crate) fn model_of_target(target: &str) -> Option<String> {
    edgefleet_protocol::target::parse_target_name(target)
        .ok()
        .map(|(model, _)| model.to_string())
}
