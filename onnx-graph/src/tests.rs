#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use prost::Message;

fn models() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn release(dir: &str) -> (Vec<u8>, ModelInterface) {
    let dir = models().join(dir);
    let interface = serde_json::from_slice(&std::fs::read(dir.join("interface.json")).unwrap());
    (
        std::fs::read(dir.join("model.onnx")).unwrap(),
        interface.unwrap(),
    )
}

#[test]
fn every_committed_model_fits_its_interface() {
    for dir in [
        "churn/1.0.0",
        "churn/2.0.0",
        "iris/1.0.0",
        "vision/1.0.0",
        "iris-sklearn/1.0.0",
        "text-encoder/1.0.0",
        "detector/1.0.0",
    ] {
        let (model, interface) = release(dir);
        let graph = read(&model).unwrap();
        let notes = check(&graph, &interface).unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(notes.0.is_empty(), "{dir}: {notes:?}");
    }
    // Named dims are read as the exporter wrote them.
    let graph = read(&release("text-encoder/1.0.0").0).unwrap();
    assert_eq!(
        graph.inputs[0].kind,
        ValueKind::Tensor {
            elem_type: 7,
            dims: Some(vec![
                Dim::Named("batch".into()),
                Dim::Named("sequence".into())
            ])
        }
    );
}

#[test]
fn a_graph_one_column_narrower_is_refused_naming_the_input_and_axis() {
    let (model, interface) = release("bad/wrong-shape");
    let err = check(&read(&model).unwrap(), &interface).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("input \"features\" axis 1"), "{text}");
    assert!(text.contains("fix interface.json"), "{text}");
}

#[test]
fn a_truncated_model_is_not_read() {
    let (model, _) = release("bad/truncated");
    assert!(read(&model).is_err());
}

#[test]
fn wrong_types_ranks_names_and_fixed_dims_are_each_named() {
    let (model, mut interface) = release("text-encoder/1.0.0");
    let graph = read(&model).unwrap();
    interface.inputs[0].dtype = DType::Int32; // input_ids is int64
    interface.outputs[1].shape = vec![-1, 1]; // label is [batch]
    interface.outputs[2].name = "any_tokens".into();
    let Err(Error::Mismatch(problems)) = check(&graph, &interface) else {
        panic!("accepted")
    };
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].contains(
            "\"input_ids\" is INT64 in the graph, the interface declares INT32; declare \"int64\""
        ),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].contains("\"label\" has rank 1"),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].contains("\"any_tokens\" is not among the graph's outputs"),
        "{}",
        problems[2]
    );

    let (model, mut interface) = release("vision/1.0.0");
    interface.inputs[0].shape = vec![-1, 3, 224, 224];
    let err = check(&read(&model).unwrap(), &interface).unwrap_err();
    assert!(
        err.to_string()
            .contains("fixed at 1 in the graph; declare 1, not -1"),
        "{err}"
    );
}

/// A scikit-learn classifier converted with ZipMap left on: its probabilities are a sequence of
/// maps, which no back-end serves as a tensor.
#[test]
fn a_zipmap_output_is_refused_with_the_export_option_that_fixes_it() {
    let value = |name: &str, r#type: proto::Type| proto::ValueInfo {
        name: name.into(),
        r#type: Some(r#type),
    };
    let tensor = |elem_type, dims: &[i64]| proto::Type {
        tensor_type: Some(proto::TensorType {
            elem_type,
            shape: Some(proto::Shape {
                dim: dims
                    .iter()
                    .map(|&d| proto::Dimension {
                        dim_value: (d >= 0).then_some(d),
                        dim_param: (d < 0).then(|| "N".to_string()),
                    })
                    .collect(),
            }),
        }),
        ..Default::default()
    };
    let model = proto::Model {
        graph: Some(proto::Graph {
            initializer: vec![proto::NamedTensor {
                name: "coef".into(),
            }],
            input: vec![
                value("X", tensor(1, &[-1, 4])),
                value("coef", tensor(1, &[4, 3])),
            ],
            output: vec![
                value("output_label", tensor(7, &[-1])),
                value(
                    "output_probability",
                    proto::Type {
                        sequence_type: Some(vec![]),
                        ..Default::default()
                    },
                ),
                value("bf", tensor(16, &[-1])),
            ],
        }),
    };
    let graph = read(&model.encode_to_vec()).unwrap();
    assert_eq!(
        graph.inputs.len(),
        1,
        "initializers listed as inputs are weights"
    );
    let interface: ModelInterface = serde_json::from_value(serde_json::json!({
        "inputs": [{"name": "X", "dtype": "float32", "shape": [-1, 4]}],
        "outputs": [{"name": "output_label", "dtype": "int64", "shape": [-1]},
                    {"name": "output_probability", "dtype": "float32", "shape": [-1, 3]},
                    {"name": "bf", "dtype": "float32", "shape": [-1]}]
    }))
    .unwrap();
    let err = check(&graph, &interface).unwrap_err().to_string();
    assert!(
        err.contains("\"output_probability\" is a sequence"),
        "{err}"
    );
    assert!(err.contains("zipmap"), "{err}");
    assert!(
        err.contains("\"bf\" is bfloat16 in the graph, which no back-end serves"),
        "{err}"
    );
}

#[test]
fn a_string_output_passes_with_a_note_that_tract_cannot_serve_it() {
    let (model, mut interface) = release("iris-sklearn/1.0.0");
    let mut graph = read(&model).unwrap();
    for v in &mut graph.outputs {
        if v.name == "label" {
            v.kind = ValueKind::Tensor {
                elem_type: 8,
                dims: Some(vec![Dim::Named("N".into())]),
            };
        }
    }
    interface.outputs[0].dtype = DType::String;
    let notes = check(&graph, &interface).unwrap();
    assert_eq!(notes.0.len(), 1);
    assert!(
        notes.0[0].contains("only ONNX Runtime serves it"),
        "{notes:?}"
    );
}

proptest::proptest! {
    /// Whatever bytes a model file holds, reading it answers rather than panics.
    #[test]
    fn reading_any_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = read(&bytes);
    }
}

#[test]
fn anonymous_dynamic_axes_take_the_graphs_names_and_a_contrary_name_is_refused() {
    let (model, mut interface) = release("text-encoder/1.0.0");
    let graph = read(&model).unwrap();
    let named = name_dims(&graph, &mut interface);
    assert_eq!(
        named,
        [
            "input \"input_ids\" axes named [batch, sequence]",
            "input \"attention_mask\" axes named [batch, sequence]"
        ]
    );
    interface.validate().unwrap();
    assert_eq!(interface.inputs[1].dim_name(1), Some("sequence"));
    assert!(name_dims(&graph, &mut interface).is_empty(), "named once");

    // The detector's height and width stay apart; its channel axis is fixed and unnamed.
    let (model, mut detector) = release("detector/1.0.0");
    name_dims(&read(&model).unwrap(), &mut detector);
    assert_eq!(
        detector.inputs[0].dims,
        [None, None, Some("height".into()), Some("width".into())]
    );

    // The churn model's only dynamic axis is its batch: nothing to name, the metadata unchanged.
    let (model, mut churn) = release("churn/2.0.0");
    assert!(name_dims(&read(&model).unwrap(), &mut churn).is_empty());
    assert!(churn.inputs[0].dims.is_empty());

    interface.inputs[1].dims[1] = Some("mask_length".into());
    let Err(Error::Mismatch(problems)) = check(&graph, &interface) else {
        panic!("accepted")
    };
    assert!(
        problems[0].contains(
            "input \"attention_mask\" axis 1 is \"sequence\" in the graph, the interface names it \"mask_length\""
        ),
        "{problems:#?}"
    );
}
