//! The agent's core: the install pipeline (stage → load → health check → activate → probation →
//! commit, or reject / roll back), start-up recovery, and the models it serves.

use std::sync::Arc;
use std::time::Duration;

use edgefleet_inference::health::{self, HealthReport};
use edgefleet_inference::select::Engine;
use edgefleet_tuf::client::{self, ModelTarget, VerifiedArtifact};
use tracing::{info, warn};

use crate::config::Config;
use crate::lifecycle::{Event, Next, Outcome};
use crate::metrics::{ActiveLabels, Metrics, OutcomeLabels};
use crate::serving::{Serving, Slot};
use crate::store::{Refused, Resumed, Store, StoreError, StoredVersion};
use edgefleet_protocol::ModelName;
use edgefleet_protocol::message::{EventKind, InstalledVersion, ReportedModel};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Verify(#[from] edgefleet_tuf::Error),
    #[error("{target}: rejected: {reason}")]
    Rejected { target: String, reason: String },
    #[error("artifact of {target} is {size} bytes, over limits.max_artifact_bytes ({limit})")]
    TooLarge {
        target: String,
        size: u64,
        limit: u64,
    },
    #[error("{repository}: {detail}")]
    Repository { repository: String, detail: String },
    #[error("{model} has no previous version on this device to roll back to")]
    NoPrevious { model: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum InstallReport {
    /// Serving now; probation runs in the background.
    Activated {
        target: String,
        load_ms: f64,
        health_p50_ms: f64,
        health_p99_ms: f64,
    },
    /// Already the active version (the same signed target and metadata): nothing to do.
    AlreadyActive { target: String },
}

/// Where a candidate's model file comes from.
#[derive(Debug)]
pub enum ArtifactSource {
    /// Downloaded by the TUF client and verified against the target.
    Downloaded(VerifiedArtifact),
    /// Already in the store: another version ships the same file. It is hashed again against
    /// the signed sha256 as it loads, like every stored file.
    Stored,
}

impl Agent {
    /// Unix seconds, from the agent's clock.
    pub fn now_unix(&self) -> u64 {
        u64::try_from(self.clock.unix()).unwrap_or(0)
    }
}

/// Test hook for the crash-safety tests: `EDGE_AGENT_CRASH_AT=<state>` makes the process SIGKILL
/// itself right after that state is journaled — no destructors, no flushing, as `kill -9` or a
/// power cut would.
fn crash_point(state: &str) {
    if std::env::var("EDGE_AGENT_CRASH_AT").is_ok_and(|s| s == state) {
        warn!(state, "EDGE_AGENT_CRASH_AT reached: killing this process");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        std::process::abort();
    }
    // For measurements: the process stops itself here (SIGSTOP) with its memory as the step
    // left it, for a test to read /proc and send SIGCONT.
    if std::env::var("EDGE_AGENT_STOP_AT").is_ok_and(|s| s == state) {
        warn!(state, "EDGE_AGENT_STOP_AT reached: stopping until SIGCONT");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
    }
}

/// A step of an install, for the fleet link to report upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub model: String,
    pub kind: EventKind,
    pub target: Option<String>,
    pub detail: Option<String>,
    /// For a guard breach: the rules broken, with their figures.
    pub evidence: Vec<edgefleet_protocol::guard::Breach>,
    /// The version key ([`crate::store::StoredVersion::key`]) of a version this device put out
    /// of service and must not install again for the same desired revision.
    pub refuse_again: Option<String>,
}

#[derive(Debug)]
pub struct Agent {
    pub config: Config,
    /// Install steps as they happen; the fleet link turns them into events.
    pub notices: tokio::sync::broadcast::Sender<Notice>,
    pub store: Arc<Store>,
    pub serving: Arc<Serving>,
    pub metrics: Arc<Metrics>,
    /// This telemetry window's figures per model version, for the fleet server.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    pub engine: Arc<Engine>,
    /// One install at a time: installs are rare and each one holds the CPU for its health check.
    install_lock: tokio::sync::Mutex<()>,
    /// Probations running, by model: how long each has served (see `probation_watch`).
    probations: std::sync::Mutex<std::collections::HashMap<String, probation_watch::Clock>>,
    /// Models not yet loaded since start: the API answers at once and says which these are.
    loading: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Probations the journal says to resume, until their watch runs again (a stop before then
    /// must still be recorded as a stop).
    awaiting_resume: std::sync::Mutex<Vec<Resumed>>,
    /// True once [`Agent::load_models`] is done; installs wait for it.
    loaded: tokio::sync::watch::Sender<bool>,
    /// One per inference allowed to run at once (`inference.max_parallel`).
    pub inference_permits: tokio::sync::Semaphore,
    /// Request bodies in memory at once (`api.max_inflight_body_bytes`).
    pub body_budget: crate::body_budget::BodyBudget,
    /// Where "now" comes from (the system's; tests pass one they move).
    pub clock: Arc<dyn edgefleet_clock::Clock>,
    /// Cancelled by [`Agent::stop`]: every background task watches it.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The background tasks (fleet link, probations), joined by [`Agent::stop`].
    tasks: std::sync::Mutex<tokio::task::JoinSet<()>>,
    /// The guard watch per model: starting one makes the earlier watch stop.
    guards: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Answers kept for labels to join ([`crate::predictions`]).
    pub predictions: Arc<crate::predictions::PredictionLog>,
    /// Answers the signed sampling policy lets leave, until the next window takes them.
    pub samples: crate::sampling::Sampler,
    /// Challengers run beside the serving versions on copies of requests ([`crate::shadow`]).
    pub shadows: crate::shadow::Shadows,
}

mod guard_watch;
mod offline;
mod probation_watch;
mod roll_back;
mod shadow_install;
mod startup;
mod trial_cache;

impl Agent {
    /// The health check of a loaded candidate on this device's budget: the one choosing its
    /// back-end just ran, or a run now.
    async fn health_check(
        &self,
        slot: &Arc<Slot>,
    ) -> Result<Result<HealthReport, health::HealthFailure>, InstallError> {
        if let Some(report) = checked_in_trial(slot) {
            return Ok(Ok(report));
        }
        let slot = slot.clone();
        let mut spec = slot.meta.health.clone();
        spec.p99_budget_ms *= self.config.limits.latency_budget_factor;
        blocking(move || health::check(slot.model.as_ref(), &slot.meta.interface, &spec)).await
    }
}

/// The health check that choosing the back-end just ran on the serving one (`auto`, measured
/// now rather than read from the cache), so the install need not run it a second time.
fn checked_in_trial(slot: &Slot) -> Option<HealthReport> {
    if slot.trials_cached {
        return None;
    }
    let trial = slot
        .trials
        .iter()
        .find(|t| t.runtime == slot.model.runtime())?;
    match trial.outcome {
        edgefleet_inference::select::TrialOutcome::Passed { p50_ms, p99_ms } => {
            Some(HealthReport {
                p50_ms,
                p99_ms,
                timed_runs: slot.meta.health.latency_runs as usize,
            })
        }
        _ => None,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, InstallError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| InstallError::Internal(e.to_string()))
}

impl Agent {
    /// Runs `task` in the background until the agent stops; [`Agent::stop`] joins it.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Ok(mut tasks) = self.tasks.lock() {
            // Tasks that ended leave the set, so it holds only those running.
            while tasks.try_join_next().is_some() {}
            tasks.spawn(task);
        }
    }

    /// Stops the background tasks: each sees [`Agent::shutdown`] and ends (the fleet link sends
    /// what it can and disconnects, probations record how long they served), and is joined;
    /// those still running after `grace` are aborted. Returns how many had to be.
    pub async fn stop(&self, grace: Duration) -> usize {
        self.shutdown.cancel();
        self.pause_probations().await;
        let workers = self.shadows.stop_all();
        let _ =
            tokio::task::spawn_blocking(move || workers.into_iter().for_each(|w| drop(w.join())))
                .await;
        let mut tasks = match self.tasks.lock() {
            Ok(mut tasks) => std::mem::take(&mut *tasks),
            Err(_) => return 0,
        };
        let joined = tokio::time::timeout(grace, async {
            while let Some(done) = tasks.join_next().await {
                if let Err(e) = done
                    && e.is_panic()
                {
                    warn!(error = %e, "a background task had panicked");
                }
            }
        })
        .await;
        let aborted = tasks.len();
        if joined.is_err() {
            warn!(
                left = aborted,
                "background tasks still running after the grace period; aborted"
            );
            tasks.shutdown().await;
        }
        aborted
    }

    fn put_in_service(&self, model: &str, slot: Arc<Slot>) -> Option<Arc<Slot>> {
        let labels = ActiveLabels {
            model: model.to_string(),
            version: slot.meta.version.to_string(),
            runtime: slot.model.runtime().to_string(),
        };
        self.telemetry
            .register(&slot.meta.model, &slot.meta.version, &slot.stats);
        let old = self.serving.swap(model, Some(slot));
        if let Some(old) = &old {
            self.metrics
                .active
                .get_or_create(&ActiveLabels {
                    model: model.to_string(),
                    version: old.meta.version.to_string(),
                    runtime: old.model.runtime().to_string(),
                })
                .set(0);
        }
        self.metrics.active.get_or_create(&labels).set(1);
        old
    }

    async fn transition(
        &self,
        model: &str,
        event: Event,
        detail: Option<String>,
    ) -> Result<Next, InstallError> {
        let store = self.store.clone();
        let model = model.to_string();
        let now = self.now_unix();
        let next =
            blocking(move || store.transition(&model, event, detail.as_deref(), now)).await??;
        Ok(next)
    }

    fn notify(&self, model: &str, kind: EventKind, target: &str, detail: Option<String>) {
        // No receiver (no fleet link) is fine: the journal is the record on the device.
        let _ = self.notices.send(Notice {
            model: model.to_owned(),
            kind,
            target: Some(target.to_owned()),
            detail,
            evidence: Vec::new(),
            refuse_again: None,
        });
    }

    /// What every model runs and how its last update went, as the reported state says it.
    pub fn reported_models(&self) -> Result<Vec<ReportedModel>, StoreError> {
        let mut out = Vec::new();
        for name in self.store.model_names()? {
            let Some(r) = self.store.record(&name)? else {
                continue;
            };
            let installed = |v: &Option<StoredVersion>| {
                v.as_ref().map(|v| InstalledVersion {
                    version: v.meta.version.clone(),
                    sequence: v.meta.sequence,
                    target: v.target.clone(),
                    sha256: v.sha256.clone(),
                    runtime: self
                        .serving
                        .get(&name)
                        .map(|s| s.model.runtime().to_owned()),
                })
            };
            let state = crate::lifecycle::reported_state(
                r.install.as_ref().map(|(_, state)| *state),
                r.last_outcome,
            );
            out.push(ReportedModel {
                shadow_refused: self.shadows.refusal(&name),
                model: ModelName::new(name.clone()).map_err(|e| StoreError::Corrupt {
                    what: format!("model name {name:?}"),
                    detail: e.to_string(),
                })?,
                active: installed(&r.active),
                previous: installed(&r.previous),
                state,
                last_error: r.last_error.clone(),
                shadow: self.shadows.get(&name).map(|s| InstalledVersion {
                    version: s.slot.meta.version.clone(),
                    sequence: s.slot.meta.sequence,
                    target: s.slot.target.clone(),
                    sha256: s.sha256.clone(),
                    runtime: Some(s.slot.model.runtime().to_owned()),
                }),
            });
        }
        Ok(out)
    }

    fn count(&self, model: &str, outcome: Outcome) {
        self.metrics
            .updates
            .get_or_create(&OutcomeLabels {
                model: model.to_string(),
                outcome: outcome.as_str().into(),
            })
            .inc();
    }

    /// Installs a verified candidate. A downloaded artifact must be the file the TUF client
    /// verified against `target`; it is moved into the store and loaded from there. Returns once
    /// the candidate serves (probation continues in the background) or was rejected.
    pub async fn install(
        self: &Arc<Self>,
        target: &ModelTarget,
        source: ArtifactSource,
    ) -> Result<InstallReport, InstallError> {
        // What start-up loads must be in service before anything replaces it.
        let _ = self.loaded.subscribe().wait_for(|loaded| *loaded).await;
        let _guard = self.install_lock.lock().await;
        let model = target.meta.model.to_string();
        let version = StoredVersion::of(target);
        let record = {
            let store = self.store.clone();
            let m = model.clone();
            blocking(move || store.record(&m)).await??
        };
        let floor = record.as_ref().map_or(0, |r| r.floor);
        client::admit(target, floor)?;
        if record
            .as_ref()
            .and_then(|r| r.active.as_ref())
            .is_some_and(|a| a.key() == version.key())
        {
            return Ok(InstallReport::AlreadyActive {
                target: target.name.clone(),
            });
        }
        if let Some(kind) = target.meta.pending().first() {
            return Err(InstallError::Internal(format!(
                "{}: its {kind} must be fetched before the install (TrustedRepo::fetch_release_files)",
                target.name
            )));
        }
        match source {
            ArtifactSource::Downloaded(artifact) => {
                self.stage_download(&model, &version, artifact).await?
            }
            ArtifactSource::Stored => {
                if !self.store.has_artifact(&model, &version.sha256) {
                    return Err(InstallError::Internal(format!(
                        "{}: its model file is not in the store; download it",
                        target.name
                    )));
                }
                let store = self.store.clone();
                let v = version.clone();
                let now = self.now_unix();
                blocking(move || store.begin(&v, now)).await??;
                crash_point("staging");
            }
        }
        self.transition(&model, Event::FilesWritten, None).await?;
        self.notify(&model, EventKind::Staged, &version.target, None);
        crash_point("staged");
        self.transition(&model, Event::CheckStarted, None).await?;
        self.notify(&model, EventKind::HealthChecking, &version.target, None);
        crash_point("checking");

        let (slot, load_ms) = match self.load_slot(&version).await {
            Ok(s) => s,
            Err(InstallError::Rejected { reason, .. }) => {
                return Err(self
                    .reject(&model, &version.target, format!("load failed: {reason}"))
                    .await);
            }
            Err(e) => return Err(self.reject(&model, &version.target, e.to_string()).await),
        };
        let slot = Arc::new(slot);
        let report: HealthReport = match self.health_check(&slot).await? {
            Ok(r) => r,
            Err(e) => {
                // The one back-end that loaded it failed the check: that is its trial's outcome.
                let trials = slot
                    .trials
                    .iter()
                    .map(|t| edgefleet_inference::select::Trial {
                        outcome: edgefleet_inference::select::TrialOutcome::Failed(e.to_string()),
                        ..t.clone()
                    })
                    .collect();
                self.remember_refused(&model, &version.target, e.to_string(), trials);
                return Err(self
                    .reject(&model, &version.target, format!("health check failed: {e}"))
                    .await);
            }
        };

        self.transition(&model, Event::Activated, None).await?;
        if let Err(e) = self.store.forget_refused(&model) {
            warn!(model, error = %e, "cannot clear the refused candidate");
        }
        let previous = self.put_in_service(&model, slot.clone());
        // A promoted challenger answers now: its shadow slot has done its work.
        if self
            .shadows
            .get(&model)
            .is_some_and(|s| s.slot.target == version.target)
            && let Err(e) = self.drop_shadow(&model).await
        {
            warn!(model, error = %e, "cannot empty the shadow slot of the promoted challenger");
        }
        self.notify(
            &model,
            EventKind::Installed,
            &version.target,
            Some(format!(
                "health check p99 {:.3} ms; probation begins",
                report.p99_ms
            )),
        );
        info!(model, target = %version.target, p99_ms = report.p99_ms, "activated; probation begins");
        crash_point("probation");
        let agent = self.clone();
        self.spawn(async move { agent.probation(model, slot, previous, Duration::ZERO).await });
        Ok(InstallReport::Activated {
            target: version.target,
            load_ms,
            health_p50_ms: report.p50_ms,
            health_p99_ms: report.p99_ms,
        })
    }

    /// Checks a downloaded candidate's file, journals the install and moves the file into the
    /// store.
    async fn stage_download(
        &self,
        model: &str,
        version: &StoredVersion,
        artifact: VerifiedArtifact,
    ) -> Result<(), InstallError> {
        if artifact.sha256_hex() != version.sha256 {
            return Err(InstallError::Rejected {
                target: version.target.clone(),
                reason: format!(
                    "the downloaded file is sha256 {}, not the target's",
                    artifact.sha256_hex()
                ),
            });
        }
        let size = artifact.length();
        if size > self.config.limits.max_artifact_bytes {
            return Err(InstallError::TooLarge {
                target: version.target.clone(),
                size,
                limit: self.config.limits.max_artifact_bytes,
            });
        }
        // Free space first, so a full disk never even starts an install.
        {
            let store = self.store.clone();
            let margin = self.config.limits.min_free_disk_bytes;
            blocking(move || store.check_free_space(size, margin)).await??;
        }
        {
            let store = self.store.clone();
            let v = version.clone();
            let now = self.now_unix();
            blocking(move || store.begin(&v, now)).await??;
        }
        crash_point("staging");
        let written = {
            let store = self.store.clone();
            let v = version.clone();
            blocking(move || store.write_files(&v, artifact)).await?
        };
        if let Err(e) = written {
            return Err(self.reject(model, &version.target, e.to_string()).await);
        }
        Ok(())
    }

    /// Whether `target`'s model file is already stored, so its install needs no download.
    pub fn has_artifact_of(&self, target: &ModelTarget) -> bool {
        self.store
            .has_artifact(target.meta.model.as_str(), &target.sha256_hex)
    }

    /// Records a refused candidate's trials (the reason is completed by [`Agent::reject`]).
    fn remember_refused(
        &self,
        model: &str,
        target: &str,
        reason: String,
        trials: Vec<edgefleet_inference::select::Trial>,
    ) {
        let refused = Refused {
            target: target.to_string(),
            reason,
            trials,
        };
        if let Err(e) = self.store.remember_refused(model, &refused) {
            warn!(model, error = %e, "cannot record the refused candidate");
        }
    }

    /// The last candidate of `model` refused, if no install succeeded after it.
    pub fn refused(&self, model: &str) -> Option<Refused> {
        self.store.refused(model).ok().flatten()
    }

    async fn reject(&self, model: &str, target: &str, reason: String) -> InstallError {
        warn!(model, target, reason, "candidate rejected");
        // Trials recorded for this candidate a moment ago (at load or health check) stay.
        let trials = self
            .refused(model)
            .filter(|r| r.target == target)
            .map(|r| r.trials)
            .unwrap_or_default();
        self.remember_refused(model, target, reason.clone(), trials);
        if let Err(e) = self
            .transition(model, Event::Failed, Some(reason.clone()))
            .await
        {
            return e;
        }
        self.count(model, Outcome::Rejected);
        self.notify(model, EventKind::Rejected, target, Some(reason.clone()));
        InstallError::Rejected {
            target: target.to_string(),
            reason,
        }
    }
}
