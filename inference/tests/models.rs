//! Loads every model under `models/` with tract and runs its health check: the good ones pass
//! their golden vectors, each bad variant is refused for its own reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefleet_inference::health::{self, HealthFailure};
use edgefleet_inference::tract::TractRuntime;
use edgefleet_inference::{Error, Runtime};
use edgefleet_protocol::health::Mismatch;

mod support;

use support::release;

fn check(dir: &str) -> Result<health::HealthReport, HealthFailure> {
    let (bytes, meta) = release(dir);
    let loaded = TractRuntime
        .load(&bytes, &meta.interface)
        .map_err(|source| HealthFailure::Run {
            case: "load".into(),
            source,
        })?;
    health::check(loaded.model.as_ref(), &meta.interface, &meta.health)
}

#[test]
fn every_good_model_passes_its_golden_vectors_on_tract() {
    for dir in [
        "churn/1.0.0",
        "churn/2.0.0",
        "iris/1.0.0",
        "iris-sklearn/1.0.0",
        "text-encoder/1.0.0",
        "detector/1.0.0",
    ] {
        // Two cores shared with the rest of the test suite: judge latency against a budget ten
        // times wider, as the agent's `limits.latency_budget_factor` does on a slow board.
        let (bytes, mut meta) = release(dir);
        meta.health.p99_budget_ms *= 10.0;
        let loaded = TractRuntime.load(&bytes, &meta.interface).unwrap();
        let report = health::check(loaded.model.as_ref(), &meta.interface, &meta.health)
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert_eq!(
            report.timed_runs, meta.health.latency_runs as usize,
            "{dir}"
        );
    }
}

#[test]
fn the_vision_cnn_matches_onnxruntime_on_tract() {
    // Latency is not judged here (debug builds of the test harness vary); golden vectors are.
    let (bytes, mut meta) = release("vision/1.0.0");
    meta.health.p99_budget_ms = 1e9;
    meta.health.latency_runs = 1;
    let loaded = TractRuntime.load(&bytes, &meta.interface).unwrap();
    health::check(loaded.model.as_ref(), &meta.interface, &meta.health).unwrap();
}

#[test]
fn a_truncated_model_fails_to_load() {
    let (bytes, meta) = release("bad/truncated");
    let err = TractRuntime.load(&bytes, &meta.interface).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Load {
                runtime: "tract",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_graph_that_does_not_fit_its_interface_is_refused() {
    let (bytes, meta) = release("bad/wrong-shape");
    let err = TractRuntime.load(&bytes, &meta.interface).unwrap_err();
    assert!(matches!(err, Error::Load { .. }), "{err}");
}

#[test]
fn a_model_emitting_nan_fails_its_golden_vectors() {
    let err = check("bad/nan").unwrap_err();
    assert!(
        matches!(err, HealthFailure::Golden(Mismatch::NotFinite { .. })),
        "{err}"
    );
}

#[test]
fn a_model_far_slower_than_its_budget_fails_on_latency() {
    let err = check("bad/slow").unwrap_err();
    assert!(matches!(err, HealthFailure::Latency { .. }), "{err}");
}

#[test]
fn an_operator_tract_lacks_is_a_load_error_naming_it() {
    let (bytes, meta) = release("bad/unsupported-op");
    let err = TractRuntime.load(&bytes, &meta.interface).unwrap_err();
    assert!(err.to_string().contains("Det"), "{err}");
}

#[test]
fn predictions_through_the_feature_schema_name_a_label() {
    let (bytes, meta) = release("churn/2.0.0");
    let loaded = TractRuntime.load(&bytes, &meta.interface).unwrap();
    let row = serde_json::json!({
        "tenure_months": 2, "monthly_charges": 99.5, "total_charges": 199.0,
        "contract_type": "month-to-month", "payment_method": "electronic-check",
        "internet_service": "fiber", "support_tickets": 4
    });
    let inputs = edgefleet_inference::features_to_input(
        &meta.interface,
        &[row.as_object().unwrap().clone()],
    )
    .unwrap();
    let outputs = loaded.model.run(&inputs).unwrap();
    let spec = meta.interface.prediction.as_ref().unwrap();
    let p = spec.interpret(&outputs[spec.output()].data.floats_as_f32().unwrap());
    assert_eq!(p.label.as_deref(), Some("churn"), "{p:?}");
}

/// Token ids and their mask of different lengths break the `sequence` the interface names: the
/// request is refused naming both inputs and the axis, before the model runs; equal lengths of
/// any size serve.
#[test]
fn inputs_that_disagree_on_a_named_dimension_are_refused_before_the_model_runs() {
    use edgefleet_protocol::{Tensor, TensorData};
    let (bytes, mut meta) = release("text-encoder/1.0.0");
    for input in &mut meta.interface.inputs {
        input.dims = vec![Some("batch".into()), Some("sequence".into())];
    }
    meta.interface.validate().unwrap();
    let loaded = TractRuntime.load(&bytes, &meta.interface).unwrap();
    let tokens = |n: usize| Tensor {
        shape: vec![1, n],
        data: TensorData::Int64((0..n as i64).map(|i| 100 + i).collect()),
    };
    let inputs = |ids: usize, mask: usize| {
        edgefleet_inference::Inputs::from([
            ("input_ids".to_string(), tokens(ids)),
            ("attention_mask".to_string(), tokens(mask)),
        ])
    };
    for length in [3, 17] {
        let outputs = loaded.model.run(&inputs(length, length)).unwrap();
        assert_eq!(outputs["probabilities"].shape, [1, 2]);
    }
    let Err(Error::Input { name, detail }) = loaded.model.run(&inputs(7, 9)) else {
        panic!("served")
    };
    assert_eq!(name, "attention_mask");
    assert!(
        detail.contains("axis 1 (\"sequence\") is 9, but \"input_ids\" axis 1 is 7"),
        "{detail}"
    );
}
