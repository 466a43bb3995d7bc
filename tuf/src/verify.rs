//! Checks on top of tough's own signature verification.
//!
//! tough counts a threshold in distinct key *ids*. A root that lists one public key under two ids
//! (the id is a hash of the key object, so an extra field yields a new id) would let one key
//! reach a threshold of two. We therefore verify again against a copy of root in which every
//! public key appears under one id only: a threshold met only through such aliases fails.

use std::collections::HashSet;

use serde::Serialize;
use tough::schema::key::Key;
use tough::schema::{Role, Root, Signed};

use crate::Error;

/// The public key material, whatever the key's id or extra fields.
fn material(key: &Key) -> Vec<u8> {
    match key {
        Key::Ed25519 { keyval, .. } => [b"ed25519:".as_slice(), keyval.public.as_ref()].concat(),
        Key::Rsa { keyval, .. } => [b"rsa:".as_slice(), keyval.public.as_ref()].concat(),
        Key::Ecdsa { keyval, .. } | Key::EcdsaOld { keyval, .. } => {
            [b"ecdsa:".as_slice(), keyval.public.as_ref()].concat()
        }
    }
}

/// `root` with each role's key ids reduced to one id per distinct public key.
pub fn dedup_root(root: &Root) -> Root {
    let mut out = root.clone();
    for role_keys in out.roles.values_mut() {
        let mut seen = HashSet::new();
        role_keys.keyids.retain(|id| match root.keys.get(id) {
            Some(key) => seen.insert(material(key)),
            None => false,
        });
    }
    out
}

/// Verifies `role` against `root` counting each public key once.
pub fn verify_distinct<T: Role + Serialize>(root: &Root, role: &Signed<T>) -> Result<(), Error> {
    dedup_root(root)
        .verify_role(role)
        .map_err(|e| Error::Signature {
            role: T::TYPE.to_string(),
            detail: e.to_string(),
        })
}

/// Checks that `role` carries a valid signature by at least one of `keys`, whatever `root`
/// claims about the role. `fleetctl` uses it before signing on top of the targets a server hands
/// it: a server cannot slip in targets the operator never signed, even with a forged root.
pub fn signed_by_one_of<T: Role + Serialize>(
    root: &Root,
    role: &Signed<T>,
    keys: &[Key],
) -> Result<(), Error> {
    let mut only_these = root.clone();
    only_these.keys.clear();
    let mut ids = Vec::new();
    for key in keys {
        let id = key.key_id().map_err(|e| Error::Signature {
            role: T::TYPE.to_string(),
            detail: e.to_string(),
        })?;
        only_these.keys.insert(id.clone(), key.clone());
        ids.push(id);
    }
    let Some(role_keys) = only_these.roles.get_mut(&T::TYPE) else {
        return Err(Error::Signature {
            role: T::TYPE.to_string(),
            detail: "root does not define this role".into(),
        });
    };
    role_keys.keyids = ids;
    role_keys.threshold = std::num::NonZeroU64::MIN;
    only_these.verify_role(role).map_err(|e| Error::Signature {
        role: T::TYPE.to_string(),
        detail: format!("not signed by any of your keys: {e}"),
    })
}
