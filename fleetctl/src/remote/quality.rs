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

/// `fleetctl feedback FILE`: ground truth for devices' predictions (CSV with a header
/// `device,model,id,label` or `device,model,id,value`, or JSON `{"labels": [...]}`), checked
/// here first, then queued by the server for each device to join.
pub async fn feedback(
    client: &Client,
    file: &std::path::Path,
    as_json: bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
    let csv = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    // The server checks it too; checking here names the line before anything is sent.
    let labels = edgefleet_protocol::feedback::parse_upload(&bytes, csv)
        .with_context(|| file.display().to_string())?;
    let content_type = if csv { "text/csv" } else { "application/json" };
    let answer: Value = client
        .post_typed("/api/v1/feedback", bytes, content_type, "uploading labels")
        .await?;
    if as_json {
        return print_json(&answer);
    }
    println!(
        "{} of {} labels queued for their devices",
        answer["accepted"],
        labels.len()
    );
    if let Some(unknown) = answer["unknown_devices"]
        .as_array()
        .filter(|u| !u.is_empty())
    {
        let names: Vec<&str> = unknown.iter().filter_map(Value::as_str).collect();
        println!(
            "{} labels name devices the server does not know (not queued): {}",
            answer["unknown_device"],
            names.join(", ")
        );
    }
    Ok(())
}
