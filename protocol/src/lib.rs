//! The Edgefleet wire contract, shared by the edge agent, the fleet server and `fleetctl`.
//!
//! Everything that crosses a process boundary is defined here and nowhere else: the MQTT topic
//! scheme ([`topic`]), the versioned device messages ([`message`]), and the model metadata that
//! travels inside signed TUF targets ([`target`]): the model's tensor [`interface`] with the
//! feature schema that turns a JSON request into an input tensor, its [`health`] check (golden
//! vectors, latency budget) and its drift [`baseline`]; [`quality`] joins ground truth into figures
//! that add up across devices. The crate does no I/O and holds no clock:
//! callers pass bytes in and get typed values or a typed [`Error`] out, so the same code runs on a
//! device, in the server and in tests, and training-time preprocessing cannot drift from serving.
//!
//! Every decoder checks a hard size limit before it parses. Test with `cargo test -p
//! edgefleet-protocol` (unit and property tests); the decoders also have fuzz targets in `fuzz/`.

pub mod api;
pub mod baseline;
pub mod broker;
pub mod bundle;
mod error;
pub mod feedback;
pub mod guard;
pub mod health;
pub mod ids;
pub mod interface;
pub mod latency;
pub mod lineage;
pub mod message;
pub mod quality;
pub mod release_files;
pub mod sampling;
pub mod shadow;
pub mod split;
pub mod target;
pub mod target_name;
pub mod tensor;
pub mod topic;
pub mod verdict;

pub use error::Error;
pub use ids::{DeviceId, MessageId, ModelName};
pub use tensor::{DType, Tensor, TensorData};
