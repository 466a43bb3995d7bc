//! Signed-target metadata (interface, feature schema, health, baseline) on arbitrary bytes, and
//! when it validates, feature encoding of arbitrary JSON rows through it.
#![no_main]

use edgefleet_protocol::target::ModelTargetMeta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Split: metadata document, then a request row.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (meta, row) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let Ok(meta) = serde_json::from_slice::<ModelTargetMeta>(meta) else {
        return;
    };
    if meta.validate().is_err() {
        return;
    }
    for case in &meta.health.cases {
        for (name, input) in &case.inputs {
            let _ = input.materialize(name);
        }
    }
    if let (Some(schema), Ok(serde_json::Value::Object(row))) = (
        &meta.interface.features,
        serde_json::from_slice::<serde_json::Value>(row),
    ) && let Ok(encoded) = schema.encode(&row)
    {
        assert_eq!(encoded.len(), schema.width());
    }
});
