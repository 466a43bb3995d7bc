//! `fleetctl samples` and `fleetctl review`: the sampled prediction log devices sent, and the
//! review queue of low-confidence answers, labelled (the label goes to the device) or dismissed.

use reqwest::Method;
use serde_json::{Value, json};

use super::Client;
use super::show::{print_json, table};

/// What to list.
#[derive(Debug, Default)]
pub struct SampleQuery<'a> {
    pub model: Option<&'a str>,
    pub version: Option<&'a str>,
    pub device: Option<&'a str>,
    pub review: Option<&'a str>,
    pub limit: u32,
}

pub async fn samples_list(
    client: &Client,
    q: &SampleQuery<'_>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut path = format!("/api/v1/samples?limit={}", q.limit);
    for (name, value) in [
        ("model", q.model),
        ("version", q.version),
        ("device", q.device),
        ("review", q.review),
    ] {
        if let Some(v) = value {
            path.push_str(&format!("&{name}={}", super::urlencode(v)));
        }
    }
    let body: Value = client.get(&path, "listing the samples").await?;
    let samples: Vec<&Value> = body["samples"].as_array().into_iter().flatten().collect();
    if as_json {
        return print_json(&samples);
    }
    if samples.is_empty() {
        println!(
            "no samples{}",
            if q.review == Some("open") {
                " waiting for review"
            } else {
                ""
            }
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = samples.iter().map(|s| row(s)).collect();
    print!(
        "{}",
        table(
            &[
                "DEVICE", "MODEL", "VERSION", "ID", "ANSWER", "SCORE", "REVIEW", "FEATURES"
            ],
            &rows
        )
    );
    Ok(())
}

fn row(s: &Value) -> Vec<String> {
    let sample = &s["sample"];
    let answer = match (&sample["label"], &sample["value"]) {
        (Value::String(l), _) => l.clone(),
        (_, Value::Number(v)) => v.to_string(),
        _ => "–".into(),
    };
    let score = sample["score"]
        .as_f64()
        .map_or("–".into(), |s| format!("{s:.3}"));
    let review = match &s["review"] {
        Value::Null => "–".to_owned(),
        r => match (&r["truth"]["label"], &r["truth"]["value"]) {
            (Value::String(l), _) => format!("{} ({l})", r["state"].as_str().unwrap_or("?")),
            (_, Value::Number(v)) => format!("{} ({v})", r["state"].as_str().unwrap_or("?")),
            _ => r["state"].as_str().unwrap_or("?").to_owned(),
        },
    };
    let features = sample["features"]
        .as_object()
        .map(|f| {
            f.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    vec![
        s["device"].as_str().unwrap_or("?").to_owned(),
        s["model"].as_str().unwrap_or("?").to_owned(),
        s["version"].as_str().unwrap_or("?").to_owned(),
        sample["id"].as_str().unwrap_or("?").to_owned(),
        answer,
        score,
        review,
        features,
    ]
}

/// What a reviewer decided.
#[derive(Debug)]
pub enum Verdict<'a> {
    Label(&'a str),
    Value(f64),
    Dismiss,
}

pub async fn review_close(
    client: &Client,
    device: &str,
    model: &str,
    id: &str,
    verdict: Verdict<'_>,
) -> anyhow::Result<()> {
    let body = match verdict {
        Verdict::Label(label) => json!({ "label": label }),
        Verdict::Value(value) => json!({ "value": value }),
        Verdict::Dismiss => json!({ "dismiss": true }),
    };
    let closed: Value = client
        .send_json(
            Method::POST,
            &format!(
                "/api/v1/review/{}/{}/{}",
                super::urlencode(device),
                super::urlencode(model),
                super::urlencode(id)
            ),
            &body,
            "closing the review item",
        )
        .await?;
    let review = &closed["review"];
    println!(
        "{device} {model} {id}: {} by {}{}",
        review["state"].as_str().unwrap_or("?"),
        review["by"].as_str().unwrap_or("?"),
        if review["truth"].is_null() {
            String::new()
        } else {
            "; the label is queued for the device".to_owned()
        }
    );
    Ok(())
}
