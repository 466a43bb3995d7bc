//! Operator keys for the TUF roles.
//!
//! A key is a pair of files: `NAME.pem` (PKCS#8 private key, mode 0600, never printed) and
//! `NAME.pub.json` (the TUF public key object, safe to share). Loading a private key refuses a
//! file that group or others can read, as ssh does, because a leaked `root` or `targets` key lets
//! whoever holds it ship models to the whole fleet.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use tough::key_source::KeySource;
use tough::schema::key::Key;
use tough::sign::{Sign, parse_keypair};

use crate::Error;

/// A freshly generated key pair, as written to disk.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub private_path: PathBuf,
    pub public_path: PathBuf,
    /// The TUF key id (hex sha256 of the canonical public key object).
    pub key_id: String,
}

/// Generates an ed25519 key pair as `dir/NAME.pem` and `dir/NAME.pub.json`. Fails, writing
/// nothing, if either file exists.
pub fn generate(dir: &Path, name: &str) -> Result<GeneratedKey, Error> {
    let private_path = dir.join(format!("{name}.pem"));
    let public_path = dir.join(format!("{name}.pub.json"));
    for path in [&private_path, &public_path] {
        if path.exists() {
            return Err(Error::KeyExists { path: path.clone() });
        }
    }
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|e| Error::KeyGeneration(e.to_string()))?;
    let signer = parse_keypair(pkcs8.as_ref()).map_err(|e| Error::KeyGeneration(e.to_string()))?;
    let public = signer.tuf_key();
    let key_id = key_id(&public)?;
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    write_new(&private_path, pem.as_bytes(), 0o600)?;
    let public_json =
        serde_json::to_vec_pretty(&public).map_err(|e| Error::KeyGeneration(e.to_string()))?;
    if let Err(e) = write_new(&public_path, &public_json, 0o644) {
        // Leave no half-made pair behind.
        let _ = std::fs::remove_file(&private_path);
        return Err(e);
    }
    Ok(GeneratedKey {
        private_path,
        public_path,
        key_id,
    })
}

/// The TUF key id of a public key.
pub fn key_id(key: &Key) -> Result<String, Error> {
    key.key_id()
        .map(|id| hex::encode(&id))
        .map_err(|e| Error::KeyGeneration(e.to_string()))
}

/// Reads a public key file written by [`generate`].
pub fn read_public(path: &Path) -> Result<Key, Error> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::KeyFormat {
        path: path.to_path_buf(),
        detail: format!("not a TUF public key object: {e}"),
    })
}

/// Loads a private key for signing, refusing one that other users can read.
pub fn load_signer(path: &Path) -> Result<Box<dyn Sign>, Error> {
    let meta = std::fs::metadata(path).map_err(Error::io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let der = match pem::parse(&bytes) {
        Ok(p) if p.tag() == "PRIVATE KEY" => p.into_contents(),
        Ok(p) => {
            return Err(Error::KeyFormat {
                path: path.to_path_buf(),
                detail: format!("PEM block is {:?}, expected \"PRIVATE KEY\"", p.tag()),
            });
        }
        Err(_) => bytes,
    };
    let signer = parse_keypair(&der).map_err(|e| Error::KeyFormat {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(Box::new(signer))
}

/// A [`KeySource`] over a PEM file, for tough's editors. The permission check runs on every use.
#[derive(Debug, Clone)]
pub struct PemKeySource {
    pub path: PathBuf,
}

#[async_trait::async_trait]
impl KeySource for PemKeySource {
    async fn as_sign(
        &self,
    ) -> Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(load_signer(&self.path)?)
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err("edgefleet never rewrites a private key file".into())
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::KeyExists {
                path: path.to_path_buf(),
            },
            _ => Error::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    file.write_all(bytes).map_err(Error::io(path))?;
    file.sync_all().map_err(Error::io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_0600_load_and_match_their_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate(dir.path(), "root").unwrap();
        let mode = std::fs::metadata(&key.private_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let signer = load_signer(&key.private_path).unwrap();
        let public = read_public(&key.public_path).unwrap();
        assert_eq!(signer.tuf_key(), public);
        assert_eq!(key_id(&public).unwrap(), key.key_id);
    }

    #[test]
    fn an_existing_key_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(dir.path(), "targets").unwrap();
        let before = std::fs::read(&first.private_path).unwrap();
        assert!(matches!(
            generate(dir.path(), "targets"),
            Err(Error::KeyExists { .. })
        ));
        assert_eq!(std::fs::read(&first.private_path).unwrap(), before);
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate(dir.path(), "snapshot").unwrap();
        std::fs::set_permissions(&key.private_path, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(matches!(
            load_signer(&key.private_path),
            Err(Error::KeyPermissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn garbage_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pem");
        write_new(&path, b"not a key", 0o600).unwrap();
        assert!(matches!(load_signer(&path), Err(Error::KeyFormat { .. })));
    }
}
