//! The operator's side: building and signing `root` and `targets` with offline keys.

use std::collections::HashMap;
use std::num::NonZeroU64;

use aws_lc_rs::rand::SystemRandom;
use edgefleet_protocol::release_files::ReleaseFileRefs;
use edgefleet_protocol::target::{ModelTargetMeta, parse_target_name};
use jiff::Timestamp;
use serde::Serialize;
use tough::editor::signed::SignedRole;
use tough::key_source::KeySource;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::Key;
use tough::schema::{Hashes, KeyHolder, Role, RoleKeys, RoleType, Root, Signed, Target, Targets};

use crate::verify::verify_distinct;
use crate::{Error, SPEC_VERSION, sha256};

/// How long each role's metadata stays valid, in days. Defaults: root 365, targets 90,
/// snapshot 7, timestamp 1 — offline roles long, online roles short so a freeze is noticed soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expiries {
    pub root_days: u32,
    pub targets_days: u32,
    pub snapshot_days: u32,
    pub timestamp_days: u32,
}

impl Default for Expiries {
    fn default() -> Self {
        Self {
            root_days: 365,
            targets_days: 90,
            snapshot_days: 7,
            timestamp_days: 1,
        }
    }
}

pub fn days_after(now: Timestamp, days: u32) -> Result<Timestamp, Error> {
    now.checked_add(jiff::SignedDuration::from_hours(i64::from(days) * 24))
        .map_err(|e| Error::malformed("expiry", e))
}

/// The public keys and threshold of one role.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    pub keys: Vec<Key>,
    pub threshold: u64,
}

/// Keys of all four top-level roles.
#[derive(Debug, Clone)]
pub struct RootSpec {
    pub root: RoleSpec,
    pub targets: RoleSpec,
    pub snapshot: RoleSpec,
    pub timestamp: RoleSpec,
}

/// Builds an unsigned root. Thresholds must be between 1 and the number of distinct keys.
pub fn build_root(spec: &RootSpec, version: u64, expires: Timestamp) -> Result<Root, Error> {
    let mut keys = HashMap::new();
    let mut roles = HashMap::new();
    for (role, role_spec) in [
        (RoleType::Root, &spec.root),
        (RoleType::Targets, &spec.targets),
        (RoleType::Snapshot, &spec.snapshot),
        (RoleType::Timestamp, &spec.timestamp),
    ] {
        let mut keyids = Vec::new();
        for key in &role_spec.keys {
            let id = key
                .key_id()
                .map_err(|e| Error::InvalidRoot(format!("key id of a {role} key: {e}")))?;
            if !keyids.contains(&id) {
                keyids.push(id.clone());
            }
            keys.insert(id, key.clone());
        }
        let threshold = NonZeroU64::new(role_spec.threshold)
            .filter(|t| t.get() <= keyids.len() as u64)
            .ok_or_else(|| {
                Error::InvalidRoot(format!(
                    "{role} threshold {} must be between 1 and its {} distinct key(s)",
                    role_spec.threshold,
                    keyids.len()
                ))
            })?;
        roles.insert(
            role,
            RoleKeys {
                keyids,
                threshold,
                _extra: HashMap::new(),
            },
        );
    }
    Ok(Root {
        spec_version: SPEC_VERSION.to_string(),
        consistent_snapshot: true,
        version: nonzero(version, "root")?,
        expires,
        keys,
        roles,
        _extra: HashMap::new(),
    })
}

fn nonzero(v: u64, role: &str) -> Result<NonZeroU64, Error> {
    NonZeroU64::new(v).ok_or_else(|| Error::Version {
        role: role.to_string(),
        found: v,
        expected: "versions start at 1".into(),
    })
}

/// Serializes signed metadata the way it is published (pretty JSON and a newline, as tough does).
pub fn to_bytes<T: Serialize>(signed: &Signed<T>) -> Result<Vec<u8>, Error> {
    let mut buf = serde_json::to_vec_pretty(signed).map_err(|e| Error::malformed("metadata", e))?;
    buf.push(b'\n');
    Ok(buf)
}

/// Serializes signed metadata without whitespace: what the repository publishes for the online
/// roles every device fetches on every refresh (a third smaller than [`to_bytes`]).
pub fn to_compact_bytes<T: Serialize>(signed: &Signed<T>) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(signed).map_err(|e| Error::malformed("metadata", e))
}

/// Signs `role` with whichever of `keys` `holder` authorizes for it.
pub async fn sign_with<T: Role + Serialize + Clone>(
    role: T,
    holder: &Root,
    keys: &[Box<dyn KeySource>],
) -> Result<Signed<T>, Error> {
    let signed = SignedRole::new(
        role,
        &KeyHolder::Root(holder.clone()),
        keys,
        &SystemRandom::new(),
    )
    .await
    .map_err(|e| Error::Signing {
        role: T::TYPE.to_string(),
        detail: e.to_string(),
    })?;
    Ok(signed.signed().clone())
}

/// Signs a root with the keys of each root in `authorities` (for version 1: the new root itself;
/// for a rotation: the old root and the new one) and checks that every authority's threshold is
/// met by distinct keys.
pub async fn sign_root(
    root: &Root,
    authorities: &[&Root],
    keys: &[Box<dyn KeySource>],
) -> Result<Vec<u8>, Error> {
    let mut signatures = Vec::new();
    for authority in authorities {
        let signed = sign_with(root.clone(), authority, keys).await?;
        for sig in signed.signatures {
            if !signatures
                .iter()
                .any(|s: &tough::schema::Signature| s.keyid == sig.keyid)
            {
                signatures.push(sig);
            }
        }
    }
    let signed = Signed {
        signed: root.clone(),
        signatures,
    };
    for authority in authorities {
        verify_distinct(authority, &signed)?;
    }
    to_bytes(&signed)
}

/// A rotation: version + 1, new keys, signed by a threshold of the old root's keys and of the
/// new root's keys.
pub async fn rotate_root(
    old: &Root,
    spec: &RootSpec,
    expires: Timestamp,
    keys: &[Box<dyn KeySource>],
) -> Result<Vec<u8>, Error> {
    let new = build_root(spec, old.version.get() + 1, expires)?;
    sign_root(&new, &[old, &new], keys).await
}

/// An empty targets role.
pub fn empty_targets(version: u64, expires: Timestamp) -> Result<Targets, Error> {
    let mut targets = Targets::new(
        SPEC_VERSION.to_string(),
        nonzero(version, "targets")?,
        expires,
    );
    targets.delegations = None;
    Ok(targets)
}

/// Largest `spec` string a target may carry, checked before it is parsed.
pub const MAX_SPEC_BYTES: usize = 4 * 1024 * 1024;

/// Custom fields of a model target. TUF signs the canonical JSON of `targets`, and canonical
/// JSON (OLPC) has no floating-point numbers, while the interface (scaling), health check
/// (golden vectors, tolerances) and baseline (shares) are full of them. So the integer and
/// string fields stay plain (`model`, `version`, `sequence`, `min_sequence`, readable by any TUF
/// tool) and the rest travels as one JSON document in the string field `spec`: signed exactly as
/// written, every float preserved bit for bit.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomFields {
    model: edgefleet_protocol::ModelName,
    version: semver::Version,
    sequence: u64,
    min_sequence: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    downgrade_from: Option<semver::Version>,
    spec: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    interface: edgefleet_protocol::interface::ModelInterface,
    health: edgefleet_protocol::health::HealthSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    baseline: Option<edgefleet_protocol::baseline::Baseline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runtime: Option<edgefleet_protocol::target::RuntimePreference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lineage: Option<edgefleet_protocol::lineage::Lineage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guard: Option<edgefleet_protocol::guard::GuardPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sampling: Option<edgefleet_protocol::sampling::SamplingPolicy>,
    #[serde(default, skip_serializing_if = "ReleaseFileRefs::is_empty")]
    files: ReleaseFileRefs,
}

/// The TUF target for a model artifact: length, sha256, and the model metadata as custom fields.
pub fn model_target(artifact: &[u8], meta: &ModelTargetMeta) -> Result<(String, Target), Error> {
    meta.validate()
        .map_err(|e| Error::malformed("model metadata", e))?;
    let spec = serde_json::to_string(&Spec {
        interface: meta.interface.clone(),
        health: meta.health.clone(),
        baseline: meta.baseline.clone(),
        runtime: meta.runtime,
        lineage: meta.lineage.clone(),
        guard: meta.guard.clone(),
        sampling: meta.sampling.clone(),
        files: meta.files.clone(),
    })
    .map_err(|e| Error::malformed("model metadata", e))?;
    if spec.len() > MAX_SPEC_BYTES {
        return Err(Error::malformed(
            "model metadata",
            format!(
                "{} bytes of interface/health/baseline exceed {MAX_SPEC_BYTES}; move the golden \
                 cases and baseline into release files (release_files::detach)",
                spec.len()
            ),
        ));
    }
    let fields = CustomFields {
        model: meta.model.clone(),
        version: meta.version.clone(),
        sequence: meta.sequence,
        min_sequence: meta.min_sequence,
        downgrade_from: meta.downgrade_from.clone(),
        spec,
    };
    let custom =
        match serde_json::to_value(&fields).map_err(|e| Error::malformed("model metadata", e))? {
            serde_json::Value::Object(map) => map.into_iter().collect(),
            _ => HashMap::new(),
        };
    let target = Target {
        length: artifact.len() as u64,
        hashes: Hashes {
            sha256: Decoded::<Hex>::from(sha256(artifact)),
            _extra: HashMap::new(),
        },
        custom,
        _extra: HashMap::new(),
    };
    Ok((meta.target_name(), target))
}

/// The model metadata of a target, checked: the name is canonical and matches the metadata.
pub fn target_meta(name: &str, target: &Target) -> Result<ModelTargetMeta, Error> {
    let custom: serde_json::Map<String, serde_json::Value> = target
        .custom
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    model_meta(name, custom)
}

/// [`target_meta`] from a target's `custom` object as the client parsed it.
pub fn model_meta(
    name: &str,
    custom: serde_json::Map<String, serde_json::Value>,
) -> Result<ModelTargetMeta, Error> {
    let bad = |detail: String| Error::Target {
        name: name.chars().take(200).collect(),
        detail,
    };
    let (model, version) = parse_target_name(name).map_err(|e| bad(e.to_string()))?;
    let fields: CustomFields =
        serde_json::from_value(serde_json::Value::Object(custom)).map_err(|e| {
            bad(format!(
                "custom fields are not Edgefleet model metadata: {e}"
            ))
        })?;
    if fields.spec.len() > MAX_SPEC_BYTES {
        return Err(bad(format!("spec is over {MAX_SPEC_BYTES} bytes")));
    }
    let spec: Spec =
        serde_json::from_str(&fields.spec).map_err(|e| bad(format!("spec is not valid: {e}")))?;
    let meta = ModelTargetMeta {
        model: fields.model,
        version: fields.version,
        sequence: fields.sequence,
        min_sequence: fields.min_sequence,
        downgrade_from: fields.downgrade_from,
        interface: spec.interface,
        health: spec.health,
        baseline: spec.baseline,
        runtime: spec.runtime,
        lineage: spec.lineage,
        guard: spec.guard,
        sampling: spec.sampling,
        files: spec.files,
    };
    meta.validate().map_err(|e| bad(e.to_string()))?;
    if meta.model != model || meta.version != version {
        return Err(bad(format!(
            "metadata says {} {}, the name says {model} {version}",
            meta.model, meta.version
        )));
    }
    Ok(meta)
}

/// The next targets role after adding (or replacing) one model target. A new release's
/// `sequence` must be above every other release of the same model still listed, so that devices
/// can order releases without trusting the network.
pub fn with_target(
    current: &Targets,
    name: &str,
    target: Target,
    expires: Timestamp,
) -> Result<Targets, Error> {
    let meta = target_meta(name, &target)?;
    for (other_name, other) in current.targets.iter() {
        if other_name.raw() == name {
            continue;
        }
        let Ok(other_meta) = target_meta(other_name.raw(), other) else {
            continue;
        };
        if other_meta.model == meta.model && other_meta.sequence >= meta.sequence {
            return Err(Error::Target {
                name: name.to_string(),
                detail: format!(
                    "sequence {} is not above {} of {} already listed; give the release a higher sequence",
                    meta.sequence,
                    other_meta.sequence,
                    other_name.raw()
                ),
            });
        }
    }
    let mut next = current.clone();
    next.version = nonzero(current.version.get() + 1, "targets")?;
    next.expires = expires;
    let target_name = tough::TargetName::new(name).map_err(|e| Error::Target {
        name: name.to_string(),
        detail: e.to_string(),
    })?;
    next.targets.insert(target_name, target);
    Ok(next)
}

/// The next targets role without `name`: revocation. Devices refuse a target no longer listed.
pub fn without_target(current: &Targets, name: &str, expires: Timestamp) -> Result<Targets, Error> {
    let mut next = current.clone();
    let before = next.targets.len();
    next.targets.retain(|n, _| n.raw() != name);
    if next.targets.len() == before {
        return Err(Error::UnknownTarget {
            name: name.to_string(),
        });
    }
    next.version = nonzero(current.version.get() + 1, "targets")?;
    next.expires = expires;
    Ok(next)
}

/// The next targets role keeping only the `keep` newest releases (by sequence) of `model`, and
/// the names it drops. A role re-fetched on every change of its model then weighs `keep`
/// releases, not the model's whole history. Devices keep serving what they installed; a dropped
/// release can no longer be installed or rolled back to, so keep at least the one a halted
/// rollout would go back to (2, with the default floor policy).
pub fn pruned(
    current: &Targets,
    model: &str,
    keep: usize,
    expires: Timestamp,
) -> Result<(Targets, Vec<String>), Error> {
    if keep == 0 {
        return Err(Error::Target {
            name: format!("models/{model}"),
            detail: "keep at least 1 release; revoke the model's delegation to drop it whole"
                .into(),
        });
    }
    let mut releases: Vec<(u64, String)> = current
        .targets
        .iter()
        .filter_map(|(name, t)| {
            let meta = target_meta(name.raw(), t).ok()?;
            (meta.model.as_str() == model).then(|| (meta.sequence, name.raw().to_string()))
        })
        .collect();
    releases.sort_by_key(|(sequence, _)| std::cmp::Reverse(*sequence));
    let dropped: Vec<String> = releases.into_iter().skip(keep).map(|(_, n)| n).collect();
    let mut next = current.clone();
    next.targets
        .retain(|n, _| !dropped.iter().any(|d| d == n.raw()));
    next.version = nonzero(current.version.get() + 1, "targets")?;
    next.expires = expires;
    Ok((next, dropped))
}

/// The same targets one version on, to sign with new targets keys after a rotation.
pub fn resigned(current: &Targets, expires: Timestamp) -> Result<Targets, Error> {
    let mut next = current.clone();
    next.version = nonzero(current.version.get() + 1, "targets")?;
    next.expires = expires;
    Ok(next)
}

/// The keys and threshold a root assigns to `role`, to carry them into a rotated root.
pub fn role_spec_of(root: &Root, role: RoleType) -> Result<RoleSpec, Error> {
    let keys = root
        .roles
        .get(&role)
        .ok_or_else(|| Error::InvalidRoot(format!("root has no {role} role")))?;
    Ok(RoleSpec {
        keys: keys
            .keyids
            .iter()
            .filter_map(|id| root.keys.get(id).cloned())
            .collect(),
        threshold: keys.threshold.get(),
    })
}

/// How a release's rollback floor (`min_sequence`) is set when `release.json` does not give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloorPolicy {
    /// The sequence of the listed release just below it in version order: a device can go back
    /// exactly one version (what a rollout's rollback after a halt needs) and never further.
    #[default]
    Previous,
    /// Its own sequence: once committed, nothing older is ever installed again.
    Own,
}

impl std::str::FromStr for FloorPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "previous" => Ok(Self::Previous),
            "own" => Ok(Self::Own),
            other => Err(format!(
                "floor policy {other:?}: expected \"previous\" (one release back allowed) or \"own\" (none)"
            )),
        }
    }
}

/// A release directory read for signing.
#[derive(Debug, Clone)]
pub struct ReleaseDir {
    pub artifact: Vec<u8>,
    pub meta: ModelTargetMeta,
    /// Whether `release.json` set `min_sequence` itself (else the floor policy does).
    pub min_sequence_given: bool,
    /// `MODEL_CARD.md`, when the directory has one: signed as the release's `card.md` file.
    pub card: Option<Vec<u8>>,
}

/// Settles what the operator's signature will say about a release beside the listed ones:
/// its floor, by `policy` unless given, and whether it is a downgrade. A release whose version
/// is below the newest listed one of its model is refused unless `allow_downgrade`; then the
/// version it goes back from is recorded in its signed metadata. Sequence order is checked by
/// [`with_target`].
pub fn settle_release(
    current: &Targets,
    release: &mut ReleaseDir,
    policy: FloorPolicy,
    allow_downgrade: bool,
) -> Result<(), Error> {
    let meta = &mut release.meta;
    let others: Vec<ModelTargetMeta> = current
        .targets
        .iter()
        .filter_map(|(name, t)| target_meta(name.raw(), t).ok())
        .filter(|m| m.model == meta.model && m.version != meta.version)
        .collect();
    let newest = others.iter().max_by(|a, b| a.version.cmp(&b.version));
    let just_below = others
        .iter()
        .filter(|m| m.version < meta.version)
        .max_by(|a, b| a.version.cmp(&b.version));
    if let Some(newest) = newest
        && meta.version < newest.version
    {
        if !allow_downgrade {
            return Err(Error::Target {
                name: meta.target_name(),
                detail: format!(
                    "version {} is below {} already listed: that is a downgrade; sign it on purpose \
                     with --allow-downgrade (it is recorded in the target)",
                    meta.version, newest.version
                ),
            });
        }
        meta.downgrade_from = Some(newest.version.clone());
    }
    if !release.min_sequence_given {
        meta.min_sequence = match (policy, just_below) {
            (FloorPolicy::Previous, Some(below)) => below.sequence.min(meta.sequence),
            _ => meta.sequence,
        };
    }
    meta.validate()
        .map_err(|e| Error::malformed("model metadata", e))
}

/// Reads a model release directory for signing ([`read_release_dir`], and whether it sets its
/// own floor).
pub fn read_release(dir: &std::path::Path) -> Result<ReleaseDir, Error> {
    let (artifact, meta) = read_release_dir(dir)?;
    let path = dir.join("release.json");
    let release: edgefleet_protocol::target::ReleaseInfo =
        serde_json::from_slice(&std::fs::read(&path).map_err(Error::io(&path))?)
            .map_err(|e| Error::malformed(path.display().to_string(), e))?;
    let card = match std::fs::read(dir.join("MODEL_CARD.md")) {
        Ok(bytes) if bytes.is_empty() => None,
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(dir.join("MODEL_CARD.md"))(e)),
    };
    Ok(ReleaseDir {
        artifact,
        meta,
        min_sequence_given: release.min_sequence.is_some(),
        card,
    })
}

/// Reads a model release directory (`model.onnx`, `release.json`, `interface.json`,
/// `health.json`, optional `baseline.json`, as `models/build.py` writes it) into the artifact
/// and its validated metadata.
pub fn read_release_dir(dir: &std::path::Path) -> Result<(Vec<u8>, ModelTargetMeta), Error> {
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read(&path).map_err(Error::io(path))
    };
    let baseline = match std::fs::read(dir.join("baseline.json")) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(Error::Io {
                path: dir.join("baseline.json"),
                source,
            });
        }
    };
    let meta = edgefleet_protocol::target::ReleaseFiles {
        release: &read("release.json")?,
        interface: &read("interface.json")?,
        health: &read("health.json")?,
        baseline: baseline.as_deref(),
    }
    .assemble()
    .map_err(|e| Error::malformed(format!("model directory {}", dir.display()), e))?;
    Ok((read("model.onnx")?, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(dir: &str, version: &str, sequence: u64, min_sequence: Option<u64>) -> ReleaseDir {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(dir);
        let (artifact, mut meta) = read_release_dir(&path).unwrap();
        meta.version = version.parse().unwrap();
        meta.sequence = sequence;
        meta.min_sequence = min_sequence.unwrap_or(0);
        ReleaseDir {
            artifact,
            meta,
            min_sequence_given: min_sequence.is_some(),
            card: None,
        }
    }

    fn listed(releases: &[&ReleaseDir]) -> Targets {
        let expires = Timestamp::from_second(4_000_000_000).unwrap();
        let mut targets = empty_targets(1, expires).unwrap();
        for r in releases {
            let (name, target) = model_target(&r.artifact, &r.meta).unwrap();
            targets = with_target(&targets, &name, target, expires).unwrap();
        }
        targets
    }

    #[test]
    fn pruning_keeps_the_newest_releases_of_one_model_and_no_other() {
        let a = release("churn/1.0.0", "1.0.0", 1, None);
        let b = release("churn/2.0.0", "2.0.0", 2, None);
        let c = release("churn/2.0.0", "2.1.0", 3, None);
        let mut iris = release("iris/1.0.0", "1.0.0", 1, None);
        iris.meta.min_sequence = 1;
        let current = listed(&[&a, &b, &c, &iris]);
        let expires = Timestamp::from_second(4_000_000_000).unwrap();
        let (next, dropped) = pruned(&current, "churn", 2, expires).unwrap();
        assert_eq!(dropped, ["models/churn/1.0.0/model.onnx"]);
        let mut left: Vec<&str> = next.targets.keys().map(|n| n.raw()).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "models/churn/2.0.0/model.onnx",
                "models/churn/2.1.0/model.onnx",
                "models/iris/1.0.0/model.onnx"
            ]
        );
        assert_eq!(next.version.get(), current.version.get() + 1);
        assert!(pruned(&current, "churn", 3, expires).unwrap().1.is_empty());
        assert!(pruned(&current, "churn", 0, expires).is_err());
    }

    #[test]
    fn the_default_floor_allows_one_version_back_and_own_allows_none() {
        let mut first = release("churn/1.0.0", "1.0.0", 1, None);
        settle_release(&listed(&[]), &mut first, FloorPolicy::Previous, false).unwrap();
        assert_eq!(
            first.meta.min_sequence, 1,
            "nothing below: its own sequence"
        );
        let mut second = release("churn/2.0.0", "2.0.0", 2, None);
        let current = listed(&[&first]);
        settle_release(&current, &mut second, FloorPolicy::Previous, false).unwrap();
        assert_eq!(second.meta.min_sequence, 1, "1.0.0 stays reachable");
        let mut strict = release("churn/2.0.0", "2.0.0", 2, None);
        settle_release(&current, &mut strict, FloorPolicy::Own, false).unwrap();
        assert_eq!(strict.meta.min_sequence, 2);
        // A release that is not the newest version is floored by the version just below it, not
        // by the newest sequence (a bad 3.0.0 pushed earlier must not block the way back).
        let mut bad = release("churn/2.0.0", "3.0.0-nan", 3, None);
        settle_release(
            &listed(&[&first, &second]),
            &mut bad,
            FloorPolicy::Previous,
            false,
        )
        .unwrap();
        assert_eq!(bad.meta.min_sequence, 2);
        // release.json's own value wins.
        let mut given = release("churn/2.0.0", "2.0.0", 2, Some(0));
        settle_release(&current, &mut given, FloorPolicy::Own, false).unwrap();
        assert_eq!(given.meta.min_sequence, 0);
    }

    #[test]
    fn a_lower_version_is_refused_unless_signed_as_a_downgrade_and_then_it_is_recorded() {
        let first = release("churn/1.0.0", "1.0.0", 1, None);
        let second = release("churn/2.0.0", "2.0.0", 2, None);
        let current = listed(&[&first, &second]);
        let mut back = release("churn/1.0.0", "1.0.1", 3, None);
        let err = settle_release(&current, &mut back, FloorPolicy::Previous, false).unwrap_err();
        assert!(err.to_string().contains("--allow-downgrade"), "{err}");
        assert_eq!(back.meta.downgrade_from, None);
        settle_release(&current, &mut back, FloorPolicy::Previous, true).unwrap();
        assert_eq!(back.meta.downgrade_from, Some("2.0.0".parse().unwrap()));
        // Recorded in what the operator signs, and read back from the target.
        let (name, target) = model_target(&back.artifact, &back.meta).unwrap();
        assert_eq!(
            target_meta(&name, &target).unwrap().downgrade_from,
            Some("2.0.0".parse().unwrap())
        );
        // Still ordered by sequence: a downgrade needs a higher sequence like any release.
        let (name, target) = model_target(&back.artifact, &back.meta).unwrap();
        let expires = Timestamp::from_second(4_000_000_000).unwrap();
        assert!(with_target(&current, &name, target, expires).is_ok());
    }
}
