//! The batches stored but not yet folded into rollups, as reads of the fleet's figures see them.
//!
//! Every read of the fleet's telemetry adds the batches the roll-up loop has not folded yet, so
//! its figures are current. At 100,000 devices that queue holds a few thousand batches of about
//! 1.5 kB of JSON each; fetched and parsed whole on every read, they were most of the read's
//! time. Here each is fetched and parsed once, when a read first finds it waiting, and kept until
//! it has left the queue: a read fetches only what arrived since the read before.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use crate::store::StoreError;
use crate::store::rollups::{RollupStore, UnrolledBatch};

type Key = (String, u64);

/// The waiting batches already read, by (device, seq).
#[derive(Default)]
pub struct PendingBatches {
    kept: Mutex<HashMap<Key, Arc<UnrolledBatch>>>,
}

impl std::fmt::Debug for PendingBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("PendingBatches")
            .field("kept", &kept)
            .finish()
    }
}

impl PendingBatches {
    /// Up to `limit` stored batches not yet folded, earliest arrival first, as
    /// [`RollupStore::unrolled_metrics`] returns them.
    pub async fn read(
        &self,
        store: &(impl RollupStore + ?Sized),
        limit: usize,
    ) -> Result<Vec<Arc<UnrolledBatch>>, StoreError> {
        let keys = store.unrolled_keys(limit).await?;
        let missing: Vec<Key> = {
            let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            keys.iter()
                .filter(|k| !kept.contains_key(*k))
                .cloned()
                .collect()
        };
        let fetched = if missing.is_empty() {
            Vec::new()
        } else {
            store.batches_by_key(&missing).await?
        };
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        for batch in fetched {
            kept.insert((batch.device.clone(), batch.seq), Arc::new(batch));
        }
        // What left the queue is folded into rollups now, which the read takes instead.
        let waiting: HashSet<&Key> = keys.iter().collect();
        kept.retain(|key, _| waiting.contains(key));
        // A batch gone from the store meanwhile (pruned) is left out, as a fresh read would.
        Ok(keys.iter().filter_map(|k| kept.get(k).cloned()).collect())
    }

    /// How many batches are kept (the `/metrics` refresh logs it at debug level).
    pub fn kept(&self) -> usize {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
