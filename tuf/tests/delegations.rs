//! One delegated role per model (`delegation.rs`), end to end through the repository and a
//! device client: a device fetches the metadata of the models it runs and no other, a revoked
//! model's role does not touch the rest, a repository made with every model in the top-level
//! role moves to the new layout without a device losing a target, and the repository refuses a
//! role that its delegation does not allow.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Fixture, public, release, source};
use edgefleet_tuf::client::{self, TrustedRepo};
use edgefleet_tuf::delegation::{role_of, sign_delegated, with_delegation, without_delegation};
use edgefleet_tuf::{Error, operator};
use jiff::Timestamp;
use tough::{FilesystemTransport, Transport, TransportError, TransportStream};
use url::Url;

/// A transport that records every file the device asks for, as a relay would count them.
#[derive(Debug, Clone, Default)]
struct Counting {
    fetched: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Transport for Counting {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let file = url
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        self.fetched.lock().unwrap().push(file);
        FilesystemTransport.fetch(url).await
    }
}

impl Counting {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.fetched.lock().unwrap())
    }
}

async fn refresh_counting(f: &Fixture, counting: &Counting) -> TrustedRepo {
    client::refresh(&f.config_for(&f.repo_dir), counting.clone())
        .await
        .unwrap()
}

fn expires() -> Timestamp {
    operator::days_after(Timestamp::now(), 90).unwrap()
}

/// Delegates `model` to the targets key, moving its listed releases into its role.
async fn delegate(f: &Fixture, model: &str) {
    let current = f.current_targets().await;
    let role = role_of(model);
    let current_role = f
        .repo
        .delegated(&role)
        .await
        .unwrap()
        .map(|(r, _)| r.signed);
    let (top, moved) = with_delegation(
        &current,
        current_role.as_ref(),
        model,
        &[public(&f.keys, "targets")],
        1,
        expires(),
    )
    .unwrap();
    let top = f.sign_targets(top).await;
    let moved = moved.expect("the model had releases to move");
    let moved = sign_delegated(moved, &[source(&f.keys, "targets")])
        .await
        .unwrap();
    f.repo
        .accept_targets_with_delegated(
            &top,
            &role,
            &operator::to_bytes(&moved).unwrap(),
            Timestamp::now(),
        )
        .await
        .unwrap();
}

/// Signs the model's role with `release_dir` added, with key `key`, and offers it.
async fn push_delegated(f: &Fixture, release_dir: &str, key: &str) -> Result<String, Error> {
    let (bytes, meta) = release(release_dir);
    let (name, target) = operator::model_target(&bytes, &meta).unwrap();
    f.repo.store_artifact(&name, &bytes).unwrap();
    let role = role_of(meta.model.as_str());
    let (current, _) = f.repo.delegated(&role).await.unwrap().unwrap();
    let next = operator::with_target(&current.signed, &name, target, expires()).unwrap();
    let signed = sign_delegated(next, &[source(&f.keys, key)]).await.unwrap();
    f.repo
        .accept_delegated(
            &role,
            &operator::to_bytes(&signed).unwrap(),
            Timestamp::now(),
        )
        .await?;
    Ok(name)
}

#[tokio::test]
async fn a_device_running_churn_never_fetches_vision_metadata() {
    let mut f = Fixture::new().await;
    let vision = f.push("vision/1.0.0", Timestamp::now()).await;
    delegate(&f, "churn").await;
    delegate(&f, "vision").await;
    assert!(
        f.current_targets().await.targets.is_empty(),
        "every release moved"
    );

    let counting = Counting::default();
    let mut trusted = refresh_counting(&f, &counting).await;
    let churn = trusted
        .model_target("models/churn/1.0.0/model.onnx")
        .await
        .unwrap();
    assert_eq!(churn.meta.version.to_string(), "1.0.0");
    let fetched = counting.take();
    assert!(
        fetched.iter().any(|f| f.ends_with("model-churn.json")),
        "{fetched:?}"
    );
    assert!(!fetched.iter().any(|f| f.contains("vision")), "{fetched:?}");

    // An update to churn: the device fetches timestamp, snapshot and churn's role; not the
    // top-level role (unchanged), not vision's.
    let churn_2 = push_delegated(&f, "churn/2.0.0", "targets").await.unwrap();
    let mut trusted = refresh_counting(&f, &counting).await;
    trusted.model_target(&churn_2).await.unwrap();
    let fetched = counting.take();
    let shape: Vec<&str> = fetched
        .iter()
        .map(|f| f.split_once('.').map_or(f.as_str(), |(_, rest)| rest))
        .collect();
    assert_eq!(
        shape,
        ["root.json", "json", "snapshot.json", "model-churn.json"],
        "the root probe, then only what changed: {fetched:?}"
    );
    // The device can still find vision when it needs it, and only then fetches its role.
    trusted.model_target(&vision).await.unwrap();
    assert!(
        counting
            .take()
            .iter()
            .all(|f| f.ends_with("model-vision.json"))
    );
}

#[tokio::test]
async fn a_warm_refresh_that_changes_nothing_costs_the_root_probe_and_timestamp() {
    let f = Fixture::new().await;
    delegate(&f, "churn").await;
    let counting = Counting::default();
    let mut trusted = refresh_counting(&f, &counting).await;
    trusted
        .model_target("models/churn/1.0.0/model.onnx")
        .await
        .unwrap();
    counting.take();
    let mut trusted = refresh_counting(&f, &counting).await;
    trusted
        .model_target("models/churn/1.0.0/model.onnx")
        .await
        .unwrap();
    assert_eq!(counting.take(), ["2.root.json", "timestamp.json"]);
}

#[tokio::test]
async fn a_revoked_models_role_does_not_affect_other_models() {
    let mut f = Fixture::new().await;
    let vision = f.push("vision/1.0.0", Timestamp::now()).await;
    delegate(&f, "churn").await;
    delegate(&f, "vision").await;
    let mut trusted = f.refresh().await.unwrap();
    trusted.model_target(&vision).await.unwrap();

    let top = without_delegation(&f.current_targets().await, "vision", expires()).unwrap();
    f.offer(&f.sign_targets(top).await).await.unwrap();
    let mut trusted = f.refresh().await.unwrap();
    assert!(matches!(
        trusted.model_target(&vision).await,
        Err(Error::UnknownTarget { .. })
    ));
    trusted
        .model_target("models/churn/1.0.0/model.onnx")
        .await
        .unwrap();
    // Churn's role keeps publishing after vision's revocation.
    let churn_2 = push_delegated(&f, "churn/2.0.0", "targets").await.unwrap();
    f.refresh()
        .await
        .unwrap()
        .model_target(&churn_2)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_device_that_trusted_the_old_layout_follows_the_move() {
    let f = Fixture::new().await;
    let before = f
        .refresh()
        .await
        .unwrap()
        .model_target("models/churn/1.0.0/model.onnx")
        .await
        .unwrap();
    delegate(&f, "churn").await;
    let after = f
        .refresh()
        .await
        .unwrap()
        .model_target("models/churn/1.0.0/model.onnx")
        .await
        .unwrap();
    assert_eq!(
        before, after,
        "the same signed target, now found in its role"
    );
}

#[tokio::test]
async fn the_repository_refuses_roles_its_delegation_does_not_allow() {
    let f = Fixture::new().await;
    delegate(&f, "churn").await;
    // Signed by a key the delegation does not name.
    let err = push_delegated(&f, "churn/2.0.0", "intruder")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Signature { .. }), "{err}");
    // A target of another model, inside churn's role.
    let (bytes, meta) = release("vision/1.0.0");
    let (name, target) = operator::model_target(&bytes, &meta).unwrap();
    f.repo.store_artifact(&name, &bytes).unwrap();
    let (current, _) = f.repo.delegated("model-churn").await.unwrap().unwrap();
    let next = operator::with_target(&current.signed, &name, target, expires()).unwrap();
    let signed = sign_delegated(next, &[source(&f.keys, "targets")])
        .await
        .unwrap();
    let err = f
        .repo
        .accept_delegated(
            "model-churn",
            &operator::to_bytes(&signed).unwrap(),
            Timestamp::now(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("outside the paths delegated"),
        "{err}"
    );
    // A role nobody delegated.
    let err = f
        .repo
        .accept_delegated(
            "model-vision",
            &operator::to_bytes(&signed).unwrap(),
            Timestamp::now(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not delegate"), "{err}");
}
