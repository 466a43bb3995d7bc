//! MQTT topic names, target names, identifiers and broker URLs on arbitrary strings: parsed
//! values round-trip.
#![no_main]

use edgefleet_protocol::broker::BrokerAddress;
use edgefleet_protocol::target::{parse_target_name, target_name};
use edgefleet_protocol::topic::Topic;
use edgefleet_protocol::{DeviceId, ModelName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topic) = Topic::parse(s) {
        assert_eq!(topic.to_string(), s);
    }
    if let Ok((model, version)) = parse_target_name(s) {
        assert_eq!(target_name(&model, &version), s);
        assert!(!s.contains(".."));
    }
    if let Ok(id) = DeviceId::new(s) {
        assert!(!s.contains(['/', '+', '#', '\0']));
        assert_eq!(id.as_str(), s);
    }
    let _ = ModelName::new(s);
    if let Ok(broker) = BrokerAddress::parse(s) {
        assert_eq!(BrokerAddress::parse(&broker.url()).ok(), Some(broker));
    }
});
