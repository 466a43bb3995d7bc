//! The slice of `onnx.proto3` the signature needs. Field numbers are ONNX's; every other field is
//! skipped by prost.

use crate::{Dim, GraphValue, ValueKind};

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Model {
    #[prost(message, optional, tag = "7")]
    pub graph: Option<Graph>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Graph {
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<NamedTensor>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfo>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfo>,
}

/// A `TensorProto` with only its name: the weights' bytes are skipped, not copied.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NamedTensor {
    #[prost(string, tag = "8")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ValueInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<Type>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Type {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorType>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub sequence_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub map_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub sparse_tensor_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "9")]
    pub optional_type: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TensorType {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<Shape>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Shape {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

impl ValueInfo {
    pub(crate) fn to_value(&self) -> GraphValue {
        let kind = match &self.r#type {
            Some(Type {
                tensor_type: Some(t),
                ..
            }) => ValueKind::Tensor {
                elem_type: t.elem_type,
                dims: t.shape.as_ref().map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match (d.dim_value, &d.dim_param) {
                            (Some(v), _) => Dim::Fixed(v),
                            (None, Some(p)) if !p.is_empty() => Dim::Named(p.clone()),
                            _ => Dim::Unknown,
                        })
                        .collect()
                }),
            },
            Some(t) if t.sequence_type.is_some() => ValueKind::Other("sequence"),
            Some(t) if t.map_type.is_some() => ValueKind::Other("map"),
            Some(t) if t.sparse_tensor_type.is_some() => ValueKind::Other("sparse tensor"),
            Some(t) if t.optional_type.is_some() => ValueKind::Other("optional"),
            _ => ValueKind::Other("value of no declared type"),
        };
        GraphValue {
            name: self.name.clone(),
            kind,
        }
    }
}
