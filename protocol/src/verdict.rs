//! The verdicts on a challenger: the gate a shadow or split wave must pass, and the plain
//! functions that judge a wave's summed figures against it ([`judge`] for a shadow, on both
//! models' answers to the same requests; [`judge_split`] for a split, arm against arm), with the
//! split's significance readout in words.

use serde::{Deserialize, Serialize};

use crate::latency::LatencyHistogram;
use crate::shadow::ShadowCounts;
use crate::split::{SPLIT_ALPHA, SplitCounts, champion_lead};

/// What a shadow wave must show before its challenger may answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ShadowGate {
    /// Compared requests needed before judging. Default 200.
    #[serde(default = "default_min_compared")]
    pub min_compared: u64,
    /// Least share of requests both answer alike. Default 0.9.
    #[serde(default = "default_min_agreement")]
    pub min_agreement: f64,
    /// Largest mean absolute difference of the scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mean_abs_diff: Option<f64>,
    /// Largest PSI of the challenger's label mix against the champion's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_psi: Option<f64>,
    /// Largest share of the challenger's runs that fail. Default 0.01.
    #[serde(default = "default_max_error_ratio")]
    pub max_error_ratio: f64,
    /// Largest p99 of the challenger, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
    /// With labels: the challenger's accuracy may be at most this far below the champion's on the
    /// same requests. Default 0.02.
    #[serde(default = "default_max_accuracy_drop")]
    pub max_accuracy_drop: f64,
    /// Labelled compared requests needed before accuracy is judged. Default 100.
    #[serde(default = "default_min_labelled")]
    pub min_labelled: u64,
}

fn default_min_compared() -> u64 {
    200
}
fn default_min_agreement() -> f64 {
    0.9
}
fn default_max_error_ratio() -> f64 {
    0.01
}
fn default_max_accuracy_drop() -> f64 {
    0.02
}
fn default_min_labelled() -> u64 {
    100
}

impl Default for ShadowGate {
    fn default() -> Self {
        Self {
            min_compared: default_min_compared(),
            min_agreement: default_min_agreement(),
            max_mean_abs_diff: None,
            max_output_psi: None,
            max_error_ratio: default_max_error_ratio(),
            max_p99_ms: None,
            max_accuracy_drop: default_max_accuracy_drop(),
            min_labelled: default_min_labelled(),
        }
    }
}

/// A shadow wave's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowVerdict {
    /// Not enough compared requests yet.
    Insufficient(String),
    /// Every rule holds: the challenger may answer.
    Pass,
    /// The rules broken, with the figures.
    Breach(Vec<String>),
}

/// The rules both strategies hold the challenger to: its failures among its `runs` (what it
/// ran), and its p99.
fn challenger_rules(
    gate: &ShadowGate,
    error_ratio: Option<f64>,
    latency: &LatencyHistogram,
    runs: &str,
) -> Vec<String> {
    let mut broken = Vec::new();
    if let Some(e) = error_ratio
        && e > gate.max_error_ratio
    {
        broken.push(format!(
            "the challenger failed {:.1} % of its {runs} (at most {:.1} %)",
            e * 100.0,
            gate.max_error_ratio * 100.0
        ));
    }
    if let Some(limit) = gate.max_p99_ms
        && latency.count() > 0
    {
        let p99 = latency.quantile_ms(0.99);
        if p99 > limit {
            broken.push(format!(
                "the challenger's p99 {p99:.2} ms is above {limit} ms"
            ));
        }
    }
    broken
}

/// Judges a challenger's counts against the gate.
pub fn judge(gate: &ShadowGate, c: &ShadowCounts) -> ShadowVerdict {
    if c.compared < gate.min_compared {
        return ShadowVerdict::Insufficient(format!(
            "{} of the {} compared requests the gate needs",
            c.compared, gate.min_compared
        ));
    }
    let mut broken = Vec::new();
    if let Some(a) = c.agreement()
        && a < gate.min_agreement
    {
        broken.push(format!(
            "agreement {a:.3} is below {:.3} on {} requests",
            gate.min_agreement, c.compared
        ));
    }
    if let (Some(limit), Some(d)) = (gate.max_mean_abs_diff, c.mean_abs_diff())
        && d > limit
    {
        broken.push(format!("mean score difference {d:.4} is above {limit}"));
    }
    if let (Some(limit), Some(psi)) = (gate.max_output_psi, c.output_psi())
        && psi > limit
    {
        broken.push(format!("output shift (PSI) {psi:.3} is above {limit}"));
    }
    broken.extend(challenger_rules(
        gate,
        c.error_ratio(),
        &c.challenger_latency,
        "runs",
    ));
    if c.labelled >= gate.min_labelled.max(1) {
        let champion = c.champion_correct as f64 / c.labelled as f64;
        let challenger = c.challenger_correct as f64 / c.labelled as f64;
        if champion - challenger > gate.max_accuracy_drop {
            broken.push(format!(
                "on {} labelled requests the challenger was right {:.1} % of the time, the champion {:.1} %",
                c.labelled,
                challenger * 100.0,
                champion * 100.0
            ));
        }
    }
    if broken.is_empty() {
        ShadowVerdict::Pass
    } else {
        ShadowVerdict::Breach(broken)
    }
}

/// Judges a split's arms against the gate: the challenger must have answered `min_compared`
/// requests, fail no more than `max_error_ratio` of them, keep its p99 under `max_p99_ms`, and,
/// when labels arrive (then the verdict waits for `min_labelled` on each arm), not be less
/// accurate than the champion by *significantly* more than `max_accuracy_drop` (agreement and
/// score difference need both models on the same request: they are the shadow strategy's).
pub fn judge_split(gate: &ShadowGate, s: &SplitCounts) -> ShadowVerdict {
    let challenger = &s.challenger;
    if challenger.answered < gate.min_compared {
        return ShadowVerdict::Insufficient(format!(
            "the challenger answered {} of the {} requests the gate needs",
            challenger.answered, gate.min_compared
        ));
    }
    // Once labels flow, a verdict on too few of them would promote a worse challenger for want
    // of evidence: wait for enough on both arms. Where no label ever arrives, the other rules
    // decide.
    let labelled = gate.min_labelled.max(1);
    let flowing = s.champion.labelled > 0 || challenger.labelled > 0;
    if flowing && (s.champion.labelled < labelled || challenger.labelled < labelled) {
        return ShadowVerdict::Insufficient(format!(
            "labels are arriving: {} and {} labelled answers (champion, challenger) of the {labelled} each arm needs",
            s.champion.labelled, challenger.labelled
        ));
    }
    let mut broken = Vec::new();
    broken.extend(challenger_rules(
        gate,
        challenger.error_ratio(),
        &challenger.latency,
        "requests",
    ));
    if s.champion.labelled >= labelled
        && challenger.labelled >= labelled
        && let (Some(champion), Some(ours), Some(lead)) = (
            s.champion.accuracy(),
            challenger.accuracy(),
            champion_lead(
                (s.champion.correct, s.champion.labelled),
                (challenger.correct, challenger.labelled),
                gate.max_accuracy_drop,
            ),
        )
        // One-sided, at the two-sided readout's level, so a stop is never less sure than the
        // readout's "the champion is better".
        && lead.p_value < SPLIT_ALPHA / 2.0
    {
        broken.push(format!(
            "the champion was right significantly more often: {:.1} % of {} against {:.1} % of {}, a lead of {:.1} points (at least {:.1} with 95 % confidence), more than the {:.1} allowed ({})",
            champion * 100.0,
            s.champion.labelled,
            ours * 100.0,
            challenger.labelled,
            lead.lead * 100.0,
            lead.at_least * 100.0,
            gate.max_accuracy_drop * 100.0,
            p_text(lead.p_value)
        ));
    }
    if broken.is_empty() {
        ShadowVerdict::Pass
    } else {
        ShadowVerdict::Breach(broken)
    }
}

/// The split's significance readout on accuracy, in words.
pub fn split_readout(s: &SplitCounts) -> String {
    let (Some(champion), Some(challenger)) = (s.champion.accuracy(), s.challenger.accuracy())
    else {
        return "no labels yet: accuracy not compared".into();
    };
    let figures = format!(
        "champion right {:.1} % of {}, challenger {:.1} % of {}",
        champion * 100.0,
        s.champion.labelled,
        challenger * 100.0,
        s.challenger.labelled
    );
    match s.accuracy_test() {
        Some(t) if t.p_value < SPLIT_ALPHA => format!(
            "{figures}: the {} is better ({})",
            if t.z > 0.0 { "champion" } else { "challenger" },
            p_text(t.p_value)
        ),
        Some(t) => format!(
            "{figures}: no significant difference ({})",
            p_text(t.p_value)
        ),
        None => format!("{figures}: no difference to test"),
    }
}

/// A p-value as people read it: below 0.0001 it is only "tiny" (the normal approximation says
/// nothing finer).
fn p_text(p: f64) -> String {
    if p < 1e-4 {
        "p < 0.0001".into()
    } else {
        format!("p = {p:.4}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::shadow::tests::compared;
    use crate::split::ArmCounts;

    #[test]
    fn the_default_gate_is_what_an_empty_one_parses_to() {
        assert_eq!(
            serde_json::from_str::<ShadowGate>("{}").unwrap(),
            ShadowGate::default()
        );
    }

    #[test]
    fn a_challenger_that_disagrees_on_live_inputs_is_stopped_and_a_like_one_passes() {
        let gate = ShadowGate::default();
        let mut like = ShadowCounts::default();
        let mut unlike = ShadowCounts::default();
        for i in 0..250 {
            like.add(&compared(
                "stay",
                if i % 50 == 0 { "churn" } else { "stay" },
                0.001,
            ));
            unlike.add(&compared(
                "stay",
                if i % 3 == 0 { "churn" } else { "stay" },
                0.2,
            ));
        }
        assert_eq!(judge(&gate, &like), ShadowVerdict::Pass);
        match judge(&gate, &unlike) {
            ShadowVerdict::Breach(why) => assert!(why[0].contains("agreement 0.664"), "{why:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            judge(&gate, &ShadowCounts::default()),
            ShadowVerdict::Insufficient(_)
        ));
        // With labels: alike answers but the challenger is right less often.
        for i in 0..150 {
            like.add_truth(true, i % 5 != 0);
        }
        match judge(&gate, &like) {
            ShadowVerdict::Breach(why) => assert!(why[0].contains("right 80.0 %"), "{why:?}"),
            other => panic!("{other:?}"),
        }
    }

    fn arm(answered: u64, labelled: u64, correct: u64) -> ArmCounts {
        ArmCounts {
            answered,
            labelled,
            correct,
            ..ArmCounts::default()
        }
    }

    #[test]
    fn a_split_names_the_better_arm_and_stops_a_significantly_worse_challenger() {
        let gate = ShadowGate::default();
        let worse = SplitCounts {
            champion: arm(900, 900, 810),
            challenger: arm(300, 300, 210),
        };
        match judge_split(&gate, &worse) {
            ShadowVerdict::Breach(why) => assert!(why[0].contains("90.0 % of 900"), "{why:?}"),
            other => panic!("{other:?}"),
        }
        assert!(
            split_readout(&worse).contains("the champion is better"),
            "{}",
            split_readout(&worse)
        );
        let better = SplitCounts {
            champion: arm(900, 900, 630),
            challenger: arm(300, 300, 270),
        };
        assert_eq!(judge_split(&gate, &better), ShadowVerdict::Pass);
        assert!(split_readout(&better).contains("the challenger is better"));
        // Two points apart on 300: not significant, and the gate lets it through.
        let alike = SplitCounts {
            champion: arm(900, 900, 810),
            challenger: arm(300, 300, 264),
        };
        assert_eq!(judge_split(&gate, &alike), ShadowVerdict::Pass);
        assert!(split_readout(&alike).contains("no significant difference"));
        // Five points behind on 1,000 each: the readout finds the champion better, but the lead
        // is not surely more than the 2 points allowed, so the gate lets it through; at a
        // margin of 1 point it stops it.
        let behind = SplitCounts {
            champion: arm(1000, 1000, 850),
            challenger: arm(1000, 1000, 800),
        };
        assert!(split_readout(&behind).contains("the champion is better"));
        assert_eq!(judge_split(&gate, &behind), ShadowVerdict::Pass);
        let strict = ShadowGate {
            max_accuracy_drop: 0.01,
            ..ShadowGate::default()
        };
        match judge_split(&strict, &behind) {
            ShadowVerdict::Breach(why) => assert!(
                why[0].contains("a lead of 5.0 points (at least")
                    && why[0].contains("more than the 1.0 allowed"),
                "{why:?}"
            ),
            other => panic!("{other:?}"),
        }
        let few_labels = SplitCounts {
            champion: arm(900, 40, 30),
            challenger: arm(300, 20, 10),
        };
        match judge_split(&gate, &few_labels) {
            ShadowVerdict::Insufficient(why) => {
                assert!(why.contains("labels are arriving"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            judge_split(
                &gate,
                &SplitCounts {
                    challenger: arm(10, 0, 0),
                    ..SplitCounts::default()
                }
            ),
            ShadowVerdict::Insufficient(_)
        ));
        let failing = SplitCounts {
            challenger: ArmCounts {
                errors: 30,
                ..arm(300, 0, 0)
            },
            ..SplitCounts::default()
        };
        assert!(matches!(
            judge_split(&gate, &failing),
            ShadowVerdict::Breach(_)
        ));
    }
}
