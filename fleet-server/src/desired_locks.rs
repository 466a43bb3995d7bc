//! The locks that serialise desired-state changes per device (`crate::desired`), held in the
//! server's state: a module of their own, which both can use.

use edgefleet_protocol::DeviceId;

/// Serialises desired-state changes per device, so that a device's revisions never race, while
/// changes to different devices go at once (a rollout's wave starts many together). Devices
/// share a fixed number of locks by hash: two that share one wait for each other, harmlessly.
#[derive(Debug)]
pub struct DesiredLocks([tokio::sync::Mutex<()>; 64]);

impl Default for DesiredLocks {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl DesiredLocks {
    pub fn of(&self, device: &DeviceId) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        device.as_str().hash(&mut hasher);
        &self.0[(hasher.finish() % self.0.len() as u64) as usize]
    }
}
