//! Desired state signed by the repository's timestamp role.
//!
//! Anyone who can publish on a device's `desired` topic (another device on a broker without
//! per-device rights, a broker operator, a forwarding bridge) could otherwise steer what the
//! device acts on: freeze it with a huge revision, downgrade it, or make it refuse the server's
//! next genuine message. So the server signs every desired state with the key(s) of the TUF
//! `timestamp` role — online keys it already holds — and the device verifies the signature against
//! its *trusted* root before anything moves. The device learns those keys, and every rotation of
//! them, through the TUF root chain; no new key needs distributing and no new trust anchor exists.
//!
//! The statement is a TUF-style `{"signed": …, "signatures": […]}` object whose `signed` part has
//! `_type: "edgefleet-desired"`. Its canonical JSON can never be mistaken for a timestamp (whose
//! `_type` is `timestamp`), nor a timestamp for it, so reusing the key cannot let one kind of
//! signed document stand in for the other. Thresholds are counted per distinct public key, as for
//! every other role ([`crate::verify`]).

use std::num::NonZeroU64;

use edgefleet_protocol::DeviceId;
use edgefleet_protocol::message::{Desired, SCHEMA_VERSION, WireMessage};
use serde::{Deserialize, Serialize};
use tough::schema::{Role, RoleType, Root, Signed};

use crate::Error;
use crate::verify::verify_distinct;

/// Largest signed desired state accepted: the message's own limit plus room for the signatures of
/// a threshold of keys.
pub const MAX_SIGNED_DESIRED_BYTES: usize = Desired::MAX_BYTES + 16 * 1024;

/// The one value `_type` may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum StatementType {
    #[serde(rename = "edgefleet-desired")]
    Desired,
}

/// The signed part of a desired-state statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredStatement {
    #[serde(rename = "_type")]
    kind: StatementType,
    pub desired: Desired,
}

impl DesiredStatement {
    pub fn new(desired: Desired) -> Self {
        Self {
            kind: StatementType::Desired,
            desired,
        }
    }
}

impl Role for DesiredStatement {
    /// Signed by the keys root names for `timestamp`.
    const TYPE: RoleType = RoleType::Timestamp;

    /// Desired state does not expire: freshness comes from its revision (the device acts only on
    /// a higher one) and from TUF's own timestamp for what it installs. tough's trait asks for a
    /// time; the issue time is the honest answer and nothing reads it.
    fn expires(&self) -> jiff::Timestamp {
        i64::try_from(self.desired.issued_at_unix)
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn version(&self) -> NonZeroU64 {
        NonZeroU64::new(self.desired.revision).unwrap_or(NonZeroU64::MIN)
    }

    fn filename(&self, _consistent_snapshot: bool) -> String {
        format!("desired/{}.json", self.desired.device)
    }
}

/// Serializes a signed statement as it travels (compact JSON).
pub fn encode(signed: &Signed<DesiredStatement>) -> Result<Vec<u8>, Error> {
    let bytes = serde_json::to_vec(signed).map_err(|e| Error::malformed("desired", e))?;
    if bytes.len() > MAX_SIGNED_DESIRED_BYTES {
        return Err(Error::malformed(
            "desired",
            format!(
                "{} bytes signed, over the {MAX_SIGNED_DESIRED_BYTES}-byte limit",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Why a desired-state message was not acted on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DesiredRefused {
    #[error("{size} bytes is over the {limit}-byte limit for a signed desired state")]
    TooLarge { size: usize, limit: usize },
    #[error("not a signed desired state: {0}")]
    Malformed(String),
    #[error("desired state schema {found} is not the supported {supported}; upgrade the agent")]
    Schema { found: u32, supported: u32 },
    #[error(
        "not signed by a threshold of the trusted timestamp keys ({0}); forged, or signed by a key \
         this device has not learned yet (a TUF refresh brings rotated keys)"
    )]
    Signature(String),
    #[error("desired state names device {named}, not this device ({own})")]
    OtherDevice { named: String, own: String },
}

/// Checks a desired-state message against the device's trusted root, before anything else reads
/// it: size first, then the envelope, then the signatures, then whom it is for.
pub fn verify(bytes: &[u8], root: &Root, own: &DeviceId) -> Result<Desired, DesiredRefused> {
    if bytes.len() > MAX_SIGNED_DESIRED_BYTES {
        return Err(DesiredRefused::TooLarge {
            size: bytes.len(),
            limit: MAX_SIGNED_DESIRED_BYTES,
        });
    }
    let signed: Signed<DesiredStatement> =
        serde_json::from_slice(bytes).map_err(|e| DesiredRefused::Malformed(e.to_string()))?;
    verify_distinct(root, &signed).map_err(|e| DesiredRefused::Signature(e.to_string()))?;
    let desired = signed.signed.desired;
    if desired.schema != SCHEMA_VERSION {
        return Err(DesiredRefused::Schema {
            found: desired.schema,
            supported: SCHEMA_VERSION,
        });
    }
    if desired.device != *own {
        return Err(DesiredRefused::OtherDevice {
            named: desired.device.to_string(),
            own: own.to_string(),
        });
    }
    Ok(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{PemKeySource, generate};
    use crate::operator::{RoleSpec, RootSpec, build_root, sign_with};
    use edgefleet_protocol::message::DesiredModel;
    use edgefleet_protocol::{MessageId, ModelName};
    use tough::key_source::KeySource;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: Root,
        timestamp: Vec<Box<dyn KeySource>>,
        targets: Vec<Box<dyn KeySource>>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = std::collections::HashMap::new();
        for name in ["root", "targets", "snapshot", "timestamp"] {
            let key = generate(dir.path(), name).unwrap();
            keys.insert(name, key);
        }
        let role = |name: &str| RoleSpec {
            keys: vec![crate::keys::read_public(&keys[name].public_path).unwrap()],
            threshold: 1,
        };
        let spec = RootSpec {
            root: role("root"),
            targets: role("targets"),
            snapshot: role("snapshot"),
            timestamp: role("timestamp"),
        };
        let root = build_root(
            &spec,
            1,
            jiff::Timestamp::from_second(4_000_000_000).unwrap(),
        )
        .unwrap();
        let source = |name: &str| -> Vec<Box<dyn KeySource>> {
            vec![Box::new(PemKeySource {
                path: keys[name].private_path.clone(),
            })]
        };
        Fixture {
            root,
            timestamp: source("timestamp"),
            targets: source("targets"),
            _dir: dir,
        }
    }

    fn desired(device: &str, revision: u64) -> Desired {
        Desired {
            schema: SCHEMA_VERSION,
            id: MessageId::from_random([7; 16]),
            device: DeviceId::new(device).unwrap(),
            revision,
            issued_at_unix: 1_800_000_000,
            models: vec![DesiredModel {
                shadow: None,
                model: ModelName::new("churn").unwrap(),
                target: "models/churn/2.0.0/model.onnx".into(),
                artifact_urls: vec!["http://127.0.0.1:1/a".into()],
                rollout: None,
            }],
        }
    }

    async fn signed(f: &Fixture, keys: &[Box<dyn KeySource>], d: Desired) -> Vec<u8> {
        encode(
            &sign_with(DesiredStatement::new(d), &f.root, keys)
                .await
                .unwrap(),
        )
        .unwrap()
    }

    /// Signs with any key, authorized or not (tough's signer refuses keys root does not list
    /// for the role): what a forger holding some other key would publish.
    async fn forged(key: &dyn KeySource, d: Desired) -> Vec<u8> {
        let statement = DesiredStatement::new(d);
        let signer = key.as_sign().await.unwrap();
        let sig = signer
            .sign(
                &statement.canonical_form().unwrap(),
                &aws_lc_rs::rand::SystemRandom::new(),
            )
            .await
            .unwrap();
        let keyid = signer.tuf_key().key_id().unwrap();
        encode(&Signed {
            signed: statement,
            signatures: vec![tough::schema::Signature {
                keyid,
                sig: sig.into(),
            }],
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_statement_signed_by_the_timestamp_key_verifies_for_its_device_only() {
        let f = fixture();
        // The helper below produces real signatures: by the right key, they verify.
        let by_hand = forged(&*f.timestamp[0], desired("d1", 3)).await;
        assert!(verify(&by_hand, &f.root, &DeviceId::new("d1").unwrap()).is_ok());
        let bytes = signed(&f, &f.timestamp, desired("d1", 3)).await;
        let own = DeviceId::new("d1").unwrap();
        assert_eq!(verify(&bytes, &f.root, &own).unwrap(), desired("d1", 3));
        let other = DeviceId::new("d2").unwrap();
        assert!(matches!(
            verify(&bytes, &f.root, &other),
            Err(DesiredRefused::OtherDevice { .. })
        ));
    }

    #[tokio::test]
    async fn a_desired_state_with_a_shadow_signs_as_canonical_json() {
        // Canonical JSON has no floating-point numbers: the shares travel as parts per million.
        let f = fixture();
        let mut d = desired("d1", 4);
        d.models[0].shadow = Some(edgefleet_protocol::shadow::DesiredShadow {
            target: "models/churn/3.0.0/model.onnx".into(),
            artifact_urls: vec!["http://127.0.0.1:1/b".into()],
            share_ppm: 100_000,
            max_cpu_ppm: 250_000,
            mode: edgefleet_protocol::shadow::SlotMode::Shadow,
        });
        let bytes = signed(&f, &f.timestamp, d.clone()).await;
        let own = DeviceId::new("d1").unwrap();
        assert_eq!(verify(&bytes, &f.root, &own).unwrap(), d);
    }

    #[tokio::test]
    async fn any_change_after_signing_breaks_the_signature() {
        let f = fixture();
        let bytes = signed(&f, &f.timestamp, desired("d1", 3)).await;
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["signed"]["desired"]["revision"] = u64::MAX.into();
        let tampered = serde_json::to_vec(&v).unwrap();
        let own = DeviceId::new("d1").unwrap();
        assert!(matches!(
            verify(&tampered, &f.root, &own),
            Err(DesiredRefused::Signature(_))
        ));
    }

    #[tokio::test]
    async fn a_key_of_another_role_does_not_sign_desired_state() {
        let f = fixture();
        // The operator's targets key is trusted, but not for this.
        let bytes = forged(&*f.targets[0], desired("d1", 3)).await;
        let own = DeviceId::new("d1").unwrap();
        assert!(matches!(
            verify(&bytes, &f.root, &own),
            Err(DesiredRefused::Signature(_))
        ));
    }

    #[tokio::test]
    async fn unsigned_plain_oversized_and_other_schema_messages_are_refused() {
        let f = fixture();
        let own = DeviceId::new("d1").unwrap();
        // The pre-signature wire form: a bare desired message.
        let plain = serde_json::to_vec(&desired("d1", 3)).unwrap();
        assert!(matches!(
            verify(&plain, &f.root, &own),
            Err(DesiredRefused::Malformed(_))
        ));
        let no_signatures = serde_json::to_vec(&Signed {
            signed: DesiredStatement::new(desired("d1", 3)),
            signatures: vec![],
        })
        .unwrap();
        assert!(matches!(
            verify(&no_signatures, &f.root, &own),
            Err(DesiredRefused::Signature(_))
        ));
        let huge = vec![b' '; MAX_SIGNED_DESIRED_BYTES + 1];
        assert!(matches!(
            verify(&huge, &f.root, &own),
            Err(DesiredRefused::TooLarge { .. })
        ));
        let mut future = desired("d1", 3);
        future.schema = SCHEMA_VERSION + 1;
        let bytes = signed(&f, &f.timestamp, future).await;
        assert!(matches!(
            verify(&bytes, &f.root, &own),
            Err(DesiredRefused::Schema { .. })
        ));
    }

    #[tokio::test]
    async fn a_signed_desired_state_is_not_a_timestamp_and_a_timestamp_is_not_desired_state() {
        let f = fixture();
        let bytes = signed(&f, &f.timestamp, desired("d1", 3)).await;
        assert!(
            serde_json::from_slice::<Signed<tough::schema::Timestamp>>(&bytes).is_err(),
            "a desired statement must not parse as timestamp metadata"
        );
        let timestamp = serde_json::json!({
            "signed": {"_type": "timestamp", "spec_version": "1.0.0", "version": 3,
                       "expires": "2096-01-01T00:00:00Z", "meta": {}},
            "signatures": []
        });
        let own = DeviceId::new("d1").unwrap();
        assert!(matches!(
            verify(&serde_json::to_vec(&timestamp).unwrap(), &f.root, &own),
            Err(DesiredRefused::Malformed(_))
        ));
    }
}
