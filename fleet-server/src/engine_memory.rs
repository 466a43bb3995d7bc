//! What the rollout engine keeps from one pass to the next (a pass runs twice a second while a
//! rollout is active), so that each reads only what arrived since the last: the telemetry its
//! gates judge, and the devices' reported states.
//!
//! Reading every device each pass would cost the whole fleet twice a second (at 100,000 devices,
//! most of a core for nothing). So the [`FleetView`] is read whole once, and then each pass reads
//! only the devices whose reported state was stored since the last read — with an overlap,
//! because a state stored in the second the last read ran carries that second's stamp — and it
//! is read whole again now and then, which also drops removed devices. Its own module because the
//! server's state holds it and the engine (which needs that state) uses it.

use std::collections::HashMap;

use edgefleet_protocol::message::Reported;

use crate::store::{DeviceStore, Result};
use crate::telemetry::evidence::EvidenceCache;

/// What the engine keeps between passes: the telemetry its gates have read and the devices'
/// reported states.
#[derive(Debug, Default)]
pub struct PassMemory {
    pub evidence: EvidenceCache,
    pub fleet: FleetView,
    /// When the devices that have not answered a rollout are next asked of the broker again
    /// (Unix seconds; `crate::engine`).
    pub next_reread: i64,
}

/// Seconds a read reaches back before the previous one (the stamps are whole seconds, and a
/// write can commit a moment after it was stamped).
const OVERLAP_SECONDS: i64 = 5;
/// How often the view is read whole again.
const WHOLE_EVERY_SECONDS: i64 = 60;

/// The devices' reported states by id: all the engine judges a device by. Not the devices' rows,
/// whose signed desired states (a few kB each) would make the view of 100,000 devices most of
/// a gigabyte.
#[derive(Debug, Default)]
pub struct FleetView {
    reported: HashMap<String, Reported>,
    /// When the last read ran, and the last whole one.
    read_at: Option<i64>,
    whole_at: Option<i64>,
}

impl FleetView {
    /// The reported states as of `now`, reading from `store` only what changed since the last
    /// call (or everything, when the view is new, old, or time went backwards).
    pub async fn refresh(
        &mut self,
        store: &(impl DeviceStore + ?Sized),
        now: i64,
    ) -> Result<&HashMap<String, Reported>> {
        let whole_is_due = match (self.read_at, self.whole_at) {
            (Some(read), Some(whole)) => now < read || now - whole >= WHOLE_EVERY_SECONDS,
            _ => true,
        };
        if whole_is_due {
            let states = store.reported_states(None).await?;
            self.reported = states
                .into_iter()
                .map(|(id, r)| (id.to_string(), r))
                .collect();
            self.whole_at = Some(now);
        } else {
            let since = self.read_at.unwrap_or(now) - OVERLAP_SECONDS;
            for (id, reported) in store.reported_states(Some(since)).await? {
                self.reported.insert(id.to_string(), reported);
            }
        }
        self.read_at = Some(now);
        Ok(&self.reported)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use edgefleet_protocol::message::SCHEMA_VERSION;
    use edgefleet_protocol::{DeviceId, MessageId};

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{NewDevice, StateStore};

    const T: i64 = 1_800_000_000;

    async fn report(store: &SqliteStore, device: &str, seq: u64, at: i64) {
        let reported = Reported {
            schema: SCHEMA_VERSION,
            id: MessageId::from_random([seq as u8; 16]),
            device: DeviceId::new(device).unwrap(),
            seq,
            at_unix: 0,
            agent_version: "test".into(),
            desired_revision: seq,
            models: Vec::new(),
        };
        assert!(store.record_reported(&reported, at).await.unwrap());
    }

    fn revisions(view: &HashMap<String, Reported>) -> Vec<(String, u64)> {
        let mut seen: Vec<_> = view
            .iter()
            .map(|(id, r)| (id.clone(), r.desired_revision))
            .collect();
        seen.sort();
        seen
    }

    #[tokio::test]
    async fn reads_the_fleet_once_then_what_reported_since_and_whole_again_each_minute() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("fleet.db")).unwrap();
        for id in ["a", "b"] {
            let device = NewDevice {
                id: DeviceId::new(id).unwrap(),
                group: "g".into(),
                tags: Default::default(),
            };
            store
                .add_device(&device, id, T + 600, T, false)
                .await
                .unwrap();
        }
        report(&store, "a", 1, T).await;
        let mut view = FleetView::default();
        // b has reported nothing: it is not in the view.
        let seen = revisions(view.refresh(&store, T).await.unwrap());
        assert_eq!(seen, [("a".into(), 1)]);

        // Stored in the same second as the last read, and a second later: both are seen.
        report(&store, "b", 1, T).await;
        report(&store, "a", 2, T + 1).await;
        let seen = revisions(view.refresh(&store, T + 1).await.unwrap());
        assert_eq!(seen, [("a".into(), 2), ("b".into(), 1)]);

        // Between whole reads a removed device stays (nothing reported says it left); the next
        // whole read, a minute after the last, drops it.
        store
            .remove_device(&DeviceId::new("b").unwrap())
            .await
            .unwrap();
        let seen = revisions(view.refresh(&store, T + 30).await.unwrap());
        assert_eq!(seen, [("a".into(), 2), ("b".into(), 1)]);
        let seen = revisions(view.refresh(&store, T + 60).await.unwrap());
        assert_eq!(seen, [("a".into(), 2)]);

        // Time going backwards (a clock stepped back) reads whole at once.
        report(&store, "a", 3, T - 100).await;
        let seen = revisions(view.refresh(&store, T - 100).await.unwrap());
        assert_eq!(seen, [("a".into(), 3)]);
    }
}
