//! Alerts against a real SQLite store, with time passed by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use edgefleet_protocol::guard::{Breach, GuardRule};

use super::*;
use crate::store::AlertStore;
use crate::store::sqlite::SqliteStore;

const T0: i64 = 1_800_000_000;

fn store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (
        SqliteStore::open(&dir.path().join("fleet.db")).unwrap(),
        dir,
    )
}

fn breach(device: &str, at: i64) -> Raised {
    Raised {
        fingerprint: "guard/churn/2.0.0/default".into(),
        name: "EdgefleetGuardBreached".into(),
        severity: "page".into(),
        labels: BTreeMap::from([
            ("model".to_owned(), "churn".to_owned()),
            ("version".to_owned(), "2.0.0".to_owned()),
            ("group".to_owned(), "default".to_owned()),
        ]),
        summary: "churn 2.0.0 breached its guard policy in group default".into(),
        description: format!("device {device}: accuracy fell"),
        evidence: Evidence {
            at,
            device: Some(device.into()),
            detail: "accuracy 0.550 on 400 labelled predictions".into(),
            breaches: vec![Breach {
                rule: GuardRule::Accuracy,
                observed: 0.55,
                limit: 0.76,
                detail: "accuracy 0.550".into(),
                sample: vec!["a1b2".into()],
            }],
        },
        wants_action: true,
    }
}

#[tokio::test]
async fn breaches_of_one_version_in_one_group_are_one_alert() {
    let (store, _dir) = store();
    let first = raise(&store, breach("d1", T0), T0, true).await.unwrap();
    assert_eq!(first.state, AlertState::Firing);
    assert_eq!(first.notify_due, Some(T0));
    assert!(first.action_due);
    assert_eq!(first.labels["alertname"], "EdgefleetGuardBreached");
    for i in 0..30 {
        let again = raise(&store, breach(&format!("d{i}"), T0 + i), T0 + i, true)
            .await
            .unwrap();
        assert_eq!(again.id, first.id);
    }
    let alert = store.alert(first.id).await.unwrap().unwrap();
    assert_eq!(alert.occurrences, 31);
    assert_eq!(alert.evidence.len(), MAX_EVIDENCE);
    assert_eq!(
        alert.evidence.last().unwrap().device.as_deref(),
        Some("d29")
    );
    // Occurrences do not notify again: the revision is the opening's.
    assert_eq!(alert.revision, 1);

    let other = Raised {
        fingerprint: "guard/churn/2.0.0/eu".into(),
        ..breach("e1", T0)
    };
    let other = raise(&store, other, T0 + 40, true).await.unwrap();
    assert_ne!(other.id, first.id);
    let open = store.alerts(&AlertFilter::default()).await.unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(open[0].id, other.id, "newest change first");
}

#[tokio::test]
async fn acknowledged_stays_open_resolved_closes_and_a_new_breach_opens_anew() {
    let (store, _dir) = store();
    let alert = raise(&store, breach("d1", T0), T0, true).await.unwrap();
    let acked = acknowledge(&store, alert.id, "ana", Some("on it".into()), T0 + 5)
        .await
        .unwrap();
    assert_eq!(acked.state, AlertState::Acknowledged);
    assert_eq!(acked.acknowledged.as_ref().unwrap().by, "ana");
    // Still open: a new occurrence joins it.
    let joined = raise(&store, breach("d2", T0 + 6), T0 + 6, true)
        .await
        .unwrap();
    assert_eq!(joined.id, alert.id);
    assert_eq!(joined.state, AlertState::Acknowledged);

    // The opening was never delivered (no webhook took it): resolving notifies no one.
    let resolved = resolve(&store, alert.id, "ana", T0 + 10, true)
        .await
        .unwrap();
    assert_eq!(resolved.state, AlertState::Resolved);
    assert_eq!(resolved.notify_due, None);
    assert!(matches!(
        acknowledge(&store, alert.id, "bo", None, T0 + 11).await,
        Err(ChangeError::Resolved { .. })
    ));
    assert!(matches!(
        resolve(&store, 999, "bo", T0 + 11, true).await,
        Err(ChangeError::NotFound { id: 999 })
    ));
    let fresh = raise(&store, breach("d3", T0 + 20), T0 + 20, true)
        .await
        .unwrap();
    assert_ne!(fresh.id, alert.id);
    assert!(store.alerts(&AlertFilter::default()).await.unwrap().len() == 1);
    let all = AlertFilter {
        all: true,
        ..AlertFilter::default()
    };
    assert_eq!(store.alerts(&all).await.unwrap().len(), 2);
    let resolved_only = AlertFilter {
        state: Some(AlertState::Resolved),
        ..AlertFilter::default()
    };
    assert_eq!(store.alerts(&resolved_only).await.unwrap()[0].id, alert.id);
}

#[tokio::test]
async fn a_delivered_alert_notifies_again_when_resolved_and_due_work_is_listed() {
    let (store, _dir) = store();
    let alert = raise(&store, breach("d1", T0), T0, true).await.unwrap();
    assert_eq!(store.alerts_notify_due(T0 - 1, 10).await.unwrap().len(), 0);
    assert_eq!(store.alerts_notify_due(T0, 10).await.unwrap().len(), 1);
    assert_eq!(store.alerts_action_due(10).await.unwrap().len(), 1);
    let mut delivered = store.alert(alert.id).await.unwrap().unwrap();
    delivered.notified_revision = delivered.revision;
    delivered.notify_due = None;
    delivered.action_due = false;
    store.update_alert(&delivered).await.unwrap();
    assert!(
        store
            .alerts_notify_due(T0 + 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.alerts_action_due(10).await.unwrap().is_empty());
    let resolved = resolve(&store, alert.id, "ana", T0 + 50, true)
        .await
        .unwrap();
    assert_eq!(resolved.notify_due, Some(T0 + 50));
    assert_eq!(resolved.revision, 2);
}
