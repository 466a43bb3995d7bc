//! The tensors of an Open Inference Protocol request as the agent reads them: arbitrary JSON
//! data and shape read as every datatype. Whatever arrives, the result is a refusal or a tensor
//! whose element count matches its shape, of the datatype asked for.
#![no_main]

use edgefleet_protocol::{DType, Tensor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(serde_json::Value::Object(input)) = serde_json::from_slice(rest) else {
        return;
    };
    let Ok(shape) =
        serde_json::from_value::<Vec<usize>>(input.get("shape").cloned().unwrap_or_default())
    else {
        return;
    };
    let dtype = DType::ALL[usize::from(selector) % DType::ALL.len()];
    let values = input.get("data").cloned().unwrap_or_default();
    if let Ok(tensor) = Tensor::from_json(dtype, shape, &values, "input") {
        assert_eq!(tensor.dtype(), dtype);
        assert_eq!(
            Tensor::element_count(&tensor.shape),
            Some(tensor.data.len())
        );
        // What is served back reads back the same.
        let again = Tensor::from_json(
            dtype,
            tensor.shape.clone(),
            &tensor.data.to_json(),
            "output",
        );
        assert_eq!(again.ok(), Some(tensor));
    }
});
