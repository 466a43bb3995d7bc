//! Where a release came from, signed with it: the training code, the data, the parameters and
//! the evaluation metrics. It travels in the release's signed metadata (and its model card as a
//! signed release file, [`crate::release_files::ReleaseFileKind::Card`]), so the registry, the
//! dashboard and an auditor all read what the operator signed, not what a database says.
//!
//! Bounded, because it sits in targets metadata every device of the model fetches: at most
//! [`MAX_ENTRIES`] parameters and metrics, short keys and values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Most parameters, and most metrics, one release may carry.
pub const MAX_ENTRIES: usize = 128;
/// Longest key of a parameter or metric.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest value of any text field.
pub const MAX_VALUE_CHARS: usize = 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataRef>,
    /// Training parameters, as text (`"C": "0.05"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Evaluation metrics (finite numbers), e.g. `accuracy`, `roc_auc`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Where the release was imported from, for people: e.g.
    /// `mlflow http://mlflow:5000 models:/churn/3 (run 1f2e…)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The code that trained the model: a git commit, or the sha256 of the script, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CodeRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Git commit (7 to 64 lowercase hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The training script's path in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// sha256 of the training script (64 lowercase hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The training data: a content hash of the snapshot, or the window it covers, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DataRef {
    /// sha256 of the training data as the trainer saw it (64 lowercase hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The time or row window, in the trainer's words (`2026-01-01..2026-06-30`, `rows 0..4500`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Where the snapshot lives (`s3://…`, a dataset name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

fn invalid(detail: String) -> Error {
    Error::invalid("lineage", detail)
}

fn hex_digits(value: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn text(field: &str, value: &str) -> Result<(), Error> {
    if value.chars().count() > MAX_VALUE_CHARS || value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field}: at most {MAX_VALUE_CHARS} characters, no control characters"
        )));
    }
    Ok(())
}

impl Lineage {
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(code) = &self.code {
            if let Some(commit) = &code.commit
                && !hex_digits(commit, 7..=64)
            {
                return Err(invalid(format!(
                    "code.commit {commit:?}: expected 7 to 64 lowercase hex digits"
                )));
            }
            if let Some(sha) = &code.sha256
                && !hex_digits(sha, 64..=64)
            {
                return Err(invalid(
                    "code.sha256: expected 64 lowercase hex digits".into(),
                ));
            }
            for (field, value) in [
                ("code.repository", &code.repository),
                ("code.path", &code.path),
            ] {
                if let Some(value) = value {
                    text(field, value)?;
                }
            }
        }
        if let Some(data) = &self.data {
            if let Some(sha) = &data.sha256
                && !hex_digits(sha, 64..=64)
            {
                return Err(invalid(
                    "data.sha256: expected 64 lowercase hex digits".into(),
                ));
            }
            for (field, value) in [("data.window", &data.window), ("data.uri", &data.uri)] {
                if let Some(value) = value {
                    text(field, value)?;
                }
            }
        }
        for (what, count) in [
            ("params", self.params.len()),
            ("metrics", self.metrics.len()),
        ] {
            if count > MAX_ENTRIES {
                return Err(invalid(format!(
                    "{count} {what}, more than {MAX_ENTRIES}: keep the ones people judge the release by"
                )));
            }
        }
        let keys = self.params.keys().chain(self.metrics.keys());
        for key in keys {
            if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
                return Err(invalid(format!(
                    "key {key:?}: 1 to {MAX_KEY_CHARS} characters"
                )));
            }
            text("key", key)?;
        }
        for (key, value) in &self.params {
            text(&format!("params.{key}"), value)?;
        }
        if let Some((key, _)) = self.metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(invalid(format!("metrics.{key}: not a finite number")));
        }
        if let Some(source) = &self.source {
            text("source", source)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineage_is_bounded_and_names_what_is_wrong() {
        let mut ok = Lineage {
            code: Some(CodeRef {
                commit: Some("0123abc".into()),
                ..CodeRef::default()
            }),
            ..Lineage::default()
        };
        ok.metrics.insert("accuracy".into(), 0.8);
        ok.validate().unwrap();

        let mut bad = ok.clone();
        bad.metrics.insert("auc".into(), f64::NAN);
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("metrics.auc")
        );

        let mut bad = ok.clone();
        bad.code = Some(CodeRef {
            commit: Some("HEAD".into()),
            ..CodeRef::default()
        });
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("code.commit")
        );

        let mut bad = ok.clone();
        for i in 0..=MAX_ENTRIES {
            bad.params.insert(format!("p{i}"), "1".into());
        }
        assert!(bad.validate().unwrap_err().to_string().contains("params"));

        let mut bad = ok;
        bad.params.insert("note".into(), "a\u{7}b".into());
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("params.note")
        );
    }
}
