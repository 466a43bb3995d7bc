//! Edgefleet's fleet server: the TUF-signed model registry and artifact store devices update
//! from, the device inventory and enrollment, desired/reported state over MQTT, and the operator
//! API. See docs/SERVER.md.
//!
//! I/O lives at the edges ([`api`], [`mqtt`], [`store::sqlite`]); [`range`] and [`config`] are
//! plain logic.

pub mod alerting;
pub mod alerts;
pub mod api;
pub mod artifacts;
pub mod audit;
pub mod auth;
pub mod baselines;
pub mod broker;
pub mod config;
pub mod desired;
pub mod desired_locks;
pub mod device_keys;
pub mod engine;
pub mod engine_memory;
pub mod fleet_figures;
pub mod fleet_guard;
pub mod guard_policies;
pub mod ingest;
pub mod listener;
pub mod live;
pub mod metrics;
pub mod mosquitto;
pub mod mqtt;
pub mod notifier;
pub mod online_keys;
pub mod range;
pub mod samples;
pub mod server;
pub mod sessions;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls_roots;
pub mod tufhost;

/// Staged rollouts, the state machine (crate `edgefleet-rollout`, no I/O).
pub use edgefleet_rollout as rollout;
