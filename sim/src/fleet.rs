//! The simulator's HTTP side, as an operator and a device would use it: the registry's signed
//! versions (with their baselines, fetched from the TUF repository like any release file), and
//! bulk registration and enrollment of the simulated devices, each with its own key.

use std::collections::BTreeMap;
use std::sync::Arc;

use edgefleet_protocol::DeviceId;
use edgefleet_protocol::api::{
    AddDeviceRequest, DeviceEnrollment, EnrollRequest, EnrollResponse, ErrorBody,
};
use edgefleet_protocol::baseline::Baseline;
use edgefleet_sealed::DeviceKey;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::device::{Catalog, Release};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{what}: cannot reach {url}: {detail}")]
    Unreachable {
        what: String,
        url: String,
        detail: String,
    },
    #[error("{what}: {url} answered {status}: {detail}")]
    Refused {
        what: String,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: {url}'s answer is not what was asked for: {detail}")]
    Answer {
        what: String,
        url: String,
        detail: String,
    },
    #[error("device key: {0}")]
    Key(String),
}

#[derive(Debug, Clone)]
pub struct FleetApi {
    client: reqwest::Client,
    server_url: String,
    admin_token: String,
}

/// A simulated device the server now knows, with what it connects with.
#[derive(Debug)]
pub struct Enrolled {
    pub id: DeviceId,
    pub key: DeviceKey,
    /// The key's PKCS#8 document, for saving the fleet (`crate::enrolled`).
    pub pkcs8: Vec<u8>,
    pub credential: String,
    pub mqtt_url: String,
}

#[derive(Debug, Deserialize)]
struct Models {
    models: Vec<ModelVersions>,
}

#[derive(Debug, Deserialize)]
struct ModelVersions {
    model: String,
    versions: Vec<VersionView>,
}

#[derive(Debug, Deserialize)]
struct VersionView {
    version: semver::Version,
    sequence: u64,
    target: String,
    sha256: String,
    #[serde(default)]
    baseline: Option<FileView>,
}

#[derive(Debug, Deserialize)]
struct FileView {
    url: String,
}

impl FleetApi {
    pub fn new(server_url: &str, admin_token: &str) -> Result<Self, FleetError> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| FleetError::Unreachable {
                what: "HTTP client".into(),
                url: server_url.into(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            client,
            server_url: server_url.trim_end_matches('/').to_owned(),
            admin_token: admin_token.trim().to_owned(),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, FleetError> {
        let response = request.send().await.map_err(|e| FleetError::Unreachable {
            what: what.into(),
            url: url.into(),
            detail: e.to_string(),
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| FleetError::Unreachable {
                what: what.into(),
                url: url.into(),
                detail: e.to_string(),
            })?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(FleetError::Refused {
                what: what.into(),
                url: url.into(),
                status: status.as_u16(),
                detail,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| FleetError::Answer {
            what: what.into(),
            url: url.into(),
            detail: e.to_string(),
        })
    }

    /// Every signed version in the registry, with its baseline where the release has one.
    pub async fn catalog(&self) -> Result<Catalog, FleetError> {
        let url = format!("{}/api/v1/models", self.server_url);
        let models: Models = self
            .call(
                "the registry",
                self.client.get(&url).bearer_auth(&self.admin_token),
                &url,
            )
            .await?;
        let mut catalog = BTreeMap::new();
        for m in models.models {
            let model = edgefleet_protocol::ModelName::new(m.model.as_str()).map_err(|e| {
                FleetError::Answer {
                    what: "the registry".into(),
                    url: url.clone(),
                    detail: e.to_string(),
                }
            })?;
            for v in m.versions {
                let baseline = match &v.baseline {
                    Some(file) => {
                        let file_url = format!("{}{}", self.server_url, file.url);
                        let what = format!("the baseline of {}", v.target);
                        let baseline: Baseline = self
                            .call(
                                &what,
                                self.client.get(&file_url).bearer_auth(&self.admin_token),
                                &file_url,
                            )
                            .await?;
                        Some(Arc::new(baseline))
                    }
                    None => None,
                };
                catalog.insert(
                    v.target,
                    Release {
                        model: model.clone(),
                        version: v.version,
                        sequence: v.sequence,
                        sha256: v.sha256,
                        baseline,
                    },
                );
            }
        }
        Ok(catalog)
    }

    /// Registers a device in `group` and enrolls it with a key of its own.
    pub async fn enroll(&self, id: DeviceId, group: &str) -> Result<Enrolled, FleetError> {
        let url = format!("{}/api/v1/devices", self.server_url);
        let added: DeviceEnrollment = self
            .call(
                &format!("registering {id}"),
                self.client
                    .post(&url)
                    .bearer_auth(&self.admin_token)
                    .json(&AddDeviceRequest {
                        id: id.to_string(),
                        group: Some(group.to_owned()),
                        tags: BTreeMap::from([("simulated".to_owned(), "true".to_owned())]),
                        renew: false,
                    }),
                &url,
            )
            .await?;
        let (key, pkcs8) = DeviceKey::generate().map_err(|e| FleetError::Key(e.to_string()))?;
        let url = format!("{}/api/v1/enroll", self.server_url);
        let enrolled: EnrollResponse = self
            .call(
                &format!("enrolling {id}"),
                self.client.post(&url).json(&EnrollRequest {
                    device_id: id.to_string(),
                    token: added.enrollment_token,
                    public_key: Some(key.public_key().to_hex()),
                }),
                &url,
            )
            .await?;
        Ok(Enrolled {
            id,
            key,
            pkcs8,
            credential: enrolled.credential,
            mqtt_url: enrolled.mqtt_url,
        })
    }

    /// Enrolls every `(id, group)`, `concurrency` at a time, in the order given.
    pub async fn enroll_all(
        &self,
        devices: Vec<(DeviceId, String)>,
        concurrency: usize,
    ) -> Result<Vec<Enrolled>, FleetError> {
        futures::stream::iter(devices)
            .map(|(id, group)| async move { self.enroll(id, &group).await })
            .buffered(concurrency)
            .try_collect()
            .await
    }
}
