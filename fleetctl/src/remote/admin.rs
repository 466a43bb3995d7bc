//! The operator's own session, the server's registry, tokens and audit log: `login`, `models`,
//! `promote`, `token`, `audit`. These answers are read as plain JSON: only fleetctl reads them, and a
//! missing field shows as `-`.

use reqwest::Method;
use serde_json::{Value, json};

use super::show::{ago, print_json, table};
use super::{Client, Login, save_login, urlencode};

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn login(server: &str, token: &str) -> anyhow::Result<()> {
    let login = Login {
        server: server.trim_end_matches('/').to_owned(),
        token: token.trim().to_owned(),
    };
    let client = Client::new(login.clone())?;
    let me: Value = client.get("/api/v1/whoami", "checking the token").await?;
    let path = save_login(&login)?;
    println!(
        "logged in to {} as {} ({}); saved to {}",
        login.server,
        text(&me["name"]),
        text(&me["role"]),
        path.display()
    );
    Ok(())
}

pub async fn models(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let body: Value = client.get("/api/v1/models", "listing models").await?;
    if as_json {
        return print_json(&body);
    }
    let mut rows = Vec::new();
    for model in body["models"].as_array().into_iter().flatten() {
        for v in model["versions"].as_array().into_iter().flatten() {
            rows.push(vec![
                text(&model["model"]),
                text(&v["version"]),
                text(&v["sequence"]),
                text(&v["stage"]),
                format!("{} B", text(&v["length"])),
                text(&v["pushed_by"]),
                text(&v["sha256"]).chars().take(12).collect(),
                verdict_cell(&v["verdict"]),
            ]);
        }
    }
    print!(
        "{}",
        table(
            &[
                "MODEL",
                "VERSION",
                "SEQ",
                "STAGE",
                "SIZE",
                "PUSHED BY",
                "SHA256",
                "CHALLENGER VERDICT"
            ],
            &rows
        )
    );
    Ok(())
}

/// The newest champion–challenger verdict in a word or three: `split promoted vs 2.0.0`.
fn verdict_cell(v: &Value) -> String {
    if v.is_null() {
        return "-".into();
    }
    let against = v["champion"]
        .as_str()
        .map(|c| format!(" vs {c}"))
        .unwrap_or_default();
    format!("{} {}{against}", text(&v["strategy"]), text(&v["decision"]))
}

/// A rollout of the version, as the registry keeps it: who started and approved it, how it
/// ended, and each wave's verdict with its window and figures.
fn print_rollout_record(r: &Value) {
    let approved: Vec<String> = r["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{} (wave {})",
                text(&a["by"]),
                a["wave"].as_u64().unwrap_or(0) + 1
            )
        })
        .collect();
    println!(
        "  rollout    {} ({}, {}) started by {} {}{}",
        text(&r["rollout"]),
        text(&r["strategy"]),
        text(&r["state"]),
        text(&r["started_by"]),
        ago(r["started_at"].as_i64()),
        if approved.is_empty() {
            String::new()
        } else {
            format!(", approved by {}", approved.join(", "))
        }
    );
    for v in r["verdicts"].as_array().into_iter().flatten() {
        let (from, to) = (
            v["window"]["from"].as_i64().unwrap_or(0),
            v["window"]["to"].as_i64().unwrap_or(0),
        );
        println!(
            "             wave {}: {} against {} on {} s of traffic ({}): {}",
            text(&v["wave"]),
            text(&v["decision"]),
            text(&v["champion"]),
            to - from,
            ago(Some(to)),
            text(&v["summary"])
        );
    }
}

pub async fn model_show(
    client: &Client,
    model: &str,
    version: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let v: Value = client
        .get(
            &format!(
                "/api/v1/models/{}/versions/{}",
                urlencode(model),
                urlencode(version)
            ),
            "reading the version",
        )
        .await?;
    if as_json {
        return print_json(&v);
    }
    println!(
        "{model} {version}  (sequence {}, floor {})",
        text(&v["sequence"]),
        text(&v["min_sequence"])
    );
    println!("  stage      {}", text(&v["stage"]));
    println!("  pushed by  {}", text(&v["pushed_by"]));
    println!(
        "  target     {}  {} B  sha256 {}",
        text(&v["target"]),
        text(&v["length"]),
        text(&v["sha256"])
    );
    let lineage = &v["lineage"];
    if lineage.is_null() {
        println!("  lineage    none signed with this version");
    } else {
        let code = &lineage["code"];
        if !code.is_null() {
            let parts: Vec<String> = ["repository", "path", "commit", "sha256"]
                .iter()
                .filter(|k| !code[**k].is_null())
                .map(|k| format!("{k} {}", text(&code[*k])))
                .collect();
            println!("  code       {}", parts.join(", "));
        }
        let data = &lineage["data"];
        if !data.is_null() {
            let parts: Vec<String> = ["uri", "window", "rows", "sha256"]
                .iter()
                .filter(|k| !data[**k].is_null())
                .map(|k| format!("{k} {}", text(&data[*k])))
                .collect();
            println!("  data       {}", parts.join(", "));
        }
        for (label, key) in [("params", "params"), ("metrics", "metrics")] {
            if let Some(map) = lineage[key].as_object() {
                let parts: Vec<String> = map
                    .iter()
                    .map(|(k, v)| format!("{k}={}", text(v)))
                    .collect();
                println!("  {label:<10} {}", parts.join(", "));
            }
        }
        if !lineage["source"].is_null() {
            println!("  source     {}", text(&lineage["source"]));
        }
    }
    let rollouts = v["rollouts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if rollouts.is_empty() {
        println!("  rollouts   none");
    }
    for r in rollouts {
        print_rollout_record(r);
    }
    match (&v["card"], v["card_text"].as_str()) {
        (Value::Null, _) => println!("  card       none"),
        (card, Some(card_text)) => {
            println!(
                "  card       {} B  sha256 {} (signed)\n",
                text(&card["length"]),
                text(&card["sha256"])
            );
            println!("{card_text}");
        }
        (card, None) => println!(
            "  card       {} B  sha256 {} (signed): {}",
            text(&card["length"]),
            text(&card["sha256"]),
            text(&card["url"])
        ),
    }
    Ok(())
}

pub async fn promote(
    client: &Client,
    model: &str,
    version: &str,
    stage: &str,
) -> anyhow::Result<()> {
    let _: Value = client
        .send_json(
            Method::POST,
            &format!(
                "/api/v1/models/{}/versions/{}/stage",
                urlencode(model),
                urlencode(version)
            ),
            &json!({ "stage": stage }),
            "changing the stage",
        )
        .await?;
    println!("{model} {version} is now {stage}");
    Ok(())
}

pub async fn token_create(
    client: &Client,
    name: &str,
    role: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let answer: Value = client
        .send_json(
            Method::POST,
            "/api/v1/tokens",
            &json!({"name": name, "role": role}),
            "creating the token",
        )
        .await?;
    if as_json {
        return print_json(&answer);
    }
    println!(
        "token {} ({role}) for {name}; shown once:\n{}",
        text(&answer["id"]),
        text(&answer["token"])
    );
    Ok(())
}

pub async fn token_list(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let body: Value = client.get("/api/v1/tokens", "listing tokens").await?;
    if as_json {
        return print_json(&body);
    }
    let rows: Vec<Vec<String>> = body["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                text(&t["id"]),
                text(&t["name"]),
                text(&t["role"]),
                ago(t["created_at"].as_i64()),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "NAME", "ROLE", "CREATED"], &rows));
    Ok(())
}

pub async fn token_revoke(client: &Client, id: i64) -> anyhow::Result<()> {
    client
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            "revoking the token",
        )
        .await?;
    println!("token {id} revoked");
    Ok(())
}

/// Which audit entries `fleetctl audit list` asks for.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub route: Option<String>,
    pub hours: Option<u32>,
    pub limit: u32,
}

pub async fn audit_list(client: &Client, q: &AuditQuery, as_json: bool) -> anyhow::Result<()> {
    let mut query = vec![format!("limit={}", q.limit)];
    if let Some(actor) = &q.actor {
        query.push(format!("actor={}", urlencode(actor)));
    }
    if let Some(route) = &q.route {
        query.push(format!("route={}", urlencode(route)));
    }
    if let Some(hours) = q.hours {
        let since = jiff::Timestamp::now().as_second() - i64::from(hours) * 3600;
        query.push(format!("since={since}"));
    }
    let body: Value = client
        .get(
            &format!("/api/v1/audit?{}", query.join("&")),
            "reading the audit log",
        )
        .await?;
    if as_json {
        return print_json(&body);
    }
    let rows: Vec<Vec<String>> = body["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                text(&e["seq"]),
                ago(e["at"].as_i64()),
                text(&e["actor"]),
                format!("{} {}", text(&e["method"]), text(&e["path"])),
                text(&e["status"]),
                text(&e["subject"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["SEQ", "WHEN", "WHO", "CALL", "STATUS", "SUBJECT"], &rows)
    );
    Ok(())
}

pub async fn audit_verify(
    client: &Client,
    expect_head: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let check: Value = client
        .get("/api/v1/audit/verify", "checking the audit log")
        .await?;
    if as_json {
        print_json(&check)?;
    }
    if let Some(broken) = check["broken"].as_object() {
        anyhow::bail!(
            "the audit log is broken at entry {}: {}",
            text(&broken["seq"]),
            text(&broken["reason"])
        );
    }
    let head = format!("{}:{}", text(&check["head_seq"]), text(&check["head_hash"]));
    if let Some(expected) = expect_head {
        let (seq, hash) = expected.split_once(':').ok_or_else(|| {
            anyhow::anyhow!("--expect-head takes SEQ:HASH as an earlier check printed it")
        })?;
        let seq: u64 = seq
            .parse()
            .map_err(|_| anyhow::anyhow!("--expect-head: {seq:?} is not a sequence number"))?;
        // The expected head must still be in the chain, with the same hash.
        let entry: Value = client
            .get(
                &format!("/api/v1/audit?before={}&limit=1", seq + 1),
                "reading the expected head",
            )
            .await?;
        let found = &entry["entries"][0];
        if found["seq"].as_u64() != Some(seq) || found["hash"].as_str() != Some(hash) {
            anyhow::bail!(
                "entry {seq} no longer has the hash {hash}: the audit log was rewritten (or pruned past it)"
            );
        }
    }
    if !as_json {
        println!(
            "audit log intact: {} entries from {}; head {head} (keep it to compare later: --expect-head {head})",
            text(&check["entries"]),
            text(&check["first_seq"]),
        );
    }
    Ok(())
}
