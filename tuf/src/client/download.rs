//! Artifact downloads of a verified repository: the spec's download path, streamed to disk while
//! hashed, capped at the signed length, resumable.

use std::collections::BTreeMap;
use std::path::Path;

use edgefleet_protocol::release_files::release_file_name;
use url::Url;

use super::{ModelTarget, PlainTarget, TrustedRepo, VerifiedArtifact, error_chain};
use crate::Error;
use crate::metadata::percent_encode;

impl TrustedRepo {
    /// Downloads a target into `staging_dir`, streamed to disk while hashed (never whole in
    /// memory), capped at its signed length (and the device's own cap), abandoning slow or
    /// stalled transfers, and checks length and hashes. Returns the verified file, which the
    /// caller moves into place; dropped unused, it is deleted. On any failure nothing is left.
    pub async fn fetch(
        &self,
        target: &ModelTarget,
        staging_dir: &Path,
    ) -> Result<VerifiedArtifact, Error> {
        self.fetch_plain(
            &PlainTarget {
                name: target.name.clone(),
                length: target.length,
                hashes: BTreeMap::from([("sha256".to_string(), target.sha256_hex.clone())]),
            },
            staging_dir,
        )
        .await
    }

    /// Fetches the files `target`'s metadata names but does not hold yet (golden cases,
    /// baseline), each like an artifact (capped at its signed length and this device's limit,
    /// hashed while it arrives), and puts them into `target.meta`. On failure `target` is
    /// unchanged and nothing is left in `staging_dir`.
    pub async fn fetch_release_files(
        &self,
        target: &mut ModelTarget,
        staging_dir: &Path,
    ) -> Result<(), Error> {
        // Apart from the artifact's: starting a part file evicts the idle ones beside it, and
        // an artifact download cut off earlier must stay resumable. Removed again once empty,
        // so nothing is left behind, whatever the outcome.
        let staging_dir = staging_dir.join("release-files");
        let fetched = self.fetch_pending_files(target, &staging_dir).await;
        let _ = std::fs::remove_dir(&staging_dir);
        target.meta = fetched?;
        Ok(())
    }

    async fn fetch_pending_files(
        &self,
        target: &ModelTarget,
        staging_dir: &Path,
    ) -> Result<edgefleet_protocol::target::ModelTargetMeta, Error> {
        let mut meta = target.meta.clone();
        for kind in meta.pending() {
            let Some(file) = meta.files.get(kind) else {
                continue;
            };
            let plain = PlainTarget {
                name: release_file_name(&target.name, kind),
                length: file.length,
                hashes: BTreeMap::from([("sha256".to_string(), file.sha256.clone())]),
            };
            let fetched = self
                .fetch_within(
                    &plain,
                    staging_dir,
                    self.config.limits.max_release_file_bytes,
                )
                .await?;
            let bytes = fetched.read().map_err(Error::io(fetched.path()))?;
            crate::release_files::attach(&mut meta, kind, &bytes)?;
        }
        Ok(meta)
    }

    /// [`TrustedRepo::fetch`] for any target.
    pub async fn fetch_plain(
        &self,
        target: &PlainTarget,
        staging_dir: &Path,
    ) -> Result<VerifiedArtifact, Error> {
        self.fetch_within(target, staging_dir, self.config.limits.max_artifact_bytes)
            .await
    }

    /// A target whose signed length is at most `limit` (the device's own cap for its kind).
    async fn fetch_within(
        &self,
        target: &PlainTarget,
        staging_dir: &Path,
        limit: u64,
    ) -> Result<VerifiedArtifact, Error> {
        let fail = |detail: String| Error::Download {
            name: target.name.clone(),
            detail,
        };
        if target.length > limit {
            return Err(fail(format!(
                "signed length {} exceeds this device's limit of {limit} bytes",
                target.length
            )));
        }
        std::fs::create_dir_all(staging_dir).map_err(Error::io(staging_dir))?;
        let url = self.target_url(target).map_err(fail)?;
        let part = crate::artifact::Part::open(staging_dir, target).map_err(fail)?;
        let part = match part.into_verified_if_complete(target) {
            Ok(verified) => return Ok(verified),
            Err(part) => part,
        };
        let fetched = match &self.resumable {
            Some(resumable) if !part.is_empty() => {
                resumable.fetch_from(url.clone(), part.len()).await
            }
            _ => self.transport.fetch(url.clone()).await.map(|s| (s, 0)),
        };
        let (stream, start) = fetched.map_err(|e| fail(format!("{url}: {}", error_chain(&e))))?;
        crate::artifact::resume(part, start, stream, target, &self.config.limits)
            .await
            .map_err(fail)
    }

    /// The spec's download path: `dir/HASH.file` under consistent snapshots, `dir/file`
    /// otherwise, each segment percent-encoded so `?` or `#` in a name stay part of the path.
    fn target_url(&self, target: &PlainTarget) -> Result<Url, String> {
        let path = if self.set.root().signed.consistent_snapshot {
            match target.name.rsplit_once('/') {
                Some((dir, file)) => format!("{dir}/{}.{file}", target.key_hex()),
                None => format!("{}.{}", target.key_hex(), target.name),
            }
        } else {
            target.name.clone()
        };
        self.config
            .targets_url
            .join(&percent_encode(&path, b"/-._~!$&'()*+,;=:@"))
            .map_err(|e| format!("target URL for {path:?}: {e}"))
    }
}
