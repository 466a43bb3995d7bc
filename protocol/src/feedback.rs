//! Ground truth sent to the server (`POST /api/v1/feedback`, JSON or CSV) and handed on to the
//! device that made each prediction, which joins it there (labels join on the device: see
//! `docs/ARCHITECTURE.md`, decision 62). The parsing and the checks are here, as plain
//! functions, so the server, `fleetctl` and the fuzz target agree on what a label is.

use serde::{Deserialize, Serialize};

use crate::quality::MAX_LABEL_BYTES;
use crate::{DeviceId, Error, ModelName};

/// Labels in one upload at most.
pub const MAX_UPLOAD_LABELS: usize = 100_000;
/// A prediction id's length at most (the agent's own are 32 hex digits; a client's may differ).
pub const MAX_ID_BYTES: usize = 128;

/// What was true for one prediction: a label (classifiers) or a value (regressors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum Truth {
    Label { label: String },
    Value { value: f64 },
}

/// One label for one device's prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DeviceTruth {
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub device: DeviceId,
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub model: ModelName,
    /// The prediction id the device answered with.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// `POST /api/v1/feedback` as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct FeedbackUpload {
    #[cfg_attr(feature = "schema", schema(inline))]
    pub labels: Vec<DeviceTruth>,
}

/// What an upload did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct FeedbackAccepted {
    /// Labels queued for their devices.
    pub accepted: u64,
    /// Labels naming a device the server does not know (not queued), and which devices.
    pub unknown_device: u64,
    pub unknown_devices: Vec<String>,
}

/// One label waiting for its device (`GET /api/v1/device/labels`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct QueuedLabel {
    /// Acknowledge through this to have it (and everything before it) dropped.
    pub seq: u64,
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub model: ModelName,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct QueuedLabels {
    #[cfg_attr(feature = "schema", schema(inline))]
    pub labels: Vec<QueuedLabel>,
    /// More are waiting after these.
    pub more: bool,
}

/// `POST /api/v1/device/labels/ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct LabelsAck {
    pub through: u64,
}

impl DeviceTruth {
    /// The label or value, checked: an id of 1 to [`MAX_ID_BYTES`] bytes, exactly one of a
    /// non-empty label of at most [`MAX_LABEL_BYTES`] bytes and a finite value.
    pub fn truth(&self) -> Result<Truth, String> {
        check_id(&self.id)?;
        match (&self.label, self.value) {
            (Some(label), None) => {
                check_label(label)?;
                Ok(Truth::Label {
                    label: label.clone(),
                })
            }
            (None, Some(value)) if value.is_finite() => Ok(Truth::Value { value }),
            (None, Some(_)) => Err("value must be a finite number".into()),
            _ => Err("give exactly one of label and value".into()),
        }
    }
}

pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(format!(
            "id must be 1 to {MAX_ID_BYTES} bytes without control characters"
        ));
    }
    Ok(())
}

pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > MAX_LABEL_BYTES || label.chars().any(char::is_control) {
        return Err(format!(
            "label must be 1 to {MAX_LABEL_BYTES} bytes without control characters"
        ));
    }
    Ok(())
}

/// An upload as JSON (`{"labels": [...]}`) or CSV (a header `device,model,id,label` or
/// `device,model,id,value`, then one label per line; no quoting, so no commas in fields),
/// every label checked; the first bad one refuses the whole upload, naming its place.
pub fn parse_upload(bytes: &[u8], csv: bool) -> Result<Vec<DeviceTruth>, Error> {
    let labels = if csv {
        parse_csv(bytes)?
    } else {
        serde_json::from_slice::<FeedbackUpload>(bytes)
            .map_err(|e| Error::invalid("feedback", e.to_string()))?
            .labels
    };
    if labels.len() > MAX_UPLOAD_LABELS {
        return Err(Error::invalid(
            "feedback",
            format!(
                "{} labels in one upload; send at most {MAX_UPLOAD_LABELS}",
                labels.len()
            ),
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        label.truth().map_err(|e| {
            Error::invalid("feedback", format!("label {} ({}): {e}", i + 1, label.id))
        })?;
    }
    Ok(labels)
}

fn parse_csv(bytes: &[u8]) -> Result<Vec<DeviceTruth>, Error> {
    let bad =
        |line: usize, why: String| Error::invalid("feedback CSV", format!("line {line}: {why}"));
    let text = std::str::from_utf8(bytes).map_err(|e| bad(0, format!("not UTF-8: {e}")))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let by_value = match columns.as_slice() {
        ["device", "model", "id", "label"] => false,
        ["device", "model", "id", "value"] => true,
        _ => {
            return Err(bad(
                1,
                format!(
                    "the header is {header:?}; expected device,model,id,label or device,model,id,value"
                ),
            ));
        }
    };
    let mut out = Vec::new();
    for (n, line) in lines {
        let line_no = n + 1;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [device, model, id, truth] = fields.as_slice() else {
            return Err(bad(line_no, format!("{} fields; expected 4", fields.len())));
        };
        let device = DeviceId::new(*device).map_err(|e| bad(line_no, e.to_string()))?;
        let model = ModelName::new(*model).map_err(|e| bad(line_no, e.to_string()))?;
        let (label, value) = if by_value {
            let value: f64 = truth
                .parse()
                .map_err(|_| bad(line_no, format!("value {truth:?} is not a number")))?;
            (None, Some(value))
        } else {
            (Some((*truth).to_owned()), None)
        };
        out.push(DeviceTruth {
            device,
            model,
            id: (*id).to_owned(),
            label,
            value,
        });
        if out.len() > MAX_UPLOAD_LABELS {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_uploads_read_the_same_labels() {
        let csv = b"device,model,id,label\r\ndev-01,churn,abc,churn\n\ndev-02,churn,def,stay\n";
        let json = br#"{"labels": [
            {"device": "dev-01", "model": "churn", "id": "abc", "label": "churn"},
            {"device": "dev-02", "model": "churn", "id": "def", "label": "stay"}]}"#;
        assert_eq!(
            parse_upload(csv, true).unwrap(),
            parse_upload(json, false).unwrap()
        );
        let values = parse_upload(b"device,model,id,value\ndev-01,price,p1,12.5\n", true).unwrap();
        assert_eq!(values[0].value, Some(12.5));
    }

    #[test]
    fn a_bad_label_refuses_the_upload_and_says_where() {
        let err = |bytes: &[u8], csv: bool| parse_upload(bytes, csv).unwrap_err().to_string();
        assert!(err(b"device,id,label\n", true).contains("header"));
        assert!(err(b"device,model,id,label\ndev-01,churn,abc\n", true).contains("line 2"));
        assert!(err(b"device,model,id,label\ndev 01,churn,abc,x\n", true).contains("line 2"));
        assert!(err(b"device,model,id,value\ndev-01,churn,abc,NaN\n", true).contains("finite"));
        assert!(err(b"device,model,id,label\ndev-01,churn,,x\n", true).contains("id must be"));
        assert!(
            err(
                br#"{"labels": [{"device": "d", "model": "m", "id": "i", "label": "a", "value": 1}]}"#,
                false
            )
            .contains("exactly one")
        );
        assert!(err(br#"{"labels": [{"device": "d"}]}"#, false).contains("missing field"));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused_without_panicking(bytes: Vec<u8>, csv: bool) {
            let _ = parse_upload(&bytes, csv);
        }

        #[test]
        fn labels_written_as_csv_read_back(
            rows in proptest::collection::vec(("[a-z0-9-]{1,20}", "[a-z]{1,10}", "[A-Za-z0-9]{1,40}", "[a-z]{1,12}"), 0..50)
        ) {
            let mut text = String::from("device,model,id,label\n");
            for (d, m, i, l) in &rows {
                text.push_str(&format!("{d},{m},{i},{l}\n"));
            }
            let parsed = parse_upload(text.as_bytes(), true).unwrap();
            proptest::prop_assert_eq!(parsed.len(), rows.len());
            for (p, (d, m, i, l)) in parsed.iter().zip(&rows) {
                proptest::prop_assert_eq!(p.device.as_str(), d.as_str());
                proptest::prop_assert_eq!(p.model.as_str(), m.as_str());
                proptest::prop_assert_eq!(&p.id, i);
                proptest::prop_assert_eq!(p.label.as_deref(), Some(l.as_str()));
            }
        }
    }
}
