//! The memory the local API may spend on request bodies at once, shared by every request (the
//! agent owns it; the HTTP layer reserves from it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ApiConfig;

/// The bytes of request bodies held at once (`api.max_inflight_body_bytes`) and how long one may
/// take to arrive (`api.body_read_seconds`). A request reserves its share before reading its
/// body and keeps it until its answer is made, decoded tensors included: 64 clients of an image
/// model cost the budget, not 64 images and their copies.
#[derive(Debug)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    read_within: Duration,
}

/// A request's share of the [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reserved {
    _permit: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    pub fn new(api: &ApiConfig) -> Self {
        let total = api.max_inflight_body_bytes.min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
            read_within: Duration::from_secs(api.body_read_seconds),
        }
    }

    /// Waits for `wanted` bytes of the budget (all of it, for a body larger than the budget).
    pub async fn reserve(&self, wanted: usize) -> Reserved {
        let n = u32::try_from(wanted.min(self.total)).unwrap_or(u32::MAX);
        Reserved {
            _permit: self.bytes.clone().acquire_many_owned(n).await.ok(),
        }
    }

    /// How long one body may take to arrive (`api.body_read_seconds`).
    pub fn read_within(&self) -> Duration {
        self.read_within
    }
}
