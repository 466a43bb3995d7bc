//! The tract back-end: pure Rust, compiled into the agent, the default everywhere.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use edgefleet_protocol::DType;
use edgefleet_protocol::interface::ModelInterface;
use tract_onnx::WithOnnx;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::Factoid;

use crate::{Error, Inputs, Loaded, LoadedModel, Outputs, TensorData, check_inputs};

const NAME: &str = "tract";

#[derive(Debug, Default, Clone, Copy)]
pub struct TractRuntime;

impl crate::Runtime for TractRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> String {
        format!("tract {TRACT_SERIES}")
    }

    fn load(&self, bytes: &[u8], interface: &ModelInterface) -> Result<Loaded, Error> {
        self.load_artifact(crate::Artifact::Bytes(bytes), interface)
    }

    fn load_artifact(
        &self,
        artifact: crate::Artifact<'_>,
        interface: &ModelInterface,
    ) -> Result<Loaded, Error> {
        let started = Instant::now();
        let (typed, input_order) = decluttered(parsed(artifact)?, interface)?;
        let model = runnable(typed, interface, input_order, None)?;
        Ok(Loaded {
            model: Box::new(model),
            load_time: started.elapsed(),
        })
    }
}

/// The ONNX graph of an artifact. A file is mapped, not read: its pages are touched only as the
/// parser reads them, and the bytes are not copied into the heap before tract takes the tensors.
///
/// Exporters' shape hints (`value_info`, output shapes) are ignored: tract derives every shape
/// from the operators, and a hint naming its own symbol for a derived dimension (YOLOv8's
/// anchors, a detector's grid) would otherwise contradict the derivation and fail the load that
/// onnxruntime, which treats hints as hints, accepts.
fn parsed(artifact: crate::Artifact<'_>) -> Result<InferenceModel, Error> {
    let onnx = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .with_ignore_output_shapes(true);
    match artifact {
        crate::Artifact::Bytes(bytes) => onnx.model_for_read(&mut Cursor::new(bytes)),
        crate::Artifact::File { path, .. } => onnx.model_for_path(path),
    }
    .map_err(|e| load_err(format!("{e:#}")))
}

/// tract with a cache of decluttered models in NNEF next to the artifacts: a large model
/// reloads without parsing and analysing its ONNX again (ResNet50: 534 ms → 184 ms). Small ones
/// gain nothing or lose (ShuffleNet reloads slower from NNEF), so only artifacts of at least
/// `min_bytes` are cached. Entries are keyed by the sha256 of the tract series, the interface and
/// the artifact; a cache entry that fails to load is ignored and rewritten.
#[derive(Debug, Clone)]
pub struct CachedTractRuntime {
    pub dir: PathBuf,
    pub min_bytes: usize,
}

/// The tract release series whose NNEF the cache holds (checked against Cargo.lock by a test).
pub const TRACT_SERIES: &str = "0.23";

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    input_order: Vec<String>,
    output_names: Vec<String>,
}

impl CachedTractRuntime {
    /// The entry of an artifact with this sha256 (hex) under this interface and tract series.
    fn key(artifact_sha256_hex: &str, interface: &ModelInterface) -> String {
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        digest.update(TRACT_SERIES.as_bytes());
        digest.update(&serde_json::to_vec(interface).unwrap_or_default());
        digest.update(artifact_sha256_hex.as_bytes());
        hex::encode(digest.finish().as_ref())
    }

    fn cached_model(&self, key: &str, interface: &ModelInterface) -> Option<TractModel> {
        let entry: CacheEntry =
            serde_json::from_slice(&std::fs::read(self.dir.join(format!("{key}.json"))).ok()?)
                .ok()?;
        let mut tar = std::fs::File::open(self.dir.join(format!("{key}.nnef.tar"))).ok()?;
        let typed = nnef().model_for_read(&mut tar).ok()?;
        runnable(
            typed,
            interface,
            entry.input_order,
            Some(entry.output_names),
        )
        .ok()
    }

    /// Best effort: a full disk or a read-only cache only costs the next load its speed.
    fn store(&self, key: &str, typed: &TypedModel, model: &TractModel) {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let tar = self.dir.join(format!("{key}.nnef.tar"));
            let tmp = tar.with_extension("tmp");
            let file = std::fs::File::create(&tmp)?;
            nnef()
                .write_to_tar(typed, file)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            std::fs::rename(&tmp, &tar)?;
            let entry = CacheEntry {
                input_order: model.input_order.clone(),
                output_names: model.output_names.clone(),
            };
            std::fs::write(
                self.dir.join(format!("{key}.json")),
                serde_json::to_vec(&entry).map_err(std::io::Error::other)?,
            )?;
            self.prune()
        };
        let _ = write();
    }

    /// Keeps the newest `MAX_ENTRIES`: enough for the active and previous version of a few large
    /// models; an evicted one only reloads slower.
    fn prune(&self) -> std::io::Result<()> {
        const MAX_ENTRIES: usize = 8;
        let mut tars: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".nnef.tar"))
            .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
            .collect();
        tars.sort_by_key(|t| std::cmp::Reverse(t.0));
        for (_, tar) in tars.into_iter().skip(MAX_ENTRIES) {
            let _ = std::fs::remove_file(tar.with_extension("").with_extension("json"));
            let _ = std::fs::remove_file(&tar);
        }
        Ok(())
    }
}

impl crate::Runtime for CachedTractRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> String {
        TractRuntime.version()
    }

    fn load(&self, bytes: &[u8], interface: &ModelInterface) -> Result<Loaded, Error> {
        let sha256_hex =
            hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
        self.load_cached(
            crate::Artifact::Bytes(bytes),
            bytes.len() as u64,
            &sha256_hex,
            interface,
        )
    }

    fn load_artifact(
        &self,
        artifact: crate::Artifact<'_>,
        interface: &ModelInterface,
    ) -> Result<Loaded, Error> {
        match artifact {
            crate::Artifact::Bytes(bytes) => self.load(bytes, interface),
            crate::Artifact::File { path, sha256_hex } => {
                let size = std::fs::metadata(path)
                    .map_err(|e| load_err(format!("{}: {e}", path.display())))?
                    .len();
                self.load_cached(artifact, size, sha256_hex, interface)
            }
        }
    }
}

impl CachedTractRuntime {
    fn load_cached(
        &self,
        artifact: crate::Artifact<'_>,
        size: u64,
        sha256_hex: &str,
        interface: &ModelInterface,
    ) -> Result<Loaded, Error> {
        if size < self.min_bytes as u64 {
            return crate::Runtime::load_artifact(&TractRuntime, artifact, interface);
        }
        let started = Instant::now();
        let key = Self::key(sha256_hex, interface);
        if let Some(model) = self.cached_model(&key, interface) {
            return Ok(Loaded {
                model: Box::new(model),
                load_time: started.elapsed(),
            });
        }
        let (typed, input_order) = decluttered(parsed(artifact)?, interface)?;
        let model = runnable(typed.clone(), interface, input_order, None)?;
        let load_time = started.elapsed();
        self.store(&key, &typed, &model);
        Ok(Loaded {
            model: Box::new(model),
            load_time,
        })
    }
}

/// Runs tract's matrix products on `threads` threads of a private pool (the default, 1, keeps
/// every call on the caller's thread: a device serving concurrent requests already uses its
/// cores). A private pool, because tract's `Executor::multithread(1)` would use rayon's global one.
/// False when more than one thread was asked of a build without the `tract-threads` feature.
#[cfg(feature = "tract-threads")]
pub fn set_threads(threads: usize) -> bool {
    if threads > 1 {
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread(threads),
        );
    }
    true
}

/// This build runs tract on the caller's thread only (no `tract-threads` feature).
#[cfg(not(feature = "tract-threads"))]
pub fn set_threads(threads: usize) -> bool {
    threads <= 1
}

fn nnef() -> tract_nnef::framework::Nnef {
    tract_nnef::nnef().with_onnx()
}

fn load_err(detail: String) -> Error {
    Error::Load {
        runtime: NAME,
        detail,
    }
}

/// Parses the ONNX graph, fixes its input facts from the signed interface (matched by name, so
/// types and shapes are checked and the optimizer can specialise) and declutters it. Returns the
/// graph's input names in order.
///
/// A dynamic dimension takes the name the interface gives it, else the symbol the graph names it
/// by (`dim_param`: `batch`, `sequence`, `height`), so that inputs sharing a name share a size
/// and the others vary on their own; an unnamed one is `batch` on the first axis and a symbol of
/// its own elsewhere.
fn decluttered(
    mut model: InferenceModel,
    interface: &ModelInterface,
) -> Result<(TypedModel, Vec<String>), Error> {
    let batch = model.sym("batch");
    let graph_inputs: Vec<String> = model
        .input_outlets()
        .map_err(|e| load_err(format!("{e:#}")))?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    if graph_inputs.len() != interface.inputs.len() {
        return Err(load_err(format!(
            "graph has inputs {graph_inputs:?}, interface declares {:?}",
            interface.inputs.iter().map(|s| &s.name).collect::<Vec<_>>()
        )));
    }
    let mut input_order = Vec::with_capacity(graph_inputs.len());
    for (index, name) in graph_inputs.iter().enumerate() {
        let spec = interface
            .input(name)
            .ok_or_else(|| load_err(format!("graph input {name:?} is not in the interface")))?;
        let graph_dims: Vec<Option<TDim>> = model
            .input_fact(index)
            .map_err(|e| load_err(format!("{e:#}")))?
            .shape
            .dims()
            .map(|d| d.concretize())
            .collect();
        let dims: TVec<TDim> = spec
            .shape
            .iter()
            .enumerate()
            .map(
                |(axis, &d)| match (spec.dims.get(axis), graph_dims.get(axis)) {
                    _ if d >= 0 => TDim::Val(d),
                    (Some(Some(named)), _) => TDim::Sym(model.sym(named)),
                    (_, Some(Some(named @ TDim::Sym(_)))) => named.clone(),
                    _ if axis == 0 => TDim::Sym(batch.clone()),
                    _ => TDim::Sym(model.sym(&format!("{name}_{axis}"))),
                },
            )
            .collect();
        model
            .set_input_fact(index, InferenceFact::dt_shape(datum_type(spec.dtype), dims))
            .map_err(|e| load_err(format!("{e:#}")))?;
        input_order.push(name.clone());
    }
    let typed = model
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .map_err(|e| load_err(format!("{e:#}")))?;
    Ok((typed, input_order))
}

/// Optimizes a decluttered model into a runnable plan. `output_names` overrides the graph's
/// own labels (an NNEF round trip may rename outputs; positions are kept).
fn runnable(
    typed: TypedModel,
    interface: &ModelInterface,
    input_order: Vec<String>,
    output_names: Option<Vec<String>>,
) -> Result<TractModel, Error> {
    let optimized = typed
        .into_optimized()
        .map_err(|e| load_err(format!("{e:#}")))?;
    let labels: Vec<String> = optimized
        .output_outlets()
        .map_err(|e| load_err(format!("{e:#}")))?
        .iter()
        .map(|o| {
            optimized
                .outlet_label(*o)
                .map(str::to_string)
                .unwrap_or_else(|| optimized.node(o.node).name.clone())
        })
        .collect();
    let output_names = match output_names {
        Some(names) if names.len() == labels.len() => names,
        Some(names) => {
            return Err(load_err(format!(
                "cached model has {} outputs, expected {}",
                labels.len(),
                names.len()
            )));
        }
        None => labels,
    };
    let outlets = optimized
        .output_outlets()
        .map_err(|e| load_err(format!("{e:#}")))?;
    for spec in &interface.outputs {
        let Some(position) = output_names.iter().position(|n| *n == spec.name) else {
            return Err(load_err(format!(
                "interface output {:?} is not among the graph's outputs {output_names:?}",
                spec.name
            )));
        };
        let fact = optimized
            .outlet_fact(outlets[position])
            .map_err(|e| load_err(format!("{e:#}")))?;
        if fact.datum_type != datum_type(spec.dtype) {
            return Err(load_err(format!(
                "output {:?} is {:?} in the graph, the interface declares {}",
                spec.name, fact.datum_type, spec.dtype
            )));
        }
    }
    let plan = optimized
        .into_runnable()
        .map_err(|e| load_err(format!("{e:#}")))?;
    Ok(TractModel {
        plan,
        interface: interface.clone(),
        input_order,
        output_names,
        states: Mutex::new(Vec::new()),
    })
}

struct TractModel {
    plan: Arc<TypedRunnableModel>,
    interface: ModelInterface,
    input_order: Vec<String>,
    output_names: Vec<String>,
    /// Idle run states, reused so that a call does not rebuild per-node scratch state; one is
    /// taken per call, so concurrent calls never share one.
    states: Mutex<Vec<TypedSimpleState>>,
}

impl TractModel {
    fn take_state(&self) -> TractResult<TypedSimpleState> {
        let pooled = self.states.lock().ok().and_then(|mut pool| pool.pop());
        match pooled {
            Some(state) => Ok(state),
            None => self.plan.spawn(),
        }
    }

    fn return_state(&self, state: TypedSimpleState) {
        // Keep one idle state per core: enough for every core to run without rebuilding one,
        // while a burst of concurrent calls does not leave its scratch buffers behind.
        let keep = crate::cores();
        if let Ok(mut pool) = self.states.lock()
            && pool.len() < keep
        {
            pool.push(state);
        }
    }
}

impl LoadedModel for TractModel {
    fn runtime(&self) -> &'static str {
        NAME
    }

    fn run(&self, inputs: &Inputs) -> Result<Outputs, Error> {
        check_inputs(&self.interface, inputs)?;
        let run_err = |e: TractError| Error::Run {
            runtime: NAME,
            detail: format!("{e:#}"),
        };
        let mut values: TVec<TValue> = TVec::with_capacity(self.input_order.len());
        for name in &self.input_order {
            // check_inputs guarantees presence and a matching element count.
            let Some(t) = inputs.get(name) else {
                continue;
            };
            values.push(to_tract(t).map_err(run_err)?.into_tvalue());
        }
        let mut state = self.take_state().map_err(run_err)?;
        let result = state.run(values);
        self.return_state(state);
        let outputs = result.map_err(run_err)?;
        let mut named = Outputs::new();
        for (name, value) in self.output_names.iter().zip(outputs) {
            if self.interface.output(name).is_none() {
                continue;
            }
            named.insert(name.clone(), from_tract(&value).map_err(run_err)?);
        }
        Ok(named)
    }
}

fn datum_type(dtype: DType) -> DatumType {
    match dtype {
        DType::Float32 => DatumType::F32,
        DType::Float64 => DatumType::F64,
        DType::Float16 => DatumType::F16,
        DType::Int64 => DatumType::I64,
        DType::Int32 => DatumType::I32,
        DType::Int8 => DatumType::I8,
        DType::Uint8 => DatumType::U8,
        DType::Bool => DatumType::Bool,
        DType::String => DatumType::String,
    }
}

fn to_tract(tensor: &crate::Tensor) -> TractResult<Tensor> {
    let shape = &tensor.shape;
    match &tensor.data {
        TensorData::Float32(v) => Tensor::from_shape(shape, v),
        TensorData::Float64(v) => Tensor::from_shape(shape, v),
        TensorData::Float16(v) => Tensor::from_shape(shape, v),
        TensorData::Int64(v) => Tensor::from_shape(shape, v),
        TensorData::Int32(v) => Tensor::from_shape(shape, v),
        TensorData::Int8(v) => Tensor::from_shape(shape, v),
        TensorData::Uint8(v) => Tensor::from_shape(shape, v),
        TensorData::Bool(v) => Tensor::from_shape(shape, v),
        TensorData::String(v) => {
            Ok(tract_ndarray::ArrayD::from_shape_vec(shape.as_slice(), v.clone())?.into_tensor())
        }
    }
}

fn from_tract(value: &Tensor) -> TractResult<crate::Tensor> {
    fn elements<T: Datum + Clone>(value: &Tensor) -> TractResult<Vec<T>> {
        Ok(value.to_plain_array_view::<T>()?.iter().cloned().collect())
    }
    let data = match value.datum_type() {
        DatumType::F32 => TensorData::Float32(elements(value)?),
        DatumType::F64 => TensorData::Float64(elements(value)?),
        DatumType::F16 => TensorData::Float16(elements(value)?),
        DatumType::I64 => TensorData::Int64(elements(value)?),
        DatumType::I32 => TensorData::Int32(elements(value)?),
        DatumType::I8 => TensorData::Int8(elements(value)?),
        DatumType::U8 => TensorData::Uint8(elements(value)?),
        DatumType::Bool => TensorData::Bool(elements(value)?),
        DatumType::String => TensorData::String(elements(value)?),
        other => tract_onnx::prelude::tract_data::internal::bail!(
            "the model produced {other:?}, which no interface type holds"
        ),
    };
    Ok(crate::Tensor {
        shape: value.shape().to_vec(),
        data,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::Runtime;
    use edgefleet_protocol::target::ReleaseFiles;

    fn vision() -> (Vec<u8>, ModelInterface, crate::Inputs) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/vision/1.0.0");
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let meta = ReleaseFiles {
            release: &read("release.json"),
            interface: &read("interface.json"),
            health: &read("health.json"),
            baseline: None,
        }
        .assemble()
        .unwrap();
        let inputs = crate::health::case_inputs(&meta.interface, &meta.health.cases[0]).unwrap();
        (read("model.onnx"), meta.interface, inputs)
    }

    #[test]
    fn a_model_loaded_from_its_file_answers_as_from_its_bytes_and_shares_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let (bytes, interface, inputs) = vision();
        let path = tmp.path().join("model.onnx");
        std::fs::write(&path, &bytes).unwrap();
        let sha256_hex =
            hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes).as_ref());
        let file = crate::Artifact::File {
            path: &path,
            sha256_hex: &sha256_hex,
        };
        let expected = TractRuntime
            .load(&bytes, &interface)
            .unwrap()
            .model
            .run(&inputs)
            .unwrap();
        let from_file = TractRuntime.load_artifact(file, &interface).unwrap();
        assert_eq!(from_file.model.run(&inputs).unwrap(), expected);
        // Cached by the artifact's hash, however it was loaded first.
        let cached = CachedTractRuntime {
            dir: tmp.path().join("cache"),
            min_bytes: 0,
        };
        cached.load_artifact(file, &interface).unwrap();
        let key = CachedTractRuntime::key(&sha256_hex, &interface);
        assert!(cached.cached_model(&key, &interface).is_some());
        assert_eq!(
            cached
                .load(&bytes, &interface)
                .unwrap()
                .model
                .run(&inputs)
                .unwrap(),
            expected
        );
    }

    #[test]
    fn the_nnef_cache_reloads_the_same_model_and_shrugs_off_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let cached = CachedTractRuntime {
            dir: tmp.path().to_path_buf(),
            min_bytes: 0,
        };
        let (bytes, interface, inputs) = vision();
        let fresh = cached.load(&bytes, &interface).unwrap();
        let expected = fresh.model.run(&inputs).unwrap();
        let sha256_hex =
            hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes).as_ref());
        let key = CachedTractRuntime::key(&sha256_hex, &interface);
        let tar = tmp.path().join(format!("{key}.nnef.tar"));
        assert!(tar.exists());
        let reloaded = cached
            .cached_model(&key, &interface)
            .expect("served from the cache");
        assert_eq!(reloaded.run(&inputs).unwrap(), expected);
        // A damaged entry is ignored, the model loads from its ONNX, and the entry is rewritten.
        std::fs::write(&tar, b"not a tar").unwrap();
        assert!(cached.cached_model(&key, &interface).is_none());
        let again = cached.load(&bytes, &interface).unwrap();
        assert_eq!(again.model.run(&inputs).unwrap(), expected);
        assert!(cached.cached_model(&key, &interface).is_some());
        // Below the size threshold nothing is cached.
        let small = tempfile::tempdir().unwrap();
        CachedTractRuntime {
            dir: small.path().to_path_buf(),
            min_bytes: bytes.len() + 1,
        }
        .load(&bytes, &interface)
        .unwrap();
        assert_eq!(std::fs::read_dir(small.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_cache_key_names_the_tract_series_in_cargo_lock() {
        let lock = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"),
        )
        .unwrap();
        let version = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"tract-onnx\""))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
            .unwrap();
        assert!(
            version.starts_with(&format!("{TRACT_SERIES}.")),
            "tract-onnx {version}: update TRACT_SERIES so old NNEF caches are not reused"
        );
    }
}
