//! Probation over time: the watch on a candidate's live traffic, the clock of how long it has
//! served (recorded in the journal, so a stop resumes probation instead of failing it and a crash
//! loses at most a few seconds of it), and the resumption at start-up.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Agent, InstallError, blocking};
use crate::lifecycle::{Event, Outcome};
use crate::probation::{self, Policy, Verdict};
use crate::serving::Slot;
use crate::store::Resumed;
use edgefleet_protocol::message::EventKind;

/// How often a running probation records the time it has served.
const RECORD_EVERY: Duration = Duration::from_secs(2);

/// How long a probation has served: before this process, and since it (re)started here.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    since: tokio::time::Instant,
    served_before: Duration,
}

impl Clock {
    fn served(&self) -> Duration {
        self.served_before + self.since.elapsed()
    }
}

impl Agent {
    /// Watches live traffic on the new slot for what is left of the probation window (the
    /// candidate already `served` some of it before a restart); rolls back on a breach.
    pub(super) async fn probation(
        self: Arc<Self>,
        model: String,
        slot: Arc<Slot>,
        previous: Option<Arc<Slot>>,
        served: Duration,
    ) {
        let p = &self.config.probation;
        let policy = Policy {
            min_requests: p.min_requests,
            max_error_ratio: p.max_error_ratio,
            max_p99_ms: slot.meta.health.p99_budget_ms
                * self.config.limits.latency_budget_factor
                * p.latency_factor,
        };
        let window = Duration::from_secs(p.window_seconds);
        let clock = Clock {
            since: tokio::time::Instant::now(),
            served_before: served,
        };
        if let Ok(mut running) = self.probations.lock() {
            running.insert(model.clone(), clock);
        }
        self.resumed(&model);
        let mut recorded = tokio::time::Instant::now();
        let verdict = loop {
            let (requests, errors, p99) = slot.stats.snapshot();
            let verdict = probation::judge(requests, errors, p99, policy);
            if matches!(verdict, Verdict::Breach(_)) || clock.served() >= window {
                break verdict;
            }
            if recorded.elapsed() >= RECORD_EVERY {
                recorded = tokio::time::Instant::now();
                self.record_served(&model, clock.served(), false).await;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                // Undecided: `pause_probations` records how long it served, and it resumes at
                // the next start.
                () = self.shutdown.cancelled() => return,
            }
        };
        let _guard = self.install_lock.lock().await;
        if let Ok(mut running) = self.probations.lock() {
            running.remove(&model);
        }
        match verdict {
            Verdict::Healthy => match self.transition(&model, Event::ProbationPassed, None).await {
                Ok(_) => {
                    info!(model, target = %slot.target, "probation passed; committed");
                    self.start_guard(&model, &slot);
                    self.count(&model, Outcome::Committed);
                    self.notify(&model, EventKind::Committed, &slot.target, None);
                }
                Err(e) => warn!(model, error = %e, "could not commit"),
            },
            Verdict::Breach(reason) => {
                warn!(model, target = %slot.target, reason, "probation failed; rolling back");
                // Back in service first: clients stop hitting the failing version at once.
                let previous_target = previous.as_ref().map(|p| p.target.clone());
                match previous {
                    Some(prev) => {
                        self.put_in_service(&model, prev.clone());
                        self.start_guard(&model, &prev);
                    }
                    None => {
                        self.serving.swap(&model, None);
                    }
                }
                self.journal_rollback(&model, &slot.target, format!("probation failed: {reason}"))
                    .await;
                info!(model, to = ?previous_target, "rolled back");
            }
        }
    }

    /// Ends a failed probation in the journal (the pointers go back), counts it and says so
    /// upstream; the caller has already put what should serve in service.
    async fn journal_rollback(&self, model: &str, target: &str, detail: String) {
        if let Err(e) = self
            .transition(model, Event::Failed, Some(detail.clone()))
            .await
        {
            warn!(model, error = %e, "could not journal the rollback");
        }
        self.count(model, Outcome::RolledBack);
        self.notify(model, EventKind::RolledBack, target, Some(detail));
    }

    async fn record_served(&self, model: &str, served: Duration, stopped: bool) {
        let store = self.store.clone();
        let name = model.to_string();
        let recorded = blocking(move || store.record_probation(&name, served, stopped)).await;
        if let Err(e) = recorded.and_then(|r| r.map_err(InstallError::from)) {
            warn!(model, error = %e, "cannot record the probation's time");
        }
    }

    /// A probation to resume is running again, or was ended.
    fn resumed(&self, model: &str) {
        if let Ok(mut awaiting) = self.awaiting_resume.lock() {
            awaiting.retain(|r| r.model != model);
        }
    }

    /// At a clean stop: records how long each running probation has served, and that the
    /// agent stopped on purpose, so the next start resumes them. Probations still waiting to
    /// resume (a stop while models load) are recorded as they were.
    pub async fn pause_probations(&self) {
        let mut running: Vec<(String, Duration)> = self
            .probations
            .lock()
            .map(|r| r.iter().map(|(m, c)| (m.clone(), c.served())).collect())
            .unwrap_or_default();
        if let Ok(awaiting) = self.awaiting_resume.lock() {
            running.extend(awaiting.iter().map(|r| (r.model.clone(), r.served)));
        }
        for (model, served) in running {
            info!(
                model,
                served_s = served.as_secs_f64(),
                "stopping during probation: it resumes at the next start"
            );
            self.record_served(&model, served, true).await;
        }
    }

    /// Goes on with the probations a stop (or a crash of a first version) interrupted: the
    /// candidate was put back in service as the active version; its previous version is loaded
    /// to roll back to. A candidate that no longer loads fails its probation at once.
    pub(super) async fn resume_probations(self: &Arc<Self>, resumed: Vec<Resumed>) {
        for Resumed {
            model,
            served,
            after_crash,
        } in resumed
        {
            let store = self.store.clone();
            let name = model.clone();
            let record = match blocking(move || store.record(&name)).await {
                Ok(Ok(Some(record))) => record,
                _ => continue,
            };
            let candidate = record.install.as_ref().map(|(v, _)| v);
            let serving = self.serving.get(&model);
            let Some(slot) = serving.filter(|s| candidate.is_some_and(|c| c.key() == s.key)) else {
                warn!(
                    model,
                    "the candidate in probation does not load after the restart"
                );
                let _guard = self.install_lock.lock().await;
                let target = candidate.map(|c| c.target.clone()).unwrap_or_default();
                let detail = "probation failed: the candidate did not load after a restart";
                self.journal_rollback(&model, &target, detail.into()).await;
                self.resumed(&model);
                if let Err(e) = self.load_active(&model).await {
                    warn!(model, error = %e, "model not served after the rollback");
                }
                if let Some(slot) = self.serving.get(&model) {
                    self.start_guard(&model, &slot);
                }
                continue;
            };
            let previous = match &record.previous {
                Some(version) => match self.load_slot(version).await {
                    Ok((slot, _)) => Some(Arc::new(slot)),
                    Err(e) => {
                        warn!(model, error = %e, "the previous version does not load; a failed probation would leave nothing");
                        None
                    }
                },
                None => None,
            };
            info!(
                model,
                target = %slot.target,
                served_s = served.as_secs_f64(),
                after_crash,
                "probation resumes after the restart"
            );
            let agent = self.clone();
            self.spawn(async move { agent.probation(model, slot, previous, served).await });
        }
    }
}
