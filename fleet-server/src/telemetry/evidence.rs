//! A rollout's telemetry, folded as it arrives. The gates used to read every batch of the whole
//! fleet since shortly before the rollout started, every check: at 10,000 devices that was
//! hundreds of MB decoded every 5 s after twenty minutes, and the rollout never finished
//! (docs/BENCHMARKS.md). Now each check reads only the batches that arrived since the last one
//! ([`Arrivals`]) and adds the rollout's own devices' to running figures: per version (the model
//! gates) and per device the challenger's counts (the shadow gate).

use std::collections::{BTreeMap, HashMap, HashSet};

use edgefleet_protocol::shadow::ShadowCounts;

use crate::baselines::Baselines;
use crate::rollout::Rollout;
use crate::store::{StateStore, StoreError, StoredMetrics};
use crate::telemetry::arrivals::Arrivals;
use crate::telemetry::{VersionFigures, by_version, evidence_of};

/// One rollout's figures so far.
#[derive(Debug, Default)]
pub struct Evidence {
    members: HashSet<String>,
    arrivals: Arrivals,
    versions: BTreeMap<(String, String), VersionFigures>,
    /// Device → (window end, the challenger's counts) per window.
    shadow: HashMap<String, Vec<(u64, ShadowCounts)>>,
}

impl Evidence {
    fn new(rollout: &Rollout) -> Self {
        Self {
            members: rollout.devices.iter().map(|d| d.id.clone()).collect(),
            ..Self::default()
        }
    }

    /// Where the next read starts.
    pub fn read_from(&self, rollout: &Rollout, lookback_seconds: i64) -> i64 {
        self.arrivals
            .read_from(rollout.created_at - lookback_seconds)
    }

    /// Adds the batches of a read that started at `read_from`, made at `now` (seconds), skipping
    /// those folded before.
    pub fn fold(&mut self, rollout: &Rollout, read: Vec<StoredMetrics>, read_from: i64, now: i64) {
        let fresh: Vec<_> = self
            .arrivals
            .take_new(read, read_from, now)
            .into_iter()
            .filter(|s| self.members.contains(s.device.as_str()))
            .map(|s| s.batch)
            .collect();
        for batch in &fresh {
            for counts in crate::rollout::shadow_reports(rollout, batch) {
                self.shadow
                    .entry(batch.device.to_string())
                    .or_default()
                    .push((batch.window_end_unix, counts.clone()));
            }
        }
        for (key, figures) in by_version(&fresh, &Baselines::default(), |_| true) {
            self.versions.entry(key).or_default().merge(&figures);
        }
    }

    /// The new version's figures and those of the versions it replaces, drift judged against
    /// `baselines`.
    pub fn versions(
        &self,
        rollout: &Rollout,
        baselines: &Baselines,
    ) -> (VersionFigures, VersionFigures) {
        evidence_of(
            rollout,
            self.versions.iter().map(|((model, version), figures)| {
                let judged = figures.clone().with_baseline(baselines.get(model, version));
                ((model.clone(), version.clone()), judged)
            }),
        )
    }

    /// The challenger's counts the shadow gate judges.
    pub fn shadow(&self, rollout: &Rollout) -> ShadowCounts {
        crate::rollout::shadow_evidence_from(rollout, |device| {
            self.shadow.get(device).cloned().unwrap_or_default()
        })
    }
}

/// Every active rollout's [`Evidence`], kept by the engine between passes.
#[derive(Debug, Default)]
pub struct EvidenceCache {
    rollouts: HashMap<String, Evidence>,
}

impl EvidenceCache {
    /// Reads what arrived for `rollout` since its last refresh and folds it in.
    pub async fn refresh(
        &mut self,
        store: &(impl StateStore + ?Sized),
        rollout: &Rollout,
        lookback_seconds: i64,
        now: i64,
    ) -> Result<&Evidence, StoreError> {
        let evidence = self
            .rollouts
            .entry(rollout.id.clone())
            .or_insert_with(|| Evidence::new(rollout));
        if evidence.members.len() != rollout.devices.len() {
            *evidence = Evidence::new(rollout);
        }
        let read_from = evidence.read_from(rollout, lookback_seconds);
        let read = store.metrics(None, read_from).await?;
        evidence.fold(rollout, read, read_from, now);
        Ok(evidence)
    }

    /// Forgets rollouts other than `keep` while more than `limit` are kept.
    pub fn keep_at_most(&mut self, limit: usize, keep: &str) {
        let extra: Vec<String> = self
            .rollouts
            .keys()
            .filter(|id| id.as_str() != keep)
            .take(self.rollouts.len().saturating_sub(limit))
            .cloned()
            .collect();
        for id in extra {
            self.rollouts.remove(&id);
        }
    }

    /// Forgets the rollouts not in `active`.
    pub fn keep_only<'a>(&mut self, active: impl IntoIterator<Item = &'a str>) {
        let active: HashSet<&str> = active.into_iter().collect();
        self.rollouts.retain(|id, _| active.contains(id.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use edgefleet_protocol::message::MetricsBatch;
    use proptest::prelude::*;

    use super::*;
    use crate::rollout::{Gates, RolloutSpec, Selector};
    use crate::telemetry::arrivals::tests::stored;
    use crate::telemetry::rollout_evidence;

    fn rollout() -> Rollout {
        let spec = RolloutSpec {
            strategy: Default::default(),
            shadow: None,
            model: "churn".into(),
            version: "2.1.0".into(),
            target: "models/churn/2.1.0/model.onnx".into(),
            selector: Selector::default(),
            waves: vec![100.0],
            gates: Gates::default(),
            rollback_on_halt: true,
        };
        let fleet = (1..=4)
            .map(|d| (format!("d{d}"), Some("2.0.0".to_owned())))
            .collect();
        let mut rollout = Rollout::new("r".into(), spec, fleet, "op".into(), 1_000).unwrap();
        // Three devices shadowing in the running wave, from different moments; d4 not.
        rollout.state = crate::rollout::RolloutState::Running { wave: 0 };
        for (d, since) in rollout.devices.iter_mut().zip([1_000, 1_100, 1_250]) {
            d.wave = 0;
            d.state = crate::rollout::DeviceState::Shadowing;
            d.notified_at = Some(since);
        }
        rollout
    }

    proptest! {
        /// Batches stored up to the margin after their arrival stamp, read by checks at any
        /// moments: the folded figures equal one read of everything, each batch counted once.
        #[test]
        fn folding_reads_as_they_come_equals_reading_everything_once(
            arrivals in prop::collection::vec(
                (prop::sample::select(vec![1u8, 2, 3, 4, 9]), any::<bool>(), 1u64..50, 0i64..400, 0i64..=crate::telemetry::arrivals::ARRIVAL_MARGIN_SECONDS),
                0..60,
            ),
            checks in prop::collection::vec(900i64..1_500, 1..12),
        ) {
            let rollout = rollout();
            // (visible from, stored batch), as the store would show them.
            let table: Vec<(i64, StoredMetrics)> = arrivals
                .iter()
                .enumerate()
                .map(|(seq, &(device, candidate, requests, at, delay))| {
                    let at = 1_000 + at;
                    (at + delay, stored(device, seq as u64, candidate, requests, at))
                })
                .collect();
            let mut checks = checks;
            checks.sort_unstable();
            checks.push(2_000); // a last check after everything is visible
            let mut evidence = Evidence::new(&rollout);
            for now in checks {
                let from = evidence.read_from(&rollout, 3_600);
                let read = table
                    .iter()
                    .filter(|(visible, s)| *visible <= now && s.received_us / 1_000_000 >= from)
                    .map(|(_, s)| s.clone())
                    .collect();
                evidence.fold(&rollout, read, from, now);
            }
            let all: Vec<MetricsBatch> = table.iter().map(|(_, s)| s.batch.clone()).collect();
            let baselines = Baselines::default();
            prop_assert_eq!(
                evidence.versions(&rollout, &baselines),
                rollout_evidence(&rollout, &all, &baselines)
            );
            let wanted = crate::rollout::shadow_evidence(&rollout, &all);
            let compared: u64 = table
                .iter()
                .filter(|(_, s)| {
                    let since = match s.device.as_str() { "d1" => 1_000, "d2" => 1_100, "d3" => 1_250, _ => i64::MAX };
                    s.batch.models[0].shadow.is_some() && s.batch.window_end_unix as i64 >= since
                })
                .map(|(_, s)| s.batch.models[0].requests)
                .sum();
            prop_assert_eq!(wanted.compared, compared);
            prop_assert_eq!(evidence.shadow(&rollout), wanted);
        }
    }
}
