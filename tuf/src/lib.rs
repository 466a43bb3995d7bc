//! Signed model updates on The Update Framework (TUF 1.x), built on awslabs `tough`.
//!
//! - [`keys`]: the operator's keys: generated on the operator's machine, private halves written
//!   0600 as PKCS#8 PEM and refused when another user could read them.
//! - [`operator`]: what runs where the offline keys are: build and sign `root` (including
//!   rotations cross-signed by old and new keys) and `targets` (push a model version, revoke one).
//! - [`repo`]: the repository side the fleet server (or `fleetctl` for an offline repository)
//!   runs with the online keys: accept operator-signed metadata only if it verifies, then re-sign
//!   `snapshot` and `timestamp`; refresh them before they expire.
//! - [`client`]: the device side: the TUF client workflow over a narrow transport, metadata kept
//!   as the exact bytes received, downloads capped at their signed length, and Edgefleet's own
//!   rules on top (sequence floor, only current targets).
//! - [`verify`]: thresholds counted per distinct public key, on top of tough's checks.
//!
//! Time always comes in as an argument (`now`), so expiry is testable without a clock.
//! Test with `cargo test -p edgefleet-tuf`.

use std::path::PathBuf;

pub mod artifact;
pub mod client;
pub mod delegation;
pub mod desired;
pub mod keys;
pub mod limits;
pub mod metadata;
pub mod operator;
pub mod release_files;
pub mod repo;
pub mod search;
pub mod trusted;
pub mod verify;

/// Name of the TUF specification version we write.
pub const SPEC_VERSION: &str = "1.0.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite a key (move it away first)")]
    KeyExists { path: PathBuf },
    #[error(
        "{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}` before using it"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{path} is not an ed25519/ECDSA/RSA PKCS#8 private key: {detail}")]
    KeyFormat { path: PathBuf, detail: String },
    #[error("key generation failed: {0}")]
    KeyGeneration(String),
    #[error("malformed {what}: {detail}")]
    Malformed { what: String, detail: String },
    #[error("{role} metadata is not signed by a threshold of its keys: {detail}")]
    Signature { role: String, detail: String },
    #[error("{role} metadata version {found} refused: {expected}")]
    Version {
        role: String,
        found: u64,
        expected: String,
    },
    #[error("{role} metadata expired at {expires} (now {now}); re-sign it with a later expiry")]
    Expired {
        role: String,
        expires: String,
        now: String,
    },
    #[error("invalid root: {0}")]
    InvalidRoot(String),
    #[error("target {name:?}: {detail}")]
    Target { name: String, detail: String },
    #[error("target {name:?} is not in the current signed targets (revoked or never signed)")]
    UnknownTarget { name: String },
    #[error(
        "target {name:?} has sequence {sequence}, below this device's floor {floor} for model {model:?}: refusing a rollback"
    )]
    BelowFloor {
        name: String,
        model: String,
        sequence: u64,
        floor: u64,
    },
    #[error("signing {role} failed: {detail}")]
    Signing { role: String, detail: String },
    #[error("repository {location} is not initialised; run `fleetctl init` first")]
    NoRepository { location: String },
    #[error("repository {location} already exists")]
    RepositoryExists { location: String },
    #[error(
        "repository {repository} was changed by another writer meanwhile; nothing was written, \
         try again"
    )]
    Concurrent { repository: String },
    #[error("repository storage: {0}")]
    Storage(String),
    #[error("offline bundle: {0}")]
    Bundle(String),
    #[error("TUF update failed: {0}")]
    Update(String),
    #[error("download of target {name:?} failed: {detail}")]
    Download { name: String, detail: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn malformed(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Error::Malformed {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// Writes `bytes` to `path` crash-safely: temporary file in the same directory, fsync, rename,
/// fsync of the directory. A reader sees the old file or the new one, never a part.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<(), Error> {
    edgefleet_files::write_atomic(path, bytes, edgefleet_files::Visibility::Public)
        .map_err(Error::io(path))
}

/// Hex sha256 of `bytes`, as targets metadata writes it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

pub(crate) fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}
