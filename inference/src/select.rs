//! Which back-end serves a model, decided on the device.
//!
//! `auto` loads the model on every available back-end, runs the full health check on each
//! (golden vectors within tolerance, no NaN, p99 within budget) and keeps the one with the lowest
//! p50 among those that pass. A back-end that cannot load the model, answers wrongly or is too
//! slow is simply not chosen. When none passes, the error keeps every back-end's trial and
//! reason, so the operator sees why each one refused, not just the first. `tract` or `onnxruntime` (from the target's metadata, else the device's default) pins
//! the back-end: a device without it refuses the model rather than serve it on something the
//! publisher ruled out.

use std::sync::Arc;

use edgefleet_protocol::health::HealthSpec;
use edgefleet_protocol::interface::ModelInterface;
use edgefleet_protocol::target::RuntimePreference;

use crate::health::{self, HealthReport};
use crate::{Error, Loaded, Runtime};

/// The back-ends this device has, and the preference used when a target names none.
#[derive(Debug)]
pub struct Engine {
    runtimes: Vec<Arc<dyn Runtime>>,
    /// Back-ends that exist in this build but could not be started, and why.
    pub unavailable: Vec<(&'static str, String)>,
    pub default_preference: RuntimePreference,
}

/// How one back-end fared with a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trial {
    pub runtime: String,
    pub load_ms: Option<f64>,
    pub outcome: TrialOutcome,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialOutcome {
    /// Passed the health check with these figures.
    Passed { p50_ms: f64, p99_ms: f64 },
    /// Could not load or failed the health check (wrong answers, NaN, too slow).
    Failed(String),
    /// Loaded without a comparison (pinned, or the only back-end); the install pipeline's health
    /// check judges it.
    Unmeasured,
}

/// The model to serve and how it was chosen.
#[derive(Debug)]
pub struct Selected {
    pub loaded: Loaded,
    pub trials: Vec<Trial>,
}

impl Engine {
    pub fn new(
        runtimes: Vec<Arc<dyn Runtime>>,
        unavailable: Vec<(&'static str, String)>,
        default_preference: RuntimePreference,
    ) -> Self {
        Self {
            runtimes,
            unavailable,
            default_preference,
        }
    }

    /// Names of the back-ends this device can run.
    pub fn available(&self) -> Vec<&'static str> {
        self.runtimes.iter().map(|r| r.name()).collect()
    }

    /// The back-ends and their versions: part of what a cached choice is keyed by.
    pub fn fingerprint(&self) -> String {
        self.runtimes
            .iter()
            .map(|r| r.version())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether `preference` makes [`Engine::load_artifact`] measure every back-end (and so is
    /// worth caching).
    pub fn measures(&self, preference: Option<RuntimePreference>) -> bool {
        preference.unwrap_or(self.default_preference) == RuntimePreference::Auto
            && self.runtimes.len() > 1
    }

    /// Loads on the named back-end without measuring: a choice made before, on this device.
    pub fn load_on(
        &self,
        runtime: &str,
        artifact: crate::Artifact<'_>,
        interface: &ModelInterface,
    ) -> Result<Loaded, Error> {
        let runtime = self
            .runtimes
            .iter()
            .find(|r| r.name() == runtime)
            .ok_or_else(|| Error::Load {
                runtime: "engine",
                detail: format!("runtime {runtime} is not available here"),
            })?;
        runtime.load_artifact(artifact, interface)
    }

    /// Loads `bytes` on the back-end the preference and the measurements pick.
    pub fn load(
        &self,
        bytes: &[u8],
        interface: &ModelInterface,
        spec: &HealthSpec,
        preference: Option<RuntimePreference>,
    ) -> Result<Selected, Error> {
        self.load_artifact(crate::Artifact::Bytes(bytes), interface, spec, preference)
    }

    /// [`Engine::load`] for any [`crate::Artifact`].
    pub fn load_artifact(
        &self,
        bytes: crate::Artifact<'_>,
        interface: &ModelInterface,
        spec: &HealthSpec,
        preference: Option<RuntimePreference>,
    ) -> Result<Selected, Error> {
        let wanted = match preference.unwrap_or(self.default_preference) {
            RuntimePreference::Auto => None,
            RuntimePreference::Tract => Some("tract"),
            RuntimePreference::Onnxruntime => Some("onnxruntime"),
        };
        if let Some(name) = wanted {
            let runtime = self
                .runtimes
                .iter()
                .find(|r| r.name() == name)
                .ok_or_else(|| {
                    let why = self
                        .unavailable
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or("not built into this agent".to_owned(), |(_, why)| {
                            why.clone()
                        });
                    Error::Load {
                        runtime: "engine",
                        detail: format!(
                            "the model asks for runtime {name}, unavailable here: {why}"
                        ),
                    }
                })?;
            // Pinned: the pipeline's own health check judges it; no trial run here.
            let loaded = runtime.load_artifact(bytes, interface)?;
            return Ok(Selected {
                trials: vec![Trial {
                    runtime: runtime.name().to_string(),
                    load_ms: Some(loaded.load_time.as_secs_f64() * 1e3),
                    outcome: TrialOutcome::Unmeasured,
                }],
                loaded,
            });
        }
        if let [only] = self.runtimes.as_slice() {
            let loaded = only.load_artifact(bytes, interface)?;
            return Ok(Selected {
                trials: vec![Trial {
                    runtime: only.name().to_string(),
                    load_ms: Some(loaded.load_time.as_secs_f64() * 1e3),
                    outcome: TrialOutcome::Unmeasured,
                }],
                loaded,
            });
        }
        let mut trials = Vec::new();
        let mut best: Option<(Loaded, HealthReport)> = None;
        for runtime in &self.runtimes {
            let loaded = match runtime.load_artifact(bytes, interface) {
                Ok(loaded) => loaded,
                Err(e) => {
                    trials.push(Trial {
                        runtime: runtime.name().to_string(),
                        load_ms: None,
                        outcome: TrialOutcome::Failed(e.to_string()),
                    });
                    continue;
                }
            };
            let load_ms = Some(loaded.load_time.as_secs_f64() * 1e3);
            match health::check(loaded.model.as_ref(), interface, spec) {
                Ok(report) => {
                    trials.push(Trial {
                        runtime: runtime.name().to_string(),
                        load_ms,
                        outcome: TrialOutcome::Passed {
                            p50_ms: report.p50_ms,
                            p99_ms: report.p99_ms,
                        },
                    });
                    if best.as_ref().is_none_or(|(_, b)| report.p50_ms < b.p50_ms) {
                        best = Some((loaded, report));
                    }
                }
                Err(failure) => trials.push(Trial {
                    runtime: runtime.name().to_string(),
                    load_ms,
                    outcome: TrialOutcome::Failed(failure.to_string()),
                }),
            }
        }
        match best {
            Some((loaded, _)) => Ok(Selected { loaded, trials }),
            None => Err(Error::NoRuntimePassed { trials }),
        }
    }
}

/// `tract: why; onnxruntime: why` for the trials that failed.
pub(crate) fn reasons(trials: &[Trial]) -> String {
    trials
        .iter()
        .filter_map(|t| match &t.outcome {
            TrialOutcome::Failed(why) => Some(format!("{}: {why}", t.runtime)),
            TrialOutcome::Passed { .. } | TrialOutcome::Unmeasured => None,
        })
        .collect::<Vec<_>>()
        .join("; ")
}
