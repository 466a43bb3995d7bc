//! Every device-message decoder on arbitrary bytes: a value or an error, never a panic, and a
//! decoded value re-encodes and decodes to itself.
#![no_main]

use edgefleet_protocol::message::{self, Desired, Event, MetricsBatch, Reported, WireMessage};
use libfuzzer_sys::fuzz_target;

fn check<M: WireMessage + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(m) = message::decode::<M>(bytes) {
        let again = message::encode(&m).expect("a decoded message re-encodes");
        assert_eq!(message::decode::<M>(&again).expect("and decodes"), m);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Desired>(data);
    check::<Reported>(data);
    check::<Event>(data);
    check::<MetricsBatch>(data);
    // The server's judgement of a batch (counts, labels, samples) never panics.
    if let Ok(batch) = message::decode::<MetricsBatch>(data) {
        let _ = batch.implausible();
    }
});
