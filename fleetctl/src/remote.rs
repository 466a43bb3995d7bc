//! Talking to a fleet server: the saved login, an HTTP client whose errors say what to do, and
//! the server-side commands (devices, models, groups, tokens, promote).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where `fleetctl login` keeps the server URL and token: `$FLEETCTL_CONFIG`, else
/// `$XDG_CONFIG_HOME/edgefleet/fleetctl.toml`, else `~/.config/edgefleet/fleetctl.toml`.
pub fn login_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FLEETCTL_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").context("neither FLEETCTL_CONFIG nor HOME is set")?,
        )
        .join(".config"),
    };
    Ok(base.join("edgefleet/fleetctl.toml"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub server: String,
    pub token: String,
}

/// The server and token: command-line / environment first, then the saved login.
pub fn resolve(url: Option<&str>, token: Option<&str>) -> anyhow::Result<Login> {
    let saved = || -> anyhow::Result<Option<Login>> {
        let path = login_path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(toml::from_str(&text).with_context(|| {
                format!(
                    "{} is not a fleetctl login file; run fleetctl login again",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("{}: {e}", path.display())),
        }
    };
    match (url, token) {
        (Some(server), Some(token)) => Ok(Login {
            server: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }),
        _ => {
            let saved = saved()?;
            let server = url
                .map(str::to_owned)
                .or_else(|| saved.as_ref().map(|l| l.server.clone()));
            let token = token
                .map(str::to_owned)
                .or_else(|| saved.as_ref().map(|l| l.token.clone()));
            match (server, token) {
                (Some(server), Some(token)) => Ok(Login {
                    server: server.trim_end_matches('/').to_owned(),
                    token,
                }),
                _ => bail!(
                    "no fleet server: run `fleetctl login --server URL --token-file FILE` (or pass --url and --token)"
                ),
            }
        }
    }
}

pub fn save_login(login: &Login) -> anyhow::Result<PathBuf> {
    let path = login_path()?;
    edgefleet_files::write_private(&path, toml::to_string(login)?.as_bytes())
        .with_context(|| path.display().to_string())?;
    Ok(path)
}

#[derive(Debug, Clone)]
pub struct Client {
    pub login: Login,
    http: reqwest::Client,
}

impl Client {
    pub fn new(login: Login) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self { login, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.login.server)
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.login.token)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let response = request.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the fleet server at {} ({what}): {e}; is it running, and is the URL right?",
                self.login.server
            )
        })?;
        check(response, what).await
    }

    pub async fn get(&self, path: &str, what: &str) -> anyhow::Result<Value> {
        Ok(self
            .send(self.request(Method::GET, path), what)
            .await?
            .json()
            .await?)
    }

    pub async fn get_optional(&self, path: &str, what: &str) -> anyhow::Result<Option<Value>> {
        match self.get_bytes_optional(path, what).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("the fleet server's answer ({what}) is not JSON")
            })?)),
            None => Ok(None),
        }
    }

    /// [`Self::get_bytes`], with `None` for a 404.
    pub async fn get_bytes_optional(
        &self,
        path: &str,
        what: &str,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let response = self.request(Method::GET, path).send().await.map_err(|e| {
            anyhow!(
                "cannot reach the fleet server at {} ({what}): {e}",
                self.login.server
            )
        })?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(check(response, what).await?.bytes().await?.to_vec()))
    }

    pub async fn get_bytes(&self, path: &str, what: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self
            .send(self.request(Method::GET, path), what)
            .await?
            .bytes()
            .await?
            .to_vec())
    }

    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        what: &str,
    ) -> anyhow::Result<Value> {
        let response = self
            .send(self.request(method, path).json(body), what)
            .await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        Ok(response.json().await?)
    }

    pub async fn post_bytes(
        &self,
        path: &str,
        bytes: Vec<u8>,
        what: &str,
    ) -> anyhow::Result<Value> {
        Ok(self
            .send(
                self.request(Method::POST, path)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes),
                what,
            )
            .await?
            .json()
            .await?)
    }

    /// Uploads `file` under its sha256 unless the server has it, with a progress bar on a
    /// terminal.
    pub async fn upload_artifact(
        &self,
        file: &Path,
        sha256: &str,
        length: u64,
    ) -> anyhow::Result<bool> {
        let path = format!("/api/v1/artifacts/{sha256}");
        if self.has_blob(&path).await? {
            return Ok(false);
        }
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            indicatif::ProgressBar::new(length)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "uploading {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let reader = tokio::fs::File::open(file)
            .await
            .with_context(|| file.display().to_string())?;
        let progress = bar.clone();
        let stream = tokio_util::io::ReaderStream::new(reader).map(move |chunk| {
            if let Ok(c) = &chunk {
                progress.inc(c.len() as u64);
            }
            chunk
        });
        let request = self
            .request(Method::PUT, &path)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(stream));
        let result = self.send(request, "uploading the artifact").await;
        bar.finish_and_clear();
        result?;
        Ok(true)
    }

    /// Uploads a small content-addressed file (a release's golden cases or baseline) unless the
    /// server has it. Returns whether it was sent.
    pub async fn upload_bytes(&self, sha256: &str, bytes: Vec<u8>) -> anyhow::Result<bool> {
        let path = format!("/api/v1/artifacts/{sha256}");
        if self.has_blob(&path).await? {
            return Ok(false);
        }
        let request = self
            .request(Method::PUT, &path)
            .header(reqwest::header::CONTENT_LENGTH, bytes.len())
            .body(bytes);
        self.send(request, "uploading a release file").await?;
        Ok(true)
    }

    async fn has_blob(&self, path: &str) -> anyhow::Result<bool> {
        Ok(self
            .get_optional(path, "checking the artifact store")
            .await?
            .is_some())
    }
}

/// Passes a successful response through; turns any other into an error that says what to do.
async fn check(response: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let message = body["error"].as_str().unwrap_or("no details").to_owned();
    let field = body["field"]
        .as_str()
        .map(|f| format!(" (field {f})"))
        .unwrap_or_default();
    let hint = match status {
        StatusCode::UNAUTHORIZED => "; run `fleetctl login` with a valid token",
        StatusCode::FORBIDDEN => "; ask an admin for a token with a stronger role",
        _ => "",
    };
    bail!("{what}: the server said {status}: {message}{field}{hint}")
}

/// A table for people: left-aligned columns, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ago(at: &Value) -> String {
    match at.as_i64() {
        None => "never".into(),
        Some(t) => {
            let secs = (jiff::Timestamp::now().as_second() - t).max(0);
            match secs {
                0..60 => format!("{secs}s ago"),
                60..3600 => format!("{}m ago", secs / 60),
                3600..86400 => format!("{}h ago", secs / 3600),
                _ => format!("{}d ago", secs / 86400),
            }
        }
    }
}

pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn login(server: &str, token: &str) -> anyhow::Result<()> {
    let login = Login {
        server: server.trim_end_matches('/').to_owned(),
        token: token.trim().to_owned(),
    };
    let client = Client::new(login.clone())?;
    let me = client.get("/api/v1/whoami", "checking the token").await?;
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
    let body = client.get("/api/v1/models", "listing models").await?;
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

pub async fn devices(
    client: &Client,
    group: Option<&str>,
    tag: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(g) = group {
        query.push(format!("group={}", urlencode(g)));
    }
    if let Some(t) = tag {
        query.push(format!("tag={}", urlencode(t)));
    }
    let path = if query.is_empty() {
        "/api/v1/devices".to_owned()
    } else {
        format!("/api/v1/devices?{}", query.join("&"))
    };
    let body = client.get(&path, "listing devices").await?;
    if as_json {
        return print_json(&body);
    }
    let rows: Vec<Vec<String>> = body["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let running = d["running"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(name, r)| format!("{name} {}", text(&r["version"])))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "-".into());
            let state = if d["enrolled"] != json!(true) {
                "not enrolled"
            } else if d["online"] == json!(true) {
                "online"
            } else {
                "offline"
            };
            vec![
                text(&d["id"]),
                text(&d["group"]),
                state.into(),
                ago(&d["last_seen"]),
                running,
                text(&d["agent_version"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["DEVICE", "GROUP", "STATE", "LAST SEEN", "RUNNING", "AGENT"],
            &rows
        )
    );
    Ok(())
}

/// `k=v` pairs from `--tag` arguments.
pub fn parse_tags(tags: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    tags.iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("--tag {t:?}: expected KEY=VALUE"))
        })
        .collect()
}

pub async fn device_add(
    client: &Client,
    id: &str,
    group: Option<&str>,
    tags: &[String],
    renew: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut body = json!({"id": id, "tags": parse_tags(tags)?, "renew": renew});
    if let Some(g) = group {
        body["group"] = json!(g);
    }
    let answer = client
        .send_json(
            Method::POST,
            "/api/v1/devices",
            &body,
            "registering the device",
        )
        .await?;
    if as_json {
        return print_json(&answer);
    }
    println!(
        "registered {id}. One-time enrollment token (valid until {}):\n{}\n\
         Put it on the device (edge-agent enroll --server {} --token-file FILE); it works once.",
        jiff::Timestamp::from_second(answer["expires_at"].as_i64().unwrap_or(0))
            .map(|t| t.to_string())
            .unwrap_or_default(),
        text(&answer["enrollment_token"]),
        client.login.server,
    );
    Ok(())
}

pub async fn device_show(client: &Client, id: &str, as_json: bool) -> anyhow::Result<()> {
    let d = client
        .get(
            &format!("/api/v1/devices/{}", urlencode(id)),
            "showing the device",
        )
        .await?;
    if as_json {
        return print_json(&d);
    }
    println!("device      {}", text(&d["id"]));
    println!("group       {}", text(&d["group"]));
    let tags = d["tags"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    println!(
        "tags        {}",
        if tags.is_empty() { "-".into() } else { tags }
    );
    println!("enrolled    {}", d["enrolled"] == json!(true));
    println!("last seen   {}", ago(&d["last_seen"]));
    println!("agent       {}", text(&d["agent_version"]));
    println!("desired     revision {}", text(&d["desired_revision"]));
    for m in d["desired"]["models"].as_array().into_iter().flatten() {
        println!("  wants     {}", text(&m["target"]));
    }
    for m in d["reported"]["models"].as_array().into_iter().flatten() {
        println!(
            "  runs      {} {} ({}){}",
            text(&m["model"]),
            text(&m["active"]["version"]),
            text(&m["state"]),
            m["last_error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    let events = d["events"].as_array().cloned().unwrap_or_default();
    if !events.is_empty() {
        println!("recent events:");
        for e in events {
            let m = &e["message"];
            println!(
                "  {:>9}  {:<14} {} {}",
                ago(&e["at"]),
                text(&m["kind"]),
                text(&m["target"]),
                m["detail"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

pub async fn device_remove(client: &Client, id: &str) -> anyhow::Result<()> {
    client
        .send_json(
            Method::DELETE,
            &format!("/api/v1/devices/{}", urlencode(id)),
            &Value::Null,
            "removing the device",
        )
        .await?;
    println!("removed {id}; its credential no longer works");
    Ok(())
}

pub async fn device_assign(client: &Client, id: &str, models: &[String]) -> anyhow::Result<()> {
    let models: Vec<Value> = models
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(model, version)| json!({"model": model, "version": version}))
                .ok_or_else(|| anyhow!("{m:?}: expected MODEL=VERSION"))
        })
        .collect::<anyhow::Result<_>>()?;
    let answer = client
        .send_json(
            Method::PUT,
            &format!("/api/v1/devices/{}/desired", urlencode(id)),
            &json!({ "models": models }),
            "setting desired state",
        )
        .await?;
    println!("{id}: desired revision {}", text(&answer["revision"]));
    Ok(())
}

pub async fn groups(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let body = client.get("/api/v1/groups", "listing groups").await?;
    if as_json {
        return print_json(&body);
    }
    let rows: Vec<Vec<String>> = body["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| vec![text(&g["name"]), text(&g["devices"])])
        .collect();
    print!("{}", table(&["GROUP", "DEVICES"], &rows));
    Ok(())
}

pub async fn promote(
    client: &Client,
    model: &str,
    version: &str,
    stage: &str,
) -> anyhow::Result<()> {
    client
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
    let answer = client
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
    let body = client.get("/api/v1/tokens", "listing tokens").await?;
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
                ago(&t["created_at"]),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "NAME", "ROLE", "CREATED"], &rows));
    Ok(())
}

pub async fn token_revoke(client: &Client, id: i64) -> anyhow::Result<()> {
    client
        .send_json(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            &Value::Null,
            "revoking the token",
        )
        .await?;
    println!("token {id} revoked");
    Ok(())
}

/// Options of `fleetctl rollout create`.
#[derive(Debug, Clone, Default)]
pub struct RolloutOptions {
    pub model: String,
    pub version: String,
    pub group: Option<String>,
    pub tags: Vec<String>,
    pub devices: Vec<String>,
    pub waves: Option<Vec<f64>>,
    /// (start percent, factor)
    pub exponential: Option<(f64, f64)>,
    pub max_failure_ratio: Option<f64>,
    pub min_healthy_ratio: Option<f64>,
    pub bake_seconds: Option<u64>,
    pub device_timeout_seconds: Option<u64>,
    pub require_approval: bool,
    /// `gates.model` of the API (model-aware gates on live telemetry).
    pub model_gates: Option<serde_json::Value>,
    pub no_rollback: bool,
}

pub async fn rollout_create(
    client: &Client,
    o: &RolloutOptions,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut body = json!({
        "model": o.model,
        "version": o.version,
        "tags": parse_tags(&o.tags)?,
        "devices": o.devices,
        "require_approval": o.require_approval,
        "rollback_on_halt": !o.no_rollback,
    });
    let optional = [
        ("group", o.group.as_ref().map(|g| json!(g))),
        ("waves", o.waves.as_ref().map(|w| json!(w))),
        (
            "exponential",
            o.exponential
                .map(|(start, factor)| json!({"start_percent": start, "factor": factor})),
        ),
        ("max_failure_ratio", o.max_failure_ratio.map(|v| json!(v))),
        ("min_healthy_ratio", o.min_healthy_ratio.map(|v| json!(v))),
        ("bake_seconds", o.bake_seconds.map(|v| json!(v))),
        ("model_gates", o.model_gates.clone()),
        (
            "device_timeout_seconds",
            o.device_timeout_seconds.map(|v| json!(v)),
        ),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            body[key] = v;
        }
    }
    let r = client
        .send_json(
            Method::POST,
            "/api/v1/rollouts",
            &body,
            "creating the rollout",
        )
        .await?;
    if as_json {
        return print_json(&r);
    }
    println!(
        "rollout {} started: {} {} to {} devices in {} waves",
        text(&r["id"]),
        text(&r["model"]),
        text(&r["version"]),
        r["devices"].as_array().map_or(0, Vec::len),
        r["waves"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}

pub async fn rollout_list(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let body = client.get("/api/v1/rollouts", "listing rollouts").await?;
    if as_json {
        return print_json(&body);
    }
    let rows: Vec<Vec<String>> = body["rollouts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let waves = r["waves"].as_array().cloned().unwrap_or_default();
            let healthy: u64 = waves.iter().filter_map(|w| w["healthy"].as_u64()).sum();
            let total: u64 = waves.iter().filter_map(|w| w["devices"].as_u64()).sum();
            vec![
                text(&r["id"]),
                format!("{} {}", text(&r["model"]), text(&r["version"])),
                state_text(&r["state"]),
                format!("{healthy}/{total}"),
                ago(&r["created_at"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ROLLOUT", "VERSION", "STATE", "HEALTHY", "CREATED"],
            &rows
        )
    );
    Ok(())
}

fn state_text(state: &Value) -> String {
    let name = text(&state["state"]);
    match (state["wave"].as_u64(), state["reason"].as_str()) {
        (Some(w), Some(reason)) => format!("{name} at wave {w}: {reason}"),
        (Some(w), None) => format!("{name} (wave {w})"),
        _ => name,
    }
}

/// One rollout's status as a block of text: state, a bar per wave, problem devices, history.
pub fn render_rollout(r: &Value) -> String {
    let mut out = format!(
        "rollout {}  {} {}  {}\n",
        text(&r["id"]),
        text(&r["model"]),
        text(&r["version"]),
        state_text(&r["state"])
    );
    for w in r["waves"].as_array().into_iter().flatten() {
        let n = w["devices"].as_u64().unwrap_or(0);
        let ok = w["healthy"].as_u64().unwrap_or(0);
        let bad = w["failed"].as_u64().unwrap_or(0);
        let busy = w["in_progress"].as_u64().unwrap_or(0);
        let back = w["rolled_back"].as_u64().unwrap_or(0);
        let width = 20usize;
        let cells = |k: u64| {
            if n == 0 {
                0
            } else {
                (k as usize * width).div_ceil(n as usize)
            }
        };
        let (g, f, b) = (cells(ok), cells(bad), cells(busy));
        let bar: String = "#".repeat(g.min(width))
            + &"x".repeat(f.min(width.saturating_sub(g)))
            + &"~".repeat(b.min(width.saturating_sub(g + f)));
        out.push_str(&format!(
            "  wave {} ({:>5}%) [{bar:<width$}] {ok}/{n} healthy, {bad} failed, {busy} in progress, {back} rolled back\n",
            text(&w["wave"]),
            text(&w["percent"]),
        ));
    }
    if let Some(check) = r["model_check"].as_object() {
        out.push_str(&format!(
            "  model gates (wave {}): {} — {}\n",
            check["wave"].as_u64().unwrap_or(0) + 1,
            if check["passed"] == true {
                "pass"
            } else {
                "not passed"
            },
            text(&check["summary"])
        ));
    }
    let troubled: Vec<&Value> = r["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["detail"].is_string())
        .collect();
    for d in troubled.iter().take(10) {
        out.push_str(&format!(
            "  {} {}: {}\n",
            text(&d["id"]),
            text(&d["state"]),
            text(&d["detail"])
        ));
    }
    if let Some(history) = r["history"].as_array() {
        for h in history.iter().rev().take(5).rev() {
            out.push_str(&format!("  {:>9}  {}\n", ago(&h["at"]), text(&h["text"])));
        }
    }
    out
}

pub async fn rollout_status(
    client: &Client,
    id: &str,
    watch: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/rollouts/{}", urlencode(id));
    let mut last_lines = 0usize;
    loop {
        let r = client.get(&path, "reading the rollout").await?;
        if as_json {
            return print_json(&r);
        }
        let text = render_rollout(&r);
        if watch && last_lines > 0 && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            // Redraw in place: cursor up over the previous frame, clear to the end.
            print!("\x1b[{last_lines}A\x1b[J");
        }
        print!("{text}");
        last_lines = text.lines().count();
        let done = !matches!(
            r["state"]["state"].as_str(),
            Some("running" | "baking" | "awaiting_approval" | "paused")
        );
        if !watch || done {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

pub async fn rollout_command(client: &Client, id: &str, action: &str) -> anyhow::Result<()> {
    let r = client
        .send_json(
            Method::POST,
            &format!("/api/v1/rollouts/{}/{action}", urlencode(id)),
            &Value::Null,
            &format!("{action} {id}"),
        )
        .await?;
    println!("{}: {}", text(&r["id"]), state_text(&r["state"]));
    Ok(())
}

/// Percent-encodes a path or query component (ids are already restricted; this is defence).
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long".into(), "x".into()],
                vec!["s".into(), "yy".into()],
            ],
        );
        assert_eq!(t, "A     BB\nlong  x\ns     yy\n");
    }

    #[test]
    fn tags_need_key_and_value() {
        assert_eq!(
            parse_tags(&["site=north".into()]).unwrap(),
            BTreeMap::from([("site".to_string(), "north".to_string())])
        );
        assert!(parse_tags(&["site".into()]).is_err());
    }
}
