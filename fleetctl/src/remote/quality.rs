//! `fleetctl quality`: how each version of a model fares against the ground truth joined on the
//! devices, and whether it decayed against its release's signed evaluation.

use serde_json::Value;

use super::show::{print_json, table};
use super::{Client, urlencode};

/// The longest window the server computes figures over (31 days).
const MAX_HOURS: u32 = 31 * 24;

pub async fn quality(
    client: &Client,
    model: &str,
    group: Option<&str>,
    hours: u32,
    as_json: bool,
) -> anyhow::Result<()> {
    if !(1..=MAX_HOURS).contains(&hours) {
        anyhow::bail!("--hours must be 1 to {MAX_HOURS} (the server keeps figures per request)");
    }
    let mut path = format!(
        "/api/v1/telemetry?model={}&since_seconds={}",
        urlencode(model),
        u64::from(hours) * 3600
    );
    if let Some(group) = group {
        path.push_str(&format!("&group={}", urlencode(group)));
    }
    let body: Value = client.get(&path, "reading the fleet's telemetry").await?;
    let versions: Vec<&Value> = body["versions"].as_array().into_iter().flatten().collect();
    if as_json {
        return print_json(&versions);
    }
    let percent = |v: &Value| {
        v.as_f64()
            .map_or("–".into(), |x| format!("{:.1}%", x * 100.0))
    };
    let number = |v: &Value| v.as_f64().map_or("–".into(), |x| format!("{x:.3}"));
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let q = &v["quality"];
            let decay: Vec<String> = v["decay"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    format!(
                        "{} {} (signed {})",
                        d["metric"].as_str().unwrap_or("?"),
                        number(&d["field"]),
                        number(&d["release"])
                    )
                })
                .collect();
            vec![
                v["version"].as_str().unwrap_or("?").to_owned(),
                v["devices"].to_string(),
                v["requests"].to_string(),
                q["labelled"].as_u64().unwrap_or(0).to_string(),
                percent(&q["accuracy"]),
                number(&q["roc_auc"]),
                number(&q["calibration_error"]),
                number(&q["rmse"]),
                if decay.is_empty() {
                    "–".into()
                } else {
                    format!("DECAYED: {}", decay.join("; "))
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "VERSION",
                "DEVICES",
                "REQUESTS",
                "LABELLED",
                "ACCURACY",
                "ROC AUC",
                "CAL. ERROR",
                "RMSE",
                "DECAY",
            ],
            &rows
        )
    );
    Ok(())
}
