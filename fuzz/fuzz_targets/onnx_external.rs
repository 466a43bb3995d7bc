//! An ONNX file from a model registry (`fleetctl import mlflow`): its external-data references
//! read, and its weights inlined from a file made of the same bytes, on arbitrary input.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(refs) = edgefleet_onnx_graph::external_refs(data) else {
        return;
    };
    let files: BTreeMap<String, Vec<u8>> = refs
        .iter()
        .map(|r| (r.location.clone(), data.to_vec()))
        .collect();
    if let Ok(inlined) = edgefleet_onnx_graph::inline_external_data(data, &files) {
        assert!(edgefleet_onnx_graph::external_refs(&inlined).is_ok_and(|r| r.is_empty()));
    }
});
