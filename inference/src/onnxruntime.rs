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
use ort::session::SessionInputValue;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, TensorElementType, TensorRef};

use crate::{Error, Inputs, Loaded, LoadedModel, Outputs, Tensor, TensorData, check_inputs};

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

    /// The library's path, size and modification time: a replaced `libonnxruntime.so` is another
    /// version, whatever it calls itself.
    fn version(&self) -> String {
        let meta = std::fs::metadata(&self.library).ok();
        let modified = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!(
            "onnxruntime {} {} bytes {modified} threads {}",
            self.library,
            meta.map_or(0, |m| m.len()),
            self.threads
        )
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
            let graph_type = input.dtype().tensor_type();
            if graph_type != Some(element_type(spec.dtype)) {
                return Err(load_err(format!(
                    "input {name:?} is {graph_type:?} in the graph, the interface declares {}",
                    spec.dtype
                )));
            }
        }
        for spec in &interface.outputs {
            let Some(output) = session.outputs().iter().find(|o| o.name() == spec.name) else {
                return Err(load_err(format!(
                    "interface output {:?} is not among the graph's outputs {graph_outputs:?}",
                    spec.name
                )));
            };
            let graph_type = output.dtype().tensor_type();
            if graph_type != Some(element_type(spec.dtype)) {
                return Err(load_err(format!(
                    "output {:?} is {graph_type:?} in the graph, the interface declares {}",
                    spec.name, spec.dtype
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
        let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            values.push((name.as_str(), to_ort(tensor).map_err(run_err)?));
        }
        let mut session = self.take_session()?;
        let result = session.run(values).map_err(run_err).and_then(|outputs| {
            let mut named = Outputs::new();
            for spec in &self.interface.outputs {
                let value = outputs.get(&spec.name).ok_or_else(|| Error::Run {
                    runtime: NAME,
                    detail: format!("output {:?} missing from the result", spec.name),
                })?;
                named.insert(
                    spec.name.clone(),
                    from_ort(value, spec.dtype).map_err(run_err)?,
                );
            }
            Ok(named)
        });
        self.return_session(session);
        result
    }
}

fn element_type(dtype: DType) -> TensorElementType {
    match dtype {
        DType::Float32 => TensorElementType::Float32,
        DType::Float64 => TensorElementType::Float64,
        DType::Float16 => TensorElementType::Float16,
        DType::Int64 => TensorElementType::Int64,
        DType::Int32 => TensorElementType::Int32,
        DType::Int8 => TensorElementType::Int8,
        DType::Uint8 => TensorElementType::Uint8,
        DType::Bool => TensorElementType::Bool,
        DType::String => TensorElementType::String,
    }
}

/// A borrowed view of the tensor's elements (a string tensor is copied: ONNX Runtime keeps
/// its own representation of strings).
fn to_ort(tensor: &Tensor) -> ort::Result<SessionInputValue<'_>> {
    let shape = tensor.shape.clone();
    Ok(match &tensor.data {
        TensorData::Float32(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Float64(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Float16(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Int64(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Int32(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Int8(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Uint8(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Bool(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::String(v) => {
            ort::value::Tensor::from_string_array((shape, v.as_slice()))?.into()
        }
    })
}

/// The output in the type the interface declares (checked against the graph at load).
fn from_ort(value: &DynValue, dtype: DType) -> ort::Result<Tensor> {
    fn elements<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> ort::Result<(Vec<usize>, Vec<T>)> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok((dims(shape), data.to_vec()))
    }
    fn dims(shape: &ort::value::Shape) -> Vec<usize> {
        shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect()
    }
    let (shape, data) = match dtype {
        DType::Float32 => elements(value).map(|(s, v)| (s, TensorData::Float32(v)))?,
        DType::Float64 => elements(value).map(|(s, v)| (s, TensorData::Float64(v)))?,
        DType::Float16 => elements(value).map(|(s, v)| (s, TensorData::Float16(v)))?,
        DType::Int64 => elements(value).map(|(s, v)| (s, TensorData::Int64(v)))?,
        DType::Int32 => elements(value).map(|(s, v)| (s, TensorData::Int32(v)))?,
        DType::Int8 => elements(value).map(|(s, v)| (s, TensorData::Int8(v)))?,
        DType::Uint8 => elements(value).map(|(s, v)| (s, TensorData::Uint8(v)))?,
        DType::Bool => elements(value).map(|(s, v)| (s, TensorData::Bool(v)))?,
        DType::String => {
            let (shape, strings) = value.try_extract_strings()?;
            (dims(shape), TensorData::String(strings))
        }
    };
    Ok(Tensor { shape, data })
}
