use super::*;

use edgefleet_protocol::message::{Desired, DesiredModel};

fn release(version: &str, sequence: u64) -> Release {
    Release {
        model: ModelName::new("churn").unwrap_or_else(|e| panic!("{e}")),
        version: semver::Version::parse(version).unwrap_or_else(|e| panic!("{e}")),
        sequence,
        sha256: format!("{sequence:064x}"),
        baseline: Some(Arc::new(
            serde_json::from_str(include_str!("../../../models/churn/2.0.0/baseline.json"))
                .unwrap_or_else(|e| panic!("{e}")),
        )),
    }
}

const V1: &str = "models/churn/1.0.0/model.onnx";
const V2: &str = "models/churn/2.0.0/model.onnx";

fn catalog() -> Catalog {
    [
        (V1.to_owned(), release("1.0.0", 1)),
        (V2.to_owned(), release("2.0.0", 2)),
    ]
    .into_iter()
    .collect()
}

fn at(seconds: u64) -> Now {
    Now {
        elapsed: Duration::from_secs(seconds),
        unix: 1_800_000_000 + seconds,
    }
}

fn group(failure_ratio: f64) -> Arc<GroupConfig> {
    Arc::new(GroupConfig {
        name: "g".into(),
        devices: 1,
        install_delay_ms: 2_000,
        install_failure_ratio: failure_ratio,
        drift: None,
    })
}

fn device(failure_ratio: f64) -> SimDevice {
    let catalog = catalog();
    SimDevice::new(
        DeviceId::new("sim-g-0").unwrap_or_else(|e| panic!("{e}")),
        group(failure_ratio),
        Arc::new(TelemetryConfig {
            window_seconds: 60,
            requests_per_second: 1.0,
            error_ratio: 0.0,
            latency_ms: 5.0,
        }),
        42,
        Some((V1, &catalog[V1])),
        at(0),
    )
}

fn desired(device: &str, revision: u64, target: &str) -> Vec<u8> {
    let d = Desired {
        schema: 1,
        id: MessageId::from_random([revision as u8; 16]),
        device: DeviceId::new(device).unwrap_or_else(|e| panic!("{e}")),
        revision,
        issued_at_unix: 1_800_000_000,
        models: vec![DesiredModel {
            model: ModelName::new("churn").unwrap_or_else(|e| panic!("{e}")),
            target: target.into(),
            artifact_urls: vec![],
            rollout: Some("r-1".into()),
            shadow: None,
        }],
    };
    serde_json::to_vec(&serde_json::json!({"signed": {"_type": "edgefleet-desired", "desired": d}, "signatures": []}))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn decoded<M: message::WireMessage>(out: &[Outgoing], channel: Channel) -> Vec<M> {
    out.iter()
        .filter(|o| o.channel == channel)
        .map(|o| message::decode(&o.payload).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

#[test]
fn an_install_reports_downloading_then_commits_after_the_delay_keeping_the_previous() {
    let catalog = catalog();
    let mut d = device(0.0);
    let first = d.on_connected(at(0)).unwrap_or_else(|e| panic!("{e}"));
    let reported: Vec<Reported> = decoded(&first, Channel::Reported);
    assert_eq!(
        reported[0].models[0]
            .active
            .as_ref()
            .map(|a| a.target.as_str()),
        Some(V1)
    );

    let out = d
        .on_desired(&desired("sim-g-0", 3, V2), &catalog, at(1))
        .unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<Event> = decoded(&out, Channel::Events);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Downloading);
    assert_eq!(events[0].rollout.as_deref(), Some("r-1"));
    let reported: Vec<Reported> = decoded(&out, Channel::Reported);
    assert_eq!(reported[0].desired_revision, 3);
    assert_eq!(reported[0].models[0].state, UpdateState::Downloading);
    assert_eq!(d.next_due(), Duration::from_secs(3));

    // Not yet due: nothing happens.
    assert!(
        d.on_tick(&catalog, at(2))
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    let out = d.on_tick(&catalog, at(3)).unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<Event> = decoded(&out, Channel::Events);
    assert_eq!(events[0].kind, EventKind::Committed);
    let reported: Vec<Reported> = decoded(&out, Channel::Reported);
    let model = &reported[0].models[0];
    assert_eq!(model.state, UpdateState::Committed);
    assert_eq!(model.active.as_ref().map(|a| a.target.as_str()), Some(V2));
    assert_eq!(model.previous.as_ref().map(|a| a.target.as_str()), Some(V1));
    assert_eq!(d.counts.committed, 1);
}

#[test]
fn a_failing_device_rejects_the_target_and_keeps_its_version() {
    let catalog = catalog();
    let mut d = device(1.0);
    d.on_desired(&desired("sim-g-0", 1, V2), &catalog, at(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = d.on_tick(&catalog, at(2)).unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<Event> = decoded(&out, Channel::Events);
    assert_eq!(events[0].kind, EventKind::Rejected);
    assert!(
        events[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("simulated")
    );
    let reported: Vec<Reported> = decoded(&out, Channel::Reported);
    let model = &reported[0].models[0];
    assert_eq!(model.state, UpdateState::Rejected);
    assert_eq!(model.active.as_ref().map(|a| a.target.as_str()), Some(V1));
    assert_eq!(reported[0].desired_revision, 1);
}

#[test]
fn replayed_or_foreign_desired_states_change_nothing() {
    let catalog = catalog();
    let mut d = device(0.0);
    d.on_desired(&desired("sim-g-0", 5, V2), &catalog, at(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let replay = d
        .on_desired(&desired("sim-g-0", 5, V1), &catalog, at(1))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(replay.is_empty());
    assert!(
        d.on_desired(&desired("sim-g-1", 9, V1), &catalog, at(1))
            .is_err()
    );
    assert!(d.on_desired(b"{\"signed\":1}", &catalog, at(1)).is_err());
    assert_eq!(d.counts.desired, 1);
}

#[test]
fn an_unknown_target_is_refused_with_a_reason() {
    let catalog = catalog();
    let mut d = device(0.0);
    let out = d
        .on_desired(
            &desired("sim-g-0", 1, "models/churn/9.0.0/model.onnx"),
            &catalog,
            at(0),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let reported: Vec<Reported> = decoded(&out, Channel::Reported);
    assert_eq!(reported[0].models[0].state, UpdateState::Rejected);
    assert!(reported[0].models[0].last_error.is_some());
}

#[test]
fn one_batch_per_window_for_the_running_version_with_growing_sequence() {
    let catalog = catalog();
    let mut d = device(0.0);
    let mut batches: Vec<MetricsBatch> = Vec::new();
    let mut t = 0;
    while t <= 600 {
        batches.extend(decoded::<MetricsBatch>(
            &d.on_tick(&catalog, at(t)).unwrap_or_else(|e| panic!("{e}")),
            Channel::Metrics,
        ));
        t += 1;
    }
    assert!(
        (10..=11).contains(&batches.len()),
        "{} batches",
        batches.len()
    );
    assert!(batches.windows(2).all(|w| w[0].seq < w[1].seq));
    let requests: u64 = batches.iter().map(|b| b.models[0].requests).sum();
    assert_eq!(requests, d.counts.predictions);
    assert!(
        batches
            .iter()
            .all(|b| b.models[0].version == semver::Version::new(1, 0, 0))
    );
    assert!(batches.iter().any(|b| !b.models[0].drift_counts.is_empty()));
}
