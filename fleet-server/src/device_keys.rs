//! Who sent a device message: the device whose registered key sealed it (`edgefleet-sealed`),
//! never the topic alone. Keys change only at enrollment, so they are cached; a key that fails
//! is fetched again once (the device may have enrolled anew), and "this device has no key" is
//! believed for [`NO_KEY_TTL`] only, so a device that enrolls with a key is held to it soon.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgefleet_protocol::DeviceId;
use edgefleet_sealed::{Opened, PublicKey};

use crate::store::Store;

/// How long a device's having no key is believed before the database is asked again.
pub const NO_KEY_TTL: Duration = Duration::from_secs(30);
/// Past this many devices the cache starts over (each entry is some 100 bytes).
const MAX_CACHED: usize = 500_000;

/// Why a message was not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotOpened {
    /// Not from the device its topic names, or malformed: dropped.
    Refused(String),
    /// The key could not be read: not acknowledged, so the broker delivers it again.
    Failed(String),
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    key: Option<PublicKey>,
    fetched: Instant,
}

#[derive(Debug, Default)]
pub struct DeviceKeys {
    cache: Mutex<HashMap<DeviceId, Cached>>,
}

impl DeviceKeys {
    /// The message in `payload` if `device` sent it on `topic`: sealed with its registered key,
    /// or plain from a device that registered none (enrolled before keys).
    pub async fn open<'a>(
        &self,
        store: &dyn Store,
        device: &DeviceId,
        topic: &str,
        payload: &'a [u8],
    ) -> Result<&'a [u8], NotOpened> {
        let opened =
            edgefleet_sealed::open(payload).map_err(|e| NotOpened::Refused(e.to_string()))?;
        let key = self.key(store, device, false).await?;
        match (opened, key) {
            (Opened::Plain(message), None) => Ok(message),
            (Opened::Plain(_), Some(_)) => Err(NotOpened::Refused(format!(
                "a plain message on {device}'s topic, but {device} seals its messages: not from it"
            ))),
            (Opened::Sealed { signature, message }, cached) => {
                let verifies = |key: Option<PublicKey>| {
                    key.is_some_and(|k| {
                        k.verify(topic, signature, message, device.as_str()).is_ok()
                    })
                };
                if verifies(cached) {
                    return Ok(message);
                }
                // Enrolled anew since (another key, or a first one)?
                let fresh = self.key(store, device, true).await?;
                if fresh != cached && verifies(fresh) {
                    return Ok(message);
                }
                Err(NotOpened::Refused(match fresh {
                    Some(_) => format!(
                        "the seal does not verify with {device}'s registered key: not from it"
                    ),
                    None => format!("a sealed message for {device}, which registered no key"),
                }))
            }
        }
    }

    async fn key(
        &self,
        store: &dyn Store,
        device: &DeviceId,
        refetch: bool,
    ) -> Result<Option<PublicKey>, NotOpened> {
        if !refetch
            && let Some(cached) = self.cache.lock().ok().and_then(|c| c.get(device).copied())
            && (cached.key.is_some() || cached.fetched.elapsed() < NO_KEY_TTL)
        {
            return Ok(cached.key);
        }
        let stored = store
            .device_public_key(device)
            .await
            .map_err(|e| NotOpened::Failed(e.to_string()))?;
        // A stored key that does not parse was never accepted at enrollment; treat the device
        // as sealing (nothing plain passes) with a key nothing verifies against.
        let key = match stored {
            None => None,
            Some(text) => Some(
                PublicKey::from_hex(&text)
                    .map_err(|e| NotOpened::Refused(format!("{device}'s stored key: {e}")))?,
            ),
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(
                device.clone(),
                Cached {
                    key,
                    fetched: Instant::now(),
                },
            );
        }
        Ok(key)
    }
}
