//! Ground truth joined on the device: predictions made through the local API over a simulated
//! week, labels arriving three weeks later in batches, shuffled, with duplicates and an unknown
//! id, and the figures compared with scikit-learn's over the same rows. The agent runs
//! in-process with its clock injected (moved by the test); HTTP goes over loopback.

use std::time::Duration;

use edge_agent::agent::InstallReport;
use edgefleet_e2e::{Operator, baseline_rows};
use serde_json::{Value, json};

use super::in_process::{DAY, post, start};

/// Deterministic uniform numbers in [0, 1) for the test's ground truth and shuffling.
fn uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Row {
    id: String,
    predicted: String,
    churn_score: f64,
    actual: String,
}

/// scikit-learn's figures for the rows, computed in one batch.
fn sklearn(rows: &[Row], dir: &std::path::Path) -> Value {
    let csv = dir.join("labelled.csv");
    let mut text = String::from("id,predicted,churn_score,actual\n");
    for r in rows {
        text.push_str(&format!(
            "{},{},{},{}\n",
            r.id, r.predicted, r.churn_score, r.actual
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let script = r#"
import csv, json, sys
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score
rows = list(csv.DictReader(open(sys.argv[1])))
y = [r["actual"] for r in rows]
p = [r["predicted"] for r in rows]
s = [float(r["churn_score"]) for r in rows]
print(json.dumps({
    "labelled": len(rows),
    "accuracy": accuracy_score(y, p),
    "precision": precision_score(y, p, pos_label="churn"),
    "recall": recall_score(y, p, pos_label="churn"),
    "roc_auc": roc_auc_score([a == "churn" for a in y], s),
}))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 with scikit-learn (scripts/setup.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn late_shuffled_labels_give_the_figures_scikit_learn_computes_on_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let target = op.push("churn/1.0.0");
    let super::in_process::Running {
        runtime,
        agent,
        url,
        clock,
    } = start(tmp.path(), &op.trusted_root(), "");
    runtime.block_on(async {
        let reports = agent
            .install_from_repository(&op.repo(), &[target])
            .await
            .unwrap();
        assert!(matches!(
            reports.as_slice(),
            [InstallReport::Activated { .. }]
        ));
    });

    // A week of traffic like the training data; the truth drawn from the model's own score
    // (so the model is informative but not perfect).
    let mut truth = uniform(7);
    let mut rows = Vec::new();
    for (i, features) in baseline_rows("churn/1.0.0", 600, 11, &[])
        .into_iter()
        .enumerate()
    {
        clock.set_offset(i as i64 * 7 * DAY / 600);
        let answer = post(&format!("{url}/v1/models/churn:predict"), &features);
        let churn_score = answer["probabilities"]["churn"].as_f64().unwrap();
        let actual = if truth() < churn_score * 0.8 + 0.1 {
            "churn"
        } else {
            "stay"
        };
        rows.push(Row {
            id: answer["id"].as_str().unwrap().to_owned(),
            predicted: answer["prediction"].as_str().unwrap().to_owned(),
            churn_score,
            actual: actual.to_owned(),
        });
    }
    let ids: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "every answer has its own id");
    assert!(
        rows.iter().any(|r| r.predicted == "churn") && rows.iter().any(|r| r.predicted == "stay")
    );

    // Three weeks later: all but the last 50 labelled, shuffled, in batches of 64, with every
    // tenth label sent twice and one id the device never made.
    clock.set_offset(28 * DAY);
    let labelled = &rows[..rows.len() - 50];
    let mut order: Vec<usize> = (0..labelled.len()).collect();
    let mut shuffle = uniform(3);
    for i in (1..order.len()).rev() {
        let j = (shuffle() * (i + 1) as f64) as usize;
        order.swap(i, j);
    }
    let mut items: Vec<Value> = order
        .iter()
        .map(|i| json!({"id": labelled[*i].id, "label": labelled[*i].actual}))
        .collect();
    let twice: Vec<Value> = items.iter().step_by(10).cloned().collect();
    items.extend(twice.iter().cloned());
    items.push(json!({"id": "never-made-here", "label": "churn"}));
    let (mut accepted, mut duplicates, mut unknown) = (0, 0, 0);
    for batch in items.chunks(64) {
        let outcome = post(
            &format!("{url}/v1/models/churn/feedback"),
            &json!({ "labels": batch }),
        );
        accepted += outcome["accepted"].as_u64().unwrap();
        duplicates += outcome["duplicates"].as_u64().unwrap();
        unknown += outcome["unknown"].as_u64().unwrap();
    }
    assert_eq!(
        (accepted, duplicates, unknown),
        (labelled.len() as u64, twice.len() as u64, 1)
    );

    let expected = sklearn(labelled, tmp.path());
    let check = |figures: &Value, what: &str| {
        assert_eq!(figures["labelled"], expected["labelled"], "{what}");
        let (ours, theirs) = (figures["accuracy"].as_f64(), expected["accuracy"].as_f64());
        assert!(
            (ours.unwrap() - theirs.unwrap()).abs() < 1e-12,
            "{what} accuracy: {ours:?} vs scikit-learn {theirs:?}"
        );
        for (ours, theirs) in [
            (
                &figures["labels"]["churn"]["precision"],
                &expected["precision"],
            ),
            (&figures["labels"]["churn"]["recall"], &expected["recall"]),
        ] {
            assert!((ours.as_f64().unwrap() - theirs.as_f64().unwrap()).abs() < 1e-12);
        }
        // Binned scores: ties within a bin of 0.01 move AUC a little (protocol::quality).
        let (ours, theirs) = (
            figures["roc_auc"].as_f64().unwrap(),
            expected["roc_auc"].as_f64().unwrap(),
        );
        assert!(
            (ours - theirs).abs() < 0.01,
            "{what} roc_auc: {ours} vs scikit-learn {theirs}"
        );
    };
    // What the device's API says...
    let quality: Value = ureq::get(format!("{url}/v1/models/churn/quality"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    check(&quality["versions"][0], "device API");
    assert_eq!(quality["versions"][0]["version"], "1.0.0");
    // ...and what its next telemetry window carries to the server, once.
    let reported = agent.predictions.take_unreported().unwrap();
    let counts = &reported[&("churn".parse().unwrap(), semver::Version::new(1, 0, 0))];
    check(
        &serde_json::to_value(counts.figures()).unwrap(),
        "telemetry",
    );
    assert!(agent.predictions.take_unreported().unwrap().is_empty());

    runtime.block_on(async {
        assert_eq!(agent.stop(Duration::from_secs(5)).await, 0);
    });
}
