//! A target's bytes on their way from the network to the device's store: streamed to a file in
//! the staging directory while hashed, so an artifact is never whole in memory (a device with
//! 64 MB of RAM can take a 256 MB model), and handed on as a file only once its length and
//! sha256 are the signed ones.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::StreamExt;

use crate::client::{ClientLimits, PlainTarget};

/// A downloaded target whose length and sha256 are the ones signed, in a file of its own (synced
/// to disk). [`VerifiedArtifact::persist`] moves it where it belongs; dropped unused, the file is
/// deleted, so no path through an install leaves a stray copy behind.
#[derive(Debug)]
pub struct VerifiedArtifact {
    path: PathBuf,
    length: u64,
    sha256_hex: String,
    kept: bool,
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
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut chunk)? {
            0 => return Ok(hex::encode(digest.finish())),
            n => digest.update(&chunk[..n]),
        }
    }
}

/// A file in the staging directory that is deleted unless it is handed on.
struct Spool {
    path: PathBuf,
    file: std::fs::File,
}

impl Spool {
    fn create(staging_dir: &Path, sha256_hex: &str) -> Result<Self, String> {
        // Unique per download: two installs of one target may overlap (the local API and the
        // fleet), and neither may truncate the other's file.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = staging_dir.join(format!(
            "{sha256_hex}.{}-{}.part",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { path, file })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Streams `body` into a new file under `staging_dir`, hashing as it goes; refuses more than the
/// signed length, a stall longer than `limits.stall_timeout` and an average rate below
/// `limits.min_bytes_per_second` after `limits.grace`. Memory use is one network chunk.
pub async fn download(
    mut body: tough::TransportStream,
    target: &PlainTarget,
    staging_dir: &Path,
    limits: &ClientLimits,
) -> Result<VerifiedArtifact, String> {
    let mut spool = Spool::create(staging_dir, &target.sha256_hex)?;
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut received: u64 = 0;
    let started = Instant::now();
    loop {
        let next = tokio::time::timeout(limits.stall_timeout, body.next())
            .await
            .map_err(|_| format!("no data for {:?}", limits.stall_timeout))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| e.to_string())?;
        received += chunk.len() as u64;
        if received > target.length {
            return Err(format!(
                "more than the signed length of {} bytes",
                target.length
            ));
        }
        digest.update(&chunk);
        spool
            .file
            .write_all(&chunk)
            .map_err(|e| format!("{}: {e}", spool.path.display()))?;
        let elapsed = started.elapsed();
        if elapsed > limits.grace
            && (received as f64) < limits.min_bytes_per_second as f64 * elapsed.as_secs_f64()
        {
            return Err(format!(
                "{received} bytes in {:.1} s is below the minimum rate of {} B/s",
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
    if hex::encode(digest.finish()) != target.sha256_hex {
        return Err("sha256 does not match the signed hash".into());
    }
    spool
        .file
        .sync_all()
        .map_err(|e| format!("{}: {e}", spool.path.display()))?;
    let path = std::mem::take(&mut spool.path);
    Ok(VerifiedArtifact {
        path,
        length: received,
        sha256_hex: target.sha256_hex.clone(),
        kept: false,
    })
}
