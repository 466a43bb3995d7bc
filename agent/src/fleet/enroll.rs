//! Enrollment: a one-time token traded for the device's credential and where to reach the
//! fleet, kept in `<data_dir>/fleet.json`.

use super::*;

pub fn link_path(data_dir: &Path) -> PathBuf {
    data_dir.join("fleet.json")
}

/// The saved link, if this device was enrolled.
pub fn load_link(data_dir: &Path) -> Result<Option<FleetLink>, FleetError> {
    let path = link_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| FleetError::File {
                path,
                detail: format!("not a fleet link ({e}); enroll again"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FleetError::File {
            path,
            detail: e.to_string(),
        }),
    }
}

/// Trades a one-time enrollment token for this device's credential and saves the link.
pub async fn enroll(
    data_dir: &Path,
    device_id: &DeviceId,
    server_url: &str,
    token: &str,
) -> Result<FleetLink, FleetError> {
    let server_url = server_url.trim_end_matches('/');
    // A server (or something posing as one) that answers slowly or endlessly must not hang
    // enrollment: the whole exchange has a deadline, and the answer is small.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(ENROLL_TIMEOUT)
        .build()
        .map_err(|e| FleetError::Enroll(format!("HTTP client: {e}")))?;
    let key = crate::device_key::prepare(data_dir)?;
    let response = client
        .post(format!("{server_url}/api/v1/enroll"))
        .json(&EnrollRequest {
            device_id: device_id.to_string(),
            token: token.trim().to_owned(),
            public_key: Some(key.public_key().to_hex()),
        })
        .send()
        .await
        .map_err(|e| FleetError::Enroll(format!("cannot reach {server_url}: {e}")))?;
    let status = response.status();
    let mut response = response;
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FleetError::Enroll(format!("reading {server_url}'s answer: {e}")))?
    {
        if bytes.len() + chunk.len() > MAX_ENROLL_ANSWER_BYTES {
            return Err(FleetError::Enroll(format!(
                "{server_url}'s answer is over {MAX_ENROLL_ANSWER_BYTES} bytes; not an enrollment"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let why = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| "no details".into());
        return Err(FleetError::Enroll(format!(
            "{server_url} answered {status}: {why}"
        )));
    }
    let answer: EnrollResponse = serde_json::from_slice(&bytes).map_err(|e| {
        FleetError::Enroll(format!("{server_url}'s answer is not an enrollment: {e}"))
    })?;
    if answer.device_id != *device_id {
        return Err(FleetError::Enroll(format!(
            "{server_url} enrolled {} instead of {device_id}",
            answer.device_id
        )));
    }
    let link = FleetLink {
        device_id: device_id.clone(),
        credential: answer.credential,
        server_url: answer.server_url,
        mqtt_url: answer.mqtt_url,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| FleetError::File {
        path: data_dir.to_path_buf(),
        detail: e.to_string(),
    })?;
    crate::device_key::commit(data_dir)?;
    let path = link_path(data_dir);
    edgefleet_files::write_private(&path, &serde_json::to_vec_pretty(&link).unwrap_or_default())
        .map_err(|e| FleetError::File {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    Ok(link)
}

/// An enrollment answer is a few hundred bytes.
const MAX_ENROLL_ANSWER_BYTES: usize = 64 * 1024;

/// The whole enrollment exchange, connection to last byte.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);
