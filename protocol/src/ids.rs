//! Validated identifiers. They are embedded in MQTT topics, file paths and SQL, so they are checked
//! once at the edge of the system and refused (never sanitized) when they could mean something else
//! there: `+` and `#` are MQTT wildcards, `/` is a topic or path separator, NUL ends C strings.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

const MAX_ID_LEN: usize = 64;

/// A device's identity: `[A-Za-z0-9._-]{1,64}`, and neither `.` nor `..` (they would name a
/// directory on disk).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        let chars_ok = id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if id.is_empty() || id.len() > MAX_ID_LEN || !chars_ok || id == "." || id == ".." {
            return Err(Error::InvalidDeviceId { id });
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A model's name as it appears in target paths (`models/<name>/<version>/model.onnx`) and URLs:
/// `[a-z][a-z0-9_-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

impl ModelName {
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        let first_ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
        let rest_ok = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
        if !first_ok || !rest_ok || name.len() > MAX_ID_LEN {
            return Err(Error::InvalidModelName { name });
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message's unique id, used by every consumer to de-duplicate QoS 1 redeliveries and retained
/// replays: `[A-Za-z0-9_-]{1,64}`. Producers make it from random bytes they own ([`MessageId::from_random`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(String);

impl MessageId {
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        let ok = id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if id.is_empty() || id.len() > MAX_ID_LEN || !ok {
            return Err(Error::InvalidMessageId { id });
        }
        Ok(Self(id))
    }

    /// 128 random bits as 32 lowercase hex digits. The caller supplies the randomness so that this
    /// crate stays deterministic under test.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        let mut id = String::with_capacity(32);
        for b in bytes {
            id.push_str(&format!("{b:02x}"));
        }
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = Error;
            fn try_from(value: String) -> Result<Self, Error> {
                Self::new(value)
            }
        }
        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }
    )*};
}
string_newtype_impls!(DeviceId, ModelName, MessageId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_with_mqtt_wildcards_separators_or_nul_are_refused_not_sanitized() {
        for bad in [
            "", "+", "#", "a/b", "dev+1", "dev#", "a\0b", ".", "..", "dev ice", "é",
        ] {
            assert_eq!(
                DeviceId::new(bad),
                Err(Error::InvalidDeviceId { id: bad.into() }),
                "{bad:?}"
            );
        }
        assert!(DeviceId::new("x".repeat(65)).is_err());
    }

    #[test]
    fn ordinary_device_ids_are_accepted_unchanged() {
        for good in ["a", "pump-17", "site_3.gw-01", &"x".repeat(64)] {
            assert_eq!(DeviceId::new(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn model_names_must_be_lowercase_path_safe() {
        assert!(ModelName::new("churn").is_ok());
        assert!(ModelName::new("vision_v2-small").is_ok());
        for bad in ["", "Churn", "1churn", "../x", "a/b", "a.b"] {
            assert!(ModelName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn device_id_deserialization_validates() {
        let err = serde_json::from_str::<DeviceId>("\"a/b\"").unwrap_err();
        assert!(err.to_string().contains("invalid device id"), "{err}");
    }

    #[test]
    fn message_id_from_random_is_hex() {
        let id = MessageId::from_random([0xab; 16]);
        assert_eq!(id.as_str(), "ab".repeat(16));
        assert!(MessageId::new(id.as_str()).is_ok());
    }
}
