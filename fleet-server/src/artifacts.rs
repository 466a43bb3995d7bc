//! Content-addressed artifact storage: `blobs/sha256/<hex>`. An upload streams to a temporary file
//! while it is hashed and counted; only a body of exactly the announced hash (and length, when
//! announced) under the size cap is renamed into place. Anything else is deleted, so a tampered or
//! truncated upload stores nothing.

use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

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
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
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
    dir: PathBuf,
}

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blob {
    pub sha256: String,
    pub length: u64,
}

impl BlobStore {
    pub fn open(dir: &Path) -> Result<Self, ArtifactError> {
        for sub in ["sha256", "tmp"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io(&path))?;
        }
        // Leftovers of uploads cut off by a crash.
        let tmp = dir.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self, sha256: &str) -> Result<PathBuf, ArtifactError> {
        check_digest(sha256)?;
        Ok(self.dir.join("sha256").join(sha256))
    }

    pub async fn get(&self, sha256: &str) -> Result<Option<Blob>, ArtifactError> {
        let path = self.path(sha256)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(Some(Blob {
                sha256: sha256.to_owned(),
                length: meta.len(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
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
        let dest = self.path(sha256)?;
        if let Some(length) = length
            && length > limit
        {
            return Err(ArtifactError::TooLarge { limit });
        }
        let tmp = self.dir.join("tmp").join(format!(
            "{sha256}.{}.{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
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
                file.write_all(&chunk).await.map_err(io(&tmp))?;
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
            file.sync_all().await.map_err(io(&tmp))?;
            drop(file);
            tokio::fs::rename(&tmp, &dest).await.map_err(io(&dest))?;
            Ok(Blob {
                sha256: sha256.to_owned(),
                length: received,
            })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
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

    fn stored(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("sha256")).unwrap().count()
            + std::fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    #[tokio::test]
    async fn a_matching_upload_is_stored_under_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let digest = sha(b"hello world");
        let blob = blobs
            .put(&digest, Some(11), 100, stream(vec![b"hello ", b"world"]))
            .await
            .unwrap();
        assert_eq!(blob.length, 11);
        assert_eq!(
            std::fs::read(blobs.path(&digest).unwrap()).unwrap(),
            b"hello world"
        );
        assert_eq!(blobs.get(&digest).await.unwrap(), Some(blob));
    }

    #[tokio::test]
    async fn tampered_truncated_or_oversized_uploads_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
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
        assert_eq!(stored(dir.path()), 0);
        assert!(blobs.get(&digest).await.unwrap().is_none());
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
