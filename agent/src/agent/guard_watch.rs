//! The guard after commit: for as long as a committed version serves, its release's signed
//! policy is judged over a sliding window of its live counts and the labels joined to its
//! predictions. A breach is reported with its evidence and, when the policy says so, the
//! previous version (kept on disk) goes back in service and this one is not installed again for
//! the same desired revision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_protocol::guard::{self, Breach, DeviceAction, GuardPolicy, GuardRule};
use edgefleet_protocol::message::EventKind;
use tracing::{info, warn};

use super::{Agent, Notice, blocking};
use crate::guard::{Readings, window};
use crate::metrics::BreachLabels;
use crate::serving::Slot;

/// Ids of wrongly answered predictions an accuracy breach carries at most.
const SAMPLE_IDS: u32 = 20;

impl Agent {
    /// Starts judging the version `slot` of `model`, now committed and in service, when its
    /// release signs a guard policy. Any earlier watch on the model ends at its next check.
    pub(super) fn start_guard(self: &Arc<Self>, model: &str, slot: &Arc<Slot>) {
        let generation = match self.guards.lock() {
            Ok(mut guards) => {
                let g = guards.entry(model.to_owned()).or_default();
                *g += 1;
                *g
            }
            Err(_) => return,
        };
        let Some(policy) = slot.meta.guard.clone() else {
            return;
        };
        info!(
            model,
            target = %slot.target,
            window_s = policy.window_seconds,
            "the guard after commit watches this version"
        );
        let (agent, model, slot) = (self.clone(), model.to_owned(), slot.clone());
        self.spawn(async move { agent.watch_guard(model, slot, policy, generation).await });
    }

    fn guard_is_current(&self, model: &str, slot: &Arc<Slot>, generation: u64) -> bool {
        self.guards
            .lock()
            .is_ok_and(|g| g.get(model) == Some(&generation))
            && self
                .serving
                .get(model)
                .is_some_and(|s| Arc::ptr_eq(&s, slot))
    }

    async fn watch_guard(
        self: Arc<Self>,
        model: String,
        slot: Arc<Slot>,
        policy: GuardPolicy,
        generation: u64,
    ) {
        let every = Duration::from_secs(self.config.quality.guard_check_seconds);
        let mut readings = Readings::new(self.now_unix(), policy.window_seconds);
        let expected: BTreeMap<String, Vec<f64>> = slot
            .stats
            .expected_shares()
            .map(|(f, e)| (f.to_owned(), e.to_vec()))
            .collect();
        let expected_mix = slot
            .meta
            .baseline
            .as_ref()
            .map(|b| b.predictions.clone())
            .unwrap_or_default();
        let signed_accuracy = slot.meta.signed_accuracy();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.shutdown.cancelled() => return,
            }
            if !self.guard_is_current(&model, &slot, generation) {
                return;
            }
            let now = self.now_unix();
            let (covered, counts) = readings.push(now, slot.stats.counts());
            let quality = if policy.max_accuracy_drop.is_some() {
                let (log, name, version) = (
                    self.predictions.clone(),
                    model.clone(),
                    slot.meta.version.clone(),
                );
                // Labels persist in the prediction log: their window is the policy's whole one,
                // also across a restart of the watch.
                let since = now.saturating_sub(policy.window_seconds);
                match blocking(move || log.quality_joined(&name, &version, since, now + 1)).await {
                    Ok(Ok(counts)) => Some(counts.figures()),
                    Ok(Err(e)) => {
                        warn!(model, error = %e, "the guard cannot read the joined labels");
                        None
                    }
                    Err(e) => {
                        warn!(model, error = %e, "the guard cannot read the joined labels");
                        None
                    }
                }
            } else {
                None
            };
            let figures = window(
                &counts,
                slot.stats.max(),
                &expected,
                &expected_mix,
                quality.as_ref(),
            );
            let mut breaches = guard::judge(&figures, &policy, signed_accuracy);
            if let Some(accuracy) = breaches.iter_mut().find(|b| b.rule == GuardRule::Accuracy) {
                let (log, name, version) = (
                    self.predictions.clone(),
                    model.clone(),
                    slot.meta.version.clone(),
                );
                let since = now.saturating_sub(policy.window_seconds);
                let sample =
                    blocking(move || log.wrong_sample(&name, &version, since, now + 1, SAMPLE_IDS))
                        .await;
                accuracy.sample = match sample {
                    Ok(Ok(ids)) => ids,
                    _ => Vec::new(),
                };
            }
            if !breaches.is_empty() {
                self.guard_breached(&model, &slot, &policy, breaches, covered)
                    .await;
                return;
            }
        }
    }

    /// Reports a breach and acts on it as the policy says. The roll-back is an install like any
    /// other (health check, probation), so it waits for one already under way.
    async fn guard_breached(
        self: &Arc<Self>,
        model: &str,
        slot: &Arc<Slot>,
        policy: &GuardPolicy,
        breaches: Vec<Breach>,
        covered: u64,
    ) {
        for b in &breaches {
            self.metrics
                .guard_breaches
                .get_or_create(&BreachLabels {
                    model: model.to_owned(),
                    version: slot.meta.version.to_string(),
                    rule: b.rule.as_str().to_owned(),
                })
                .inc();
        }
        let reasons: Vec<&str> = breaches.iter().map(|b| b.detail.as_str()).collect();
        let reasons = reasons.join("; ");
        let record = {
            let (store, name) = (self.store.clone(), model.to_owned());
            match blocking(move || store.record(&name)).await {
                Ok(Ok(record)) => record,
                _ => None,
            }
        };
        let floor = record.as_ref().map_or(0, |r| r.floor);
        let previous = record.and_then(|r| r.previous);
        let action = match (policy.device, &previous) {
            (DeviceAction::Report, _) => Err("kept serving (the policy only reports)".to_owned()),
            (DeviceAction::RollBack, None) => {
                Err("kept serving: this device has no previous version to roll back to".to_owned())
            }
            (DeviceAction::RollBack, Some(p)) if p.meta.sequence < floor => Err(format!(
                "kept serving: the rollback floor ({floor}) forbids going back to {} (sequence {}); \
                 roll forward to a fixed release",
                p.meta.version, p.meta.sequence
            )),
            (DeviceAction::RollBack, Some(p)) => Ok(format!("rolling back to {}", p.meta.version)),
        };
        let roll_back = action.is_ok();
        let action = action.unwrap_or_else(|kept| kept);
        warn!(
            model,
            target = %slot.target,
            window_s = covered,
            reasons,
            action,
            "the guard after commit found a breach"
        );
        let _ = self.notices.send(Notice {
            model: model.to_owned(),
            kind: EventKind::GuardBreached,
            target: Some(slot.target.clone()),
            detail: Some(format!(
                "judged on {covered} s of traffic and the labels of the last {} s: {reasons}; \
                 {action}",
                policy.window_seconds
            )),
            evidence: breaches,
            refuse_again: roll_back.then(|| slot.key.clone()),
        });
        if roll_back {
            match self.roll_back(model).await {
                Ok(report) => info!(model, ?report, "the guard rolled back"),
                Err(e) => {
                    warn!(model, error = %e, "the guard could not roll back; the version keeps serving")
                }
            }
        }
    }
}
