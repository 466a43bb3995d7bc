//! `edgefleet-sim`: a fleet of simulated devices on real MQTT connections, one per device, each
//! speaking the device protocol (enrollment with a key of its own, sealed reported state, events
//! and metrics batches, reacting to desired state), to load a fleet server the way a fleet would.
//! Loopback only, bounded in devices and time; it stops by itself.

pub mod config;
pub mod device;
pub mod enrolled;
pub mod fleet;
pub mod link;
pub mod run;
pub mod traffic;
