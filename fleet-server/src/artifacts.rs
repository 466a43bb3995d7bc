//! Content-addressed artifact storage on any object store: a directory (the default,
//! `<data_dir>/artifacts`) or an S3-compatible bucket (`artifacts.url = "s3://bucket/prefix"`),
//! through the `object_store` crate so every replica sees the same objects.
//!
//! Objects live at `sha256/<hex>`. An upload streams to a staging object `tmp/<hex>.<unique>`
//! (a multipart upload on S3) while it is hashed and counted; only a body of exactly the
//! announced hash (and length, when announced) under the size cap is then renamed to its address
//! (a rename on disk, copy-then-delete on S3). Anything else is deleted, so a tampered or
//! truncated upload never becomes visible.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use aws_lc_rs::digest;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};

/// Staging objects older than this are leftovers of a crashed upload (a live one on another
/// replica is younger).
const STALE_UPLOAD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Size of each part of a multipart upload; S3 requires at least 5 MiB for all but the last.
const PART_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0:?} is not a sha256 digest (64 lowercase hex digits)")]
    BadDigest(String),
    #[error("the upload is larger than the limit of {limit} bytes (limits.max_artifact_bytes)")]
    TooLarge { limit: u64 },
    #[error(
        "the upload does not match its address: announced sha256 {expected}, received {actual} \
         ({length} bytes); nothing was stored, upload the file again"
    )]
    DigestMismatch {
        expected: String,
        actual: String,
        length: u64,
    },
    #[error("the upload was cut off after {received} of {expected} bytes; nothing was stored")]
    Truncated { received: u64, expected: u64 },
    #[error("the upload failed while receiving: {0}; nothing was stored")]
    Body(String),
    #[error("artifact store {store}: {source}")]
    Store {
        store: String,
        #[source]
        source: object_store::Error,
    },
    #[error(
        "artifacts.url {url:?}: {detail}; use an absolute directory or s3://bucket[/prefix] \
         (credentials, region and endpoint from the AWS_* environment variables)"
    )]
    BadUrl { url: String, detail: String },
}

pub fn check_digest(sha256: &str) -> Result<(), ArtifactError> {
    if sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ArtifactError::BadDigest(sha256.to_owned()))
    }
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// For messages: the directory or URL, never credentials.
    name: String,
}

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blob {
    pub sha256: String,
    pub length: u64,
}

impl BlobStore {
    /// Artifacts in a local directory (created if needed).
    pub async fn open_dir(dir: &FsPath) -> Result<Self, ArtifactError> {
        let name = dir.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| ArtifactError::BadUrl {
            url: name.clone(),
            detail: e.to_string(),
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|source| ArtifactError::Store {
                store: name.clone(),
                source,
            })?
            // An acknowledged upload must survive a power cut, as it does on S3.
            .with_fsync(true);
        Self::start(Arc::new(store), Path::default(), name).await
    }

    /// Artifacts where `artifacts.url` says: `s3://bucket[/prefix]`, `file:///dir` or `/dir`.
    pub async fn open_url(url: &str) -> Result<Self, ArtifactError> {
        if url.starts_with('/') {
            return Self::open_dir(FsPath::new(url)).await;
        }
        let bad = |detail: String| ArtifactError::BadUrl {
            url: url.to_owned(),
            detail,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not a local path".into()))?;
                Self::open_dir(&dir).await
            }
            "s3" => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                let prefix = Path::parse(parsed.path().trim_start_matches('/'))
                    .map_err(|e| bad(e.to_string()))?;
                Self::start(Arc::new(store), prefix, url.to_owned()).await
            }
            other => Err(bad(format!("unsupported scheme {other:?}"))),
        }
    }

    /// Removes staging objects left by uploads a crash cut off.
    async fn start(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        name: String,
    ) -> Result<Self, ArtifactError> {
        let blobs = Self {
            store,
            prefix,
            name,
        };
        let staging = blobs.key("tmp");
        let cutoff = std::time::SystemTime::now() - STALE_UPLOAD;
        let stale: Vec<Path> = blobs
            .store
            .list(Some(&staging))
            .try_filter_map(|meta| async move {
                Ok((std::time::SystemTime::from(meta.last_modified) < cutoff)
                    .then_some(meta.location))
            })
            .try_collect()
            .await
            .map_err(|e| blobs.err(e))?;
        for location in stale {
            let _ = blobs.store.delete(&location).await;
        }
        Ok(blobs)
    }

    fn key(&self, relative: &str) -> Path {
        self.prefix
            .parts()
            .chain(Path::from(relative).parts())
            .collect()
    }

    fn address(&self, sha256: &str) -> Result<Path, ArtifactError> {
        check_digest(sha256)?;
        Ok(self.key(&format!("sha256/{sha256}")))
    }

    fn err(&self, source: object_store::Error) -> ArtifactError {
        ArtifactError::Store {
            store: self.name.clone(),
            source,
        }
    }

    pub fn describe(&self) -> &str {
        &self.name
    }

    pub async fn get(&self, sha256: &str) -> Result<Option<Blob>, ArtifactError> {
        let address = self.address(sha256)?;
        match self.store.head(&address).await {
            Ok(meta) => Ok(Some(Blob {
                sha256: sha256.to_owned(),
                length: meta.size,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The bytes `range` of a stored artifact, streamed from the object store.
    pub async fn read(
        &self,
        sha256: &str,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, ArtifactError>>, ArtifactError> {
        let address = self.address(sha256)?;
        // Object stores refuse an empty range; an empty artifact (or range) is no bytes.
        if range.is_empty() {
            return Ok(futures::stream::empty().boxed());
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&address, options)
            .await
            .map_err(|e| self.err(e))?;
        let name = self.name.clone();
        Ok(result
            .into_stream()
            .map_err(move |source| ArtifactError::Store {
                store: name.clone(),
                source,
            })
            .boxed())
    }

    /// Streams `body` into the store under `sha256`. `length`, when the client announced one,
    /// must match too. Returns the stored blob (also when it was already there).
    pub async fn put<S, E>(
        &self,
        sha256: &str,
        length: Option<u64>,
        limit: u64,
        mut body: S,
    ) -> Result<Blob, ArtifactError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let address = self.address(sha256)?;
        if let Some(length) = length
            && length > limit
        {
            return Err(ArtifactError::TooLarge { limit });
        }
        let staging = self.key(&format!(
            "tmp/{sha256}.{}.{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        let upload = self
            .store
            .put_multipart(&staging)
            .await
            .map_err(|e| self.err(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let received = async {
            let mut hasher = digest::Context::new(&digest::SHA256);
            let mut received: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| ArtifactError::Body(e.to_string()))?;
                received += chunk.len() as u64;
                if received > limit || length.is_some_and(|l| received > l) {
                    return Err(ArtifactError::TooLarge {
                        limit: length.unwrap_or(limit).min(limit),
                    });
                }
                hasher.update(&chunk);
                writer.wait_for_capacity(2).await.map_err(|e| self.err(e))?;
                writer.put(chunk);
            }
            if let Some(expected) = length
                && received != expected
            {
                return Err(ArtifactError::Truncated { received, expected });
            }
            let actual = hex::encode(hasher.finish());
            if actual != sha256 {
                return Err(ArtifactError::DigestMismatch {
                    expected: sha256.to_owned(),
                    actual,
                    length: received,
                });
            }
            Ok(received)
        }
        .await;
        let received = match received {
            Ok(received) => received,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        writer.finish().await.map_err(|e| self.err(e))?;
        let result = self.store.rename(&staging, &address).await;
        if let Err(e) = result {
            let _ = self.store.delete(&staging).await;
            return Err(self.err(e));
        }
        Ok(Blob {
            sha256: sha256.to_owned(),
            length: received,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))))
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(digest::digest(&digest::SHA256, bytes))
    }

    fn files_under(dir: &FsPath) -> usize {
        walk(dir).len()
    }

    fn walk(dir: &FsPath) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    async fn read_all(blobs: &BlobStore, sha256: &str, range: Range<u64>) -> Vec<u8> {
        let chunks: Vec<Bytes> = blobs
            .read(sha256, range)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn a_matching_upload_is_stored_under_its_hash_and_read_back_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open_dir(dir.path()).await.unwrap();
        let digest = sha(b"hello world");
        let blob = blobs
            .put(&digest, Some(11), 100, stream(vec![b"hello ", b"world"]))
            .await
            .unwrap();
        assert_eq!(blob.length, 11);
        assert_eq!(
            std::fs::read(dir.path().join("sha256").join(&digest)).unwrap(),
            b"hello world"
        );
        assert_eq!(blobs.get(&digest).await.unwrap(), Some(blob));
        assert_eq!(read_all(&blobs, &digest, 0..11).await, b"hello world");
        assert_eq!(read_all(&blobs, &digest, 6..9).await, b"wor");
        let empty = sha(b"");
        blobs
            .put(&empty, Some(0), 100, stream(vec![]))
            .await
            .unwrap();
        assert_eq!(read_all(&blobs, &empty, 0..0).await, b"");
        assert_eq!(files_under(dir.path()), 2, "{:?}", walk(dir.path()));
    }

    #[tokio::test]
    async fn tampered_truncated_or_oversized_uploads_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open_dir(dir.path()).await.unwrap();
        let digest = sha(b"hello world");
        let err = blobs
            .put(&digest, None, 100, stream(vec![b"hello w0rld"]))
            .await
            .unwrap_err();
        assert!(matches!(err, ArtifactError::DigestMismatch { .. }), "{err}");
        let err = blobs
            .put(&digest, Some(11), 100, stream(vec![b"hello"]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ArtifactError::Truncated {
                    received: 5,
                    expected: 11
                }
            ),
            "{err}"
        );
        let err = blobs
            .put(&digest, None, 8, stream(vec![b"hello", b" world"]))
            .await
            .unwrap_err();
        assert!(matches!(err, ArtifactError::TooLarge { limit: 8 }), "{err}");
        let failing = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"hello")),
            Err("connection reset".to_string()),
        ]);
        let err = blobs.put(&digest, None, 100, failing).await.unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");
        assert_eq!(files_under(dir.path()), 0, "{:?}", walk(dir.path()));
        assert!(blobs.get(&digest).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn stale_staging_objects_are_removed_at_start_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let stale = dir.path().join("tmp/old");
        let fresh = dir.path().join("tmp/new");
        std::fs::write(&stale, b"x").unwrap();
        std::fs::write(&fresh, b"y").unwrap();
        let old = std::time::SystemTime::now() - STALE_UPLOAD - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        BlobStore::open_dir(dir.path()).await.unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists(), "another replica's upload in progress");
    }

    #[tokio::test]
    async fn only_absolute_directories_and_s3_urls_are_artifact_stores() {
        for bad in ["relative/dir", "gs://bucket", "s3://", "http://x"] {
            let err = BlobStore::open_url(bad).await.unwrap_err();
            assert!(err.to_string().contains("artifacts.url"), "{bad}: {err}");
        }
    }

    #[test]
    fn only_lowercase_sha256_digests_address_blobs() {
        assert!(check_digest(&"a".repeat(64)).is_ok());
        for bad in [
            "",
            "../etc/passwd",
            &"A".repeat(64),
            &"a".repeat(63),
            &"g".repeat(64),
        ] {
            assert!(check_digest(bad).is_err(), "{bad}");
        }
    }
}
