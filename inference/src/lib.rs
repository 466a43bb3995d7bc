//! Edgefleet's inference engine: turn verified model bytes into something that predicts, and
//! judge whether it predicts well enough to serve.
//!
//! - [`Runtime`] loads a model from bytes (never from a path: what was verified is what runs)
//!   with input facts fixed from the model's signed interface; [`LoadedModel`] runs it and may be
//!   shared across threads.
//! - [`tract::TractRuntime`] is the default back-end: pure Rust, compiled in.
//! - [`health::check`] runs a model's health check: warm-up, golden vectors within tolerance,
//!   no NaN or infinity, p99 latency within budget.
//! - [`features_to_input`] applies the feature schema so that `:predict` and the golden vectors go
//!   through the same code.
//!
//! Test with `cargo test -p edgefleet-inference`: the tests load every model under `models/`.

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_protocol::interface::ModelInterface;

pub mod health;
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;
pub mod select;
pub mod tract;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{runtime} could not load the model: {detail}")]
    Load {
        runtime: &'static str,
        detail: String,
    },
    #[error("{runtime} failed to run the model: {detail}")]
    Run {
        runtime: &'static str,
        detail: String,
    },
    #[error("input {name:?}: {detail}")]
    Input { name: String, detail: String },
    #[error(transparent)]
    Protocol(#[from] edgefleet_protocol::Error),
}

/// A float32 tensor on its way into or out of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Named inputs of one inference call, in any order.
pub type Inputs = BTreeMap<String, F32Tensor>;
/// Named outputs of one inference call.
pub type Outputs = BTreeMap<String, F32Tensor>;

/// An inference back-end.
pub trait Runtime: Send + Sync + std::fmt::Debug {
    /// Short name reported to operators (`tract`, `onnxruntime`).
    fn name(&self) -> &'static str;

    /// Builds a runnable model from the artifact's bytes, with input shapes fixed from
    /// `interface` (dynamic dimensions stay symbolic).
    fn load(&self, model: &[u8], interface: &ModelInterface) -> Result<Loaded, Error>;
}

/// A model ready to run, and what loading it cost.
pub struct Loaded {
    pub model: Box<dyn LoadedModel>,
    pub load_time: Duration,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("runtime", &self.model.runtime())
            .field("load_time", &self.load_time)
            .finish()
    }
}

pub trait LoadedModel: Send + Sync {
    fn runtime(&self) -> &'static str;
    /// Runs one inference. Inputs are checked against the interface; outputs are named as in it.
    fn run(&self, inputs: &Inputs) -> Result<Outputs, Error>;
}

/// The cores this process may use, read once: `available_parallelism` reads cgroup files on every
/// call, which cost more than a small model's whole inference.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Encodes feature rows into the input tensor named by the interface's feature schema.
pub fn features_to_input(
    interface: &ModelInterface,
    rows: &[serde_json::Map<String, serde_json::Value>],
) -> Result<Inputs, Error> {
    let schema = interface.features.as_ref().ok_or_else(|| Error::Input {
        name: "features".into(),
        detail: "this model takes tensors, not named features".into(),
    })?;
    let width = schema.width();
    let mut data = Vec::with_capacity(width * rows.len());
    for row in rows {
        schema.encode_into(row, &mut data)?;
    }
    Ok(BTreeMap::from([(
        schema.input.clone(),
        F32Tensor {
            shape: vec![rows.len(), width],
            data,
        },
    )]))
}

/// Checks `inputs` against the interface: every declared input present, nothing else, shapes
/// fitting their specs, data length matching the shape.
pub fn check_inputs(interface: &ModelInterface, inputs: &Inputs) -> Result<(), Error> {
    if let Some(extra) = inputs.keys().find(|k| interface.input(k).is_none()) {
        return Err(Error::Input {
            name: extra.clone(),
            detail: "the model has no such input".into(),
        });
    }
    for spec in &interface.inputs {
        let tensor = inputs.get(&spec.name).ok_or_else(|| Error::Input {
            name: spec.name.clone(),
            detail: "missing".into(),
        })?;
        if !spec.accepts_shape(&tensor.shape) {
            return Err(Error::Input {
                name: spec.name.clone(),
                detail: format!("shape {:?} does not fit {:?}", tensor.shape, spec.shape),
            });
        }
        if edgefleet_protocol::Tensor::element_count(&tensor.shape) != Some(tensor.data.len()) {
            return Err(Error::Input {
                name: spec.name.clone(),
                detail: format!(
                    "shape {:?} does not match {} values",
                    tensor.shape,
                    tensor.data.len()
                ),
            });
        }
    }
    Ok(())
}
