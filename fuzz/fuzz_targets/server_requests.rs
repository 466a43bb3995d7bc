//! What the fleet server parses from an HTTP request before any handler logic: the `Range`
//! header, artifact and metadata paths, JSON bodies (with field-naming errors), and device
//! messages as they arrive over MQTT, on arbitrary bytes.
#![no_main]

use std::path::Path;

use fleet_server::range::{RangeDecision, decide};
use fleet_server::tufhost::TufHost;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for len in [0u64, 1, 4096, u64::MAX] {
        if let RangeDecision::Partial { start, end } = decide(Some(&text), len) {
            assert!(start <= end && end < len);
        }
    }
    let host = TufHost::open(Path::new("/nonexistent-repo"), Path::new("/k"), Default::default())
        .unwrap();
    if let Some((path, name, sha)) = host.target_file(&text) {
        assert!(path.starts_with("/nonexistent-repo/targets"));
        assert!(!text.contains("..") && !name.contains(".."));
        assert_eq!(sha.len(), 64);
    }
    if let Some(path) = host.metadata_file(&text) {
        assert!(path.starts_with("/nonexistent-repo/metadata"));
        assert!(!text.contains('/'));
    }
    let _ = fleet_server::api::handlers::parse_json::<fleet_server::rollout::Selector>(data);
});
