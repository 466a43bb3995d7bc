//! Telemetry rollups as the store keeps them: per group, model version and bucket of time, the
//! figures of the metrics batches folded into them. `crate::telemetry::rollups` folds, compacts
//! and reads them; the store only guarantees that each batch is folded once (it leaves the queue
//! of batches waiting, `metrics_unrolled`, in the transaction that stores the rows it went into).

use std::collections::BTreeMap;

use async_trait::async_trait;
use edgefleet_protocol::baseline::BinCounts;
use edgefleet_protocol::latency::LatencyHistogram;
use edgefleet_protocol::message::MetricsBatch;
use edgefleet_protocol::quality::QualityCounts;
use serde::{Deserialize, Serialize};

use super::Result;

/// Bucket lengths: minutes for recent telemetry, hours for older.
pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3600;

/// The figures of one rollup row. Rows with an empty model hold what belongs to whole batches
/// (`batches`, `dropped_batches`, `devices` over all models); the others one model version's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RollupFigures {
    pub batches: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_batches: u64,
    /// Devices that sent the batches. Rows of one bucket add up (a device sends one batch per
    /// window, so it falls in one row per bucket); across buckets the most in one bucket
    /// counts, as "devices reporting".
    pub devices: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requests: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: u64,
    #[serde(default)]
    pub latency: LatencyHistogram,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub predictions: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift_counts: BTreeMap<String, BinCounts>,
    #[serde(default)]
    pub quality: QualityCounts,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A rollup row to store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRollup {
    pub group: String,
    /// Empty for the batch-level row.
    pub model: String,
    pub version: String,
    /// [`MINUTE`] or [`HOUR`].
    pub span: i64,
    /// Start of the bucket, Unix seconds (a multiple of `span`).
    pub bucket: i64,
    pub figures: RollupFigures,
}

/// A stored rollup row.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollup {
    pub id: i64,
    pub row: NewRollup,
}

/// A stored batch not yet folded into rollups.
#[derive(Debug, Clone, PartialEq)]
pub struct UnrolledBatch {
    pub device: String,
    pub seq: u64,
    /// When it arrived, Unix microseconds.
    pub received_us: i64,
    /// Its device's group ("" for a device no longer known).
    pub group: String,
    /// `None` when this server cannot read it: it is marked folded all the same.
    pub batch: Option<MetricsBatch>,
}

/// Telemetry rollups.
#[async_trait]
pub trait RollupStore: Send + Sync {
    /// Up to `limit` stored batches not yet folded, earliest arrival first.
    async fn unrolled_metrics(&self, limit: usize) -> Result<Vec<UnrolledBatch>>;
    /// The keys ((device, seq)) of up to `limit` stored batches not yet folded, earliest arrival
    /// first: what [`Self::unrolled_metrics`] would return, without the batches.
    async fn unrolled_keys(&self, limit: usize) -> Result<Vec<(String, u64)>>;
    /// The stored batches of `keys`, folded or not, in no particular order; keys of batches no
    /// longer stored are left out.
    async fn batches_by_key(&self, keys: &[(String, u64)]) -> Result<Vec<UnrolledBatch>>;
    /// Takes the batches `folded` ((device, seq)) off the queue of those waiting and stores
    /// `rows`, in one transaction. False, with nothing changed, when any of them was folded already (another
    /// server got there first).
    async fn add_rollups(&self, folded: &[(String, u64)], rows: &[NewRollup]) -> Result<bool>;
    /// The rows of `span` whose bucket starts in `[from, until)`.
    async fn rollups(&self, span: i64, from: i64, until: i64) -> Result<Vec<Rollup>>;
    /// Deletes the rows `remove` and stores `add`, in one transaction (compaction). False, with
    /// nothing changed, when any of `remove` was gone already.
    async fn replace_rollups(&self, remove: &[i64], add: &[NewRollup]) -> Result<bool>;
    /// Deletes the rows whose bucket starts before `before`; returns how many.
    async fn prune_rollups(&self, before: i64) -> Result<u64>;
}
