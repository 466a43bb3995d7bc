//! What the fleet server parses from an HTTP request before any handler logic: the `Range`
//! header, artifact paths, JSON bodies (with field-naming errors: a rollout's selector, a group's
//! guard policy) and label uploads (JSON and CSV), on arbitrary bytes.
#![no_main]

use fleet_server::range::{RangeDecision, decide};
use fleet_server::tufhost::target_of;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for len in [0u64, 1, 4096, u64::MAX] {
        if let RangeDecision::Partial { start, end } = decide(Some(&text), len) {
            assert!(start <= end && end < len);
        }
    }
    // An accepted target path (an artifact or a release file) names a canonical release and a
    // sha256, and never climbs out.
    if let Some(served) = target_of(&text) {
        let (name, sha) = (&served.release, &served.sha256);
        assert!(!text.contains("..") && !name.contains(".."));
        assert!(name.starts_with("models/") && name.ends_with("/model.onnx"));
        assert_eq!(sha.len(), 64);
        assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let _ = fleet_server::api::handlers::parse_json::<fleet_server::rollout::Selector>(data);
    // A group's guard policy is checked like a signed one, with or without a signed accuracy.
    if let Ok(policy) =
        fleet_server::api::handlers::parse_json::<edgefleet_protocol::guard::GuardPolicy>(data)
    {
        let _ = policy.validate(None);
        let _ = policy.validate(Some(0.9));
    }
    // Every label an upload accepts passes the checks a device applies again.
    for csv in [false, true] {
        if let Ok(labels) = edgefleet_protocol::feedback::parse_upload(data, csv) {
            for label in labels {
                assert!(label.truth().is_ok(), "{label:?}");
            }
        }
    }
});
