//! Edgefleet's inference engine: turn verified model bytes into something that predicts, and
//! judge whether it predicts well enough to serve.
//!
//! - [`Runtime`] loads a model ([`Artifact`]: bytes, or a stored file whose sha256 the caller
//!   has just verified) with input facts fixed from the model's signed interface; [`LoadedModel`]
//!   runs it and may be shared across threads. tract maps a file rather than reading it, so a
//!   model is never in memory twice while it loads.
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
    /// Every back-end was tried and none passed; each one's reason is kept.
    #[error("no runtime passed: {}", select::reasons(.trials))]
    NoRuntimePassed { trials: Vec<select::Trial> },
}

pub use edgefleet_protocol::{DType, Tensor, TensorData};

/// Named inputs of one inference call, in any order.
pub type Inputs = BTreeMap<String, Tensor>;
/// Named outputs of one inference call.
pub type Outputs = BTreeMap<String, Tensor>;

/// A model artifact to load.
#[derive(Debug, Clone, Copy)]
pub enum Artifact<'a> {
    Bytes(&'a [u8]),
    /// A file whose content the caller verified to have this sha256 (hex) just before.
    File {
        path: &'a std::path::Path,
        sha256_hex: &'a str,
    },
}

/// An inference back-end.
pub trait Runtime: Send + Sync + std::fmt::Debug {
    /// Short name reported to operators (`tract`, `onnxruntime`).
    fn name(&self) -> &'static str;

    /// What identifies this back-end's build, for caching what it measured: a result measured
    /// on another version may not hold.
    fn version(&self) -> String;

    /// Builds a runnable model from the artifact's bytes, with input shapes fixed from
    /// `interface` (dynamic dimensions stay symbolic).
    fn load(&self, model: &[u8], interface: &ModelInterface) -> Result<Loaded, Error>;

    /// [`Runtime::load`] for any [`Artifact`]. A file is read whole unless the back-end can do
    /// better (tract maps it).
    fn load_artifact(
        &self,
        artifact: Artifact<'_>,
        interface: &ModelInterface,
    ) -> Result<Loaded, Error> {
        match artifact {
            Artifact::Bytes(bytes) => self.load(bytes, interface),
            Artifact::File { path, .. } => {
                let bytes = std::fs::read(path).map_err(|e| Error::Load {
                    runtime: self.name(),
                    detail: format!("{}: {e}", path.display()),
                })?;
                self.load(&bytes, interface)
            }
        }
    }
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
        Tensor {
            shape: vec![rows.len(), width],
            data: TensorData::Float32(data),
        },
    )]))
}

/// Checks `inputs` against the interface: every declared input present, nothing else, each of
/// its declared type, shapes fitting their specs, data length matching the shape, and axes that
/// share a name ([`TensorSpec::dim_name`]) of one size. A request that breaks one of these is the
/// caller's error, named here, never a failure inside the model.
///
/// [`TensorSpec::dim_name`]: edgefleet_protocol::interface::TensorSpec::dim_name
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
        if tensor.dtype() != spec.dtype {
            return Err(Error::Input {
                name: spec.name.clone(),
                detail: format!("is {}, the model takes {}", tensor.dtype(), spec.dtype),
            });
        }
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
    check_shared_dims(interface, inputs)
}

fn check_shared_dims(interface: &ModelInterface, inputs: &Inputs) -> Result<(), Error> {
    // First input to give each named axis a size: (size, input, axis).
    let mut sizes: BTreeMap<&str, (usize, &str, usize)> = BTreeMap::new();
    for spec in &interface.inputs {
        let Some(tensor) = inputs.get(&spec.name) else {
            continue;
        };
        for (axis, &size) in tensor.shape.iter().enumerate() {
            let Some(dim) = spec.dim_name(axis) else {
                continue;
            };
            match sizes.get(dim) {
                None => {
                    sizes.insert(dim, (size, &spec.name, axis));
                }
                Some(&(first, other, other_axis)) if first != size => {
                    return Err(Error::Input {
                        name: spec.name.clone(),
                        detail: format!(
                            "axis {axis} ({dim:?}) is {size}, but {other:?} axis {other_axis} \
                             is {first}; inputs sharing the dimension {dim:?} must agree"
                        ),
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}
