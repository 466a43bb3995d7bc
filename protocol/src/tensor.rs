//! Tensors as they appear in JSON: golden vectors, inference requests and responses.
//!
//! Values are carried as `f64`, which holds every `f32` and every integer up to 2^53 exactly, so one
//! JSON shape serves all the element types a model declares; the inference engine converts to the
//! declared [`DType`] at the boundary.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Element types a model input or output may declare. Names follow ONNX's lower-case spelling;
/// [`DType::kserve_name`] gives the Open Inference Protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Float64,
    Int32,
    Int64,
    Uint8,
    Bool,
}

impl DType {
    pub fn kserve_name(self) -> &'static str {
        match self {
            DType::Float32 => "FP32",
            DType::Float64 => "FP64",
            DType::Int32 => "INT32",
            DType::Int64 => "INT64",
            DType::Uint8 => "UINT8",
            DType::Bool => "BOOL",
        }
    }

    pub fn from_kserve_name(name: &str) -> Option<Self> {
        [
            DType::Float32,
            DType::Float64,
            DType::Int32,
            DType::Int64,
            DType::Uint8,
            DType::Bool,
        ]
        .into_iter()
        .find(|d| d.kserve_name() == name)
    }
}

/// Upper bound on elements in one JSON tensor (16 Mi, 64 MiB as f32): a request or golden vector
/// larger than this is refused before any allocation proportional to its claimed shape.
pub const MAX_TENSOR_ELEMENTS: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor {
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Result<Self, Error> {
        let tensor = Self { dtype, shape, data };
        tensor.validate("tensor")?;
        Ok(tensor)
    }

    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, Error> {
        Self::new(
            DType::Float32,
            shape,
            data.into_iter().map(f64::from).collect(),
        )
    }

    /// Number of elements the shape claims, or `None` on overflow.
    pub fn element_count(shape: &[usize]) -> Option<usize> {
        shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Checks that the shape's element count matches the data and stays under
    /// [`MAX_TENSOR_ELEMENTS`]; `name` goes into the error.
    pub fn validate(&self, name: &str) -> Result<(), Error> {
        let mismatch = |detail: String| Error::TensorMismatch {
            tensor: name.to_string(),
            detail,
        };
        let count = Self::element_count(&self.shape)
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| {
                mismatch(format!(
                    "shape {:?} exceeds {MAX_TENSOR_ELEMENTS} elements",
                    self.shape
                ))
            })?;
        if count != self.data.len() {
            return Err(mismatch(format!(
                "shape {:?} needs {count} values, got {}",
                self.shape,
                self.data.len()
            )));
        }
        Ok(())
    }

    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_must_match_data() {
        assert!(Tensor::f32(vec![2, 2], vec![1.0; 4]).is_ok());
        let err = Tensor::f32(vec![2, 3], vec![1.0; 4]).unwrap_err();
        assert!(err.to_string().contains("needs 6 values, got 4"), "{err}");
    }

    #[test]
    fn overflowing_shapes_are_refused_without_allocating() {
        let t = Tensor {
            dtype: DType::Float32,
            shape: vec![usize::MAX, 2],
            data: vec![],
        };
        assert!(t.validate("x").is_err());
    }

    #[test]
    fn kserve_names_round_trip() {
        for d in [DType::Float32, DType::Int64, DType::Bool] {
            assert_eq!(DType::from_kserve_name(d.kserve_name()), Some(d));
        }
        assert_eq!(DType::from_kserve_name("fp32"), None);
    }
}
