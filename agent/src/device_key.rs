//! The device's own ed25519 key (`<data_dir>/device.key`, PKCS#8, mode 0600): made at
//! enrollment, its public half registered with the server, and every message the device
//! publishes sealed with it (`edgefleet-sealed`), so no other device can speak in its name.

use std::path::{Path, PathBuf};

use edgefleet_sealed::DeviceKey;

use edgefleet_files::write_private;

/// The key file could not be made, read or moved into place.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {detail}")]
pub struct KeyFileError {
    pub path: PathBuf,
    pub detail: String,
}

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("device.key")
}

fn pending_path(data_dir: &Path) -> PathBuf {
    data_dir.join("device.key.pending")
}

fn file_error(path: &Path) -> impl FnOnce(String) -> KeyFileError + '_ {
    move |detail| KeyFileError {
        path: path.to_path_buf(),
        detail,
    }
}

/// A new key, kept aside until [`commit`]: an enrollment that fails leaves the key the
/// current link seals with untouched.
pub fn prepare(data_dir: &Path) -> Result<DeviceKey, KeyFileError> {
    let path = pending_path(data_dir);
    std::fs::create_dir_all(data_dir).map_err(|e| file_error(data_dir)(e.to_string()))?;
    let (key, pkcs8) = DeviceKey::generate().map_err(|e| file_error(&path)(e.to_string()))?;
    write_private(&path, &pkcs8).map_err(|e| file_error(&path)(e.to_string()))?;
    Ok(key)
}

/// Makes the prepared key the device's key (the server has registered it).
pub fn commit(data_dir: &Path) -> Result<(), KeyFileError> {
    let path = key_path(data_dir);
    std::fs::rename(pending_path(data_dir), &path).map_err(|e| file_error(&path)(e.to_string()))
}

/// The device's key; `None` for a device enrolled before keys (its messages go plain).
pub fn load(data_dir: &Path) -> Result<Option<DeviceKey>, KeyFileError> {
    let path = key_path(data_dir);
    match std::fs::read(&path) {
        Ok(pkcs8) => DeviceKey::from_pkcs8(&pkcs8)
            .map(Some)
            .map_err(|e| file_error(&path)(format!("{e}; enroll the device again"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_error(&path)(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_prepared_key_counts_only_once_committed_and_is_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        assert!(load(tmp.path()).unwrap().is_none());
        let key = prepare(tmp.path()).unwrap();
        assert!(load(tmp.path()).unwrap().is_none(), "not before commit");
        commit(tmp.path()).unwrap();
        let loaded = load(tmp.path()).unwrap().unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
        let mode = std::fs::metadata(key_path(tmp.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(key_path(tmp.path()), b"junk").unwrap();
        assert!(load(tmp.path()).is_err());
    }
}
