//! A device's first look at a desired-state message: signature verification against a trusted
//! root, then the reconcile triage. Arbitrary bytes give a refusal or a verified message, never a
//! panic; no unsigned input ever verifies.
#![no_main]

use std::sync::OnceLock;

use edgefleet_protocol::DeviceId;
use edgefleet_tuf::desired;
use edgefleet_tuf::operator::{RoleSpec, RootSpec, build_root};
use libfuzzer_sys::fuzz_target;
use tough::schema::Root;
use tough::schema::key::Key;

/// A fixed trusted root whose every role is one ed25519 public key nobody holds the private half
/// of here, so nothing the fuzzer makes can carry a valid signature: any `Ok` is a bug.
fn root() -> &'static Root {
    static ROOT: OnceLock<Root> = OnceLock::new();
    ROOT.get_or_init(|| {
        let key: Key = serde_json::from_value(serde_json::json!({
            "keytype": "ed25519", "scheme": "ed25519",
            "keyval": {"public": "8b1e0b27fbd3a6e9a1a4a4eabcb0c8d5c3b2a1f0e9d8c7b6a5f4e3d2c1b0a998"}
        }))
        .expect("the fixed key parses");
        let role = || RoleSpec {
            keys: vec![key.clone()],
            threshold: 1,
        };
        let spec = RootSpec {
            root: role(),
            targets: role(),
            snapshot: role(),
            timestamp: role(),
        };
        let expires = jiff::Timestamp::from_second(4_102_444_800).expect("2100");
        build_root(&spec, 1, expires).expect("the fixed root builds")
    })
}

fuzz_target!(|data: &[u8]| {
    let own = DeviceId::new("dev-1").expect("valid id");
    let verified = desired::verify(data, root(), &own);
    assert!(verified.is_err(), "unsigned bytes verified: {verified:?}");
});
