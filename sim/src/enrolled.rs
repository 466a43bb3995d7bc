//! Bulk-enrolled credentials: `edgefleet-sim enroll` registers and enrolls a configuration's
//! fleet once and saves what each device connects with; `edgefleet-sim run --enrolled` starts
//! from that file instead of enrolling. A broker that must learn the devices' credentials before
//! they connect (Mosquitto, whose password file `fleet-server mosquitto-config` regenerates) gets
//! that step between the two, and a connect storm is then measured on its own.

use std::path::{Path, PathBuf};

use edgefleet_protocol::DeviceId;
use edgefleet_sealed::DeviceKey;
use serde::{Deserialize, Serialize};

use crate::fleet::Enrolled;

/// The file format's version; a file of another version is refused, not guessed at.
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum EnrolledError {
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("{path}: not an enrolled-fleet file of format {FORMAT}: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error(
        "{path}: {detail}; the file was written for another configuration: run `edgefleet-sim enroll` with this one"
    )]
    Mismatch { path: PathBuf, detail: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolledFile {
    format: u32,
    devices: Vec<EnrolledEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolledEntry {
    id: String,
    group: String,
    /// The device's private key, PKCS#8, hex.
    key_pkcs8: String,
    credential: String,
    mqtt_url: String,
}

/// Writes the enrolled fleet (`devices` in the configuration's order, each with its group) to
/// `path`, readable by its owner only: it holds every device's key and broker credential.
pub fn save(path: &Path, devices: &[(Enrolled, String)]) -> Result<(), EnrolledError> {
    let file = EnrolledFile {
        format: FORMAT,
        devices: devices
            .iter()
            .map(|(device, group)| EnrolledEntry {
                id: device.id.to_string(),
                group: group.clone(),
                key_pkcs8: hex::encode(&device.pkcs8),
                credential: device.credential.clone(),
                mqtt_url: device.mqtt_url.clone(),
            })
            .collect(),
    };
    let io = |e: std::io::Error| EnrolledError::Io {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    let text = serde_json::to_vec(&file).map_err(|e| EnrolledError::Format {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut out, &text).map_err(io)?;
    out.sync_all().map_err(io)
}

/// Reads the enrolled fleet from `path` and checks it is the one `wanted` describes: the same
/// devices, in the same groups and order.
pub fn load(path: &Path, wanted: &[(DeviceId, String)]) -> Result<Vec<Enrolled>, EnrolledError> {
    let format = |detail: String| EnrolledError::Format {
        path: path.to_owned(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| EnrolledError::Io {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let file: EnrolledFile = serde_json::from_slice(&bytes).map_err(|e| format(e.to_string()))?;
    if file.format != FORMAT {
        return Err(format(format!("format {}", file.format)));
    }
    if file.devices.len() != wanted.len() {
        return Err(EnrolledError::Mismatch {
            path: path.to_owned(),
            detail: format!(
                "it holds {} devices and the configuration has {}",
                file.devices.len(),
                wanted.len()
            ),
        });
    }
    file.devices
        .into_iter()
        .zip(wanted)
        .map(|(entry, (id, group))| {
            if entry.id != id.as_str() || entry.group != *group {
                return Err(EnrolledError::Mismatch {
                    path: path.to_owned(),
                    detail: format!(
                        "it has {} in group {} where the configuration has {id} in group {group}",
                        entry.id, entry.group
                    ),
                });
            }
            let pkcs8 = hex::decode(&entry.key_pkcs8)
                .map_err(|e| format(format!("{}'s key: {e}", entry.id)))?;
            let key = DeviceKey::from_pkcs8(&pkcs8)
                .map_err(|e| format(format!("{}'s key: {e}", entry.id)))?;
            Ok(Enrolled {
                id: id.clone(),
                key,
                pkcs8,
                credential: entry.credential,
                mqtt_url: entry.mqtt_url,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::unwrap_used)]
    fn enrolled(id: &str) -> Enrolled {
        let (key, pkcs8) = DeviceKey::generate().unwrap();
        Enrolled {
            id: DeviceId::new(id).unwrap(),
            key,
            pkcs8,
            credential: format!("secret-of-{id}"),
            mqtt_url: "mqtt://127.0.0.1:1883".into(),
        }
    }

    #[allow(clippy::unwrap_used)]
    fn wanted(pairs: &[(&str, &str)]) -> Vec<(DeviceId, String)> {
        pairs
            .iter()
            .map(|(id, group)| (DeviceId::new(*id).unwrap(), (*group).to_owned()))
            .collect()
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_saved_fleet_loads_back_with_the_same_keys_and_credentials_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.json");
        let a = enrolled("sim-a-0");
        let b = enrolled("sim-b-0");
        let keys = [a.key.public_key(), b.key.public_key()];
        save(&path, &[(a, "a".into()), (b, "b".into())]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = load(&path, &wanted(&[("sim-a-0", "a"), ("sim-b-0", "b")])).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].key.public_key(), keys[0]);
        assert_eq!(loaded[1].key.public_key(), keys[1]);
        assert_eq!(loaded[1].credential, "secret-of-sim-b-0");
        assert_eq!(loaded[0].mqtt_url, "mqtt://127.0.0.1:1883");
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_file_for_another_fleet_or_in_another_format_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.json");
        save(&path, &[(enrolled("sim-a-0"), "a".into())]).unwrap();
        let err = load(&path, &wanted(&[("sim-a-0", "b")])).unwrap_err();
        assert!(matches!(err, EnrolledError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("sim-a-0 in group a"), "{err}");
        let err = load(&path, &wanted(&[("sim-a-0", "a"), ("sim-a-1", "a")])).unwrap_err();
        assert!(err.to_string().contains("holds 1 devices"), "{err}");
        std::fs::write(&path, br#"{"format":2,"devices":[]}"#).unwrap();
        let err = load(&path, &wanted(&[])).unwrap_err();
        assert!(matches!(err, EnrolledError::Format { .. }), "{err}");
        let err = load(&dir.path().join("missing.json"), &wanted(&[])).unwrap_err();
        assert!(matches!(err, EnrolledError::Io { .. }), "{err}");
    }
}
