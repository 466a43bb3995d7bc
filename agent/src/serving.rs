//! Models being served, side by side, each in a slot that is swapped atomically: a request takes
//! an `Arc` of the slot it starts on and finishes on it, whatever swaps happen meanwhile.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwapOption;
use edgefleet_inference::select::Trial;
use edgefleet_inference::{Inputs, LoadedModel, Outputs};
use edgefleet_protocol::target::ModelTargetMeta;

use crate::live::LiveStats;

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
    /// Counted once per request; read by `/metrics`, probation and telemetry.
    pub stats: Arc<LiveStats>,
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
    pub fn infer(&self, inputs: &Inputs) -> Result<Outputs, InferError> {
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
            Ok(_) => self.stats.record_success(elapsed),
            Err(InferError::Model(_)) => self.stats.record_failure(),
            Err(InferError::Request(_)) => {}
        }
        result
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
