use super::*;
use edgefleet_inference::TensorData;

fn interface() -> ModelInterface {
    serde_json::from_value(json!({
        "inputs": [{"name": "input_ids", "dtype": "int64", "shape": [-1, 8]},
                   {"name": "x", "dtype": "float32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 1]},
                    {"name": "label", "dtype": "int64", "shape": [-1]}]
    }))
    .unwrap()
}

fn input(name: &str, datatype: &str, data: Value) -> InferInput {
    let shape = vec![1, data.as_array().map_or(1, |a| a.len())];
    InferInput {
        name: name.into(),
        shape,
        datatype: datatype.into(),
        data: Some(data),
        parameters: Parameters::default(),
    }
}

#[test]
fn request_tensors_are_read_in_the_declared_type_or_refused_naming_the_input() {
    let interface = interface();
    let ids = input(
        "input_ids",
        "INT64",
        json!([101, 2023, 2003, 1037, 3231, 102, 0, 0]),
    );
    assert_eq!(
        request_tensor(&interface, &ids, None).unwrap().dtype(),
        DType::Int64
    );
    for (bad, needle) in [
        (
            input("input_ids", "INT32", json!([1, 2, 3, 4, 5, 6, 7, 8])),
            "does not match the model's INT64",
        ),
        (
            input("input_ids", "INT64", json!([1.5, 2, 3, 4, 5, 6, 7, 8])),
            "INT64",
        ),
        (
            input("input_ids", "int64", json!([1, 2, 3, 4, 5, 6, 7, 8])),
            "unknown datatype",
        ),
        (input("x", "FP32", json!([1.0, -1e300])), "FP32"),
        (input("z", "FP32", json!([1.0])), "no such input"),
    ] {
        let err = request_tensor(&interface, &bad, None).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.field.as_deref(), Some(bad.name.as_str()));
        assert!(err.error.contains(needle), "{}", err.error);
    }
}

/// A Triton-style request: JSON header, then input_ids (binary) and x (binary), one asking for
/// `label` back as binary.
fn binary_request(ids: &[i64], x: &[f32]) -> (HeaderMap, Vec<u8>) {
    let head = json!({
        "inputs": [
            {"name": "input_ids", "shape": [1, ids.len()], "datatype": "INT64", "parameters": {"binary_data_size": ids.len() * 8}},
            {"name": "x", "shape": [1, x.len()], "datatype": "FP32", "parameters": {"binary_data_size": x.len() * 4}}
        ],
        "outputs": [{"name": "label", "parameters": {"binary_data": true}}]
    });
    let mut body = serde_json::to_vec(&head).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_LENGTH, body.len().to_string().parse().unwrap());
    ids.iter().for_each(|v| body.extend(v.to_le_bytes()));
    x.iter().for_each(|v| body.extend(v.to_le_bytes()));
    (headers, body)
}

#[test]
fn binary_inputs_are_read_in_order_and_binary_outputs_come_back_after_the_header() {
    let (headers, body) = binary_request(
        &[101, 9_007_199_254_740_993, 3, 4, 5, 6, 7, 8],
        &[0.5, -2.0],
    );
    let decoded = decode_request(&interface(), &headers, &body).unwrap();
    assert_eq!(
        decoded.inputs["input_ids"].data,
        TensorData::Int64(vec![101, 9_007_199_254_740_993, 3, 4, 5, 6, 7, 8])
    );
    assert_eq!(
        decoded.inputs["x"].data,
        TensorData::Float32(vec![0.5, -2.0])
    );

    let outputs = Outputs::from([
        (
            "label".to_string(),
            Tensor::new(vec![1], TensorData::Int64(vec![1])).unwrap(),
        ),
        (
            "y".to_string(),
            Tensor::new(vec![1, 1], TensorData::Float32(vec![0.25])).unwrap(),
        ),
    ]);
    let response = encode_response(json!({"model_name": "m"}), &outputs, &decoded.wanted);
    let length: usize = response.headers()[HEADER_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = futures_body(response);
    let head: Value = serde_json::from_slice(&body[..length]).unwrap();
    // Only the output asked for, as binary, its size in the header.
    assert_eq!(head["outputs"].as_array().unwrap().len(), 1, "{head}");
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert_eq!(&body[length..], &1i64.to_le_bytes());
}

fn futures_body(response: Response) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime
        .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .unwrap()
        .to_vec()
}

#[test]
fn broken_binary_framing_is_a_400_naming_what_is_wrong() {
    let interface = interface();
    let (headers, body) = binary_request(&[1, 2, 3, 4, 5, 6, 7, 8], &[0.5, -2.0]);
    // One byte short: x's data goes past the end.
    let err = decode_request(&interface, &headers, &body[..body.len() - 1])
        .err()
        .unwrap();
    assert!(err.error.contains("goes past"), "{}", err.error);
    assert_eq!(err.field.as_deref(), Some("x"));
    // Trailing bytes nobody claims.
    let mut longer = body.clone();
    longer.push(0);
    let err = decode_request(&interface, &headers, &longer).err().unwrap();
    assert!(
        err.error.contains("no input's binary_data_size claims"),
        "{}",
        err.error
    );
    // A header length past the body.
    let mut wrong = headers.clone();
    wrong.insert(HEADER_LENGTH, "999999".parse().unwrap());
    let err = decode_request(&interface, &wrong, &body).err().unwrap();
    assert_eq!(
        err.field.as_deref(),
        Some("Inference-Header-Content-Length")
    );
    // NaN can only come in binary; it is the request's fault, not the model's.
    let (headers, body) = binary_request(&[1, 2, 3, 4, 5, 6, 7, 8], &[f32::NAN, 0.0]);
    let err = decode_request(&interface, &headers, &body).err().unwrap();
    assert!(err.error.contains("NaN"), "{}", err.error);
}
