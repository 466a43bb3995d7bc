//! The guard judged fleet-wide: each release's signed guard policy over the telemetry of every
//! device group, with the same `protocol::guard::judge` the devices run. A decay spread thinly
//! (no single device holds `min_labelled` labels or `min_requests` requests) is visible only
//! here. A breach opens the same alert a device's would (one per version and group) and the
//! fleet action follows on the engine's pass.
//!
//! It reads stored batches, so its window is capped at [`MAX_WINDOW_SECONDS`] whatever the
//! policy says (a longer one waits for per-version rollups of telemetry); the device judges the
//! policy's whole window.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use edgefleet_protocol::guard::{self, Breach, GuardWindow};
use edgefleet_protocol::message::MetricsBatch;
use edgefleet_protocol::target::ModelTargetMeta;

use crate::alerts::{Evidence, Raised};
use crate::baselines::Baselines;
use crate::guard_policies::{self, GroupGuard, PolicySource};
use crate::state::AppState;
use crate::store::{DeviceFilter, Store};
use crate::telemetry::{VersionFigures, by_version};

/// The longest window judged fleet-wide.
pub const MAX_WINDOW_SECONDS: u64 = 3600;
const EVERY: Duration = Duration::from_secs(60);
const LEASE: &str = "fleet-guard";
const LEASE_MS: i64 = 150_000;

/// A version's figures as the guard takes them. Output shift is judged on the devices only
/// (the signed baseline's prediction mix is a release file the server does not fetch).
pub fn window_of(f: &VersionFigures) -> GuardWindow {
    let quality = f.quality.figures();
    GuardWindow {
        requests: f.requests,
        errors: f.errors,
        p99_ms: (f.latency.count() > 0).then(|| f.latency.quantile_ms(0.99)),
        output_psi: None,
        input_psi: f.worst_drift(),
        labelled: quality.labelled,
        accuracy: quality.accuracy,
    }
}

/// One group's breach of one release's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupBreach {
    pub model: String,
    pub version: String,
    pub group: String,
    pub devices: usize,
    pub breaches: Vec<Breach>,
    /// Whose policy was breached: the release's, or one set for the group.
    pub source: PolicySource,
}

/// Every release judged per group, by the group's own policy for its model if one is set
/// (`overrides`) or else the release's signed one, over the batches that ended in the policy's
/// window (capped) before `now`. `groups` maps a device to its group.
pub fn judge_groups(
    releases: &[ModelTargetMeta],
    baselines: &Baselines,
    overrides: &[GroupGuard],
    batches: &[MetricsBatch],
    groups: &BTreeMap<String, String>,
    now: u64,
) -> Vec<GroupBreach> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = groups.values().collect();
    for release in releases {
        let key = (release.model.to_string(), release.version.to_string());
        for group in &names {
            let Some((policy, source)) = guard_policies::effective(release, group, overrides)
            else {
                continue;
            };
            let since = now.saturating_sub(policy.window_seconds.min(MAX_WINDOW_SECONDS));
            let recent: Vec<MetricsBatch> = batches
                .iter()
                .filter(|b| {
                    b.window_end_unix > since && groups.get(b.device.as_str()) == Some(*group)
                })
                .cloned()
                .collect();
            let figures = by_version(&recent, baselines, |_| true);
            let Some(f) = figures.get(&key) else {
                continue;
            };
            let breaches = guard::judge(&window_of(f), policy, release.signed_accuracy());
            if !breaches.is_empty() {
                out.push(GroupBreach {
                    model: key.0.clone(),
                    version: key.1.clone(),
                    group: (*group).clone(),
                    devices: f.devices.len(),
                    breaches,
                    source,
                });
            }
        }
    }
    out
}

/// Judges every minute, on one server of many (a lease), until the server stops.
pub async fn run(state: AppState) {
    let mut interval = tokio::time::interval(EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            _ = interval.tick() => {
                if let Err(e) = judge_once(&state).await {
                    tracing::warn!(error = %e, "the fleet-wide guard could not judge; retrying in a minute");
                }
            }
        }
    }
    let _ = state.store.release_lease(LEASE, &state.instance).await;
}

/// Why a round of the fleet-wide guard did not finish.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("reading the signed releases: {0}")]
    Releases(#[from] crate::tufhost::HostError),
}

async fn judge_once(state: &AppState) -> Result<(), RoundError> {
    let store: &dyn Store = &*state.store;
    if !store
        .lease(LEASE, &state.instance, state.clock.unix_ms(), LEASE_MS)
        .await?
    {
        return Ok(());
    }
    let overrides = store.group_guards().await?;
    let models = state.tuf.models().await?;
    let releases: Vec<ModelTargetMeta> = models
        .iter()
        .map(|m| m.meta.clone())
        .filter(|m| m.guard.is_some() || overrides.iter().any(|o| o.model == m.model.as_str()))
        .collect();
    if releases.is_empty() {
        return Ok(());
    }
    let now = state.clock.unix();
    let stored = store.metrics(None, now - MAX_WINDOW_SECONDS as i64).await?;
    let batches = crate::telemetry::batches(stored);
    let groups: BTreeMap<String, String> = store
        .devices(&DeviceFilter::default())
        .await?
        .into_iter()
        .map(|d| (d.id.to_string(), d.group))
        .collect();
    let baselines = state.baselines.load(&state.blobs, &models).await;
    for breach in judge_groups(
        &releases,
        &baselines,
        &overrides,
        &batches,
        &groups,
        u64::try_from(now).unwrap_or(0),
    ) {
        let fingerprint = format!("guard/{}/{}/{}", breach.model, breach.version, breach.group);
        // An open alert already says it (and its action was taken or is due).
        if store.open_alert(&fingerprint).await?.is_some() {
            continue;
        }
        let reasons: Vec<&str> = breach.breaches.iter().map(|b| b.detail.as_str()).collect();
        let detail = format!(
            "the group's {} devices together, by {}: {}",
            breach.devices,
            breach.source.describe(&breach.group),
            reasons.join("; ")
        );
        let rules: Vec<&str> = breach.breaches.iter().map(|b| b.rule.as_str()).collect();
        let alert = crate::alerting::raise(
            store,
            Raised {
                fingerprint,
                name: "EdgefleetGuardBreached".into(),
                severity: "page".into(),
                labels: BTreeMap::from([
                    ("model".to_owned(), breach.model.clone()),
                    ("version".to_owned(), breach.version.clone()),
                    ("group".to_owned(), breach.group.clone()),
                    ("rule".to_owned(), rules.join(",")),
                ]),
                summary: format!(
                    "{} {} breached its guard policy in group {}",
                    breach.model, breach.version, breach.group
                ),
                description: format!("fleet-wide: {detail}"),
                evidence: Evidence {
                    at: now,
                    device: None,
                    detail,
                    breaches: breach.breaches.clone(),
                },
                wants_action: true,
            },
            now,
            true,
        )
        .await?;
        tracing::warn!(
            alert = alert.id,
            model = breach.model,
            version = breach.version,
            group = breach.group,
            "the fleet-wide guard found a breach"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use edgefleet_protocol::message::ModelMetrics;
    use edgefleet_protocol::quality::{Observation, QualityCounts};

    use super::*;

    fn decaying() -> ModelTargetMeta {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/bad/decaying");
        edgefleet_tuf::operator::read_release_dir(&dir).unwrap().1
    }

    /// One window of `device` with `labelled` labels of which `right` were right.
    fn batch(device: &str, end: u64, labelled: u64, right: u64) -> MetricsBatch {
        let mut quality = QualityCounts::default();
        for i in 0..labelled {
            quality.add(&Observation::Class {
                predicted: "churn".into(),
                actual: if i < right { "churn" } else { "stay" }.into(),
                positive_score: None,
            });
        }
        MetricsBatch {
            schema: 1,
            id: edgefleet_protocol::MessageId::new(format!("{device}-{end}")).unwrap(),
            device: edgefleet_protocol::DeviceId::new(device.to_owned()).unwrap(),
            seq: end,
            window_start_unix: end - 60,
            window_end_unix: end,
            dropped_batches: 0,
            process: Default::default(),
            models: vec![ModelMetrics {
                shadow: None,
                model: "churn".parse().unwrap(),
                version: "3.1.0-decaying".parse().unwrap(),
                requests: labelled,
                errors: 0,
                latency: Default::default(),
                latency_histogram: Default::default(),
                predictions: BTreeMap::new(),
                drift_psi: BTreeMap::new(),
                drift_counts: BTreeMap::new(),
                quality,
                samples: Vec::new(),
                samples_skipped: 0,
            }],
        }
    }

    #[test]
    fn a_decay_spread_over_a_group_is_found_where_no_device_alone_shows_it() {
        let now = 10_000;
        let groups: BTreeMap<String, String> = [
            ("a1", "a"),
            ("a2", "a"),
            ("a3", "a"),
            ("b1", "b"),
            ("b2", "b"),
            ("b3", "b"),
        ]
        .into_iter()
        .map(|(d, g)| (d.to_owned(), g.to_owned()))
        .collect();
        // 100 labels a device (the policy needs 200): group a right half the time, b always.
        let mut batches: Vec<MetricsBatch> = ["a1", "a2", "a3"]
            .iter()
            .map(|d| batch(d, now - 30, 100, 50))
            .chain(
                ["b1", "b2", "b3"]
                    .iter()
                    .map(|d| batch(d, now - 30, 100, 100)),
            )
            .collect();
        // Labels from before the window count for nothing.
        batches.push(batch("b1", now - 4000, 500, 0));
        let release = decaying();
        let found = judge_groups(
            std::slice::from_ref(&release),
            &Baselines::default(),
            &[],
            &batches,
            &groups,
            now,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        let breach = &found[0];
        assert_eq!((breach.group.as_str(), breach.devices), ("a", 3));
        assert_eq!(breach.breaches[0].rule.as_str(), "accuracy");
        assert!((breach.breaches[0].observed - 0.5).abs() < 1e-9);
        // Each device alone is not judged: too few labels.
        let one: BTreeMap<String, String> = [("a1".to_owned(), "a".to_owned())].into();
        assert!(
            judge_groups(
                std::slice::from_ref(&release),
                &Baselines::default(),
                &[],
                &batches,
                &one,
                now
            )
            .is_empty()
        );
        // A release without a policy is not judged at all.
        let mut unguarded = release;
        unguarded.guard = None;
        assert!(
            judge_groups(
                &[unguarded],
                &Baselines::default(),
                &[],
                &batches,
                &groups,
                now
            )
            .is_empty()
        );
    }

    #[test]
    fn a_groups_own_policy_judges_that_group_in_place_of_the_signed_one() {
        let now = 10_000;
        let groups: BTreeMap<String, String> = [("a1", "a"), ("b1", "b")]
            .into_iter()
            .map(|(d, g)| (d.to_owned(), g.to_owned()))
            .collect();
        // 300 labels each, 80 % right: the release's policy (a drop of 0.1 below 1.0) breaks
        // in both groups.
        let batches = vec![
            batch("a1", now - 30, 300, 240),
            batch("b1", now - 30, 300, 240),
        ];
        let release = decaying();
        assert_eq!(
            judge_groups(
                std::slice::from_ref(&release),
                &Baselines::default(),
                &[],
                &batches,
                &groups,
                now
            )
            .len(),
            2
        );
        // Group b's operators allow a drop of 0.3: b is judged by that and passes; a still
        // breaks the signed policy.
        let mut loose = release.guard.clone().unwrap();
        loose.max_accuracy_drop = Some(0.3);
        let overrides = [GroupGuard {
            group: "b".into(),
            model: "churn".into(),
            policy: loose.clone(),
            set_by: "alice".into(),
            set_at: 1,
        }];
        let found = judge_groups(
            std::slice::from_ref(&release),
            &Baselines::default(),
            &overrides,
            &batches,
            &groups,
            now,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].group.as_str(), found[0].source),
            ("a", PolicySource::Signed)
        );
        // A release that signs no policy is judged where a group sets one, and only there.
        let mut unguarded = release;
        unguarded.guard = None;
        loose.max_accuracy_drop = Some(0.1);
        let overrides = [GroupGuard {
            policy: loose,
            ..overrides[0].clone()
        }];
        let found = judge_groups(
            &[unguarded],
            &Baselines::default(),
            &overrides,
            &batches,
            &groups,
            now,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].group.as_str(), found[0].source),
            ("b", PolicySource::Group)
        );
    }
}
