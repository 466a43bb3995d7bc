//! Signature checks of documents held in tough's types (the repository's and the server's
//! metadata, signed desired states).
//!
//! tough counts a threshold in distinct key *ids*: a root listing one public key under two ids
//! (the id is a hash of the key object, so an extra field yields a new id) would let one key reach
//! a threshold of two. These checks therefore use the device's own rule from
//! [`crate::metadata`]: signatures over the canonical form, counted per distinct public key.

use serde::Serialize;
use tough::schema::key::Key;
use tough::schema::{Role, Root, Signed};

use crate::{Error, metadata};

/// Verifies `role` against `root` counting each public key once: the device's own threshold
/// rule ([`crate::metadata`]), applied to the documents the repository and server hold in
/// tough's types.
pub fn verify_distinct<T: Role + Serialize>(root: &Root, role: &Signed<T>) -> Result<(), Error> {
    let what = format!("{} metadata", T::TYPE);
    let root = serde_json::to_value(root)
        .and_then(serde_json::from_value::<metadata::Root>)
        .map_err(|e| Error::malformed("root metadata", e))?;
    let bytes = serde_json::to_vec(role).map_err(|e| Error::malformed(&what, e))?;
    let document = metadata::SignedDocument::parse(&bytes, &what)?;
    root.verify_document(&T::TYPE.to_string(), &document)
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
