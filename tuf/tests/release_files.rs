//! Golden cases and baselines as release files: signed by hash inside the release's metadata,
//! stored beside the artifact, fetched and checked by the device only for the release it
//! installs. Releases signed before (cases inline) keep working beside them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use edgefleet_protocol::release_files::ReleaseFileKind;
use edgefleet_tuf::client::ClientLimits;
use edgefleet_tuf::operator;
use edgefleet_tuf::release_files::detach;
use jiff::Timestamp;

const CHURN_1: &str = "models/churn/1.0.0/model.onnx";
const CHURN_2: &str = "models/churn/2.0.0/model.onnx";

#[tokio::test]
async fn a_device_fetches_the_files_of_the_release_it_installs_and_reads_inline_releases_too() {
    let mut f = Fixture::new().await; // churn 1.0.0, cases inline
    f.push_with_files("churn/2.0.0", Timestamp::now()).await;
    let mut trusted = f.refresh().await.unwrap();
    let staging = f.tmp.path().join("staging");

    let mut inline = trusted.model_target(CHURN_1).await.unwrap();
    assert!(inline.meta.pending().is_empty());
    let before = inline.clone();
    trusted
        .fetch_release_files(&mut inline, &staging)
        .await
        .unwrap();
    assert_eq!(inline, before, "nothing to fetch for an inline release");

    let mut listed = trusted.model_target(CHURN_2).await.unwrap();
    assert_eq!(
        listed.meta.pending(),
        [ReleaseFileKind::Golden, ReleaseFileKind::Baseline]
    );
    let targets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.client_dir.join("targets.json")).unwrap()).unwrap();
    let spec = |name: &str| {
        targets["signed"]["targets"][name]["custom"]["spec"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        spec(CHURN_1).contains("\"expected\""),
        "inline, as signed then"
    );
    assert!(
        !spec(CHURN_2).contains("\"expected\"") && !spec(CHURN_2).contains("\"shares\""),
        "golden outputs and baseline must not travel in the metadata"
    );
    trusted
        .fetch_release_files(&mut listed, &staging)
        .await
        .unwrap();
    let full = release("churn/2.0.0").1;
    assert_eq!(listed.meta.health.cases, full.health.cases);
    assert_eq!(listed.meta.baseline, full.baseline);
    assert!(listed.meta.pending().is_empty());
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
}

#[tokio::test]
async fn a_tampered_or_oversized_release_file_is_refused_and_the_target_stays_as_listed() {
    let mut f = Fixture::new().await;
    f.push_with_files("churn/2.0.0", Timestamp::now()).await;
    let mirror = f.mirror();
    let dir = mirror.join("targets/models/churn/2.0.0");
    let golden = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".golden.json"))
        .unwrap();
    let mut bytes = std::fs::read(&golden).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&golden, &bytes).unwrap();

    let staging = f.tmp.path().join("staging");
    let mut trusted = f.refresh_from(&mirror).await.unwrap();
    let mut target = trusted.model_target(CHURN_2).await.unwrap();
    let listed = target.clone();
    let err = trusted
        .fetch_release_files(&mut target, &staging)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("golden.json"), "{err}");
    assert_eq!(target, listed);
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);

    // A device whose limit is below the signed length does not start the download.
    let mut config = f.config_for(&f.repo_dir);
    config.limits = ClientLimits {
        max_release_file_bytes: 100,
        ..ClientLimits::default()
    };
    let mut small = edgefleet_tuf::client::refresh(&config, tough::FilesystemTransport)
        .await
        .unwrap();
    let mut target = small.model_target(CHURN_2).await.unwrap();
    let err = small
        .fetch_release_files(&mut target, &staging)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("limit of 100 bytes"), "{err}");
}

#[tokio::test]
async fn metadata_naming_a_file_that_was_not_stored_never_reaches_the_repository() {
    let f = Fixture::new().await;
    let (bytes, mut meta) = release("churn/2.0.0");
    let files = detach(&mut meta, u64::MAX).unwrap();
    let (name, target) = operator::model_target(&bytes, &meta).unwrap();
    f.repo.store_artifact(&name, &bytes).unwrap();
    f.repo
        .store_artifact(&files[0].name, &files[0].bytes)
        .unwrap(); // not the baseline
    let next = f.current_with(&name, target).await.unwrap();
    let err = f
        .offer(&f.sign_targets(next).await)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("models/churn/2.0.0/baseline.json") && err.contains("upload it"),
        "{err}"
    );
}

#[tokio::test]
async fn lineage_and_the_model_card_are_signed_and_a_device_never_fetches_the_card() {
    let mut f = Fixture::new().await;
    f.push_with_files("churn/2.0.0", Timestamp::now()).await;
    let mut trusted = f.refresh().await.unwrap();
    let mut listed = trusted.model_target(CHURN_2).await.unwrap();
    let lineage = listed.meta.lineage.clone().expect("lineage signed");
    assert_eq!(lineage.metrics["roc_auc"], 0.8746);
    assert_eq!(
        lineage.code.unwrap().path.as_deref(),
        Some("models/build.py")
    );
    assert_eq!(lineage.data.unwrap().rows, Some(6000));
    let card_bytes = std::fs::read(models_dir().join("churn/2.0.0/MODEL_CARD.md")).unwrap();
    let card = listed.meta.files.card.clone().expect("card signed by hash");
    assert_eq!(card.sha256, edgefleet_tuf::sha256_hex(&card_bytes));
    assert!(!listed.meta.pending().contains(&ReleaseFileKind::Card));

    // With the card gone from the repository the device still installs: it never fetches it.
    let stored = f
        .repo
        .artifact_path("models/churn/2.0.0/card.md", &card.sha256)
        .unwrap();
    std::fs::remove_file(stored).unwrap();
    trusted
        .fetch_release_files(&mut listed, &f.tmp.path().join("staging"))
        .await
        .unwrap();
    // Whoever does read it gets only the signed bytes.
    let mut meta = listed.meta.clone();
    edgefleet_tuf::release_files::attach(&mut meta, ReleaseFileKind::Card, &card_bytes).unwrap();
    let err = edgefleet_tuf::release_files::attach(&mut meta, ReleaseFileKind::Card, b"# forged")
        .unwrap_err();
    assert!(err.to_string().contains("not the signed file"), "{err}");
}
