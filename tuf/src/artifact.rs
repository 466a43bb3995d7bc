//! A target's bytes on their way from the network to the device's store: streamed to a file in
//! the staging directory while hashed, so an artifact is never whole in memory (a device with
//! 64 MB of RAM can take a 256 MB model), and handed on as a file only once its length and
//! sha256 are the signed ones.
//!
//! That file, `<staging>/<sha256>.part`, is the only copy on disk while a download runs, and it
//! is also what a download resumes from: a transfer cut off, a failed attempt or an agent killed
//! midway leaves it, and the next attempt hashes what it holds and asks the server only for the
//! rest ([`ResumableFetch`]). Named by the signed hash, so a resumed file either verifies or is
//! thrown away whole. An exclusive lock on it keeps two installs of one target from writing one
//! file; opening one removes every part file no download holds (only downloads in progress are
//! kept: a device's disk is small).

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;
use tough::{TransportError, TransportStream};
use url::Url;

use crate::limits::ClientLimits;
use crate::metadata::{Digests, PlainTarget, matches};

/// The digests a download of `target` computes: every algorithm it lists, and sha256 always
/// (the store keys artifacts by it).
fn digests_for(target: &PlainTarget) -> Result<Digests, String> {
    Digests::new(std::iter::once("sha256").chain(target.hashes.keys().map(String::as_str)))
}

/// A transport that can continue a download: the bytes of `url` from `offset` on.
#[async_trait::async_trait]
pub trait ResumableFetch: Send + Sync + std::fmt::Debug {
    /// Returns the stream and where it really starts: `offset` when the server resumed, 0 when
    /// it sends the whole (it ignores ranges, or the offset is past the end).
    async fn fetch_from(
        &self,
        url: Url,
        offset: u64,
    ) -> Result<(TransportStream, u64), TransportError>;
}

/// A downloaded target whose length and sha256 are the ones signed, in a file of its own (synced
/// to disk). [`VerifiedArtifact::persist`] moves it where it belongs; dropped unused, the file is
/// deleted, so no path through an install leaves a stray copy behind.
#[derive(Debug)]
pub struct VerifiedArtifact {
    path: PathBuf,
    length: u64,
    sha256_hex: String,
    kept: bool,
    /// The part file, still locked: no other download of this target may reopen and truncate it
    /// before it is moved.
    _lock: std::fs::File,
}

impl VerifiedArtifact {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn length(&self) -> u64 {
        self.length
    }

    pub fn sha256_hex(&self) -> &str {
        &self.sha256_hex
    }

    /// Reads the whole file (for a caller that needs the bytes, such as a model loader).
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(&self.path)
    }

    /// Moves the file to `to` (a rename: keep the staging directory on the same file system).
    /// The caller syncs `to`'s directory when the move must survive a power cut.
    pub fn persist(mut self, to: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for VerifiedArtifact {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The hex sha256 of a file, read a chunk at a time (page cache, not this process's memory).
pub fn file_sha256_hex(path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut digest = Digests::new(["sha256"]).map_err(std::io::Error::other)?;
    hash_prefix(&file, u64::MAX, &mut digest)?;
    Ok(digest.finish().remove("sha256").unwrap_or_default())
}

/// Feeds up to `length` bytes of `file`, from its start, into `digest`, a chunk at a time.
fn hash_prefix(mut file: &std::fs::File, length: u64, digest: &mut Digests) -> std::io::Result<()> {
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut file = file.take(length);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut chunk)? {
            0 => return Ok(()),
            n => digest.update(&chunk[..n]),
        }
    }
}

/// What a download of one target holds so far: `<staging>/<sha256>.part`, locked while open.
/// Dropped, it stays for the next attempt unless its bytes proved wrong.
#[derive(Debug)]
pub struct Part {
    path: PathBuf,
    file: std::fs::File,
    /// Delete the file when dropped: its bytes proved wrong, or could not be written.
    discard: bool,
}

impl Part {
    /// Opens (or creates) the part file of `target` and locks it; fails if another download of
    /// the same target holds it. Removes the part files no download holds, and empties this one
    /// if it is longer than the signed length.
    pub fn open(staging_dir: &Path, target: &PlainTarget) -> Result<Self, String> {
        std::fs::create_dir_all(staging_dir)
            .map_err(|e| format!("{}: {e}", staging_dir.display()))?;
        let path = staging_dir.join(format!("{}.part", target.key_hex()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => format!(
                "{} is being downloaded by another install already; try again when it is done",
                target.name
            ),
            std::fs::TryLockError::Error(e) => format!("{}: {e}", path.display()),
        })?;
        evict_idle_parts(staging_dir, &path);
        let part = Self {
            path,
            file,
            discard: false,
        };
        if part.len() > target.length {
            part.file
                .set_len(0)
                .map_err(|e| format!("{}: {e}", part.path.display()))?;
        }
        Ok(part)
    }

    /// Bytes held from earlier attempts.
    pub fn len(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// If an earlier attempt left the whole artifact (verified, then the agent stopped before
    /// moving it in), verifies it again from disk; otherwise hands the part back, emptied if its
    /// bytes were wrong.
    pub fn into_verified_if_complete(self, target: &PlainTarget) -> Result<VerifiedArtifact, Self> {
        if self.len() != target.length {
            return Err(self);
        }
        let Ok(mut digest) = digests_for(target) else {
            return Err(self);
        };
        if hash_prefix(&self.file, target.length, &mut digest).is_err() {
            return Err(self);
        }
        let computed = digest.finish();
        if matches(&computed, &target.hashes).is_err() {
            let _ = self.file.set_len(0);
            return Err(self);
        }
        self.into_verified(target, &computed)
    }

    fn into_verified(
        self,
        target: &PlainTarget,
        computed: &BTreeMap<String, String>,
    ) -> Result<VerifiedArtifact, Self> {
        // A duplicate descriptor shares the lock, which holds until the artifact is dropped.
        let Ok(lock) = self.file.try_clone() else {
            return Err(self);
        };
        Ok(VerifiedArtifact {
            path: self.path.clone(),
            length: target.length,
            sha256_hex: computed.get("sha256").cloned().unwrap_or_default(),
            kept: false,
            _lock: lock,
        })
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if self.discard {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes the part files in `dir` other than `keep` that no download holds locked.
fn evict_idle_parts(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == keep || path.extension().is_none_or(|e| e != "part") {
            continue;
        }
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path)
            && file.try_lock().is_ok()
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Streams `body` into a fresh part file of `target` under `staging_dir`, hashing as it goes
/// (see [`resume`]).
pub async fn download(
    body: TransportStream,
    target: &PlainTarget,
    staging_dir: &Path,
    limits: &ClientLimits,
) -> Result<VerifiedArtifact, String> {
    resume(Part::open(staging_dir, target)?, 0, body, target, limits).await
}

/// Continues `part` with `body`, whose first byte is the artifact's byte `start` (0: start
/// over; otherwise at most what the part holds), hashing what the part already held first.
/// Refuses more than the signed length, a stall longer than `limits.stall_timeout` and an average
/// rate below `limits.min_bytes_per_second` after `limits.grace` (counted over this attempt).
/// Memory use is one network chunk. On a cut or a slow link the part stays for the next attempt;
/// bytes that prove wrong (too many, or the wrong hash) are deleted.
pub async fn resume(
    mut part: Part,
    start: u64,
    mut body: TransportStream,
    target: &PlainTarget,
    limits: &ClientLimits,
) -> Result<VerifiedArtifact, String> {
    let at = |e: std::io::Error| format!("{}: {e}", part.path.display());
    let start = start.min(part.len());
    part.file.set_len(start).map_err(at)?;
    let mut digest = digests_for(target)?;
    hash_prefix(&part.file, start, &mut digest).map_err(at)?;
    part.file
        .seek(std::io::SeekFrom::Start(start))
        .map_err(at)?;
    let mut received: u64 = start;
    let mut this_attempt: u64 = 0;
    let started = Instant::now();
    loop {
        let next = tokio::time::timeout(limits.stall_timeout, body.next())
            .await
            .map_err(|_| format!("no data for {:?}", limits.stall_timeout))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| e.to_string())?;
        received += chunk.len() as u64;
        this_attempt += chunk.len() as u64;
        if received > target.length {
            part.discard = true;
            return Err(format!(
                "more than the signed length of {} bytes",
                target.length
            ));
        }
        digest.update(&chunk);
        if let Err(e) = part.file.write_all(&chunk) {
            // A full disk must not stay full of a download nobody can finish.
            part.discard = true;
            return Err(format!("{}: {e}", part.path.display()));
        }
        let elapsed = started.elapsed();
        if elapsed > limits.grace
            && (this_attempt as f64) < limits.min_bytes_per_second as f64 * elapsed.as_secs_f64()
        {
            return Err(format!(
                "{this_attempt} bytes in {:.1} s is below the minimum rate of {} B/s",
                elapsed.as_secs_f64(),
                limits.min_bytes_per_second
            ));
        }
    }
    if received != target.length {
        return Err(format!(
            "got {received} bytes, signed length is {}",
            target.length
        ));
    }
    let computed = digest.finish();
    if let Err(mismatch) = matches(&computed, &target.hashes) {
        part.discard = true;
        return Err(mismatch);
    }
    part.file
        .sync_all()
        .map_err(|e| format!("{}: {e}", part.path.display()))?;
    part.into_verified(target, &computed)
        .map_err(|part| format!("{}: cannot keep it locked", part.path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(bytes: &[u8]) -> PlainTarget {
        PlainTarget::of_bytes("models/m/1.0.0/model.onnx", bytes)
    }

    fn body(chunks: Vec<&'static [u8]>) -> TransportStream {
        Box::pin(futures::stream::iter(
            chunks.into_iter().map(|c| Ok(bytes::Bytes::from_static(c))),
        ))
    }

    fn cut(chunks: Vec<&'static [u8]>) -> TransportStream {
        let url = Url::parse("http://s/t").unwrap();
        let mut items: Vec<Result<bytes::Bytes, TransportError>> = chunks
            .into_iter()
            .map(|c| Ok(bytes::Bytes::from_static(c)))
            .collect();
        items.push(Err(TransportError::new(
            tough::TransportErrorKind::Other,
            url,
        )));
        Box::pin(futures::stream::iter(items))
    }

    const WHOLE: &[u8] = b"0123456789abcdef";
    /// Eight bytes that are not the artifact's first eight.
    const NOT_ITS_PREFIX: &[u8] = b"zzzzzzzz";

    #[tokio::test]
    async fn a_cut_download_resumes_from_its_part_file_and_verifies_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(WHOLE);
        let limits = ClientLimits::default();
        let err = download(cut(vec![b"01234", b"567"]), &t, dir.path(), &limits)
            .await
            .unwrap_err();
        assert!(!err.is_empty());
        // The bytes that came are kept, in the one file the download uses.
        let part = Part::open(dir.path(), &t).unwrap();
        assert_eq!(part.len(), 8);
        let artifact = resume(part, 8, body(vec![b"89abcdef"]), &t, &limits)
            .await
            .unwrap();
        assert_eq!(std::fs::read(artifact.path()).unwrap(), WHOLE);
        // While it is unmoved, no other download of the target may touch it.
        let busy = Part::open(dir.path(), &t).unwrap_err();
        assert!(busy.contains("another install"), "{busy}");
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1, "one file on disk for one download");
    }

    #[tokio::test]
    async fn resumed_bytes_that_do_not_verify_are_thrown_away_whole() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(WHOLE);
        let limits = ClientLimits::default();
        std::fs::write(
            dir.path().join(format!("{}.part", t.key_hex())),
            NOT_ITS_PREFIX,
        )
        .unwrap();
        let part = Part::open(dir.path(), &t).unwrap();
        let err = resume(part, 8, body(vec![b"89abcdef"]), &t, &limits)
            .await
            .unwrap_err();
        assert!(err.contains("sha256"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A server that sends the whole again (start 0) replaces what the part held.
        std::fs::write(
            dir.path().join(format!("{}.part", t.key_hex())),
            NOT_ITS_PREFIX,
        )
        .unwrap();
        let part = Part::open(dir.path(), &t).unwrap();
        let artifact = resume(part, 0, body(vec![WHOLE]), &t, &limits)
            .await
            .unwrap();
        assert_eq!(std::fs::read(artifact.path()).unwrap(), WHOLE);
    }

    #[tokio::test]
    async fn a_complete_part_left_by_a_crash_verifies_without_the_network_and_others_are_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(WHOLE);
        let other = dir.path().join(format!("{}.part", "ab".repeat(32)));
        std::fs::write(&other, b"idle").unwrap();
        std::fs::write(dir.path().join(format!("{}.part", t.key_hex())), WHOLE).unwrap();
        let part = Part::open(dir.path(), &t).unwrap();
        assert!(!other.exists(), "a part no download holds is removed");
        let artifact = part.into_verified_if_complete(&t).unwrap();
        assert_eq!(artifact.length(), t.length);
        // Wrong bytes of the right length are emptied instead.
        drop(artifact);
        let mut wrong = WHOLE.to_vec();
        wrong[0] = b'X';
        std::fs::write(dir.path().join(format!("{}.part", t.key_hex())), &wrong).unwrap();
        let part = Part::open(dir.path(), &t).unwrap();
        let part = part.into_verified_if_complete(&t).unwrap_err();
        assert!(part.is_empty());
    }
}
