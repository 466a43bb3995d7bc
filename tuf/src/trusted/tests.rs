use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use super::*;

/// One key per top-level role, metadata built as JSON and signed over its canonical form.
struct Keys {
    pairs: Vec<(String, Ed25519KeyPair)>,
}

impl Keys {
    fn new(names: &[&str]) -> Self {
        Keys {
            pairs: names
                .iter()
                .map(|n| (n.to_string(), Ed25519KeyPair::generate().unwrap()))
                .collect(),
        }
    }

    fn pair(&self, name: &str) -> &Ed25519KeyPair {
        &self.pairs.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn public(&self, name: &str) -> Value {
        json!({
            "keytype": "ed25519",
            "scheme": "ed25519",
            "keyval": {"public": hex::encode(self.pair(name).public_key().as_ref())}
        })
    }

    fn sign(&self, signed: Value, by: &[&str]) -> Vec<u8> {
        let mut canonical = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut canonical,
            olpc_cjson::CanonicalFormatter::new(),
        );
        serde::Serialize::serialize(&signed, &mut ser).unwrap();
        let signatures: Vec<Value> = by
            .iter()
            .map(|k| json!({"keyid": k, "sig": hex::encode(self.pair(k).sign(&canonical))}))
            .collect();
        serde_json::to_vec(&json!({"signed": signed, "signatures": signatures})).unwrap()
    }
}

const LATER: &str = "2030-01-01T00:00:00Z";

fn now() -> jiff::Timestamp {
    "2026-12-03T00:00:00Z".parse().unwrap()
}

fn root(keys: &Keys, version: u64, root_key: &str) -> Vec<u8> {
    let mut ids = serde_json::Map::new();
    for k in [root_key, "timestamp", "snapshot", "targets"] {
        ids.insert(k.into(), keys.public(k));
    }
    let role = |k: &str| json!({"keyids": [k], "threshold": 1});
    keys.sign(
        json!({
            "_type": "root", "spec_version": "1.0.31", "version": version, "expires": LATER,
            "consistent_snapshot": true, "keys": ids,
            "roles": {"root": role(root_key), "timestamp": role("timestamp"),
                      "snapshot": role("snapshot"), "targets": role("targets")}
        }),
        &[root_key],
    )
}

fn timestamp(keys: &Keys, version: u64, snapshot: u64, expires: &str) -> Vec<u8> {
    keys.sign(
        json!({"_type": "timestamp", "spec_version": "1.0.0", "version": version,
               "expires": expires, "meta": {"snapshot.json": {"version": snapshot}}}),
        &["timestamp"],
    )
}

fn snapshot(keys: &Keys, version: u64, meta: Value) -> Vec<u8> {
    keys.sign(
        json!({"_type": "snapshot", "spec_version": "1.0.0", "version": version,
               "expires": LATER, "meta": meta}),
        &["snapshot"],
    )
}

fn targets(keys: &Keys, version: u64, delegations: Option<Value>) -> Vec<u8> {
    let mut signed = json!({"_type": "targets", "spec_version": "1.0.0", "version": version,
                            "expires": LATER, "targets": {}});
    if let Some(d) = delegations {
        signed["delegations"] = d;
    }
    keys.sign(signed, &["targets"])
}

fn keys() -> Keys {
    Keys::new(&["root", "root-2", "timestamp", "snapshot", "targets", "team"])
}

fn loaded(keys: &Keys) -> TrustedSet {
    let mut set = TrustedSet::new(&root(keys, 1, "root"), now()).unwrap();
    set.update_timestamp(&timestamp(keys, 1, 1, LATER)).unwrap();
    set.update_snapshot(
        &snapshot(keys, 1, json!({"targets.json": {"version": 1}})),
        false,
    )
    .unwrap();
    set
}

#[test]
fn the_next_root_needs_the_old_and_its_own_keys_and_exactly_the_next_version() {
    let k = keys();
    let mut set = TrustedSet::new(&root(&k, 1, "root"), now()).unwrap();
    // Signed only by the new root key: the trusted root's threshold is not met.
    let err = set.update_root(&root(&k, 2, "root-2")).unwrap_err();
    assert!(matches!(err, Error::Signature { .. }), "{err}");
    // Skipping a version.
    let err = set.update_root(&root(&k, 3, "root")).unwrap_err();
    assert!(matches!(err, Error::Version { found: 3, .. }), "{err}");
    set.update_root(&root(&k, 2, "root")).unwrap();
    assert_eq!(set.root().version(), 2);
    // Once timestamp is loaded, root is fixed for this refresh.
    set.update_timestamp(&timestamp(&k, 1, 1, LATER)).unwrap();
    assert!(set.update_root(&root(&k, 3, "root")).is_err());
}

#[test]
fn a_same_version_timestamp_with_new_content_leaves_the_trusted_one() {
    let k = keys();
    let mut set = TrustedSet::new(&root(&k, 1, "root"), now()).unwrap();
    set.update_timestamp(&timestamp(&k, 5, 3, LATER)).unwrap();
    let same_version = timestamp(&k, 5, 9, LATER);
    assert_eq!(
        set.update_timestamp(&same_version).unwrap(),
        TimestampUpdate::SameVersion
    );
    assert_eq!(set.timestamp().unwrap().signed.snapshot_meta().version, 3);
}

#[test]
fn timestamps_never_go_back_nor_point_at_an_older_snapshot() {
    let k = keys();
    let mut set = TrustedSet::new(&root(&k, 1, "root"), now()).unwrap();
    set.update_timestamp(&timestamp(&k, 5, 3, LATER)).unwrap();
    let err = set
        .update_timestamp(&timestamp(&k, 4, 3, LATER))
        .unwrap_err();
    assert!(matches!(err, Error::Version { found: 4, .. }), "{err}");
    let err = set
        .update_timestamp(&timestamp(&k, 6, 2, LATER))
        .unwrap_err();
    assert!(
        err.to_string().contains("older than the trusted snapshot"),
        "{err}"
    );
    assert_eq!(set.timestamp().unwrap().version(), 5);
}

#[test]
fn an_expired_timestamp_is_refused_but_still_guards_against_older_ones() {
    let k = keys();
    let mut set = TrustedSet::new(&root(&k, 1, "root"), now()).unwrap();
    let err = set
        .update_timestamp(&timestamp(&k, 5, 1, "2026-12-01T00:00:00Z"))
        .unwrap_err();
    assert!(matches!(err, Error::Expired { .. }), "{err}");
    let err = set
        .update_timestamp(&timestamp(&k, 4, 1, LATER))
        .unwrap_err();
    assert!(matches!(err, Error::Version { found: 4, .. }), "{err}");
    set.update_timestamp(&timestamp(&k, 6, 1, LATER)).unwrap();
}

#[test]
fn a_snapshot_must_match_timestamp_and_never_drop_or_roll_back_a_role() {
    let k = keys();
    let mut set = TrustedSet::new(&root(&k, 1, "root"), now()).unwrap();
    set.update_timestamp(&timestamp(&k, 1, 2, LATER)).unwrap();
    // The trusted copy on disk is version 1 with targets 3 and a delegated role.
    let old = snapshot(
        &k,
        1,
        json!({"targets.json": {"version": 3}, "team.json": {"version": 1}}),
    );
    let err = set.update_snapshot(&old, true).unwrap_err();
    assert!(
        err.to_string().contains("timestamp names version 2"),
        "{err}"
    );
    // ... but it stays the reference the new one is judged against.
    let dropped = snapshot(&k, 2, json!({"targets.json": {"version": 3}}));
    let err = set.update_snapshot(&dropped, false).unwrap_err();
    assert!(err.to_string().contains("drops team.json"), "{err}");
    let rolled_back = snapshot(
        &k,
        2,
        json!({"targets.json": {"version": 2}, "team.json": {"version": 1}}),
    );
    assert!(matches!(
        set.update_snapshot(&rolled_back, false).unwrap_err(),
        Error::Version { found: 2, .. }
    ));
    set.update_snapshot(
        &snapshot(
            &k,
            2,
            json!({"targets.json": {"version": 4}, "team.json": {"version": 1}}),
        ),
        false,
    )
    .unwrap();
}

#[test]
fn snapshot_bytes_must_match_the_hashes_and_length_timestamp_signed() {
    let k = keys();
    let mut set = TrustedSet::new(&root(&k, 1, "root"), now()).unwrap();
    let good = snapshot(&k, 1, json!({"targets.json": {"version": 1}}));
    let other = snapshot(
        &k,
        1,
        json!({"targets.json": {"version": 1}, "x.json": {"version": 1}}),
    );
    let ts = k.sign(
        json!({"_type": "timestamp", "spec_version": "1.0.0", "version": 1, "expires": LATER,
               "meta": {"snapshot.json": {"version": 1, "length": good.len(),
                        "hashes": {"sha256": hex::encode(crate::sha256(&good))}}}}),
        &["timestamp"],
    );
    set.update_timestamp(&ts).unwrap();
    let err = set.update_snapshot(&other, false).unwrap_err();
    assert!(err.to_string().contains("signed length"), "{err}");
    set.update_snapshot(&good, false).unwrap();
}

#[test]
fn targets_need_exactly_the_version_snapshot_names_and_the_delegators_keys() {
    let k = keys();
    let mut set = loaded(&k);
    let err = set
        .update_targets("targets", "root", &targets(&k, 2, None))
        .unwrap_err();
    assert!(matches!(err, Error::Version { found: 2, .. }), "{err}");
    set.update_targets("targets", "root", &targets(&k, 1, None))
        .unwrap();
    // A role snapshot does not list cannot be trusted, whoever signed it.
    let err = set
        .update_targets("team", "targets", &targets(&k, 1, None))
        .unwrap_err();
    assert!(err.to_string().contains("does not list team.json"), "{err}");
}

#[test]
fn a_delegated_role_is_judged_by_the_keys_its_delegator_gives_it() {
    let k = keys();
    let mut set = TrustedSet::new(&root(&k, 1, "root"), now()).unwrap();
    set.update_timestamp(&timestamp(&k, 1, 1, LATER)).unwrap();
    set.update_snapshot(
        &snapshot(
            &k,
            1,
            json!({"targets.json": {"version": 1}, "team.json": {"version": 1}}),
        ),
        false,
    )
    .unwrap();
    let delegations = json!({
        "keys": {"team": k.public("team")},
        "roles": [{"name": "team", "keyids": ["team"], "threshold": 1,
                   "terminating": false, "paths": ["team/*"]}]
    });
    set.update_targets("targets", "root", &targets(&k, 1, Some(delegations)))
        .unwrap();
    // Signed by the top-level targets key, not the team key the delegation names.
    let err = set
        .update_targets("team", "targets", &targets(&k, 1, None))
        .unwrap_err();
    assert!(matches!(err, Error::Signature { .. }), "{err}");
    let team = k.sign(
        json!({"_type": "targets", "spec_version": "1.0.0", "version": 1, "expires": LATER,
               "targets": {}}),
        &["team"],
    );
    set.update_targets("team", "targets", &team).unwrap();
    // Reached again through a role that does not delegate to it: refused.
    let envelope = set.targets("team").unwrap();
    assert!(set.verify_delegated("team", "root", envelope).is_err());
}

#[test]
fn a_threshold_counts_keys_not_key_ids() {
    let k = keys();
    // Root lists the one timestamp key under two ids and asks for two signatures.
    let mut ids = serde_json::Map::new();
    for name in ["root", "snapshot", "targets"] {
        ids.insert(name.into(), k.public(name));
    }
    ids.insert("ts-a".into(), k.public("timestamp"));
    ids.insert("ts-b".into(), k.public("timestamp"));
    let role = |ids: Value, threshold: u64| json!({"keyids": ids, "threshold": threshold});
    let root = k.sign(
        json!({"_type": "root", "spec_version": "1.0.0", "version": 1, "expires": LATER,
               "consistent_snapshot": true, "keys": ids,
               "roles": {"root": role(json!(["root"]), 1),
                         "timestamp": role(json!(["ts-a", "ts-b"]), 2),
                         "snapshot": role(json!(["snapshot"]), 1),
                         "targets": role(json!(["targets"]), 1)}}),
        &["root"],
    );
    let mut set = TrustedSet::new(&root, now()).unwrap();
    let signed = json!({"_type": "timestamp", "spec_version": "1.0.0", "version": 1,
                        "expires": LATER, "meta": {"snapshot.json": {"version": 1}}});
    // The same key's signature under both ids.
    let mut canonical = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut canonical,
        olpc_cjson::CanonicalFormatter::new(),
    );
    serde::Serialize::serialize(&signed, &mut ser).unwrap();
    let sig = hex::encode(k.pair("timestamp").sign(&canonical));
    let bytes = serde_json::to_vec(&json!({"signed": signed, "signatures": [
        {"keyid": "ts-a", "sig": sig}, {"keyid": "ts-b", "sig": sig}]}))
    .unwrap();
    let err = set.update_timestamp(&bytes).unwrap_err();
    assert!(
        err.to_string()
            .contains("1 valid signature(s) by distinct keys, 2 required"),
        "{err}"
    );
}

#[test]
fn malformed_metadata_is_an_error_naming_what_is_wrong() {
    let k = keys();
    let mut set = TrustedSet::new(&root(&k, 1, "root"), now()).unwrap();
    for (bytes, says) in [
        (b"{".to_vec(), "malformed timestamp"),
        (snapshot(&k, 1, json!({})), "_type is Some(\"snapshot\")"),
        (
            k.sign(
                json!({"_type": "timestamp", "spec_version": "2.0.0", "version": 1,
                       "expires": LATER, "meta": {"snapshot.json": {"version": 1}}}),
                &["timestamp"],
            ),
            "spec_version",
        ),
        (
            k.sign(
                json!({"_type": "timestamp", "spec_version": "1.0.0", "version": 1,
                       "expires": LATER, "meta": {}}),
                &["timestamp"],
            ),
            "does not list snapshot.json",
        ),
    ] {
        let err = set.update_timestamp(&bytes).unwrap_err();
        assert!(err.to_string().contains(says), "{err} should say {says}");
    }
    assert!(set.timestamp().is_none());
}
