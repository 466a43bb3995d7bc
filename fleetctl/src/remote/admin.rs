//! The operator's own session and the server's registry and tokens: `login`, `models`,
//! `promote`, `token`. These answers are read as plain JSON: only fleetctl reads them, and a
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
                "SHA256"
            ],
            &rows
        )
    );
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
