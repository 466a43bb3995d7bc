//! One delegated targets role per model: the operator's top-level `targets` role (offline keys)
//! delegates `models/<model>/*/*` to the role `model-<model>`, terminating, signed by keys the
//! operator chooses for that model (the targets keys by default, or a key limited to it). A
//! device then fetches the metadata of the models it runs and no other, and a push to one model
//! re-signs only that model's role: what a device downloads per update no longer grows with the
//! rest of the fleet's history.
//!
//! Repositories made before this layout list models in the top-level role; devices read both (the
//! search of §5.7.7 looks in `targets` first), and [`with_delegation`] moves a model's listed
//! releases into its role in the same publication that delegates it.

use std::collections::HashMap;
use std::num::NonZeroU64;

use aws_lc_rs::rand::SystemRandom;
use jiff::Timestamp;
use tough::key_source::KeySource;
use tough::schema::key::Key;
use tough::schema::{DelegatedRole, Delegations, PathPattern, PathSet, Signature, Signed, Targets};

use crate::Error;
use crate::operator::empty_targets;

/// The delegated role that holds `model`'s releases.
pub fn role_of(model: &str) -> String {
    format!("model-{model}")
}

/// The target paths `model`'s role is trusted for: every file of every release
/// (`models/<model>/<version>/<file>`).
pub fn paths_of(model: &str) -> String {
    format!("models/{model}/*/*")
}

/// The top-level role after delegating `model` to `keys` (a `threshold` of them), one version
/// on, and the model's role as it must be published with it: the releases of `model` that the
/// top-level role listed move into it (an existing delegation of the model keeps its role,
/// whose keys are replaced). Returns the new top-level role and, when releases moved, the
/// model's new role to sign with `keys`.
pub fn with_delegation(
    current: &Targets,
    current_role: Option<&Targets>,
    model: &str,
    keys: &[Key],
    threshold: u64,
    expires: Timestamp,
) -> Result<(Targets, Option<Targets>), Error> {
    let threshold = NonZeroU64::new(threshold)
        .filter(|t| t.get() <= keys.len() as u64)
        .ok_or_else(|| Error::Signing {
            role: role_of(model),
            detail: format!(
                "threshold {threshold} with {} key(s): give at least as many keys as the threshold, and a threshold of at least 1",
                keys.len()
            ),
        })?;
    let mut next = current.clone();
    next.version = next_version(current.version)?;
    next.expires = expires;
    let delegations = next.delegations.get_or_insert_with(|| Delegations {
        keys: HashMap::new(),
        roles: Vec::new(),
    });
    let mut keyids = Vec::with_capacity(keys.len());
    for key in keys {
        let id = key.key_id().map_err(|e| Error::Signing {
            role: role_of(model),
            detail: e.to_string(),
        })?;
        delegations.keys.insert(id.clone(), key.clone());
        keyids.push(id);
    }
    let name = role_of(model);
    delegations.roles.retain(|r| r.name != name);
    delegations.roles.push(DelegatedRole {
        name,
        keyids,
        threshold,
        paths: PathSet::Paths(vec![PathPattern::new(paths_of(model)).map_err(|e| {
            Error::Signing {
                role: role_of(model),
                detail: e.to_string(),
            }
        })?]),
        terminating: true,
        targets: None,
    });
    prune_unused_keys(delegations);
    let prefix = format!("models/{model}/");
    let moving: Vec<_> = next
        .targets
        .iter()
        .filter(|(n, _)| n.raw().starts_with(&prefix))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    if moving.is_empty() {
        return Ok((next, None));
    }
    next.targets.retain(|n, _| !n.raw().starts_with(&prefix));
    let mut role = match current_role {
        Some(role) => role.clone(),
        None => empty_targets(1, expires)?,
    };
    if current_role.is_some() {
        role.version = next_version(role.version)?;
    }
    role.expires = expires;
    role.targets.extend(moving);
    Ok((next, Some(role)))
}

/// The top-level role without `model`'s delegation, one version on: the whole model is revoked,
/// and no other model's role changes.
pub fn without_delegation(
    current: &Targets,
    model: &str,
    expires: Timestamp,
) -> Result<Targets, Error> {
    let name = role_of(model);
    let mut next = current.clone();
    let delegations = next
        .delegations
        .as_mut()
        .filter(|d| d.roles.iter().any(|r| r.name == name))
        .ok_or_else(|| Error::UnknownTarget {
            name: format!("{name} (no such delegation)"),
        })?;
    delegations.roles.retain(|r| r.name != name);
    prune_unused_keys(delegations);
    next.version = next_version(current.version)?;
    next.expires = expires;
    Ok(next)
}

fn prune_unused_keys(delegations: &mut Delegations) {
    let used: Vec<_> = delegations
        .roles
        .iter()
        .flat_map(|r| r.keyids.iter().cloned())
        .collect();
    delegations.keys.retain(|id, _| used.contains(id));
}

fn next_version(v: NonZeroU64) -> Result<NonZeroU64, Error> {
    v.checked_add(1)
        .ok_or_else(|| Error::malformed("version", "overflow"))
}

/// Signs a delegated role with each of `keys`. Whether they are the keys its delegator names is
/// for the verifier: the repository and every device check it against the top-level role.
pub async fn sign_delegated(
    role: Targets,
    keys: &[Box<dyn KeySource>],
) -> Result<Signed<Targets>, Error> {
    let fail = |detail: String| Error::Signing {
        role: "delegated targets".into(),
        detail,
    };
    let mut canonical = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut canonical,
        olpc_cjson::CanonicalFormatter::new(),
    );
    serde::Serialize::serialize(&role, &mut ser).map_err(|e| fail(e.to_string()))?;
    let rng = SystemRandom::new();
    let mut signatures = Vec::with_capacity(keys.len());
    for source in keys {
        let signer = source.as_sign().await.map_err(|e| fail(e.to_string()))?;
        let keyid = signer.tuf_key().key_id().map_err(|e| fail(e.to_string()))?;
        let sig = signer
            .sign(&canonical, &rng)
            .await
            .map_err(|e| fail(e.to_string()))?;
        signatures.push(Signature {
            keyid,
            sig: sig.into(),
        });
    }
    Ok(Signed {
        signed: role,
        signatures,
    })
}
