//! The rollout state machine's unit tests: planning, stepping, gates and operator commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::collections::HashMap;

fn spec(waves: Vec<f64>, max_fail: f64) -> RolloutSpec {
    RolloutSpec {
        strategy: Default::default(),
        shadow: None,
        model: "churn".into(),
        version: "2.0.0".into(),
        target: "models/churn/2.0.0/model.onnx".into(),
        selector: Selector::default(),
        waves,
        gates: Gates {
            max_failure_ratio: max_fail,
            ..Gates::default()
        },
        rollback_on_halt: true,
    }
}

fn fleet(n: usize) -> Vec<(String, Option<String>)> {
    (0..n)
        .map(|i| (format!("d{i:02}"), Some("1.0.0".into())))
        .collect()
}

fn reports(map: &HashMap<String, Observed>) -> impl Fn(&str) -> Option<Observed> + '_ {
    |id| map.get(id).cloned()
}

fn committed(rev: u64) -> Observed {
    Observed {
        shadow_target: None,
        shadow_refused: None,
        active_target: Some("models/churn/2.0.0/model.onnx".into()),
        state: Some(UpdateState::Committed),
        last_error: None,
        desired_revision: rev,
    }
}

fn rejected(rev: u64) -> Observed {
    Observed {
        shadow_target: None,
        shadow_refused: None,
        active_target: Some("models/churn/1.0.0/model.onnx".into()),
        state: Some(UpdateState::Rejected),
        last_error: Some("health check failed".into()),
        desired_revision: rev,
    }
}

fn updates(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Update { device } => Some(device.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_exponential_rate_doubles_up_to_everyone() {
    assert_eq!(
        exponential_waves(1.0, 2.0).unwrap(),
        [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0]
    );
    assert_eq!(exponential_waves(100.0, 2.0).unwrap(), [100.0]);
    assert!(exponential_waves(1.0, 1.0).is_err());
    assert!(exponential_waves(0.0, 2.0).is_err());
}

#[test]
fn waves_are_cumulative_and_never_empty() {
    assert_eq!(
        assign_waves(5, &[1.0, 10.0, 50.0, 100.0]).unwrap(),
        [0, 1, 2, 3, 3]
    );
    assert_eq!(
        assign_waves(100, &[1.0, 10.0, 50.0, 100.0])
            .unwrap()
            .iter()
            .filter(|w| **w == 1)
            .count(),
        9
    );
    assert_eq!(assign_waves(2, &[50.0, 100.0]).unwrap(), [0, 1]);
    assert_eq!(assign_waves(1, &[10.0, 100.0]).unwrap(), [0]);
    for bad in [
        vec![],
        vec![50.0],
        vec![10.0, 5.0, 100.0],
        vec![0.0, 100.0],
        vec![f64::NAN, 100.0],
    ] {
        assert_eq!(assign_waves(10, &bad), Err(PlanError::Waves), "{bad:?}");
    }
    assert_eq!(assign_waves(0, &[100.0]), Err(PlanError::NoDevices));
}

#[test]
fn a_healthy_rollout_goes_wave_by_wave_to_completion() {
    let mut r = Rollout::new(
        "r1".into(),
        spec(vec![20.0, 100.0], 0.0),
        fleet(5),
        "op".into(),
        0,
    )
    .unwrap();
    let mut seen = HashMap::new();
    let a = r.step(1, reports(&seen));
    assert_eq!(updates(&a), ["d00"]);
    r.notified("d00", 1, 1);
    assert!(r.step(2, reports(&seen)).is_empty());
    seen.insert("d00".to_string(), committed(1));
    let a = r.step(3, reports(&seen));
    assert_eq!(updates(&a), ["d01", "d02", "d03", "d04"]);
    assert_eq!(r.state, RolloutState::Running { wave: 1 });
    for d in ["d01", "d02", "d03", "d04"] {
        r.notified(d, 1, 3);
        seen.insert(d.to_string(), committed(1));
    }
    assert!(r.step(4, reports(&seen)).is_empty());
    assert_eq!(r.state, RolloutState::Completed);
}

#[test]
fn devices_notified_long_enough_ago_and_still_working_are_unanswered() {
    let mut r = Rollout::new(
        "r1".into(),
        spec(vec![100.0], 0.5),
        fleet(4),
        "op".into(),
        0,
    )
    .unwrap();
    r.step(1, |_| None);
    for d in ["d00", "d01", "d02"] {
        r.notified(d, 1, 10);
    }
    r.notified("d03", 1, 70);
    let mut seen = HashMap::new();
    seen.insert("d01".to_string(), committed(1));
    seen.insert("d02".to_string(), rejected(1));
    r.step(71, reports(&seen));
    assert_eq!(r.unanswered(9).count(), 0, "none notified that early");
    assert_eq!(r.unanswered(69).collect::<Vec<_>>(), ["d00"]);
    assert_eq!(r.unanswered(70).collect::<Vec<_>>(), ["d00", "d03"]);
}

#[test]
fn a_failure_beyond_the_gate_halts_at_once_and_rolls_back_updated_devices() {
    let mut r = Rollout::new(
        "r1".into(),
        spec(vec![20.0, 60.0, 100.0], 0.0),
        fleet(10),
        "op".into(),
        0,
    )
    .unwrap();
    let mut seen = HashMap::new();
    for d in updates(&r.step(1, reports(&seen))) {
        r.notified(&d, 1, 1);
        seen.insert(d, committed(1));
    }
    let wave2 = updates(&r.step(2, reports(&seen)));
    assert_eq!(wave2.len(), 4);
    for d in &wave2 {
        r.notified(d, 1, 2);
    }
    // One device of wave 2 fails while the others are still busy: halt now.
    seen.insert(wave2[0].clone(), rejected(1));
    let actions = r.step(3, reports(&seen));
    assert!(
        matches!(r.state, RolloutState::Halted { wave: 1, .. }),
        "{:?}",
        r.state
    );
    let reverted: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Revert { device, version } => Some((device.clone(), version.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(reverted.len(), 6, "waves 1 and 2 go back");
    assert!(reverted.iter().all(|(_, v)| v.as_deref() == Some("1.0.0")));
    // Wave 3 never started.
    assert!(
        r.devices
            .iter()
            .filter(|d| d.wave == 2)
            .all(|d| d.state == DeviceState::Pending)
    );
    assert!(r.step(4, reports(&seen)).is_empty());
}

#[test]
fn tolerated_failures_do_not_halt_and_timeouts_count_as_failures() {
    let mut s = spec(vec![100.0], 0.25);
    s.gates.device_timeout_seconds = 10;
    let mut r = Rollout::new("r1".into(), s, fleet(4), "op".into(), 0).unwrap();
    let mut seen = HashMap::new();
    for d in updates(&r.step(0, reports(&seen))) {
        r.notified(&d, 7, 0);
    }
    seen.insert("d00".into(), committed(7));
    seen.insert("d01".into(), committed(7));
    seen.insert("d02".into(), rejected(7));
    r.step(5, reports(&seen));
    assert!(matches!(r.state, RolloutState::Running { .. }));
    // d03 never answers: timed out → second failure → over 25 %.
    r.step(11, reports(&seen));
    assert!(
        matches!(r.state, RolloutState::Halted { .. }),
        "{:?}",
        r.state
    );
    assert_eq!(r.devices[3].state, DeviceState::RolledBack);
}

#[test]
fn an_old_report_does_not_count_against_a_new_revision() {
    let mut r = Rollout::new(
        "r1".into(),
        spec(vec![100.0], 0.0),
        fleet(1),
        "op".into(),
        0,
    )
    .unwrap();
    r.step(0, |_| None);
    r.notified("d00", 5, 0);
    // Rejected, but for revision 4: not about this rollout yet.
    let seen = HashMap::from([("d00".to_string(), rejected(4))]);
    r.step(1, reports(&seen));
    assert_eq!(r.devices[0].state, DeviceState::Notified);
}

#[test]
fn approval_pause_resume_abort_and_retry() {
    let mut s = spec(vec![50.0, 100.0], 0.0);
    s.gates.require_approval = true;
    s.gates.bake_seconds = 10;
    let mut r = Rollout::new("r1".into(), s, fleet(2), "op".into(), 0).unwrap();
    let mut seen = HashMap::new();
    r.step(0, |_| None);
    r.notified("d00", 1, 0);
    seen.insert("d00".to_string(), committed(1));
    r.step(1, reports(&seen));
    assert!(matches!(
        r.state,
        RolloutState::Baking { wave: 0, until: 11 }
    ));
    r.step(11, reports(&seen));
    assert_eq!(r.state, RolloutState::AwaitingApproval { wave: 0 });
    assert!(r.command(Command::Resume, 12, "op").is_err());
    r.command(Command::Pause, 12, "op").unwrap();
    r.command(Command::Resume, 13, "op").unwrap();
    assert_eq!(r.state, RolloutState::Running { wave: 0 });
    // Still needs approval after a resume.
    r.step(14, reports(&seen));
    r.step(25, reports(&seen));
    assert_eq!(r.state, RolloutState::AwaitingApproval { wave: 0 });
    r.command(Command::Approve, 26, "alice").unwrap();
    assert_eq!(
        r.approvals,
        [crate::Approval {
            wave: 1,
            by: "alice".into(),
            at: 26
        }]
    );
    assert_eq!(updates(&r.step(26, reports(&seen))), ["d01"]);
    r.notified("d01", 1, 26);
    seen.insert("d01".to_string(), rejected(1));
    r.step(27, reports(&seen));
    assert!(matches!(r.state, RolloutState::Halted { wave: 1, .. }));
    assert_eq!(
        r.command(Command::RetryFailed, 28, "op").unwrap(),
        Applied::Retrying(2)
    );
    assert_eq!(r.state, RolloutState::Running { wave: 1 });
    assert_eq!(
        retry_actions(&r),
        [Action::Update {
            device: "d00".into()
        }]
    );
    r.command(Command::Abort, 29, "op").unwrap();
    assert!(r.command(Command::Abort, 30, "op").is_err());
    assert!(r.step(31, reports(&seen)).is_empty());
    assert!(
        r.history
            .iter()
            .any(|(_, t)| t.contains("approved by alice"))
    );
}

fn gated(bake: u64) -> Rollout {
    let mut spec = spec(vec![50.0, 100.0], 0.0);
    spec.gates.bake_seconds = bake;
    spec.gates.model = Some(ModelGates {
        max_p99_slowdown_percent: Some(20.0),
        ..ModelGates::default()
    });
    Rollout::new("r".into(), spec, fleet(4), "op".into(), 0).unwrap()
}

fn settle_wave(r: &mut Rollout, wave: usize, now: i64) -> HashMap<String, Observed> {
    let mut seen = HashMap::new();
    for (rev, d) in r.devices.clone().iter().enumerate() {
        if d.wave <= wave {
            r.notified(&d.id, rev as u64 + 1, now);
            seen.insert(d.id.clone(), committed(rev as u64 + 1));
        }
    }
    r.step(now, reports(&seen));
    seen
}

#[test]
fn a_wave_waits_for_a_model_gate_pass_taken_during_its_bake() {
    let mut r = gated(60);
    // A pass before the wave settled does not count for its bake.
    r.model_checked(1, Verdict::Pass("early".into()));
    let seen = settle_wave(&mut r, 0, 10);
    assert!(matches!(
        r.state,
        RolloutState::Baking { wave: 0, until: 70 }
    ));
    r.step(80, reports(&seen));
    assert!(
        matches!(r.state, RolloutState::Baking { wave: 0, .. }),
        "{:?}",
        r.state
    );
    assert!(
        r.history
            .iter()
            .any(|(_, t)| t.contains("waiting for the model gates"))
    );
    assert!(r.wants_model_check(80, 5));
    r.model_checked(80, Verdict::Insufficient("40 of 100 requests".into()));
    assert!(matches!(r.state, RolloutState::Baking { wave: 0, .. }));
    assert!(!r.wants_model_check(82, 5));
    let actions = r.model_checked(85, Verdict::Pass("p99 fine".into()));
    assert_eq!(r.state, RolloutState::Running { wave: 1 });
    assert_eq!(updates(&actions).len(), 2);
}

#[test]
fn a_model_gate_breach_halts_and_rolls_back_like_an_install_failure() {
    let mut r = gated(600);
    settle_wave(&mut r, 0, 10);
    let actions = r.model_checked(20, Verdict::Breach("p99 latency 9 ms against 2 ms".into()));
    let RolloutState::Halted { wave: 0, reason } = &r.state else {
        panic!("not halted: {:?}", r.state);
    };
    assert!(reason.contains("model gate: p99 latency"), "{reason}");
    assert_eq!(
        actions,
        vec![
            Action::Revert {
                device: "d00".into(),
                version: Some("1.0.0".into())
            },
            Action::Revert {
                device: "d01".into(),
                version: Some("1.0.0".into())
            },
        ]
    );
    assert!(!r.wants_model_check(100, 5));
    assert!(
        r.model_checked(100, Verdict::Breach("again".into()))
            .is_empty()
    );
}

#[test]
fn model_gates_must_name_a_finite_limit() {
    let mut bad = spec(vec![100.0], 0.0);
    bad.gates.model = Some(ModelGates::default());
    assert_eq!(
        Rollout::new("r".into(), bad.clone(), fleet(1), "op".into(), 0).unwrap_err(),
        PlanError::NoModelGate
    );
    bad.gates.model = Some(ModelGates {
        max_error_rate_increase: Some(f64::NAN),
        ..ModelGates::default()
    });
    assert_eq!(
        Rollout::new("r".into(), bad.clone(), fleet(1), "op".into(), 0).unwrap_err(),
        PlanError::ModelGates
    );
    // Accuracy is a share: a drop of more than all of it is a mistake, not a gate.
    bad.gates.model = Some(ModelGates {
        max_accuracy_drop: Some(2.0),
        ..ModelGates::default()
    });
    assert_eq!(
        Rollout::new("r".into(), bad.clone(), fleet(1), "op".into(), 0).unwrap_err(),
        PlanError::ModelGates
    );
    bad.gates.model = Some(ModelGates {
        max_accuracy_drop: Some(0.02),
        ..ModelGates::default()
    });
    let gated = Rollout::new("r".into(), bad, fleet(1), "op".into(), 0).unwrap();
    assert!(gated.spec.gates.model.unwrap().compares());
}

#[test]
fn a_view_pages_the_devices_and_counts_every_wave_whatever_the_page() {
    let mut r = Rollout::new(
        "r".into(),
        spec(vec![50.0, 100.0], 1.0),
        fleet(5),
        "op".into(),
        0,
    )
    .unwrap();
    r.devices[1].detail = Some("did not install the target".into());
    r.devices[4].detail = Some("rolled back".into());
    let whole = RolloutView::from(&r);
    assert_eq!((whole.devices.len(), whole.devices_total), (5, 5));
    assert_eq!(whole.devices_next, None);

    let page = |from, limit, problems_only| {
        RolloutView::paged(
            &r,
            DevicePage {
                from,
                limit,
                problems_only,
            },
        )
    };
    let first = page(0, 2, false);
    let ids = |v: &RolloutView| v.devices.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ["d00", "d01"]);
    assert_eq!((first.devices_total, first.devices_next), (5, Some(2)));
    assert_eq!(first.waves, whole.waves, "counts cover every device");
    let last = page(4, 2, false);
    assert_eq!(ids(&last), ["d04"]);
    assert_eq!(last.devices_next, None);
    assert_eq!(page(2, 3, false).devices_next, None, "exactly the rest");
    assert!(page(9, 2, false).devices.is_empty());

    let problems = page(0, 1, true);
    assert_eq!(ids(&problems), ["d01"]);
    assert_eq!(
        (problems.devices_total, problems.devices_next),
        (2, Some(1))
    );
    assert_eq!(ids(&page(1, 1, true)), ["d04"]);

    let summary = RolloutView::paged(&r, DevicePage::NONE);
    assert!(summary.devices.is_empty());
    assert_eq!((summary.devices_total, summary.devices_next), (5, None));
    assert_eq!(summary.waves, whole.waves);
}
