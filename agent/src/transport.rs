//! The HTTP transport the TUF client fetches from the fleet server with: the device's bearer
//! credential on every request, and downloads that resume where a cut connection left them
//! (`Range: bytes=N-` guarded by `If-Range` on the artifact's ETag) instead of starting over.
//! The TUF client above still checks length, sha256 and the minimum transfer rate over the
//! whole, resumed transfer.

use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_RANGE, RANGE};
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

    async fn open(
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
        let response = request
            .send()
            .await
            .map_err(|e| TransportError::new_with_cause(TransportErrorKind::Other, url, e))?;
        match response.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => Ok(response),
            StatusCode::NOT_FOUND => {
                Err(TransportError::new(TransportErrorKind::FileNotFound, url))
            }
            status => Err(TransportError::new_with_cause(
                TransportErrorKind::Other,
                url,
                format!("the server answered {status}"),
            )),
        }
    }
}

#[async_trait::async_trait]
impl Transport for FleetTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url,
            ));
        }
        let first = self.open(&url, 0, None).await?;
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, TransportError>>(4);
        let transport = self.clone();
        tokio::spawn(async move {
            let etag = first
                .headers()
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut response = first;
            let mut offset: u64 = 0;
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
                            Ok(next) if next.status() == StatusCode::PARTIAL_CONTENT => {
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
        Ok(Box::pin(rx))
    }
}
