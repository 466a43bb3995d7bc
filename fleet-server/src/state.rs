//! What the server's parts share at run time: configuration, the store, the TUF host, the
//! broker handle and the locks that keep concurrent writers in order. The HTTP layer, the
//! rollout engine and desired-state assignment all take it; it depends on none of them.

use std::sync::Arc;

use crate::artifacts::BlobStore;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::mqtt::MqttHandle;
use crate::store::Store;
use crate::tufhost::TufHost;

/// Everything the server's parts share.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub blobs: BlobStore,
    pub tuf: Arc<TufHost>,
    pub mqtt: MqttHandle,
    pub metrics: Arc<Metrics>,
    /// The URL devices connect to the broker at, told to them at enrollment.
    pub device_mqtt_url: String,
    /// Serialises desired-state changes per device so its revisions never race.
    pub desired_locks: crate::desired_locks::DesiredLocks,
    /// One rollout-engine pass at a time (timer and operator commands); it holds what the
    /// passes gathered of each active rollout's telemetry and of the devices' reported states.
    pub engine_lock: tokio::sync::Mutex<crate::engine_memory::PassMemory>,
    /// The same for the rollouts operators look at (`GET /api/v1/rollouts/{id}/telemetry`),
    /// so each view reads only what arrived since the last.
    pub rollout_views: tokio::sync::Mutex<crate::telemetry::evidence::EvidenceCache>,
    /// The stored telemetry batches not yet folded into rollups, as reads of the fleet's figures
    /// found them: each read fetches only those that arrived since.
    pub pending_batches: crate::telemetry::pending::PendingBatches,
    /// This process among the servers sharing a database (random, per start).
    pub instance: String,
    /// Its broker-session lease, and the draining of sessions of servers gone (external
    /// brokers only).
    pub sessions: Option<crate::sessions::Sessions>,
    /// Whether this server holds the rollout-engine lease.
    pub driving_rollouts: std::sync::atomic::AtomicBool,
    /// Where "now" comes from (the system's clock; tests pass one they move).
    pub clock: Arc<dyn edgefleet_clock::Clock>,
    /// The signed baselines fleet input drift is judged against, read once per release.
    pub baselines: crate::baselines::BaselineCache,
    /// The token `/metrics` asks for (`metrics.token_file`), if any.
    pub metrics_token: Option<String>,
    /// What the dashboards' live streams were told, and the channel their changes go out on.
    pub live: crate::live::Hub,
    /// Cancelled at shutdown: every background task of the server watches it and stops.
    pub shutdown: tokio_util::sync::CancellationToken,
}

pub type AppState = Arc<Shared>;

impl Shared {
    /// The baselines of every signed release (read from the artifact store once each).
    pub async fn baselines(
        &self,
    ) -> Result<crate::baselines::Baselines, crate::tufhost::HostError> {
        let models = self.tuf.models().await?;
        Ok(self.baselines.load(&self.blobs, &models).await)
    }
}
