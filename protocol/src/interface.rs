//! A model's interface: its named input and output tensors, and the feature schema that maps a
//! JSON object of named features to the input tensor.
//!
//! The preprocessing (order, scaling, categorical encoding, defaults) ships inside the signed
//! target metadata and is versioned with the model, so the device applies exactly what training
//! applied. `models/build.py` writes the same schema it trained with, and the golden vectors in
//! `health.json` include feature-level cases that run through [`FeatureSchema::encode`].

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{DType, Error};

/// Largest interface a model may declare, so that a hostile target cannot make a device allocate
/// without bound while it validates metadata.
pub const MAX_FEATURES: usize = 4096;
pub const MAX_CATEGORIES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInterface {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Present for tabular models served at `:predict`; tensor-only models (vision) omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeatureSchema>,
    /// How to read a prediction out of the outputs; absent means raw tensors only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<PredictionSpec>,
    /// The largest `/v2/models/{name}/infer` body this model expects, in bytes (an image model:
    /// its tensors and the JSON header). Devices take it up to their `api.max_model_body_bytes`;
    /// absent, their `api.max_body_bytes` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u64>,
}

/// One named tensor. A dimension of `-1` is dynamic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<i64>,
    /// Names of the dynamic axes, one entry per axis (`null` for a fixed or anonymous one), e.g.
    /// `["batch", "sequence"]`. Inputs whose axes share a name take the same size in a request;
    /// an anonymous one varies on its own, except a dynamic first axis, which is `batch`.
    /// `fleetctl push` names the axes the graph names (its `dim_param`) and the interface does
    /// not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dims: Vec<Option<String>>,
}

/// The name of an anonymous dynamic first axis.
pub const BATCH_DIM: &str = "batch";

impl TensorSpec {
    /// The name axis `axis` goes by, if it is dynamic and named (or the first axis).
    pub fn dim_name(&self, axis: usize) -> Option<&str> {
        if self.shape.get(axis).is_none_or(|&d| d >= 0) {
            return None;
        }
        match self.dims.get(axis) {
            Some(Some(name)) => Some(name),
            _ if axis == 0 => Some(BATCH_DIM),
            _ => None,
        }
    }

    /// Whether a concrete shape fits this spec (same rank; fixed dims equal).
    pub fn accepts_shape(&self, shape: &[usize]) -> bool {
        shape.len() == self.shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(&want, &got)| want < 0 || usize::try_from(want) == Ok(got))
    }

    /// The shape with every dynamic dimension set to `batch`.
    pub fn concrete_shape(&self, batch: usize) -> Vec<usize> {
        self.shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(batch))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSchema {
    /// Name of the input tensor the features fill, shaped `[batch, width]`.
    pub input: String,
    /// Column order of the input tensor is the order of this list (one-hot features take several
    /// columns).
    pub features: Vec<Feature>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Feature {
    Numeric {
        name: String,
        #[serde(default)]
        scaling: Scaling,
        /// Value used when the request omits the feature; absent means the feature is required.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<f64>,
    },
    Categorical {
        name: String,
        categories: Vec<String>,
        #[serde(default)]
        encoding: CategoricalEncoding,
        #[serde(default)]
        unseen: UnseenPolicy,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<String>,
    },
    Boolean {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<bool>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scaling {
    #[default]
    None,
    /// `(x - mean) / std`.
    Standard { mean: f64, std: f64 },
    /// `(x - min) / (max - min)`.
    MinMax { min: f64, max: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CategoricalEncoding {
    /// One column per category (plus one for the fallback bucket when `unseen = "fallback"`).
    #[default]
    OneHot,
    /// One column holding the category's index (the fallback bucket is index `categories.len()`).
    Ordinal,
}

/// What to do with a category the model never saw in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnseenPolicy {
    /// Refuse the request, naming the feature and the value.
    #[default]
    Error,
    /// Map it to an extra "other" bucket the model was trained with.
    Fallback,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case", deny_unknown_fields)]
pub enum PredictionSpec {
    /// `output` holds one probability per label; the prediction is the most probable label.
    Classification { output: String, labels: Vec<String> },
    /// `output` holds the predicted value(s).
    Regression { output: String },
}

/// What a `:predict` call answers for one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<BTreeMap<String, f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Vec<f64>>,
}

impl Feature {
    pub fn name(&self) -> &str {
        match self {
            Feature::Numeric { name, .. }
            | Feature::Categorical { name, .. }
            | Feature::Boolean { name, .. } => name,
        }
    }

    /// Columns this feature occupies in the input tensor.
    pub fn width(&self) -> usize {
        match self {
            Feature::Categorical {
                categories,
                encoding: CategoricalEncoding::OneHot,
                unseen,
                ..
            } => categories.len() + usize::from(*unseen == UnseenPolicy::Fallback),
            _ => 1,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |detail: String| {
            Error::invalid(
                "feature schema",
                format!("feature {:?}: {detail}", self.name()),
            )
        };
        match self {
            Feature::Numeric {
                scaling, default, ..
            } => {
                if default.is_some_and(|d| !d.is_finite()) {
                    return Err(bad("default must be finite".into()));
                }
                match *scaling {
                    Scaling::None => {}
                    Scaling::Standard { mean, std } => {
                        if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
                            return Err(bad(
                                "standard scaling needs a finite mean and std > 0".into()
                            ));
                        }
                    }
                    Scaling::MinMax { min, max } => {
                        if !min.is_finite() || !max.is_finite() || max <= min {
                            return Err(bad("min_max scaling needs finite min < max".into()));
                        }
                    }
                }
            }
            Feature::Categorical {
                categories,
                default,
                ..
            } => {
                if categories.is_empty() || categories.len() > MAX_CATEGORIES {
                    return Err(bad(format!("needs 1 to {MAX_CATEGORIES} categories")));
                }
                let unique: HashSet<&String> = categories.iter().collect();
                if unique.len() != categories.len() {
                    return Err(bad("categories must be unique".into()));
                }
                if let Some(d) = default.as_ref().filter(|d| !categories.contains(d)) {
                    return Err(bad(format!("default {d:?} is not one of its categories")));
                }
            }
            Feature::Boolean { .. } => {}
        }
        Ok(())
    }

    /// Writes this feature's encoded columns for `value` (or its default when `None`).
    fn encode_into(&self, value: Option<&Value>, out: &mut Vec<f32>) -> Result<(), Error> {
        let name = self.name();
        let wrong_type = |expected, found: &Value| Error::WrongFeatureType {
            feature: name.to_string(),
            expected,
            found: json_type_name(found),
        };
        let missing = || Error::MissingFeature {
            feature: name.to_string(),
        };
        match self {
            Feature::Numeric {
                scaling, default, ..
            } => {
                let x = match value {
                    None | Some(Value::Null) => default.ok_or_else(missing)?,
                    Some(Value::Number(n)) => {
                        n.as_f64().ok_or_else(|| Error::NonFiniteFeature {
                            feature: name.to_string(),
                        })?
                    }
                    Some(other) => return Err(wrong_type("a number", other)),
                };
                if !x.is_finite() {
                    return Err(Error::NonFiniteFeature {
                        feature: name.to_string(),
                    });
                }
                let scaled = match *scaling {
                    Scaling::None => x,
                    Scaling::Standard { mean, std } => (x - mean) / std,
                    Scaling::MinMax { min, max } => (x - min) / (max - min),
                } as f32;
                // Finite as a JSON double yet infinite as float32 (-1e300): the model would
                // answer garbage or fail, and the failure would count against it.
                if !scaled.is_finite() {
                    return Err(Error::NonFiniteFeature {
                        feature: name.to_string(),
                    });
                }
                out.push(scaled);
            }
            Feature::Categorical {
                categories,
                encoding,
                unseen,
                default,
                ..
            } => {
                let category: &str = match value {
                    None | Some(Value::Null) => default.as_deref().ok_or_else(missing)?,
                    Some(Value::String(s)) => s,
                    Some(other) => return Err(wrong_type("a string", other)),
                };
                let index = match categories.iter().position(|c| c == category) {
                    Some(i) => i,
                    None if *unseen == UnseenPolicy::Fallback => categories.len(),
                    None => {
                        return Err(Error::UnseenCategory {
                            feature: name.to_string(),
                            value: category.chars().take(100).collect(),
                            known: categories.join(", "),
                        });
                    }
                };
                match encoding {
                    CategoricalEncoding::OneHot => {
                        let start = out.len();
                        out.resize(start + self.width(), 0.0);
                        out[start + index] = 1.0;
                    }
                    CategoricalEncoding::Ordinal => out.push(index as f32),
                }
            }
            Feature::Boolean { default, .. } => {
                let b = match value {
                    None | Some(Value::Null) => default.ok_or_else(missing)?,
                    Some(Value::Bool(b)) => *b,
                    Some(other) => return Err(wrong_type("true or false", other)),
                };
                out.push(if b { 1.0 } else { 0.0 });
            }
        }
        Ok(())
    }
}

impl FeatureSchema {
    /// Width of one encoded row.
    pub fn width(&self) -> usize {
        self.features.iter().map(Feature::width).sum()
    }

    pub fn validate(&self) -> Result<(), Error> {
        if self.features.is_empty() || self.features.len() > MAX_FEATURES {
            return Err(Error::invalid(
                "feature schema",
                format!("needs 1 to {MAX_FEATURES} features"),
            ));
        }
        let mut seen = HashSet::new();
        for feature in &self.features {
            if !seen.insert(feature.name()) {
                return Err(Error::invalid(
                    "feature schema",
                    format!("feature {:?} appears twice", feature.name()),
                ));
            }
            feature.validate()?;
        }
        Ok(())
    }

    /// Encodes one request row. Unknown keys are refused so that a misspelt optional feature
    /// cannot silently fall back to its default.
    pub fn encode(&self, row: &serde_json::Map<String, Value>) -> Result<Vec<f32>, Error> {
        let mut out = Vec::with_capacity(self.width());
        self.encode_into(row, &mut out)?;
        Ok(out)
    }

    /// Appends one encoded row to `out` (for batching without a copy per row).
    pub fn encode_into(
        &self,
        row: &serde_json::Map<String, Value>,
        out: &mut Vec<f32>,
    ) -> Result<(), Error> {
        if let Some(unknown) = row
            .keys()
            .find(|k| !self.features.iter().any(|f| f.name() == k.as_str()))
        {
            return Err(Error::UnknownFeature {
                feature: unknown.chars().take(100).collect(),
            });
        }
        for feature in &self.features {
            feature.encode_into(row.get(feature.name()), out)?;
        }
        Ok(())
    }
}

/// Whether `name` can name an axis: 1 to 64 letters, digits, `_`, `-` or `.`.
pub fn is_dim_name(name: &str) -> bool {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    !name.is_empty() && name.len() <= 64 && name.chars().all(fine)
}

fn validate_dim_names(spec: &TensorSpec) -> Result<(), String> {
    if spec.dims.is_empty() {
        return Ok(());
    }
    if spec.dims.len() != spec.shape.len() {
        return Err(format!(
            "tensor {:?}: dims names {} axes, its shape {:?} has {}",
            spec.name,
            spec.dims.len(),
            spec.shape,
            spec.shape.len()
        ));
    }
    for (axis, (name, &size)) in spec.dims.iter().zip(&spec.shape).enumerate() {
        let Some(name) = name else { continue };
        if size >= 0 {
            return Err(format!(
                "tensor {:?}: axis {axis} is fixed at {size}; only dynamic (-1) axes are named \
                 (use null)",
                spec.name
            ));
        }
        if !is_dim_name(name) {
            return Err(format!(
                "tensor {:?}: axis {axis} name {name:?} needs 1 to 64 letters, digits, '_', '-' \
                 or '.'",
                spec.name
            ));
        }
    }
    Ok(())
}

impl ModelInterface {
    /// Checks internal consistency: unique tensor names, a feature schema that fills a declared
    /// 2-D float input of matching width, a prediction spec naming a declared output whose width
    /// matches its labels.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |detail: String| Error::invalid("model interface", detail);
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Err(bad("declare at least one input and one output".into()));
        }
        if self.max_request_bytes.is_some_and(|m| m < 1024) {
            return Err(bad(
                "max_request_bytes must be at least 1024 (or absent: the device's default)".into(),
            ));
        }
        let mut names = HashSet::new();
        for spec in self.inputs.iter().chain(&self.outputs) {
            if spec.name.is_empty() || !names.insert(spec.name.as_str()) {
                return Err(bad(format!(
                    "tensor name {:?} is empty or repeated",
                    spec.name
                )));
            }
            if spec.shape.is_empty() || spec.shape.iter().any(|&d| d == 0 || d < -1) {
                return Err(bad(format!(
                    "tensor {:?}: shape {:?} needs rank >= 1 and dims > 0 or -1",
                    spec.name, spec.shape
                )));
            }
            validate_dim_names(spec).map_err(bad)?;
        }
        if let Some(schema) = &self.features {
            schema.validate()?;
            let input = self.input(&schema.input).ok_or_else(|| {
                bad(format!(
                    "feature schema fills {:?}, which is not an input",
                    schema.input
                ))
            })?;
            let width = i64::try_from(schema.width()).unwrap_or(i64::MAX);
            if input.dtype != DType::Float32 || input.shape.len() != 2 || input.shape[1] != width {
                return Err(bad(format!(
                    "feature schema encodes {width} float32 columns but input {:?} is {:?} {:?}",
                    input.name, input.dtype, input.shape
                )));
            }
        }
        if let Some(prediction) = &self.prediction {
            let output = prediction.output();
            if let Some(spec) = self.output(output).filter(|s| !s.dtype.is_float()) {
                return Err(bad(format!(
                    "prediction reads {output:?}, which is {}; scores and values must be floats \
                     (read integer labels through /v2 infer)",
                    spec.dtype
                )));
            }
        }
        if let Some(PredictionSpec::Classification { output, labels }) = &self.prediction {
            let spec = self.output(output).ok_or_else(|| {
                bad(format!(
                    "prediction reads {output:?}, which is not an output"
                ))
            })?;
            let width = spec.shape.last().copied().unwrap_or(0);
            if labels.is_empty() || i64::try_from(labels.len()) != Ok(width) {
                return Err(bad(format!(
                    "{} labels for output {output:?} of shape {:?}",
                    labels.len(),
                    spec.shape
                )));
            }
        }
        if let Some(PredictionSpec::Regression { output }) = &self.prediction {
            self.output(output).ok_or_else(|| {
                bad(format!(
                    "prediction reads {output:?}, which is not an output"
                ))
            })?;
        }
        Ok(())
    }

    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|s| s.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|s| s.name == name)
    }
}

impl PredictionSpec {
    pub fn output(&self) -> &str {
        match self {
            PredictionSpec::Classification { output, .. }
            | PredictionSpec::Regression { output } => output,
        }
    }

    /// Reads one row of the prediction output.
    pub fn interpret(&self, row: &[f32]) -> Prediction {
        match self {
            PredictionSpec::Classification { labels, .. } => {
                let best = row
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.is_nan())
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i);
                Prediction {
                    label: best.and_then(|i| labels.get(i)).cloned(),
                    probabilities: Some(
                        labels
                            .iter()
                            .cloned()
                            .zip(row.iter().map(|&p| f64::from(p)))
                            .collect(),
                    ),
                    value: None,
                }
            }
            PredictionSpec::Regression { .. } => Prediction {
                label: None,
                probabilities: None,
                value: Some(row.iter().map(|&v| f64::from(v)).collect()),
            },
        }
    }
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> FeatureSchema {
        serde_json::from_value(json!({
            "input": "x",
            "features": [
                {"kind": "numeric", "name": "tenure", "scaling": {"method": "standard", "mean": 10.0, "std": 2.0}},
                {"kind": "numeric", "name": "tickets", "default": 0.0, "scaling": {"method": "min_max", "min": 0.0, "max": 4.0}},
                {"kind": "categorical", "name": "contract", "categories": ["m2m", "1y", "2y"]},
                {"kind": "categorical", "name": "pay", "categories": ["card", "bank"], "unseen": "fallback", "default": "card"},
                {"kind": "categorical", "name": "region", "categories": ["n", "s"], "encoding": "ordinal", "unseen": "fallback"},
                {"kind": "boolean", "name": "paperless", "default": false}
            ]
        }))
        .unwrap()
    }

    fn row(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn encodes_scaling_one_hot_fallback_ordinal_and_defaults_in_schema_order() {
        let s = schema();
        s.validate().unwrap();
        assert_eq!(s.width(), 1 + 1 + 3 + 3 + 1 + 1);
        let got = s
            .encode(&row(json!({"tenure": 14, "contract": "1y", "pay": "crypto", "region": "s", "paperless": true})))
            .unwrap();
        assert_eq!(got, vec![2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let got = s
            .encode(&row(
                json!({"tenure": 10, "tickets": 2, "contract": "2y", "region": "west"}),
            ))
            .unwrap();
        assert_eq!(got, vec![0.0, 0.5, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 2.0, 0.0]);
    }

    #[test]
    fn a_value_beyond_float32_is_refused_by_name_not_passed_on_as_infinity() {
        let s = schema();
        for tenure in [json!(-1e300), json!(1e39), json!(f64::MAX)] {
            let r = row(json!({"tenure": tenure, "contract": "m2m", "region": "n"}));
            assert_eq!(
                s.encode(&r),
                Err(Error::NonFiniteFeature {
                    feature: "tenure".into()
                }),
                "{tenure}"
            );
        }
        // Within range after scaling, however large.
        let r = row(json!({"tenure": 3e38, "contract": "m2m", "region": "n"}));
        assert!(s.encode(&r).is_ok());
    }

    #[test]
    fn each_bad_request_names_its_feature() {
        let s = schema();
        let base = json!({"tenure": 1, "contract": "m2m", "region": "n"});
        let with = |k: &str, v: Value| {
            let mut r = row(base.clone());
            r.insert(k.into(), v);
            r
        };
        assert_eq!(
            s.encode(&with("tenur", json!(1))),
            Err(Error::UnknownFeature {
                feature: "tenur".into()
            })
        );
        let mut missing = row(base.clone());
        missing.remove("contract");
        assert_eq!(
            s.encode(&missing),
            Err(Error::MissingFeature {
                feature: "contract".into()
            })
        );
        assert_eq!(
            s.encode(&with("tenure", json!("12"))),
            Err(Error::WrongFeatureType {
                feature: "tenure".into(),
                expected: "a number",
                found: "a string"
            })
        );
        assert!(matches!(
            s.encode(&with("contract", json!("3y"))),
            Err(Error::UnseenCategory { feature, value, .. }) if feature == "contract" && value == "3y"
        ));
        assert!(matches!(
            s.encode(&with("paperless", json!(1))),
            Err(Error::WrongFeatureType { feature, .. }) if feature == "paperless"
        ));
    }

    #[test]
    fn invalid_schemas_are_refused() {
        for bad in [
            json!({"input": "x", "features": []}),
            json!({"input": "x", "features": [{"kind": "numeric", "name": "a"}, {"kind": "boolean", "name": "a"}]}),
            json!({"input": "x", "features": [{"kind": "numeric", "name": "a", "scaling": {"method": "standard", "mean": 0.0, "std": 0.0}}]}),
            json!({"input": "x", "features": [{"kind": "categorical", "name": "a", "categories": ["x", "x"]}]}),
            json!({"input": "x", "features": [{"kind": "categorical", "name": "a", "categories": ["x"], "default": "y"}]}),
        ] {
            let s: FeatureSchema = serde_json::from_value(bad.clone()).unwrap();
            assert!(s.validate().is_err(), "{bad}");
        }
        let typo = json!({"input": "x", "features": [{"kind": "numeric", "name": "a", "scalng": {"method": "none"}}]});
        assert!(serde_json::from_value::<FeatureSchema>(typo).is_err());
    }

    #[test]
    fn interface_checks_schema_width_and_labels() {
        let mut iface = ModelInterface {
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: DType::Float32,
                shape: vec![-1, 10],
                dims: Vec::new(),
            }],
            outputs: vec![TensorSpec {
                name: "p".into(),
                dtype: DType::Float32,
                shape: vec![-1, 2],
                dims: Vec::new(),
            }],
            features: Some(schema()),
            prediction: Some(PredictionSpec::Classification {
                output: "p".into(),
                labels: vec!["stay".into(), "churn".into()],
            }),
            max_request_bytes: None,
        };
        iface.validate().unwrap();
        iface.inputs[0].shape = vec![-1, 9];
        assert!(iface.validate().is_err());
        iface.inputs[0].shape = vec![-1, 10];
        iface.prediction = Some(PredictionSpec::Classification {
            output: "p".into(),
            labels: vec!["a".into()],
        });
        assert!(iface.validate().is_err());
    }

    #[test]
    fn classification_picks_the_most_probable_label() {
        let spec = PredictionSpec::Classification {
            output: "p".into(),
            labels: vec!["stay".into(), "churn".into()],
        };
        let p = spec.interpret(&[0.25, 0.75]);
        assert_eq!(p.label.as_deref(), Some("churn"));
        assert_eq!(p.probabilities.unwrap()["stay"], 0.25);
    }

    #[test]
    fn shapes_with_dynamic_batch() {
        let spec = TensorSpec {
            name: "x".into(),
            dtype: DType::Float32,
            shape: vec![-1, 3],
            dims: Vec::new(),
        };
        assert!(spec.accepts_shape(&[7, 3]));
        assert!(!spec.accepts_shape(&[7, 4]));
        assert!(!spec.accepts_shape(&[3]));
        assert_eq!(spec.concrete_shape(2), vec![2, 3]);
        assert_eq!(spec.dim_name(0), Some(BATCH_DIM));
        assert_eq!(spec.dim_name(1), None);
    }

    #[test]
    fn dynamic_axes_are_named_once_per_axis_and_only_when_dynamic() {
        let spec = |shape: serde_json::Value, dims: serde_json::Value| -> ModelInterface {
            serde_json::from_value(json!({
                "inputs": [{"name": "ids", "dtype": "int64", "shape": shape, "dims": dims}],
                "outputs": [{"name": "y", "dtype": "float32", "shape": [-1]}],
            }))
            .unwrap()
        };
        let fine = spec(json!([-1, -1]), json!(["rows", "sequence"]));
        fine.validate().unwrap();
        assert_eq!(fine.inputs[0].dim_name(0), Some("rows"));
        assert_eq!(fine.inputs[0].dim_name(1), Some("sequence"));
        spec(json!([-1, -1]), json!([null, "sequence"]))
            .validate()
            .unwrap();
        for (shape, dims, needle) in [
            (json!([-1, -1]), json!(["sequence"]), "names 1 axes"),
            (json!([-1, 8]), json!([null, "sequence"]), "fixed at 8"),
            (json!([-1, -1]), json!([null, "a b"]), "letters"),
        ] {
            let err = spec(shape, dims).validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
