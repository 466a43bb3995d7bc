//! Signed model updates on The Update Framework (TUF 1.x), built on awslabs `tough`.
//!
//! - [`keys`]: the operator's ed25519 keys: generated on the operator's machine, private halves
//!   written 0600 as PKCS#8 PEM and refused when another user could read them.
//!
//! Test with `cargo test -p edgefleet-tuf`.

use std::path::PathBuf;

pub mod keys;

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
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
