//! Typed tensors: golden vectors, inference requests and responses, in memory and as JSON.
//!
//! A tensor keeps its elements in their declared type, so an INT64 token id or label is exact
//! (no detour through `f64`, which loses integers past 2^53) and a BOOL is a bool. JSON carries the
//! Open Inference Protocol's spelling: numbers, `true`/`false`, strings; flat or nested row-major.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// Element types a model input or output may declare. Names follow ONNX's lower-case spelling;
/// [`DType::kserve_name`] gives the Open Inference Protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Float64,
    Float16,
    Int64,
    Int32,
    Int8,
    Uint8,
    Bool,
    /// UTF-8 strings (ONNX `string`, the protocol's `BYTES`): scikit-learn's text labels.
    String,
}

impl DType {
    pub const ALL: [DType; 9] = [
        DType::Float32,
        DType::Float64,
        DType::Float16,
        DType::Int64,
        DType::Int32,
        DType::Int8,
        DType::Uint8,
        DType::Bool,
        DType::String,
    ];

    pub fn kserve_name(self) -> &'static str {
        match self {
            DType::Float32 => "FP32",
            DType::Float64 => "FP64",
            DType::Float16 => "FP16",
            DType::Int64 => "INT64",
            DType::Int32 => "INT32",
            DType::Int8 => "INT8",
            DType::Uint8 => "UINT8",
            DType::Bool => "BOOL",
            DType::String => "BYTES",
        }
    }

    pub fn from_kserve_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.kserve_name() == name)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::Float32 | DType::Float64 | DType::Float16)
    }

    /// Bytes per element in the binary tensor encoding; `None` for strings, whose elements are
    /// length-prefixed.
    pub fn element_size(self) -> Option<usize> {
        match self {
            DType::Float64 | DType::Int64 => Some(8),
            DType::Float32 | DType::Int32 => Some(4),
            DType::Float16 => Some(2),
            DType::Int8 | DType::Uint8 | DType::Bool => Some(1),
            DType::String => None,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kserve_name())
    }
}

/// Upper bound on elements in one tensor (16 Mi, 64 MiB as f32): a request or golden vector
/// larger than this is refused before any allocation proportional to its claimed shape.
pub const MAX_TENSOR_ELEMENTS: usize = 16 * 1024 * 1024;

/// A tensor's elements, row-major, in their own type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Float16(Vec<half::f16>),
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Int8(Vec<i8>),
    Uint8(Vec<u8>),
    Bool(Vec<bool>),
    String(Vec<String>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::Float32(_) => DType::Float32,
            TensorData::Float64(_) => DType::Float64,
            TensorData::Float16(_) => DType::Float16,
            TensorData::Int64(_) => DType::Int64,
            TensorData::Int32(_) => DType::Int32,
            TensorData::Int8(_) => DType::Int8,
            TensorData::Uint8(_) => DType::Uint8,
            TensorData::Bool(_) => DType::Bool,
            TensorData::String(_) => DType::String,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::Float32(v) => v.len(),
            TensorData::Float64(v) => v.len(),
            TensorData::Float16(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int8(v) => v.len(),
            TensorData::Uint8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::String(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `index` as a number: floats and integers widen to `f64`, bools are 0 or 1; `None`
    /// for strings or an index out of range.
    pub fn number(&self, index: usize) -> Option<f64> {
        match self {
            TensorData::Float32(v) => v.get(index).map(|&x| f64::from(x)),
            TensorData::Float64(v) => v.get(index).copied(),
            TensorData::Float16(v) => v.get(index).map(|&x| f64::from(x)),
            TensorData::Int64(v) => v.get(index).map(|&x| x as f64),
            TensorData::Int32(v) => v.get(index).map(|&x| f64::from(x)),
            TensorData::Int8(v) => v.get(index).map(|&x| f64::from(x)),
            TensorData::Uint8(v) => v.get(index).map(|&x| f64::from(x)),
            TensorData::Bool(v) => v.get(index).map(|&x| f64::from(u8::from(x))),
            TensorData::String(_) => None,
        }
    }

    /// Element `index` as JSON, in the protocol's spelling.
    pub fn json_value(&self, index: usize) -> Value {
        match self {
            TensorData::Bool(v) => v.get(index).map_or(Value::Null, |&b| Value::Bool(b)),
            TensorData::String(v) => v
                .get(index)
                .map_or(Value::Null, |s| Value::String(s.clone())),
            TensorData::Int64(v) => v.get(index).map_or(Value::Null, |&x| Value::from(x)),
            TensorData::Int32(v) => v.get(index).map_or(Value::Null, |&x| Value::from(x)),
            TensorData::Int8(v) => v.get(index).map_or(Value::Null, |&x| Value::from(x)),
            TensorData::Uint8(v) => v.get(index).map_or(Value::Null, |&x| Value::from(x)),
            floats => floats.number(index).map_or(Value::Null, Value::from),
        }
    }

    /// All elements as a flat JSON array.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Index of the first NaN or infinity; `None` for non-float types, which cannot hold one.
    pub fn first_non_finite(&self) -> Option<usize> {
        match self {
            TensorData::Float32(v) => v.iter().position(|x| !x.is_finite()),
            TensorData::Float64(v) => v.iter().position(|x| !x.is_finite()),
            TensorData::Float16(v) => v.iter().position(|x| !x.is_finite()),
            _ => None,
        }
    }

    /// Float elements as `f32` (what a prediction reads); `None` for other types.
    pub fn floats_as_f32(&self) -> Option<Vec<f32>> {
        match self {
            TensorData::Float32(v) => Some(v.clone()),
            TensorData::Float64(v) => Some(v.iter().map(|&x| x as f32).collect()),
            TensorData::Float16(v) => Some(v.iter().map(|&x| f32::from(x)).collect()),
            _ => None,
        }
    }

    /// Reads JSON data (a number, bool or string, or arrays of them nested to any depth) as
    /// `dtype`, refusing anything that the type cannot hold exactly — a fraction for an integer, a
    /// value out of range, a non-finite float — and more than `limit` elements. `name` goes into
    /// the error.
    pub fn from_json(dtype: DType, value: &Value, limit: usize, name: &str) -> Result<Self, Error> {
        let mut reader = JsonReader {
            dtype,
            name,
            limit,
            data: TensorData::empty(dtype),
        };
        reader.read(value, 0)?;
        Ok(reader.data)
    }

    pub fn empty(dtype: DType) -> Self {
        match dtype {
            DType::Float32 => TensorData::Float32(Vec::new()),
            DType::Float64 => TensorData::Float64(Vec::new()),
            DType::Float16 => TensorData::Float16(Vec::new()),
            DType::Int64 => TensorData::Int64(Vec::new()),
            DType::Int32 => TensorData::Int32(Vec::new()),
            DType::Int8 => TensorData::Int8(Vec::new()),
            DType::Uint8 => TensorData::Uint8(Vec::new()),
            DType::Bool => TensorData::Bool(Vec::new()),
            DType::String => TensorData::String(Vec::new()),
        }
    }

    /// `values` (each in [0, 1), as from the golden generator) in a float type.
    pub fn from_unit_floats(dtype: DType, values: Vec<f64>) -> Option<Self> {
        match dtype {
            DType::Float32 => Some(TensorData::Float32(
                values.into_iter().map(|v| v as f32).collect(),
            )),
            DType::Float64 => Some(TensorData::Float64(values)),
            DType::Float16 => Some(TensorData::Float16(
                values.into_iter().map(half::f16::from_f64).collect(),
            )),
            _ => None,
        }
    }
}

/// The Open Inference Protocol's binary tensor data: elements little-endian and packed, BOOL one
/// byte each (0 or 1), BYTES each a 4-byte little-endian length and the bytes.
impl TensorData {
    /// Reads `count` elements of `dtype` from exactly `bytes`; `name` goes into the error.
    pub fn from_le_bytes(
        dtype: DType,
        bytes: &[u8],
        count: usize,
        name: &str,
    ) -> Result<Self, Error> {
        let refuse = |detail: String| Error::TensorMismatch {
            tensor: name.to_string(),
            detail,
        };
        if let Some(size) = dtype.element_size()
            && count.checked_mul(size) != Some(bytes.len())
        {
            return Err(refuse(format!(
                "{} bytes of binary data, but {count} {dtype} elements take {}",
                bytes.len(),
                count.saturating_mul(size)
            )));
        }
        fn words<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            bytes
                .chunks_exact(N)
                .map(|c| f(c.try_into().unwrap_or([0; N])))
                .collect()
        }
        Ok(match dtype {
            DType::Float32 => TensorData::Float32(words(bytes, f32::from_le_bytes)),
            DType::Float64 => TensorData::Float64(words(bytes, f64::from_le_bytes)),
            DType::Float16 => TensorData::Float16(words(bytes, half::f16::from_le_bytes)),
            DType::Int64 => TensorData::Int64(words(bytes, i64::from_le_bytes)),
            DType::Int32 => TensorData::Int32(words(bytes, i32::from_le_bytes)),
            DType::Int8 => TensorData::Int8(words(bytes, i8::from_le_bytes)),
            DType::Uint8 => TensorData::Uint8(bytes.to_vec()),
            DType::Bool => TensorData::Bool(
                bytes
                    .iter()
                    .map(|&b| match b {
                        0 => Ok(false),
                        1 => Ok(true),
                        other => Err(refuse(format!("BOOL byte {other} is neither 0 nor 1"))),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DType::String => {
                let mut strings = Vec::with_capacity(count.min(bytes.len() / 4));
                let mut rest = bytes;
                while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                    let len = u32::from_le_bytes(*len) as usize;
                    let (text, tail) = tail.split_at_checked(len).ok_or_else(|| {
                        refuse(format!("a BYTES element claims {len} bytes past the end"))
                    })?;
                    let text = std::str::from_utf8(text)
                        .map_err(|e| refuse(format!("a BYTES element is not UTF-8: {e}")))?;
                    strings.push(text.to_string());
                    rest = tail;
                }
                if !rest.is_empty() || strings.len() != count {
                    return Err(refuse(format!(
                        "binary BYTES data holds {} whole elements, the shape needs {count}",
                        strings.len()
                    )));
                }
                TensorData::String(strings)
            }
        })
    }

    /// Appends the elements in the binary encoding [`TensorData::from_le_bytes`] reads.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        match self {
            TensorData::Float32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::Float64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::Float16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::Int64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::Int32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::Int8(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::Uint8(v) => out.extend_from_slice(v),
            TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
            TensorData::String(v) => v.iter().for_each(|s| {
                out.extend((s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }),
        }
    }
}

/// The elements as a flat JSON array (FP16 as the numbers they are).
impl Serialize for TensorData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TensorData::Float32(v) => v.serialize(serializer),
            TensorData::Float64(v) => v.serialize(serializer),
            TensorData::Float16(v) => serializer.collect_seq(v.iter().map(|x| f32::from(*x))),
            TensorData::Int64(v) => v.serialize(serializer),
            TensorData::Int32(v) => v.serialize(serializer),
            TensorData::Int8(v) => v.serialize(serializer),
            TensorData::Uint8(v) => v.serialize(serializer),
            TensorData::Bool(v) => v.serialize(serializer),
            TensorData::String(v) => v.serialize(serializer),
        }
    }
}

/// Nesting deeper than any tensor's rank is refused before it can exhaust the stack.
const MAX_JSON_DEPTH: usize = 64;

struct JsonReader<'a> {
    dtype: DType,
    name: &'a str,
    limit: usize,
    data: TensorData,
}

impl JsonReader<'_> {
    fn refuse(&self, detail: String) -> Error {
        Error::TensorMismatch {
            tensor: self.name.to_string(),
            detail,
        }
    }

    fn read(&mut self, value: &Value, depth: usize) -> Result<(), Error> {
        if let Value::Array(items) = value {
            if depth >= MAX_JSON_DEPTH {
                return Err(self.refuse(format!("data nested deeper than {MAX_JSON_DEPTH}")));
            }
            for item in items {
                self.read(item, depth + 1)?;
            }
            return Ok(());
        }
        if self.data.len() >= self.limit {
            return Err(self.refuse(format!("data has more than {} values", self.limit)));
        }
        self.push(value)
    }

    fn push(&mut self, value: &Value) -> Result<(), Error> {
        let (dtype, name) = (self.dtype, self.name);
        let not = |what: &str| Error::TensorMismatch {
            tensor: name.to_string(),
            detail: format!("{value} is not {what} ({dtype} data: row-major, flat or nested)"),
        };
        match &mut self.data {
            TensorData::Bool(v) => v.push(value.as_bool().ok_or_else(|| not("true or false"))?),
            TensorData::String(v) => v.push(value.as_str().ok_or_else(|| not("a string"))?.into()),
            TensorData::Float64(v) => {
                v.push(finite(value, f64::MAX).ok_or_else(|| not("a finite number"))?)
            }
            TensorData::Float32(v) => v.push(
                finite(value, f64::from(f32::MAX))
                    .ok_or_else(|| not("a finite FP32 number (|x| up to 3.4e38)"))?
                    as f32,
            ),
            TensorData::Float16(v) => v
                .push(half::f16::from_f64(finite(value, 65504.0).ok_or_else(
                    || not("a finite FP16 number (|x| up to 65504)"),
                )?)),
            TensorData::Int64(v) => {
                v.push(integer(value).ok_or_else(|| not("an integer in INT64's range"))?)
            }
            TensorData::Int32(v) => v.push(
                integer(value)
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or_else(|| not("an integer in INT32's range"))?,
            ),
            TensorData::Int8(v) => v.push(
                integer(value)
                    .and_then(|x| i8::try_from(x).ok())
                    .ok_or_else(|| not("an integer in -128..=127"))?,
            ),
            TensorData::Uint8(v) => v.push(
                integer(value)
                    .and_then(|x| u8::try_from(x).ok())
                    .ok_or_else(|| not("an integer in 0..=255"))?,
            ),
        }
        Ok(())
    }
}

fn finite(value: &Value, max: f64) -> Option<f64> {
    value.as_f64().filter(|x| x.is_finite() && x.abs() <= max)
}

/// An integer written as an integer, or as a float with no fraction that `f64` holds exactly
/// (Python's `json` writes numpy's int64 as `3`, but hand-made files often say `3.0`).
fn integer(value: &Value) -> Option<i64> {
    let n = value.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    (f.fract() == 0.0 && f.abs() <= EXACT).then_some(f as i64)
}

/// A tensor: shape and typed elements. In JSON `{"dtype": ..., "shape": [...], "data": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "JsonTensor", into = "JsonTensor")]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Value,
}

impl TryFrom<JsonTensor> for Tensor {
    type Error = Error;

    fn try_from(json: JsonTensor) -> Result<Self, Error> {
        Tensor::from_json(json.dtype, json.shape, &json.data, "tensor")
    }
}

impl From<Tensor> for JsonTensor {
    fn from(tensor: Tensor) -> Self {
        JsonTensor {
            dtype: tensor.dtype(),
            data: tensor.data.to_json(),
            shape: tensor.shape,
        }
    }
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self, Error> {
        let tensor = Self { shape, data };
        tensor.validate("tensor")?;
        Ok(tensor)
    }

    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, Error> {
        Self::new(shape, TensorData::Float32(data))
    }

    /// A tensor from JSON data of `dtype` (see [`TensorData::from_json`]); the shape is checked
    /// against the element count before the data is read, so a huge claimed shape costs nothing.
    pub fn from_json(
        dtype: DType,
        shape: Vec<usize>,
        data: &Value,
        name: &str,
    ) -> Result<Self, Error> {
        let count = Self::checked_count(&shape, name)?;
        let data = TensorData::from_json(dtype, data, count, name)?;
        let tensor = Self { shape, data };
        tensor.validate(name)?;
        Ok(tensor)
    }

    /// A tensor from binary data of `dtype` (see [`TensorData::from_le_bytes`]); the shape is
    /// checked before the data is read.
    pub fn from_le_bytes(
        dtype: DType,
        shape: Vec<usize>,
        bytes: &[u8],
        name: &str,
    ) -> Result<Self, Error> {
        let count = Self::checked_count(&shape, name)?;
        let data = TensorData::from_le_bytes(dtype, bytes, count, name)?;
        Ok(Self { shape, data })
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// Number of elements the shape claims, or `None` on overflow.
    pub fn element_count(shape: &[usize]) -> Option<usize> {
        shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    fn checked_count(shape: &[usize], name: &str) -> Result<usize, Error> {
        Self::element_count(shape)
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| Error::TensorMismatch {
                tensor: name.to_string(),
                detail: format!("shape {shape:?} exceeds {MAX_TENSOR_ELEMENTS} elements"),
            })
    }

    /// Checks that the shape's element count matches the data and stays under
    /// [`MAX_TENSOR_ELEMENTS`]; `name` goes into the error.
    pub fn validate(&self, name: &str) -> Result<(), Error> {
        let count = Self::checked_count(&self.shape, name)?;
        if count != self.data.len() {
            return Err(Error::TensorMismatch {
                tensor: name.to_string(),
                detail: format!(
                    "shape {:?} needs {count} values, got {}",
                    self.shape,
                    self.data.len()
                ),
            });
        }
        Ok(())
    }

    /// The protocol's JSON for an output: `{"name", "datatype", "shape", "data"}`.
    pub fn to_oip_json(&self, name: &str) -> Value {
        serde_json::json!({
            "name": name,
            "datatype": self.dtype().kserve_name(),
            "shape": self.shape,
            "data": self.data.to_json(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shape_must_match_data() {
        assert!(Tensor::f32(vec![2, 2], vec![1.0; 4]).is_ok());
        let err = Tensor::f32(vec![2, 3], vec![1.0; 4]).unwrap_err();
        assert!(err.to_string().contains("needs 6 values, got 4"), "{err}");
    }

    #[test]
    fn overflowing_shapes_are_refused_without_allocating() {
        let t = Tensor {
            shape: vec![usize::MAX, 2],
            data: TensorData::Float32(vec![]),
        };
        assert!(t.validate("x").is_err());
        let err = Tensor::from_json(DType::Int64, vec![usize::MAX, 2], &json!([1]), "x");
        assert!(err.unwrap_err().to_string().contains("exceeds"));
    }

    #[test]
    fn kserve_names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_kserve_name(d.kserve_name()), Some(d));
        }
        assert_eq!(DType::from_kserve_name("fp32"), None);
    }

    #[test]
    fn every_type_reads_and_writes_its_json_exactly() {
        let cases = [
            (DType::Float32, json!([[0.5, -3e38]])),
            (DType::Float64, json!([1e300, -0.25])),
            (DType::Float16, json!([0.5, 65504.0])),
            (
                DType::Int64,
                json!([9_007_199_254_740_993_i64, -9_223_372_036_854_775_808_i64]),
            ),
            (DType::Int32, json!([2_147_483_647, -2_147_483_648_i64])),
            (DType::Int8, json!([127, -128])),
            (DType::Uint8, json!([0, 255])),
            (DType::Bool, json!([true, false])),
            (DType::String, json!(["setosa", "ü"])),
        ];
        for (dtype, data) in cases {
            let t = Tensor::from_json(dtype, vec![2], &data, "x").unwrap();
            assert_eq!(t.dtype(), dtype);
            let back: Tensor = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
            assert_eq!(back, t, "{dtype}");
        }
        // Integers past 2^53 survive; a float spelling of a small integer is accepted.
        let t = Tensor::from_json(
            DType::Int64,
            vec![2],
            &json!([9_007_199_254_740_993_i64, 3.0]),
            "x",
        )
        .unwrap();
        assert_eq!(t.data, TensorData::Int64(vec![9_007_199_254_740_993, 3]));
    }

    #[test]
    fn binary_data_round_trips_for_every_type_and_wrong_lengths_are_refused() {
        let samples = [
            TensorData::Float32(vec![0.5, -3e38]),
            TensorData::Float64(vec![1e300, -0.25]),
            TensorData::Float16(vec![half::f16::from_f32(0.5), half::f16::MAX]),
            TensorData::Int64(vec![i64::MIN, 9_007_199_254_740_993]),
            TensorData::Int32(vec![i32::MAX, -1]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Bool(vec![true, false]),
            TensorData::String(vec!["setosa".into(), "ü".into()]),
        ];
        for data in samples {
            let mut bytes = Vec::new();
            data.write_le_bytes(&mut bytes);
            let back = TensorData::from_le_bytes(data.dtype(), &bytes, 2, "x").unwrap();
            assert_eq!(back, data);
            // One byte short, or one element too many claimed, is an error naming the tensor.
            let err = TensorData::from_le_bytes(data.dtype(), &bytes[..bytes.len() - 1], 2, "x");
            assert!(err.unwrap_err().to_string().contains("\"x\""));
            assert!(TensorData::from_le_bytes(data.dtype(), &bytes, 3, "x").is_err());
        }
        assert!(TensorData::from_le_bytes(DType::Bool, &[2], 1, "x").is_err());
        let huge_claim = [0xff, 0xff, 0xff, 0x7f, b'a'];
        assert!(TensorData::from_le_bytes(DType::String, &huge_claim, 1, "x").is_err());
    }

    #[test]
    fn what_a_type_cannot_hold_is_refused_naming_the_tensor() {
        let refused = [
            (DType::Int64, json!([1.5])),
            (DType::Int32, json!([2_147_483_648_i64])),
            (DType::Int8, json!([128])),
            (DType::Uint8, json!([-1])),
            (DType::Bool, json!([1])),
            (DType::String, json!([1])),
            (DType::Float32, json!([1e39])),
            (DType::Float16, json!([70000.0])),
            (DType::Float64, json!(["1"])),
            (DType::Int64, json!([null])),
        ];
        for (dtype, data) in refused {
            let err = Tensor::from_json(dtype, vec![1], &data, "ids").unwrap_err();
            assert!(err.to_string().contains("\"ids\""), "{dtype}: {err}");
        }
        // More values than the shape holds stops reading at once.
        let err = Tensor::from_json(DType::Int64, vec![1], &json!([1, 2, 3]), "ids").unwrap_err();
        assert!(err.to_string().contains("more than 1"), "{err}");
    }
}
