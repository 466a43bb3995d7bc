//! A store slower than the fleet costs the server nothing but time. The server's broker
//! connection sends its pings and acknowledgements only while it is polled; it used to wait
//! for the store to take each device message, so a stalled store stopped its pings too and the
//! broker dropped the server (at 100,000 devices on PostgreSQL: a reconnection a minute, each
//! one delivering again what was stored but not yet acknowledged; docs/BENCHMARKS.md). Here the
//! store is stalled outright: a transaction holds the events table locked against writes for longer than the
//! broker waits for a ping (1.5 × the server's keep-alive of 1 s), and the devices table against
//! reads too, which a `/metrics` scrape must not wait for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::fleet::{MqttDevice, downloading_event, eventually};
use edgefleet_e2e::one_fleet_at_a_time;
use edgefleet_e2e::postgres::Postgres;

const DEVICE: &str = "busy-1";
/// More than the server used to take before its connection waited (64 queued, 64 being stored).
const EVENTS: u16 = 300;

fn event(n: u16) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..2].copy_from_slice(&n.to_be_bytes());
    downloading_event(DEVICE, id, u64::from(n))
}

#[test]
fn a_stalled_store_keeps_the_broker_connection_and_loses_nothing() {
    let _serial = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let database = Postgres::start();
    let fleet = demo::set_up(
        tmp.path(),
        &DemoOptions {
            mosquitto: true,
            // Lands in the server's [mqtt] section; the database follows it.
            server_toml: format!(
                "keep_alive_seconds = 1\n[database]\nurl = \"{}\"\n",
                database.url()
            ),
            ..DemoOptions::embedded(0)
        },
    );
    let credential = fleet.operator.enroll(&fleet.server, DEVICE, "busy");
    fleet.broker_learns_devices();
    let device = MqttDevice::connect(fleet.mqtt_port(), DEVICE, DEVICE, &credential).unwrap();
    let topic = format!("edgefleet/v1/devices/{DEVICE}/events");
    let stored = || {
        fleet.server.metric_sum(
            "edgefleet_server_mqtt_messages_total{channel=\"events\",outcome=\"stored\"}",
        )
    };
    device.publish(&topic, event(0), false);
    eventually("the first event stored", Duration::from_secs(15), || {
        (stored() == 1.0).then_some(())
    });

    let mut lock = database.session();
    let mut holder = lock.0.stdin.take().unwrap();
    // The devices table against reads as well: the fleet's figures for /metrics count them.
    writeln!(
        holder,
        "BEGIN; LOCK TABLE events IN EXCLUSIVE MODE; LOCK TABLE devices IN ACCESS EXCLUSIVE MODE;"
    )
    .unwrap();
    eventually(
        "the events and devices tables locked",
        Duration::from_secs(10),
        || {
            (database.scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname IN ('events', 'devices') AND l.granted \
             AND l.mode IN ('ExclusiveLock', 'AccessExclusiveLock')",
            ) == 2)
                .then_some(())
        },
    );
    for n in 1..=EVENTS {
        device.publish(&topic, event(n), false);
    }
    // Four times what the broker waits for a packet from the server.
    std::thread::sleep(Duration::from_secs(6));
    // A scrape only encodes what the background refresh (every second here) left: it answers
    // while that refresh waits for the locked table.
    let scraped = Instant::now();
    assert_eq!(stored(), 1.0, "the store was not stalled");
    assert!(
        scraped.elapsed() < Duration::from_secs(3),
        "a /metrics scrape waited {:?} for the stalled store",
        scraped.elapsed()
    );
    writeln!(holder, "COMMIT;").unwrap();
    drop(holder);

    eventually("every event stored", Duration::from_secs(60), || {
        (stored() == f64::from(EVENTS) + 1.0).then_some(())
    });
    let metrics = fleet.server.metrics_text();
    assert!(
        metrics.contains("edgefleet_server_mqtt_connections_total 1\n"),
        "the server lost its broker connection while the store stalled:\n{metrics}"
    );
    assert_eq!(
        fleet.server.metric_sum(
            "edgefleet_server_mqtt_messages_total{channel=\"events\",outcome=\"duplicate\"}"
        ),
        0.0,
        "messages were delivered twice:\n{metrics}"
    );
    assert!(
        fleet
            .server
            .metric_sum("edgefleet_server_ingest_seconds_sum")
            >= 5.0,
        "the stalled stores were timed:\n{metrics}"
    );
}
