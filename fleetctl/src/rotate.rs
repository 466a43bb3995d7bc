//! `fleetctl rotate-keys`: replace the keys of any top-level role with a new root version.
//!
//! Every rotation is a root one version up, signed by a threshold of the current root keys (and,
//! for the root role, of the new ones too). Rotating the targets keys also re-signs the current
//! targets with the new keys, published in the same step, so no device ever sees a root whose
//! targets do not verify. The snapshot and timestamp keys live on the server: it makes the next
//! key, this signs a root listing it, and the server switches to it when that root is accepted.

use anyhow::{Context, bail};
use edgefleet_tuf::operator::{self, RoleSpec, RootSpec};
use jiff::Timestamp;
use tough::schema::{RoleType, Root, Signed};

use crate::cli::{RepoArgs, RotatedRole};
use crate::remote;
use crate::repo::{open, public, source};

/// What to rotate to.
#[derive(Debug)]
pub struct RotationSpec<'a> {
    pub role: RotatedRole,
    /// Names of the current root keys, to sign the new root with.
    pub root_keys: &'a [String],
    /// Names of the new keys (root and targets; the server makes online ones).
    pub new_keys: &'a [String],
    pub threshold: u64,
    pub root_days: u32,
}

pub async fn rotate_keys(
    server: Option<&remote::Client>,
    args: &RepoArgs,
    spec: &RotationSpec<'_>,
) -> anyhow::Result<()> {
    let offline = matches!(spec.role, RotatedRole::Root | RotatedRole::Targets);
    if offline && spec.new_keys.is_empty() {
        bail!(
            "--new-keys is required for the root and targets roles (make them with `fleetctl keygen`)"
        );
    }
    if !offline && !spec.new_keys.is_empty() {
        bail!(
            "the snapshot and timestamp keys are the server's: it makes the new one; drop --new-keys"
        );
    }
    if !offline && server.is_none() {
        bail!("the snapshot and timestamp keys are rotated on the fleet server: pass --server");
    }
    let old = current_root(server, args, spec.root_keys).await?;
    let mut next = RootSpec {
        root: operator::role_spec_of(&old, RoleType::Root)?,
        targets: operator::role_spec_of(&old, RoleType::Targets)?,
        snapshot: operator::role_spec_of(&old, RoleType::Snapshot)?,
        timestamp: operator::role_spec_of(&old, RoleType::Timestamp)?,
    };
    let new_keys = || -> anyhow::Result<RoleSpec> {
        Ok(RoleSpec {
            keys: spec
                .new_keys
                .iter()
                .map(|n| public(&args.keys, n))
                .collect::<Result<_, _>>()?,
            threshold: spec.threshold,
        })
    };
    let mut signer_names: Vec<&String> = spec.root_keys.iter().collect();
    match spec.role {
        RotatedRole::Root => {
            next.root = new_keys()?;
            signer_names.extend(spec.new_keys);
        }
        RotatedRole::Targets => next.targets = new_keys()?,
        RotatedRole::Snapshot | RotatedRole::Timestamp => {
            let role = if spec.role == RotatedRole::Snapshot {
                "snapshot"
            } else {
                "timestamp"
            };
            let client = server.context("--server")?;
            let answer: serde_json::Value = client
                .send_json(
                    reqwest::Method::POST,
                    &format!("/api/v1/tuf/online-keys/{role}/next"),
                    &serde_json::json!({}),
                    "asking the server for its next online key",
                )
                .await?;
            let key = serde_json::from_value(answer["key"].clone())
                .context("the server's next key is not a TUF key")?;
            let rotated = RoleSpec {
                keys: vec![key],
                threshold: 1,
            };
            match spec.role {
                RotatedRole::Snapshot => next.snapshot = rotated,
                _ => next.timestamp = rotated,
            }
        }
    }
    let signers: Vec<_> = signer_names
        .iter()
        .map(|n| source(&args.keys, n))
        .collect::<Result<_, _>>()?;
    let now = Timestamp::now();
    let root_bytes = operator::rotate_root(
        &old,
        &next,
        operator::days_after(now, spec.root_days)?,
        &signers,
    )
    .await?;
    let targets_bytes = match spec.role {
        RotatedRole::Targets => {
            let new_root: Signed<Root> = serde_json::from_slice(&root_bytes)?;
            Some(resign_targets(server, args, spec, &old, &new_root.signed).await?)
        }
        _ => None,
    };
    let version = old.version.get() + 1;
    match server {
        Some(client) => {
            let mut body = serde_json::json!({ "root": String::from_utf8(root_bytes)? });
            if let Some(targets) = targets_bytes {
                body["targets"] = String::from_utf8(targets)?.into();
            }
            let _: serde_json::Value = client
                .send_json(
                    reqwest::Method::POST,
                    "/api/v1/tuf/rotation",
                    &body,
                    "publishing the rotated root",
                )
                .await?;
        }
        None => {
            open(args)?
                .accept_rotation(&root_bytes, targets_bytes.as_deref(), now)
                .await?;
        }
    }
    println!(
        "{:?} keys rotated: root version {version}{}; devices follow it on their next refresh",
        spec.role,
        if spec.role == RotatedRole::Targets {
            ", targets re-signed with the new keys"
        } else {
            ""
        }
    );
    Ok(())
}

/// The current root: the server's only if these root keys signed it, so a server cannot have
/// the operator sign a root it made up.
async fn current_root(
    server: Option<&remote::Client>,
    args: &RepoArgs,
    root_keys: &[String],
) -> anyhow::Result<Root> {
    let Some(client) = server else {
        return Ok(open(args)?.root().await?.signed);
    };
    let bytes = client
        .get_bytes("/tuf/metadata/root.json", "fetching root.json")
        .await?;
    let root: Signed<Root> =
        serde_json::from_slice(&bytes).context("the server's root.json does not parse")?;
    let ours: Vec<_> = root_keys
        .iter()
        .map(|n| public(&args.keys, n))
        .collect::<Result<_, _>>()?;
    edgefleet_tuf::verify::signed_by_one_of(&root.signed, &root, &ours).context(
        "the server's root.json is not signed by the --root-keys; refusing to rotate from it",
    )?;
    Ok(root.signed)
}

/// The current targets, checked against the current root, one version on, signed by the new
/// targets keys under the new root.
async fn resign_targets(
    server: Option<&remote::Client>,
    args: &RepoArgs,
    spec: &RotationSpec<'_>,
    old: &Root,
    new: &Root,
) -> anyhow::Result<Vec<u8>> {
    let bytes = match server {
        Some(client) => {
            client
                .get_bytes("/api/v1/tuf/targets", "fetching the current targets")
                .await?
        }
        None => open(args)?.targets().await?.1,
    };
    let current: Signed<tough::schema::Targets> =
        serde_json::from_slice(&bytes).context("the current targets.json does not parse")?;
    edgefleet_tuf::verify::verify_distinct(old, &current).context(
        "the current targets do not verify under the current root; refusing to re-sign them",
    )?;
    let next = operator::resigned(
        &current.signed,
        operator::days_after(Timestamp::now(), args.targets_days)?,
    )?;
    let signers: Vec<_> = spec
        .new_keys
        .iter()
        .map(|n| source(&args.keys, n))
        .collect::<Result<_, _>>()?;
    let signed = operator::sign_with(next, new, &signers).await?;
    Ok(operator::to_bytes(&signed)?)
}
