use edgefleet_protocol::message::{Event, EventKind, SCHEMA_VERSION};
use edgefleet_protocol::{DeviceId, MessageId};

use std::collections::BTreeSet;

use super::*;
use crate::store::{Device, StoredEvent};

fn device(id: &str, last_seen: i64) -> Device {
    Device {
        id: DeviceId::new(id).unwrap(),
        group: "g".into(),
        tags: Default::default(),
        created_at: 0,
        enrolled_at: Some(0),
        last_seen: Some(last_seen),
        agent_version: Some("0.1.0".into()),
        reported: None,
        desired: None,
        desired_revision: 0,
    }
}

fn event(device: &str, seq: u64) -> StoredEvent {
    StoredEvent::received(
        Event {
            schema: SCHEMA_VERSION,
            id: MessageId::from_random([seq as u8; 16]),
            device: DeviceId::new(device).unwrap(),
            seq,
            at_unix: seq,
            kind: EventKind::Committed,
            model: "churn".parse().unwrap(),
            target: None,
            rollout: None,
            detail: None,
            evidence: Vec::new(),
        },
        seq as i64,
    )
}

/// The device heard from at `at` (Unix seconds): a metrics batch, which moves its `last_seen` and
/// adds no event.
async fn heard_from(store: &dyn Store, device: &str, seq: u64, at: i64) {
    let batch = crate::telemetry::tests::batch_without_models(device, seq);
    assert!(store.record_metrics(&batch, at * 1_000_000).await.unwrap());
}

fn kinds(changes: &[Change]) -> Vec<&'static str> {
    changes.iter().map(|c| c.kind).collect()
}

/// Newest first, as the store lists them.
fn newest_first(device: &str, seqs: std::ops::Range<u64>) -> Vec<StoredEvent> {
    seqs.rev().map(|s| event(device, s)).collect()
}

#[test]
fn only_what_changed_is_told_and_last_seen_alone_once_a_minute() {
    let mut picture = Picture::default();
    let now = 6_000;
    let first = picture.update(
        newest_first("d1", 0..2),
        &[],
        &[device("d1", 6_000), device("d2", 6_000)],
        now,
    );
    assert_eq!(kinds(&first), ["event", "event", "device", "device"]);
    assert!(first[0].data.contains("\"seq\":0"), "oldest event first");
    // The same again, and d1 heard from 30 s later within the same minute: nothing.
    assert!(
        picture
            .update(
                newest_first("d1", 0..2),
                &[],
                &[device("d1", 6_030), device("d2", 6_000)],
                now + 30
            )
            .is_empty()
    );
    // The next minute: d1 told once, with its exact last_seen.
    let moved = picture.update(
        vec![],
        &[],
        &[device("d1", 6_061), device("d2", 6_000)],
        now + 61,
    );
    assert_eq!(kinds(&moved), ["device"]);
    assert!(
        moved[0].data.contains("\"last_seen\":6061"),
        "{}",
        moved[0].data
    );
    // d2 goes quiet past ONLINE_SECONDS: told it is offline.
    let offline = picture.update(
        vec![],
        &[],
        &[device("d1", 6_061), device("d2", 6_000)],
        now + ONLINE_SECONDS + 1,
    );
    assert_eq!(kinds(&offline), ["device"]);
    assert!(offline[0].data.contains("\"online\":false"));
    // A removed device leaves the picture a new connection is shown.
    picture.update(vec![], &[], &[device("d1", 6_061)], now + 200);
    let whole = picture.whole();
    assert_eq!(kinds(&whole), ["device", "event", "event"]);
}

#[test]
fn the_picture_keeps_only_the_latest_events() {
    let mut picture = Picture::default();
    for start in (0..1_000).step_by(100) {
        let told = picture.update(newest_first("d1", start..start + 100), &[], &[], 0);
        assert_eq!(told.len(), 100, "each event once");
    }
    let whole = picture.whole();
    assert_eq!(whole.len(), EVENTS_SHOWN as usize);
    assert!(whole[0].data.contains("\"seq\":800"), "{}", whole[0].data);
}

#[tokio::test]
async fn connections_share_one_poller_and_one_that_falls_behind_is_told_it() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
    for id in ["d1", "d2"] {
        store
            .add_device(
                &crate::store::NewDevice {
                    id: DeviceId::new(id).unwrap(),
                    group: "g".into(),
                    tags: Default::default(),
                },
                &format!("token-{id}"),
                100,
                0,
                false,
            )
            .await
            .unwrap();
    }
    let hub = Hub::default();
    let follow = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let mut first = hub.subscribe(&*store, 1_000, follow(&["d1", "d2"])).await;
    assert_eq!(kinds(&first.whole), ["device", "device"]);
    let second = hub.subscribe(&*store, 1_000, follow(&["d2"])).await;
    assert_eq!(kinds(&second.whole), ["device"], "only what it follows");
    assert!(second.whole[0].data.contains("\"d2\""));
    // What a device does reaches every connection following it through one read.
    heard_from(&*store, "d1", 1, 990).await;
    {
        let mut picture = hub.picture.lock().await;
        hub.refresh(&mut picture, &*store, 1_000).await;
    }
    let told = first.changes.recv().await.unwrap();
    assert_eq!(kinds(&told), ["device"]);
    assert!(told[0].data.contains("\"d1\""));
    assert!(
        second.following.filter(&told).is_empty(),
        "d1 is not followed by the second"
    );
    // A connection that stops reading holds at most BACKLOG ticks, then hears it lagged.
    let Subscription {
        changes: mut slow,
        following: slow_following,
        ..
    } = second;
    for minute in 1..=(BACKLOG as i64 + 4) {
        heard_from(&*store, "d2", minute as u64, 1_000 + minute * 60).await;
        let mut picture = hub.picture.lock().await;
        hub.refresh(&mut picture, &*store, 1_000 + minute * 60)
            .await;
    }
    assert!(matches!(
        slow.recv().await,
        Err(broadcast::error::RecvError::Lagged(_))
    ));
    assert_eq!(hub.whole(&slow_following).await.len(), 1);
    // Closed connections stop being followed: the poller reads only what open ones follow.
    drop((first, slow_following));
    assert!(hub.followed_devices().is_empty());
    let quiet = hub.subscribe(&*store, 5_000, BTreeSet::new()).await;
    assert!(quiet.whole.is_empty(), "{:?}", quiet.whole);
    {
        let mut picture = hub.picture.lock().await;
        hub.refresh(&mut picture, &*store, 5_000).await;
        assert!(
            picture.devices.is_empty(),
            "devices nobody follows are forgotten"
        );
    }
}
