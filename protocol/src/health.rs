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
    /// How far a float output may stray; integer, bool and string outputs must match exactly.
    pub tolerance: Tolerance,
    /// Per-output overrides of `tolerance` (a float16 head needs more room than a float32 one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_tolerances: BTreeMap<String, Tolerance>,
    /// Empty in signed metadata whose release names a `golden.json`
    /// ([`crate::target::ModelTargetMeta::files`]); filled once that file is fetched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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

/// `shape` filled with uniform values in [0, 1) from [`uniform_fill`]`(uniform_seed, n)`; a float
/// type only.
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
                let data =
                    crate::TensorData::from_unit_floats(g.dtype, uniform_fill(g.uniform_seed, n))
                        .ok_or_else(|| Error::TensorMismatch {
                        tensor: name.to_string(),
                        detail: format!(
                            "generated inputs are floats; {} cannot be generated",
                            g.dtype
                        ),
                    })?;
                Tensor::new(g.shape.clone(), data)
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
    #[error("case {case:?}: output {output:?} is {actual}, the interface declares {expected}")]
    DType {
        case: String,
        output: String,
        expected: crate::DType,
        actual: crate::DType,
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
    #[error("case {case:?}: output {output:?}[{index}] = {actual}, expected exactly {expected}")]
    Exact {
        case: String,
        output: String,
        index: usize,
        expected: String,
        actual: String,
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
    /// The settings and 1 to [`MAX_CASES`] valid cases.
    pub fn validate(&self, interface: &ModelInterface) -> Result<(), Error> {
        self.validate_settings(interface)?;
        self.validate_cases(interface)
    }

    /// Budget, tolerances and run counts: what can be checked before the cases are fetched.
    pub fn validate_settings(&self, interface: &ModelInterface) -> Result<(), Error> {
        let bad = |detail: String| Error::invalid("health spec", detail);
        if !(self.p99_budget_ms.is_finite() && self.p99_budget_ms > 0.0) {
            return Err(bad("p99_budget_ms must be a positive number".into()));
        }
        let tol_ok = |v: f64| v.is_finite() && v >= 0.0;
        for (output, tolerance) in
            std::iter::once((&String::new(), &self.tolerance)).chain(&self.output_tolerances)
        {
            if !tol_ok(tolerance.abs) || !tol_ok(tolerance.rel) {
                return Err(bad("tolerances must be finite and >= 0".into()));
            }
            if !output.is_empty() && interface.output(output).is_none() {
                return Err(bad(format!(
                    "output_tolerances names {output:?}, which is not an output"
                )));
            }
        }
        if self.latency_runs == 0 || self.latency_runs > 10_000 || self.warmup_runs > 10_000 {
            return Err(bad(
                "latency_runs must be 1..=10000 and warmup_runs <= 10000".into(),
            ));
        }
        Ok(())
    }

    /// 1 to [`MAX_CASES`] cases, each with inputs and outputs the interface declares.
    pub fn validate_cases(&self, interface: &ModelInterface) -> Result<(), Error> {
        let bad = |detail: String| Error::invalid("health spec", detail);
        if self.cases.is_empty() || self.cases.len() > MAX_CASES {
            return Err(bad(format!("needs 1 to {MAX_CASES} golden cases")));
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
                let dtype = match input {
                    GoldenInput::Values(tensor) => {
                        tensor.validate(name)?;
                        tensor.dtype()
                    }
                    GoldenInput::Generated(g) => g.dtype,
                };
                if dtype != spec.dtype {
                    return Err(bad(format!(
                        "case {:?}: input {name:?} is {dtype}, the interface declares {}",
                        case.name, spec.dtype
                    )));
                }
                if matches!(input, GoldenInput::Generated(_)) && !dtype.is_float() {
                    return Err(bad(format!(
                        "case {:?}: input {name:?}: only float inputs can be generated; give {dtype} values",
                        case.name
                    )));
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
                let spec = interface.output(name).ok_or_else(|| {
                    bad(format!("case {:?}: {name:?} is not an output", case.name))
                })?;
                tensor.validate(name)?;
                if tensor.dtype() != spec.dtype {
                    return Err(bad(format!(
                        "case {:?}: expected {name:?} is {}, the interface declares {}",
                        case.name,
                        tensor.dtype(),
                        spec.dtype
                    )));
                }
            }
        }
        Ok(())
    }

    /// The tolerance a float output is judged with.
    pub fn tolerance_of(&self, output: &str) -> Tolerance {
        self.output_tolerances
            .get(output)
            .copied()
            .unwrap_or(self.tolerance)
    }

    /// Compares one case's actual outputs with its expected ones.
    pub fn check_case(
        &self,
        case: &GoldenCase,
        actual: &BTreeMap<String, Tensor>,
    ) -> Result<(), Mismatch> {
        for (output, expected) in &case.expected {
            let Some(tensor) = actual.get(output) else {
                return Err(Mismatch::MissingOutput {
                    case: case.name.clone(),
                    output: output.clone(),
                });
            };
            check_tensor(
                &case.name,
                output,
                expected,
                tensor,
                self.tolerance_of(output),
            )?;
        }
        Ok(())
    }
}

/// Judges one output tensor: type and shape equal; float values finite and within tolerance,
/// every other type exactly equal.
pub fn check_tensor(
    case: &str,
    output: &str,
    expected: &Tensor,
    actual: &Tensor,
    tolerance: Tolerance,
) -> Result<(), Mismatch> {
    if expected.dtype() != actual.dtype() {
        return Err(Mismatch::DType {
            case: case.into(),
            output: output.into(),
            expected: expected.dtype(),
            actual: actual.dtype(),
        });
    }
    let floats = expected.dtype().is_float();
    if let Some(index) = actual.data.first_non_finite() {
        return Err(Mismatch::NotFinite {
            case: case.into(),
            output: output.into(),
            index,
        });
    }
    if expected.shape != actual.shape || actual.data.len() != expected.data.len() {
        return Err(Mismatch::Shape {
            case: case.into(),
            output: output.into(),
            expected: expected.shape.clone(),
            actual: actual.shape.clone(),
        });
    }
    for index in 0..expected.data.len() {
        if floats {
            let (Some(e), Some(a)) = (expected.data.number(index), actual.data.number(index))
            else {
                continue;
            };
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
        } else {
            let (e, a) = (
                expected.data.json_value(index),
                actual.data.json_value(index),
            );
            if e != a {
                return Err(Mismatch::Exact {
                    case: case.into(),
                    output: output.into(),
                    index,
                    expected: e.to_string(),
                    actual: a.to_string(),
                });
            }
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
        Tensor::new(
            shape,
            crate::TensorData::Float32(data.into_iter().map(|v| v as f32).collect()),
        )
        .unwrap()
    }

    #[test]
    fn values_within_tolerance_pass_and_outside_fail_naming_the_index() {
        let tol = Tolerance {
            abs: 1e-3,
            rel: 0.0,
        };
        let exp = t(vec![1, 2], vec![0.5, 0.5]);
        let near = t(vec![1, 2], vec![0.5005, 0.4995]);
        assert!(check_tensor("c", "p", &exp, &near, tol).is_ok());
        let far = t(vec![1, 2], vec![0.5, 0.51]);
        let err = check_tensor("c", "p", &exp, &far, tol).unwrap_err();
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
            let err = check_tensor("c", "p", &exp, &t(vec![2], vec![0.0, bad]), tol).unwrap_err();
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
            check_tensor("c", "p", &exp, &t(vec![2, 1], vec![0.0, 0.0]), tol),
            Err(Mismatch::Shape { .. })
        ));
    }

    #[test]
    fn integers_bools_and_strings_match_exactly_whatever_the_tolerance() {
        use crate::TensorData;
        let tol = Tolerance {
            abs: 10.0,
            rel: 1.0,
        };
        let ints = |v: Vec<i64>| Tensor::new(vec![v.len()], TensorData::Int64(v)).unwrap();
        assert!(check_tensor("c", "label", &ints(vec![1, 2]), &ints(vec![1, 2]), tol).is_ok());
        let err =
            check_tensor("c", "label", &ints(vec![1, 2]), &ints(vec![1, 3]), tol).unwrap_err();
        assert!(matches!(err, Mismatch::Exact { index: 1, .. }), "{err}");
        let words = |v: &[&str]| {
            Tensor::new(
                vec![v.len()],
                TensorData::String(v.iter().map(|s| s.to_string()).collect()),
            )
            .unwrap()
        };
        assert!(check_tensor("c", "l", &words(&["a"]), &words(&["b"]), tol).is_err());
        // A model that answers float where int64 was signed is wrong, however close the values.
        let err =
            check_tensor("c", "label", &ints(vec![1]), &t(vec![1], vec![1.0]), tol).unwrap_err();
        assert!(matches!(err, Mismatch::DType { .. }), "{err}");
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
