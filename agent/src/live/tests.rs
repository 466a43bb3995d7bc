use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use super::*;

#[test]
fn a_model_is_quick_only_after_enough_quick_requests_and_stops_being_when_it_slows() {
    let stats = LiveStats::new(None);
    for _ in 0..QUICK_AFTER - 1 {
        stats.record_success(Duration::from_micros(5));
    }
    assert!(!stats.is_quick(), "judged on too few requests");
    stats.record_success(Duration::from_micros(5));
    assert!(stats.is_quick());
    for _ in 0..16 {
        stats.record_success(Duration::from_millis(2));
    }
    assert!(
        !stats.is_quick(),
        "a slowed model goes back to the blocking pool"
    );
}

#[test]
fn probation_sees_requests_errors_and_the_p99_of_the_successes() {
    let stats = LiveStats::new(None);
    assert_eq!(stats.snapshot(), (0, 0, None));
    for i in 0..1000u64 {
        stats.record_success(Duration::from_micros(100 + i));
    }
    stats.record_failure();
    let (requests, errors, p99) = stats.snapshot();
    assert_eq!((requests, errors), (1001, 1));
    let p99 = p99.unwrap();
    assert!((p99 - 1.09).abs() / 1.09 <= 0.05, "p99 {p99} ms");
    assert_eq!(stats.max(), Duration::from_micros(1099));
}

#[test]
fn counts_from_many_threads_add_up_exactly() {
    let stats = Arc::new(LiveStats::new(None));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let stats = stats.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u64 {
                    stats.record_success(Duration::from_micros(10 + i % 500));
                    let label = ["a", "b", "c"][(i % 3) as usize];
                    stats.record_prediction(Some(label), None);
                    if (i + t) % 100 == 0 {
                        stats.record_failure();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let counts = stats.counts();
    assert_eq!(counts.requests, 80_000 + 800);
    assert_eq!(counts.errors, 800);
    assert_eq!(counts.latency.iter().sum::<u64>(), 80_000);
    assert_eq!(counts.labels.values().sum::<u64>(), 80_000);
    assert_eq!(
        counts.labels.len(),
        3,
        "each label claimed one cell: {:?}",
        counts.labels
    );
}

#[test]
fn readings_subtract_to_what_happened_between_them_and_add_back() {
    let stats = LiveStats::new(None);
    stats.record_success(Duration::from_micros(50));
    stats.record_prediction(Some("x"), None);
    let first = stats.counts();
    stats.record_success(Duration::from_millis(5));
    stats.record_prediction(Some("y"), None);
    stats.record_failure();
    let second = stats.counts();
    let between = second.since(&first);
    assert_eq!((between.requests, between.errors), (2, 1));
    assert_eq!(between.labels, BTreeMap::from([("y".to_owned(), 1)]));
    assert_eq!(between.latency.iter().sum::<u64>(), 1);
    let mut whole = first.clone();
    whole.add(&between);
    assert_eq!(whole.requests, second.requests);
    assert_eq!(whole.latency, second.latency);
    assert_eq!(whole.labels.values().sum::<u64>(), 2);
}

#[test]
fn values_fall_in_the_baselines_bins() {
    let f = FeatureBaseline::Numeric {
        edges: vec![10.0, 20.0, 30.0],
        shares: vec![0.25, 0.25, 0.25, 0.25],
    };
    let bins: Vec<Option<usize>> = [5.0, 10.0, 10.5, 20.0, 30.0, 31.0, -1e9]
        .iter()
        .map(|x| bin_of(&f, &json!(x)))
        .collect();
    assert_eq!(
        bins,
        [
            Some(0),
            Some(0),
            Some(1),
            Some(1),
            Some(2),
            Some(3),
            Some(0)
        ]
    );
    assert_eq!(bin_of(&f, &json!("ten")), None);
    let c = FeatureBaseline::Categorical {
        shares: BTreeMap::from([("a".into(), 0.5), ("b".into(), 0.4)]),
        other: 0.1,
    };
    assert_eq!(bin_of(&c, &json!("b")), Some(1));
    assert_eq!(bin_of(&c, &json!("zzz")), Some(2));
    assert_eq!(bin_of(&c, &json!(3)), None);
    let flags = FeatureBaseline::Categorical {
        shares: [("false".to_owned(), 0.4), ("true".to_owned(), 0.6)].into(),
        other: 0.0,
    };
    assert_eq!(bin_of(&flags, &json!(true)), Some(1));
    assert_eq!(bin_of(&flags, &json!(false)), Some(0));
}
