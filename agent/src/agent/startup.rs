//! Start-up: the store opened and the journal settled, then every stored model loaded from its
//! file (hashed again first) while the API already answers.

use std::sync::Arc;

use edgefleet_inference::select::Engine;
use tracing::{info, warn};

use super::{Agent, InstallError, blocking, trial_cache};
use crate::config::Config;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::serving::{Serving, Slot};
use crate::store::{Store, StoreError, StoredVersion};

impl Agent {
    /// Opens the store and finishes whatever a stop or a crash left in flight; loads nothing
    /// yet, so the API can answer at once. [`Agent::load_models`] then puts the models in
    /// service.
    pub async fn open(config: Config, engine: Arc<Engine>) -> Result<Arc<Self>, InstallError> {
        Self::open_with_clock(config, engine, Arc::new(edgefleet_clock::SystemClock)).await
    }

    /// [`Agent::open`] with the time taken from `clock`.
    pub async fn open_with_clock(
        config: Config,
        engine: Arc<Engine>,
        clock: Arc<dyn edgefleet_clock::Clock>,
    ) -> Result<Arc<Self>, InstallError> {
        let data_dir = config.data_dir.clone();
        let store = Arc::new(blocking(move || Store::open(&data_dir)).await??);
        let recovered = {
            let store = store.clone();
            let now = u64::try_from(clock.unix()).unwrap_or(0);
            blocking(move || store.recover(now)).await??
        };
        let predictions = {
            let path = config.data_dir.join("predictions.db");
            let settings = config.quality.clone();
            Arc::new(
                blocking(move || crate::predictions::PredictionLog::open(&path, settings))
                    .await?
                    .map_err(|e| InstallError::Internal(e.to_string()))?,
            )
        };
        let telemetry = Arc::new(crate::telemetry::Telemetry::default());
        let metrics = Arc::new(Metrics::new(telemetry.clone()));
        for (model, outcome) in &recovered.finished {
            warn!(
                model,
                outcome = outcome.as_str(),
                "finished an install interrupted by a restart"
            );
            metrics
                .updates
                .get_or_create(&OutcomeLabels {
                    model: model.clone(),
                    outcome: outcome.as_str().into(),
                })
                .inc();
        }
        let loading = store.model_names()?.into_iter().collect();
        let permits = config.inference.parallel_inferences();
        let body_budget = crate::body_budget::BodyBudget::new(&config.api);
        let agent = Arc::new(Self {
            config,
            notices: tokio::sync::broadcast::channel(256).0,
            store,
            serving: Arc::new(Serving::default()),
            metrics,
            telemetry,
            engine,
            install_lock: tokio::sync::Mutex::new(()),
            probations: std::sync::Mutex::default(),
            loading: std::sync::Mutex::new(loading),
            awaiting_resume: std::sync::Mutex::new(recovered.resumed),
            loaded: tokio::sync::watch::channel(false).0,
            inference_permits: tokio::sync::Semaphore::new(permits),
            body_budget,
            clock,
            shutdown: tokio_util::sync::CancellationToken::new(),
            tasks: std::sync::Mutex::new(tokio::task::JoinSet::new()),
            predictions,
            guards: std::sync::Mutex::default(),
            samples: crate::sampling::Sampler::default(),
            shadows: crate::shadow::Shadows::default(),
        });
        agent.spawn(crate::predictions::run(
            agent.predictions.clone(),
            agent.clock.clone(),
            agent.shutdown.clone(),
        ));
        Ok(agent)
    }

    /// Loads every stored model, one at a time (each is in service as soon as it loads), then
    /// resumes the probations a restart interrupted. Installs wait until this is done.
    pub async fn load_models(self: &Arc<Self>) {
        let pending: Vec<String> = self
            .loading
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        for model in pending {
            // One model that does not load must not keep the others from serving.
            if let Err(e) = self.load_active(&model).await {
                warn!(model, error = %e, "model not served: neither its active nor its previous version loads");
            }
            if let Ok(mut loading) = self.loading.lock() {
                loading.remove(&model);
            }
        }
        let resumed = self
            .awaiting_resume
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        let in_probation: Vec<String> = resumed.iter().map(|r| r.model.clone()).collect();
        self.resume_probations(resumed).await;
        for model in self.serving.names() {
            if !in_probation.contains(&model)
                && let Some(slot) = self.serving.get(&model)
            {
                self.start_guard(&model, &slot);
            }
        }
        self.loaded.send_replace(true);
    }

    /// Models not loaded yet since start.
    pub fn loading(&self) -> Vec<String> {
        self.loading
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn is_loading(&self, model: &str) -> bool {
        self.loading.lock().is_ok_and(|l| l.contains(model))
    }

    /// Puts the stored active version of `model` in service (start-up, rollback).
    pub(super) async fn load_active(&self, model: &str) -> Result<(), InstallError> {
        let store = self.store.clone();
        let name = model.to_string();
        let Some(record) = blocking(move || store.record(&name)).await?? else {
            return Ok(());
        };
        let Some(active) = record.active else {
            self.serving.swap(model, None);
            return Ok(());
        };
        let error = match self.load_slot(&active).await {
            Ok((slot, _)) => {
                self.put_in_service(model, Arc::new(slot));
                return Ok(());
            }
            Err(e) => e,
        };
        warn!(model, target = %active.target, error = %error, "active version does not load; serving the previous one");
        let Some(previous) = record.previous else {
            return Err(error);
        };
        let (slot, _) = self.load_slot(&previous).await?;
        self.put_in_service(model, Arc::new(slot));
        Ok(())
    }

    /// Loads a stored version from its file. What is loaded is what was verified: the file is
    /// hashed again (a chunk at a time) just before, so a copy changed on disk since (bit rot,
    /// tampering) is refused, never served; then the runtime maps it rather than reading it, so
    /// the model is never in memory twice while it loads.
    pub(super) async fn load_slot(
        &self,
        version: &StoredVersion,
    ) -> Result<(Slot, f64), InstallError> {
        let path = self
            .store
            .version_dir(version.meta.model.as_str(), &version.sha256)
            .join("model.onnx");
        let found = {
            let path = path.clone();
            blocking(move || {
                edgefleet_tuf::artifact::file_sha256_hex(&path)
                    .map_err(|source| StoreError::Io { path, source })
            })
            .await??
        };
        if found != version.sha256 {
            return Err(InstallError::Rejected {
                target: version.target.clone(),
                reason: format!(
                    "the stored copy's sha256 is {found}, not the signed {}",
                    version.sha256
                ),
            });
        }
        let engine = self.engine.clone();
        let meta = Arc::new(version.meta.clone());
        let chooser = meta.clone();
        let mut spec = meta.health.clone();
        spec.p99_budget_ms *= self.config.limits.latency_budget_factor;
        let sha = version.sha256.clone();
        let store = self.store.clone();
        let now = i64::try_from(self.now_unix()).unwrap_or(i64::MAX);
        let (selected, trials_cached) = blocking(move || {
            let artifact = edgefleet_inference::Artifact::File {
                path: &path,
                sha256_hex: &sha,
            };
            trial_cache::load(&engine, &store, artifact, &chooser, &spec, now)
        })
        .await?
        .map_err(|e| {
            if let edgefleet_inference::Error::NoRuntimePassed { trials } = &e {
                self.remember_refused(
                    version.meta.model.as_str(),
                    &version.target,
                    e.to_string(),
                    trials.clone(),
                );
            }
            InstallError::Rejected {
                target: version.target.clone(),
                reason: e.to_string(),
            }
        })?;
        let load_ms = selected.loaded.load_time.as_secs_f64() * 1e3;
        info!(
            model = %meta.model,
            version = %meta.version,
            runtime = selected.loaded.model.runtime(),
            trials = ?selected.trials,
            "model loaded"
        );
        let stats = Arc::new(crate::live::LiveStats::new(meta.baseline.as_ref()));
        Ok((
            Slot {
                key: version.key(),
                target: version.target.clone(),
                meta,
                model: selected.loaded.model,
                trials: selected.trials,
                trials_cached,
                stats,
            },
            load_ms,
        ))
    }
}
