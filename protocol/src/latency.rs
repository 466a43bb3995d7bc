//! Latency histograms that merge: log-spaced buckets from 1 µs, each 5 % wider than the one
//! before, so any quantile is known to within 5 % and histograms from many devices and windows
//! add up bucket by bucket. The agent fills one per model version and window; the server merges
//! them into fleet, version and rollout figures (a quantile of quantiles would be meaningless).
//!
//! On the wire only the buckets in use travel, as `bucket index → count`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Ratio between neighbouring buckets: quantiles are exact to within this.
pub const BUCKET_RATIO: f64 = 1.05;
/// Bucket 0 holds up to 1 µs; the last one everything above ~100 s.
pub const BUCKETS: u16 = 380;

/// Latency summary of one window, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyHistogram {
    /// Bucket index → requests whose latency fell in it. Indices at or above [`BUCKETS`] (from a
    /// newer or broken sender) are ignored by every reader.
    pub buckets: BTreeMap<u16, u64>,
    /// The slowest request seen, in milliseconds.
    pub max_ms: f64,
}

impl LatencyHistogram {
    /// Nothing recorded (what a sender leaves off the wire).
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty() && self.max_ms == 0.0
    }

    pub fn bucket_of(latency: Duration) -> u16 {
        let micros = latency.as_secs_f64() * 1e6;
        if micros <= 1.0 {
            0
        } else {
            ((micros.ln() / BUCKET_RATIO.ln()) as u64).min(u64::from(BUCKETS - 1)) as u16
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let count = self.buckets.entry(Self::bucket_of(latency)).or_default();
        *count = count.saturating_add(1);
        self.max_ms = self.max_ms.max(latency.as_secs_f64() * 1e3);
    }

    /// Adds another histogram's requests to this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (&bucket, &count) in other.valid_buckets() {
            let mine = self.buckets.entry(bucket).or_default();
            *mine = mine.saturating_add(count);
        }
        if other.max_ms.is_finite() {
            self.max_ms = self.max_ms.max(other.max_ms);
        }
    }

    fn valid_buckets(&self) -> impl Iterator<Item = (&u16, &u64)> {
        self.buckets.iter().filter(|(b, _)| **b < BUCKETS)
    }

    /// Requests counted.
    pub fn count(&self) -> u64 {
        self.valid_buckets()
            .fold(0u64, |sum, (_, c)| sum.saturating_add(*c))
    }

    /// The latency below which a share `q` of the requests fell, in milliseconds: the geometric
    /// middle of the bucket holding it (never above the slowest seen). 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (&bucket, &count) in self.valid_buckets() {
            seen = seen.saturating_add(count);
            if seen >= rank {
                let middle_us = BUCKET_RATIO.powf(f64::from(bucket) + 0.5);
                return (middle_us / 1e3).min(self.max_ms);
            }
        }
        self.max_ms
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            p50_ms: self.quantile_ms(0.50),
            p95_ms: self.quantile_ms(0.95),
            p99_ms: self.quantile_ms(0.99),
            max_ms: self.max_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_are_within_five_percent() {
        let mut h = LatencyHistogram::default();
        for micros in 1..=10_000u64 {
            h.record(Duration::from_micros(micros));
        }
        for (q, exact_ms) in [(0.5, 5.0), (0.95, 9.5), (0.99, 9.9)] {
            let got = h.quantile_ms(q);
            assert!(
                (got - exact_ms).abs() / exact_ms <= 0.05,
                "q{q}: {got} vs {exact_ms}"
            );
        }
        assert_eq!(h.count(), 10_000);
        assert!((h.max_ms - 10.0).abs() < 1e-9);
    }

    #[test]
    fn buckets_past_the_last_are_ignored_not_trusted() {
        let mut h: LatencyHistogram =
            serde_json::from_str(r#"{"buckets":{"100":5,"60000":1000000},"max_ms":0.2}"#).unwrap();
        assert_eq!(h.count(), 5);
        let mut sum = LatencyHistogram::default();
        sum.merge(&h);
        assert_eq!(sum.buckets.len(), 1);
        h.buckets.clear();
        assert_eq!(h.quantile_ms(0.99), 0.0);
    }

    proptest! {
        /// Merging the histograms of two halves gives the histogram of the whole.
        #[test]
        fn merge_equals_recording_everything(a in proptest::collection::vec(0u64..5_000_000, 0..200),
                                             b in proptest::collection::vec(0u64..5_000_000, 0..200)) {
            let (mut left, mut right, mut all) = Default::default();
            for &n in &a { LatencyHistogram::record(&mut left, Duration::from_nanos(n * 100)); }
            for &n in &b { LatencyHistogram::record(&mut right, Duration::from_nanos(n * 100)); }
            for &n in a.iter().chain(&b) { LatencyHistogram::record(&mut all, Duration::from_nanos(n * 100)); }
            let mut merged: LatencyHistogram = left;
            merged.merge(&right);
            prop_assert_eq!(merged, all);
        }
    }
}
