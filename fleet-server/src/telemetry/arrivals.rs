//! Reading telemetry as it arrives, each batch once. Whoever keeps running figures (a rollout's
//! gates) reads only what arrived since its last read instead of everything in its window every
//! time: the cost follows the arrival rate, not fleet × window.
//!
//! Batches are read by arrival second. One stamped on arrival may be stored a little later (they
//! are stored concurrently), so every read reaches back [`ARRIVAL_MARGIN_SECONDS`] and skips
//! what it already took.

use std::collections::HashMap;

use crate::store::StoredMetrics;

/// How long after its arrival stamp a batch may still become visible to a read.
pub const ARRIVAL_MARGIN_SECONDS: i64 = 30;

/// Where the next read starts, and what the last reads took within the margin.
#[derive(Debug, Default)]
pub struct Arrivals {
    read_from: Option<i64>,
    /// (device, seq) → arrival second of what was taken at or after `read_from`.
    taken: HashMap<(String, u64), i64>,
}

impl Arrivals {
    /// Where the next read starts: `first` until a read was made.
    pub fn read_from(&self, first: i64) -> i64 {
        self.read_from.unwrap_or(first)
    }

    /// Of a read that started at `read_from`, made at `now` (seconds), the batches not taken
    /// before.
    pub fn take_new(
        &mut self,
        read: Vec<StoredMetrics>,
        read_from: i64,
        now: i64,
    ) -> Vec<StoredMetrics> {
        let mut fresh = Vec::new();
        for stored in read {
            let at = stored.received_us.div_euclid(1_000_000);
            let key = (stored.device.to_string(), stored.seq);
            if self.taken.insert(key, at).is_none() {
                fresh.push(stored);
            }
        }
        let next = (now - ARRIVAL_MARGIN_SECONDS).max(read_from);
        self.taken.retain(|_, at| *at >= next);
        self.read_from = Some(next);
        fresh
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use edgefleet_protocol::latency::LatencyHistogram;
    use edgefleet_protocol::message::{MetricsBatch, ModelMetrics};
    use edgefleet_protocol::shadow::{ShadowCounts, ShadowReport};

    use super::*;

    /// A batch as stored: device `d{device}` (d9 is not in the rollout), arriving at `at`.
    pub(crate) fn stored(
        device: u8,
        seq: u64,
        candidate: bool,
        requests: u64,
        at: i64,
    ) -> StoredMetrics {
        let mut latency = LatencyHistogram::default();
        for i in 0..requests {
            latency.record(Duration::from_micros(500 + 97 * i));
        }
        let version = if candidate { "2.1.0" } else { "2.0.0" };
        let shadow = candidate.then(|| ShadowReport {
            target: "models/churn/2.1.0/model.onnx".into(),
            counts: ShadowCounts {
                compared: requests,
                agreed: requests / 2,
                ..Default::default()
            },
        });
        let batch = MetricsBatch {
            schema: 1,
            id: edgefleet_protocol::MessageId::new(format!("d{device}-{seq}")).unwrap(),
            device: edgefleet_protocol::DeviceId::new(format!("d{device}")).unwrap(),
            seq,
            window_start_unix: at as u64 - 60,
            window_end_unix: at as u64,
            dropped_batches: 0,
            process: Default::default(),
            models: vec![ModelMetrics {
                shadow,
                model: "churn".parse().unwrap(),
                version: version.parse().unwrap(),
                requests,
                errors: requests / 7,
                latency: latency.summary(),
                latency_histogram: latency,
                predictions: [("yes".to_owned(), requests)].into(),
                drift_psi: BTreeMap::new(),
                drift_counts: BTreeMap::new(),
                quality: Default::default(),
                samples: Vec::new(),
                samples_skipped: 0,
            }],
        };
        StoredMetrics::received(batch, at * 1_000_000 + 123)
    }
}
