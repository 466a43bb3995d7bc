//! The model metadata carried in the `custom` field of a signed TUF target.
//!
//! A target named `models/<model>/<version>/model.onnx` carries a [`ModelTargetMeta`]. Because it
//! sits inside the signed targets metadata, it is covered by the operator's signature: a device
//! trusts the interface, health check and baseline exactly as much as it trusts the artifact's
//! hash. The bulky parts (golden cases, baseline) are usually not inline but named by hash as
//! [`crate::release_files`], which extends the same trust to them once fetched and checked.

use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;
use crate::guard::GuardPolicy;
use crate::health::HealthSpec;
use crate::interface::ModelInterface;
use crate::lineage::Lineage;
use crate::release_files::{ReleaseFileKind, ReleaseFileRefs};
use crate::sampling::SamplingPolicy;
use crate::{Error, ModelName};

/// Where a model wants to run; `auto` lets the device measure the available runtimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimePreference {
    #[default]
    Auto,
    Tract,
    Onnxruntime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTargetMeta {
    pub model: ModelName,
    /// Semantic version, for people.
    pub version: semver::Version,
    /// Strictly increasing per model; what devices order releases by.
    pub sequence: u64,
    /// The rollback floor this release sets: once a device has committed it, it refuses any
    /// release of this model with a lower `sequence`. `fleetctl push` sets it by the operator's
    /// floor policy unless `release.json` gives it.
    #[serde(default)]
    pub min_sequence: u64,
    /// Set when the operator signed this release as a deliberate downgrade (its version is below
    /// that of a release already listed): the version it goes back from, recorded in the signed
    /// metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrade_from: Option<semver::Version>,
    pub interface: ModelInterface,
    pub health: HealthSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimePreference>,
    /// Where the release came from (training code, data, parameters, metrics), signed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    /// How the version is judged after its probation, for as long as it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardPolicy>,
    /// Which answers leave the device, and which go to review. Absent: the default
    /// ([`SamplingPolicy::default`]: 1 %, no features).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingPolicy>,
    /// The release's files named by hash. A named file's content is absent from the signed form
    /// (`health.cases` empty, `baseline` none) and present once fetched ([`Self::pending`]).
    #[serde(default, skip_serializing_if = "ReleaseFileRefs::is_empty")]
    pub files: ReleaseFileRefs,
}

impl ModelTargetMeta {
    /// The target name this metadata must be published under.
    pub fn target_name(&self) -> String {
        target_name(&self.model, &self.version)
    }

    pub fn validate(&self) -> Result<(), Error> {
        if self.min_sequence > self.sequence {
            return Err(Error::invalid(
                "model target",
                format!(
                    "min_sequence {} is above the release's own sequence {}",
                    self.min_sequence, self.sequence
                ),
            ));
        }
        self.interface.validate()?;
        self.files.validate()?;
        self.health.validate_settings(&self.interface)?;
        if !self.pending().contains(&ReleaseFileKind::Golden) {
            self.health.validate_cases(&self.interface)?;
        }
        if let Some(baseline) = &self.baseline {
            baseline.validate()?;
        }
        if let Some(lineage) = &self.lineage {
            lineage.validate()?;
        }
        if let Some(guard) = &self.guard {
            guard.validate(self.signed_accuracy())?;
        }
        if let Some(sampling) = &self.sampling {
            sampling.validate(&self.interface)?;
        }
        Ok(())
    }

    /// The accuracy the release claims from its own evaluation (`lineage.metrics.accuracy`):
    /// what the field's accuracy is held to.
    pub fn signed_accuracy(&self) -> Option<f64> {
        self.lineage.as_ref()?.metrics.get("accuracy").copied()
    }

    /// The files this release names whose content is not here yet: what a device must fetch
    /// before it can check or watch the model.
    pub fn pending(&self) -> Vec<ReleaseFileKind> {
        self.files
            .iter()
            .map(|(kind, _)| kind)
            .filter(|kind| match kind {
                ReleaseFileKind::Golden => self.health.cases.is_empty(),
                ReleaseFileKind::Baseline => self.baseline.is_none(),
                // For people (the registry, an audit); a device never needs it.
                ReleaseFileKind::Card => false,
            })
            .collect()
    }

    /// The metadata as signed: the content of every named file left out. Two copies of one
    /// release (as listed, as stored after its files were fetched) have the same signed form.
    pub fn signed_form(&self) -> ModelTargetMeta {
        let mut signed = self.clone();
        if self.files.golden.is_some() {
            signed.health.cases.clear();
        }
        if self.files.baseline.is_some() {
            signed.baseline = None;
        }
        signed
    }
}

pub use crate::target_name::{parse_target_name, target_name};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_round_trip() {
        let model = ModelName::new("churn").unwrap();
        let version = semver::Version::parse("2.1.0").unwrap();
        let name = target_name(&model, &version);
        assert_eq!(name, "models/churn/2.1.0/model.onnx");
        assert_eq!(parse_target_name(&name).unwrap(), (model, version));
    }

    #[test]
    fn path_tricks_are_refused() {
        for bad in [
            "models/../2.1.0/model.onnx",
            "/models/churn/2.1.0/model.onnx",
            "models/churn/2.1.0/../../etc/passwd",
            "models/churn%2F..%2F/2.1.0/model.onnx",
            "models/churn/2.1.0/model.onnx\0",
            "models/churn/..%2F/model.onnx",
            "models/churn/2.1/model.onnx",
            "models/churn/02.1.0/model.onnx",
            "models/churn/2.1.0/model.onnx/x",
        ] {
            assert!(parse_target_name(bad).is_err(), "{bad:?}");
        }
    }
}

/// `release.json` of a model directory (as `models/build.py` writes it): the fields of a release
/// that are not part of the model's interface, health check or baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseInfo {
    pub model: ModelName,
    pub version: semver::Version,
    pub sequence: u64,
    /// Absent: `fleetctl push` applies the operator's floor policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimePreference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingPolicy>,
}

/// Upper bound on `release.json` and `interface.json` of a model directory.
pub const MAX_RELEASE_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Upper bound on `health.json` and `baseline.json`, which become release files outside the
/// signed metadata: a sanity ceiling only; the operator's own bound is applied when signing
/// (`fleetctl push --max-release-file-mib`) and the device's when downloading.
pub const MAX_RELEASE_DATA_BYTES: usize = 256 * 1024 * 1024;

/// The contents of a model release directory: `release.json`, `interface.json`, `health.json`
/// and optionally `baseline.json`. The caller reads the files; this assembles and validates them
/// into the metadata a target carries, naming the file that is wrong.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseFiles<'a> {
    pub release: &'a [u8],
    pub interface: &'a [u8],
    pub health: &'a [u8],
    pub baseline: Option<&'a [u8]>,
}

impl ReleaseFiles<'_> {
    pub fn assemble(&self) -> Result<ModelTargetMeta, Error> {
        fn parse<T: serde::de::DeserializeOwned>(
            what: &'static str,
            bytes: &[u8],
        ) -> Result<T, Error> {
            let limit = match what {
                "health.json" | "baseline.json" => MAX_RELEASE_DATA_BYTES,
                _ => MAX_RELEASE_FILE_BYTES,
            };
            if bytes.len() > limit {
                return Err(Error::MessageTooLarge {
                    kind: what,
                    size: bytes.len(),
                    limit,
                });
            }
            serde_json::from_slice(bytes).map_err(|e| Error::malformed(what, e))
        }
        let release: ReleaseInfo = parse("release.json", self.release)?;
        let meta = ModelTargetMeta {
            model: release.model,
            version: release.version,
            sequence: release.sequence,
            min_sequence: release.min_sequence.unwrap_or(0),
            downgrade_from: None,
            interface: parse("interface.json", self.interface)?,
            health: parse("health.json", self.health)?,
            baseline: self
                .baseline
                .map(|b| parse("baseline.json", b))
                .transpose()?,
            runtime: release.runtime,
            lineage: release.lineage,
            guard: release.guard,
            sampling: release.sampling,
            files: ReleaseFileRefs::default(),
        };
        meta.validate()?;
        Ok(meta)
    }
}
