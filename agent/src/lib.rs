//! `edge-agent`, the device daemon: it keeps predicting with or without a network, and a new
//! model version only takes over after it proved itself on the device.
//!
//! Main steps: [`config`] is parsed and validated before anything else; [`store`] opens the
//! model store and finishes whatever a crash left in flight (the [`lifecycle`] state machine
//! decides); [`agent`] loads every active model into [`serving`] slots and runs the install
//! pipeline (stage → load → health check → activate → [`probation`] → commit, or reject / roll
//! back); [`api`] serves predictions and the model list; [`metrics`] exports Prometheus figures.
//!
//! Test with `cargo test -p edge-agent` (unit tests of the pure parts) and the cross-process tests
//! in `tests/` (`cargo test -p edgefleet-e2e`), which run the real binary against real models.

pub mod admin;
pub mod agent;
pub mod api;
pub mod body_budget;
pub mod config;
pub mod device_key;
pub mod fleet;
pub mod guard;
pub mod lifecycle;
pub mod live;
pub mod metrics;
pub mod outbox;
pub mod predictions;
pub mod probation;
pub mod reconcile;
pub mod sampling;
pub mod serving;
pub mod shadow;
pub mod store;
pub mod telemetry;
pub mod transport;
