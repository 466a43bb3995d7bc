//! Property tests: every decoder turns arbitrary bytes into a value or an error, never a panic;
//! every message survives an encode/decode round trip; identifiers are accepted exactly when they
//! match their documented pattern.

#![allow(clippy::unwrap_used)]
use edgefleet_protocol::baseline::BinCounts;
use edgefleet_protocol::message::{
    self, Desired, DesiredModel, Event, EventKind, LatencySummary, MetricsBatch, ModelMetrics,
    ProcessStats, Reported, ReportedModel, UpdateState, WireMessage,
};
use edgefleet_protocol::target::{ModelTargetMeta, parse_target_name};
use edgefleet_protocol::topic::{Channel, Topic};
use edgefleet_protocol::{DeviceId, MessageId, ModelName};
use proptest::prelude::*;

fn device_id() -> impl Strategy<Value = DeviceId> {
    "[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}".prop_map(|s| DeviceId::new(s).unwrap())
}

fn model_name() -> impl Strategy<Value = ModelName> {
    "[a-z][a-z0-9_-]{0,20}".prop_map(|s| ModelName::new(s).unwrap())
}

fn message_id() -> impl Strategy<Value = MessageId> {
    any::<[u8; 16]>().prop_map(MessageId::from_random)
}

fn version() -> impl Strategy<Value = semver::Version> {
    (0u64..100, 0u64..100, 0u64..100).prop_map(|(a, b, c)| semver::Version::new(a, b, c))
}

/// A challenger's window: counts and sums as a device could send them (or could lie with).
fn shadow_report() -> impl Strategy<Value = Option<edgefleet_protocol::shadow::ShadowReport>> {
    proptest::option::of(
        (
            version(),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            0.0f64..1e9,
            proptest::collection::btree_map("[a-z]{1,8}", any::<u64>(), 0..3),
            (any::<u64>(), any::<u64>(), any::<u64>()),
        )
            .prop_map(
                |(v, (compared, agreed, errors, shed), abs_diff_sum, labels, (l, a, b))| {
                    edgefleet_protocol::shadow::ShadowReport {
                        target: format!("models/m/{v}/model.onnx"),
                        counts: edgefleet_protocol::shadow::ShadowCounts {
                            compared,
                            agreed,
                            abs_diff_sum,
                            challenger_errors: errors,
                            shed,
                            champion_labels: labels.clone(),
                            challenger_labels: labels,
                            labelled: l,
                            champion_correct: a,
                            challenger_correct: b,
                            ..Default::default()
                        },
                    }
                },
            ),
    )
}

fn desired() -> impl Strategy<Value = Desired> {
    let shadow = proptest::option::of(
        (
            version(),
            proptest::collection::vec("[ -~]{0,40}", 0..2),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
        )
            .prop_map(|(v, artifact_urls, share_ppm, max_cpu_ppm, split)| {
                edgefleet_protocol::shadow::DesiredShadow {
                    target: format!("models/m/{v}/model.onnx"),
                    artifact_urls,
                    share_ppm,
                    max_cpu_ppm,
                    mode: if split {
                        edgefleet_protocol::shadow::SlotMode::Split
                    } else {
                        edgefleet_protocol::shadow::SlotMode::Shadow
                    },
                }
            }),
    );
    let model = (
        model_name(),
        version(),
        proptest::collection::vec("[ -~]{0,40}", 0..3),
        proptest::option::of("[a-z0-9-]{1,20}"),
        shadow,
    )
        .prop_map(|(model, v, artifact_urls, rollout, shadow)| DesiredModel {
            shadow,
            target: format!("models/{model}/{v}/model.onnx"),
            model,
            artifact_urls,
            rollout,
        });
    (
        message_id(),
        device_id(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(model, 0..4),
    )
        .prop_map(|(id, device, revision, issued_at_unix, models)| Desired {
            schema: message::SCHEMA_VERSION,
            id,
            device,
            revision,
            issued_at_unix,
            models,
        })
}

fn event() -> impl Strategy<Value = Event> {
    let kinds = prop_oneof![
        Just(EventKind::Downloading),
        Just(EventKind::Verified),
        Just(EventKind::Rejected),
        Just(EventKind::RolledBack),
        Just(EventKind::Committed),
        Just(EventKind::GuardBreached),
    ];
    (
        message_id(),
        device_id(),
        any::<u64>(),
        any::<u64>(),
        kinds,
        model_name(),
        proptest::option::of(".{0,80}"),
    )
        .prop_map(|(id, device, seq, at_unix, kind, model, detail)| Event {
            schema: message::SCHEMA_VERSION,
            id,
            device,
            seq,
            at_unix,
            kind,
            model,
            target: None,
            rollout: Some("r-1".into()),
            evidence: if kind == EventKind::GuardBreached {
                vec![edgefleet_protocol::guard::Breach {
                    rule: edgefleet_protocol::guard::GuardRule::Accuracy,
                    observed: 0.625,
                    limit: 0.75,
                    detail: "accuracy 0.625 on 400 labelled predictions".into(),
                    sample: vec!["0f3c".into()],
                }]
            } else {
                Vec::new()
            },
            detail,
        })
}

fn quality_counts() -> impl Strategy<Value = edgefleet_protocol::quality::QualityCounts> {
    use edgefleet_protocol::quality::{Observation, QualityCounts};
    proptest::collection::vec(
        prop_oneof![
            (
                "[a-z]{1,6}",
                "[a-z]{1,6}",
                proptest::option::of((0.0f64..=1.0, any::<bool>()))
            )
                .prop_map(|(predicted, actual, positive_score)| Observation::Class {
                    predicted,
                    actual,
                    positive_score
                }),
            (-1e6f64..1e6, -1e6f64..1e6)
                .prop_map(|(predicted, actual)| Observation::Value { predicted, actual }),
        ],
        0..6,
    )
    .prop_map(|observations| {
        let mut counts = QualityCounts::default();
        observations.iter().for_each(|o| counts.add(o));
        counts
    })
}

fn samples() -> impl Strategy<Value = Vec<edgefleet_protocol::sampling::PredictionSample>> {
    use edgefleet_protocol::sampling::{FeatureValue, PredictionSample};
    let feature = prop_oneof![
        (-1e9f64..1e9).prop_map(FeatureValue::Number),
        any::<bool>().prop_map(FeatureValue::Flag),
        "[a-z ]{0,12}".prop_map(FeatureValue::Text),
    ];
    proptest::collection::btree_map(
        "[0-9a-f]{1,32}",
        (
            any::<u64>(),
            proptest::option::of("[a-z]{1,6}"),
            proptest::option::of(0.0f64..=1.0),
            proptest::option::of(-1e9f64..1e9),
            proptest::collection::btree_map("[a-z_]{1,10}", feature, 0..4),
            any::<bool>(),
        ),
        0..4,
    )
    .prop_map(|by_id| {
        by_id
            .into_iter()
            .map(
                |(id, (at_unix, label, score, value, features, review))| PredictionSample {
                    id,
                    at_unix,
                    label,
                    score,
                    value,
                    features,
                    review,
                },
            )
            .collect()
    })
}

fn metrics() -> impl Strategy<Value = MetricsBatch> {
    let finite = -1e9f64..1e9;
    let model = (
        model_name(),
        version(),
        any::<u64>(),
        any::<u64>(),
        finite.clone(),
        proptest::collection::btree_map("[a-z]{1,8}", any::<u64>(), 0..4),
        proptest::collection::btree_map("[a-z]{1,8}", finite.clone(), 0..4),
        proptest::collection::btree_map(any::<u16>(), any::<u64>(), 0..6),
        (quality_counts(), samples(), any::<u64>(), shadow_report()),
        proptest::collection::btree_map(
            "[a-z]{1,8}",
            proptest::collection::vec(any::<u64>(), 0..12),
            0..3,
        ),
    )
        .prop_map(
            |(
                model,
                version,
                requests,
                errors,
                p,
                predictions,
                drift_psi,
                buckets,
                (quality, samples, samples_skipped, shadow),
                drift_counts,
            )| {
                ModelMetrics {
                    shadow,
                    model,
                    version,
                    requests,
                    errors,
                    latency: LatencySummary {
                        p50_ms: p,
                        p95_ms: p,
                        p99_ms: p,
                        max_ms: p,
                    },
                    latency_histogram: edgefleet_protocol::latency::LatencyHistogram {
                        buckets,
                        max_ms: p.abs(),
                    },
                    predictions,
                    drift_psi,
                    drift_counts: drift_counts
                        .into_iter()
                        .map(|(f, dense)| (f, BinCounts::from_dense(&dense)))
                        .collect(),
                    quality,
                    samples,
                    samples_skipped,
                }
            },
        );
    (
        message_id(),
        device_id(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        finite,
        any::<u64>(),
        proptest::collection::vec(model, 0..3),
    )
        .prop_map(
            |(id, device, seq, start, dropped, cpu, rss, models)| MetricsBatch {
                schema: message::SCHEMA_VERSION,
                id,
                device,
                seq,
                window_start_unix: start,
                window_end_unix: start.saturating_add(60),
                dropped_batches: dropped,
                process: ProcessStats {
                    cpu_seconds: cpu,
                    rss_bytes: rss,
                },
                models,
            },
        )
}

fn reported() -> impl Strategy<Value = Reported> {
    (
        message_id(),
        device_id(),
        any::<u64>(),
        model_name(),
        version(),
        proptest::option::of(".{0,60}"),
    )
        .prop_map(|(id, device, seq, model, v, last_error)| Reported {
            schema: message::SCHEMA_VERSION,
            id,
            device,
            seq,
            at_unix: seq / 2,
            agent_version: "0.1.0".into(),
            desired_revision: seq / 3,
            models: vec![ReportedModel {
                shadow_refused: None,
                shadow: None,
                active: Some(message::InstalledVersion {
                    version: v.clone(),
                    sequence: seq,
                    target: format!("models/{model}/{v}/model.onnx"),
                    sha256: "ab".repeat(32),
                    runtime: Some("tract".into()),
                }),
                previous: None,
                model,
                state: UpdateState::Committed,
                last_error,
            }],
        })
}

fn round_trip<M: WireMessage + PartialEq + std::fmt::Debug>(m: &M) {
    let bytes = message::encode(m).unwrap();
    assert_eq!(&message::decode::<M>(&bytes).unwrap(), m);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The fleet's drift histogram is the same however windows and devices are grouped before
    /// they are pooled (what the server adds up is what the devices counted, exactly).
    #[test]
    fn pooled_bin_counts_do_not_depend_on_grouping(
        windows in proptest::collection::vec(proptest::collection::vec(0u64..1_000_000, 1..12), 1..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let pool = |ws: &[Vec<u64>]| {
            let mut p = BinCounts::default();
            for w in ws {
                p.add(&BinCounts::from_dense(w));
            }
            p
        };
        let at = cut.index(windows.len() + 1);
        let mut grouped = pool(&windows[..at]);
        grouped.add(&pool(&windows[at..]));
        prop_assert_eq!(&grouped, &pool(&windows));
        let bins = windows.iter().map(Vec::len).max().unwrap();
        let dense = grouped.to_dense(bins);
        for (bin, total) in dense.iter().enumerate() {
            prop_assert_eq!(*total, windows.iter().map(|w| w.get(bin).copied().unwrap_or(0)).sum::<u64>());
        }
    }

    #[test]
    fn desired_round_trips(m in desired()) { round_trip(&m) }

    #[test]
    fn events_round_trip(m in event()) { round_trip(&m) }

    #[test]
    fn metrics_batches_round_trip(m in metrics()) { round_trip(&m) }

    #[test]
    fn any_batch_is_judged_and_its_shadow_counts_merged_without_a_panic(m in metrics()) {
        let _ = m.implausible();
        let mut sum = edgefleet_protocol::shadow::ShadowCounts::default();
        for report in m.models.iter().filter_map(|x| x.shadow.as_ref()) {
            sum.merge(&report.counts);
            sum.merge(&report.counts);
            let _ = edgefleet_protocol::verdict::judge(&Default::default(), &sum);
        }
    }

    #[test]
    fn reported_round_trips(m in reported()) { round_trip(&m) }

    #[test]
    fn topics_round_trip(d in device_id(), c in 0usize..4) {
        let topic = Topic::new(d, Channel::ALL[c]);
        prop_assert_eq!(Topic::parse(&topic.to_string()).unwrap(), topic);
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = message::decode::<Desired>(&bytes);
        let _ = message::decode::<Reported>(&bytes);
        let _ = message::decode::<Event>(&bytes);
        let _ = message::decode::<MetricsBatch>(&bytes);
        let _ = serde_json::from_slice::<ModelTargetMeta>(&bytes).map(|m| m.validate());
        if let Ok(s) = std::str::from_utf8(&bytes) {
            let _ = Topic::parse(s);
            let _ = parse_target_name(s);
        }
    }

    #[test]
    fn mutated_messages_never_panic(m in desired(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = message::encode(&m).unwrap();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = message::decode::<Desired>(&bytes);
    }

    #[test]
    fn device_ids_accepted_exactly_when_they_match_the_pattern(s in ".{0,70}") {
        let matches = !s.is_empty()
            && s.len() <= 64
            && s != "." && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        prop_assert_eq!(DeviceId::new(s.clone()).is_ok(), matches, "{:?}", s);
    }

    #[test]
    fn feature_encoding_of_arbitrary_json_rows_never_panics(row in proptest::collection::btree_map("[a-z_]{1,12}", prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,10}".prop_map(serde_json::Value::from),
    ], 0..8)) {
        let meta: ModelTargetMeta = serde_json::from_str(CHURN_META).unwrap();
        let schema = meta.interface.features.unwrap();
        let row: serde_json::Map<String, serde_json::Value> = row.into_iter().collect();
        if let Ok(encoded) = schema.encode(&row) {
            prop_assert_eq!(encoded.len(), schema.width());
            prop_assert!(encoded.iter().all(|v| v.is_finite()));
        }
    }
}

/// A small but complete target metadata document, as `fleetctl push` would sign it.
const CHURN_META: &str = r#"{
  "model": "churn", "version": "1.0.0", "sequence": 1,
  "interface": {
    "inputs": [{"name": "features", "dtype": "float32", "shape": [-1, 5]}],
    "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [-1, 2]}],
    "features": {"input": "features", "features": [
      {"kind": "numeric", "name": "tenure_months", "scaling": {"method": "standard", "mean": 30.0, "std": 20.0}},
      {"kind": "numeric", "name": "support_tickets", "default": 0.0},
      {"kind": "categorical", "name": "contract_type", "categories": ["month-to-month", "one-year", "two-year"]}
    ]},
    "prediction": {"task": "classification", "output": "probabilities", "labels": ["stay", "churn"]}
  },
  "health": {"p99_budget_ms": 5.0, "tolerance": {"abs": 0.0001, "rel": 0.001}, "cases": [
    {"name": "c1", "features": [{"tenure_months": 3, "contract_type": "one-year"}],
     "expected": {"probabilities": {"dtype": "float32", "shape": [1, 2], "data": [0.5, 0.5]}}}
  ]}
}"#;

#[test]
fn the_example_target_metadata_is_valid() {
    let meta: ModelTargetMeta = serde_json::from_str(CHURN_META).unwrap();
    meta.validate().unwrap();
    assert_eq!(meta.target_name(), "models/churn/1.0.0/model.onnx");
}

#[test]
fn a_release_below_its_own_floor_is_invalid() {
    let mut meta: ModelTargetMeta = serde_json::from_str(CHURN_META).unwrap();
    meta.min_sequence = 2;
    assert!(meta.validate().is_err());
}
