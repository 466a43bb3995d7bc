//! Planning: from an operator's request and the fleet as it is to a new rollout, or a refusal
//! that names the field to fix. The server looks the version and the devices up and stores the
//! result; every decision in between is here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use edgefleet_protocol::api::Stage;

use crate::{
    DeviceState, Gates, ModelGates, Rollout, RolloutDevice, RolloutSpec, RolloutState, Selector,
    ShadowOptions, StageRefusal, StageRules, Strategy,
};

/// The waves when a request names none: a 1 % canary, then 10 %, 50 % and everyone.
pub const DEFAULT_WAVES: [f64; 4] = [1.0, 10.0, 50.0, 100.0];

/// `POST /api/v1/rollouts`: what an operator asks for. Every field but the version is optional
/// and has the default documented on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    pub model: String,
    pub version: String,
    /// Only devices of this group. Default: any group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Only devices carrying every one of these tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Only these devices (each must match the group and tags). Default: every match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Cumulative percentages, ascending, ending at 100. Default [1, 10, 50, 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<f64>>,
    /// Instead of `waves`: an exponential rate, `{"start_percent": 1, "factor": 2}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(inline))]
    pub exponential: Option<Exponential>,
    /// Default 0: any failure halts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio: Option<f64>,
    /// Default 1 minus `max_failure_ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy_ratio: Option<f64>,
    /// Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_seconds: Option<u64>,
    /// Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub require_approval: bool,
    /// Gates on live telemetry. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(inline))]
    pub model_gates: Option<ModelGates>,
    /// Default true.
    #[serde(default = "yes")]
    pub rollback_on_halt: bool,
    /// `canary` (default) or `shadow`.
    #[serde(default, skip_serializing_if = "is_canary")]
    #[cfg_attr(feature = "schema", schema(inline))]
    pub strategy: Strategy,
    /// The shadow phase's share, CPU budget, gate and fallback (`strategy` `shadow`; every
    /// field has a default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(inline))]
    pub shadow: Option<ShadowOptions>,
}

fn is_canary(s: &Strategy) -> bool {
    *s == Strategy::Canary
}

fn yes() -> bool {
    true
}

impl RolloutRequest {
    /// A request with every default: all devices, default waves and gates.
    pub fn new(model: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            version: version.into(),
            group: None,
            tags: BTreeMap::new(),
            devices: Vec::new(),
            waves: None,
            exponential: None,
            max_failure_ratio: None,
            min_healthy_ratio: None,
            bake_seconds: None,
            device_timeout_seconds: None,
            require_approval: false,
            model_gates: None,
            rollback_on_halt: true,
            strategy: Strategy::Canary,
            shadow: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Exponential {
    pub start_percent: f64,
    pub factor: f64,
}

/// A device as planning needs it: what selects it and what it runs of the request's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub group: String,
    pub tags: BTreeMap<String, String>,
    pub enrolled: bool,
    /// The version of the rollout's model it serves now, if any.
    pub running: Option<String>,
}

impl Selector {
    /// Whether an enrolled device falls under this selector.
    pub fn selects(&self, device: &Candidate) -> bool {
        device.enrolled
            && self.group.as_ref().is_none_or(|g| &device.group == g)
            && self.tags.iter().all(|(k, v)| device.tags.get(k) == Some(v))
            && (self.devices.is_empty() || self.devices.contains(&device.id))
    }
}

/// Why a request cannot become a rollout.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("waves must be ascending percentages in (0, 100] ending at 100, e.g. [1, 10, 50, 100]")]
    Waves,
    #[error("give waves or exponential, not both")]
    WavesAndExponential,
    #[error("exponential: start_percent must be in (0, 100] and factor above 1")]
    Exponential,
    #[error("gates.max_failure_ratio and gates.min_healthy_ratio must be between 0 and 1")]
    Ratios,
    #[error("no device matches the rollout's selector")]
    NoDevices,
    #[error("device {0} is not an enrolled device matching the group and tags")]
    UnknownDevice(String),
    #[error("gates.model limits must be finite and not negative (max_accuracy_drop at most 1)")]
    ModelGates,
    #[error(
        "gates.model names no gate: set max_error_rate_increase, max_p99_slowdown_percent, max_output_shift_psi, max_input_drift_psi or max_accuracy_drop"
    )]
    NoModelGate,
    #[error(
        "no device of this rollout runs {0} yet, so there is no previous version to compare with; \
         keep only max_input_drift_psi, or roll out without model gates"
    )]
    NothingToCompare(String),
    #[error(
        "shadow: share and max_cpu_share must be in (0, 1], gate ratios in [0, 1], limits finite and not negative, min_compared above 0"
    )]
    Shadow,
    #[error("shadow options are for strategy shadow; add \"strategy\": \"shadow\" or drop them")]
    ShadowWithoutStrategy,
    #[error("{0}")]
    Stage(StageRefusal),
    #[error(
        "rollout {id} ({model} {version}, {state}) already covers some of these devices; abort it or wait for it to finish"
    )]
    Overlaps {
        id: String,
        model: String,
        version: String,
        state: &'static str,
    },
}

impl PlanError {
    /// The request field to fix, or `None` when the request is fine but the fleet is busy
    /// (`Overlaps`: a conflict, not a bad request).
    pub fn field(&self) -> Option<&'static str> {
        Some(match self {
            PlanError::Waves => "waves",
            PlanError::Stage(_) => "version",
            PlanError::WavesAndExponential | PlanError::Exponential => "exponential",
            PlanError::Ratios => "max_failure_ratio",
            PlanError::NoDevices => "group",
            PlanError::UnknownDevice(_) => "devices",
            PlanError::ModelGates | PlanError::NoModelGate | PlanError::NothingToCompare(_) => {
                "model_gates"
            }
            PlanError::Shadow | PlanError::ShadowWithoutStrategy => "shadow",
            PlanError::Overlaps { .. } => return None,
        })
    }
}

/// Who creates the rollout, when, under which id, and for which signed target.
#[derive(Debug, Clone)]
pub struct Origin {
    pub id: String,
    pub created_by: String,
    pub now: i64,
    /// The TUF target name of the requested version (the caller checked it is signed).
    pub target: String,
    /// Where the version stands in the registry.
    pub stage: Stage,
}

/// Plans `request` over `fleet`: selects the devices, applies the defaults, and refuses a
/// version the stage `rules` keep from a selected device, what would fight a rollout in `active`
/// (one active rollout per model and device) and what the gates could never judge.
pub fn plan(
    request: RolloutRequest,
    fleet: &[Candidate],
    active: &[Rollout],
    origin: Origin,
    rules: &StageRules,
) -> Result<Rollout, PlanError> {
    let selector = Selector {
        group: request.group,
        tags: request.tags,
        devices: request.devices,
    };
    let chosen: Vec<&Candidate> = fleet.iter().filter(|d| selector.selects(d)).collect();
    if let Some(missing) = selector
        .devices
        .iter()
        .find(|id| !chosen.iter().any(|d| &d.id == *id))
    {
        return Err(PlanError::UnknownDevice(missing.clone()));
    }
    for device in &chosen {
        rules
            .admits(origin.stage, &device.group)
            .map_err(PlanError::Stage)?;
    }
    if let Some(other) = active.iter().find(|other| {
        other.state.is_active()
            && other.spec.model == request.model
            && other
                .devices
                .iter()
                .any(|d| chosen.iter().any(|mine| mine.id == d.id))
    }) {
        return Err(PlanError::Overlaps {
            id: other.id.clone(),
            model: other.spec.model.clone(),
            version: other.spec.version.clone(),
            state: other.state.name(),
        });
    }
    let waves = match (request.waves, request.exponential) {
        (Some(_), Some(_)) => return Err(PlanError::WavesAndExponential),
        (Some(waves), None) => waves,
        (None, Some(e)) => {
            exponential_waves(e.start_percent, e.factor).map_err(|_| PlanError::Exponential)?
        }
        (None, None) => DEFAULT_WAVES.to_vec(),
    };
    let defaults = Gates::default();
    let gates = Gates {
        max_failure_ratio: request
            .max_failure_ratio
            .unwrap_or(defaults.max_failure_ratio),
        min_healthy_ratio: request.min_healthy_ratio,
        bake_seconds: request.bake_seconds.unwrap_or(defaults.bake_seconds),
        device_timeout_seconds: request
            .device_timeout_seconds
            .unwrap_or(defaults.device_timeout_seconds),
        require_approval: request.require_approval,
        model: request.model_gates,
    };
    if let Some(model_gates) = &gates.model
        && model_gates.compares()
        && !chosen.is_empty()
        && chosen.iter().all(|d| d.running.is_none())
    {
        return Err(PlanError::NothingToCompare(request.model));
    }
    let shadow = match (request.strategy, request.shadow) {
        (Strategy::Canary, Some(_)) => return Err(PlanError::ShadowWithoutStrategy),
        (Strategy::Canary, None) => None,
        (Strategy::Shadow | Strategy::Split, options) => Some(options.unwrap_or_default()),
    };
    let spec = RolloutSpec {
        model: request.model,
        version: request.version,
        target: origin.target,
        selector,
        waves,
        gates,
        rollback_on_halt: request.rollback_on_halt,
        strategy: request.strategy,
        shadow,
    };
    let devices = chosen
        .into_iter()
        .map(|d| (d.id.clone(), d.running.clone()))
        .collect();
    Rollout::new(origin.id, spec, devices, origin.created_by, origin.now)
}

/// Waves of an exponential rate: `start` percent, then multiplied by `factor` each wave, up to
/// 100 (e.g. 1, 2, 4, ..., 64, 100).
pub fn exponential_waves(start: f64, factor: f64) -> Result<Vec<f64>, PlanError> {
    if !(start.is_finite() && start > 0.0 && start <= 100.0 && factor.is_finite() && factor > 1.0) {
        return Err(PlanError::Waves);
    }
    let mut waves = vec![start];
    while let Some(&last) = waves.last()
        && last < 100.0
    {
        waves.push((last * factor).min(100.0));
    }
    Ok(waves)
}

/// Device ids (sorted by the caller) into waves by cumulative percentage; every wave gets at
/// least one device while devices remain, so a 1 % canary of 5 devices is one device.
pub fn assign_waves(device_count: usize, waves: &[f64]) -> Result<Vec<usize>, PlanError> {
    let ascending = waves.windows(2).all(|w| w[0] < w[1]);
    if waves.is_empty()
        || !ascending
        || waves
            .iter()
            .any(|p| !(p.is_finite() && *p > 0.0 && *p <= 100.0))
        || waves.last() != Some(&100.0)
    {
        return Err(PlanError::Waves);
    }
    if device_count == 0 {
        return Err(PlanError::NoDevices);
    }
    let mut out = Vec::with_capacity(device_count);
    let mut assigned = 0usize;
    for (wave, pct) in waves.iter().enumerate() {
        let mut upto = ((pct / 100.0) * device_count as f64).ceil() as usize;
        upto = upto.max(assigned + 1).min(device_count);
        while assigned < upto {
            out.push(wave);
            assigned += 1;
        }
    }
    Ok(out)
}

impl Rollout {
    /// A new rollout over `devices` (id, version it runs now), sorted for a stable plan.
    pub fn new(
        id: String,
        spec: RolloutSpec,
        mut devices: Vec<(String, Option<String>)>,
        created_by: String,
        now: i64,
    ) -> Result<Self, PlanError> {
        let g = &spec.gates;
        if !(0.0..=1.0).contains(&g.max_failure_ratio) || !(0.0..=1.0).contains(&g.min_healthy()) {
            return Err(PlanError::Ratios);
        }
        if let Some(model) = &g.model {
            model.validate()?;
        }
        if let Some(shadow) = &spec.shadow {
            shadow.validate()?;
        }
        // A device that runs no version of the model has nothing to shadow: it goes as a canary.
        let shadowed = spec.strategy.uses_slot();
        devices.sort();
        let waves = assign_waves(devices.len(), &spec.waves)?;
        let devices = devices
            .into_iter()
            .zip(waves)
            .map(|((id, previous_version), wave)| RolloutDevice {
                id,
                wave,
                state: DeviceState::Pending,
                promoted: shadowed && previous_version.is_none(),
                previous_version,
                notified_at: None,
                revision: None,
                detail: None,
            })
            .collect::<Vec<_>>();
        let count = devices.len();
        Ok(Self {
            id,
            revision: 0,
            model_check: None,
            shadow_check: None,
            verdicts: Vec::new(),
            approvals: Vec::new(),
            state: RolloutState::Running { wave: 0 },
            devices,
            created_by,
            created_at: now,
            updated_at: now,
            history: vec![(
                now,
                format!(
                    "created: {} {} to {count} devices in {} waves ({})",
                    spec.model,
                    spec.version,
                    spec.waves.len(),
                    spec.strategy.name()
                ),
            )],
            spec,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn device(id: &str, group: &str, tags: &[(&str, &str)], running: Option<&str>) -> Candidate {
        Candidate {
            id: id.into(),
            group: group.into(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            enrolled: true,
            running: running.map(Into::into),
        }
    }

    fn fleet() -> Vec<Candidate> {
        vec![
            device("d3", "north", &[("hw", "pi5")], Some("1.0.0")),
            device("d1", "north", &[("hw", "pi4")], Some("1.0.0")),
            device("d2", "south", &[("hw", "pi5")], None),
            Candidate {
                enrolled: false,
                ..device("d4", "north", &[("hw", "pi5")], None)
            },
        ]
    }

    fn origin() -> Origin {
        Origin {
            id: "r-1".into(),
            created_by: "alice".into(),
            now: 100,
            target: "models/churn/2.0.0/model.onnx".into(),
            stage: Stage::Staging,
        }
    }

    fn ids(r: &Rollout) -> Vec<&str> {
        r.devices.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn an_empty_request_takes_every_enrolled_device_with_the_default_gates_and_waves() {
        let r = plan(
            RolloutRequest::new("churn", "2.0.0"),
            &fleet(),
            &[],
            origin(),
            &StageRules::default(),
        )
        .unwrap();
        assert_eq!(
            ids(&r),
            ["d1", "d2", "d3"],
            "sorted, and not the unenrolled d4"
        );
        assert_eq!(r.spec.waves, DEFAULT_WAVES);
        assert_eq!(r.spec.gates, Gates::default());
        assert!(r.spec.rollback_on_halt);
        assert_eq!(r.spec.target, "models/churn/2.0.0/model.onnx");
        assert_eq!(r.created_by, "alice");
        assert_eq!(r.devices[0].previous_version.as_deref(), Some("1.0.0"));
        assert_eq!(r.devices[1].previous_version, None);
    }

    #[test]
    fn group_tags_and_ids_all_narrow_the_selection() {
        let mut request = RolloutRequest::new("churn", "2.0.0");
        request.group = Some("north".into());
        request.tags.insert("hw".into(), "pi5".into());
        let r = plan(
            request.clone(),
            &fleet(),
            &[],
            origin(),
            &StageRules::default(),
        )
        .unwrap();
        assert_eq!(ids(&r), ["d3"]);
        assert_eq!(r.spec.selector.group.as_deref(), Some("north"));

        request.devices = vec!["d1".into()];
        assert_eq!(
            plan(request, &fleet(), &[], origin(), &StageRules::default()).unwrap_err(),
            PlanError::UnknownDevice("d1".into()),
            "d1 is in the group but lacks the tag"
        );
        let mut unenrolled = RolloutRequest::new("churn", "2.0.0");
        unenrolled.devices = vec!["d4".into()];
        let refused =
            plan(unenrolled, &fleet(), &[], origin(), &StageRules::default()).unwrap_err();
        assert_eq!(refused.field(), Some("devices"));
    }

    #[test]
    fn nothing_selected_is_refused_on_the_group() {
        let mut request = RolloutRequest::new("churn", "2.0.0");
        request.group = Some("west".into());
        let refused = plan(request, &fleet(), &[], origin(), &StageRules::default()).unwrap_err();
        assert_eq!(refused, PlanError::NoDevices);
        assert_eq!(refused.field(), Some("group"));
    }

    #[test]
    fn waves_come_from_the_list_or_the_exponential_rate_but_not_both() {
        let mut request = RolloutRequest::new("churn", "2.0.0");
        request.exponential = Some(Exponential {
            start_percent: 25.0,
            factor: 2.0,
        });
        let r = plan(
            request.clone(),
            &fleet(),
            &[],
            origin(),
            &StageRules::default(),
        )
        .unwrap();
        assert_eq!(r.spec.waves, [25.0, 50.0, 100.0]);

        request.waves = Some(vec![50.0, 100.0]);
        assert_eq!(
            plan(
                request.clone(),
                &fleet(),
                &[],
                origin(),
                &StageRules::default()
            )
            .unwrap_err(),
            PlanError::WavesAndExponential
        );
        request.waves = None;
        request.exponential = Some(Exponential {
            start_percent: 10.0,
            factor: 1.0,
        });
        let refused = plan(request, &fleet(), &[], origin(), &StageRules::default()).unwrap_err();
        assert_eq!(refused, PlanError::Exponential);
        assert_eq!(refused.field(), Some("exponential"));

        let mut descending = RolloutRequest::new("churn", "2.0.0");
        descending.waves = Some(vec![50.0, 10.0, 100.0]);
        assert_eq!(
            plan(descending, &fleet(), &[], origin(), &StageRules::default()).unwrap_err(),
            PlanError::Waves
        );
    }

    #[test]
    fn given_gates_replace_the_defaults_and_bad_ratios_are_refused() {
        let mut request = RolloutRequest::new("churn", "2.0.0");
        request.max_failure_ratio = Some(0.2);
        request.bake_seconds = Some(30);
        request.device_timeout_seconds = Some(60);
        request.require_approval = true;
        request.rollback_on_halt = false;
        let r = plan(
            request.clone(),
            &fleet(),
            &[],
            origin(),
            &StageRules::default(),
        )
        .unwrap();
        assert_eq!(r.spec.gates.max_failure_ratio, 0.2);
        assert!((r.spec.gates.min_healthy() - 0.8).abs() < 1e-9);
        assert_eq!(r.spec.gates.bake_seconds, 30);
        assert_eq!(r.spec.gates.device_timeout_seconds, 60);
        assert!(r.spec.gates.require_approval);
        assert!(!r.spec.rollback_on_halt);

        request.max_failure_ratio = Some(1.5);
        let refused = plan(request, &fleet(), &[], origin(), &StageRules::default()).unwrap_err();
        assert_eq!(refused, PlanError::Ratios);
        assert_eq!(refused.field(), Some("max_failure_ratio"));
    }

    #[test]
    fn a_rollout_still_active_on_the_same_model_and_a_shared_device_is_a_conflict() {
        let mut north = RolloutRequest::new("churn", "2.0.0");
        north.group = Some("north".into());
        let first = plan(north, &fleet(), &[], origin(), &StageRules::default()).unwrap();

        let refused = plan(
            RolloutRequest::new("churn", "3.0.0"),
            &fleet(),
            std::slice::from_ref(&first),
            origin(),
            &StageRules::default(),
        )
        .unwrap_err();
        assert!(matches!(&refused, PlanError::Overlaps { id, .. } if id == "r-1"));
        assert_eq!(refused.field(), None, "a conflict, not a bad field");
        assert!(refused.to_string().contains("abort it or wait"));

        let mut south = RolloutRequest::new("churn", "3.0.0");
        south.group = Some("south".into());
        assert!(
            plan(
                south,
                &fleet(),
                std::slice::from_ref(&first),
                origin(),
                &StageRules::default()
            )
            .is_ok()
        );
        let other_model = RolloutRequest::new("fraud", "1.0.0");
        assert!(
            plan(
                other_model,
                &fleet(),
                std::slice::from_ref(&first),
                origin(),
                &StageRules::default()
            )
            .is_ok()
        );

        let mut finished = first;
        finished.state = RolloutState::Completed;
        let again = RolloutRequest::new("churn", "3.0.0");
        assert!(
            plan(
                again,
                &fleet(),
                &[finished],
                origin(),
                &StageRules::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn comparing_model_gates_need_a_device_that_runs_the_model_already() {
        let mut request = RolloutRequest::new("churn", "2.0.0");
        request.group = Some("south".into());
        request.model_gates = Some(ModelGates {
            max_error_rate_increase: Some(0.01),
            ..ModelGates::default()
        });
        let refused = plan(
            request.clone(),
            &fleet(),
            &[],
            origin(),
            &StageRules::default(),
        )
        .unwrap_err();
        assert_eq!(refused, PlanError::NothingToCompare("churn".into()));
        assert_eq!(refused.field(), Some("model_gates"));

        request.model_gates = Some(ModelGates {
            max_input_drift_psi: Some(0.2),
            ..ModelGates::default()
        });
        assert!(
            plan(
                request.clone(),
                &fleet(),
                &[],
                origin(),
                &StageRules::default()
            )
            .is_ok(),
            "input drift is judged against the signed baseline, not a previous version"
        );
        request.group = None;
        request.model_gates = Some(ModelGates {
            max_error_rate_increase: Some(0.01),
            ..ModelGates::default()
        });
        assert!(plan(request, &fleet(), &[], origin(), &StageRules::default()).is_ok());
    }

    #[test]
    fn archived_versions_and_stages_a_selected_group_does_not_take_are_refused() {
        let archived = Origin {
            stage: Stage::Archived,
            ..origin()
        };
        let refused = plan(
            RolloutRequest::new("churn", "2.0.0"),
            &fleet(),
            &[],
            archived,
            &StageRules::default(),
        )
        .unwrap_err();
        assert_eq!(refused, PlanError::Stage(StageRefusal::Archived));
        assert_eq!(refused.field(), Some("version"));

        let rules = StageRules {
            groups: [("south".to_owned(), [Stage::Production].into())].into(),
            ..StageRules::default()
        };
        let everyone = plan(
            RolloutRequest::new("churn", "2.0.0"),
            &fleet(),
            &[],
            origin(),
            &rules,
        )
        .unwrap_err();
        assert!(
            everyone
                .to_string()
                .contains("group south takes only production"),
            "{everyone}"
        );
        let mut north = RolloutRequest::new("churn", "2.0.0");
        north.group = Some("north".into());
        assert!(plan(north, &fleet(), &[], origin(), &rules).is_ok());
        let production = Origin {
            stage: Stage::Production,
            ..origin()
        };
        assert!(
            plan(
                RolloutRequest::new("churn", "2.0.0"),
                &fleet(),
                &[],
                production,
                &rules
            )
            .is_ok()
        );
    }

    #[test]
    fn the_request_reads_the_documented_json_and_rejects_unknown_fields() {
        let request: RolloutRequest =
            serde_json::from_str(r#"{"model":"churn","version":"2.0.0"}"#).unwrap();
        assert_eq!(request, RolloutRequest::new("churn", "2.0.0"));
        let back: RolloutRequest =
            serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
        assert_eq!(back, request);
        assert!(
            serde_json::from_str::<RolloutRequest>(
                r#"{"model":"churn","version":"2.0.0","wave":[100]}"#
            )
            .is_err()
        );
    }
}
