//! The health check a candidate must pass before it serves (design brief §4): warm-up runs, every
//! golden case within tolerance and free of NaN/infinity, then p99 latency of single-row inference
//! within the budget. Judgement reuses `protocol::health`, so the build scripts, the agent and the
//! tests agree on what "correct" means.

use std::time::Instant;

use edgefleet_protocol::health::{GoldenCase, HealthSpec, Mismatch, quantile};
use edgefleet_protocol::interface::ModelInterface;

use crate::{Error, Inputs, LoadedModel, features_to_input};

/// A single timed run slower than this many budgets ends the latency measurement at once: a
/// hopeless candidate should not hold the device for `latency_runs` slow runs.
const HOPELESS_FACTOR: f64 = 20.0;

#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub timed_runs: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum HealthFailure {
    #[error("golden vectors: {0}")]
    Golden(#[from] Mismatch),
    #[error("golden case {case:?} could not run: {source}")]
    Run {
        case: String,
        #[source]
        source: Error,
    },
    #[error("p99 latency {p99_ms:.3} ms over {runs} runs exceeds the budget of {budget_ms:.3} ms")]
    Latency {
        p99_ms: f64,
        budget_ms: f64,
        runs: usize,
    },
}

/// Builds the inputs of a golden case.
pub fn case_inputs(interface: &ModelInterface, case: &GoldenCase) -> Result<Inputs, Error> {
    if !case.features.is_empty() {
        return features_to_input(interface, &case.features);
    }
    let mut inputs = Inputs::new();
    for (name, input) in &case.inputs {
        inputs.insert(name.clone(), input.materialize(name)?);
    }
    Ok(inputs)
}

/// Runs the whole health check. Latency is measured on the first case's inputs (a single row for
/// tabular models: the shape `:predict` serves).
pub fn check(
    model: &dyn LoadedModel,
    interface: &ModelInterface,
    spec: &HealthSpec,
) -> Result<HealthReport, HealthFailure> {
    let prepared: Vec<(&GoldenCase, Inputs)> = spec
        .cases
        .iter()
        .map(|case| {
            case_inputs(interface, case)
                .map(|inputs| (case, inputs))
                .map_err(|source| HealthFailure::Run {
                    case: case.name.clone(),
                    source,
                })
        })
        .collect::<Result<_, _>>()?;
    let run = |case: &GoldenCase, inputs: &Inputs| {
        model.run(inputs).map_err(|source| HealthFailure::Run {
            case: case.name.clone(),
            source,
        })
    };
    let Some((first_case, first_inputs)) = prepared.first() else {
        return Err(HealthFailure::Golden(Mismatch::MissingOutput {
            case: String::new(),
            output: "no golden cases".into(),
        }));
    };
    for _ in 0..spec.warmup_runs {
        run(first_case, first_inputs)?;
    }
    for (case, inputs) in &prepared {
        spec.check_case(case, &run(case, inputs)?)?;
    }
    let mut samples = Vec::with_capacity(spec.latency_runs as usize);
    for _ in 0..spec.latency_runs {
        let started = Instant::now();
        run(first_case, first_inputs)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        samples.push(ms);
        if ms > spec.p99_budget_ms * HOPELESS_FACTOR {
            break;
        }
    }
    judge_latency(&mut samples, spec.p99_budget_ms)
}

/// Pure verdict on latency samples (ms) against a p99 budget.
pub fn judge_latency(samples: &mut [f64], budget_ms: f64) -> Result<HealthReport, HealthFailure> {
    let runs = samples.len();
    let p99_ms = quantile(samples, 0.99).unwrap_or(f64::INFINITY);
    let p50_ms = quantile(samples, 0.5).unwrap_or(f64::INFINITY);
    if p99_ms > budget_ms {
        return Err(HealthFailure::Latency {
            p99_ms,
            budget_ms,
            runs,
        });
    }
    Ok(HealthReport {
        p50_ms,
        p99_ms,
        timed_runs: runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_judged_on_p99_not_the_mean() {
        let mut ok: Vec<f64> = vec![1.0; 100];
        assert!(judge_latency(&mut ok, 2.0).is_ok());
        let mut tail: Vec<f64> = vec![1.0; 97];
        tail.extend([5.0, 5.0, 5.0]);
        assert!(matches!(
            judge_latency(&mut tail, 2.0),
            Err(HealthFailure::Latency { runs: 100, .. })
        ));
        assert!(judge_latency(&mut [], 2.0).is_err());
    }
}
