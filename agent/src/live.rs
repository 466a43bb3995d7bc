//! What the serving path counts for one loaded model version, recorded once per request in
//! atomics and read by three readers with their own starting points: `/metrics` (everything since
//! the slot went into service), probation (the same, since a candidate's slot is new) and
//! telemetry (the difference since the last window). No lock and no allocation per request; the
//! readers pay instead, once per scrape, probation tick or window.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edgefleet_protocol::baseline::{Baseline, FeatureBaseline};
use edgefleet_protocol::latency::{BUCKETS, LatencyHistogram};
use serde_json::Value;

/// Distinct predicted labels counted per model version; more are counted under `other`.
pub const MAX_LABELS: usize = 64;
/// The label that stands for every label past [`MAX_LABELS`].
pub const OTHER_LABEL: &str = "other";

/// Requests a slot serves through the blocking pool before it may be judged quick.
const QUICK_AFTER: u64 = 32;
/// Typical inference time under which a request runs inline: well under the ~100 µs an async
/// worker may be held without starving the others.
const QUICK_MICROS: u64 = 50;

/// Live counts of one slot.
#[derive(Debug)]
pub struct LiveStats {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Moving average of the inference latency in microseconds (weight 1/8 to the newest).
    typical_micros: AtomicU64,
    /// Successful inferences per [`LatencyHistogram`] bucket.
    latency: Box<[AtomicU64]>,
    latency_sum_nanos: AtomicU64,
    max_micros: AtomicU64,
    /// The slowest inference since telemetry last closed a window (telemetry resets it).
    window_max_micros: AtomicU64,
    labels: Box<[LabelCell]>,
    other_labels: AtomicU64,
    features: Box<[FeatureCells]>,
}

#[derive(Debug, Default)]
struct LabelCell {
    label: OnceLock<Box<str>>,
    count: AtomicU64,
}

#[derive(Debug)]
struct FeatureCells {
    name: String,
    baseline: FeatureBaseline,
    expected: Vec<f64>,
    counts: Box<[AtomicU64]>,
}

fn zeros(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// A reading of a slot's counts; two readings subtract to what happened between them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    /// Successful inferences per [`LatencyHistogram`] bucket (empty when there were none).
    pub latency: Vec<u64>,
    pub latency_sum_seconds: f64,
    pub labels: BTreeMap<String, u64>,
    /// Per baseline feature, the observed values in each of its bins.
    pub bins: BTreeMap<String, Vec<u64>>,
}

impl Counts {
    /// What happened after `earlier`, a reading of the same slot.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let minus = |now: &[u64], then: &[u64]| -> Vec<u64> {
            now.iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(then.get(i).copied().unwrap_or(0)))
                .collect()
        };
        Counts {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: minus(&self.latency, &earlier.latency),
            latency_sum_seconds: (self.latency_sum_seconds - earlier.latency_sum_seconds).max(0.0),
            labels: self
                .labels
                .iter()
                .map(|(l, n)| {
                    (
                        l.clone(),
                        n.saturating_sub(earlier.labels.get(l).copied().unwrap_or(0)),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            bins: self
                .bins
                .iter()
                .map(|(f, now)| {
                    let then = earlier.bins.get(f).map_or(&[][..], Vec::as_slice);
                    (f.clone(), minus(now, then))
                })
                .collect(),
        }
    }

    /// Adds another reading's counts (two slots of one version, or a retired slot's totals).
    pub fn add(&mut self, other: &Counts) {
        let plus = |mine: &mut Vec<u64>, theirs: &[u64]| {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m = m.saturating_add(*t);
            }
        };
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        plus(&mut self.latency, &other.latency);
        self.latency_sum_seconds += other.latency_sum_seconds;
        for (label, n) in &other.labels {
            let mine = self.labels.entry(label.clone()).or_default();
            *mine = mine.saturating_add(*n);
        }
        for (feature, counts) in &other.bins {
            plus(self.bins.entry(feature.clone()).or_default(), counts);
        }
    }

    /// The latency buckets in use, as the wire carries them, with the slowest inference known.
    pub fn histogram(&self, max: Duration) -> LatencyHistogram {
        LatencyHistogram {
            buckets: self
                .latency
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .filter_map(|(i, n)| Some((u16::try_from(i).ok()?, *n)))
                .collect(),
            max_ms: max.as_secs_f64() * 1e3,
        }
    }
}

impl LiveStats {
    /// Counters for a slot of a model version; `baseline`'s features get a counter per bin.
    pub fn new(baseline: Option<&Baseline>) -> Self {
        let features = baseline
            .map(|b| {
                b.features
                    .iter()
                    .map(|(name, feature)| {
                        let expected = feature.expected_shares();
                        FeatureCells {
                            name: name.clone(),
                            baseline: feature.clone(),
                            counts: zeros(expected.len()),
                            expected,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            typical_micros: AtomicU64::new(0),
            latency: zeros(usize::from(BUCKETS)),
            latency_sum_nanos: AtomicU64::new(0),
            max_micros: AtomicU64::new(0),
            window_max_micros: AtomicU64::new(0),
            labels: (0..MAX_LABELS).map(|_| LabelCell::default()).collect(),
            other_labels: AtomicU64::new(0),
            features,
        }
    }

    /// One inference the model answered.
    pub fn record_success(&self, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Racy by design: concurrent updates may drop one sample of the average.
        let typical = self.typical_micros.load(Ordering::Relaxed);
        let next = if typical == 0 {
            micros
        } else {
            (typical.saturating_mul(7).saturating_add(micros)) / 8
        };
        self.typical_micros.store(next.max(1), Ordering::Relaxed);
        let bucket = usize::from(LatencyHistogram::bucket_of(latency));
        if let Some(cell) = self.latency.get(bucket) {
            cell.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
        self.window_max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// One inference the model failed on a well-formed request (runtime error, NaN).
    pub fn record_failure(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// What a feature-schema request predicted, and which baseline bin each feature fell in.
    pub fn record_prediction(
        &self,
        label: Option<&str>,
        row: Option<&serde_json::Map<String, Value>>,
    ) {
        if let Some(label) = label {
            self.count_label(label);
        }
        if let Some(row) = row {
            for feature in &self.features {
                if let Some(bin) = row
                    .get(&feature.name)
                    .and_then(|v| bin_of(&feature.baseline, v))
                    && let Some(cell) = feature.counts.get(bin)
                {
                    cell.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn count_label(&self, label: &str) {
        for cell in &*self.labels {
            // First come, first kept: a free cell is claimed once and never changes after.
            let kept = cell.label.get_or_init(|| label.into());
            if **kept == *label {
                cell.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.other_labels.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this model's inferences are quick enough to run on the async worker that took the
    /// request instead of handing them to the blocking pool (two thread wake-ups, which cost
    /// more CPU than a tabular model's whole inference): after [`QUICK_AFTER`] requests, when the
    /// moving average is under [`QUICK_MICROS`].
    pub fn is_quick(&self) -> bool {
        self.requests.load(Ordering::Relaxed) >= QUICK_AFTER
            && self.typical_micros.load(Ordering::Relaxed) < QUICK_MICROS
    }

    /// (requests, errors, p99 in ms of the successful ones) since the slot was made: what
    /// probation judges.
    pub fn snapshot(&self) -> (u64, u64, Option<f64>) {
        let counts = self.counts();
        let histogram = counts.histogram(self.max());
        let p99 = (histogram.count() > 0).then(|| histogram.quantile_ms(0.99));
        (counts.requests, counts.errors, p99)
    }

    /// The slowest inference since the slot was made.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_micros.load(Ordering::Relaxed))
    }

    /// The slowest inference since the last call; the next window starts from nothing.
    pub fn take_window_max(&self) -> Duration {
        Duration::from_micros(self.window_max_micros.swap(0, Ordering::Relaxed))
    }

    /// Everything counted so far. Requests that finish while this reads may be counted in one
    /// field and not yet in another; the next reading has them whole.
    pub fn counts(&self) -> Counts {
        let load = |cells: &[AtomicU64]| -> Vec<u64> {
            cells.iter().map(|c| c.load(Ordering::Relaxed)).collect()
        };
        let mut labels: BTreeMap<String, u64> = self
            .labels
            .iter()
            .filter_map(|cell| {
                let label = cell.label.get()?;
                Some((label.to_string(), cell.count.load(Ordering::Relaxed)))
            })
            .collect();
        let other = self.other_labels.load(Ordering::Relaxed);
        if other > 0 {
            *labels.entry(OTHER_LABEL.to_owned()).or_default() += other;
        }
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: load(&self.latency),
            latency_sum_seconds: self.latency_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            labels,
            bins: self
                .features
                .iter()
                .map(|f| (f.name.clone(), load(&f.counts)))
                .collect(),
        }
    }

    /// Each baseline feature's expected share per bin, for the population stability index.
    pub fn expected_shares(&self) -> impl Iterator<Item = (&str, &[f64])> {
        self.features
            .iter()
            .map(|f| (f.name.as_str(), f.expected.as_slice()))
    }
}

/// Which bin of the baseline a value falls in: numeric bin `i` holds `edges[i-1] < x <=
/// edges[i]`; a category outside the baseline's counts as its last, `other`, bin. `None` for a
/// value of the wrong kind.
pub fn bin_of(feature: &FeatureBaseline, value: &Value) -> Option<usize> {
    match feature {
        FeatureBaseline::Numeric { edges, .. } => {
            let x = value.as_f64().filter(|x| x.is_finite())?;
            Some(FeatureBaseline::numeric_bin(edges, x))
        }
        FeatureBaseline::Categorical { shares, .. } => {
            // Boolean features are baselined as the categories "false" and "true".
            let category = match value {
                Value::Bool(true) => "true",
                Value::Bool(false) => "false",
                other => other.as_str()?,
            };
            Some(
                shares
                    .keys()
                    .position(|k| k == category)
                    .unwrap_or(shares.len()),
            )
        }
    }
}

#[cfg(test)]
mod tests;
