//! What an ONNX model declares at its edges — input and output names, element types and dims —
//! read from the protobuf without loading the graph, and the check of a signed interface against
//! it. `fleetctl push` runs the check so that an operator learns of an interface no device can
//! serve before anything is signed, not from a fleet of refusals.
//!
//! Only the few fields needed are decoded (prost skips the rest without copying): the graph's
//! inputs, outputs and initializer names.

use edgefleet_protocol::DType;
use edgefleet_protocol::interface::{BATCH_DIM, ModelInterface, TensorSpec, is_dim_name};

mod external;
mod proto;

pub use external::{ExternalRef, external_refs, inline_external_data};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not an ONNX model ({0}); export the model again or check the file")]
    Decode(#[from] prost::DecodeError),
    #[error("the ONNX model has no graph")]
    NoGraph,
    #[error("external data of the ONNX model: {0}")]
    External(String),
    #[error(
        "the interface does not fit the model's graph:\n  - {}\nfix interface.json (or re-export the model) and push again",
        .0.join("\n  - ")
    )]
    Mismatch(Vec<String>),
}

/// One input or output as the graph declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphValue {
    pub name: String,
    pub kind: ValueKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    /// A tensor of ONNX element type `elem_type`; `dims` is `None` when the graph gives no shape.
    Tensor {
        elem_type: i32,
        dims: Option<Vec<Dim>>,
    },
    /// A sequence, map, optional or sparse tensor (what `kind` says).
    Other(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    Fixed(i64),
    Named(String),
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GraphSignature {
    pub inputs: Vec<GraphValue>,
    pub outputs: Vec<GraphValue>,
}

/// Reads the graph's declared inputs (initializers excluded: old exporters list weights as
/// inputs) and outputs.
pub fn read(model: &[u8]) -> Result<GraphSignature, Error> {
    let model = <proto::Model as prost::Message>::decode(model)?;
    let graph = model.graph.ok_or(Error::NoGraph)?;
    let weights: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|v| !weights.contains(v.name.as_str()))
        .map(proto::ValueInfo::to_value)
        .collect();
    let outputs = graph
        .output
        .iter()
        .map(proto::ValueInfo::to_value)
        .collect();
    Ok(GraphSignature { inputs, outputs })
}

/// The interface type of an ONNX element type, or the ONNX name of one Edgefleet does not serve.
pub fn dtype_of(elem_type: i32) -> Result<DType, &'static str> {
    Ok(match elem_type {
        1 => DType::Float32,
        2 => DType::Uint8,
        3 => DType::Int8,
        6 => DType::Int32,
        7 => DType::Int64,
        8 => DType::String,
        9 => DType::Bool,
        10 => DType::Float16,
        11 => DType::Float64,
        4 => return Err("uint16"),
        5 => return Err("int16"),
        12 => return Err("uint32"),
        13 => return Err("uint64"),
        14 => return Err("complex64"),
        15 => return Err("complex128"),
        16 => return Err("bfloat16"),
        0 => return Err("undefined"),
        _ => return Err("a float8/int4 type"),
    })
}

/// What a device will make of a model that passed [`check`]: facts the operator should know,
/// none of them a reason to refuse.
#[derive(Debug, Clone, PartialEq)]
pub struct Notes(pub Vec<String>);

/// Checks the interface against the graph: the same inputs, each interface output among the
/// graph's, the same element types and ranks, and fixed dims that agree. Every problem is named
/// in one error, with the tensor and what to change.
pub fn check(graph: &GraphSignature, interface: &ModelInterface) -> Result<Notes, Error> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for value in &graph.inputs {
        if interface.input(&value.name).is_none() {
            problems.push(format!(
                "graph input {:?} is missing from the interface's inputs",
                value.name
            ));
        }
    }
    for (role, specs, values) in [
        ("input", &interface.inputs, &graph.inputs),
        ("output", &interface.outputs, &graph.outputs),
    ] {
        for spec in specs {
            let Some(value) = values.iter().find(|v| v.name == spec.name) else {
                let names: Vec<&str> = values.iter().map(|v| v.name.as_str()).collect();
                problems.push(format!(
                    "{role} {:?} is not among the graph's {role}s {names:?}",
                    spec.name
                ));
                continue;
            };
            compare(role, spec, value, &mut problems);
            if spec.dtype == DType::String {
                notes.push(format!(
                    "{role} {:?} is a string tensor: only ONNX Runtime serves it (tract cannot), \
                     so devices need runtime = \"auto\" or \"onnxruntime\" with the library",
                    spec.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(Notes(notes))
    } else {
        Err(Error::Mismatch(problems))
    }
}

fn compare(role: &str, spec: &TensorSpec, value: &GraphValue, problems: &mut Vec<String>) {
    let name = &spec.name;
    let (elem_type, dims) = match &value.kind {
        ValueKind::Tensor { elem_type, dims } => (*elem_type, dims),
        ValueKind::Other(kind) => {
            problems.push(format!(
                "{role} {name:?} is a {kind} in the graph, not a tensor: no back-end serves it \
                 over the inference protocol (a scikit-learn ZipMap: convert with \
                 options={{id(model): {{\"zipmap\": False}}}})"
            ));
            return;
        }
    };
    match dtype_of(elem_type) {
        Err(onnx_name) => problems.push(format!(
            "{role} {name:?} is {onnx_name} in the graph, which no back-end serves; cast it to \
             one of float32, float64, float16, int64, int32, int8, uint8, bool, string in the \
             graph"
        )),
        Ok(dtype) if dtype != spec.dtype => problems.push(format!(
            "{role} {name:?} is {} in the graph, the interface declares {}; declare \"{}\"",
            dtype,
            spec.dtype,
            serde_name(dtype)
        )),
        Ok(_) => {}
    }
    let Some(dims) = dims else {
        return;
    };
    if dims.len() != spec.shape.len() {
        problems.push(format!(
            "{role} {name:?} has rank {} in the graph ({}), the interface declares {:?}",
            dims.len(),
            describe(dims),
            spec.shape
        ));
        return;
    }
    for (axis, (dim, &declared)) in dims.iter().zip(&spec.shape).enumerate() {
        if let (Dim::Named(graph_name), Some(Some(named))) = (dim, spec.dims.get(axis))
            && graph_name != named
            && role == "input"
        {
            problems.push(format!(
                "{role} {name:?} axis {axis} is {graph_name:?} in the graph, the interface names \
                 it {named:?}; use the graph's name or null (inputs sharing a name share a size)"
            ));
        }
        match (dim, declared) {
            (Dim::Fixed(g), d) if d >= 0 && *g != d => problems.push(format!(
                "{role} {name:?} axis {axis} is {g} in the graph, the interface declares {d}"
            )),
            (Dim::Fixed(g), d) if d < 0 && role == "input" => problems.push(format!(
                "{role} {name:?} axis {axis} is fixed at {g} in the graph; declare {g}, not -1 \
                 (a request of another size would fail inside the model)"
            )),
            _ => {}
        }
    }
}

/// Names the interface's anonymous dynamic input axes after the graph's (`dim_param`), so that
/// devices hold requests to the sizes the graph ties together (inputs sharing `sequence` agree)
/// and name them in their refusals. Returns what it named, for the operator. Run after
/// [`check`]; names the interface cannot carry are left out.
pub fn name_dims(graph: &GraphSignature, interface: &mut ModelInterface) -> Vec<String> {
    let mut named = Vec::new();
    for spec in &mut interface.inputs {
        let Some(ValueKind::Tensor {
            dims: Some(dims), ..
        }) = graph
            .inputs
            .iter()
            .find(|v| v.name == spec.name)
            .map(|v| &v.kind)
        else {
            continue;
        };
        if dims.len() != spec.shape.len() {
            continue;
        }
        let mut names = if spec.dims.is_empty() {
            vec![None; spec.shape.len()]
        } else {
            spec.dims.clone()
        };
        let mut changed = false;
        for (axis, dim) in dims.iter().enumerate() {
            // A dynamic first axis is `batch` already: naming it so would only make the metadata
            // longer (and unreadable to agents from before `dims`).
            if let Dim::Named(graph_name) = dim
                && spec.shape[axis] < 0
                && names[axis].is_none()
                && is_dim_name(graph_name)
                && !(axis == 0 && graph_name == BATCH_DIM)
            {
                names[axis] = Some(graph_name.clone());
                changed = true;
            }
        }
        if changed {
            spec.dims = names;
            let shown: Vec<String> = (0..spec.shape.len())
                .map(|axis| match (spec.dim_name(axis), spec.shape[axis]) {
                    (Some(n), _) => n.to_owned(),
                    (None, size) if size >= 0 => size.to_string(),
                    (None, _) => "?".into(),
                })
                .collect();
            named.push(format!(
                "input {:?} axes named [{}]",
                spec.name,
                shown.join(", ")
            ));
        }
    }
    named
}

fn serde_name(dtype: DType) -> String {
    dtype
        .to_string()
        .to_lowercase()
        .replace("fp", "float")
        .replace("bytes", "string")
}

fn describe(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => v.to_string(),
            Dim::Named(n) => n.clone(),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests;
