//! Device messages' writes grouped per transaction (PostgreSQL: `store/postgres/grouped.rs`;
//! SQLite: its one writer's group commit): writes handed over together each hear their own
//! outcome, one bad write fails alone, and the ingester's view of a PostgreSQL store leaves
//! connections for everyone else.

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::time::Duration;

use futures::future::join_all;

use super::*;

type Outcome<'a> = Pin<Box<dyn Future<Output = (String, bool)> + 'a>>;

/// Every device message's write for `device`, handed over at once: each is answered for itself.
fn writes_of<'a>(store: &'a dyn Store, device: &'a str) -> Vec<Outcome<'a>> {
    let named = move |what: &str| format!("{device} {what}");
    vec![
        Box::pin(async move {
            let stored = store.record_metrics(&batch(device, 1, 1), 1_000_000).await;
            (named("batch 1"), stored.unwrap())
        }),
        Box::pin(async move {
            let stored = store.record_metrics(&batch(device, 1, 2), 2_000_000).await;
            (named("batch 1 again"), stored.unwrap())
        }),
        Box::pin(async move {
            let stored = store.record_event(&event(device, 1, 10)).await;
            (named("event 1"), stored.unwrap())
        }),
        Box::pin(async move {
            let stored = store.record_event(&event(device, 1, 11)).await;
            (named("event 1 again"), stored.unwrap())
        }),
        Box::pin(async move {
            let stored = store.record_reported(&reported(device, 1), 20).await;
            (named("report 1"), stored.unwrap())
        }),
        Box::pin(async move {
            let stored = store.record_reported(&reported(device, 3), 21).await;
            (named("report 3"), stored.unwrap())
        }),
        Box::pin(async move {
            let stored = store.record_reported(&reported(device, 2), 22).await;
            (named("report 2, after 3"), stored.unwrap())
        }),
        Box::pin(async move {
            let stored = store.record_metrics(&batch(device, 2, 3), 50_000_000).await;
            (named("batch 2, the latest arrival"), stored.unwrap())
        }),
    ]
}

pub(super) async fn writes_handed_over_together_each_hear_their_own_outcome(store: &dyn Store) {
    let devices: Vec<String> = (0..25).map(|n| format!("g{n}")).collect();
    for device in &devices {
        store
            .add_device(
                &new_device(device, "g"),
                &format!("t-{device}"),
                100,
                0,
                false,
            )
            .await
            .unwrap();
    }
    // Nested, each list under 30: `join_all` then polls in order, so the writes are handed over
    // in the order written (a longer list is polled in no set order).
    let outcomes: Vec<_> = join_all(
        devices
            .iter()
            .map(|device| join_all(writes_of(store, device))),
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    let expected = [true, false, true, false, true, true, false, true];
    for (n, (what, stored)) in outcomes.iter().enumerate() {
        assert_eq!(*stored, expected[n % expected.len()], "{what}");
    }
    for device in &devices {
        let id = dev(device);
        let stored = store.device(&id).await.unwrap().unwrap();
        assert_eq!(stored.reported, Some(reported(device, 3)), "{device}");
        assert_eq!(stored.last_seen, Some(50), "{device}");
        let batches = store.metrics(Some(&id), 0).await.unwrap();
        assert_eq!(batches.len(), 2, "{device}");
        assert_eq!(
            batches[0].batch.dropped_batches, 1,
            "{device}: the first copy is kept"
        );
        assert_eq!(
            store.events(Some(&id), 10).await.unwrap().len(),
            1,
            "{device}"
        );
    }
}

/// A write PostgreSQL refuses (a trigger here; in life a deadlock or a constraint) fails alone:
/// the others handed over with it are stored.
#[tokio::test]
async fn postgres_a_write_that_fails_fails_alone() {
    let server = Postgres::start();
    let store = PostgresStore::connect(&server.url(), 4, None)
        .await
        .unwrap();
    let mut session = server.session();
    let mut sql = session.0.stdin.take().unwrap();
    writeln!(
        sql,
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.device = 'poison' THEN RAISE EXCEPTION 'poisoned batch'; END IF; RETURN NEW; \
         END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT ON metrics_batches \
         FOR EACH ROW EXECUTE FUNCTION refuse_poison();"
    )
    .unwrap();
    drop(sql);
    session.0.wait().unwrap();
    assert_eq!(
        server.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = 'refuse_poison'"),
        1
    );
    let devices: Vec<String> = (0..30)
        .map(|n| {
            if n == 17 {
                "poison".into()
            } else {
                format!("p{n}")
            }
        })
        .collect();
    let outcomes = join_all(devices.iter().map(|device| {
        let store = &store;
        async move { store.record_metrics(&batch(device, 1, 1), 1_000_000).await }
    }))
    .await;
    for (device, outcome) in devices.iter().zip(&outcomes) {
        match outcome {
            Err(StoreError::Backend(why)) if device == "poison" => {
                assert!(why.contains("poisoned batch"), "{why}")
            }
            Ok(true) if device != "poison" => {}
            other => panic!("{device}: {other:?}"),
        }
    }
    assert_eq!(server.scalar("SELECT count(*) FROM metrics_batches"), 29);
}

/// With the tables device messages go to locked, the ingester's writes and reads wait, and
/// still a connection is free for operators and the rollout engine.
#[tokio::test]
async fn postgres_the_ingester_leaves_half_the_pool_to_everyone_else() {
    let server = Postgres::start();
    let store = PostgresStore::connect(&server.url(), 4, None)
        .await
        .unwrap();
    let ingester = store
        .for_ingester()
        .expect("PostgreSQL gives the ingester its own view");
    ingester
        .add_device(&new_device("d1", "g"), "t", 100, 0, false)
        .await
        .unwrap();
    let mut lock = server.session();
    let mut holder = lock.0.stdin.take().unwrap();
    writeln!(
        holder,
        "BEGIN; LOCK TABLE devices, events IN ACCESS EXCLUSIVE MODE;"
    )
    .unwrap();
    let locked = || {
        server.scalar(
            "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted \
             AND relation IN ('devices'::regclass, 'events'::regclass)",
        )
    };
    while locked() < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting: Vec<_> = (0..10)
        .map(|n| {
            let ingester = ingester.clone();
            tokio::spawn(async move {
                if n % 2 == 0 {
                    ingester.device_public_key(&dev("d1")).await.map(|_| ())
                } else {
                    ingester.record_event(&event("d1", n, 10)).await.map(|_| ())
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        waiting.iter().all(|task| !task.is_finished()),
        "the tables were not locked"
    );
    tokio::time::timeout(Duration::from_secs(5), store.ping())
        .await
        .expect("no connection left beside the ingester's")
        .unwrap();
    writeln!(holder, "COMMIT;").unwrap();
    drop(holder);
    for task in waiting {
        task.await.unwrap().unwrap();
    }
}

/// A group whose connection is lost (PostgreSQL terminates it here while it waits on a lock;
/// in life a restart or a dropped link) fails as a whole, at once: storing its writes one at a
/// time would wait on the same lock again, or with the database gone fail as many times over.
/// The messages stay unacknowledged for the broker to deliver again, and the next write finds
/// a working connection.
#[tokio::test]
async fn postgres_a_group_whose_connection_is_lost_fails_as_a_whole() {
    let server = Postgres::start();
    let store = PostgresStore::connect(&server.url(), 4, None)
        .await
        .unwrap();
    let mut lock = server.session();
    let mut holder = lock.0.stdin.take().unwrap();
    writeln!(holder, "BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE;").unwrap();
    while server.scalar(
        "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted \
         AND relation = 'events'::regclass",
    ) < 1
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting_on_the_lock =
        "FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND backend_type = 'client backend'";
    // Handed over in one poll, the ten writes form one group (see the first test).
    let events: Vec<_> = (0..10).map(|n| event("lost", n, 10)).collect();
    let writes = join_all(events.iter().map(|event| store.record_event(event)));
    let terminate = async {
        while server.scalar(&format!("SELECT count(*) {waiting_on_the_lock}")) < 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.scalar(&format!(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) {waiting_on_the_lock}) t"
        ))
    };
    let (outcomes, terminated) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(writes, terminate)
    })
    .await
    .expect("the group's writes were tried again one at a time, waiting on the same lock");
    assert_eq!(terminated, 1, "one connection waited: the group's");
    for outcome in &outcomes {
        match outcome {
            Err(StoreError::Backend(why)) => assert!(why.contains("terminating"), "{why}"),
            other => panic!("a write of the lost group: {other:?}"),
        }
    }
    writeln!(holder, "COMMIT;").unwrap();
    drop(holder);
    lock.0.wait().unwrap();
    assert_eq!(server.scalar("SELECT count(*) FROM events"), 0);
    assert!(store.record_event(&event("lost", 1, 10)).await.unwrap());
}
