//! The guard after commit: a policy signed with a release that keeps judging the version for as
//! long as it runs, on each device and fleet-wide, and says what to do on a breach.
//!
//! Probation judges a candidate for minutes; a model's failures come weeks later, when inputs
//! drift or labels show its accuracy decaying. The policy names the limits (error ratio, p99,
//! output shift and input drift against the signed baseline, accuracy drop against the release's
//! own signed evaluation) and the actions; [`judge`] is a plain function of one window's figures,
//! so the device, the server and the tests reach the same verdict on the same numbers.

use serde::{Deserialize, Serialize};

use crate::Error;

/// What a device does when its own window breaches the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum DeviceAction {
    /// Put the previous version (kept on disk) back in service and refuse this one again.
    #[default]
    RollBack,
    /// Keep serving; only report the breach.
    Report,
}

/// What the server does when a device reports a breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum FleetAction {
    /// Open an alert (and notify the configured webhooks).
    #[default]
    Alert,
    /// Alert, and pause every running rollout of this version.
    Halt,
    /// Alert, pause, and set the breaching device's group back to the version each device ran
    /// before this one.
    RollBackGroup,
}

/// Who must look at a breach besides the fleet action: a tracked request the server opens
/// with the evidence, until an operator resolves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum Request {
    /// The model must be trained again (its data no longer describes the field).
    Retrain,
    /// People must look at the predictions (sampled ids ride with the evidence).
    Review,
}

impl Request {
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Retrain => "retrain",
            Request::Review => "review",
        }
    }
}

/// Limits a committed version is held to; a rule left out is not judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct GuardPolicy {
    /// The sliding window judged, in seconds. Default 3600.
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
    /// Requests the window must hold before the traffic rules judge it. Default 100.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Largest share of failed inferences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_ratio: Option<f64>,
    /// Largest p99 latency of one inference, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
    /// Largest PSI of the predicted-label mix against the signed baseline's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_psi: Option<f64>,
    /// Largest PSI of any input feature against the signed baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_psi: Option<f64>,
    /// Largest drop of accuracy on labelled predictions below the release's signed
    /// `lineage.metrics.accuracy` (0.05 = five points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_accuracy_drop: Option<f64>,
    /// Labelled predictions the window must hold before accuracy is judged. Default 200.
    #[serde(default = "default_min_labelled")]
    pub min_labelled: u64,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(inline))]
    pub device: DeviceAction,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(inline))]
    pub fleet: FleetAction,
    /// A retraining or review request the server opens on a breach, tracked until resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(inline))]
    pub request: Option<Request>,
}

fn default_window_seconds() -> u64 {
    3600
}

fn default_min_requests() -> u64 {
    100
}

fn default_min_labelled() -> u64 {
    200
}

/// Bounds on the window: long enough to hold a fair sample, short enough that a device keeps
/// the counts of one window in memory.
pub const MIN_WINDOW_SECONDS: u64 = 10;
pub const MAX_WINDOW_SECONDS: u64 = 30 * 86_400;

impl GuardPolicy {
    /// Checks the policy; `signed_accuracy` is the release's `lineage.metrics.accuracy`, which an
    /// accuracy rule needs to compare against.
    pub fn validate(&self, signed_accuracy: Option<f64>) -> Result<(), Error> {
        let bad = |why: String| Err(Error::invalid("guard policy", why));
        if !(MIN_WINDOW_SECONDS..=MAX_WINDOW_SECONDS).contains(&self.window_seconds) {
            return bad(format!(
                "window_seconds {} is outside {MIN_WINDOW_SECONDS}..={MAX_WINDOW_SECONDS}",
                self.window_seconds
            ));
        }
        for (name, value) in [
            ("max_error_ratio", self.max_error_ratio),
            ("max_accuracy_drop", self.max_accuracy_drop),
        ] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                return bad(format!("{name} {v} is not a share between 0 and 1"));
            }
        }
        for (name, value) in [
            ("max_p99_ms", self.max_p99_ms),
            ("max_output_psi", self.max_output_psi),
            ("max_input_psi", self.max_input_psi),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v > 0.0)
            {
                return bad(format!("{name} {v} must be a positive number"));
            }
        }
        if self.rules() == 0 {
            return bad("names no rule: set at least one max_* limit".into());
        }
        if self.max_accuracy_drop.is_some() && signed_accuracy.is_none() {
            return bad(
                "max_accuracy_drop needs the release's lineage.metrics.accuracy to compare against"
                    .into(),
            );
        }
        Ok(())
    }

    fn rules(&self) -> usize {
        [
            self.max_error_ratio,
            self.max_p99_ms,
            self.max_output_psi,
            self.max_input_psi,
            self.max_accuracy_drop,
        ]
        .iter()
        .filter(|r| r.is_some())
        .count()
    }
}

/// One window's figures of one version, as a device (or the server, for a group) measured them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardWindow {
    pub requests: u64,
    pub errors: u64,
    pub p99_ms: Option<f64>,
    pub output_psi: Option<f64>,
    /// The feature that drifted most, and its PSI.
    pub input_psi: Option<(String, f64)>,
    pub labelled: u64,
    /// Accuracy over the labelled predictions of the window.
    pub accuracy: Option<f64>,
}

/// Which rule a breach broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum GuardRule {
    ErrorRatio,
    P99,
    OutputShift,
    InputDrift,
    Accuracy,
}

impl GuardRule {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardRule::ErrorRatio => "error_ratio",
            GuardRule::P99 => "p99",
            GuardRule::OutputShift => "output_shift",
            GuardRule::InputDrift => "input_drift",
            GuardRule::Accuracy => "accuracy",
        }
    }
}

/// A broken rule with its evidence: what was measured, the limit, and on how much traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Breach {
    pub rule: GuardRule,
    pub observed: f64,
    pub limit: f64,
    /// In words an operator can act on.
    pub detail: String,
    /// For an accuracy breach: ids of predictions in the window whose label disagreed (a
    /// bounded sample), for the people who review or retrain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<String>,
}

/// Every rule of `policy` that `window` breaks (none while there is too little traffic or too
/// few labels to say); `signed_accuracy` is the release's own evaluation.
pub fn judge(
    window: &GuardWindow,
    policy: &GuardPolicy,
    signed_accuracy: Option<f64>,
) -> Vec<Breach> {
    let mut out = Vec::new();
    if window.requests >= policy.min_requests.max(1) {
        let ratio = window.errors as f64 / window.requests as f64;
        if let Some(limit) = policy.max_error_ratio.filter(|&l| ratio > l) {
            out.push(Breach {
                rule: GuardRule::ErrorRatio,
                observed: ratio,
                limit,
                detail: format!(
                    "{} of {} inferences failed ({:.1}% > {:.1}%)",
                    window.errors,
                    window.requests,
                    ratio * 100.0,
                    limit * 100.0
                ),
                sample: Vec::new(),
            });
        }
        if let (Some(limit), Some(p99)) = (policy.max_p99_ms, window.p99_ms)
            && p99 > limit
        {
            out.push(Breach {
                rule: GuardRule::P99,
                observed: p99,
                limit,
                detail: format!(
                    "p99 latency {p99:.2} ms > {limit:.2} ms over {} requests",
                    window.requests
                ),
                sample: Vec::new(),
            });
        }
        if let (Some(limit), Some(psi)) = (policy.max_output_psi, window.output_psi)
            && psi > limit
        {
            out.push(Breach {
                rule: GuardRule::OutputShift,
                observed: psi,
                limit,
                detail: format!(
                    "prediction mix PSI {psi:.3} > {limit:.3} against the signed baseline over {} \
                     requests",
                    window.requests
                ),
                sample: Vec::new(),
            });
        }
        if let (Some(limit), Some((feature, psi))) = (policy.max_input_psi, &window.input_psi)
            && *psi > limit
        {
            out.push(Breach {
                rule: GuardRule::InputDrift,
                observed: *psi,
                limit,
                detail: format!(
                    "input feature {feature} PSI {psi:.3} > {limit:.3} against the signed baseline"
                ),
                sample: Vec::new(),
            });
        }
    }
    if let (Some(drop), Some(signed), Some(accuracy)) =
        (policy.max_accuracy_drop, signed_accuracy, window.accuracy)
        && window.labelled >= policy.min_labelled.max(1)
        && accuracy < signed - drop
    {
        out.push(Breach {
            rule: GuardRule::Accuracy,
            observed: accuracy,
            limit: signed - drop,
            detail: format!(
                "accuracy {accuracy:.3} on {} labelled predictions, signed {signed:.3}: down {:.3} \
                 (more than {drop:.3})",
                window.labelled,
                signed - accuracy
            ),
            sample: Vec::new(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> GuardPolicy {
        serde_json::from_str(
            r#"{"max_error_ratio": 0.05, "max_p99_ms": 10, "max_output_psi": 0.25,
                "max_input_psi": 0.25, "max_accuracy_drop": 0.1}"#,
        )
        .unwrap()
    }

    fn healthy() -> GuardWindow {
        GuardWindow {
            requests: 1000,
            errors: 10,
            p99_ms: Some(3.0),
            output_psi: Some(0.01),
            input_psi: Some(("tenure".into(), 0.02)),
            labelled: 500,
            accuracy: Some(0.85),
        }
    }

    #[test]
    fn defaults_and_actions_read_from_json() {
        let p = policy();
        assert_eq!(p.window_seconds, 3600);
        assert_eq!(p.min_requests, 100);
        assert_eq!(p.min_labelled, 200);
        assert_eq!(p.device, DeviceAction::RollBack);
        assert_eq!(p.fleet, FleetAction::Alert);
        let p: GuardPolicy = serde_json::from_str(
            r#"{"max_p99_ms": 5, "device": "report", "fleet": "roll_back_group", "request": "retrain"}"#,
        )
        .unwrap();
        assert_eq!(p.request, Some(Request::Retrain));
        assert_eq!(
            (p.device, p.fleet),
            (DeviceAction::Report, FleetAction::RollBackGroup)
        );
        assert!(serde_json::from_str::<GuardPolicy>(r#"{"max_p99": 5}"#).is_err());
    }

    #[test]
    fn a_healthy_window_breaks_nothing() {
        assert!(judge(&healthy(), &policy(), Some(0.86)).is_empty());
    }

    #[test]
    fn each_rule_breaks_on_its_own_figure() {
        let p = policy();
        let rules = |w: GuardWindow| -> Vec<GuardRule> {
            judge(&w, &p, Some(0.86)).iter().map(|b| b.rule).collect()
        };
        assert_eq!(
            rules(GuardWindow {
                errors: 60,
                ..healthy()
            }),
            [GuardRule::ErrorRatio]
        );
        assert_eq!(
            rules(GuardWindow {
                p99_ms: Some(12.0),
                ..healthy()
            }),
            [GuardRule::P99]
        );
        assert_eq!(
            rules(GuardWindow {
                output_psi: Some(0.4),
                ..healthy()
            }),
            [GuardRule::OutputShift]
        );
        assert_eq!(
            rules(GuardWindow {
                input_psi: Some(("age".into(), 0.3)),
                ..healthy()
            }),
            [GuardRule::InputDrift]
        );
        assert_eq!(
            rules(GuardWindow {
                accuracy: Some(0.70),
                ..healthy()
            }),
            [GuardRule::Accuracy]
        );
        // The limit itself is still within it.
        assert!(
            rules(GuardWindow {
                accuracy: Some(0.76),
                errors: 50,
                ..healthy()
            })
            .is_empty()
        );
    }

    #[test]
    fn too_little_evidence_is_not_judged() {
        let p = policy();
        let thin = GuardWindow {
            requests: 99,
            errors: 99,
            p99_ms: Some(1e6),
            labelled: 199,
            accuracy: Some(0.0),
            ..healthy()
        };
        assert!(judge(&thin, &p, Some(0.86)).is_empty());
        // Labels are judged on their own count, whatever the traffic.
        let labelled = GuardWindow {
            labelled: 200,
            ..thin
        };
        let breaches = judge(&labelled, &p, Some(0.86));
        assert_eq!(breaches.len(), 1);
        assert!(breaches[0].detail.contains("200 labelled"), "{breaches:?}");
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let err = |json: &str, signed: Option<f64>| {
            serde_json::from_str::<GuardPolicy>(json)
                .unwrap()
                .validate(signed)
                .unwrap_err()
                .to_string()
        };
        assert!(err("{}", None).contains("names no rule"));
        assert!(err(r#"{"max_error_ratio": 1.5}"#, None).contains("max_error_ratio"));
        assert!(err(r#"{"max_p99_ms": -1}"#, None).contains("max_p99_ms"));
        assert!(err(r#"{"max_p99_ms": 5, "window_seconds": 1}"#, None).contains("window_seconds"));
        assert!(err(r#"{"max_accuracy_drop": 0.1}"#, None).contains("lineage.metrics.accuracy"));
        assert!(policy().validate(Some(0.9)).is_ok());
    }
}
