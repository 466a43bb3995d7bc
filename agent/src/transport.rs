//! The HTTP transport the TUF client fetches from the fleet server with: the device's bearer
//! credential on every request, and downloads that resume where a cut connection left them
//! (`Range: bytes=N-` guarded by `If-Range` on the artifact's ETag) instead of starting over.
//!
//! Across attempts and restarts, a download continues from the bytes the TUF client's part file
//! holds ([`ResumableFetch`], `edgefleet_tuf::artifact`): this transport keeps no copy of its
//! own, so a download takes its size on disk once.

use std::time::Duration;

use bytes::Bytes;
use edgefleet_tuf::artifact::ResumableFetch;
use futures::SinkExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

#[derive(Debug, Clone)]
pub struct FleetTransport {
    client: reqwest::Client,
    credential: String,
    /// How many times a cut transfer is resumed before the fetch fails.
    resumes: u32,
}

impl FleetTransport {
    pub fn new(credential: String) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(30))
                .build()?,
            credential,
            resumes: 5,
        })
    }

    /// GETs `url` with this device's credential and decodes a JSON answer of at most
    /// `max_bytes` (read in chunks, so a larger one is refused without being buffered).
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        max_bytes: usize,
    ) -> Result<T, String> {
        let mut response = self
            .client
            .get(url.clone())
            .bearer_auth(&self.credential)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > max_bytes {
                return Err(format!("{url}: the answer is over {max_bytes} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(format!(
                "{url}: HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
    }

    async fn send(
        &self,
        url: &Url,
        offset: u64,
        etag: Option<&str>,
    ) -> Result<reqwest::Response, TransportError> {
        let mut request = self.client.get(url.clone()).bearer_auth(&self.credential);
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
            if let Some(etag) = etag {
                request = request.header(IF_RANGE, etag);
            }
        }
        request
            .send()
            .await
            .map_err(|e| TransportError::new_with_cause(TransportErrorKind::Other, url, e))
    }

    async fn open(
        &self,
        url: &Url,
        offset: u64,
        etag: Option<&str>,
    ) -> Result<reqwest::Response, TransportError> {
        accept(url, self.send(url, offset, etag).await?)
    }

    /// The first response for `url` from `offset` on, and where its bytes really start.
    async fn first_response(
        &self,
        url: &Url,
        offset: u64,
    ) -> Result<(reqwest::Response, u64), TransportError> {
        if offset == 0 {
            return Ok((self.open(url, 0, None).await?, 0));
        }
        let response = self.send(url, offset, None).await?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT if starts_at(&response) == Some(offset) => {
                tracing::info!(%url, offset, "continuing a download an earlier attempt began");
                Ok((response, offset))
            }
            // What was held is as long as the artifact or longer (it changed), or the server
            // answered another range: start over.
            StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => {
                Ok((self.open(url, 0, None).await?, 0))
            }
            _ => Ok((accept(url, response)?, 0)),
        }
    }

    /// Streams `url` from `offset` (see [`ResumableFetch::fetch_from`]), resuming a cut
    /// connection up to `resumes` times.
    async fn stream_from(
        &self,
        url: Url,
        offset: u64,
    ) -> Result<(TransportStream, u64), TransportError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url,
            ));
        }
        let (first, start) = self.first_response(&url, offset).await?;
        let etag = etag_of(&first);
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, TransportError>>(4);
        let transport = self.clone();
        tokio::spawn(async move {
            let mut offset = start;
            let mut response = first;
            let mut resumes = 0;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        offset += chunk.len() as u64;
                        if tx.send(Ok(chunk)).await.is_err() {
                            return; // the reader gave up
                        }
                    }
                    Ok(None) => return,
                    Err(cut) => {
                        resumes += 1;
                        if resumes > transport.resumes {
                            let _ = tx
                                .send(Err(TransportError::new_with_cause(
                                    TransportErrorKind::Other,
                                    &url,
                                    format!("cut off {resumes} times, last: {cut}"),
                                )))
                                .await;
                            return;
                        }
                        tracing::info!(%url, offset, resumes, error = %cut, "download cut off; resuming");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(resumes))).await;
                        match transport.open(&url, offset, etag.as_deref()).await {
                            Ok(next)
                                if next.status() == StatusCode::PARTIAL_CONTENT
                                    && starts_at(&next) == Some(offset) =>
                            {
                                response = next;
                            }
                            Ok(_) => {
                                // The server sent the whole file again (the artifact changed, or
                                // it ignores ranges): the bytes already passed on are wrong.
                                let _ = tx
                                    .send(Err(TransportError::new_with_cause(
                                        TransportErrorKind::Other,
                                        &url,
                                        "the server would not resume the download",
                                    )))
                                    .await;
                                return;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok((Box::pin(rx), start))
    }
}

fn accept(url: &Url, response: reqwest::Response) -> Result<reqwest::Response, TransportError> {
    match response.status() {
        StatusCode::OK | StatusCode::PARTIAL_CONTENT => Ok(response),
        StatusCode::NOT_FOUND => Err(TransportError::new(TransportErrorKind::FileNotFound, url)),
        status => Err(TransportError::new_with_cause(
            TransportErrorKind::Other,
            url,
            format!("the server answered {status}"),
        )),
    }
}

fn etag_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The first byte a 206 answer carries, from its `Content-Range: bytes FIRST-LAST/LENGTH`.
fn starts_at(response: &reqwest::Response) -> Option<u64> {
    let range = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    range
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

#[async_trait::async_trait]
impl Transport for FleetTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        self.stream_from(url, 0).await.map(|(stream, _)| stream)
    }
}

#[async_trait::async_trait]
impl ResumableFetch for FleetTransport {
    async fn fetch_from(
        &self,
        url: Url,
        offset: u64,
    ) -> Result<(TransportStream, u64), TransportError> {
        self.stream_from(url, offset).await
    }
}
