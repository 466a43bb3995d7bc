//! Telemetry per model version for the fleet server, once per window: requests, errors, latency
//! quantiles, the distribution of predicted labels, and input drift against the target's signed
//! baseline (population stability index per feature, with the baseline's own bins and `psi`).
//! The serving path records into each slot's [`LiveStats`]; this reads every slot in service
//! (and those retired since) at the window's close and at each `/metrics` scrape. No clock, no
//! I/O; the one lock is taken by a window close, a scrape or a slot going into service, never by
//! a request.
//!
//! Memory is bounded whatever the traffic: per slot a fixed log-scale latency histogram
//! (quantiles to within 5 %), one counter per baseline bin and per label seen (labels are capped).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_protocol::ModelName;
use edgefleet_protocol::baseline::{BinCounts, psi};
use edgefleet_protocol::latency::BUCKET_RATIO;
use edgefleet_protocol::message::{ModelMetrics, ProcessStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use crate::live::{Counts, LiveStats};

type VersionKey = (ModelName, semver::Version);

#[derive(Debug, Default)]
pub struct Telemetry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sources: Vec<Source>,
    /// Counted by slots no longer alive and not yet sent in a window.
    unsent: BTreeMap<VersionKey, Window>,
    /// Everything slots no longer alive counted, so `/metrics` counters never go back.
    retired: BTreeMap<VersionKey, Counts>,
}

#[derive(Debug)]
struct Source {
    key: VersionKey,
    stats: Arc<LiveStats>,
    /// The reading the last window ended at.
    sent: Counts,
}

/// One version's counts over a window, with what its drift is judged against.
#[derive(Debug, Default)]
struct Window {
    counts: Counts,
    max: Duration,
    expected: BTreeMap<String, Vec<f64>>,
}

impl Window {
    fn add(&mut self, counts: &Counts, max: Duration, stats: &LiveStats) {
        self.counts.add(counts);
        self.max = self.max.max(max);
        for (feature, expected) in stats.expected_shares() {
            self.expected
                .entry(feature.to_owned())
                .or_insert_with(|| expected.to_vec());
        }
    }

    fn summary(self, (model, version): VersionKey) -> ModelMetrics {
        let drift_psi = self
            .counts
            .bins
            .iter()
            .filter_map(|(name, counts)| {
                Some((name.clone(), psi(self.expected.get(name)?, counts)?))
            })
            .collect();
        let drift_counts = self
            .counts
            .bins
            .iter()
            .filter(|(name, _)| self.expected.contains_key(*name))
            .map(|(name, counts)| (name.clone(), BinCounts::from_dense(counts)))
            .filter(|(_, counts)| !counts.is_empty())
            .collect();
        let latency_histogram = self.counts.histogram(self.max);
        ModelMetrics {
            shadow: None,
            model,
            version,
            requests: self.counts.requests,
            errors: self.counts.errors,
            latency: latency_histogram.summary(),
            latency_histogram,
            predictions: self.counts.labels,
            drift_psi,
            drift_counts,
            quality: Default::default(),
            samples: Vec::new(),
            samples_skipped: 0,
        }
    }
}

impl Telemetry {
    /// Starts reading a slot going into service (again, after a rollback: it is read once).
    pub fn register(&self, model: &ModelName, version: &semver::Version, stats: &Arc<LiveStats>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.retire_dead();
        if inner.sources.iter().any(|s| Arc::ptr_eq(&s.stats, stats)) {
            return;
        }
        let sent = stats.counts();
        inner.sources.push(Source {
            key: (model.clone(), version.clone()),
            stats: stats.clone(),
            sent,
        });
    }

    /// The figures of the window that ends now, one entry per model version that served in it;
    /// the next window starts empty.
    pub fn take(&self) -> Vec<ModelMetrics> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        inner.retire_dead();
        let mut windows = std::mem::take(&mut inner.unsent);
        for source in &mut inner.sources {
            let now = source.stats.counts();
            let max = source.stats.take_window_max();
            windows.entry(source.key.clone()).or_default().add(
                &now.since(&source.sent),
                max,
                &source.stats,
            );
            source.sent = now;
        }
        windows
            .into_iter()
            .filter(|(_, w)| w.counts.requests > 0)
            .map(|(key, window)| window.summary(key))
            .collect()
    }

    /// Everything counted per model version since the agent started: slots alive and retired.
    fn totals(&self) -> BTreeMap<VersionKey, Counts> {
        let Ok(inner) = self.inner.lock() else {
            return BTreeMap::new();
        };
        let mut totals = inner.retired.clone();
        for source in &inner.sources {
            totals
                .entry(source.key.clone())
                .or_default()
                .add(&source.stats.counts());
        }
        totals
    }
}

impl Inner {
    /// Moves slots that nothing else holds (retired, their last request done) out of the
    /// sources: what they counted since the last window waits for the next one.
    fn retire_dead(&mut self) {
        let (dead, alive): (Vec<Source>, Vec<Source>) = std::mem::take(&mut self.sources)
            .into_iter()
            .partition(|s| Arc::strong_count(&s.stats) == 1);
        self.sources = alive;
        for source in dead {
            let now = source.stats.counts();
            let max = source.stats.take_window_max();
            self.unsent.entry(source.key.clone()).or_default().add(
                &now.since(&source.sent),
                max,
                &source.stats,
            );
            self.retired.entry(source.key).or_default().add(&now);
        }
    }
}

/// Prometheus bucket bounds of `inference_seconds`: every 14th bound of the telemetry histogram
/// (a factor of 1.98), from 50 µs to 2.7 s, so each bucket's count is exact, not interpolated.
fn prometheus_bounds() -> impl Iterator<Item = (usize, f64)> {
    (0..17).map(|k| {
        let bucket = 80 + 14 * k;
        (bucket, BUCKET_RATIO.powi(bucket as i32) / 1e6)
    })
}

/// `(upper bound in seconds, count)` per Prometheus bucket from a slot's latency buckets; the
/// telemetry bucket `i` holds latencies below 1.05^(i+1) µs.
fn prometheus_buckets(latency: &[u64]) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(18);
    let mut from = 0;
    for (bucket, bound) in prometheus_bounds() {
        let to = bucket.min(latency.len());
        out.push((bound, latency[from.min(to)..to].iter().sum()));
        from = to;
    }
    out.push((
        f64::INFINITY,
        latency[from.min(latency.len())..].iter().sum(),
    ));
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct VersionLabels {
    model: String,
    version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct PredictionLabels {
    model: String,
    version: String,
    label: String,
}

impl Collector for Telemetry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.totals();
        let labels = |(model, version): &VersionKey| VersionLabels {
            model: model.to_string(),
            version: version.to_string(),
        };
        let mut counter = |name: &str, help: &str, value: &dyn Fn(&Counts) -> u64| {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (key, counts) in &totals {
                ConstCounter::new(value(counts)).encode(family.encode_family(&labels(key))?)?;
            }
            Ok::<_, std::fmt::Error>(())
        };
        counter(
            "inference_requests",
            "Inferences served, per model version",
            &|c| c.requests,
        )?;
        counter(
            "inference_errors",
            "Inferences the model failed (runtime error, NaN), per model version",
            &|c| c.errors,
        )?;
        let mut family = encoder.encode_descriptor(
            "inference_seconds",
            "Inference latency, per model version",
            None,
            MetricType::Histogram,
        )?;
        for (key, counts) in &totals {
            let buckets = prometheus_buckets(&counts.latency);
            let count = buckets.iter().map(|(_, n)| n).sum();
            family
                .encode_family(&labels(key))?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    counts.latency_sum_seconds,
                    count,
                    &buckets,
                    None,
                )?;
        }
        let mut family = encoder.encode_descriptor(
            "predictions",
            "Predicted labels of classifiers, per model version",
            None,
            MetricType::Counter,
        )?;
        for ((model, version), counts) in &totals {
            for (label, n) in &counts.labels {
                let labels = PredictionLabels {
                    model: model.to_string(),
                    version: version.to_string(),
                    label: label.clone(),
                };
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The agent process's CPU time and resident memory, from `/proc/self` (zeros where it is not
/// readable). CPU ticks are in USER_HZ, which Linux fixes at 100 for user space on every
/// architecture; memory is `VmRSS` from `status`, in kB whatever the page size.
pub fn process_stats() -> ProcessStats {
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| cpu_ticks(&stat))
        .map_or(0.0, |ticks| ticks as f64 / 100.0);
    let rss_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    ProcessStats {
        cpu_seconds,
        rss_bytes,
    }
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Puts the labels joined since the last window beside the window's figures, under their model
/// version (a label may arrive long after its version stopped serving: it gets an entry of its
/// own, with no requests).
pub fn add_quality(
    models: &mut Vec<ModelMetrics>,
    quality: BTreeMap<VersionKey, edgefleet_protocol::quality::QualityCounts>,
) {
    for ((model, version), counts) in quality {
        match models
            .iter_mut()
            .find(|m| m.model == model && m.version == version)
        {
            Some(entry) => entry.quality.merge(&counts),
            None => {
                // A label may arrive long after its version stopped serving.
                let mut entry = ModelMetrics::empty(model, version);
                entry.quality = counts;
                models.push(entry);
            }
        }
    }
}

#[cfg(test)]
mod tests;
