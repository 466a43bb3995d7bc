//! Device messages sealed with the device's own key.
//!
//! On a broker without per-device topic rights (the embedded one), or one whose ACLs are
//! misconfigured, any enrolled device can publish on another's topics. So each device makes an
//! ed25519 key pair at enrollment, registers the public half with the server, and seals every
//! message it publishes: `EFS1 || signature (64 bytes) || message`, the signature over a
//! context string, the topic and the message. The server opens a message with the key of the
//! device its topic names; a message sealed by another key, or a plain one from a device that
//! has a key, is refused. Binding the topic stops a sealed message from being replayed onto
//! another channel or device; replays on the same topic are the message's own sequence number's
//! business (the server keeps only newer ones).
//!
//! The framing is binary rather than a JSON envelope: the message stays byte for byte what the
//! device wrote (no re-encoding before verification) at a cost of 68 bytes.

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// The first bytes of a sealed message. A plain message is JSON and starts with `{`.
pub const MAGIC: &[u8; 4] = b"EFS1";
pub const SIGNATURE_BYTES: usize = 64;
pub const PUBLIC_KEY_BYTES: usize = 32;
/// What is signed starts with this, so a device signature is never valid for anything else.
const CONTEXT: &[u8] = b"edgefleet-device-message-v1\0";
const _: () = assert!(
    MAGIC.len() + SIGNATURE_BYTES == 68,
    "the Truncated message says 68"
);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("a sealed message must be at least 68 bytes (magic and signature); this one is {0}")]
    Truncated(usize),
    #[error("the signature does not verify with the key registered for {0}")]
    BadSignature(String),
    #[error("not a device public key: {0}")]
    PublicKey(String),
    #[error("not a device private key (PKCS#8 ed25519): {0}")]
    PrivateKey(String),
    #[error("cannot make a key pair: {0}")]
    Generate(String),
}

/// A message as it came off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened<'a> {
    Sealed {
        signature: &'a [u8],
        message: &'a [u8],
    },
    Plain(&'a [u8]),
}

/// Splits a payload into signature and message, without verifying anything.
pub fn open(payload: &[u8]) -> Result<Opened<'_>, SealError> {
    let Some(rest) = payload.strip_prefix(MAGIC.as_slice()) else {
        return Ok(Opened::Plain(payload));
    };
    if rest.len() < SIGNATURE_BYTES {
        return Err(SealError::Truncated(payload.len()));
    }
    let (signature, message) = rest.split_at(SIGNATURE_BYTES);
    Ok(Opened::Sealed { signature, message })
}

fn signed_bytes(topic: &str, message: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(CONTEXT.len() + topic.len() + 1 + message.len());
    bytes.extend_from_slice(CONTEXT);
    bytes.extend_from_slice(topic.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(message);
    bytes
}

/// A device's registered public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_BYTES]);

impl PublicKey {
    /// From its hex form, as enrollment sends and the server stores it.
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(text).map_err(|e| SealError::PublicKey(e.to_string()))?;
        let bytes: [u8; PUBLIC_KEY_BYTES] = bytes.try_into().map_err(|b: Vec<u8>| {
            SealError::PublicKey(format!(
                "{} bytes, an ed25519 public key is {PUBLIC_KEY_BYTES}",
                b.len()
            ))
        })?;
        Ok(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Checks that `signature` seals `message` on `topic` with this key; `who` names the device
    /// in the error.
    pub fn verify(
        &self,
        topic: &str,
        signature: &[u8],
        message: &[u8],
        who: &str,
    ) -> Result<(), SealError> {
        UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(&signed_bytes(topic, message), signature)
            .map_err(|_| SealError::BadSignature(who.to_owned()))
    }
}

/// The device's private key.
pub struct DeviceKey(Ed25519KeyPair);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DeviceKey")
            .field(&self.public_key().to_hex())
            .finish()
    }
}

impl DeviceKey {
    /// A new key pair and its PKCS#8 document (what the device keeps, mode 0600).
    pub fn generate() -> Result<(Self, Vec<u8>), SealError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|e| SealError::Generate(e.to_string()))?;
        let pkcs8 = pkcs8.as_ref().to_vec();
        Ok((Self::from_pkcs8(&pkcs8)?, pkcs8))
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, SealError> {
        Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(Self)
            .map_err(|e| SealError::PrivateKey(e.to_string()))
    }

    pub fn public_key(&self) -> PublicKey {
        let mut bytes = [0u8; PUBLIC_KEY_BYTES];
        bytes.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(bytes)
    }

    /// The message sealed for `topic`.
    pub fn seal(&self, topic: &str, message: &[u8]) -> Vec<u8> {
        let signature = self.0.sign(&signed_bytes(topic, message));
        let mut sealed = Vec::with_capacity(MAGIC.len() + SIGNATURE_BYTES + message.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(signature.as_ref());
        sealed.extend_from_slice(message);
        sealed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const TOPIC: &str = "edgefleet/v1/devices/d1/reported";

    fn verify(key: &PublicKey, topic: &str, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        match open(payload)? {
            Opened::Sealed { signature, message } => {
                key.verify(topic, signature, message, "d1")?;
                Ok(message.to_vec())
            }
            Opened::Plain(_) => Err(SealError::BadSignature("plain".into())),
        }
    }

    #[test]
    fn a_sealed_message_opens_only_with_its_key_on_its_topic() {
        let (key, pkcs8) = DeviceKey::generate().unwrap();
        let public = key.public_key();
        let sealed = key.seal(TOPIC, b"{\"seq\":1}");
        assert_eq!(verify(&public, TOPIC, &sealed).unwrap(), b"{\"seq\":1}");
        // The same key from its stored form, and its public half through hex.
        let again = DeviceKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(again.public_key(), public);
        assert_eq!(PublicKey::from_hex(&public.to_hex()).unwrap(), public);

        // Another device's key, another topic, a changed byte: refused.
        let (other, _) = DeviceKey::generate().unwrap();
        assert!(verify(&other.public_key(), TOPIC, &sealed).is_err());
        assert!(verify(&public, "edgefleet/v1/devices/d1/events", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(verify(&public, TOPIC, &tampered).is_err());
        assert_eq!(
            open(b"EFS1short"),
            Err(SealError::Truncated(9)),
            "a cut-off seal is an error, not a plain message"
        );
        assert_eq!(open(b"{}").unwrap(), Opened::Plain(b"{}"));
        assert!(PublicKey::from_hex("abcd").is_err());
        assert!(PublicKey::from_hex("zz").is_err());
    }

    proptest! {
        #[test]
        fn no_payload_opens_under_a_key_that_did_not_seal_it(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let (key, _) = DeviceKey::generate().unwrap();
            prop_assert!(verify(&key.public_key(), TOPIC, &payload).is_err());
        }
    }
}
