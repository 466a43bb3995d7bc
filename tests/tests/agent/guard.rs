//! The guard after commit on the device, in-process over the real install pipeline, store,
//! models and local API: `bad/decaying` (a shortcut model whose signed accuracy is 1.0) serves
//! the real customer base, the labels arrive three weeks later, and its guard finds the accuracy
//! collapsed and rolls back to the kept version; the healthy version, signed with the same
//! policy, takes the same traffic and labels and is left alone.

use std::time::{Duration, Instant};

use edge_agent::agent::InstallReport;
use edgefleet_e2e::{Operator, get_text, models_dir};
use edgefleet_protocol::message::EventKind;
use serde_json::{Value, json};

use super::in_process::{DAY, post, start};

/// churn 2.0.0 as the operator signs it with the decaying release's guard policy.
fn guarded_healthy(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("churn-2.0.0-guarded");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(models_dir().join("churn/2.0.0")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), out.join(entry.file_name())).unwrap();
    }
    let policy: Value = serde_json::from_slice(
        &std::fs::read(models_dir().join("bad/decaying/release.json")).unwrap(),
    )
    .unwrap();
    let mut release: Value =
        serde_json::from_slice(&std::fs::read(out.join("release.json")).unwrap()).unwrap();
    release["guard"] = policy["guard"].clone();
    std::fs::write(out.join("release.json"), release.to_string()).unwrap();
    out
}

fn served_version(url: &str) -> String {
    let models: Value = ureq::get(format!("{url}/v1/models"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    models["models"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "churn"))
        .map(|m| m["serving"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

fn committed(url: &str, version: &str) -> bool {
    let models: Value = ureq::get(format!("{url}/v1/models"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    models["models"].as_array().is_some_and(|m| {
        m.iter()
            .any(|m| m["name"] == "churn" && m["serving"] == version && m["state"] == "committed")
    })
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Serves the field traffic now; three weeks later sends each answer's true label. Returns the
/// share the answers got right and the ids of those answered wrong.
fn field_traffic_labelled_late(
    url: &str,
    clock: &super::in_process::MovedClock,
    day: i64,
) -> (f64, Vec<String>) {
    let field: Value = serde_json::from_slice(
        &std::fs::read(models_dir().join("bad/decaying/field.json")).unwrap(),
    )
    .unwrap();
    clock.set_offset(day * DAY);
    let mut labels = Vec::new();
    let mut right = 0;
    let mut wrong = Vec::new();
    let rows = field["rows"].as_array().unwrap();
    for row in rows.iter().take(300) {
        let answer = post(&format!("{url}/v1/models/churn:predict"), &row["features"]);
        let truth = if row["churn"] == true {
            "churn"
        } else {
            "stay"
        };
        if answer["prediction"] == truth {
            right += 1;
        } else {
            wrong.push(answer["id"].as_str().unwrap().to_owned());
        }
        labels.push(json!({"id": answer["id"], "label": truth}));
    }
    clock.set_offset((day + 21) * DAY);
    for batch in labels.chunks(100) {
        let outcome = post(
            &format!("{url}/v1/models/churn/feedback"),
            &json!({ "labels": batch }),
        );
        assert_eq!(outcome["accepted"], batch.len(), "{outcome}");
    }
    (right as f64 / 300.0, wrong)
}

#[test]
fn the_guard_rolls_a_decaying_version_back_on_late_labels_and_leaves_a_healthy_one_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let healthy = op.push(guarded_healthy(tmp.path()).to_str().unwrap());
    let decaying = op.push("bad/decaying");
    let running = start(
        &tmp.path().join("agent"),
        &op.trusted_root(),
        "[probation]\nwindow_seconds = 1\n[quality]\nguard_check_seconds = 1\n",
    );
    let (agent, url, clock) = (&running.agent, running.url.as_str(), &running.clock);
    let mut notices = agent.notices.subscribe();
    for target in [&healthy, &decaying] {
        let reports = running.runtime.block_on(async {
            agent
                .install_from_repository(&op.repo(), std::slice::from_ref(target))
                .await
                .unwrap()
        });
        assert!(
            matches!(reports.as_slice(), [InstallReport::Activated { .. }]),
            "{reports:?}"
        );
        let version = target.split('/').nth(2).unwrap().to_owned();
        wait_for(&format!("{version} to commit"), || committed(url, &version));
    }

    // The decaying version's answers on real customers are right less than half the time.
    let (accuracy, wrong) = field_traffic_labelled_late(url, clock, 0);
    assert!(accuracy < 0.6, "decaying accuracy {accuracy}");
    let labelled = Instant::now();
    wait_for("the guard to roll back to 2.0.0", || {
        served_version(url) == "2.0.0" && committed(url, "2.0.0")
    });
    // docs/BENCHMARKS.md: from the labels joined to the version back in service, with the guard
    // judging every second and a one-second probation of the version it rolls back to.
    eprintln!(
        "guard rolled back {:.1} s after the labels arrived",
        labelled.elapsed().as_secs_f64()
    );
    let breach = running.runtime.block_on(async {
        loop {
            let notice = tokio::time::timeout(Duration::from_secs(10), notices.recv())
                .await
                .expect("a guard notice")
                .unwrap();
            if notice.kind == EventKind::GuardBreached {
                return notice;
            }
        }
    });
    assert_eq!(breach.target.as_deref(), Some(decaying.as_str()));
    assert_eq!(breach.evidence.len(), 1, "{breach:?}");
    assert_eq!(breach.evidence[0].rule.as_str(), "accuracy");
    assert!(
        (breach.evidence[0].observed - accuracy).abs() < 1e-9,
        "{breach:?}"
    );
    // A sample of the wrongly answered predictions rides with it, for review and retraining.
    let sample = &breach.evidence[0].sample;
    assert_eq!(sample.len(), 20, "{breach:?}");
    assert!(sample.iter().all(|id| wrong.contains(id)), "{sample:?}");
    assert!(
        breach
            .detail
            .as_deref()
            .unwrap()
            .contains("rolling back to 2.0.0"),
        "{breach:?}"
    );
    assert!(breach.refuse_again.is_some(), "not to be installed again");
    let metrics = get_text(&format!("{url}/metrics"));
    assert!(
        metrics.contains(
            "edgefleet_guard_breaches_total{model=\"churn\",version=\"3.1.0-decaying\",rule=\"accuracy\"} 1"
        ),
        "{metrics}"
    );

    // The healthy version under the same policy, traffic and late labels: judged, left alone.
    let (accuracy, _) = field_traffic_labelled_late(url, clock, 30);
    assert!(accuracy > 0.75, "healthy accuracy {accuracy}");
    let quality: Value = ureq::get(format!("{url}/v1/models/churn/quality"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let v2 = quality["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "2.0.0")
        .unwrap();
    assert_eq!(v2["labelled"], 300, "{quality}");
    // Several guard checks (one a second) over the labelled window.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(served_version(url), "2.0.0");
    let metrics = get_text(&format!("{url}/metrics"));
    assert!(
        !metrics.contains("edgefleet_guard_breaches_total{model=\"churn\",version=\"2.0.0\""),
        "{metrics}"
    );
    running.runtime.block_on(async {
        assert_eq!(agent.stop(Duration::from_secs(5)).await, 0);
    });
}
