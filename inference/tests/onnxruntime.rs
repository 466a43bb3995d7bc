//! The ONNX Runtime back-end against the real `libonnxruntime.so` (the one in the onnxruntime
//! wheel `scripts/setup.sh` installs, or `EDGEFLEET_ONNXRUNTIME_LIB`), and the engine choosing
//! between it and tract.

#![cfg(feature = "onnxruntime")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use edgefleet_inference::onnxruntime::OnnxRuntime;
use edgefleet_inference::select::{Engine, TrialOutcome};
use edgefleet_inference::tract::TractRuntime;
use edgefleet_inference::{Error, Inputs, Loaded, LoadedModel, Outputs, Runtime, health};
use edgefleet_protocol::interface::ModelInterface;
use edgefleet_protocol::target::{ModelTargetMeta, RuntimePreference};

fn release(dir: &str) -> (Vec<u8>, ModelTargetMeta) {
    let (bytes, mut meta) = support::release(dir);
    // Two cores shared with the rest of the suite: latency is the benchmarks' business.
    meta.health.p99_budget_ms *= 50.0;
    (bytes, meta)
}

mod support;

fn ort() -> OnnxRuntime {
    OnnxRuntime::open(&support::onnxruntime_library(), 1).unwrap()
}

fn both() -> Engine {
    Engine::new(
        vec![Arc::new(TractRuntime), Arc::new(ort())],
        Vec::new(),
        RuntimePreference::Auto,
    )
}

#[test]
fn every_model_passes_its_golden_vectors_on_onnxruntime() {
    let runtime = ort();
    for dir in [
        "churn/1.0.0",
        "churn/2.0.0",
        "iris/1.0.0",
        "vision/1.0.0",
        "iris-sklearn/1.0.0",
        "text-encoder/1.0.0",
        "detector/1.0.0",
        "bad/unsupported-op",
    ] {
        let (bytes, mut meta) = release(dir);
        meta.health.latency_runs = 5;
        let loaded = runtime.load(&bytes, &meta.interface).unwrap();
        assert_eq!(loaded.model.runtime(), "onnxruntime");
        health::check(loaded.model.as_ref(), &meta.interface, &meta.health)
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
    }
}

#[test]
fn bad_models_fail_on_onnxruntime_for_their_own_reason() {
    let runtime = ort();
    let (bytes, meta) = release("bad/truncated");
    let err = runtime.load(&bytes, &meta.interface).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Load {
                runtime: "onnxruntime",
                ..
            }
        ),
        "{err}"
    );
    let (bytes, meta) = release("bad/wrong-shape");
    assert!(runtime.load(&bytes, &meta.interface).is_err());
    let (bytes, meta) = release("bad/nan");
    let loaded = runtime.load(&bytes, &meta.interface).unwrap();
    let err = health::check(loaded.model.as_ref(), &meta.interface, &meta.health).unwrap_err();
    assert!(
        err.to_string().contains("NaN") || err.to_string().contains("finite"),
        "{err}"
    );
}

#[test]
fn a_missing_library_makes_onnxruntime_unavailable_and_says_where_it_looked() {
    let err = OnnxRuntime::open(Path::new("/nonexistent/libonnxruntime.so"), 1).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/libonnxruntime.so"),
        "{err}"
    );
    // tract alone still serves under `auto` ...
    let engine = Engine::new(
        vec![Arc::new(TractRuntime)],
        vec![("onnxruntime", err.to_string())],
        RuntimePreference::Auto,
    );
    let (bytes, meta) = release("churn/2.0.0");
    let selected = engine
        .load(&bytes, &meta.interface, &meta.health, None)
        .unwrap();
    assert_eq!(selected.loaded.model.runtime(), "tract");
    // ... but a model pinned to onnxruntime is refused, naming why.
    let err = engine
        .load(
            &bytes,
            &meta.interface,
            &meta.health,
            Some(RuntimePreference::Onnxruntime),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/libonnxruntime.so"),
        "{err}"
    );
}

#[test]
fn auto_measures_both_and_serves_with_the_faster_that_passes() {
    let (bytes, meta) = release("churn/2.0.0");
    let selected = both()
        .load(&bytes, &meta.interface, &meta.health, None)
        .unwrap();
    assert_eq!(selected.trials.len(), 2, "{:?}", selected.trials);
    let p50 = |name: &str| {
        selected
            .trials
            .iter()
            .find_map(|t| match t.outcome {
                TrialOutcome::Passed { p50_ms, .. } if t.runtime == name => Some(p50_ms),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name} did not pass: {:?}", selected.trials))
    };
    let faster = if p50("tract") <= p50("onnxruntime") {
        "tract"
    } else {
        "onnxruntime"
    };
    assert_eq!(selected.loaded.model.runtime(), faster);
}

#[test]
fn a_model_only_onnxruntime_can_load_is_served_by_it() {
    let (bytes, meta) = release("bad/unsupported-op");
    let selected = both()
        .load(&bytes, &meta.interface, &meta.health, None)
        .unwrap();
    assert_eq!(selected.loaded.model.runtime(), "onnxruntime");
    let tract = selected
        .trials
        .iter()
        .find(|t| t.runtime == "tract")
        .unwrap();
    assert!(
        matches!(&tract.outcome, TrialOutcome::Failed(why) if why.contains("Det")),
        "{tract:?}"
    );
}

#[test]
fn when_no_back_end_passes_the_error_keeps_every_ones_reason() {
    // NaN on both: each trial fails on its own golden vectors.
    let (bytes, meta) = release("bad/nan");
    let err = both()
        .load(&bytes, &meta.interface, &meta.health, None)
        .unwrap_err();
    let Error::NoRuntimePassed { trials } = &err else {
        panic!("{err}")
    };
    assert_eq!(trials.len(), 2, "{trials:?}");
    let text = err.to_string();
    assert!(text.contains("tract: golden vectors"), "{text}");
    assert!(text.contains("onnxruntime: golden vectors"), "{text}");
    // One cannot load it, the other loads it and is too slow: both reasons again.
    let (bytes, mut meta) = release("bad/unsupported-op");
    meta.health.p99_budget_ms = 1e-9;
    let err = both()
        .load(&bytes, &meta.interface, &meta.health, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tract: tract could not load"), "{err}");
    assert!(err.contains("onnxruntime: p99 latency"), "{err}");
}

#[test]
fn a_pinned_runtime_is_used_without_measuring() {
    let (bytes, meta) = release("iris/1.0.0");
    for (preference, name) in [
        (RuntimePreference::Tract, "tract"),
        (RuntimePreference::Onnxruntime, "onnxruntime"),
    ] {
        let selected = both()
            .load(&bytes, &meta.interface, &meta.health, Some(preference))
            .unwrap();
        assert_eq!(selected.loaded.model.runtime(), name);
        assert_eq!(selected.trials[0].outcome, TrialOutcome::Unmeasured);
    }
}

/// A back-end that runs tract and then gets the answer wrong by 0.1: what a miscompiled kernel
/// or a broken build of a runtime looks like from outside.
#[derive(Debug)]
struct OffByATenth;

struct OffModel(Box<dyn LoadedModel>);

impl Runtime for OffByATenth {
    fn name(&self) -> &'static str {
        "off-by-a-tenth"
    }

    fn version(&self) -> String {
        "off-by-a-tenth 1".into()
    }

    fn load(&self, model: &[u8], interface: &ModelInterface) -> Result<Loaded, Error> {
        let inner = TractRuntime.load(model, interface)?;
        Ok(Loaded {
            model: Box::new(OffModel(inner.model)),
            load_time: inner.load_time,
        })
    }
}

impl LoadedModel for OffModel {
    fn runtime(&self) -> &'static str {
        "off-by-a-tenth"
    }

    fn run(&self, inputs: &Inputs) -> Result<Outputs, Error> {
        let mut outputs = self.0.run(inputs)?;
        for tensor in outputs.values_mut() {
            if let edgefleet_inference::TensorData::Float32(values) = &mut tensor.data {
                values.iter_mut().for_each(|v| *v += 0.1);
            }
        }
        Ok(outputs)
    }
}

#[test]
fn a_back_end_giving_wrong_answers_is_not_chosen_however_fast() {
    let (bytes, meta) = release("churn/2.0.0");
    // Listed first: it would win ties and it is as fast as tract.
    let engine = Engine::new(
        vec![Arc::new(OffByATenth), Arc::new(ort())],
        Vec::new(),
        RuntimePreference::Auto,
    );
    let selected = engine
        .load(&bytes, &meta.interface, &meta.health, None)
        .unwrap();
    assert_eq!(selected.loaded.model.runtime(), "onnxruntime");
    assert!(
        matches!(&selected.trials[0].outcome, TrialOutcome::Failed(why) if why.contains("golden")),
        "{:?}",
        selected.trials
    );
}
