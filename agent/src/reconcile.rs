//! The reconcile decision, with no I/O: what a *verified* desired state asks of this device.
//!
//! The fleet link verifies a desired-state message's signature first
//! ([`edgefleet_tuf::desired::verify`]); only then does it call [`triage`] with what the device
//! runs and the last revision it acted on. When models must change, it refreshes TUF and calls
//! [`plan`] with the trusted targets, the device's floors and the candidates it already rejected.
//! The link then carries the plan out (download, install, report) and records `advance_to`.
//! Every decision here is a plain function, so the table tests below cover forged, replayed,
//! reordered, empty, below-floor and already-installed messages without a broker or a clock.

use edgefleet_protocol::ModelName;
use edgefleet_protocol::message::{Desired, DesiredModel, ReportedModel};
use edgefleet_tuf::client::{self, ModelTarget};

use crate::store::version_key;

/// The first look at a verified desired state.
#[derive(Debug, Clone, PartialEq)]
pub enum Triage {
    /// Older than a revision this device already acted on: a replayed or reordered message.
    /// Nothing moves.
    Stale { acted: u64 },
    /// Everything it names already runs: record the revision (when new) and report.
    Settled { advance_to: Option<u64> },
    /// These models must change; `first_time` is false when this revision was already acted on
    /// and only a transient failure is being retried.
    Needs {
        todo: Vec<DesiredModel>,
        first_time: bool,
        revision: u64,
    },
}

/// Compares a verified desired state with what runs. `acted` is the highest revision acted on.
pub fn triage(desired: &Desired, acted: u64, running: &[ReportedModel]) -> Triage {
    if desired.revision < acted {
        return Triage::Stale { acted };
    }
    let first_time = desired.revision > acted;
    let todo: Vec<DesiredModel> = desired
        .models
        .iter()
        .filter(|m| !serves(m, running) || shadow_work(m, running) != ShadowWork::Nothing)
        .cloned()
        .collect();
    if todo.is_empty() {
        return Triage::Settled {
            advance_to: first_time.then_some(desired.revision),
        };
    }
    Triage::Needs {
        todo,
        first_time,
        revision: desired.revision,
    }
}

/// Whether the device serves the desired model's target.
pub fn serves(wanted: &DesiredModel, running: &[ReportedModel]) -> bool {
    running.iter().any(|r| {
        r.model == wanted.model && r.active.as_ref().is_some_and(|a| a.target == wanted.target)
    })
}

/// What a desired model asks of its shadow slot, given what runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowWork {
    Nothing,
    /// Empty the slot: no challenger is wanted now (a shadow rollout ended, was halted, or
    /// promoted it).
    Drop,
    /// Put this challenger in the slot: a desired model for its target, planned and fetched
    /// like any other, then installed beside the champion rather than over it.
    Install(DesiredModel),
}

/// The shadow slot's part of a desired model. A challenger is installed only beside the
/// champion the same message names, once that serves; a challenger that *is* the champion
/// (promoted) needs no slot.
pub fn shadow_work(wanted: &DesiredModel, running: &[ReportedModel]) -> ShadowWork {
    let current = running
        .iter()
        .find(|r| r.model == wanted.model)
        .and_then(|r| r.shadow.as_ref())
        .map(|s| s.target.as_str());
    match &wanted.shadow {
        Some(s) if s.target != wanted.target => {
            if current == Some(s.target.as_str()) || !serves(wanted, running) {
                ShadowWork::Nothing
            } else {
                ShadowWork::Install(DesiredModel {
                    model: wanted.model.clone(),
                    target: s.target.clone(),
                    artifact_urls: s.artifact_urls.clone(),
                    rollout: wanted.rollout.clone(),
                    shadow: None,
                })
            }
        }
        _ if current.is_some() => ShadowWork::Drop,
        _ => ShadowWork::Nothing,
    }
}

/// The store's identity of a trusted target ([`version_key`]): what a refusal is remembered by.
pub fn candidate_key(target: &ModelTarget) -> String {
    version_key(&target.name, &target.sha256_hex, &target.meta)
}

/// One thing to do for one desired model.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Download, verify and install this trusted target.
    Install {
        wanted: DesiredModel,
        target: Box<ModelTarget>,
    },
    /// Final for this revision: report it as a rejected event.
    Refuse { wanted: DesiredModel, why: String },
}

/// What the device knows locally when it plans.
pub trait Local {
    /// The model's sequence floor (0 when it never ran).
    fn floor(&self, model: &ModelName) -> u64;
    /// Whether this device already rejected this signed target ([`version_key`]) for this
    /// model. The same file under new metadata is a new candidate.
    fn already_failed(&self, model: &ModelName, version_key: &str) -> bool;
    /// The largest artifact this device accepts, in bytes.
    fn max_artifact_bytes(&self) -> u64;
    /// The largest release file (golden cases, baseline) this device accepts, in bytes.
    fn max_release_file_bytes(&self) -> u64;
}

/// Decides each model of `todo` against the trusted targets (`trusted` looks a target name up in
/// freshly refreshed TUF metadata). A refusal on a revision already acted on (`first_time`
/// false) was reported then and is not repeated.
pub fn plan(
    todo: &[DesiredModel],
    first_time: bool,
    trusted: impl Fn(&str) -> Result<ModelTarget, String>,
    local: &dyn Local,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for wanted in todo {
        let refuse = |why: String| Step::Refuse {
            wanted: wanted.clone(),
            why,
        };
        let target = match trusted(&wanted.target) {
            Ok(t) if t.meta.model == wanted.model => t,
            Ok(t) => {
                if first_time {
                    steps.push(refuse(format!("target is for model {}", t.meta.model)));
                }
                continue;
            }
            Err(e) => {
                if first_time {
                    steps.push(refuse(e));
                }
                continue;
            }
        };
        if let Err(e) = client::admit(&target, local.floor(&wanted.model)) {
            if first_time {
                steps.push(refuse(e.to_string()));
            }
            continue;
        }
        // A retried revision does not re-install a candidate this device already rejected.
        if !first_time && local.already_failed(&wanted.model, &candidate_key(&target)) {
            continue;
        }
        let limit = local.max_artifact_bytes();
        if target.length > limit {
            steps.push(refuse(format!(
                "{} bytes is over this device's limits.max_artifact_bytes ({limit})",
                target.length
            )));
            continue;
        }
        let limit = local.max_release_file_bytes();
        let fetched = target.meta.pending();
        if let Some((kind, file)) = target
            .meta
            .files
            .iter()
            .find(|(kind, f)| fetched.contains(kind) && f.length > limit)
        {
            steps.push(refuse(format!(
                "its {kind} is {} bytes, over this device's limits.max_release_file_bytes \
                 ({limit})",
                file.length
            )));
            continue;
        }
        steps.push(Step::Install {
            wanted: wanted.clone(),
            target: Box::new(target),
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_protocol::message::{InstalledVersion, SCHEMA_VERSION, UpdateState};
    use edgefleet_protocol::target::ModelTargetMeta;
    use edgefleet_protocol::{DeviceId, MessageId};
    use edgefleet_tuf::desired::{self, DesiredRefused, DesiredStatement};
    use edgefleet_tuf::keys::{PemKeySource, generate, read_public};
    use edgefleet_tuf::operator::{RoleSpec, RootSpec, build_root, sign_with};
    use std::collections::BTreeMap;
    use tough::key_source::KeySource;
    use tough::schema::Root;

    const CHURN_1: &str = "models/churn/1.0.0/model.onnx";
    const CHURN_2: &str = "models/churn/2.0.0/model.onnx";
    const CHURN_3: &str = "models/churn/3.0.0/model.onnx";

    fn meta(version: &str, sequence: u64) -> ModelTargetMeta {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/churn")
            .join(version);
        let (_, mut meta) = edgefleet_tuf::operator::read_release_dir(&dir).unwrap();
        meta.sequence = sequence;
        meta.min_sequence = 0;
        meta
    }

    /// The signed targets this device would see: churn 1.0.0 (seq 1) and 2.0.0 (seq 2).
    fn trusted(name: &str) -> Result<ModelTarget, String> {
        let (version, sequence, length) = match name {
            CHURN_1 => ("1.0.0", 1, 1_000),
            CHURN_2 => ("2.0.0", 2, 2_000),
            _ => {
                return Err(edgefleet_tuf::Error::UnknownTarget {
                    name: name.to_owned(),
                }
                .to_string());
            }
        };
        Ok(ModelTarget {
            name: name.to_owned(),
            meta: meta(version, sequence),
            length,
            sha256_hex: format!("{sequence:064}"),
        })
    }

    #[derive(Default)]
    struct Device {
        floors: BTreeMap<String, u64>,
        failed: Vec<String>,
        max_artifact_bytes: u64,
        max_release_file_bytes: u64,
    }

    impl Local for Device {
        fn floor(&self, model: &ModelName) -> u64 {
            self.floors.get(model.as_str()).copied().unwrap_or(0)
        }
        fn already_failed(&self, _model: &ModelName, key: &str) -> bool {
            self.failed.iter().any(|s| s == key)
        }
        fn max_artifact_bytes(&self) -> u64 {
            self.max_artifact_bytes
        }
        fn max_release_file_bytes(&self) -> u64 {
            self.max_release_file_bytes
        }
    }

    #[test]
    fn a_release_is_one_candidate_before_and_after_its_files_are_fetched() {
        let mut listed = trusted(CHURN_2).unwrap();
        let inline_key = candidate_key(&listed);
        let files = edgefleet_tuf::release_files::detach(&mut listed.meta, u64::MAX).unwrap();
        let mut fetched = listed.clone();
        for file in &files {
            edgefleet_tuf::release_files::attach(&mut fetched.meta, file.kind, &file.bytes)
                .unwrap();
        }
        // What the store keeps (fetched) and what the metadata lists are one candidate, so a
        // restart or a repeated desired state does not install it again.
        assert_eq!(candidate_key(&fetched), candidate_key(&listed));
        // Signed differently (cases inline), it is another candidate.
        assert_ne!(candidate_key(&listed), inline_key);
    }

    #[test]
    fn a_release_file_over_the_devices_limit_is_refused_before_anything_is_fetched() {
        let mut target = trusted(CHURN_2).unwrap();
        let files = edgefleet_tuf::release_files::detach(&mut target.meta, u64::MAX).unwrap();
        let golden = files[0].bytes.len() as u64;
        let wanted = wanted("d1", 1, &[CHURN_2]).models;
        let plan_with = |limit| {
            let device = Device {
                max_artifact_bytes: 1 << 20,
                max_release_file_bytes: limit,
                ..Device::default()
            };
            plan(&wanted, true, |_| Ok(target.clone()), &device)
        };
        match &plan_with(golden - 1)[..] {
            [Step::Refuse { why, .. }] => {
                assert!(
                    why.contains("golden.json") && why.contains("limits.max_release_file_bytes"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&plan_with(golden)[..], [Step::Install { .. }]));
    }

    fn running(target: &str) -> Vec<ReportedModel> {
        vec![ReportedModel {
            shadow_refused: None,
            shadow: None,
            model: ModelName::new("churn").unwrap(),
            active: Some(InstalledVersion {
                version: semver::Version::new(1, 0, 0),
                sequence: 1,
                target: target.into(),
                sha256: "x".into(),
                runtime: None,
            }),
            previous: None,
            state: UpdateState::Committed,
            last_error: None,
        }]
    }

    #[test]
    fn the_shadow_slot_follows_the_desired_state_only_beside_its_champion() {
        use edgefleet_protocol::shadow::DesiredShadow;
        let with_shadow = |champion: &str, challenger: Option<&str>| {
            let mut m = wanted("d1", 1, &[champion]).models.remove(0);
            m.rollout = Some("r1".into());
            m.shadow = challenger.map(|t| DesiredShadow {
                target: t.into(),
                artifact_urls: vec!["http://a/x".into()],
                share_ppm: 500_000,
                max_cpu_ppm: 250_000,
                mode: edgefleet_protocol::shadow::SlotMode::Shadow,
            });
            m
        };
        let shadowing = |champion: &str, challenger: &str| {
            let mut r = running(champion);
            r[0].shadow = r[0].active.clone().map(|mut v| {
                v.target = challenger.into();
                v
            });
            r
        };
        // Beside the champion it serves: install the challenger as a model of its own.
        let m = with_shadow(CHURN_1, Some(CHURN_2));
        match shadow_work(&m, &running(CHURN_1)) {
            ShadowWork::Install(c) => {
                assert_eq!(c.target, CHURN_2);
                assert_eq!(c.artifact_urls, ["http://a/x"]);
                assert_eq!(c.rollout.as_deref(), Some("r1"));
                assert!(c.shadow.is_none());
            }
            other => panic!("{other:?}"),
        }
        let d = Desired {
            models: vec![m.clone()],
            ..wanted("d1", 1, &[])
        };
        assert!(matches!(
            triage(&d, 0, &running(CHURN_1)),
            Triage::Needs { .. }
        ));
        // Installed already: nothing; settled.
        assert_eq!(
            shadow_work(&m, &shadowing(CHURN_1, CHURN_2)),
            ShadowWork::Nothing
        );
        assert!(matches!(
            triage(&d, 1, &shadowing(CHURN_1, CHURN_2)),
            Triage::Settled { advance_to: None }
        ));
        // Not beside another champion.
        assert_eq!(
            shadow_work(&m, &running("models/churn/0.9.0/model.onnx")),
            ShadowWork::Nothing
        );
        // Promoted, ended or halted: the slot is emptied.
        assert_eq!(
            shadow_work(&with_shadow(CHURN_2, None), &shadowing(CHURN_2, CHURN_2)),
            ShadowWork::Drop
        );
        assert_eq!(
            shadow_work(&with_shadow(CHURN_1, None), &shadowing(CHURN_1, CHURN_2)),
            ShadowWork::Drop
        );
        assert_eq!(
            shadow_work(&with_shadow(CHURN_1, Some(CHURN_1)), &running(CHURN_1)),
            ShadowWork::Nothing
        );
    }

    fn wanted(device: &str, revision: u64, targets: &[&str]) -> Desired {
        Desired {
            schema: SCHEMA_VERSION,
            id: MessageId::from_random([revision as u8; 16]),
            device: DeviceId::new(device).unwrap(),
            revision,
            issued_at_unix: 1_800_000_000,
            models: targets
                .iter()
                .map(|t| DesiredModel {
                    shadow: None,
                    model: ModelName::new("churn").unwrap(),
                    target: (*t).into(),
                    artifact_urls: vec![],
                    rollout: None,
                })
                .collect(),
        }
    }

    struct Keys {
        _dir: tempfile::TempDir,
        root: Root,
        timestamp: Vec<Box<dyn KeySource>>,
        /// A forger's own key, and a root of its own that names it for timestamp.
        other_device: Vec<Box<dyn KeySource>>,
        forger_root: Root,
    }

    fn keys() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let mut public = BTreeMap::new();
        for name in ["root", "targets", "snapshot", "timestamp", "a-device"] {
            let key = generate(dir.path(), name).unwrap();
            public.insert(name, read_public(&key.public_path).unwrap());
        }
        let role = |name: &str| RoleSpec {
            keys: vec![public[name].clone()],
            threshold: 1,
        };
        let spec = RootSpec {
            root: role("root"),
            targets: role("targets"),
            snapshot: role("snapshot"),
            timestamp: role("timestamp"),
        };
        let expires = jiff::Timestamp::from_second(4_000_000_000).unwrap();
        let root = build_root(&spec, 1, expires).unwrap();
        let forger_root = build_root(
            &RootSpec {
                timestamp: role("a-device"),
                ..spec.clone()
            },
            1,
            expires,
        )
        .unwrap();
        let source = |name: &str| -> Vec<Box<dyn KeySource>> {
            vec![Box::new(PemKeySource {
                path: dir.path().join(format!("{name}.pem")),
            })]
        };
        Keys {
            root,
            timestamp: source("timestamp"),
            other_device: source("a-device"),
            forger_root,
            _dir: dir,
        }
    }

    async fn sign(keys: &[Box<dyn KeySource>], root: &Root, d: Desired) -> Vec<u8> {
        desired::encode(
            &sign_with(DesiredStatement::new(d), root, keys)
                .await
                .unwrap(),
        )
        .unwrap()
    }

    /// What the device would do with `bytes`: refused, or the plan.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Refused,
        Stale,
        Settled(Option<u64>),
        Steps(Vec<&'static str>),
    }

    fn outcome(
        bytes: &[u8],
        root: &Root,
        acted: u64,
        run: &[ReportedModel],
        dev: &Device,
    ) -> Outcome {
        let me = DeviceId::new("d1").unwrap();
        let d = match desired::verify(bytes, root, &me) {
            Ok(d) => d,
            Err(_) => return Outcome::Refused,
        };
        match triage(&d, acted, run) {
            Triage::Stale { .. } => Outcome::Stale,
            Triage::Settled { advance_to } => Outcome::Settled(advance_to),
            Triage::Needs {
                todo, first_time, ..
            } => Outcome::Steps(
                plan(&todo, first_time, trusted, dev)
                    .iter()
                    .map(|s| match s {
                        Step::Install { target, .. } if target.name == CHURN_1 => "install 1.0.0",
                        Step::Install { .. } => "install 2.0.0",
                        Step::Refuse { why, .. } if why.contains("floor") => "refuse: below floor",
                        Step::Refuse { why, .. } if why.contains("not in the current") => {
                            "refuse: unsigned"
                        }
                        Step::Refuse { why, .. } if why.contains("max_artifact_bytes") => {
                            "refuse: too large for this device"
                        }
                        Step::Refuse { .. } => "refuse: other",
                    })
                    .collect(),
            ),
        }
    }

    /// (what, message bytes, revision acted on, what runs, the device, what must happen)
    type Case<'a> = (
        &'a str,
        Vec<u8>,
        u64,
        &'a [ReportedModel],
        &'a Device,
        Outcome,
    );

    #[tokio::test]
    async fn every_kind_of_desired_message_moves_exactly_what_it_should() {
        let k = keys();
        let device = Device {
            max_artifact_bytes: 1 << 20,
            ..Device::default()
        };
        let floored = Device {
            floors: BTreeMap::from([("churn".into(), 2)]),
            max_artifact_bytes: 1 << 20,
            ..Device::default()
        };
        let small = Device {
            max_artifact_bytes: 1_500,
            ..Device::default()
        };
        let genuine =
            |rev, t: &'static [&'static str]| sign(&k.timestamp, &k.root, wanted("d1", rev, t));
        let on_1 = running(CHURN_1);
        let on_2 = running(CHURN_2);
        let mut tampered: serde_json::Value =
            serde_json::from_slice(&genuine(5, &[CHURN_2]).await).unwrap();
        tampered["signed"]["desired"]["revision"] = u64::MAX.into();
        let huge = {
            let mut d = wanted("d1", 6, &[CHURN_2]);
            d.models[0].artifact_urls = vec!["x".repeat(desired::MAX_SIGNED_DESIRED_BYTES)];
            let signed = sign_with(DesiredStatement::new(d), &k.root, &k.timestamp)
                .await
                .unwrap();
            serde_json::to_vec(&signed).unwrap()
        };
        #[rustfmt::skip]
        let table: Vec<Case> = vec![
            ("genuine update", genuine(5, &[CHURN_2]).await, 4, &on_1, &device,
                Outcome::Steps(vec!["install 2.0.0"])),
            ("forged: unsigned, freezing revision", serde_json::to_vec(&wanted("d1", u64::MAX, &[CHURN_1])).unwrap(), 4, &on_1, &device,
                Outcome::Refused),
            ("forged: signed by another device's key", sign(&k.other_device, &k.forger_root, wanted("d1", u64::MAX, &[])).await, 4, &on_1, &device,
                Outcome::Refused),
            ("forged: genuine message with its revision raised", serde_json::to_vec(&tampered).unwrap(), 4, &on_1, &device,
                Outcome::Refused),
            ("genuine, but for another device", sign(&k.timestamp, &k.root, wanted("d2", 9, &[CHURN_2])).await, 4, &on_1, &device,
                Outcome::Refused),
            ("replayed: an older genuine revision", genuine(3, &[CHURN_1]).await, 4, &on_2, &device,
                Outcome::Stale),
            ("reordered: the same revision again, already running", genuine(4, &[CHURN_2]).await, 4, &on_2, &device,
                Outcome::Settled(None)),
            ("empty: no models", genuine(5, &[]).await, 4, &on_1, &device,
                Outcome::Settled(Some(5))),
            ("already installed", genuine(5, &[CHURN_1]).await, 4, &on_1, &device,
                Outcome::Settled(Some(5))),
            ("below the floor", genuine(5, &[CHURN_1]).await, 4, &on_2, &floored,
                Outcome::Steps(vec!["refuse: below floor"])),
            ("a target nobody signed", genuine(5, &[CHURN_3]).await, 4, &on_1, &device,
                Outcome::Steps(vec!["refuse: unsigned"])),
            ("an artifact too large for this device", genuine(5, &[CHURN_2]).await, 4, &on_1, &small,
                Outcome::Steps(vec!["refuse: too large for this device"])),
            ("oversized message", huge, 4, &on_1, &device,
                Outcome::Refused),
            ("retry of a revision already acted on: refusals not repeated", genuine(4, &[CHURN_3]).await, 4, &on_1, &device,
                Outcome::Steps(vec![])),
        ];
        for (case, bytes, acted, run, dev, expected) in table {
            assert_eq!(
                outcome(&bytes, &k.root, acted, run, dev),
                expected,
                "{case}"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_message_says_why_in_words_an_operator_can_act_on() {
        let k = keys();
        let me = DeviceId::new("d1").unwrap();
        let forged = sign(&k.other_device, &k.forger_root, wanted("d1", 9, &[])).await;
        let err = desired::verify(&forged, &k.root, &me).unwrap_err();
        assert!(matches!(err, DesiredRefused::Signature(_)));
        assert!(err.to_string().contains("timestamp keys"), "{err}");
    }

    #[test]
    fn a_retried_revision_does_not_reinstall_a_rejected_candidate() {
        let churn_2 = trusted(CHURN_2).unwrap();
        let dev = Device {
            failed: vec![version_key(CHURN_2, &churn_2.sha256_hex, &churn_2.meta)],
            max_artifact_bytes: 1 << 20,
            ..Device::default()
        };
        let todo = wanted("d1", 5, &[CHURN_2]).models;
        assert!(plan(&todo, false, trusted, &dev).is_empty());
        assert_eq!(plan(&todo, true, trusted, &dev).len(), 1);
        // The same file re-signed with a looser tolerance is a new candidate: it is tried.
        let loosened = |name: &str| {
            let mut t = trusted(name)?;
            t.meta.health.tolerance.abs *= 10.0;
            Ok(t)
        };
        assert_eq!(plan(&todo, false, loosened, &dev).len(), 1);
    }
}
