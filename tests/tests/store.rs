//! The store test suite, run against SQLite and against a real PostgreSQL server that each test
//! starts (`edgefleet_e2e::postgres`: initdb into a temporary directory, `postgres` on a free
//! loopback port, stopped on drop).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use edgefleet_e2e::free_port;
use edgefleet_e2e::postgres::Postgres;
use edgefleet_protocol::message::{
    Desired, DesiredModel, Event, EventKind, MetricsBatch, Reported, SCHEMA_VERSION,
};
use edgefleet_protocol::{DeviceId, MessageId, ModelName};
use fleet_server::audit::{self, AuditEntry, AuditFilter, AuditRecord};
use fleet_server::auth::Role;
use fleet_server::rollout::{Rollout, RolloutSpec};
use fleet_server::store::postgres::PostgresStore;
use fleet_server::store::rollups::{
    HOUR, MINUTE, NewRollup, RollupFigures, RollupStore, UnrolledBatch,
};
use fleet_server::store::sqlite::SqliteStore;
use fleet_server::store::{
    AuditStore, DeviceFilter, DevicePageQuery, DeviceStore, EnrollRefusal, NewDevice, Release,
    RolloutStore, Stage, StateStore, Store, StoreError, StoredEvent,
};
use fleet_server::telemetry::pending::PendingBatches;
use fleet_server::telemetry::rollups::{self, RollupCursor};

#[path = "store/grouped.rs"]
mod grouped;
use grouped::writes_handed_over_together_each_hear_their_own_outcome;

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

fn id(n: u64) -> MessageId {
    MessageId::from_random([n as u8; 16])
}

fn reported(device: &str, seq: u64) -> Reported {
    Reported {
        schema: SCHEMA_VERSION,
        id: id(seq),
        device: dev(device),
        seq,
        at_unix: seq,
        agent_version: "0.1.0".into(),
        desired_revision: seq,
        models: vec![],
    }
}

fn event(device: &str, seq: u64, at: i64) -> StoredEvent {
    let message = Event {
        schema: SCHEMA_VERSION,
        id: id(seq),
        device: dev(device),
        seq,
        at_unix: seq,
        kind: EventKind::Committed,
        model: ModelName::new("churn").unwrap(),
        target: None,
        rollout: None,
        detail: None,
        evidence: Vec::new(),
    };
    StoredEvent::received(message, at)
}

/// A metrics batch whose `dropped_batches` marks which copy was stored.
fn batch(device: &str, seq: u64, marker: u64) -> MetricsBatch {
    MetricsBatch {
        schema: SCHEMA_VERSION,
        id: id(seq),
        device: dev(device),
        seq,
        window_start_unix: 0,
        window_end_unix: 60,
        dropped_batches: marker,
        process: Default::default(),
        models: vec![],
    }
}

fn desired(device: &str, revision: u64, targets: &[&str]) -> Desired {
    Desired {
        schema: SCHEMA_VERSION,
        id: id(revision),
        device: dev(device),
        revision,
        issued_at_unix: 0,
        models: targets
            .iter()
            .map(|t| DesiredModel {
                shadow: None,
                model: ModelName::new("churn").unwrap(),
                target: (*t).into(),
                artifact_urls: vec![],
                rollout: None,
            })
            .collect(),
    }
}

fn new_device(id: &str, group: &str) -> NewDevice {
    NewDevice {
        id: dev(id),
        group: group.into(),
        tags: BTreeMap::from([("site".to_string(), "north".to_string())]),
    }
}

async fn enrollment_tokens_work_once_and_expire(store: &dyn Store) {
    store
        .add_device(&new_device("d1", "g"), "tok", 100, 0, false)
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_device(&new_device("d1", "g"), "tok2", 100, 0, false)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let refusal = |r: Result<(), StoreError>| match r {
        Err(StoreError::Enrollment { reason }) => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refusal(store.enroll(&dev("d1"), "wrong", "c", "m", None, 1).await),
        EnrollRefusal::UnknownOrWrongToken
    );
    assert_eq!(
        refusal(store.enroll(&dev("d2"), "tok", "c", "m", None, 1).await),
        EnrollRefusal::UnknownOrWrongToken
    );
    assert_eq!(
        refusal(store.enroll(&dev("d1"), "tok", "c", "m", None, 100).await),
        EnrollRefusal::Expired
    );
    store
        .add_device(&new_device("d1", "g"), "tok3", 200, 150, true)
        .await
        .unwrap();
    store
        .enroll(&dev("d1"), "tok3", "cred", "mhash", Some("00ff"), 150)
        .await
        .unwrap();
    // The key it registered is what its messages are opened with; other devices have none.
    assert_eq!(
        store
            .device_public_key(&dev("d1"))
            .await
            .unwrap()
            .as_deref(),
        Some("00ff")
    );
    assert_eq!(store.device_public_key(&dev("nobody")).await.unwrap(), None);
    assert_eq!(
        refusal(store.enroll(&dev("d1"), "tok3", "c", "m", None, 151).await),
        EnrollRefusal::AlreadyEnrolled
    );
    assert!(matches!(
        store
            .add_device(&new_device("d1", "g"), "tok4", 300, 160, true)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store.device_by_credential("cred").await.unwrap(),
        Some(dev("d1"))
    );
    assert_eq!(store.device_by_credential("tok3").await.unwrap(), None);
    assert_eq!(
        store.mqtt_credentials().await.unwrap(),
        vec![(dev("d1"), "mhash".to_string())]
    );
}

async fn reported_state_only_moves_forward_and_events_are_stored_once(store: &dyn Store) {
    store
        .add_device(&new_device("d1", "g"), "t", 100, 0, false)
        .await
        .unwrap();
    assert!(store.record_reported(&reported("d1", 2), 10).await.unwrap());
    assert!(!store.record_reported(&reported("d1", 1), 11).await.unwrap());
    assert!(!store.record_reported(&reported("d1", 2), 11).await.unwrap());
    let d = store.device(&dev("d1")).await.unwrap().unwrap();
    assert_eq!(d.reported, Some(reported("d1", 2)));
    assert_eq!(d.agent_version.as_deref(), Some("0.1.0"));
    assert_eq!(d.last_seen, Some(10));
    // A batch (not a report) that arrived earlier leaves last_seen; a later one moves it.
    assert!(
        store
            .record_metrics(&batch("d1", 1, 0), 8_000_000)
            .await
            .unwrap()
    );
    assert_eq!(
        store.device(&dev("d1")).await.unwrap().unwrap().last_seen,
        Some(10),
        "last_seen never goes back"
    );
    assert!(
        store
            .record_metrics(&batch("d1", 2, 0), 12_000_000)
            .await
            .unwrap()
    );
    assert_eq!(
        store.device(&dev("d1")).await.unwrap().unwrap().last_seen,
        Some(12)
    );
    // What /metrics counts without loading the fleet: registered, and heard from since.
    store
        .add_device(&new_device("d-silent", "g"), "t2", 100, 0, false)
        .await
        .unwrap();
    assert_eq!(store.device_counts(12).await.unwrap(), (2, 1));
    assert_eq!(store.device_counts(13).await.unwrap(), (2, 0));
    // What the rollout engine reads between passes: the devices whose reported state was stored
    // since a time (a refused, older state does not count; a batch is not a report).
    let since = |at: Option<i64>| async move {
        let states = store.reported_states(at).await.unwrap();
        states
            .into_iter()
            .map(|(id, r)| (id.to_string(), r.seq))
            .collect::<Vec<_>>()
    };
    assert_eq!(since(Some(10)).await, [("d1".into(), 2)]);
    assert!(since(Some(11)).await.is_empty());
    assert_eq!(
        since(None).await,
        [("d1".into(), 2)],
        "d-silent reported nothing"
    );
    assert!(
        store
            .record_reported(&reported("d-silent", 1), 20)
            .await
            .unwrap()
    );
    assert!(!store.record_reported(&reported("d1", 2), 21).await.unwrap());
    assert_eq!(since(Some(11)).await, [("d-silent".into(), 1)]);
    assert_eq!(
        since(None).await,
        [("d-silent".into(), 1), ("d1".into(), 2)]
    );
    for (seq, at) in [(1, 5), (2, 7), (3, 6)] {
        let event = event("d1", seq, at);
        assert!(store.record_event(&event).await.unwrap());
        assert!(!store.record_event(&event).await.unwrap());
    }
    let events = store.events(Some(&dev("d1")), 2).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3],
        "newest first, limited"
    );
    assert_eq!(events[0], event("d1", 2, 7), "read back as stored");
    assert_eq!(store.events(None, 10).await.unwrap().len(), 3);
    assert!(store.events(Some(&dev("d9")), 10).await.unwrap().is_empty());
}

async fn telemetry_is_stored_once_read_in_arrival_order_and_pruned_by_age(store: &dyn Store) {
    // Arrival (microseconds) out of seq order on purpose: reads follow arrival.
    for (device, seq, received_us) in [
        ("d1", 2, 5_000_000),
        ("d1", 1, 5_000_001),
        ("d2", 1, 7_000_000),
        ("d1", 3, 9_500_000),
    ] {
        assert!(
            store
                .record_metrics(&batch(device, seq, seq), received_us)
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .record_metrics(&batch("d1", 1, 99), 9_900_000)
            .await
            .unwrap(),
        "a (device, seq) is stored once"
    );
    let d1 = store.metrics(Some(&dev("d1")), 0).await.unwrap();
    assert_eq!(
        d1.iter()
            .map(|m| (m.seq, m.received_us))
            .collect::<Vec<_>>(),
        vec![(2, 5_000_000), (1, 5_000_001), (3, 9_500_000)]
    );
    assert_eq!(
        d1[1].batch,
        batch("d1", 1, 1),
        "the first copy is the one kept"
    );
    assert_eq!(
        store.metrics(None, 7).await.unwrap().len(),
        2,
        "since seconds"
    );
    assert_eq!(
        store.prune_metrics(7).await.unwrap(),
        0,
        "batches not folded into rollups stay"
    );
    let unrolled = store.unrolled_metrics(10).await.unwrap();
    let keys: Vec<(String, u64)> = unrolled.iter().map(|u| (u.device.clone(), u.seq)).collect();
    assert!(store.add_rollups(&keys, &[]).await.unwrap());
    assert_eq!(store.prune_metrics(7).await.unwrap(), 2);
    let left = store.metrics(None, 0).await.unwrap();
    assert_eq!(
        left.iter()
            .map(|m| (m.device.as_str(), m.seq))
            .collect::<Vec<_>>(),
        vec![("d2", 1), ("d1", 3)]
    );
    assert_eq!(store.prune_metrics(7).await.unwrap(), 0);
}

async fn desired_revisions_grow_and_assignments_accumulate(store: &dyn Store) {
    store
        .add_device(&new_device("d1", "g"), "t", 100, 0, false)
        .await
        .unwrap();
    store.set_desired(&desired("d1", 1, &["a"])).await.unwrap();
    store.set_desired(&desired("d1", 2, &["b"])).await.unwrap();
    assert!(store.set_desired(&desired("d1", 2, &["c"])).await.is_err());
    assert!(store.is_assigned(&dev("d1"), "a").await.unwrap());
    assert!(store.is_assigned(&dev("d1"), "b").await.unwrap());
    assert!(!store.is_assigned(&dev("d1"), "c").await.unwrap());
    assert!(store.set_desired(&desired("nobody", 1, &[])).await.is_err());
    assert_eq!(
        store.all_desired().await.unwrap(),
        vec![desired("d1", 2, &["b"])]
    );
    assert_eq!(
        store
            .device(&dev("d1"))
            .await
            .unwrap()
            .unwrap()
            .desired_revision,
        2
    );
}

async fn devices_groups_and_tokens(store: &dyn Store) {
    store
        .add_device(&new_device("d1", "g1"), "t", 100, 0, false)
        .await
        .unwrap();
    store
        .add_device(&new_device("d2", "g2"), "t2", 100, 0, false)
        .await
        .unwrap();
    assert_eq!(store.device_counts(0).await.unwrap().0, 2);
    store
        .update_device(
            &dev("d2"),
            Some("g1"),
            Some(&BTreeMap::from([("site".into(), "south".into())])),
        )
        .await
        .unwrap();
    assert_eq!(
        store.groups().await.unwrap(),
        BTreeMap::from([("g1".into(), 2)])
    );
    let north = DeviceFilter {
        group: None,
        tag: Some(("site".into(), Some("north".into()))),
    };
    assert_eq!(store.devices(&north).await.unwrap().len(), 1);
    let g1 = DeviceFilter {
        group: Some("g1".into()),
        tag: None,
    };
    assert_eq!(store.devices(&g1).await.unwrap().len(), 2);
    let g2 = DeviceFilter {
        group: Some("g2".into()),
        tag: None,
    };
    assert!(store.devices(&g2).await.unwrap().is_empty());
    let named = store
        .devices_named(&[dev("d2"), dev("ghost"), dev("d1"), dev("d2")])
        .await
        .unwrap();
    assert_eq!(
        named.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["d1", "d2"],
        "the existing ones, once each, in id order"
    );
    assert_eq!(named[1], store.device(&dev("d2")).await.unwrap().unwrap());
    assert!(store.devices_named(&[]).await.unwrap().is_empty());
    store.set_desired(&desired("d2", 1, &["x"])).await.unwrap();
    store.remove_device(&dev("d2")).await.unwrap();
    assert!(store.device(&dev("d2")).await.unwrap().is_none());
    assert!(
        !store.is_assigned(&dev("d2"), "x").await.unwrap(),
        "assignments go with the device"
    );
    assert!(matches!(
        store.remove_device(&dev("d2")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.update_device(&dev("d2"), Some("g"), None).await,
        Err(StoreError::NotFound { .. })
    ));

    let alice = store
        .create_operator_token("alice", Role::Admin, "h1", 0)
        .await
        .unwrap();
    let bob = store
        .create_operator_token("bob", Role::Viewer, "h2", 1)
        .await
        .unwrap();
    assert_ne!(alice, bob);
    let token = store.operator_by_hash("h1").await.unwrap().unwrap();
    assert_eq!((token.name.as_str(), token.role), ("alice", Role::Admin));
    assert_eq!(store.operator_tokens().await.unwrap().len(), 2);
    store.revoke_operator_token(alice, 5).await.unwrap();
    assert!(store.operator_by_hash("h1").await.unwrap().is_none());
    assert!(matches!(
        store.revoke_operator_token(alice, 6).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.operator_tokens().await.unwrap().len(), 1);
}

async fn the_device_list_pages_and_filters_in_the_database(store: &dyn Store) {
    // 25 devices in 3 groups; every third tagged site=north, the rest site=south; the even ones
    // heard from at 1,000, the odd ones at 100 (offline by 900).
    for i in 0..25 {
        let id = format!("d{i:02}");
        store
            .add_device(
                &new_device(&id, &format!("g{}", i % 3)),
                &format!("t{i}"),
                100,
                0,
                false,
            )
            .await
            .unwrap();
        let site = if i % 3 == 0 { "north" } else { "south" };
        store
            .update_device(
                &dev(&id),
                None,
                Some(&BTreeMap::from([("site".into(), site.into())])),
            )
            .await
            .unwrap();
        let heard_at: i64 = if i % 2 == 0 { 1_000 } else { 100 };
        assert!(
            store
                .record_metrics(&batch(&id, 1, 0), heard_at * 1_000_000)
                .await
                .unwrap()
        );
    }
    let page = |query: DevicePageQuery| async move {
        let page = store.device_page(&query).await.unwrap();
        let ids: Vec<String> = page.devices.iter().map(|d| d.id.to_string()).collect();
        (ids, page.total, page.groups)
    };
    let all = DevicePageQuery {
        online_since: 900,
        limit: u32::MAX,
        ..Default::default()
    };
    // Pages in id order, each after the last id of the one before, the total on every page.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (ids, total, groups) = page(DevicePageQuery {
            after: after.clone(),
            limit: 10,
            ..all.clone()
        })
        .await;
        assert_eq!(total, 25);
        assert_eq!(groups, ["g0", "g1", "g2"]);
        if ids.is_empty() {
            break;
        }
        assert!(ids.len() <= 10);
        after = ids.last().cloned();
        seen.extend(ids);
    }
    let expected: Vec<String> = (0..25).map(|i| format!("d{i:02}")).collect();
    assert_eq!(seen, expected);
    // Each condition alone, and all of them together.
    let ids_where = |f: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..25)
            .filter(|i| f(*i))
            .map(|i| format!("d{i:02}"))
            .collect()
    };
    let (ids, total, _) = page(DevicePageQuery {
        filter: DeviceFilter {
            group: Some("g1".into()),
            tag: None,
        },
        ..all.clone()
    })
    .await;
    assert_eq!((ids, total), (ids_where(&|i| i % 3 == 1), 8));
    let (ids, _, _) = page(DevicePageQuery {
        filter: DeviceFilter {
            group: None,
            tag: Some(("site".into(), Some("north".into()))),
        },
        ..all.clone()
    })
    .await;
    assert_eq!(ids, ids_where(&|i| i % 3 == 0));
    let (ids, _, _) = page(DevicePageQuery {
        filter: DeviceFilter {
            group: None,
            tag: Some(("site".into(), None)),
        },
        ..all.clone()
    })
    .await;
    assert_eq!(ids.len(), 25, "every device has the key");
    let (ids, _, _) = page(DevicePageQuery {
        filter: DeviceFilter {
            group: None,
            tag: Some(("region".into(), None)),
        },
        ..all.clone()
    })
    .await;
    assert!(ids.is_empty());
    for online in [true, false] {
        let (ids, _, _) = page(DevicePageQuery {
            online: Some(online),
            ..all.clone()
        })
        .await;
        assert_eq!(
            ids,
            ids_where(&|i| (i % 2 == 0) == online),
            "online={online}"
        );
    }
    let (ids, _, _) = page(DevicePageQuery {
        text: Some("d1".into()),
        ..all.clone()
    })
    .await;
    assert_eq!(ids, ids_where(&|i| (10..20).contains(&i)));
    let (ids, _, _) = page(DevicePageQuery {
        text: Some("north".into()),
        ..all.clone()
    })
    .await;
    assert_eq!(ids, ids_where(&|i| i % 3 == 0), "text finds tag values");
    let (ids, total, _) = page(DevicePageQuery {
        filter: DeviceFilter {
            group: Some("g0".into()),
            tag: Some(("site".into(), Some("north".into()))),
        },
        online: Some(true),
        text: Some("d1".into()),
        limit: 1,
        ..all.clone()
    })
    .await;
    // g0 is every third device, all north; online the even ones; "d1": 10..19 → d12, d18.
    assert_eq!((ids, total), (vec!["d12".to_owned()], 2));

    // The totals by group come from the group tally: it follows moves and removals, and folding
    // it changes no total.
    let totals = || async {
        let mut by_group = Vec::new();
        for group in [None, Some("g0"), Some("g1"), Some("g2"), Some("g9")] {
            let (_, total, groups) = page(DevicePageQuery {
                filter: DeviceFilter {
                    group: group.map(str::to_owned),
                    tag: None,
                },
                limit: 1,
                ..all.clone()
            })
            .await;
            by_group.push(total);
            assert_eq!(groups, ["g0", "g1", "g2", "g9"]);
        }
        by_group
    };
    store
        .update_device(&dev("d00"), Some("g9"), None)
        .await
        .unwrap();
    store
        .update_device(&dev("d03"), Some("g0"), None)
        .await
        .unwrap();
    store.remove_device(&dev("d01")).await.unwrap();
    assert_eq!(totals().await, [24, 8, 7, 8, 1]);
    assert!(store.compact_device_tally().await.unwrap() > 0);
    assert_eq!(
        store.compact_device_tally().await.unwrap(),
        0,
        "already folded"
    );
    assert_eq!(totals().await, [24, 8, 7, 8, 1]);
    store.remove_device(&dev("d00")).await.unwrap();
    store.compact_device_tally().await.unwrap();
    let (_, total, groups) = page(DevicePageQuery {
        filter: DeviceFilter {
            group: Some("g9".into()),
            tag: None,
        },
        ..all.clone()
    })
    .await;
    assert_eq!(
        (total, groups),
        (0, vec!["g0".into(), "g1".into(), "g2".into()])
    );
}

/// A rollout of churn 2.0.0 in `waves`.
fn rollout_spec(waves: Vec<f64>) -> RolloutSpec {
    RolloutSpec {
        strategy: Default::default(),
        shadow: None,
        model: "churn".into(),
        version: "2.0.0".into(),
        target: "churn/2.0.0/model.onnx".into(),
        selector: Default::default(),
        waves,
        gates: Default::default(),
        rollback_on_halt: true,
    }
}

async fn releases_and_rollouts(store: &dyn Store) {
    let release = |version: &str, sequence: u64| Release {
        target: format!("churn/{version}/model.onnx"),
        model: "churn".into(),
        version: version.into(),
        sequence,
        sha256: "ab".repeat(32),
        length: 1234,
        stage: Stage::Staging,
        pushed_by: "alice".into(),
        pushed_at: 10,
    };
    store.record_release(&release("2.0.0", 2)).await.unwrap();
    store.record_release(&release("1.0.0", 1)).await.unwrap();
    let mut again = release("1.0.0", 1);
    again.length = 999;
    store.record_release(&again).await.unwrap();
    store
        .set_stage("churn", "2.0.0", Stage::Production)
        .await
        .unwrap();
    assert!(matches!(
        store.set_stage("churn", "9.9.9", Stage::Archived).await,
        Err(StoreError::NotFound { .. })
    ));
    let releases = store.releases().await.unwrap();
    assert_eq!(
        releases
            .iter()
            .map(|r| (r.version.as_str(), r.length, r.stage))
            .collect::<Vec<_>>(),
        vec![
            ("1.0.0", 999, Stage::Staging),
            ("2.0.0", 1234, Stage::Production)
        ]
    );

    let spec = rollout_spec(vec![100.0]);
    let devices = vec![("d1".to_string(), Some("1.0.0".to_string()))];
    let mut first = Rollout::new(
        "r1".into(),
        spec.clone(),
        devices.clone(),
        "alice".into(),
        100,
    )
    .unwrap();
    let mut second = Rollout::new("r2".into(), spec, devices, "alice".into(), 200).unwrap();
    store.save_rollout(&mut first).await.unwrap();
    store.save_rollout(&mut second).await.unwrap();
    assert_eq!((first.revision, second.revision), (1, 1));
    let mut duplicate = Rollout::new(
        "r1".into(),
        first.spec.clone(),
        vec![("d1".to_string(), None)],
        "bob".into(),
        300,
    )
    .unwrap();
    assert!(
        matches!(
            store.save_rollout(&mut duplicate).await,
            Err(StoreError::Conflict { .. })
        ),
        "a second rollout with the same id is refused"
    );
    assert_eq!(
        store
            .rollout_summaries(false, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.view.id.as_str())
            .collect::<Vec<_>>(),
        vec!["r2", "r1"],
        "newest first"
    );
    // Two servers hold the same revision: the first save wins, the other must reload.
    let mut elsewhere = store.rollout("r2").await.unwrap().unwrap();
    assert_eq!(elsewhere, second);
    second
        .command(fleet_server::rollout::Command::Abort, 210, "alice")
        .unwrap();
    store.save_rollout(&mut second).await.unwrap();
    assert_eq!(second.revision, 2);
    elsewhere.updated_at = 999;
    assert!(matches!(
        store.save_rollout(&mut elsewhere).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        elsewhere.revision, 1,
        "a refused save leaves the copy as it was"
    );
    let active = store.active_rollouts().await.unwrap();
    assert_eq!(
        active.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["r1"]
    );
    assert_eq!(store.rollout("r2").await.unwrap().unwrap(), second);
    assert!(store.rollout("r9").await.unwrap().is_none());
    // Lists read summaries: counts per wave, no devices, newest first, as many as asked.
    let summaries = store.rollout_summaries(false, 10).await.unwrap();
    assert_eq!(
        summaries
            .iter()
            .map(|s| (s.view.id.as_str(), s.revision, s.view.devices_total))
            .collect::<Vec<_>>(),
        [("r2", 2, 1), ("r1", 1, 1)]
    );
    assert_eq!(
        summaries[0].view,
        fleet_server::rollout::RolloutView::paged(&second, fleet_server::rollout::DevicePage::NONE)
    );
    assert_eq!(summaries[1].view.waves[0].devices, 1);
    let active = store.rollout_summaries(true, 10).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].view.id, "r1");
    assert_eq!(store.rollout_summaries(false, 1).await.unwrap().len(), 1);
    // The registry's record of each, updated with every save.
    let records = store
        .release_records(Some(&second.spec.target))
        .await
        .unwrap();
    assert_eq!(
        records
            .iter()
            .map(|r| (r.rollout.as_str(), r.state.as_str()))
            .collect::<Vec<_>>(),
        [("r1", "running"), ("r2", "aborted")],
        "oldest first"
    );
    assert_eq!(records[1], second.release_record());
    assert_eq!(store.release_records(None).await.unwrap().len(), 2);
    assert!(
        store
            .release_records(Some("churn/9.0.0/model.onnx"))
            .await
            .unwrap()
            .is_empty()
    );
    store.ping().await.unwrap();
}

async fn leases_go_to_one_holder_until_they_expire(store: &dyn Store) {
    assert!(store.lease("engine", "a", 1_000, 5_000).await.unwrap());
    assert!(
        !store.lease("engine", "b", 2_000, 5_000).await.unwrap(),
        "a holds it"
    );
    assert!(
        store.lease("engine", "a", 4_000, 5_000).await.unwrap(),
        "a renews until 9000"
    );
    assert!(!store.lease("engine", "b", 8_999, 5_000).await.unwrap());
    assert!(
        store.lease("other", "b", 8_999, 5_000).await.unwrap(),
        "leases are per name"
    );
    assert!(
        store.lease("engine", "b", 9_000, 5_000).await.unwrap(),
        "expired: b takes over"
    );
    assert!(
        !store.lease("engine", "a", 9_001, 5_000).await.unwrap(),
        "a lost it"
    );
}

async fn left_behind_leases_are_found_by_prefix(store: &dyn Store) {
    assert!(
        store
            .lease("mqtt-session:a", "a", 1_000, 5_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .lease("mqtt-session:b", "b", 1_000, 9_000)
            .await
            .unwrap()
    );
    assert!(store.lease("engine", "a", 1_000, 1_000).await.unwrap());
    assert!(
        store
            .expired_leases("mqtt-session:", 5_999)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.expired_leases("mqtt-session:", 6_000).await.unwrap(),
        vec!["mqtt-session:a".to_string()],
        "a's expired, b's has not, engine is another prefix"
    );
    // Given up at once (expiry 0) by its holder, as a server does when it stops.
    assert!(store.lease("mqtt-session:b", "b", 0, 0).await.unwrap());
    let mut left = store.expired_leases("mqtt-session:", 1_000).await.unwrap();
    left.sort();
    assert_eq!(left, vec!["mqtt-session:b".to_string()]);
    store.release_lease("mqtt-session:b", "b").await.unwrap();
    assert!(
        store
            .expired_leases("mqtt-session:", 1_000)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn tuf_publications_apply_whole_and_only_from_the_current_timestamp(store: &dyn Store) {
    let files = |n: u64| {
        vec![
            (format!("{n}.snapshot.json"), format!("{{\"s\":{n}}}")),
            ("timestamp.json".to_string(), format!("{{\"t\":{n}}}")),
        ]
    };
    assert_eq!(store.tuf_file("timestamp.json").await.unwrap(), None);
    store.publish_tuf(files(1), None, 1).await.unwrap();
    assert!(
        matches!(
            store.publish_tuf(files(1), None, 1).await,
            Err(StoreError::Conflict { .. })
        ),
        "a second first publication"
    );
    store.publish_tuf(files(2), Some(1), 2).await.unwrap();
    // A server that computed its publication from version 1 lost the race: nothing written.
    let stale = vec![
        ("9.snapshot.json".to_string(), "{}".to_string()),
        ("timestamp.json".to_string(), "{\"stale\":1}".to_string()),
    ];
    assert!(matches!(
        store.publish_tuf(stale, Some(1), 2).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.tuf_file("9.snapshot.json").await.unwrap(), None);
    assert_eq!(
        store.tuf_file("timestamp.json").await.unwrap().as_deref(),
        Some("{\"t\":2}")
    );
    assert_eq!(
        store.tuf_file("1.snapshot.json").await.unwrap().as_deref(),
        Some("{\"s\":1}")
    );
}

fn audit_record(actor: &str, at: i64, route: &str) -> AuditRecord {
    AuditRecord {
        at,
        actor: actor.into(),
        role: Some("operator".into()),
        method: "PATCH".into(),
        route: route.into(),
        path: route.replace("{id}", "dev-01"),
        status: 200,
        request_id: format!("req-{at}"),
        subject: Some("device dev-01".into()),
        before: Some(serde_json::json!({"group": "lab"})),
        after: Some(serde_json::json!({"group": "prod"})),
    }
}

async fn the_audit_log_chains_filters_and_prunes(store: &dyn Store) {
    let devices = "/api/v1/devices/{id}";
    let tokens = "/api/v1/tokens";
    let mut appended = Vec::new();
    for (i, (actor, route)) in [
        ("alice", devices),
        ("bob", tokens),
        ("alice", tokens),
        ("alice", devices),
    ]
    .into_iter()
    .enumerate()
    {
        appended.push(
            store
                .append_audit(audit_record(actor, 100 + i as i64 * 10, route))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        appended.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(appended[1].prev_hash, appended[0].hash);
    let chain = store.audit_chain().await.unwrap();
    assert_eq!(chain, appended, "read back as written, oldest first");
    let check = audit::verify(&chain);
    assert_eq!(check.broken, None);
    assert_eq!(check.head_hash.as_deref(), Some(appended[3].hash.as_str()));

    let seqs = |entries: Vec<AuditEntry>| entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    let all = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(seqs(all), [4, 3, 2, 1], "newest first");
    let alice = AuditFilter {
        actor: Some("alice".into()),
        ..AuditFilter::default()
    };
    assert_eq!(seqs(store.audit(&alice).await.unwrap()), [4, 3, 1]);
    let alice_devices = AuditFilter {
        route: Some(devices.into()),
        ..alice.clone()
    };
    assert_eq!(seqs(store.audit(&alice_devices).await.unwrap()), [4, 1]);
    let page = AuditFilter {
        before: Some(4),
        limit: Some(2),
        since: Some(105),
        ..AuditFilter::default()
    };
    assert_eq!(seqs(store.audit(&page).await.unwrap()), [3, 2]);

    // Retention removes the oldest only; the rest still verifies from its new first entry.
    assert_eq!(store.prune_audit(120).await.unwrap(), 2);
    let check = audit::verify(&store.audit_chain().await.unwrap());
    assert_eq!((check.first_seq, check.broken), (Some(3), None));
    let next = store
        .append_audit(audit_record("carol", 200, tokens))
        .await
        .unwrap();
    assert_eq!((next.seq, next.prev_hash), (5, appended[3].hash.clone()));
}

async fn alerts_merge_by_fingerprint_and_list_by_state_and_due_work(store: &dyn Store) {
    use fleet_server::alerting::{self as alerts, AlertFilter, AlertState, Evidence, Raised};
    let raised = |fingerprint: &str, device: &str| Raised {
        fingerprint: fingerprint.into(),
        name: "EdgefleetGuardBreached".into(),
        severity: "page".into(),
        labels: BTreeMap::from([("model".to_owned(), "churn".to_owned())]),
        summary: "churn 2.0.0 breached its guard policy".into(),
        description: format!("device {device}"),
        evidence: Evidence {
            at: 100,
            device: Some(device.into()),
            detail: "accuracy fell".into(),
            breaches: Vec::new(),
        },
        wants_action: true,
    };
    let a = alerts::raise(store, raised("guard/churn/2.0.0/default", "d1"), 100, true)
        .await
        .unwrap();
    let same = alerts::raise(store, raised("guard/churn/2.0.0/default", "d2"), 110, true)
        .await
        .unwrap();
    assert_eq!((same.id, same.occurrences), (a.id, 2));
    let b = alerts::raise(store, raised("guard/churn/2.0.0/eu", "e1"), 120, false)
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(store.alerts_action_due(10).await.unwrap().len(), 2);
    let due: Vec<i64> = store
        .alerts_notify_due(105, 10)
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(due, [a.id], "b never asked to notify, a was due at 100");
    alerts::acknowledge(store, a.id, "ana", None, 130)
        .await
        .unwrap();
    alerts::resolve(store, b.id, "ana", 140, true)
        .await
        .unwrap();
    let open = store.alerts(&AlertFilter::default()).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].state, AlertState::Acknowledged);
    let all = AlertFilter {
        all: true,
        ..AlertFilter::default()
    };
    let listed: Vec<i64> = store
        .alerts(&all)
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(listed, [b.id, a.id], "newest change first");
    let resolved = AlertFilter {
        state: Some(AlertState::Resolved),
        ..AlertFilter::default()
    };
    assert_eq!(store.alerts(&resolved).await.unwrap()[0].id, b.id);
    assert!(
        store
            .open_alert("guard/churn/2.0.0/eu")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .open_alert("guard/churn/2.0.0/default")
            .await
            .unwrap()
            .unwrap()
            .id,
        a.id
    );
    assert!(store.alert(9_999).await.unwrap().is_none());
}

/// Two writers that read one alert: the second to write is told, and redoing its change on a
/// fresh read keeps the first one's (no lost fleet action or delivery).
async fn an_alert_written_by_two_keeps_both_changes(store: &dyn Store) {
    use fleet_server::alerting::{self as alerts, ActionTaken, Evidence, Raised};
    let raised = Raised {
        fingerprint: "guard/churn/2.0.0/default".into(),
        name: "EdgefleetGuardBreached".into(),
        severity: "page".into(),
        labels: BTreeMap::new(),
        summary: "s".into(),
        description: "d".into(),
        evidence: Evidence {
            at: 100,
            device: Some("d1".into()),
            detail: "accuracy fell".into(),
            breaches: Vec::new(),
        },
        wants_action: true,
    };
    let alert = alerts::raise(store, raised, 100, true).await.unwrap();
    let mut engine = store.alert(alert.id).await.unwrap().unwrap();
    let mut notifier = store.alert(alert.id).await.unwrap().unwrap();
    engine.actions.push(ActionTaken {
        at: 101,
        what: "paused the rollouts".into(),
    });
    engine.action_due = false;
    store.update_alert(&engine).await.unwrap();
    notifier.notified_revision = notifier.revision;
    notifier.notify_due = None;
    assert!(matches!(
        store.update_alert(&notifier).await,
        Err(fleet_server::store::StoreError::Conflict { .. })
    ));
    let both = alerts::update_fresh(store, alert.id, |a| {
        a.notified_revision = a.revision;
        a.notify_due = None;
        true
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(both.actions.len(), 1);
    assert!(!both.action_due && both.notify_due.is_none());
    assert_eq!(store.alert(alert.id).await.unwrap().unwrap(), both);
}

async fn labels_wait_per_device_in_order_until_acknowledged(store: &dyn Store) {
    let d1 = DeviceId::new("d1").unwrap();
    let d2 = DeviceId::new("d2").unwrap();
    let row = |d: &str, n: u32| (d.to_owned(), "churn".to_owned(), format!("{{\"n\":{n}}}"));
    let rows: Vec<_> = (0..5)
        .map(|n| row(if n % 2 == 0 { "d1" } else { "d2" }, n))
        .collect();
    assert_eq!(store.add_labels(&rows, 100).await.unwrap(), 5);
    let mine = store.labels_for(&d1, 0, 10).await.unwrap();
    let bodies: Vec<&str> = mine.iter().map(|(_, _, b)| b.as_str()).collect();
    assert_eq!(bodies, [r#"{"n":0}"#, r#"{"n":2}"#, r#"{"n":4}"#]);
    assert!(mine.windows(2).all(|w| w[0].0 < w[1].0), "in order");
    // A page, then what follows it.
    let first = store.labels_for(&d1, 0, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = store.labels_for(&d1, first[1].0, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    // Acknowledging drops only that device's, up to the sequence given.
    assert_eq!(store.ack_labels(&d1, first[1].0).await.unwrap(), 2);
    assert_eq!(store.labels_for(&d1, 0, 10).await.unwrap().len(), 1);
    assert_eq!(store.labels_for(&d2, 0, 10).await.unwrap().len(), 2);
    store.add_labels(&[row("d2", 9)], 500).await.unwrap();
    assert_eq!(store.prune_labels(200).await.unwrap(), 3);
    assert_eq!(store.labels_for(&d2, 0, 10).await.unwrap().len(), 1);
}

async fn samples_are_kept_once_and_the_review_queue_is_bounded(store: &dyn Store) {
    use edgefleet_protocol::sampling::PredictionSample;
    use fleet_server::samples::{Review, ReviewBounds, ReviewState, SampleFilter, StoredSample};
    let two = ReviewBounds {
        per_model: 2,
        per_device: 5,
    };
    let sample = |device: &str, id: &str, version: &str, at: i64, review: bool| StoredSample {
        device: device.into(),
        model: "churn".into(),
        version: version.into(),
        received_at: at,
        sample: PredictionSample {
            id: id.into(),
            at_unix: at as u64,
            label: Some("churn".into()),
            score: Some(0.55),
            value: None,
            features: Default::default(),
            review,
        },
        review: review.then_some(Review {
            state: ReviewState::Open,
            truth: None,
            by: None,
            at: None,
        }),
    };
    let first = vec![
        sample("d1", "a", "2.0.0", 100, false),
        sample("d1", "b", "2.0.0", 101, true),
        sample("d2", "a", "3.0.0", 102, true),
    ];
    let added = store.add_samples(&first, two).await.unwrap();
    assert_eq!(
        (added.stored, added.queued_for_review, added.review_overflow),
        (3, 2, 0)
    );
    // A redelivery stores nothing; a review item past the bound of two open is kept plain.
    let again = store.add_samples(&first, two).await.unwrap();
    assert_eq!(again.stored, 0);
    let more = store
        .add_samples(&[sample("d3", "c", "2.0.0", 103, true)], two)
        .await
        .unwrap();
    assert_eq!(
        (more.stored, more.queued_for_review, more.review_overflow),
        (1, 0, 1)
    );
    let all = |filter: SampleFilter| async move {
        store
            .samples(&SampleFilter {
                limit: 10,
                ..filter
            })
            .await
            .unwrap()
            .into_iter()
            .map(|s| format!("{}/{}", s.device, s.sample.id))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        all(SampleFilter::default()).await,
        ["d3/c", "d2/a", "d1/b", "d1/a"],
        "newest first"
    );
    let open = SampleFilter {
        review: Some(ReviewState::Open),
        ..SampleFilter::default()
    };
    assert_eq!(all(open.clone()).await, ["d2/a", "d1/b"]);
    let v2 = SampleFilter {
        version: Some("2.0.0".into()),
        device: Some("d1".into()),
        ..SampleFilter::default()
    };
    assert_eq!(all(v2).await, ["d1/b", "d1/a"]);
    // Closing: once only.
    let mut item = store.sample("d1", "churn", "b").await.unwrap().unwrap();
    item.review = Some(Review {
        state: ReviewState::Labelled,
        truth: Some(edgefleet_protocol::feedback::Truth::Label {
            label: "stay".into(),
        }),
        by: Some("alice".into()),
        at: Some(200),
    });
    assert!(store.close_review(&item).await.unwrap());
    assert!(!store.close_review(&item).await.unwrap(), "already closed");
    let plain = store.sample("d1", "churn", "a").await.unwrap().unwrap();
    assert!(
        !store.close_review(&plain).await.unwrap(),
        "never a review item"
    );
    assert_eq!(all(open).await, ["d2/a"]);
    assert_eq!(
        store.sample("d1", "churn", "b").await.unwrap().unwrap(),
        item
    );
    assert!(store.sample("d9", "churn", "b").await.unwrap().is_none());
    assert_eq!(store.prune_samples(102).await.unwrap(), 2);
    assert_eq!(all(SampleFilter::default()).await, ["d3/c", "d2/a"]);
    // One device cannot take the queue from the others: d2 has its one open item; d4 gets in.
    let one_each = ReviewBounds {
        per_model: 100,
        per_device: 1,
    };
    let late = store
        .add_samples(
            &[
                sample("d2", "x", "3.0.0", 300, true),
                sample("d4", "y", "3.0.0", 301, true),
                sample("d4", "z", "3.0.0", 302, true),
            ],
            one_each,
        )
        .await
        .unwrap();
    assert_eq!(
        (late.stored, late.queued_for_review, late.review_overflow),
        (3, 1, 2)
    );
    let open = SampleFilter {
        review: Some(ReviewState::Open),
        ..SampleFilter::default()
    };
    assert_eq!(all(open).await, ["d4/y", "d2/a"]);
}

async fn group_guard_policies_are_set_replaced_and_cleared(store: &dyn Store) {
    use fleet_server::guard_policies::GroupGuard;
    let guard = |group: &str, ratio: f64| GroupGuard {
        group: group.into(),
        model: "churn".into(),
        policy: serde_json::from_value(serde_json::json!({ "max_error_ratio": ratio })).unwrap(),
        set_by: "alice".into(),
        set_at: 5,
    };
    assert!(store.group_guards().await.unwrap().is_empty());
    store.set_group_guard(&guard("canary", 0.1)).await.unwrap();
    store.set_group_guard(&guard("b", 0.2)).await.unwrap();
    store.set_group_guard(&guard("canary", 0.01)).await.unwrap();
    assert_eq!(
        store.group_guards().await.unwrap(),
        [guard("b", 0.2), guard("canary", 0.01)]
    );
    assert!(store.clear_group_guard("canary", "churn").await.unwrap());
    assert!(!store.clear_group_guard("canary", "churn").await.unwrap());
    assert_eq!(store.group_guards().await.unwrap(), [guard("b", 0.2)]);
}

/// Runs one suite function on a fresh SQLite file and on a fresh PostgreSQL server.
fn rollup(group: &str, bucket: i64, batches: u64) -> NewRollup {
    NewRollup {
        group: group.into(),
        model: "churn".into(),
        version: "1.0.0".into(),
        span: MINUTE,
        bucket,
        figures: RollupFigures {
            batches,
            devices: 1,
            requests: batches * 10,
            ..Default::default()
        },
    }
}

async fn rollups_fold_each_batch_once_and_replace_whole(store: &dyn Store) {
    store
        .add_device(&new_device("d1", "pilot"), "h1", 100, 0, false)
        .await
        .unwrap();
    for (device, seq, at) in [("d1", 1, 100), ("d1", 2, 160), ("gone", 1, 170)] {
        store
            .record_metrics(&batch(device, seq, 0), at * 1_000_000)
            .await
            .unwrap();
    }
    let unrolled = store.unrolled_metrics(10).await.unwrap();
    assert_eq!(
        unrolled
            .iter()
            .map(|u| (
                u.device.as_str(),
                u.seq,
                u.group.as_str(),
                u.batch.is_some()
            ))
            .collect::<Vec<_>>(),
        [
            ("d1", 1, "pilot", true),
            ("d1", 2, "pilot", true),
            ("gone", 1, "", true)
        ],
        "earliest arrival first, with the device's group"
    );
    assert_eq!(store.unrolled_metrics(2).await.unwrap().len(), 2);
    assert_eq!(
        store.unrolled_keys(10).await.unwrap(),
        [
            ("d1".to_owned(), 1),
            ("d1".to_owned(), 2),
            ("gone".to_owned(), 1)
        ],
        "the same batches' keys, in the same order"
    );
    assert_eq!(store.unrolled_keys(1).await.unwrap().len(), 1);
    let mut by_key = store
        .batches_by_key(&[
            ("gone".to_owned(), 1),
            ("d1".to_owned(), 2),
            ("never".to_owned(), 9),
        ])
        .await
        .unwrap();
    by_key.sort_by(|a, b| (&a.device, a.seq).cmp(&(&b.device, b.seq)));
    assert_eq!(
        by_key,
        [unrolled[1].clone(), unrolled[2].clone()],
        "the batches asked for, as the queue gives them; a key never stored is left out"
    );
    assert!(store.batches_by_key(&[]).await.unwrap().is_empty());
    let first = [("d1".to_owned(), 1)];
    assert!(
        store
            .add_rollups(&first, &[rollup("pilot", 60, 1)])
            .await
            .unwrap()
    );
    // A second folding of the same batch (another server) changes nothing, not even the
    // batch folded with it.
    let again = [("d1".to_owned(), 2), ("d1".to_owned(), 1)];
    assert!(
        !store
            .add_rollups(&again, &[rollup("pilot", 120, 2)])
            .await
            .unwrap()
    );
    assert_eq!(store.unrolled_metrics(10).await.unwrap().len(), 2);
    let rest = [("d1".to_owned(), 2), ("gone".to_owned(), 1)];
    assert!(
        store
            .add_rollups(&rest, &[rollup("pilot", 120, 1), rollup("", 120, 1)])
            .await
            .unwrap()
    );
    assert!(store.unrolled_metrics(10).await.unwrap().is_empty());
    assert!(store.unrolled_keys(10).await.unwrap().is_empty());
    assert_eq!(
        store
            .batches_by_key(&[("d1".to_owned(), 2)])
            .await
            .unwrap()
            .len(),
        1,
        "a folded batch is still stored"
    );

    let rows = store.rollups(MINUTE, 0, 1_000).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.row.bucket, r.row.group.as_str()))
            .collect::<Vec<_>>(),
        [(60, "pilot"), (120, "pilot"), (120, "")]
    );
    assert_eq!(
        rows[0].row,
        rollup("pilot", 60, 1),
        "figures read back as written"
    );
    assert_eq!(store.rollups(MINUTE, 61, 1_000).await.unwrap().len(), 2);
    assert!(store.rollups(HOUR, 0, 1_000).await.unwrap().is_empty());
    let ids: Vec<i64> = rows[1..].iter().map(|r| r.id).collect();
    let mut hour = rollup("pilot", 0, 2);
    hour.span = HOUR;
    assert!(store.replace_rollups(&ids, &[hour.clone()]).await.unwrap());
    assert!(
        !store.replace_rollups(&ids, &[hour.clone()]).await.unwrap(),
        "rows merged already are not merged twice"
    );
    assert_eq!(store.rollups(MINUTE, 0, 1_000).await.unwrap().len(), 1);
    assert_eq!(store.rollups(HOUR, 0, 1_000).await.unwrap().len(), 1);
    assert_eq!(
        store.prune_rollups(60).await.unwrap(),
        1,
        "the hour row at 0"
    );
    assert_eq!(store.rollups(MINUTE, 0, 1_000).await.unwrap().len(), 1);
}

/// Reads of the fleet's figures keep the waiting batches they fetched: what they return is
/// always the queue as the store has it, and what left the queue is let go.
async fn waiting_batches_kept_between_reads_follow_the_queue(store: &dyn Store) {
    store
        .add_device(&new_device("d1", "pilot"), "h1", 100, 0, false)
        .await
        .unwrap();
    let now = 1_800_000_000;
    let record = |seq: u64| async move {
        let mut b = batch("d1", seq, 0);
        b.window_end_unix = (now - 600 + seq as i64 * 60) as u64;
        store
            .record_metrics(&b, (now - 600 + seq as i64 * 60) * 1_000_000)
            .await
            .unwrap();
    };
    let pending = PendingBatches::default();
    let as_the_queue = |read: &[std::sync::Arc<UnrolledBatch>]| {
        read.iter().map(|b| (**b).clone()).collect::<Vec<_>>()
    };
    for seq in 1..=3 {
        record(seq).await;
    }
    let read = pending.read(store, 100).await.unwrap();
    assert_eq!(
        as_the_queue(&read),
        store.unrolled_metrics(100).await.unwrap()
    );
    assert_eq!(pending.kept(), 3);
    record(4).await;
    let read = pending.read(store, 100).await.unwrap();
    assert_eq!(
        as_the_queue(&read),
        store.unrolled_metrics(100).await.unwrap(),
        "a batch that arrived since is read too"
    );
    assert_eq!(read.len(), 4);
    assert_eq!(
        as_the_queue(&pending.read(store, 2).await.unwrap()),
        store.unrolled_metrics(2).await.unwrap(),
        "earliest arrival first, up to the limit"
    );
    // A pass folds the first two: the read gives the other two, and keeps no more.
    record(5).await;
    let folded = store.unrolled_metrics(2).await.unwrap();
    let keys: Vec<(String, u64)> = folded.iter().map(|b| (b.device.clone(), b.seq)).collect();
    assert!(
        store
            .add_rollups(&keys, &rollups::fold(&folded))
            .await
            .unwrap()
    );
    let read = pending.read(store, 100).await.unwrap();
    assert_eq!(
        read.iter().map(|b| b.seq).collect::<Vec<_>>(),
        [3, 4, 5],
        "folded batches leave"
    );
    assert_eq!(pending.kept(), 3);
    // Figures read through kept batches equal those read afresh.
    let kept = rollups::window_rows(store, &pending, now - 3_600, now)
        .await
        .unwrap();
    let fresh = rollups::window_rows(store, &PendingBatches::default(), now - 3_600, now)
        .await
        .unwrap();
    let figures =
        |rows: &[NewRollup]| rollups::window_figures(rows, &Default::default(), |_| true, None, 60);
    assert_eq!(figures(&kept), figures(&fresh));
    assert_eq!(figures(&kept).batches, 5, "two folded, three waiting");
}

/// Two servers rolling up the same database at once fold every batch exactly once.
async fn concurrent_roll_up_passes_fold_every_batch_once(store: &dyn Store) {
    let now = 1_800_000_000;
    for seq in 0..1_200u64 {
        let mut b = batch(&format!("d{}", seq % 40), seq, 1);
        b.window_end_unix = (now - 3_000 + seq as i64) as u64;
        store
            .record_metrics(&b, (now - 2_000 + seq as i64) * 1_000_000)
            .await
            .unwrap();
    }
    let (mut one, mut two) = (RollupCursor::default(), RollupCursor::default());
    let (a, b) = tokio::join!(
        rollups::pass(store, &mut one, 24, now),
        rollups::pass(store, &mut two, 24, now)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    // What one pass left to the other, a third finishes.
    rollups::pass(store, &mut RollupCursor::default(), 24, now)
        .await
        .unwrap();
    let rows = rollups::window_rows(store, &PendingBatches::default(), now - 4_000, now)
        .await
        .unwrap();
    let figures = rollups::window_figures(&rows, &Default::default(), |_| true, None, 60);
    assert_eq!(
        figures.batches, 1_200,
        "folded {} and {}",
        a.folded, b.folded
    );
    assert_eq!(figures.dropped_batches, 1_200);
    assert!(store.unrolled_metrics(1).await.unwrap().is_empty());
}

/// Storing a device message moves its `last_seen` in the same write (the ingester no longer
/// touches the row again): forward only, and only for what was new.
async fn a_stored_device_message_moves_last_seen_forward(store: &dyn Store) {
    store
        .add_device(&new_device("d1", "g"), "t", 100, 0, false)
        .await
        .unwrap();
    let last_seen = || async { store.device(&dev("d1")).await.unwrap().unwrap().last_seen };
    assert_eq!(last_seen().await, None);
    assert!(store.record_event(&event("d1", 1, 30)).await.unwrap());
    assert_eq!(last_seen().await, Some(30), "a new event");
    assert!(!store.record_event(&event("d1", 1, 40)).await.unwrap());
    assert_eq!(
        last_seen().await,
        Some(30),
        "a redelivered event is not news"
    );
    assert!(
        store
            .record_metrics(&batch("d1", 1, 0), 50_000_000)
            .await
            .unwrap()
    );
    assert_eq!(last_seen().await, Some(50), "a new batch, at its arrival");
    assert!(
        !store
            .record_metrics(&batch("d1", 1, 0), 60_000_000)
            .await
            .unwrap()
    );
    assert_eq!(
        last_seen().await,
        Some(50),
        "a redelivered batch is not news"
    );
    assert!(store.record_event(&event("d1", 2, 20)).await.unwrap());
    assert_eq!(last_seen().await, Some(50), "never back");
    assert!(store.record_reported(&reported("d1", 1), 70).await.unwrap());
    assert_eq!(last_seen().await, Some(70), "a new reported state");
    // Another device's messages move only its own row.
    store
        .add_device(&new_device("d2", "g"), "t2", 100, 0, false)
        .await
        .unwrap();
    assert!(store.record_event(&event("d2", 1, 90)).await.unwrap());
    assert_eq!(last_seen().await, Some(70));
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::SqliteStore::open(&dir.path().join("s.db")).unwrap();
                    super::$name(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let server = super::Postgres::start();
                    let store = super::PostgresStore::connect(&server.url(), 4, None).await.unwrap();
                    super::$name(&store).await;
                }
            )*
        }
    };
}

on_both!(
    enrollment_tokens_work_once_and_expire,
    reported_state_only_moves_forward_and_events_are_stored_once,
    a_stored_device_message_moves_last_seen_forward,
    desired_revisions_grow_and_assignments_accumulate,
    devices_groups_and_tokens,
    the_device_list_pages_and_filters_in_the_database,
    releases_and_rollouts,
    leases_go_to_one_holder_until_they_expire,
    left_behind_leases_are_found_by_prefix,
    tuf_publications_apply_whole_and_only_from_the_current_timestamp,
    telemetry_is_stored_once_read_in_arrival_order_and_pruned_by_age,
    the_audit_log_chains_filters_and_prunes,
    alerts_merge_by_fingerprint_and_list_by_state_and_due_work,
    labels_wait_per_device_in_order_until_acknowledged,
    samples_are_kept_once_and_the_review_queue_is_bounded,
    an_alert_written_by_two_keeps_both_changes,
    group_guard_policies_are_set_replaced_and_cleared,
    rollups_fold_each_batch_once_and_replace_whole,
    waiting_batches_kept_between_reads_follow_the_queue,
    concurrent_roll_up_passes_fold_every_batch_once,
    writes_handed_over_together_each_hear_their_own_outcome,
);

/// Two servers on one database: each reads what the other saved of a rollout's devices, whose
/// rows a save writes only where they changed, and a refused save leaves them as they were.
async fn rollout_devices_saved_by_one_server_are_read_by_another(a: &dyn Store, b: &dyn Store) {
    let spec = rollout_spec(vec![50.0, 100.0]);
    let devices = (0..4)
        .map(|i| (format!("d{i}"), Some("1.0.0".to_string())))
        .collect();
    let mut on_a = Rollout::new("r1".into(), spec, devices, "alice".into(), 100).unwrap();
    a.save_rollout(&mut on_a).await.unwrap();
    let mut on_b = b.rollout("r1").await.unwrap().unwrap();
    assert_eq!(on_b, on_a);

    on_a.devices[1].detail = Some("changed on a".into());
    a.save_rollout(&mut on_a).await.unwrap();
    assert_eq!(b.rollout("r1").await.unwrap().unwrap(), on_a);
    let stale = on_b.clone();
    on_b = b.active_rollouts().await.unwrap().remove(0);
    assert_eq!(on_b, on_a);

    on_b.devices[3].detail = Some("changed on b".into());
    b.save_rollout(&mut on_b).await.unwrap();
    let read = a.rollout("r1").await.unwrap().unwrap();
    assert_eq!(read.devices[1].detail.as_deref(), Some("changed on a"));
    assert_eq!(read.devices[3].detail.as_deref(), Some("changed on b"));
    assert_eq!(read, on_b);

    // The status view reads a page of device rows; it equals paging the whole rollout.
    use fleet_server::rollout::{DevicePage, RolloutView};
    for page in [
        DevicePage::default(),
        DevicePage::NONE,
        DevicePage {
            from: 1,
            limit: 2,
            problems_only: false,
        },
        DevicePage {
            from: 3,
            limit: 2,
            problems_only: false,
        },
        DevicePage {
            from: 0,
            limit: 1,
            problems_only: true,
        },
        DevicePage {
            from: 1,
            limit: 5,
            problems_only: true,
        },
    ] {
        assert_eq!(
            a.rollout_page("r1", page).await.unwrap().unwrap(),
            RolloutView::paged(&on_b, page),
            "{page:?}"
        );
    }
    assert_eq!(
        b.rollout_page(
            "r1",
            DevicePage {
                from: 0,
                limit: 1,
                problems_only: true
            }
        )
        .await
        .unwrap()
        .unwrap()
        .devices_next,
        Some(1)
    );
    assert!(
        a.rollout_page("r9", DevicePage::default())
            .await
            .unwrap()
            .is_none()
    );

    // A's copy is two revisions behind: refused, and the rows stay as b saved them.
    on_a.devices[0].detail = Some("lost".into());
    on_a.devices[3].detail = None;
    assert!(matches!(
        a.save_rollout(&mut on_a).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(a.rollout("r1").await.unwrap().unwrap(), on_b);
    let mut old = stale;
    assert!(b.save_rollout(&mut old).await.is_err());
    assert_eq!(b.active_rollouts().await.unwrap(), vec![on_b.clone()]);

    // Finished, then read by both (neither keeps it in memory any more).
    on_b.command(fleet_server::rollout::Command::Abort, 300, "bob")
        .unwrap();
    b.save_rollout(&mut on_b).await.unwrap();
    assert_eq!(a.rollout("r1").await.unwrap().unwrap(), on_b);
    assert_eq!(b.rollout("r1").await.unwrap().unwrap(), on_b);
    assert!(a.active_rollouts().await.unwrap().is_empty());
}

/// A rollout saved before its devices had rows (its body whole, no summary) reads as it was,
/// lists with its summary worked out, and its next save moves its devices into rows.
#[tokio::test]
async fn a_rollout_saved_whole_before_the_upgrade_reads_and_moves_to_rows_on_its_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let spec = rollout_spec(vec![100.0]);
    let devices = vec![("d1".to_string(), None), ("d2".to_string(), None)];
    let mut r = Rollout::new("r1".into(), spec, devices, "alice".into(), 100).unwrap();
    SqliteStore::open(&path)
        .unwrap()
        .save_rollout(&mut r)
        .await
        .unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute(
        "UPDATE rollouts SET body = ?1, summary = NULL",
        rusqlite::params![serde_json::to_string(&r).unwrap()],
    )
    .unwrap();
    db.execute("DELETE FROM rollout_devices", []).unwrap();

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.rollout("r1").await.unwrap().unwrap(), r);
    let summary = store.rollout_summaries(false, 5).await.unwrap();
    assert_eq!(summary[0].view.devices_total, 2);
    assert!(summary[0].view.devices.is_empty());
    let page = fleet_server::rollout::DevicePage {
        from: 1,
        limit: 1,
        problems_only: false,
    };
    assert_eq!(
        store.rollout_page("r1", page).await.unwrap().unwrap(),
        fleet_server::rollout::RolloutView::paged(&r, page)
    );
    r.devices[0].detail = Some("moved".into());
    store.save_rollout(&mut r).await.unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM rollout_devices", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 2);
    let body: String = db
        .query_row("SELECT body FROM rollouts", [], |row| row.get(0))
        .unwrap();
    assert!(!body.contains("\"d1\""), "{body}");
    assert_eq!(
        SqliteStore::open(&path)
            .unwrap()
            .rollout("r1")
            .await
            .unwrap()
            .unwrap(),
        r
    );
}

/// A database from before the queue of batches waiting to be folded (schema 16, a `rolled` mark
/// on each batch) upgrades with exactly its unmarked batches queued, in arrival order; they fold
/// and prune as new ones do, and a batch marked folded before the upgrade is never folded again.
#[tokio::test]
async fn batches_not_folded_before_the_upgrade_are_queued_once_and_the_folded_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        for (seq, at) in [(1, 100), (2, 160), (3, 130)] {
            store
                .record_metrics(&batch("d1", seq, 0), at * 1_000_000)
                .await
                .unwrap();
        }
    }
    // Back to schema 16 as it stored batches: seq 1 folded, 2 and 3 waiting.
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "ALTER TABLE metrics_batches ADD COLUMN rolled BIGINT NOT NULL DEFAULT 0;
         CREATE INDEX metrics_to_roll_up ON metrics_batches (received) WHERE rolled = 0;
         UPDATE metrics_batches SET rolled = 1 WHERE seq = 1;
         DROP TABLE metrics_unrolled;
         DROP TABLE device_tally;
         DELETE FROM schema_migrations WHERE version >= 17;",
    )
    .unwrap();
    drop(db);

    let store = SqliteStore::open(&path).unwrap();
    let waiting = store.unrolled_metrics(10).await.unwrap();
    assert_eq!(
        waiting.iter().map(|u| u.seq).collect::<Vec<_>>(),
        [3, 2],
        "the batches not folded, earliest arrival first"
    );
    assert_eq!(
        store.prune_metrics(1_000).await.unwrap(),
        1,
        "only the batch folded before the upgrade may go"
    );
    let keys: Vec<(String, u64)> = waiting.iter().map(|u| (u.device.clone(), u.seq)).collect();
    assert!(store.add_rollups(&keys, &[]).await.unwrap());
    assert!(store.unrolled_metrics(10).await.unwrap().is_empty());
    assert!(
        !store.add_rollups(&keys, &[]).await.unwrap(),
        "a batch folded once is not folded again"
    );
    assert_eq!(store.prune_metrics(1_000).await.unwrap(), 2);
}

/// A database from before the group tally (schema 17) upgrades with each group's devices
/// counted, and the totals of the device list follow later changes from there.
#[tokio::test]
async fn devices_registered_before_the_group_tally_are_counted_by_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        for (id, group) in [("d1", "a"), ("d2", "a"), ("d3", "b")] {
            store
                .add_device(&new_device(id, group), "t", 100, 0, false)
                .await
                .unwrap();
        }
    }
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "DROP TABLE device_tally;
         DELETE FROM schema_migrations WHERE version = 18;",
    )
    .unwrap();
    drop(db);

    let store = SqliteStore::open(&path).unwrap();
    store
        .add_device(&new_device("d4", "b"), "t", 100, 0, false)
        .await
        .unwrap();
    let total = |group: Option<&str>| {
        let store = &store;
        let query = DevicePageQuery {
            filter: DeviceFilter {
                group: group.map(str::to_owned),
                tag: None,
            },
            limit: 10,
            ..Default::default()
        };
        async move { store.device_page(&query).await.unwrap().total }
    };
    assert_eq!(
        (
            total(None).await,
            total(Some("a")).await,
            total(Some("b")).await
        ),
        (4, 2, 2)
    );
}

/// Audit entries appended at once by two servers on one database (200 requests, each audited)
/// form one chain: every entry once, in one order, each caller handed the entry stored, and the
/// chain verifies. On PostgreSQL appends are grouped per transaction under the chain's lock.
async fn audit_entries_appended_at_once_by_two_servers_form_one_chain(
    a: &dyn Store,
    b: &dyn Store,
) {
    let records: Vec<_> = (0..200)
        .map(|n| audit_record(&format!("actor-{n}"), 1_000 + n, "/api/v1/enroll"))
        .collect();
    let appended = futures::future::join_all(records.iter().enumerate().map(|(n, record)| {
        let store = if n % 2 == 0 { a } else { b };
        store.append_audit(record.clone())
    }))
    .await;
    let mut appended: Vec<AuditEntry> = appended.into_iter().map(Result::unwrap).collect();
    for (entry, record) in appended.iter().zip(&records) {
        assert_eq!(&entry.record, record, "each caller hears its own entry");
    }
    appended.sort_by_key(|e| e.seq);
    assert_eq!(
        appended.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    let chain = a.audit_chain().await.unwrap();
    assert_eq!(chain, appended, "stored as handed back");
    let check = audit::verify(&chain);
    assert_eq!(check.broken, None);
    assert_eq!(b.audit_chain().await.unwrap(), chain);
}

/// Whoever edits the database by hand leaves a mark: an entry changed in place is found, and so
/// is one re-hashed to hide it (the next entry no longer follows).
#[tokio::test]
async fn an_audit_entry_edited_in_the_database_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = SqliteStore::open(&path).unwrap();
    for i in 0..4 {
        store
            .append_audit(audit_record("alice", 100 + i, "/api/v1/tokens"))
            .await
            .unwrap();
    }
    let db = rusqlite::Connection::open(&path).unwrap();
    let edit = |sql: &str| db.execute(sql, []).unwrap();
    edit("UPDATE audit SET body = replace(body, '\"status\":200', '\"status\":403') WHERE seq = 2");
    let broken = audit::verify(&store.audit_chain().await.unwrap())
        .broken
        .expect("the edit is found");
    assert_eq!(broken.seq, 2, "{broken:?}");
    assert!(broken.reason.contains("edited"), "{broken:?}");
    // The same edit with the entry's hash recomputed, as someone covering their tracks would.
    let mut entry: AuditEntry = serde_json::from_str(
        &db.query_row("SELECT body FROM audit WHERE seq = 2", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap(),
    )
    .unwrap();
    let resealed = audit::seal(Some((1, entry.prev_hash.as_str())), entry.record.clone());
    entry.hash = resealed.hash;
    db.execute(
        "UPDATE audit SET body = ?1, hash = ?2 WHERE seq = 2",
        rusqlite::params![serde_json::to_string(&entry).unwrap(), entry.hash],
    )
    .unwrap();
    let broken = audit::verify(&store.audit_chain().await.unwrap())
        .broken
        .expect("the next link is found broken");
    assert_eq!(broken.seq, 3, "{broken:?}");
    // A body that no longer parses is a finding, not an error: listed as unreadable, named by
    // the walk, and the rest of the log still reads.
    edit("UPDATE audit SET body = 'garbage' WHERE seq = 4");
    let listed = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!((listed[0].seq, listed[0].hash.as_str()), (4, ""));
    assert_eq!(listed[1].record.actor, "alice");
    let chain = store.audit_chain().await.unwrap();
    let only_the_last = audit::verify(&chain[2..])
        .broken
        .expect("the garbled row is named");
    assert_eq!(only_the_last.seq, 4, "{only_the_last:?}");
    assert!(
        only_the_last.reason.contains("cannot be read"),
        "{only_the_last:?}"
    );
}

#[tokio::test]
async fn sqlite_keeps_everything_across_reopening_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .add_device(&new_device("d1", "g1"), "t", 100, 0, false)
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.device_counts(0).await.unwrap().0, 1);
}

#[tokio::test]
async fn postgres_replicas_migrate_once_and_share_state() {
    let server = Postgres::start();
    // Two servers starting at once against an empty database: one migrates, the other waits.
    let url = server.url();
    let (a, b) = tokio::join!(
        PostgresStore::connect(&url, 2, None),
        PostgresStore::connect(&url, 2, None)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    a.add_device(&new_device("d1", "g"), "t", 100, 0, false)
        .await
        .unwrap();
    assert!(matches!(
        b.add_device(&new_device("d1", "g"), "t", 100, 0, false)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let event = event("d1", 1, 1);
    // The same device message handled by both replicas is stored once.
    let (first, second) = tokio::join!(a.record_event(&event), b.record_event(&event));
    assert_eq!(
        u8::from(first.unwrap()) + u8::from(second.unwrap()),
        1,
        "exactly one replica stores it"
    );
    // Both race for the rollout-engine lease at the same instant: exactly one gets it.
    let (first, second) = tokio::join!(
        a.lease("rollout-engine", "a", 1_000, 5_000),
        b.lease("rollout-engine", "b", 1_000, 5_000)
    );
    assert_eq!(
        u8::from(first.unwrap()) + u8::from(second.unwrap()),
        1,
        "exactly one replica drives the rollouts"
    );
    drop((a, b));
    let reopened = PostgresStore::connect(&url, 1, None).await.unwrap();
    assert_eq!(reopened.device_counts(0).await.unwrap().0, 1);
}

#[tokio::test]
async fn a_wrong_postgres_url_or_an_unreachable_server_is_a_clear_error() {
    let port = free_port();
    let err = PostgresStore::connect(
        &format!("postgres://edgefleet@127.0.0.1:{port}/postgres?sslmode=disable"),
        1,
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("postgres"), "{err}");
    let err = PostgresStore::connect("postgres://a:b@host:notaport/db", 1, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("database.url does not parse"), "{err}");
    assert!(!err.contains("a:b"), "the password must not appear: {err}");
}

/// Each test run on two stores of one database, as two servers share it: two SQLite stores on
/// one file, two PostgreSQL stores (pools of two) on one server.
macro_rules! on_both_with_two_servers {
    ($($name:ident),* $(,)?) => {
        mod two_servers_on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("s.db");
                    let a = super::SqliteStore::open(&path).unwrap();
                    let b = super::SqliteStore::open(&path).unwrap();
                    super::$name(&a, &b).await;
                }
            )*
        }
        mod two_servers_on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let server = super::Postgres::start();
                    let a = super::PostgresStore::connect(&server.url(), 2, None).await.unwrap();
                    let b = super::PostgresStore::connect(&server.url(), 2, None).await.unwrap();
                    super::$name(&a, &b).await;
                }
            )*
        }
    };
}

on_both_with_two_servers!(
    rollout_devices_saved_by_one_server_are_read_by_another,
    audit_entries_appended_at_once_by_two_servers_form_one_chain,
);
