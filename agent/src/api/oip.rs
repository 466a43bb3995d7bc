//! Open Inference Protocol requests and responses: JSON tensors, and the binary tensor data
//! extension KServe and Triton clients send (`Inference-Header-Content-Length: N`: the first N
//! bytes are the JSON header, the rest the raw tensors, little-endian, in the order of the inputs
//! that say `"parameters": {"binary_data_size": n}`). A response carries an output as binary when
//! the request asks (`outputs[i].parameters.binary_data`, or `parameters.binary_data_output`).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgefleet_inference::{Inputs, Outputs, Tensor};
use edgefleet_protocol::DType;
use edgefleet_protocol::interface::ModelInterface;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, protocol_error};

pub(super) const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    parameters: Parameters,
}

#[derive(Debug, Deserialize)]
pub(super) struct InferInput {
    pub name: String,
    pub shape: Vec<usize>,
    pub datatype: String,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub parameters: Parameters,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Parameters,
}

/// The protocol's free-form parameters; the ones this API reads. Others are ignored, as the
/// protocol lets servers do.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Parameters {
    #[serde(default)]
    pub binary_data_size: Option<usize>,
    #[serde(default)]
    binary_data: Option<bool>,
    #[serde(default)]
    binary_data_output: Option<bool>,
}

/// A decoded request: the model's inputs and which outputs go back, how.
pub(super) struct Decoded {
    pub id: Option<String>,
    pub inputs: Inputs,
    pub wanted: Wanted,
}

/// Which outputs the response carries (all, or the named ones) and which of them as binary.
pub(super) struct Wanted {
    names: Option<Vec<(String, bool)>>,
    binary_by_default: bool,
}

fn bad(error: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, error)
}

/// Reads a request body, JSON alone or JSON header plus binary tensors.
pub(super) fn decode_request(
    interface: &ModelInterface,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Decoded, ApiError> {
    let (json, mut binary) = match headers.get(HEADER_LENGTH) {
        None => (body, &[][..]),
        Some(value) => {
            let length = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| n <= body.len())
                .ok_or_else(|| {
                    bad(format!(
                        "Inference-Header-Content-Length {value:?} is not a length within the \
                         {}-byte body",
                        body.len()
                    ))
                    .field("Inference-Header-Content-Length")
                })?;
            body.split_at(length)
        }
    };
    let request: InferRequest = serde_json::from_slice(json)
        .map_err(|e| bad(format!("invalid JSON (header) of the request: {e}")).field("body"))?;
    let mut inputs = Inputs::new();
    for input in &request.inputs {
        let raw = match input.parameters.binary_data_size {
            None => None,
            Some(size) => {
                let (chunk, rest) = binary.split_at_checked(size).ok_or_else(|| {
                    bad(format!(
                        "input {:?}: binary_data_size {size} goes past the {} bytes of binary \
                         data left",
                        input.name,
                        binary.len()
                    ))
                    .field(input.name.clone())
                })?;
                binary = rest;
                Some(chunk)
            }
        };
        let tensor = request_tensor(interface, input, raw)?;
        if inputs.insert(input.name.clone(), tensor).is_some() {
            return Err(
                bad(format!("input {:?} is given twice", input.name)).field(input.name.clone())
            );
        }
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data follow the header that no input's binary_data_size claims",
            binary.len()
        ))
        .field("body"));
    }
    let binary_by_default = request.parameters.binary_data_output.unwrap_or(false);
    let names = match request.outputs {
        None => None,
        Some(outputs) => {
            let mut names = Vec::with_capacity(outputs.len());
            for o in outputs {
                if interface.output(&o.name).is_none() {
                    let known: Vec<&str> =
                        interface.outputs.iter().map(|s| s.name.as_str()).collect();
                    return Err(bad(format!(
                        "output {:?} is not one of the model's {known:?}",
                        o.name
                    ))
                    .field(o.name));
                }
                let binary = o.parameters.binary_data.unwrap_or(binary_by_default);
                names.push((o.name, binary));
            }
            Some(names)
        }
    };
    Ok(Decoded {
        id: request.id,
        inputs,
        wanted: Wanted {
            names,
            binary_by_default,
        },
    })
}

/// One input, read as the datatype it names, which must be the one the model declares (a
/// client sending INT32 ids to an INT64 input learns so, rather than getting a cast); from its
/// JSON `data`, or from `raw` binary data.
pub(super) fn request_tensor(
    interface: &ModelInterface,
    input: &InferInput,
    raw: Option<&[u8]>,
) -> Result<Tensor, ApiError> {
    let refuse =
        |detail: String| bad(format!("input {:?}: {detail}", input.name)).field(input.name.clone());
    let spec = interface.input(&input.name).ok_or_else(|| {
        let names: Vec<&str> = interface.inputs.iter().map(|s| s.name.as_str()).collect();
        refuse(format!("the model has no such input; it takes {names:?}"))
    })?;
    let Some(dtype) = DType::from_kserve_name(&input.datatype) else {
        let known: Vec<&str> = DType::ALL.iter().map(|d| d.kserve_name()).collect();
        return Err(refuse(format!(
            "unknown datatype {:?}; one of {known:?}",
            input.datatype
        )));
    };
    if dtype != spec.dtype {
        return Err(refuse(format!(
            "datatype {dtype} does not match the model's {}",
            spec.dtype
        )));
    }
    let tensor = match (raw, &input.data) {
        (Some(bytes), None) => {
            Tensor::from_le_bytes(dtype, input.shape.clone(), bytes, &input.name)
                .map_err(|e| protocol_error(&e))?
        }
        (None, Some(data)) => Tensor::from_json(dtype, input.shape.clone(), data, &input.name)
            .map_err(|e| protocol_error(&e))?,
        (Some(_), Some(_)) => {
            return Err(refuse(
                "gives both data and binary_data_size; send one".into(),
            ));
        }
        (None, None) => return Err(refuse("has no data and no binary_data_size".into())),
    };
    // JSON cannot carry NaN or infinity; binary data can, and a model fed one would answer NaN
    // and be blamed for it.
    if let Some(index) = tensor.data.first_non_finite() {
        return Err(refuse(format!("element {index} is NaN or infinite")));
    }
    Ok(tensor)
}

/// The response: JSON alone, or a JSON header and the binary outputs when any was asked for.
pub(super) fn encode_response(mut head: Value, outputs: &Outputs, wanted: &Wanted) -> Response {
    let chosen: Vec<(&String, &Tensor, bool)> = match &wanted.names {
        None => outputs
            .iter()
            .map(|(name, t)| (name, t, wanted.binary_by_default))
            .collect(),
        Some(names) => names
            .iter()
            .filter_map(|(name, binary)| outputs.get_key_value(name).map(|(n, t)| (n, t, *binary)))
            .collect(),
    };
    let mut binary = Vec::new();
    let described: Vec<Value> = chosen
        .iter()
        .map(|&(name, tensor, as_binary)| {
            if !as_binary {
                return tensor.to_oip_json(name);
            }
            let start = binary.len();
            tensor.data.write_le_bytes(&mut binary);
            json!({
                "name": name,
                "datatype": tensor.dtype().kserve_name(),
                "shape": tensor.shape,
                "parameters": { "binary_data_size": binary.len() - start },
            })
        })
        .collect();
    head["outputs"] = Value::Array(described);
    let mut body = serde_json::to_vec(&head).unwrap_or_default();
    if binary.is_empty() {
        return (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
    }
    let header_length = body.len().to_string();
    body.extend_from_slice(&binary);
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        body,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&header_length) {
        response.headers_mut().insert(HEADER_LENGTH, value);
    }
    response
}

#[cfg(test)]
mod tests;
