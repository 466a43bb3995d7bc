//! TUF metadata as a device receives it, at every level: arbitrary bytes parsed as root,
//! timestamp, snapshot and targets, checked with Edgefleet's distinct-key thresholds, and every
//! target's custom fields read as model metadata. Errors, never panics.
#![no_main]

use edgefleet_tuf::operator::target_meta;
use edgefleet_tuf::verify::verify_distinct;
use libfuzzer_sys::fuzz_target;
use tough::schema::{Root, Signed, Snapshot, Targets, Timestamp};

fuzz_target!(|data: &[u8]| {
    let root = serde_json::from_slice::<Signed<Root>>(data).ok();
    if let Some(root) = &root {
        let _ = verify_distinct(&root.signed, root);
    }
    if let Ok(ts) = serde_json::from_slice::<Signed<Timestamp>>(data) {
        if let Some(root) = &root {
            let _ = verify_distinct(&root.signed, &ts);
        }
    }
    let _ = serde_json::from_slice::<Signed<Snapshot>>(data);
    if let Ok(targets) = serde_json::from_slice::<Signed<Targets>>(data) {
        for (name, target) in targets.signed.targets.iter() {
            let _ = target_meta(name.raw(), target);
        }
    }
});
