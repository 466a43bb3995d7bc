//! The on-device health check a candidate model must pass before it serves: golden vectors within
//! tolerance, no NaN or infinity, and a p99 latency budget measured after warm-up.
//!
//! The comparison logic lives here, as plain functions, so the agent, the model build's own checks
//! and the tests all judge a model's outputs the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::interface::ModelInterface;
use crate::{DType, Error, Tensor};

/// Upper bound on golden cases, so that a target's metadata stays small to verify and store.
pub const MAX_CASES: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// Runs discarded before timing, so lazy initialisation does not count against the budget.
    #[serde(default = "default_warmup_runs")]
    pub warmup_runs: u32,
    /// Timed runs from which p99 is taken.
    #[serde(default = "default_latency_runs")]
    pub latency_runs: u32,
    /// The 99th-percentile latency of one single-row inference must stay within this, in ms.
    pub p99_budget_ms: f64,
    pub tolerance: Tolerance,
    pub cases: Vec<GoldenCase>,
}

fn default_warmup_runs() -> u32 {
    3
}

fn default_latency_runs() -> u32 {
    50
}

/// `|actual - expected| <= abs + rel * |expected|`, the numpy `allclose` rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

/// One golden vector: the inputs, either as tensors or as feature rows (which then also check the
/// feature schema's encoding), and the outputs the reference runtime produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenCase {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, GoldenInput>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<Map<String, Value>>,
    pub expected: BTreeMap<String, Tensor>,
}

/// A golden input tensor: literal values, or (for large inputs such as images, which would bloat
/// the signed metadata) a shape filled from a seeded generator that `models/build.py` mirrors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GoldenInput {
    Values(Tensor),
    Generated(GeneratedTensor),
}

/// `shape` filled with uniform values in [0, 1) from [`uniform_fill`]`(uniform_seed, n)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub uniform_seed: u64,
}

impl GoldenInput {
    pub fn shape(&self) -> &[usize] {
        match self {
            GoldenInput::Values(t) => &t.shape,
            GoldenInput::Generated(g) => &g.shape,
        }
    }

    /// The concrete tensor; `name` goes into errors.
    pub fn materialize(&self, name: &str) -> Result<Tensor, Error> {
        match self {
            GoldenInput::Values(t) => {
                t.validate(name)?;
                Ok(t.clone())
            }
            GoldenInput::Generated(g) => {
                let n = Tensor::element_count(&g.shape)
                    .filter(|&n| n <= crate::tensor::MAX_TENSOR_ELEMENTS)
                    .ok_or_else(|| Error::TensorMismatch {
                        tensor: name.to_string(),
                        detail: format!("generated shape {:?} is too large", g.shape),
                    })?;
                Tensor::new(g.dtype, g.shape.clone(), uniform_fill(g.uniform_seed, n))
            }
        }
    }
}

/// `n` values in [0, 1), each exactly representable in f32: the top 24 bits of SplitMix64 outputs
/// for states `seed + k * 0x9E3779B97F4A7C15`, k = 1..=n. Chosen because it is a few lines in any
/// language (numpy vectorises it), so golden inputs need not be shipped as data.
pub fn uniform_fill(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f64 / (1u64 << 24) as f64
        })
        .collect()
}

/// Why a candidate's outputs were judged wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    #[error("case {case:?}: output {output:?} is missing")]
    MissingOutput { case: String, output: String },
    #[error("case {case:?}: output {output:?} has shape {actual:?}, expected {expected:?}")]
    Shape {
        case: String,
        output: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("case {case:?}: output {output:?} contains NaN or infinity at index {index}")]
    NotFinite {
        case: String,
        output: String,
        index: usize,
    },
    #[error(
        "case {case:?}: output {output:?}[{index}] = {actual}, expected {expected} (tolerance abs {abs}, rel {rel})"
    )]
    Value {
        case: String,
        output: String,
        index: usize,
        expected: f64,
        actual: f64,
        abs: f64,
        rel: f64,
    },
}

impl Tolerance {
    pub fn accepts(&self, expected: f64, actual: f64) -> bool {
        (actual - expected).abs() <= self.abs + self.rel * expected.abs()
    }

    /// Largest relative error between two equally long slices (used to report how far two
    /// runtimes disagree).
    pub fn max_relative_error(expected: &[f64], actual: &[f64]) -> f64 {
        expected
            .iter()
            .zip(actual)
            .map(|(e, a)| (a - e).abs() / e.abs().max(1e-6))
            .fold(0.0, f64::max)
    }
}

impl HealthSpec {
    pub fn validate(&self, interface: &ModelInterface) -> Result<(), Error> {
        let bad = |detail: String| Error::invalid("health spec", detail);
        if !(self.p99_budget_ms.is_finite() && self.p99_budget_ms > 0.0) {
            return Err(bad("p99_budget_ms must be a positive number".into()));
        }
        let tol_ok = |v: f64| v.is_finite() && v >= 0.0;
        if !tol_ok(self.tolerance.abs) || !tol_ok(self.tolerance.rel) {
            return Err(bad("tolerances must be finite and >= 0".into()));
        }
        if self.cases.is_empty() || self.cases.len() > MAX_CASES {
            return Err(bad(format!("needs 1 to {MAX_CASES} golden cases")));
        }
        if self.latency_runs == 0 || self.latency_runs > 10_000 || self.warmup_runs > 10_000 {
            return Err(bad(
                "latency_runs must be 1..=10000 and warmup_runs <= 10000".into(),
            ));
        }
        for case in &self.cases {
            let has_tensors = !case.inputs.is_empty();
            let has_features = !case.features.is_empty();
            if has_tensors == has_features {
                return Err(bad(format!(
                    "case {:?} must give either tensor inputs or feature rows",
                    case.name
                )));
            }
            if has_features && interface.features.is_none() {
                return Err(bad(format!(
                    "case {:?} gives feature rows but the model has no feature schema",
                    case.name
                )));
            }
            for (name, input) in &case.inputs {
                let spec = interface.input(name).ok_or_else(|| {
                    bad(format!("case {:?}: {name:?} is not an input", case.name))
                })?;
                if let GoldenInput::Values(tensor) = input {
                    tensor.validate(name)?;
                }
                if !spec.accepts_shape(input.shape()) {
                    return Err(bad(format!(
                        "case {:?}: input {name:?} shape {:?} does not fit {:?}",
                        case.name,
                        input.shape(),
                        spec.shape
                    )));
                }
            }
            if case.expected.is_empty() {
                return Err(bad(format!("case {:?} expects no outputs", case.name)));
            }
            for (name, tensor) in &case.expected {
                interface.output(name).ok_or_else(|| {
                    bad(format!("case {:?}: {name:?} is not an output", case.name))
                })?;
                tensor.validate(name)?;
            }
        }
        Ok(())
    }

    /// Compares one case's actual outputs (name → shape, values) with its expected ones.
    pub fn check_case(
        &self,
        case: &GoldenCase,
        actual: &BTreeMap<String, (Vec<usize>, Vec<f64>)>,
    ) -> Result<(), Mismatch> {
        for (output, expected) in &case.expected {
            let Some((shape, values)) = actual.get(output) else {
                return Err(Mismatch::MissingOutput {
                    case: case.name.clone(),
                    output: output.clone(),
                });
            };
            check_tensor(&case.name, output, expected, shape, values, self.tolerance)?;
        }
        Ok(())
    }
}

/// Judges one output tensor: shape equal, every value finite and within tolerance.
pub fn check_tensor(
    case: &str,
    output: &str,
    expected: &Tensor,
    shape: &[usize],
    values: &[f64],
    tolerance: Tolerance,
) -> Result<(), Mismatch> {
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(Mismatch::NotFinite {
            case: case.into(),
            output: output.into(),
            index,
        });
    }
    if expected.shape != shape || values.len() != expected.data.len() {
        return Err(Mismatch::Shape {
            case: case.into(),
            output: output.into(),
            expected: expected.shape.clone(),
            actual: shape.to_vec(),
        });
    }
    for (index, (&e, &a)) in expected.data.iter().zip(values).enumerate() {
        if !tolerance.accepts(e, a) {
            return Err(Mismatch::Value {
                case: case.into(),
                output: output.into(),
                index,
                expected: e,
                actual: a,
                abs: tolerance.abs,
                rel: tolerance.rel,
            });
        }
    }
    Ok(())
}

/// The `q`-quantile (0..=1) of latency samples by the nearest-rank method; `None` when empty.
pub fn quantile(samples: &mut [f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: Vec<usize>, data: Vec<f64>) -> Tensor {
        Tensor::new(crate::DType::Float32, shape, data).unwrap()
    }

    #[test]
    fn values_within_tolerance_pass_and_outside_fail_naming_the_index() {
        let tol = Tolerance {
            abs: 1e-3,
            rel: 0.0,
        };
        let exp = t(vec![1, 2], vec![0.5, 0.5]);
        assert!(check_tensor("c", "p", &exp, &[1, 2], &[0.5005, 0.4995], tol).is_ok());
        let err = check_tensor("c", "p", &exp, &[1, 2], &[0.5, 0.51], tol).unwrap_err();
        assert!(matches!(err, Mismatch::Value { index: 1, .. }), "{err}");
    }

    #[test]
    fn nan_and_infinity_always_fail_even_with_huge_tolerance() {
        let tol = Tolerance {
            abs: 1e30,
            rel: 1e30,
        };
        let exp = t(vec![2], vec![0.0, 0.0]);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = check_tensor("c", "p", &exp, &[2], &[0.0, bad], tol).unwrap_err();
            assert_eq!(
                err,
                Mismatch::NotFinite {
                    case: "c".into(),
                    output: "p".into(),
                    index: 1
                }
            );
        }
    }

    #[test]
    fn wrong_shape_fails() {
        let tol = Tolerance { abs: 1.0, rel: 0.0 };
        let exp = t(vec![1, 2], vec![0.0, 0.0]);
        assert!(matches!(
            check_tensor("c", "p", &exp, &[2, 1], &[0.0, 0.0], tol),
            Err(Mismatch::Shape { .. })
        ));
    }

    #[test]
    fn uniform_fill_matches_the_python_mirror_and_stays_in_range() {
        // Values printed by models/build.py's uniform_fill(7, 3).
        let v = uniform_fill(7, 3);
        assert_eq!(v, vec![PY_FILL_7[0], PY_FILL_7[1], PY_FILL_7[2]]);
        assert!(
            uniform_fill(1, 10_000)
                .iter()
                .all(|&x| (0.0..1.0).contains(&x))
        );
    }

    const PY_FILL_7: [f64; 3] = [
        0.38982969522476196,
        0.016788244247436523,
        0.9007606506347656,
    ];

    #[test]
    fn nearest_rank_quantiles() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut s, 0.99), Some(99.0));
        assert_eq!(quantile(&mut s, 0.5), Some(50.0));
        assert_eq!(quantile(&mut s, 1.0), Some(100.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
