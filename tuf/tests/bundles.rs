//! Offline bundles: valid for the days asked, refused after, never accepted by a device that has
//! synced since, re-signed offline only with keys root lists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use edgefleet_tuf::Error;
use edgefleet_tuf::repo::{OnlineKeys, resign_bundle};
use jiff::{SignedDuration, Timestamp};

const CHURN: &str = "models/churn/1.0.0/model.onnx";

fn ago(days: i64) -> Timestamp {
    Timestamp::now()
        .checked_sub(SignedDuration::from_hours(days * 24))
        .unwrap()
}

/// A bundle made `days_ago`, valid for `valid_days`, written as a repository directory with the
/// repository's targets beside it.
async fn bundle_made(f: &Fixture, days_ago: i64, valid_days: u32) -> PathBuf {
    let bundle = f.repo.bundle(valid_days, ago(days_ago)).await.unwrap();
    let dir = f.tmp.path().join(format!("bundle-{days_ago}-{valid_days}"));
    for (file, bytes) in &bundle.metadata {
        std::fs::create_dir_all(dir.join("metadata")).unwrap();
        std::fs::write(dir.join("metadata").join(file), bytes).unwrap();
    }
    copy_dir(&f.repo_dir.join("targets"), &dir.join("targets"));
    dir
}

async fn installs(f: &Fixture, bundle: &Path) -> Result<(), Error> {
    let mut trusted = f.refresh_from(bundle).await?;
    let target = trusted.model_target(CHURN).await?;
    trusted
        .fetch(&target, &f.tmp.path().join("staging"))
        .await
        .map(drop)
}

#[tokio::test]
async fn a_bundle_outlives_the_live_timestamp_and_expires_when_asked() {
    // Made 29 days ago, valid 30: the live timestamp of that day expired 28 days ago.
    let f = Fixture::new_at(ago(40)).await;
    let fresh = bundle_made(&f, 29, 30).await;
    installs(&f, &fresh).await.unwrap();

    let g = Fixture::new_at(ago(40)).await;
    let stale = bundle_made(&g, 31, 30).await;
    let before = g.client_state();
    let err = installs(&g, &stale).await.unwrap_err();
    assert!(
        matches!(&err, Error::Expired { role, .. } if role == "timestamp"),
        "{err}"
    );
    assert_eq!(
        g.client_state(),
        before,
        "a refused bundle changed the device"
    );
}

#[tokio::test]
async fn a_device_that_synced_after_the_bundle_refuses_it_and_one_that_used_it_syncs_on() {
    let f = Fixture::new().await;
    let bundle = bundle_made(&f, 0, 30).await;
    // The live repository moved past the bundle's versions.
    let live: tough::schema::Signed<tough::schema::Timestamp> =
        read_signed(&f.repo_dir.join("metadata/timestamp.json"));
    let offline: tough::schema::Signed<tough::schema::Timestamp> =
        read_signed(&bundle.join("metadata/timestamp.json"));
    assert_eq!(live.signed.version.get(), offline.signed.version.get() + 1);

    // The device installs from the bundle, then syncs with the live repository.
    installs(&f, &bundle).await.unwrap();
    f.refresh().await.unwrap();
    // Having seen newer metadata, it refuses the bundle (a replay of older state).
    let err = installs(&f, &bundle).await.unwrap_err();
    assert!(
        matches!(&err, Error::Version { role, .. } if role == "timestamp"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bundle_cannot_outlive_targets_or_be_given_no_validity() {
    let f = Fixture::new().await;
    // Targets were signed for 90 days.
    let err = f.repo.bundle(120, Timestamp::now()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("targets") && text.contains("at most 89 days"),
        "{text}"
    );
    for days in [0, 367] {
        let err = f.repo.bundle(days, Timestamp::now()).await.unwrap_err();
        assert!(err.to_string().contains("1 to 366 days"), "{err}");
    }
    // Nothing was published by the refusals.
    let live: tough::schema::Signed<tough::schema::Timestamp> =
        read_signed(&f.repo_dir.join("metadata/timestamp.json"));
    assert_eq!(live.signed.version.get(), 2);
}

#[tokio::test]
async fn an_expired_bundle_is_re_signed_offline_with_keys_root_lists_only() {
    let f = Fixture::new_at(ago(40)).await;
    let bundle = bundle_made(&f, 31, 30).await;
    assert!(installs(&f, &bundle).await.is_err());

    let intruder = OnlineKeys {
        snapshot: source(&f.keys, "intruder"),
        timestamp: source(&f.keys, "intruder"),
    };
    let err = resign_bundle(&bundle.join("metadata"), &intruder, 30, Timestamp::now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("make a new bundle"), "{err}");

    let resigned = resign_bundle(
        &bundle.join("metadata"),
        &online(&f.keys),
        30,
        Timestamp::now(),
    )
    .await
    .unwrap();
    assert!(resigned.expires > Timestamp::now());
    installs(&f, &bundle).await.unwrap();
}
