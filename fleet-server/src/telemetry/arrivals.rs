//! Reading telemetry as it arrives, each batch once. Whoever keeps running figures (a rollout's
//! gates, the fleet figures `/metrics` shows) reads only what arrived since its last read instead
//! of everything in its window every time: the cost follows the arrival rate, not fleet × window.
//!
//! Batches are read by arrival second. One stamped on arrival may be stored a little later (they
//! are stored concurrently), so every read reaches back [`ARRIVAL_MARGIN_SECONDS`] and skips
//! what it already took.

use std::collections::{BTreeMap, HashMap};

use edgefleet_protocol::message::MetricsBatch;

use super::{VersionFigures, by_version};
use crate::baselines::Baselines;
use crate::store::{StateStore, StoreError, StoredMetrics};

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

/// The whole fleet's figures per version over the last `window` seconds of arrivals, kept up to
/// date from what arrives: per arrival second, so seconds leave the window whole.
#[derive(Debug, Default)]
pub struct FleetWindow {
    arrivals: Arrivals,
    seconds: BTreeMap<i64, BTreeMap<(String, String), VersionFigures>>,
}

impl FleetWindow {
    /// Folds in what arrived since the last refresh and returns the figures of the batches that
    /// arrived in `[now - window, now]`, drift judged against `baselines`.
    pub async fn refresh(
        &mut self,
        store: &(impl StateStore + ?Sized),
        window: i64,
        now: i64,
        baselines: &Baselines,
    ) -> Result<BTreeMap<(String, String), VersionFigures>, StoreError> {
        let start = now - window;
        let from = self.arrivals.read_from(start).max(start);
        let read = store.metrics(None, from).await?;
        Ok(self.fold(read, from, now, window, baselines))
    }

    fn fold(
        &mut self,
        read: Vec<StoredMetrics>,
        from: i64,
        now: i64,
        window: i64,
        baselines: &Baselines,
    ) -> BTreeMap<(String, String), VersionFigures> {
        let mut by_second: BTreeMap<i64, Vec<MetricsBatch>> = BTreeMap::new();
        for stored in self.arrivals.take_new(read, from, now) {
            by_second
                .entry(stored.received_us.div_euclid(1_000_000))
                .or_default()
                .push(stored.batch);
        }
        for (second, batches) in by_second {
            let figures = self.seconds.entry(second).or_default();
            for (key, f) in by_version(&batches, &Baselines::default(), |_| true) {
                figures.entry(key).or_default().merge(&f);
            }
        }
        self.seconds = self.seconds.split_off(&(now - window));
        let mut total: BTreeMap<(String, String), VersionFigures> = BTreeMap::new();
        for figures in self.seconds.values() {
            for (key, f) in figures {
                total.entry(key.clone()).or_default().merge(f);
            }
        }
        total
            .into_iter()
            .map(|((model, version), f)| {
                let judged = f.with_baseline(baselines.get(&model, &version));
                ((model, version), judged)
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use edgefleet_protocol::latency::LatencyHistogram;
    use edgefleet_protocol::message::ModelMetrics;
    use edgefleet_protocol::shadow::{ShadowCounts, ShadowReport};
    use proptest::prelude::*;

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

    proptest! {
        /// Refreshed at any moments, with batches stored up to the margin after their arrival
        /// stamp, the window's figures equal one read of the window's batches visible then.
        #[test]
        fn the_window_kept_up_to_date_equals_reading_it_whole(
            arrivals in prop::collection::vec(
                (prop::sample::select(vec![1u8, 2, 3]), any::<bool>(), 1u64..50, 0i64..1_000, 0i64..=ARRIVAL_MARGIN_SECONDS),
                0..80,
            ),
            refreshes in prop::collection::vec(0i64..1_100, 1..15),
        ) {
            const WINDOW: i64 = 300;
            let table: Vec<(i64, StoredMetrics)> = arrivals
                .iter()
                .enumerate()
                .map(|(seq, &(device, candidate, requests, at, delay))| {
                    let at = 10_000 + at;
                    (at + delay, stored(device, seq as u64, candidate, requests, at))
                })
                .collect();
            let mut refreshes: Vec<i64> = refreshes.into_iter().map(|r| 10_000 + r).collect();
            refreshes.sort_unstable();
            let baselines = Baselines::default();
            let mut window = FleetWindow::default();
            for now in refreshes {
                let start = now - WINDOW;
                let from = window.arrivals.read_from(start).max(start);
                let visible = |from: i64| -> Vec<StoredMetrics> {
                    table
                        .iter()
                        .filter(|(visible, s)| *visible <= now && s.received_us / 1_000_000 >= from)
                        .map(|(_, s)| s.clone())
                        .collect()
                };
                let kept = window.fold(visible(from), from, now, WINDOW, &baselines);
                let whole: Vec<MetricsBatch> = visible(start).into_iter().map(|s| s.batch).collect();
                prop_assert_eq!(kept, by_version(&whole, &baselines, |_| true));
            }
        }
    }
}
