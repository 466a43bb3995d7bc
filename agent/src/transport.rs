//! The HTTP transport the TUF client fetches from the fleet server with: the device's bearer
//! credential on every request, and downloads that resume where a cut connection left them
//! (`Range: bytes=N-` guarded by `If-Range` on the artifact's ETag) instead of starting over.
//!
//! Target downloads are also spooled to disk as they arrive, so a download cut by a crash, a
//! reboot or a kill resumes from the spooled bytes when the agent comes back: a device on a slow
//! link never pays twice for the same bytes. The spool is only a cache of what the server sent:
//! the TUF client above still checks length, sha256 and the minimum transfer rate over the whole,
//! resumed transfer, and a spool that turns out wrong is dropped (see [`Spool`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_RANGE, RANGE};
use tokio::io::AsyncWriteExt;
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

#[derive(Debug, Clone)]
pub struct FleetTransport {
    client: reqwest::Client,
    credential: String,
    /// How many times a cut transfer is resumed before the fetch fails.
    resumes: u32,
    /// Downloads under `targets` are spooled in `dir` (metadata never is: it is small and
    /// changes under the same name).
    spool: Option<SpoolConfig>,
}

#[derive(Debug, Clone)]
struct SpoolConfig {
    dir: PathBuf,
    targets: Url,
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
            spool: None,
        })
    }

    /// Keeps partial downloads of URLs under `targets` in `dir` across restarts.
    pub fn with_spool(mut self, dir: PathBuf, targets: Url) -> Self {
        self.spool = Some(SpoolConfig { dir, targets });
        self
    }

    fn spool_for(&self, url: &Url) -> Option<Spool> {
        let config = self.spool.as_ref()?;
        if !url.as_str().starts_with(config.targets.as_str()) {
            return None;
        }
        match Spool::open(&config.dir, url) {
            Ok(spool) => Some(spool),
            Err(e) => {
                tracing::warn!(dir = %config.dir.display(), error = %e, "cannot spool the download; it will not survive a restart");
                None
            }
        }
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

    /// The first response of a fetch and how many spooled bytes it continues (0 unless the
    /// server agreed to resume).
    async fn first_response(
        &self,
        url: &Url,
        spool: Option<&Spool>,
    ) -> Result<(reqwest::Response, u64), TransportError> {
        if let Some(spool) = spool
            && let Some((saved, etag)) = spool.saved()
        {
            let response = self.send(url, saved, Some(&etag)).await?;
            match response.status() {
                StatusCode::PARTIAL_CONTENT => {
                    tracing::info!(%url, offset = saved, "resuming a download from the spool");
                    return Ok((response, saved));
                }
                // The artifact changed or the spool is longer than it: start over.
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    spool.discard();
                    return Ok((self.open(url, 0, None).await?, 0));
                }
                _ => return Ok((accept(url, response)?, 0)),
            }
        }
        Ok((self.open(url, 0, None).await?, 0))
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

/// tokio's `File` finishes writes in the background; waiting for each keeps the spool in step
/// with what was passed on.
async fn write_through(file: &mut tokio::fs::File, chunk: &[u8]) -> std::io::Result<()> {
    file.write_all(chunk).await?;
    file.flush().await
}

fn etag_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The bytes of one target download received so far (`KEY.part`) and the ETag they belong to
/// (`KEY.etag`), `KEY` naming the URL. Only the download in progress is kept: opening a spool
/// removes every other one. Chunks are written before they are passed on, without fsync: a kill
/// loses nothing, and a power cut that leaves garbage at the end of the part file costs one
/// failed sha256 check, after which the spool is gone and the next attempt starts afresh.
#[derive(Debug)]
struct Spool {
    part: PathBuf,
    etag: PathBuf,
}

impl Spool {
    fn open(dir: &Path, url: &Url) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_str().as_bytes());
        let key = hex::encode(&digest.as_ref()[..16]);
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().starts_with(&key) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            part: dir.join(format!("{key}.part")),
            etag: dir.join(format!("{key}.etag")),
        })
    }

    /// What an earlier attempt left: how many bytes, and the ETag to resume them with.
    fn saved(&self) -> Option<(u64, String)> {
        let etag = std::fs::read_to_string(&self.etag).ok()?;
        let length = std::fs::metadata(&self.part).ok()?.len();
        (length > 0 && !etag.is_empty()).then_some((length, etag))
    }

    /// Sends the first `length` spooled bytes on, a chunk at a time (never the whole spool in
    /// memory: it may be most of a large model).
    async fn replay(
        &self,
        length: u64,
        tx: &mut futures::channel::mpsc::Sender<Result<Bytes, TransportError>>,
        url: &Url,
    ) -> bool {
        use tokio::io::AsyncReadExt;
        let failed = |e: std::io::Error| {
            TransportError::new_with_cause(TransportErrorKind::Other, url, e.to_string())
        };
        let mut file = match tokio::fs::File::open(&self.part).await {
            Ok(file) => file.take(length),
            Err(e) => {
                let _ = tx.send(Err(failed(e))).await;
                return false;
            }
        };
        loop {
            let mut chunk = vec![0u8; 64 * 1024];
            match file.read(&mut chunk).await {
                Ok(0) => return true,
                Ok(n) => {
                    chunk.truncate(n);
                    if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                        return false;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(failed(e))).await;
                    return false;
                }
            }
        }
    }

    /// The file to append the coming bytes to: emptied first unless they continue the spool.
    async fn writer(&self, etag: &str, resumed: bool) -> std::io::Result<tokio::fs::File> {
        if !resumed {
            tokio::fs::write(&self.etag, etag).await?;
            return tokio::fs::File::create(&self.part).await;
        }
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(&self.part)
            .await
    }

    fn discard(&self) {
        let _ = std::fs::remove_file(&self.part);
        let _ = std::fs::remove_file(&self.etag);
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
        let spool = self.spool_for(&url);
        let (first, replay) = self.first_response(&url, spool.as_ref()).await?;
        let etag = etag_of(&first);
        let mut writer = match (&spool, &etag) {
            (Some(spool), Some(etag)) => match spool.writer(etag, replay > 0).await {
                Ok(file) => Some(file),
                Err(e) => {
                    tracing::warn!(%url, error = %e, "cannot spool the download; it will not survive a restart");
                    None
                }
            },
            // Without an ETag a later resume could not be checked against the same bytes.
            (Some(spool), None) => {
                spool.discard();
                None
            }
            _ => None,
        };
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, TransportError>>(4);
        let transport = self.clone();
        tokio::spawn(async move {
            let mut offset = replay;
            if replay > 0
                && let Some(spool) = &spool
                && !spool.replay(replay, &mut tx, &url).await
            {
                return;
            }
            let mut response = first;
            let mut resumes = 0;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        offset += chunk.len() as u64;
                        if let Some(file) = writer.as_mut()
                            && let Err(e) = write_through(file, &chunk).await
                        {
                            tracing::warn!(%url, error = %e, "spooling the download failed; it will not survive a restart");
                            writer = None;
                        }
                        if tx.send(Ok(chunk)).await.is_err() {
                            return; // the reader gave up; the spool keeps what came
                        }
                    }
                    Ok(None) => {
                        // Complete: the TUF client verifies it, and the spool has served.
                        if let Some(spool) = &spool {
                            spool.discard();
                        }
                        return;
                    }
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
                                if let Some(spool) = &spool {
                                    spool.discard();
                                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spool_keeps_one_download_and_only_with_its_etag() {
        let dir = tempfile::tempdir().unwrap();
        let a = Url::parse("http://s/tuf/targets/models/a/1.onnx").unwrap();
        let b = Url::parse("http://s/tuf/targets/models/b/1.onnx").unwrap();
        let spool = Spool::open(dir.path(), &a).unwrap();
        assert_eq!(spool.saved(), None);
        let mut file = spool.writer("\"e1\"", false).await.unwrap();
        write_through(&mut file, b"abc").await.unwrap();
        drop(file);
        assert_eq!(spool.saved(), Some((3, "\"e1\"".into())));
        let mut file = spool.writer("\"e1\"", true).await.unwrap();
        write_through(&mut file, b"def").await.unwrap();
        drop(file);
        assert_eq!(Spool::open(dir.path(), &a).unwrap().saved().unwrap().0, 6);
        let (mut tx, mut rx) = futures::channel::mpsc::channel(16);
        assert!(
            spool.replay(5, &mut tx, &a).await,
            "the first 5 bytes, in chunks"
        );
        drop(tx);
        let mut replayed = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut rx).await {
            replayed.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(replayed, b"abcde");
        // A fresh (non-resumed) response replaces what was there.
        let mut file = spool.writer("\"e2\"", false).await.unwrap();
        write_through(&mut file, b"x").await.unwrap();
        drop(file);
        assert_eq!(spool.saved(), Some((1, "\"e2\"".into())));
        // Another download evicts this one.
        let other = Spool::open(dir.path(), &b).unwrap();
        assert_eq!(other.saved(), None);
        assert_eq!(Spool::open(dir.path(), &a).unwrap().saved(), None);
        // Bytes without their ETag cannot be resumed safely.
        std::fs::write(&other.part, b"zz").unwrap();
        assert_eq!(other.saved(), None);
    }
}
