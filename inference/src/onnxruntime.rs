//! The ONNX Runtime back-end: `libonnxruntime.so` loaded at run time through the `ort` crate,
//! never linked, so one agent binary runs with or without it. A missing or too old library only
//! makes this back-end unavailable; tract serves.
//!
//! Sessions run on `threads` intra-op threads (default 1, like tract): a device serves concurrent
//! requests from several sessions rather than splitting one request over cores, and the two
//! back-ends are compared on equal terms.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use edgefleet_protocol::DType;
use edgefleet_protocol::interface::ModelInterface;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use crate::{Error, F32Tensor, Inputs, Loaded, LoadedModel, Outputs, check_inputs};

const NAME: &str = "onnxruntime";

static ENVIRONMENT: Mutex<Option<(Environment, String)>> = Mutex::new(None);

pub struct OnnxRuntime {
    environment: Environment,
    library: String,
    threads: usize,
}

impl std::fmt::Debug for OnnxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxRuntime")
            .field("library", &self.library)
            .finish()
    }
}

impl OnnxRuntime {
    /// Loads `libonnxruntime.so` from `library`. The error says why it cannot be used (absent,
    /// not a shared library, older than 1.22). A process holds one library: later calls reuse
    /// the first one loaded.
    pub fn open(library: &Path, threads: usize) -> Result<Self, Error> {
        let unavailable = |detail: String| Error::Load {
            runtime: NAME,
            detail,
        };
        if !library.exists() {
            return Err(unavailable(format!("{} does not exist", library.display())));
        }
        let library_name = library.display().to_string();
        // ONNX Runtime allows one environment per process.
        let mut opened = ENVIRONMENT
            .lock()
            .map_err(|_| unavailable("poisoned".into()))?;
        if let Some((environment, loaded_from)) = opened.as_ref() {
            if *loaded_from != library_name {
                return Err(unavailable(format!(
                    "this process already loaded ONNX Runtime from {loaded_from}"
                )));
            }
            return Ok(Self {
                environment: environment.clone(),
                library: library_name,
                threads,
            });
        }
        let environment = ort::init_from(library)
            .map_err(|e| unavailable(e.to_string()))?
            .with_name("edgefleet")
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        *opened = Some((environment.clone(), library_name.clone()));
        Ok(Self {
            environment,
            library: library_name,
            threads,
        })
    }

    fn session(&self, bytes: &[u8]) -> Result<Session, String> {
        let text = |e: ort::Error<_>| e.to_string();
        Session::builder(&self.environment)
            .map_err(|e| e.to_string())?
            .with_intra_threads(self.threads.max(1))
            .map_err(text)?
            .with_inter_threads(1)
            .map_err(text)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(text)?
            .commit_from_memory(bytes)
            .map_err(|e| e.to_string())
    }
}

impl crate::Runtime for OnnxRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn load(&self, bytes: &[u8], interface: &ModelInterface) -> Result<Loaded, Error> {
        let started = Instant::now();
        let load_err = |detail: String| Error::Load {
            runtime: NAME,
            detail,
        };
        let session = self.session(bytes).map_err(load_err)?;
        let graph_inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_owned())
            .collect();
        let graph_outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        if graph_inputs.len() != interface.inputs.len() {
            return Err(load_err(format!(
                "graph has inputs {graph_inputs:?}, interface declares {:?}",
                interface.inputs.iter().map(|s| &s.name).collect::<Vec<_>>()
            )));
        }
        for input in session.inputs() {
            let name = input.name();
            let spec = interface
                .input(name)
                .ok_or_else(|| load_err(format!("graph input {name:?} is not in the interface")))?;
            // The graph's own shape must fit the signed one (-1 on either side is dynamic).
            let graph_shape: Vec<i64> = input
                .dtype()
                .tensor_shape()
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            let fits = graph_shape.len() == spec.shape.len()
                && graph_shape
                    .iter()
                    .zip(&spec.shape)
                    .all(|(&g, &i)| g < 0 || i < 0 || g == i);
            if !fits {
                return Err(load_err(format!(
                    "graph input {name:?} has shape {graph_shape:?}, the interface declares {:?}",
                    spec.shape
                )));
            }
            if spec.dtype != DType::Float32 {
                return Err(load_err(format!(
                    "input {name:?} is {:?}; this runtime serves float32 inputs only",
                    spec.dtype
                )));
            }
        }
        for spec in &interface.outputs {
            if !graph_outputs.contains(&spec.name) {
                return Err(load_err(format!(
                    "interface output {:?} is not among the graph's outputs {graph_outputs:?}",
                    spec.name
                )));
            }
        }
        Ok(Loaded {
            model: Box::new(OrtModel {
                runtime: OnnxRuntime {
                    environment: self.environment.clone(),
                    library: self.library.clone(),
                    threads: self.threads,
                },
                bytes: Arc::from(bytes),
                interface: interface.clone(),
                sessions: Mutex::new(vec![session]),
            }),
            load_time: started.elapsed(),
        })
    }
}

struct OrtModel {
    runtime: OnnxRuntime,
    /// Kept to open another session when concurrent calls find none idle.
    bytes: Arc<[u8]>,
    interface: ModelInterface,
    /// Idle sessions: `Session::run` takes `&mut`, so each call borrows one of its own.
    sessions: Mutex<Vec<Session>>,
}

impl OrtModel {
    fn take_session(&self) -> Result<Session, Error> {
        let pooled = self.sessions.lock().ok().and_then(|mut pool| pool.pop());
        match pooled {
            Some(session) => Ok(session),
            None => self
                .runtime
                .session(&self.bytes)
                .map_err(|detail| Error::Run {
                    runtime: NAME,
                    detail,
                }),
        }
    }

    fn return_session(&self, session: Session) {
        // One idle session per core, as tract keeps one state per core.
        let keep = crate::cores();
        if let Ok(mut pool) = self.sessions.lock()
            && pool.len() < keep
        {
            pool.push(session);
        }
    }
}

impl LoadedModel for OrtModel {
    fn runtime(&self) -> &'static str {
        NAME
    }

    fn run(&self, inputs: &Inputs) -> Result<Outputs, Error> {
        check_inputs(&self.interface, inputs)?;
        let run_err = |e: ort::Error| Error::Run {
            runtime: NAME,
            detail: e.to_string(),
        };
        let mut values = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let value = TensorRef::from_array_view((tensor.shape.clone(), tensor.data.as_slice()))
                .map_err(run_err)?;
            values.push((name.as_str(), value));
        }
        let mut session = self.take_session()?;
        let result = session.run(values).map_err(run_err).and_then(|outputs| {
            let mut named = Outputs::new();
            for spec in &self.interface.outputs {
                let value = outputs.get(&spec.name).ok_or_else(|| Error::Run {
                    runtime: NAME,
                    detail: format!("output {:?} missing from the result", spec.name),
                })?;
                let (shape, data) = value.try_extract_tensor::<f32>().map_err(run_err)?;
                named.insert(
                    spec.name.clone(),
                    F32Tensor {
                        shape: shape
                            .iter()
                            .map(|&d| usize::try_from(d).unwrap_or(0))
                            .collect(),
                        data: data.to_vec(),
                    },
                );
            }
            Ok(named)
        });
        self.return_session(session);
        result
    }
}
