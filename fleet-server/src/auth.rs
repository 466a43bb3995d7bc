//! Credentials: operator API tokens with roles, one-time enrollment tokens, device credentials.
//!
//! Every secret is 256 random bits shown once and stored only as its SHA-256. A slow password hash
//! buys nothing for secrets that cannot be guessed, and a fast one keeps per-request checks cheap.
//! Device credentials are also stored in Mosquitto's PBKDF2 format, because an external broker
//! must check the same password without the server ever keeping it.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// What an operator token may do; each role includes the ones below it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also pushes releases, enrolls devices, changes desired state and rollouts.
    Operator,
    /// Also creates and revokes operator tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The kind of a secret, visible in its prefix so a leaked one is recognisable (secret scanners)
/// and a device token can never be mistaken for an operator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    Operator,
    Enrollment,
    Device,
}

impl SecretKind {
    fn prefix(self) -> &'static str {
        match self {
            SecretKind::Operator => "efo_",
            SecretKind::Enrollment => "efe_",
            SecretKind::Device => "efd_",
        }
    }

    pub fn of(secret: &str) -> Option<Self> {
        [
            SecretKind::Operator,
            SecretKind::Enrollment,
            SecretKind::Device,
        ]
        .into_iter()
        .find(|kind| secret.starts_with(kind.prefix()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the system random generator failed; cannot make a secret")]
pub struct RandomError;

pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomError)?;
    Ok(bytes)
}

/// A new secret of `kind`: its prefix and 64 hex digits.
pub fn new_secret(kind: SecretKind) -> Result<String, RandomError> {
    Ok(format!(
        "{}{}",
        kind.prefix(),
        hex::encode(random_bytes::<32>()?)
    ))
}

/// How a secret is stored and looked up.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, secret.as_bytes()))
}

/// Mosquitto's password-file hash (`$7$` = PBKDF2-HMAC-SHA512, as `mosquitto_passwd` writes).
pub fn mosquitto_hash(password: &str) -> Result<String, RandomError> {
    const ITERATIONS: u32 = 101;
    let salt = random_bytes::<12>()?;
    Ok(mosquitto_hash_with(password, &salt, ITERATIONS))
}

fn mosquitto_hash_with(password: &str, salt: &[u8], iterations: u32) -> String {
    use aws_lc_rs::pbkdf2;
    let mut out = [0u8; 64];
    let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        rounds,
        salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_unique_and_recognised() {
        let a = new_secret(SecretKind::Device).unwrap();
        let b = new_secret(SecretKind::Device).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(SecretKind::of(&a), Some(SecretKind::Device));
        assert_eq!(
            SecretKind::of(&new_secret(SecretKind::Operator).unwrap()),
            Some(SecretKind::Operator)
        );
        assert_eq!(SecretKind::of("Bearer x"), None);
        assert_ne!(secret_hash(&a), secret_hash(&b));
    }

    #[test]
    fn mosquitto_hash_has_mosquittos_shape() {
        let h = mosquitto_hash("secret").unwrap();
        let parts: Vec<_> = h.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "101"]);
        assert_eq!(parts[3].len(), 16); // 12-byte salt
        assert_eq!(parts[4].len(), 88); // 64-byte SHA-512 output
        assert_ne!(h, mosquitto_hash("secret").unwrap(), "salted");
        // Deterministic for a given salt; checked against Mosquitto itself in tests/mqtt_mosquitto.rs.
        assert_eq!(
            mosquitto_hash_with("secret", b"0123456789ab", 101),
            mosquitto_hash_with("secret", b"0123456789ab", 101)
        );
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
