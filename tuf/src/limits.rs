//! Caps on what the network may make a device download, shared by the metadata client and the
//! artifact download.

use std::time::Duration;

/// Caps on what the network may make a device download.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Largest root, timestamp or snapshot file accepted, in bytes.
    pub max_metadata_bytes: u64,
    /// Largest targets file accepted when snapshot does not give its length, in bytes.
    pub max_targets_bytes: u64,
    /// Largest artifact accepted, whatever targets says, in bytes.
    pub max_artifact_bytes: u64,
    /// Largest release file (golden cases, baseline) accepted, whatever the metadata says.
    pub max_release_file_bytes: u64,
    /// A download slower than this on average (after the first `grace`) is abandoned: the
    /// slow-retrieval attack.
    pub min_bytes_per_second: u64,
    pub grace: Duration,
    /// No single chunk may take longer than this.
    pub stall_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_metadata_bytes: 1024 * 1024,
            max_targets_bytes: 16 * 1024 * 1024,
            max_artifact_bytes: 512 * 1024 * 1024,
            max_release_file_bytes: 64 * 1024 * 1024,
            min_bytes_per_second: 16 * 1024,
            grace: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
        }
    }
}
