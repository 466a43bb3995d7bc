//! Talking to a fleet server: the saved login, an HTTP client whose errors say what to do and
//! that decodes answers into the API's shared types, and the server-side commands (devices,
//! rollouts, models, groups, tokens, promote) in the modules below.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use edgefleet_protocol::api::ErrorBody;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod admin;
mod alerts;
mod devices;
mod guard;
mod quality;
mod rollouts;
mod samples;
mod show;

pub use admin::{
    AuditQuery, audit_list, audit_verify, login, model_show, models, promote, token_create,
    token_list, token_revoke,
};
pub use alerts::{alert_ack, alert_resolve, alert_show, alerts_list};
pub use devices::{device_add, device_assign, device_remove, device_show, devices, groups};
pub use guard::{guard_clear, guard_list, guard_set};
pub use quality::{feedback, quality};
pub use rollouts::{rollout_command, rollout_create, rollout_list, rollout_status};
pub use samples::{SampleQuery, Verdict, review_close, samples_list};

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

    /// GETs `path` and decodes the answer as `T` (a shared API type, or `Value`).
    pub async fn get<T: DeserializeOwned>(&self, path: &str, what: &str) -> anyhow::Result<T> {
        let bytes = self
            .send(self.request(Method::GET, path), what)
            .await?
            .bytes()
            .await?;
        decode(&bytes, what)
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

    /// Streams the body of GET `path` into a new file `dest` (parents created).
    pub async fn download(&self, path: &str, dest: &Path, what: &str) -> anyhow::Result<u64> {
        use tokio::io::AsyncWriteExt;
        let mut response = self.send(self.request(Method::GET, path), what).await?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .with_context(|| parent.display().to_string())?;
        }
        let mut file = tokio::fs::File::create(dest)
            .await
            .with_context(|| dest.display().to_string())?;
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.with_context(|| what.to_owned())? {
            file.write_all(&chunk)
                .await
                .with_context(|| dest.display().to_string())?;
            written += chunk.len() as u64;
        }
        file.sync_all().await?;
        Ok(written)
    }

    /// Sends `body` as JSON and decodes the answer as `T`.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &(impl Serialize + ?Sized),
        what: &str,
    ) -> anyhow::Result<T> {
        let response = self
            .send(self.request(method, path).json(body), what)
            .await?;
        decode(&response.bytes().await?, what)
    }

    /// Sends a request without a body (a command or a deletion); the answer is not read.
    pub async fn call(&self, method: Method, path: &str, what: &str) -> anyhow::Result<()> {
        self.send(self.request(method, path), what).await?;
        Ok(())
    }

    /// POSTs `path` without a body and decodes the answer as `T`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, what: &str) -> anyhow::Result<T> {
        let response = self.send(self.request(Method::POST, path), what).await?;
        decode(&response.bytes().await?, what)
    }

    /// POSTs bytes that are already JSON (signed metadata, sent as signed) and decodes the
    /// answer as `T`.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: Vec<u8>,
        what: &str,
    ) -> anyhow::Result<T> {
        self.post_typed(path, bytes, "application/json", what).await
    }

    /// POSTs `bytes` as `content_type` and decodes the answer as `T`.
    pub async fn post_typed<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: Vec<u8>,
        content_type: &str,
        what: &str,
    ) -> anyhow::Result<T> {
        let request = self
            .request(Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        decode(&self.send(request, what).await?.bytes().await?, what)
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
            .get_bytes_optional(path, "checking the artifact store")
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
    let body: Option<ErrorBody> = response.json().await.ok();
    let message = body
        .as_ref()
        .map_or("no details", |b| b.error.as_str())
        .to_owned();
    let field = body
        .and_then(|b| b.field)
        .map(|f| format!(" (field {f})"))
        .unwrap_or_default();
    let hint = match status {
        StatusCode::UNAUTHORIZED => "; run `fleetctl login` with a valid token",
        StatusCode::FORBIDDEN => "; ask an admin for a token with a stronger role",
        _ => "",
    };
    bail!("{what}: the server said {status}: {message}{field}{hint}")
}

/// The answer of a successful call as `T`; an answer that is not `T` means client and server
/// disagree on the API, which upgrading the older one fixes.
fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> anyhow::Result<T> {
    serde_json::from_slice(bytes).with_context(|| {
        format!(
            "the fleet server's answer ({what}) is not what this fleetctl ({}) expects; \
             are fleetctl and the server the same version?",
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// Percent-encodes a path or query component (ids are already restricted; this is defence).
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
