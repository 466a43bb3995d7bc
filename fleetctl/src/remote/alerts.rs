//! `fleetctl alerts`: the server's own alerts (guard breaches) — list, show, acknowledge,
//! resolve.

use reqwest::Method;
use serde_json::{Value, json};

use super::Client;
use super::show::{print_json, table};

fn when(unix: &Value) -> String {
    unix.as_i64()
        .and_then(|t| jiff::Timestamp::from_second(t).ok())
        .map_or("–".into(), |t| {
            t.strftime("%Y-%m-%d %H:%M:%SZ").to_string()
        })
}

pub async fn alerts_list(
    client: &Client,
    state: Option<&str>,
    all: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut path = String::from("/api/v1/alerts?limit=200");
    if let Some(state) = state {
        path.push_str(&format!("&state={}", super::urlencode(state)));
    }
    if all {
        path.push_str("&all=true");
    }
    let body: Value = client.get(&path, "listing the alerts").await?;
    let alerts: Vec<&Value> = body["alerts"].as_array().into_iter().flatten().collect();
    if as_json {
        return print_json(&alerts);
    }
    if alerts.is_empty() {
        println!("no alerts{}", if all { "" } else { " open" });
        return Ok(());
    }
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|a| {
            vec![
                a["id"].to_string(),
                a["state"].as_str().unwrap_or("?").to_owned(),
                a["name"].as_str().unwrap_or("?").to_owned(),
                a["summary"].as_str().unwrap_or("").to_owned(),
                a["occurrences"].to_string(),
                when(&a["opened_at"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "STATE", "ALERT", "SUMMARY", "SEEN", "OPENED"],
            &rows
        )
    );
    Ok(())
}

pub async fn alert_show(client: &Client, id: i64, as_json: bool) -> anyhow::Result<()> {
    let alert: Value = client
        .get(&format!("/api/v1/alerts/{id}"), "reading the alert")
        .await?;
    if as_json {
        return print_json(&alert);
    }
    print_alert(&alert);
    Ok(())
}

fn print_alert(a: &Value) {
    println!(
        "alert {} ({}): {}",
        a["id"],
        a["state"].as_str().unwrap_or("?"),
        a["summary"].as_str().unwrap_or("")
    );
    println!("  {}", a["description"].as_str().unwrap_or(""));
    println!(
        "  opened {}, seen {} time(s), last change {}",
        when(&a["opened_at"]),
        a["occurrences"],
        when(&a["updated_at"])
    );
    if let Some(ack) = a["acknowledged"].as_object() {
        println!(
            "  acknowledged by {} at {}{}",
            ack["by"].as_str().unwrap_or("?"),
            when(&ack["at"]),
            ack.get("note")
                .and_then(Value::as_str)
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        );
    }
    println!("  evidence (newest last):");
    for e in a["evidence"].as_array().into_iter().flatten() {
        println!(
            "    {} {}: {}",
            when(&e["at"]),
            e["device"].as_str().unwrap_or("server"),
            e["detail"].as_str().unwrap_or("")
        );
    }
    let actions: Vec<&Value> = a["actions"].as_array().into_iter().flatten().collect();
    if !actions.is_empty() {
        println!("  what the server did:");
        for action in actions {
            println!(
                "    {} {}",
                when(&action["at"]),
                action["what"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(error) = a["last_delivery_error"].as_str() {
        println!("  webhook delivery: {error}");
    }
}

pub async fn alert_ack(client: &Client, id: i64, note: Option<&str>) -> anyhow::Result<()> {
    let alert: Value = client
        .send_json(
            Method::POST,
            &format!("/api/v1/alerts/{id}/ack"),
            &json!({ "note": note }),
            "acknowledging the alert",
        )
        .await?;
    print_alert(&alert);
    Ok(())
}

pub async fn alert_resolve(client: &Client, id: i64) -> anyhow::Result<()> {
    let alert: Value = client
        .post(
            &format!("/api/v1/alerts/{id}/resolve"),
            "resolving the alert",
        )
        .await?;
    print_alert(&alert);
    Ok(())
}
