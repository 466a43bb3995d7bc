//! The server's first look at a device message: the seal is split off and checked against the
//! key the topic's device registered. Arbitrary bytes give a plain message, a refusal or (for a
//! seal) a failed verification, never a panic; nothing verifies under a key the input does not
//! hold.
#![no_main]

use edgefleet_sealed::{Opened, PublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the topic, so bindings to it are exercised too.
    let (topic, payload) = match data.split_first() {
        Some((b, rest)) if b % 2 == 0 => ("edgefleet/v1/devices/d1/reported", rest),
        Some((_, rest)) => ("edgefleet/v1/devices/d1/events", rest),
        None => ("edgefleet/v1/devices/d1/metrics", data),
    };
    let key =
        PublicKey::from_hex("8b1e0b27fbd3a6e9a1a4a4eabcb0c8d5c3b2a1f0e9d8c7b6a5f4e3d2c1b0a998")
            .expect("the fixed key parses");
    match edgefleet_sealed::open(payload) {
        Ok(Opened::Plain(message)) => assert_eq!(message, payload),
        Ok(Opened::Sealed { signature, message }) => {
            assert_eq!(signature.len(), edgefleet_sealed::SIGNATURE_BYTES);
            assert!(
                key.verify(topic, signature, message, "d1").is_err(),
                "a seal nobody here could make verified"
            );
        }
        Err(_) => assert!(payload.starts_with(edgefleet_sealed::MAGIC)),
    }
    // Any hex a device might send as its key at enrollment.
    if let Ok(text) = std::str::from_utf8(payload)
        && let Ok(parsed) = PublicKey::from_hex(text)
    {
        assert_eq!(PublicKey::from_hex(&parsed.to_hex()), Ok(parsed));
    }
});
