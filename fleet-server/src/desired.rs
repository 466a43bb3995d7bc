//! What each device should run. The only writer of desired state: the operator's `PUT
//! /devices/{id}/desired` and the rollout engine both come here. The signed targets are read
//! once per batch of changes ([`Catalog`]), not once per device.
//!
//! Deciding the new list of models is plain logic ([`with_model`], [`Catalog::resolve`]); only
//! [`assign`] touches the store, the signer and the broker.

use edgefleet_protocol::message::{Desired, DesiredModel, SCHEMA_VERSION};
use edgefleet_protocol::shadow::{DesiredShadow, SlotMode, to_ppm};
use edgefleet_protocol::target::parse_target_name;
use edgefleet_protocol::{DeviceId, MessageId};

use crate::state::Shared;
use crate::store::StoreError;
use crate::tufhost::{HostError, SignedModel, TufHost};

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("{model} {version} is not a signed target; push it first (fleetctl push)")]
    NotSigned {
        index: usize,
        model: String,
        version: String,
    },
    #[error("model {model} is listed twice")]
    ListedTwice { index: usize, model: String },
    #[error("device {0} not found")]
    UnknownDevice(DeviceId),
    #[error("signing desired state returned nothing")]
    NothingSigned,
    #[error("the random generator failed")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Host(#[from] HostError),
}

impl DesiredError {
    /// The request field at fault, for errors the caller can fix.
    pub fn field(&self) -> Option<String> {
        match self {
            DesiredError::NotSigned { index, .. } | DesiredError::ListedTwice { index, .. } => {
                Some(format!("models[{index}]"))
            }
            _ => None,
        }
    }
}

/// One model a device should run.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub model: String,
    pub version: String,
    /// The rollout that set it, told to the device so its events name the rollout.
    pub rollout: Option<String>,
    /// A challenger to run beside it in the shadow slot.
    pub shadow: Option<WantedShadow>,
}

/// A version a device should run in a model's shadow slot, on `share` of its requests within
/// `max_cpu_share` of one core.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedShadow {
    pub version: String,
    pub share: f64,
    pub max_cpu_share: f64,
    /// Whether the challenger answers its share itself (a split) or only a copy (a shadow).
    pub mode: SlotMode,
}

/// The signed model targets, read once.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    signed: Vec<SignedModel>,
}

impl Catalog {
    pub async fn load(tuf: &TufHost) -> Result<Self, HostError> {
        Ok(Self {
            signed: tuf.models().await?,
        })
    }

    /// The desired models for `wanted`, each pointing at its artifact under `public_url`.
    pub fn resolve(
        &self,
        wanted: &[Wanted],
        public_url: &str,
    ) -> Result<Vec<DesiredModel>, DesiredError> {
        let mut models: Vec<DesiredModel> = Vec::new();
        for (index, w) in wanted.iter().enumerate() {
            let signed = |version: &str| {
                self.signed
                    .iter()
                    .find(|m| {
                        m.meta.model.as_str() == w.model && m.meta.version.to_string() == version
                    })
                    .ok_or_else(|| DesiredError::NotSigned {
                        index,
                        model: w.model.clone(),
                        version: version.to_owned(),
                    })
            };
            let found = signed(&w.version)?;
            if models.iter().any(|m| m.model == found.meta.model) {
                return Err(DesiredError::ListedTwice {
                    index,
                    model: w.model.clone(),
                });
            }
            let shadow = match &w.shadow {
                Some(s) => {
                    let challenger = signed(&s.version)?;
                    Some(DesiredShadow {
                        target: challenger.name.clone(),
                        artifact_urls: vec![artifact_url(public_url, challenger)],
                        share_ppm: to_ppm(s.share),
                        max_cpu_ppm: to_ppm(s.max_cpu_share),
                        mode: s.mode,
                    })
                }
                None => None,
            };
            models.push(DesiredModel {
                shadow,
                model: found.meta.model.clone(),
                target: found.name.clone(),
                artifact_urls: vec![artifact_url(public_url, found)],
                rollout: w.rollout.clone(),
            });
        }
        Ok(models)
    }
}

/// Where a device downloads a signed target: its consistent-snapshot name under the server.
fn artifact_url(public_url: &str, signed: &SignedModel) -> String {
    let (dir, file) = signed.name.rsplit_once('/').unwrap_or(("", &signed.name));
    format!("{public_url}/tuf/targets/{dir}/{}.{file}", signed.sha256)
}

/// A device's desired models with `model` set to `version` (tagged with `rollout`, with
/// `shadow` beside it), or removed when `version` is `None`; its other models stay as they are,
/// shadows included.
pub fn with_model(
    current: Option<&Desired>,
    model: &str,
    version: Option<&str>,
    rollout: Option<&str>,
    shadow: Option<&WantedShadow>,
) -> Vec<Wanted> {
    let mut wanted: Vec<Wanted> = current
        .into_iter()
        .flat_map(|d| &d.models)
        .filter(|m| m.model.as_str() != model)
        .filter_map(|m| {
            let (_, version) = parse_target_name(&m.target).ok()?;
            Some(Wanted {
                model: m.model.to_string(),
                version: version.to_string(),
                rollout: m.rollout.clone(),
                shadow: m.shadow.as_ref().and_then(|s| {
                    let (_, version) = parse_target_name(&s.target).ok()?;
                    Some(WantedShadow {
                        version: version.to_string(),
                        share: s.share(),
                        max_cpu_share: s.max_cpu_share(),
                        mode: s.mode,
                    })
                }),
            })
        })
        .collect();
    if let Some(version) = version {
        wanted.push(Wanted {
            model: model.to_owned(),
            version: version.to_owned(),
            rollout: rollout.map(str::to_owned),
            shadow: shadow.cloned(),
        });
    }
    wanted
}

/// Sets `id`'s desired models, then stores, signs and publishes them.
pub async fn assign(
    state: &Shared,
    catalog: &Catalog,
    id: &DeviceId,
    wanted: &[Wanted],
) -> Result<Desired, DesiredError> {
    change(state, catalog, id, |_| wanted.to_vec()).await
}

/// Sets one model of a device's desired state, keeping its other models; `version` `None`
/// removes the model. Returns the new desired revision.
pub async fn set_model_version(
    state: &Shared,
    catalog: &Catalog,
    device: &DeviceId,
    model: &str,
    version: Option<&str>,
    rollout: Option<&str>,
    shadow: Option<&WantedShadow>,
) -> Result<u64, DesiredError> {
    let desired = change(state, catalog, device, |current| {
        with_model(current, model, version, rollout, shadow)
    })
    .await?;
    Ok(desired.revision)
}

/// Replaces `id`'s desired models by what `wanted` makes of its current ones, then stores, signs
/// and publishes them. The device is read once, under its lock: one change at a time per device,
/// so its revisions never race and a change to one model never loses a concurrent change to
/// another.
async fn change(
    state: &Shared,
    catalog: &Catalog,
    id: &DeviceId,
    wanted: impl FnOnce(Option<&Desired>) -> Vec<Wanted>,
) -> Result<Desired, DesiredError> {
    let _guard = state.desired_locks.of(id).lock().await;
    let device = state
        .store
        .device(id)
        .await?
        .ok_or_else(|| DesiredError::UnknownDevice(id.clone()))?;
    let models = catalog.resolve(&wanted(device.desired.as_ref()), &state.config.public_url())?;
    let mut random = [0u8; 16];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| DesiredError::Random)?;
    let desired = Desired {
        schema: SCHEMA_VERSION,
        id: MessageId::from_random(random),
        device: id.clone(),
        revision: device.desired_revision + 1,
        issued_at_unix: state.clock.unix().max(0) as u64,
        models,
    };
    // Signed before it is stored: a desired state the server cannot sign is never recorded as
    // wanted (devices would not act on it).
    let signed = state
        .tuf
        .sign_desired(vec![desired.clone()])
        .await?
        .pop()
        .map(|(_, bytes)| bytes)
        .ok_or(DesiredError::NothingSigned)?;
    state.store.set_desired(&desired).await?;
    // Stored first: if the broker is away, the republisher sends it after reconnecting.
    if let Err(e) = state.mqtt.publish_desired(id, signed).await {
        tracing::warn!(device = %id, error = %e, "desired state stored; publishing waits for the broker");
    }
    Ok(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_protocol::ModelName;

    fn desired(models: &[(&str, &str, Option<&str>)]) -> Desired {
        Desired {
            schema: SCHEMA_VERSION,
            id: MessageId::from_random([7; 16]),
            device: DeviceId::new("d1").unwrap(),
            revision: 3,
            issued_at_unix: 0,
            models: models
                .iter()
                .map(|(model, version, rollout)| DesiredModel {
                    shadow: None,
                    model: ModelName::new(*model).unwrap(),
                    target: format!("models/{model}/{version}/model.onnx"),
                    artifact_urls: vec![],
                    rollout: rollout.map(str::to_owned),
                })
                .collect(),
        }
    }

    fn wanted(model: &str, version: &str, rollout: Option<&str>) -> Wanted {
        Wanted {
            model: model.into(),
            version: version.into(),
            rollout: rollout.map(str::to_owned),
            shadow: None,
        }
    }

    #[test]
    fn setting_one_model_keeps_the_others_and_their_rollouts() {
        let current = desired(&[("churn", "1.0.0", Some("r1")), ("vision", "2.0.0", None)]);
        assert_eq!(
            with_model(Some(&current), "vision", Some("2.1.0"), Some("r2"), None),
            [
                wanted("churn", "1.0.0", Some("r1")),
                wanted("vision", "2.1.0", Some("r2"))
            ]
        );
        assert_eq!(
            with_model(Some(&current), "churn", None, None, None),
            [wanted("vision", "2.0.0", None)]
        );
        assert_eq!(
            with_model(None, "churn", Some("1.0.0"), None, None),
            [wanted("churn", "1.0.0", None)]
        );
    }

    #[test]
    fn unsigned_and_repeated_models_name_the_field() {
        let catalog = Catalog::default();
        let e = catalog
            .resolve(&[wanted("churn", "9.9.9", None)], "http://x")
            .unwrap_err();
        assert_eq!(e.field().as_deref(), Some("models[0]"));
        assert!(e.to_string().contains("push it first"), "{e}");
    }
}
