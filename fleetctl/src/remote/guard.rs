//! `fleetctl guard`: guard policies set per group and model, which the server judges that
//! group's telemetry by in place of the releases' signed ones.

use std::path::Path;

use anyhow::Context;
use reqwest::Method;
use serde_json::Value;

use super::Client;
use super::show::{print_json, table};

pub async fn guard_list(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let body: Value = client
        .get(
            "/api/v1/guard-policies",
            "listing the groups' guard policies",
        )
        .await?;
    let policies: Vec<&Value> = body["policies"].as_array().into_iter().flatten().collect();
    if as_json {
        return print_json(&policies);
    }
    if policies.is_empty() {
        println!(
            "no group sets a guard policy: every group is judged by its releases' signed ones"
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = policies
        .iter()
        .map(|p| {
            vec![
                p["group"].as_str().unwrap_or("?").to_owned(),
                p["model"].as_str().unwrap_or("?").to_owned(),
                p["policy"].to_string(),
                p["set_by"].as_str().unwrap_or("?").to_owned(),
            ]
        })
        .collect();
    print!("{}", table(&["GROUP", "MODEL", "POLICY", "SET BY"], &rows));
    Ok(())
}

pub async fn guard_set(
    client: &Client,
    group: &str,
    model: &str,
    file: &Path,
) -> anyhow::Result<()> {
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let policy: Value = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not JSON (a guard policy as release.json's `guard`)",
            file.display()
        )
    })?;
    let set: Value = client
        .send_json(
            Method::PUT,
            &format!(
                "/api/v1/groups/{}/guard/{}",
                super::urlencode(group),
                super::urlencode(model)
            ),
            &policy,
            "setting the group's guard policy",
        )
        .await?;
    println!(
        "group {group} now judges {model} by {} (set by {})",
        set["policy"],
        set["set_by"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub async fn guard_clear(client: &Client, group: &str, model: &str) -> anyhow::Result<()> {
    client
        .call(
            Method::DELETE,
            &format!(
                "/api/v1/groups/{}/guard/{}",
                super::urlencode(group),
                super::urlencode(model)
            ),
            "clearing the group's guard policy",
        )
        .await?;
    println!("group {group} judges {model} by its releases' signed guard policies again");
    Ok(())
}
