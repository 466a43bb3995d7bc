//! A rollout's devices are stored one row each beside the rollout's own row, which holds the
//! rest. A rollout of 100,000 devices is about 15 MB as one document; the engine steps it twice
//! a second and a pass changes a few thousand of its devices at most, so a save writes the
//! rollout's row and the rows of the devices that changed, and a read takes the device rows only
//! when another server (or nobody since this one started) saved the rollout.
//!
//! Both back-ends keep a [`RolloutRows`]: per active rollout, its devices as of the revision
//! this server last saved or read. Revisions only grow, and a save is taken only from the
//! revision the store holds, so a cached revision's devices are exactly what the rows hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::rollout::{DevicePage, Rollout, RolloutDevice, RolloutView};
use crate::store::RolloutSummary;
use crate::store::{Result, StoreError};

/// What one save writes.
#[derive(Debug, PartialEq)]
pub(crate) struct RolloutWrite {
    /// The rollout without its devices, at the revision the save makes.
    pub body: String,
    /// Its [`RolloutSummary`](crate::store::RolloutSummary) view at that revision.
    pub summary: String,
    /// The devices' rows to insert or replace: (index, device as JSON, whether it has a
    /// problem: a failure's or a rollback's reason).
    pub rows: Vec<(i64, String, bool)>,
    /// Device rows at this index and past it go (a rollout's device list never shrinks today;
    /// this keeps the rows right should it).
    pub keep_below: i64,
    /// Every row is rewritten: the rollout's rows as the store holds them are not known here.
    pub whole: bool,
}

/// A rollout's devices as of a revision.
type KnownDevices = (u64, Arc<Vec<RolloutDevice>>);

/// The devices of the active rollouts, by id, as of a revision.
#[derive(Debug, Default)]
pub(crate) struct RolloutRows {
    known: Mutex<HashMap<String, KnownDevices>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The devices of rollout `id` from their rows.
fn parse_devices(id: &str, rows: &[String]) -> Result<Vec<RolloutDevice>> {
    rows.iter()
        .map(|row| {
            serde_json::from_str(row).map_err(|e| {
                backend(format!(
                    "a stored device of rollout {id} does not parse: {e}"
                ))
            })
        })
        .collect()
}

impl RolloutRows {
    /// What saving `rollout` (at the revision the store holds) as the next revision writes.
    pub fn write_of(&self, rollout: &mut Rollout) -> Result<RolloutWrite> {
        let summary = serde_json::to_string(&RolloutView::paged(rollout, DevicePage::NONE))
            .map_err(backend)?;
        let devices = std::mem::take(&mut rollout.devices);
        rollout.revision += 1;
        let body = serde_json::to_string(&*rollout);
        rollout.revision -= 1;
        rollout.devices = devices;
        let body = body.map_err(backend)?;
        let known = self.devices_at(&rollout.id, rollout.revision);
        let mut rows = Vec::new();
        for (index, device) in rollout.devices.iter().enumerate() {
            let unchanged = known
                .as_ref()
                .is_some_and(|known| known.get(index) == Some(device));
            if !unchanged {
                let index = i64::try_from(index).map_err(backend)?;
                rows.push((
                    index,
                    serde_json::to_string(device).map_err(backend)?,
                    device.detail.is_some(),
                ));
            }
        }
        Ok(RolloutWrite {
            body,
            summary,
            rows,
            keep_below: i64::try_from(rollout.devices.len()).map_err(backend)?,
            whole: known.is_none(),
        })
    }

    /// The devices of rollout `id` at `revision`, if this server last saw that revision.
    pub fn devices_at(&self, id: &str, revision: u64) -> Option<Arc<Vec<RolloutDevice>>> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known
            .get(id)
            .filter(|(at, _)| *at == revision)
            .map(|(_, devices)| devices.clone())
    }

    /// Notes what the store now holds of `rollout` (saved or read), unless a later revision is
    /// known already (a read's snapshot may predate a save). Only active rollouts are kept: the
    /// engine reads those twice a second, anything else seldom.
    pub fn remember(&self, rollout: &Rollout) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known
            .get(&rollout.id)
            .is_some_and(|(at, _)| *at > rollout.revision)
        {
            return;
        }
        if rollout.state.is_active() {
            known.insert(
                rollout.id.clone(),
                (rollout.revision, Arc::new(rollout.devices.clone())),
            );
        } else {
            known.remove(&rollout.id);
        }
    }

    /// A rollout's summary from its row: the stored one, else (saved before summaries were)
    /// worked out from the whole rollout `whole` reads.
    pub fn summary(
        &self,
        revision: u64,
        summary: Option<&str>,
        whole: impl FnOnce() -> Result<Rollout>,
    ) -> Result<RolloutSummary> {
        let view = match summary {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| backend(format!("a stored rollout summary does not parse: {e}")))?,
            None => RolloutView::paged(&whole()?, DevicePage::NONE),
        };
        Ok(RolloutSummary { revision, view })
    }

    /// The status view of a page: `summary` (the rollout's stored summary) with the page's device
    /// rows. `problems` is the page's total when it lists only devices with a problem (counted
    /// for it); otherwise the summary, saved with the rows, knows the total already (counting a
    /// large rollout's rows on every status read would cost a scan of them).
    pub fn page_view(
        summary: &str,
        rows: &[String],
        problems: Option<usize>,
        page: DevicePage,
    ) -> Result<RolloutView> {
        let mut view: RolloutView = serde_json::from_str(summary)
            .map_err(|e| backend(format!("a stored rollout summary does not parse: {e}")))?;
        view.devices = parse_devices(&view.id, rows)?;
        view.devices_total = problems.unwrap_or(view.devices_total);
        view.devices_next = page.next(view.devices.len(), view.devices_total);
        Ok(view)
    }

    /// A rollout from its row: the devices saved in its body (rollouts saved before their
    /// devices had rows of their own), else those known at its revision, else those `read`
    /// returns from its device rows.
    pub fn assemble(
        &self,
        body: &str,
        read: impl FnOnce(&str) -> Result<Vec<String>>,
    ) -> Result<Rollout> {
        let mut rollout = self.parse(body)?;
        if !self.complete(&mut rollout) {
            let rows = read(&rollout.id)?;
            self.with_rows(&mut rollout, &rows)?;
        }
        Ok(rollout)
    }

    /// The rollout a row's body holds, its devices perhaps still to be found ([`Self::complete`]).
    pub fn parse(&self, body: &str) -> Result<Rollout> {
        serde_json::from_str(body)
            .map_err(|e| backend(format!("stored rollout does not parse: {e}")))
    }

    /// Whether `rollout` has its devices: saved in its body, or known at its revision (taken
    /// from what is known in the same step as the check, so a save meanwhile cannot interfere).
    /// If not, its device rows are to be read and given to [`Self::with_rows`].
    pub fn complete(&self, rollout: &mut Rollout) -> bool {
        if !rollout.devices.is_empty() {
            return true;
        }
        match self.devices_at(&rollout.id, rollout.revision) {
            Some(devices) => {
                rollout.devices = devices.as_ref().clone();
                true
            }
            None => false,
        }
    }

    /// Gives `rollout` the devices of its device rows, read in the same snapshot as its own row.
    pub fn with_rows(&self, rollout: &mut Rollout, rows: &[String]) -> Result<()> {
        rollout.devices = parse_devices(&rollout.id, rows)?;
        self.remember(rollout);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{DeviceState, RolloutState};

    fn rollout(devices: usize) -> Rollout {
        let spec = serde_json::from_value(serde_json::json!({
            "model": "churn",
            "version": "2.0.0",
            "target": "models/churn/2.0.0/model.onnx",
            "waves": [1.0],
            "rollback_on_halt": true,
        }))
        .expect("spec");
        Rollout {
            id: "r1".into(),
            spec,
            state: RolloutState::Running { wave: 0 },
            devices: (0..devices)
                .map(|i| RolloutDevice {
                    id: format!("d{i}"),
                    wave: 0,
                    state: DeviceState::Pending,
                    previous_version: None,
                    notified_at: None,
                    revision: None,
                    detail: None,
                    promoted: false,
                })
                .collect(),
            created_by: "op".into(),
            created_at: 1,
            updated_at: 1,
            history: Vec::new(),
            revision: 0,
            model_check: None,
            shadow_check: None,
            verdicts: Vec::new(),
            approvals: Vec::new(),
        }
    }

    #[test]
    fn a_save_after_a_known_revision_writes_only_the_devices_that_changed() {
        let rows = RolloutRows::default();
        let mut r = rollout(3);
        let first = rows.write_of(&mut r).unwrap();
        assert!(first.whole);
        assert_eq!(first.rows.len(), 3);
        assert_eq!(first.keep_below, 3);
        let header: Rollout = serde_json::from_str(&first.body).unwrap();
        assert!(header.devices.is_empty());
        assert_eq!(header.revision, 1, "the body is the next revision");
        assert_eq!(r.devices.len(), 3, "the rollout keeps its devices");

        r.revision = 1;
        rows.remember(&r);
        r.devices[1].state = DeviceState::Notified;
        let second = rows.write_of(&mut r).unwrap();
        assert!(!second.whole);
        assert_eq!(second.rows.len(), 1);
        assert_eq!(second.rows[0].0, 1);
        assert!(second.rows[0].1.contains("\"d1\""), "{}", second.rows[0].1);
        assert!(!second.rows[0].2, "no detail, no problem");

        // Known at another revision (another server saved meanwhile): every row again.
        r.revision = 2;
        assert!(rows.write_of(&mut r).unwrap().whole);
    }

    #[test]
    fn a_read_takes_device_rows_only_for_a_revision_it_does_not_know() {
        let rows = RolloutRows::default();
        let mut r = rollout(2);
        r.revision = 4;
        let mut header = r.clone();
        header.devices.clear();
        let body = serde_json::to_string(&header).unwrap();
        let device_rows: Vec<String> = r
            .devices
            .iter()
            .map(|d| serde_json::to_string(d).unwrap())
            .collect();
        let mut reads = 0;
        let read = rows
            .assemble(&body, |id| {
                reads += 1;
                assert_eq!(id, "r1");
                Ok(device_rows.clone())
            })
            .unwrap();
        assert_eq!(read, r);
        let again = rows
            .assemble(&body, |_| panic!("known at this revision"))
            .unwrap();
        assert_eq!(again, r);
        assert_eq!(reads, 1);

        // A rollout saved whole before device rows existed reads from its body.
        let legacy = serde_json::to_string(&r).unwrap();
        let old = RolloutRows::default()
            .assemble(&legacy, |_| panic!("the body holds them"))
            .unwrap();
        assert_eq!(old, r);

        // A read of an older snapshot does not replace what a later save left.
        let mut newer = r.clone();
        newer.revision = 5;
        rows.remember(&newer);
        rows.remember(&r);
        assert!(rows.devices_at("r1", 5).is_some());
        assert!(rows.devices_at("r1", 4).is_none());
        r.revision = 6;

        // One no longer active is not kept.
        r.state = RolloutState::Completed;
        rows.remember(&r);
        assert!(rows.devices_at("r1", 5).is_none());
        assert!(rows.devices_at("r1", 6).is_none());
    }

    #[test]
    fn a_device_row_that_does_not_parse_names_the_rollout() {
        let mut header = rollout(0);
        header.revision = 1;
        let body = serde_json::to_string(&header).unwrap();
        let e = RolloutRows::default()
            .assemble(&body, |_| Ok(vec!["{".into()]))
            .unwrap_err();
        assert!(e.to_string().contains("rollout r1"), "{e}");
    }
}
