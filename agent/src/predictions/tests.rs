use super::*;

const DAY: u64 = 86_400;

fn open(dir: &tempfile::TempDir, retain_days: u64, max_predictions: u64) -> PredictionLog {
    PredictionLog::open(
        &dir.path().join("predictions.db"),
        QualitySettings {
            retain_days,
            max_predictions,
            ..QualitySettings::default()
        },
    )
    .unwrap()
}

fn churn(id: &str, version: &str, at_unix: u64, score: f64) -> Logged {
    Logged {
        id: id.into(),
        model: "churn".into(),
        version: version.into(),
        at_unix,
        answer: Answer::Class {
            label: if score >= 0.5 { "churn" } else { "stay" }.into(),
            positive: Some(("churn".into(), score)),
        },
    }
}

fn label(id: &str, label: &str) -> (String, Truth) {
    (id.into(), Truth::Label(label.into()))
}

#[test]
fn late_labels_in_any_order_join_their_predictions_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, 35, 1000);
    let t0 = 1_700_000_000;
    log.record(churn("a", "1.0.0", t0, 0.9));
    log.record(churn("b", "1.0.0", t0 + 1, 0.2));
    log.record(churn("c", "2.0.0", t0 + 2, 0.7));
    // Three weeks later, in reverse order, with an id never seen and one sent twice.
    let later = t0 + 21 * DAY;
    let outcome = log
        .feedback(
            "churn",
            &[
                label("c", "stay"),
                label("nope", "churn"),
                label("b", "stay"),
                label("a", "churn"),
                label("a", "stay"),
                ("b".into(), Truth::Value(1.0)),
            ],
            later,
        )
        .unwrap();
    assert_eq!(outcome.accepted, 3);
    assert_eq!(outcome.unknown, 1);
    assert_eq!(outcome.duplicates, 2);
    assert_eq!(outcome.refused, 0);
    assert_eq!(outcome.not_accepted.len(), 3);
    assert_eq!(outcome.not_accepted[0].id, "nope");

    let quality = log.quality("churn", 0, u64::MAX / 2).unwrap();
    let v1 = quality[&semver::Version::new(1, 0, 0)].figures();
    assert_eq!(v1.labelled, 2);
    assert_eq!(v1.accuracy, Some(1.0));
    assert_eq!(v1.roc_auc, Some(1.0));
    let v2 = quality[&semver::Version::new(2, 0, 0)].figures();
    assert_eq!(v2.accuracy, Some(0.0));

    // Reported once: the second window carries nothing more.
    let reported = log.take_unreported().unwrap();
    let total: u64 = reported.values().map(|c| c.labelled).sum();
    assert_eq!(total, 3);
    assert!(log.take_unreported().unwrap().is_empty());
}

#[test]
fn a_label_of_the_wrong_kind_or_for_another_model_is_not_joined() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, 35, 1000);
    log.record(churn("a", "1.0.0", 10, 0.9));
    log.record(Logged {
        id: "r".into(),
        model: "price".into(),
        version: "1.0.0".into(),
        at_unix: 10,
        answer: Answer::Value(3.5),
    });
    let outcome = log
        .feedback(
            "churn",
            &[("a".into(), Truth::Value(1.0)), label("r", "stay")],
            20,
        )
        .unwrap();
    assert_eq!(
        (outcome.accepted, outcome.refused, outcome.unknown),
        (0, 1, 1)
    );
    let outcome = log
        .feedback("price", &[("r".into(), Truth::Value(2.5))], 20)
        .unwrap();
    assert_eq!(outcome.accepted, 1);
    let quality = log.quality("price", 0, 100).unwrap();
    assert_eq!(
        quality[&semver::Version::new(1, 0, 0)].figures().mae,
        Some(1.0)
    );
}

#[test]
fn predictions_past_retention_or_over_the_count_are_dropped_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, 7, 3);
    let t0 = 1_000 * DAY;
    for (i, at) in [t0, t0 + 1, t0 + 2, t0 + 3].iter().enumerate() {
        log.record(churn(&format!("p{i}"), "1.0.0", *at, 0.9));
    }
    log.flush(t0 + 10).unwrap();
    // Over the count: p0 went.
    let outcome = log
        .feedback(
            "churn",
            &[label("p0", "churn"), label("p1", "churn")],
            t0 + 10,
        )
        .unwrap();
    assert_eq!((outcome.accepted, outcome.unknown), (1, 1));
    // Eight days on, everything made at t0 is past a week's retention.
    let outcome = log
        .feedback("churn", &[label("p2", "churn")], t0 + 8 * DAY)
        .unwrap();
    assert_eq!(outcome.unknown, 1);
}

#[test]
fn the_log_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir, 35, 1000);
        log.record(churn("a", "1.0.0", 10, 0.9));
        log.flush(10).unwrap();
    }
    let log = open(&dir, 35, 1000);
    let outcome = log.feedback("churn", &[label("a", "churn")], 20).unwrap();
    assert_eq!(outcome.accepted, 1);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_growing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, 35, 1_000_000);
    for i in 0..MAX_PENDING + 5 {
        log.record(churn(&format!("p{i}"), "1.0.0", 10, 0.9));
    }
    assert_eq!(log.dropped(), 5);
    assert_eq!(log.flush(10).unwrap(), MAX_PENDING);
}

#[test]
fn the_guard_counts_labels_by_when_they_were_joined() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, 35, 1000);
    let t0 = 1_700_000_000;
    log.record(churn("a", "1.0.0", t0, 0.9));
    log.record(churn("b", "1.0.0", t0 + 1, 0.8));
    log.record(churn("c", "2.0.0", t0 + 2, 0.9));
    let later = t0 + 28 * DAY;
    log.feedback(
        "churn",
        &[label("a", "stay"), label("b", "churn"), label("c", "stay")],
        later,
    )
    .unwrap();
    let v1 = semver::Version::new(1, 0, 0);
    // An hour's window that ends after the join holds the month-old predictions.
    let joined = log
        .quality_joined("churn", &v1, later - 3600, later + 1)
        .unwrap();
    assert_eq!(joined.labelled, 2);
    assert_eq!(joined.figures().accuracy, Some(0.5));
    // A window before the labels arrived holds none, though the predictions were made in it.
    let before = log.quality_joined("churn", &v1, t0 - 1, t0 + DAY).unwrap();
    assert_eq!(before.labelled, 0);
}
