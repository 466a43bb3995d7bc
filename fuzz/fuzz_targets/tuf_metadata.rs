//! TUF metadata as a device receives it, at every level: arbitrary bytes parsed by the device's
//! own client (`tuf::metadata`) as root, timestamp, snapshot and targets, offered to the trusted
//! set in workflow order, searched for targets through its delegations (path patterns included),
//! and every target's custom fields read as model metadata. Errors, never panics.
#![no_main]

use edgefleet_tuf::metadata::{Envelope, Root, Snapshot, Targets, Timestamp};
use edgefleet_tuf::operator::model_meta;
use edgefleet_tuf::search::{Search, path_matches};
use edgefleet_tuf::trusted::TrustedSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = jiff::Timestamp::from_second(1_800_000_000).expect("a fixed time");
    // A root that verifies against itself lets the rest of the workflow see the same bytes.
    if let Ok(mut set) = TrustedSet::new(data, now) {
        let _ = set.update_root(data);
        let _ = set.update_timestamp(data);
        let _ = set.update_snapshot(data, true);
        let _ = set.update_targets("targets", "root", data);
    }
    let _ = Envelope::<Root>::parse(data);
    let _ = Envelope::<Timestamp>::parse(data);
    let _ = Envelope::<Snapshot>::parse(data);
    if let Ok(targets) = Envelope::<Targets>::parse(data) {
        for (name, target) in &targets.signed.targets {
            if let Some(serde_json::Value::Object(custom)) = &target.custom {
                let _ = model_meta(name, custom.clone());
            }
            let mut search = Search::new(name);
            while let Some(visit) = search.next_role() {
                if search.visit(&visit, &targets.signed) {
                    break;
                }
            }
        }
        for role in targets.signed.delegations.iter().flat_map(|d| &d.roles) {
            for pattern in role.paths.iter().flatten() {
                let _ = path_matches(pattern, &role.name);
            }
        }
    }
});
