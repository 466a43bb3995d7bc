//! The device refuses every attack in the list, and a refused update leaves its trusted state
//! exactly as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use edgefleet_tuf::Error;
use edgefleet_tuf::client::{self, admit};
use edgefleet_tuf::operator::{self, days_after};
use jiff::{SignedDuration, Timestamp};
use tough::schema::{Root, Snapshot, Targets, Timestamp as TimestampRole};

fn ago(days: i64) -> Timestamp {
    Timestamp::now()
        .checked_sub(SignedDuration::from_hours(days * 24))
        .unwrap()
}

#[tokio::test]
async fn a_device_verifies_and_downloads_a_signed_model() {
    let f = Fixture::new().await;
    let mut trusted = f.refresh().await.unwrap();
    let target = trusted
        .model_target("models/churn/1.0.0/model.onnx")
        .await
        .unwrap();
    assert_eq!(target.meta.sequence, 1);
    let staging = f.tmp.path().join("staging");
    let artifact = trusted.fetch(&target, &staging).await.unwrap();
    assert_eq!(artifact.read().unwrap(), release("churn/1.0.0").0);
    assert_eq!(artifact.length(), target.length);
    // Dropped unused, the verified file goes: nothing is left in staging.
    drop(artifact);
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    // Cached metadata is the exact bytes the repository published.
    for (cached, published) in [
        ("timestamp.json", "timestamp.json".to_string()),
        ("targets.json", "2.targets.json".into()),
    ] {
        assert_eq!(
            std::fs::read(f.client_dir.join(cached)).unwrap(),
            std::fs::read(f.repo_dir.join("metadata").join(published)).unwrap(),
            "{cached}"
        );
    }
}

#[tokio::test]
async fn the_sequence_floor_refuses_rollbacks_and_min_sequence_raises_it() {
    let mut f = Fixture::new().await;
    f.push("churn/2.0.0", Timestamp::now()).await;
    let mut trusted = f.refresh().await.unwrap();
    let v1 = trusted
        .model_target("models/churn/1.0.0/model.onnx")
        .await
        .unwrap();
    let v2 = trusted
        .model_target("models/churn/2.0.0/model.onnx")
        .await
        .unwrap();
    let floor = admit(&v2, 0).unwrap();
    assert_eq!(floor, v2.meta.min_sequence);
    assert!(matches!(
        admit(&v1, 2),
        Err(Error::BelowFloor {
            sequence: 1,
            floor: 2,
            ..
        })
    ));
    let mut raising = v2.clone();
    raising.meta.min_sequence = 2;
    assert_eq!(admit(&raising, 1).unwrap(), 2);
}

#[tokio::test]
async fn a_revoked_target_is_refused() {
    let f = Fixture::new().await;
    let name = "models/churn/1.0.0/model.onnx";
    let next = operator::without_target(
        &f.current_targets().await,
        name,
        days_after(Timestamp::now(), 90).unwrap(),
    )
    .unwrap();
    let signed = operator::sign_with(next, &f.root().await, &[source(&f.keys, "targets")])
        .await
        .unwrap();
    f.repo
        .accept_targets(&operator::to_bytes(&signed).unwrap(), Timestamp::now())
        .await
        .unwrap();
    let mut trusted = f.refresh().await.unwrap();
    assert!(matches!(
        trusted.model_target(name).await,
        Err(Error::UnknownTarget { .. })
    ));
}

#[tokio::test]
async fn target_names_that_could_escape_the_store_are_unknown_and_write_nothing() {
    let f = Fixture::new().await;
    let mut trusted = f.refresh().await.unwrap();
    for name in [
        "models/churn/1.0.0/../../../etc/passwd",
        "/etc/passwd",
        "models/churn/1.0.0/model.onnx/../../../../x",
        "models%2Fchurn%2F1.0.0%2Fmodel.onnx",
        "models/churn/1.0.0/model.onnx\0",
        "../models/churn/1.0.0/model.onnx",
    ] {
        assert!(trusted.model_target(name).await.is_err(), "{name:?}");
    }
    assert!(!f.tmp.path().join("staging").exists());
}

#[tokio::test]
async fn unsigned_or_wrongly_signed_targets_never_reach_the_repository() {
    let f = Fixture::new().await;
    let before = std::fs::read_dir(f.repo_dir.join("metadata"))
        .unwrap()
        .count();
    let (bytes, meta) = release("churn/2.0.0");
    let (name, target) = operator::model_target(&bytes, &meta).unwrap();
    f.repo.store_artifact(&name, &bytes).unwrap();
    let next = f.current_with(&name, target).await.unwrap();
    // Signed by a key root does not list for targets.
    let forged = operator::sign_with(
        next.clone(),
        &f.root().await,
        &[source(&f.keys, "intruder")],
    )
    .await;
    assert!(
        forged.is_err(),
        "tough refuses to sign with an unlisted key"
    );
    let mut forged =
        operator::sign_with(next.clone(), &f.root().await, &[source(&f.keys, "targets")])
            .await
            .unwrap();
    forged.signed.expires = days_after(Timestamp::now(), 900).unwrap(); // changed after signing
    let err = f
        .repo
        .accept_targets(&operator::to_bytes(&forged).unwrap(), Timestamp::now())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Signature { .. }), "{err}");
    // Version skipping and replaying the current version.
    for version in [1u64, 2, 4] {
        let mut t = next.clone();
        t.version = std::num::NonZeroU64::new(version).unwrap();
        let err = f.offer(&f.sign_targets(t).await).await.unwrap_err();
        assert!(matches!(err, Error::Version { .. }), "{version}: {err}");
    }
    // Expired on arrival.
    let mut t = next.clone();
    t.expires = ago(1);
    let err = f.offer(&f.sign_targets(t).await).await.unwrap_err();
    assert!(matches!(err, Error::Expired { .. }), "{err}");
    // Truncated and malformed JSON.
    let good = operator::to_bytes(
        &operator::sign_with(next, &f.root().await, &[source(&f.keys, "targets")])
            .await
            .unwrap(),
    )
    .unwrap();
    for cut in [0, 1, good.len() / 2, good.len() - 3] {
        assert!(
            f.repo
                .accept_targets(&good[..cut], Timestamp::now())
                .await
                .is_err()
        );
    }
    assert_eq!(
        std::fs::read_dir(f.repo_dir.join("metadata"))
            .unwrap()
            .count(),
        before
    );
    assert_eq!(f.current_targets().await.version.get(), 2);
}

#[tokio::test]
async fn a_target_whose_artifact_was_not_uploaded_is_refused() {
    let f = Fixture::new().await;
    let (bytes, meta) = release("churn/2.0.0");
    let (name, target) = operator::model_target(&bytes, &meta).unwrap();
    let next = f.current_with(&name, target).await.unwrap();
    let err = f.offer(&f.sign_targets(next).await).await.unwrap_err();
    assert!(
        err.to_string().contains("upload it before the metadata"),
        "{err}"
    );
}

#[tokio::test]
async fn a_lower_or_equal_sequence_for_the_same_model_cannot_be_pushed() {
    let f = Fixture::new().await;
    let (bytes, mut meta) = release("churn/2.0.0");
    meta.sequence = 1;
    let (name, target) = operator::model_target(&bytes, &meta).unwrap();
    let err = f.current_with(&name, target).await.unwrap_err();
    assert!(
        err.to_string().contains("sequence 1 is not above 1"),
        "{err}"
    );
}

#[tokio::test]
async fn expired_timestamp_snapshot_or_targets_are_refused_by_the_device() {
    // A repository whose online metadata was signed 3 days ago: timestamp (1 day) has expired.
    let f = Fixture::new_at(ago(3)).await;
    let before = f.client_state();
    let err = f.refresh().await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
    assert_eq!(f.client_state(), before);

    // Snapshot expired (8 days) although timestamp was refreshed today.
    let f = Fixture::new_at(ago(8)).await;
    let mirror = f.mirror();
    let ts_path = mirror.join("metadata/timestamp.json");
    let mut ts = read_signed::<TimestampRole>(&ts_path).signed;
    ts.expires = days_after(Timestamp::now(), 1).unwrap();
    ts.version = std::num::NonZeroU64::new(ts.version.get() + 1).unwrap();
    let signed = operator::sign_with(ts, &f.root().await, &[source(&f.keys, "timestamp")])
        .await
        .unwrap();
    std::fs::write(&ts_path, operator::to_bytes(&signed).unwrap()).unwrap();
    let err = f.refresh_from(&mirror).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn a_timestamp_or_snapshot_older_than_the_cached_one_is_refused() {
    let mut f = Fixture::new().await;
    let old = f.mirror(); // the repository as it is now
    f.push("churn/2.0.0", Timestamp::now()).await;
    f.refresh().await.unwrap(); // the device has seen the newer state
    let before = f.client_state();
    let err = f.refresh_from(&old).await.unwrap_err();
    assert!(
        err.to_string().contains("older")
            || err.to_string().contains("rollback")
            || err.to_string().contains("version"),
        "{err}"
    );
    assert_eq!(f.client_state(), before);
}

#[tokio::test]
async fn a_snapshot_that_rolls_targets_back_is_refused_mix_and_match() {
    let mut f = Fixture::new().await;
    f.push("churn/2.0.0", Timestamp::now()).await;
    f.refresh().await.unwrap();
    let before = f.client_state();
    // A freshly signed snapshot (the online key is compromised) pointing at targets version 2,
    // while the device already trusts version 3.
    let mirror = f.mirror();
    let snap_version = f.repo.snapshot().await.unwrap().signed.version.get() + 1;
    let old_targets = std::fs::read(mirror.join("metadata/2.targets.json")).unwrap();
    let mut snapshot = Snapshot::new(
        "1.0.0".into(),
        std::num::NonZeroU64::new(snap_version).unwrap(),
        days_after(Timestamp::now(), 7).unwrap(),
    );
    snapshot.meta.insert(
        "targets.json".into(),
        tough::schema::Metafile {
            length: Some(old_targets.len() as u64),
            hashes: None,
            version: std::num::NonZeroU64::new(2).unwrap(),
            _extra: Default::default(),
        },
    );
    let snapshot = operator::sign_with(snapshot, &f.root().await, &[source(&f.keys, "snapshot")])
        .await
        .unwrap();
    let snapshot_bytes = operator::to_bytes(&snapshot).unwrap();
    std::fs::write(
        mirror.join(format!("metadata/{snap_version}.snapshot.json")),
        &snapshot_bytes,
    )
    .unwrap();
    let mut ts = f.repo.timestamp().await.unwrap().signed;
    ts.version = std::num::NonZeroU64::new(ts.version.get() + 1).unwrap();
    ts.meta.insert(
        "snapshot.json".into(),
        tough::schema::Metafile {
            length: Some(snapshot_bytes.len() as u64),
            hashes: None,
            version: std::num::NonZeroU64::new(snap_version).unwrap(),
            _extra: Default::default(),
        },
    );
    let ts = operator::sign_with(ts, &f.root().await, &[source(&f.keys, "timestamp")])
        .await
        .unwrap();
    std::fs::write(
        mirror.join("metadata/timestamp.json"),
        operator::to_bytes(&ts).unwrap(),
    )
    .unwrap();
    let err = f.refresh_from(&mirror).await.unwrap_err();
    assert!(
        err.to_string().contains("snapshot") || err.to_string().contains("targets"),
        "{err}"
    );
    // The new timestamp verified and is trusted (TUF 5.4); the snapshot that would roll targets
    // back is not, and neither snapshot nor targets changed.
    let after = f.client_state();
    for file in ["root.json", "snapshot.json", "targets.json"] {
        let pick = |state: &Vec<(String, String)>| state.iter().find(|(n, _)| n == file).cloned();
        assert_eq!(pick(&after), pick(&before), "{file}");
    }
}

#[tokio::test]
async fn root_rotation_needs_a_threshold_of_old_and_new_keys() {
    let f = Fixture::new().await;
    let old = f.root().await;
    let expires = days_after(Timestamp::now(), 365).unwrap();
    let new_spec = spec(&f.keys, &["root-2"], 1);
    let new = operator::build_root(&new_spec, 2, expires).unwrap();

    // Only the new key, only the old key: refused by the repository and by the device.
    for keys in [vec!["root-2"], vec!["root"]] {
        let sources: Vec<_> = keys.iter().map(|k| source(&f.keys, k)).collect();
        let signed = partial_sign(&new, &old, &sources).await;
        let err = f
            .repo
            .accept_root(&signed, Timestamp::now())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Signature { .. }), "{keys:?}: {err}");
        let mirror = f.mirror();
        std::fs::write(mirror.join("metadata/2.root.json"), &signed).unwrap();
        let before = f.client_state();
        assert!(f.refresh_from(&mirror).await.is_err(), "{keys:?}");
        assert_eq!(f.client_state(), before, "a rejected root is never cached");
    }

    // Skipping a version.
    let skipping = operator::build_root(&new_spec, 3, expires).unwrap();
    let signed = operator::sign_root(
        &skipping,
        &[&old, &skipping],
        &[source(&f.keys, "root"), source(&f.keys, "root-2")],
    )
    .await
    .unwrap();
    assert!(matches!(
        f.repo.accept_root(&signed, Timestamp::now()).await,
        Err(Error::Version { .. })
    ));

    // Properly cross-signed: accepted, and the device follows it.
    let rotated = operator::rotate_root(
        &old,
        &new_spec,
        expires,
        &[source(&f.keys, "root"), source(&f.keys, "root-2")],
    )
    .await
    .unwrap();
    f.repo
        .accept_root(&rotated, Timestamp::now())
        .await
        .unwrap();
    let trusted = f.refresh().await.unwrap();
    assert_eq!(trusted.root_version(), 2);
    assert_eq!(
        std::fs::read(f.client_dir.join("root.json")).unwrap(),
        rotated
    );

    // Going back to version 1 is impossible once 2 is trusted.
    let v1 = std::fs::read(f.repo_dir.join("metadata/1.root.json")).unwrap();
    let err = client::init(&f.tmp.path().join("other"), &v1);
    assert!(err.is_ok(), "a fresh device may start from root 1");
    let mirror = f.mirror();
    std::fs::write(mirror.join("metadata/root.json"), &v1).unwrap();
    std::fs::remove_file(mirror.join("metadata/2.root.json")).unwrap();
    assert_eq!(f.refresh_from(&mirror).await.unwrap().root_version(), 2);
}

/// Signs `new` with `keys` under `old` and under `new` without the threshold check, as an
/// attacker holding only some keys would.
async fn partial_sign(
    new: &Root,
    old: &Root,
    keys: &[Box<dyn tough::key_source::KeySource>],
) -> Vec<u8> {
    let mut sigs = Vec::new();
    for authority in [old, new] {
        if let Ok(s) = operator::sign_with(new.clone(), authority, keys).await {
            for sig in s.signatures {
                if !sigs
                    .iter()
                    .any(|x: &tough::schema::Signature| x.keyid == sig.keyid)
                {
                    sigs.push(sig);
                }
            }
        }
    }
    operator::to_bytes(&tough::schema::Signed {
        signed: new.clone(),
        signatures: sigs,
    })
    .unwrap()
}

#[tokio::test]
async fn duplicate_signatures_or_one_key_under_two_ids_do_not_reach_a_threshold() {
    let f = Fixture::new().await;
    let expires = days_after(Timestamp::now(), 365).unwrap();
    // Root with threshold 2 over root-2 and an alias of root-2 (same key, extra field → new id).
    let mut alias = public(&f.keys, "root-2");
    if let tough::schema::key::Key::Ed25519 { _extra, .. } = &mut alias {
        _extra.insert("x-alias".into(), serde_json::json!(true));
    }
    let mut new_spec = spec(&f.keys, &["root-2"], 1);
    new_spec.root.keys.push(alias);
    new_spec.root.threshold = 2;
    let new = operator::build_root(&new_spec, 2, expires).unwrap();
    assert_eq!(new.roles[&tough::schema::RoleType::Root].keyids.len(), 2);
    let signed = operator::sign_root(
        &new,
        &[&f.root().await, &new],
        &[source(&f.keys, "root"), source(&f.keys, "root-2")],
    )
    .await;
    assert!(
        matches!(signed, Err(Error::Signature { .. })),
        "one key under two ids must not count twice"
    );

    // The same signature listed twice makes the file invalid, as it does on the device.
    let targets = operator::empty_targets(9, expires).unwrap();
    let mut signed = operator::sign_with(targets, &f.root().await, &[source(&f.keys, "targets")])
        .await
        .unwrap();
    let dup = signed.signatures[0].clone();
    signed.signatures.push(dup);
    let err = f
        .repo
        .accept_targets(&operator::to_bytes(&signed).unwrap(), Timestamp::now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Malformed { .. }) && err.to_string().contains("two signatures"),
        "{err}"
    );

    // Threshold 0 cannot even be expressed.
    let mut zero = spec(&f.keys, &["root"], 1);
    zero.targets.threshold = 0;
    assert!(matches!(
        operator::build_root(&zero, 2, expires),
        Err(Error::InvalidRoot(_))
    ));
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.repo_dir.join("metadata/root.json")).unwrap())
            .unwrap();
    json["signed"]["roles"]["targets"]["threshold"] = 0.into();
    assert!(
        client::init(
            &f.tmp.path().join("zero"),
            &serde_json::to_vec(&json).unwrap()
        )
        .is_err()
    );
}

#[tokio::test]
async fn malformed_metadata_at_every_level_is_an_error_not_a_panic() {
    let f = Fixture::new().await;
    let before_ok = f.refresh().await.unwrap().targets_version();
    // The current files (a push made targets 2 and snapshot 2), and a next root.
    for file in [
        "timestamp.json",
        "2.snapshot.json",
        "2.targets.json",
        "1.root.json",
    ] {
        let good = std::fs::read(f.repo_dir.join("metadata").join(file)).unwrap();
        for cut in [0, 1, good.len() / 3, good.len() / 2, good.len() - 2] {
            let mirror = f.mirror();
            let written = if file == "1.root.json" {
                "2.root.json"
            } else {
                file
            };
            std::fs::write(mirror.join("metadata").join(written), &good[..cut]).unwrap();
            // A device whose trusted copy is the version timestamp names never fetches that
            // role (§5.5, §5.6): drop the copy so the cut file is what it must read.
            f.refresh().await.unwrap();
            let cached = file.split_once('.').map(|(_, role)| role);
            if matches!(cached, Some("snapshot.json" | "targets.json")) {
                let _ = std::fs::remove_file(f.client_dir.join(cached.unwrap()));
            }
            let before = f.client_state();
            assert!(
                f.refresh_from(&mirror).await.is_err(),
                "{written} cut at {cut}"
            );
            assert_eq!(f.client_state(), before, "{file} cut at {cut}");
        }
    }
    assert_eq!(f.refresh().await.unwrap().targets_version(), before_ok);
    let _: Option<Targets> = None;
}

#[tokio::test]
async fn an_artifact_with_the_wrong_hash_or_length_is_refused_and_wrong_bytes_are_not_kept() {
    let f = Fixture::new().await;
    let mut trusted = f.refresh().await.unwrap();
    let target = trusted
        .model_target("models/churn/1.0.0/model.onnx")
        .await
        .unwrap();
    let path = f
        .repo
        .artifact_path(&target.name, &target.sha256_hex)
        .unwrap();
    let good = std::fs::read(&path).unwrap();
    let staging = f.tmp.path().join("staging");
    // A body that ends early may be a cut: its bytes stay for the next attempt to continue
    // (and are verified with the rest). Bytes that prove wrong are deleted.
    for (what, bytes, kept) in [
        (
            "flipped byte",
            {
                let mut b = good.clone();
                b[10] ^= 1;
                b
            },
            0,
        ),
        ("truncated", good[..good.len() - 1].to_vec(), good.len() - 1),
        ("longer", [good.as_slice(), b"extra"].concat(), 0),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let err = trusted.fetch(&target, &staging).await.unwrap_err();
        assert!(matches!(err, Error::Download { .. }), "{what}: {err}");
        let left: usize = std::fs::read_dir(&staging)
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len() as usize)
            .sum();
        assert_eq!(left, kept, "{what}: bytes left in staging");
    }
}
