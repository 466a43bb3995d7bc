//! Updates over the air: desired state in, the TUF-verified plan (`crate::reconcile`), downloads
//! and installs, and the refusals the server hears about.

use super::*;
use crate::reconcile::ShadowWork;

impl Fleet {
    /// Acts on the newest desired state; retries failed downloads with backoff and jitter.
    pub(super) async fn reconcile_loop(
        self: Arc<Self>,
        mut desired: watch::Receiver<Option<Desired>>,
    ) {
        let mut backoff = Duration::from_secs(1);
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut last_recheck: Option<tokio::time::Instant> = None;
        let mut recheck_at: Option<tokio::time::Instant> = None;
        loop {
            let sleep_until = retry_at.unwrap_or_else(|| tokio::time::Instant::now() + FAR);
            let recheck_until = recheck_at.unwrap_or_else(|| tokio::time::Instant::now() + FAR);
            tokio::select! {
                () = self.agent.shutdown.cancelled() => return,
                changed = desired.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(sleep_until), if retry_at.is_some() => {}
                () = self.recheck_unverified.notified() => {
                    // At most one refresh a minute on behalf of messages that did not verify, so
                    // a stream of forgeries costs the server nothing; one asked for sooner is
                    // put off, not dropped (a second key rotation within the minute).
                    match last_recheck {
                        Some(t) if t.elapsed() < RECHECK_EVERY => {
                            recheck_at = Some(t + RECHECK_EVERY);
                        }
                        _ => {
                            last_recheck = Some(tokio::time::Instant::now());
                            self.recheck_after_refresh().await;
                        }
                    }
                    continue;
                }
                () = tokio::time::sleep_until(recheck_until), if recheck_at.is_some() => {
                    recheck_at = None;
                    last_recheck = Some(tokio::time::Instant::now());
                    self.recheck_after_refresh().await;
                    continue;
                }
            }
            // After a retry timer, the newest desired state (the same one, or a newer one).
            let Some(wanted) = desired.borrow_and_update().clone() else {
                continue;
            };
            match self.reconcile(&wanted).await {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    retry_at = None;
                }
                Err(e) => {
                    let wait = backoff.mul_f64(0.5 + jitter());
                    warn!(error = %e, retry_in_s = wait.as_secs_f64(), "update not possible now; retrying");
                    retry_at = Some(tokio::time::Instant::now() + wait);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// Refreshes TUF (which follows root rotations) and verifies the kept unverified desired
    /// state again.
    pub(super) async fn recheck_after_refresh(&self) {
        let Some(bytes) = self.unverified.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        if let Err(e) = self.refresh_tuf().await {
            warn!(error = %e, "TUF refresh for an unverified desired state failed");
            return;
        }
        let verified = trusted_root(&self.agent.config).and_then(|root| {
            desired::verify(&bytes, &root, &self.link.device_id).map_err(|e| e.to_string())
        });
        match verified {
            Ok(d) => {
                info!(
                    revision = d.revision,
                    "desired state verified after learning rotated keys"
                );
                self.offer_desired(d);
            }
            Err(why) => warn!(why, "desired state still refused after a TUF refresh"),
        }
    }

    /// Brings the device to `wanted`. `Err` only for transient trouble worth a retry (network,
    /// server); a refused target is final for that revision and reported as an event.
    pub(super) async fn reconcile(&self, wanted: &Desired) -> Result<(), String> {
        let acted = self
            .outbox
            .counter(DESIRED_REVISION)
            .map_err(|e| e.to_string())?;
        let running = self.agent.reported_models().map_err(|e| e.to_string())?;
        let (todo, first_time, revision) = match reconcile::triage(wanted, acted, &running) {
            Triage::Stale { acted } => {
                warn!(
                    revision = wanted.revision,
                    acted,
                    "desired state older than one already acted on: ignored (replayed or reordered)"
                );
                return Ok(());
            }
            Triage::Settled { advance_to } => {
                self.remember_rollouts(wanted);
                if let Some(revision) = advance_to {
                    self.outbox
                        .set_counter(DESIRED_REVISION, revision)
                        .map_err(|e| e.to_string())?;
                }
                self.publish_reported();
                return Ok(());
            }
            Triage::Needs {
                todo,
                first_time,
                revision,
            } => (todo, first_time, revision),
        };
        self.remember_rollouts(wanted);
        let mut trusted = self.refresh_tuf().await?;
        // Models whose champion changes; the rest of `todo` only changes its shadow slot.
        let installs: Vec<_> = todo
            .iter()
            .filter(|m| !reconcile::serves(m, &running))
            .cloned()
            .collect();
        // Resolved before planning: a target of a delegated role loads that role's metadata.
        let mut resolved = std::collections::HashMap::new();
        for wanted in &installs {
            let target = trusted
                .model_target(&wanted.target)
                .await
                .map_err(|e| e.to_string());
            resolved.insert(wanted.target.clone(), target);
        }
        let steps = reconcile::plan(
            &installs,
            first_time,
            |name| {
                resolved
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| Err(name.to_string()))
            },
            self,
        );
        for step in steps {
            let (m, target) = match step {
                Step::Refuse { wanted, why } => {
                    self.refuse(&wanted, why).await;
                    continue;
                }
                Step::Install { wanted, target } => (wanted, target),
            };
            let mut target = target;
            let Some(source) = self.fetch_candidate(&m, &mut target, &mut trusted).await? else {
                continue;
            };
            match self.agent.install(&target, source).await {
                Ok(report) => info!(?report, "over-the-air install"),
                Err(InstallError::Rejected { .. }) => {
                    self.remember_failed(m.model.as_str(), &reconcile::candidate_key(&target));
                }
                Err(e @ (InstallError::Verify(_) | InstallError::TooLarge { .. })) => {
                    self.refuse(&m, e.to_string()).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        // Shadow slots last: a challenger goes in only beside the champion now serving.
        let running = self.agent.reported_models().map_err(|e| e.to_string())?;
        for m in &todo {
            match reconcile::shadow_work(m, &running) {
                ShadowWork::Nothing => {}
                ShadowWork::Drop => self
                    .agent
                    .drop_shadow(m.model.as_str())
                    .await
                    .map_err(|e| e.to_string())?,
                ShadowWork::Install(challenger) => {
                    let Some(plan) = m.shadow.clone() else {
                        continue;
                    };
                    self.install_challenger(&challenger, plan, first_time, &mut trusted)
                        .await?;
                }
            }
        }
        // The message is genuine (its signature verified): once every step ran, this revision
        // is acted on, refusals included (they were reported).
        if first_time {
            self.outbox
                .set_counter(DESIRED_REVISION, revision)
                .map_err(|e| e.to_string())?;
        }
        self.publish_reported();
        Ok(())
    }

    /// Fetches what a planned candidate still needs: its release files, then its model file
    /// unless the store has it. `None` when the candidate was refused (and reported).
    async fn fetch_candidate(
        &self,
        m: &edgefleet_protocol::message::DesiredModel,
        target: &mut client::ModelTarget,
        trusted: &mut client::TrustedRepo,
    ) -> Result<Option<ArtifactSource>, String> {
        let staging = self.agent.config.data_dir.join("store/staging");
        match trusted.fetch_release_files(target, &staging).await {
            Ok(()) => {}
            // Fetched and matching its signed hash, yet not valid for the release: the
            // operator signed a bad file, and no retry will mend it.
            Err(e @ edgefleet_tuf::Error::Target { .. }) => {
                self.refuse(m, e.to_string()).await;
                return Ok(None);
            }
            Err(e) => return Err(format!("release files of {}: {e}", target.name)),
        }
        if self.agent.has_artifact_of(target) {
            self.emit(Notice {
                model: m.model.to_string(),
                kind: EventKind::Verified,
                target: Some(target.name.clone()),
                detail: Some("the same model file is already stored: not downloaded again".into()),
                evidence: Vec::new(),
                refuse_again: None,
            })
            .await;
            return Ok(Some(ArtifactSource::Stored));
        }
        Ok(Some(ArtifactSource::Downloaded(
            self.download(m, target, trusted).await?,
        )))
    }

    /// Plans, fetches and installs a challenger into its model's shadow slot. A refusal is
    /// final for the revision, like a champion's.
    async fn install_challenger(
        &self,
        challenger: &edgefleet_protocol::message::DesiredModel,
        plan: edgefleet_protocol::shadow::DesiredShadow,
        first_time: bool,
        trusted: &mut client::TrustedRepo,
    ) -> Result<(), String> {
        let resolved = trusted
            .model_target(&challenger.target)
            .await
            .map_err(|e| e.to_string());
        let steps = reconcile::plan(
            std::slice::from_ref(challenger),
            first_time,
            |_| resolved.clone(),
            self,
        );
        for step in steps {
            let mut target = match step {
                Step::Refuse { wanted, why } => {
                    self.refuse(&wanted, format!("shadow: {why}")).await;
                    continue;
                }
                Step::Install { target, .. } => target,
            };
            let Some(source) = self
                .fetch_candidate(challenger, &mut target, trusted)
                .await?
            else {
                continue;
            };
            match self
                .agent
                .install_shadow(&target, source, plan.clone())
                .await
            {
                Ok(()) => {}
                Err(InstallError::Rejected { .. }) => self.remember_failed(
                    challenger.model.as_str(),
                    &reconcile::candidate_key(&target),
                ),
                Err(e @ (InstallError::Verify(_) | InstallError::TooLarge { .. })) => {
                    self.refuse(challenger, format!("shadow: {e}")).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    pub(super) fn remember_rollouts(&self, wanted: &Desired) {
        if let Ok(mut r) = self.rollouts.lock() {
            for m in &wanted.models {
                match &m.rollout {
                    Some(id) => r.insert(m.model.to_string(), id.clone()),
                    None => r.remove(m.model.as_str()),
                };
            }
        }
    }

    pub(super) fn remember_failed(&self, model: &str, version_key: &str) {
        let _ = self.outbox.bump(&format!("failed:{model}:{version_key}"));
    }

    pub(super) async fn refuse(&self, m: &edgefleet_protocol::message::DesiredModel, why: String) {
        warn!(model = %m.model, target = %m.target, why, "desired target refused");
        self.emit(Notice {
            model: m.model.to_string(),
            kind: EventKind::Rejected,
            target: Some(m.target.clone()),
            detail: Some(format!("refused: {why}")),
            evidence: Vec::new(),
            refuse_again: None,
        })
        .await;
    }

    /// Downloads `target` into the store's staging directory, verified against its signed
    /// length and sha256, and reports each step.
    pub(super) async fn download(
        &self,
        m: &edgefleet_protocol::message::DesiredModel,
        target: &client::ModelTarget,
        trusted: &client::TrustedRepo,
    ) -> Result<client::VerifiedArtifact, String> {
        self.emit(Notice {
            model: m.model.to_string(),
            kind: EventKind::Downloading,
            target: Some(target.name.clone()),
            detail: None,
            evidence: Vec::new(),
            refuse_again: None,
        })
        .await;
        let staging = self.agent.config.data_dir.join("store/staging");
        let artifact = trusted
            .fetch(target, &staging)
            .await
            .map_err(|e| format!("download of {}: {e}", target.name))?;
        self.emit(Notice {
            model: m.model.to_string(),
            kind: EventKind::Verified,
            target: Some(target.name.clone()),
            detail: Some(format!(
                "{} bytes, sha256 and length as signed",
                artifact.length()
            )),
            evidence: Vec::new(),
            refuse_again: None,
        })
        .await;
        Ok(artifact)
    }

    pub(super) async fn refresh_tuf(&self) -> Result<client::TrustedRepo, String> {
        let config = &self.agent.config;
        let tuf_dir = config.data_dir.join("tuf");
        if !tuf_dir.join("root.json").exists() {
            let root = std::fs::read(&config.trusted_root_path)
                .map_err(|e| format!("{}: {e}", config.trusted_root_path.display()))?;
            client::init(&tuf_dir, &root).map_err(|e| e.to_string())?;
        }
        let base = self.link.server_url.trim_end_matches('/');
        let url = |sub: &str| {
            url::Url::parse(&format!("{base}/tuf/{sub}/")).map_err(|e| format!("{base}: {e}"))
        };
        let client_config = ClientConfig {
            metadata_dir: tuf_dir,
            metadata_url: url("metadata")?,
            targets_url: url("targets")?,
            limits: ClientLimits {
                max_artifact_bytes: config.limits.max_artifact_bytes,
                max_release_file_bytes: config.limits.max_release_file_bytes,
                min_bytes_per_second: config.fleet.min_download_bytes_per_second,
                ..ClientLimits::default()
            },
        };
        let transport =
            FleetTransport::new(self.link.credential.clone()).map_err(|e| e.to_string())?;
        client::refresh(&client_config, transport.clone())
            .await
            .map(|trusted| trusted.with_resume(Arc::new(transport)))
            .map_err(|e| format!("TUF refresh from {base}: {e}"))
    }
}

impl reconcile::Local for Fleet {
    fn floor(&self, model: &ModelName) -> u64 {
        // An unreadable store counts as the highest floor: refuse rather than risk a rollback.
        match self.agent.store.record(model.as_str()) {
            Ok(record) => record.map_or(0, |r| r.floor),
            Err(e) => {
                warn!(error = %e, %model, "cannot read the model's floor; refusing updates to it");
                u64::MAX
            }
        }
    }

    fn already_failed(&self, model: &ModelName, version_key: &str) -> bool {
        self.outbox
            .counter(&format!("failed:{model}:{version_key}"))
            .is_ok_and(|n| n > 0)
    }

    fn max_artifact_bytes(&self) -> u64 {
        self.agent.config.limits.max_artifact_bytes
    }

    fn max_release_file_bytes(&self) -> u64 {
        self.agent.config.limits.max_release_file_bytes
    }
}

/// The root this device trusts now: the newest one TUF verified (`<data_dir>/tuf/root.json`), or
/// the one it shipped with before its first refresh.
pub(super) fn trusted_root(config: &crate::config::Config) -> Result<tough::schema::Root, String> {
    let refreshed = config.data_dir.join("tuf/root.json");
    let path = if refreshed.exists() {
        refreshed
    } else {
        config.trusted_root_path.clone()
    };
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let root: tough::schema::Signed<tough::schema::Root> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a TUF root: {e}", path.display()))?;
    Ok(root.signed)
}

/// How often a desired state that did not verify may trigger a TUF refresh.
const RECHECK_EVERY: Duration = Duration::from_secs(60);
