//! Models being served, side by side, each in a slot that is swapped atomically: a request takes
//! an `Arc` of the slot it starts on and finishes on it, whatever swaps happen meanwhile.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use edgefleet_inference::select::Trial;
use edgefleet_inference::{Inputs, LoadedModel, Outputs};
use edgefleet_protocol::target::ModelTargetMeta;

/// Live figures of one slot, for probation and metrics.
#[derive(Debug, Default)]
pub struct LiveStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Moving average of the inference latency in microseconds (weight 1/8 to the newest).
    typical_micros: AtomicU64,
    /// Recent inference latencies in microseconds (a bounded ring), for live p99.
    latencies: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    samples: Vec<u32>,
    next: usize,
}

const RING: usize = 2048;

/// Requests a slot serves through the blocking pool before it may be judged quick.
const QUICK_AFTER: u64 = 32;
/// Typical inference time under which a request runs inline: well under the ~100 µs an async
/// worker may be held without starving the others.
const QUICK_MICROS: u64 = 50;

impl LiveStats {
    pub fn record(&self, latency: Duration, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        // Racy by design: concurrent updates may drop one sample of the average.
        let typical = self.typical_micros.load(Ordering::Relaxed);
        let next = if typical == 0 {
            u64::from(micros)
        } else {
            (typical * 7 + u64::from(micros)) / 8
        };
        self.typical_micros.store(next.max(1), Ordering::Relaxed);
        if let Ok(mut ring) = self.latencies.lock() {
            if ring.samples.len() < RING {
                ring.samples.push(micros);
            } else {
                let i = ring.next;
                ring.samples[i] = micros;
                ring.next = (i + 1) % RING;
            }
        }
    }

    /// Whether this model's inferences are quick enough to run on the async worker that took the
    /// request instead of handing them to the blocking pool (two thread wake-ups, which cost
    /// more CPU than a tabular model's whole inference): after [`QUICK_AFTER`] requests, when the
    /// moving average is under [`QUICK_MICROS`].
    pub fn is_quick(&self) -> bool {
        self.requests.load(Ordering::Relaxed) >= QUICK_AFTER
            && self.typical_micros.load(Ordering::Relaxed) < QUICK_MICROS
    }

    /// (requests, errors, p99 in ms over the recent samples).
    pub fn snapshot(&self) -> (u64, u64, Option<f64>) {
        let mut samples: Vec<f64> = self
            .latencies
            .lock()
            .map(|r| r.samples.iter().map(|&us| f64::from(us) / 1000.0).collect())
            .unwrap_or_default();
        (
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            edgefleet_protocol::health::quantile(&mut samples, 0.99),
        )
    }
}

/// One loaded version of a model.
pub struct Slot {
    /// The stored version's identity ([`crate::store::StoredVersion::key`]).
    pub key: String,
    pub target: String,
    pub meta: Arc<ModelTargetMeta>,
    pub model: Box<dyn LoadedModel>,
    /// How the back-end was chosen (every back-end's figures under `auto`).
    pub trials: Vec<Trial>,
    /// Whether `trials` were measured earlier on this device and the choice reused.
    pub trials_cached: bool,
    pub stats: LiveStats,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("target", &self.target)
            .field("runtime", &self.model.runtime())
            .finish()
    }
}

/// Why an inference failed, as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The request was wrong: 4xx, not counted against the model.
    #[error(transparent)]
    Request(edgefleet_inference::Error),
    /// The model failed: 5xx, counted against it in probation.
    #[error("model failed: {0}")]
    Model(String),
}

impl Slot {
    /// Runs one inference, counting it in the slot's live stats. Non-finite outputs are the
    /// model's failure.
    pub fn infer(&self, inputs: &Inputs) -> Result<(Outputs, Duration), InferError> {
        let started = std::time::Instant::now();
        let result = self.model.run(inputs);
        let elapsed = started.elapsed();
        let result = match result {
            Ok(outputs) => match outputs
                .iter()
                .find(|(_, t)| t.data.first_non_finite().is_some())
            {
                Some((name, _)) => Err(InferError::Model(format!(
                    "output {name:?} contains NaN or infinity"
                ))),
                None => Ok(outputs),
            },
            Err(e @ edgefleet_inference::Error::Input { .. }) => Err(InferError::Request(e)),
            Err(e @ edgefleet_inference::Error::Protocol(_)) => Err(InferError::Request(e)),
            Err(e) => Err(InferError::Model(e.to_string())),
        };
        match &result {
            Ok(_) => self.stats.record(elapsed, true),
            Err(InferError::Model(_)) => self.stats.record(elapsed, false),
            Err(InferError::Request(_)) => {}
        }
        result.map(|o| (o, elapsed))
    }
}

/// All served models, by name.
#[derive(Debug, Default)]
pub struct Serving {
    slots: RwLock<BTreeMap<String, Arc<ArcSwapOption<Slot>>>>,
}

impl Serving {
    pub fn get(&self, model: &str) -> Option<Arc<Slot>> {
        self.slots.read().ok()?.get(model)?.load_full()
    }

    /// Puts `slot` in service for its model and returns the slot it replaced.
    pub fn swap(&self, model: &str, slot: Option<Arc<Slot>>) -> Option<Arc<Slot>> {
        let cell = {
            let Ok(mut slots) = self.slots.write() else {
                return None;
            };
            slots.entry(model.to_string()).or_default().clone()
        };
        cell.swap(slot)
    }

    pub fn names(&self) -> Vec<String> {
        self.slots
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn any_ready(&self) -> bool {
        self.names().iter().any(|n| self.get(n).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_quick_only_after_enough_quick_requests_and_stops_being_when_it_slows() {
        let stats = LiveStats::default();
        for _ in 0..QUICK_AFTER - 1 {
            stats.record(Duration::from_micros(5), true);
        }
        assert!(!stats.is_quick(), "judged on too few requests");
        stats.record(Duration::from_micros(5), true);
        assert!(stats.is_quick());
        for _ in 0..16 {
            stats.record(Duration::from_millis(2), true);
        }
        assert!(
            !stats.is_quick(),
            "a slowed model goes back to the blocking pool"
        );
    }
}
