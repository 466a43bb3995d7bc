//! The signed baselines fleet input drift is judged against. Devices send their live counts per
//! baseline bin; the server pools them and needs each version's reference shares, which the
//! release names by hash (or carries inline). Read from the registry's own artifact store, never
//! from a device, and kept by hash: a release file never changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use edgefleet_protocol::baseline::Baseline;
use futures::TryStreamExt;

use crate::artifacts::BlobStore;
use crate::tufhost::SignedModel;

/// Feature → reference shares in bin order.
pub type Expected = BTreeMap<String, Vec<f64>>;

/// (model, version) → the reference shares its drift is judged against.
#[derive(Debug, Clone, Default)]
pub struct Baselines(BTreeMap<(String, String), Arc<Expected>>);

impl Baselines {
    pub fn get(&self, model: &str, version: &str) -> Option<Arc<Expected>> {
        self.0.get(&(model.to_owned(), version.to_owned())).cloned()
    }

    pub fn insert(&mut self, model: &str, version: &str, expected: Expected) {
        self.0
            .insert((model.to_owned(), version.to_owned()), Arc::new(expected));
    }
}

/// A baseline release file larger than this is not read (a signed one is kilobytes).
const MAX_BASELINE_BYTES: u64 = 16 << 20;

/// Baselines read so far, by the sha256 of their release file.
#[derive(Debug, Default)]
pub struct BaselineCache {
    by_file: Mutex<HashMap<String, Arc<Expected>>>,
}

impl BaselineCache {
    /// The baselines of every signed release in `models` (those without one are left out; one
    /// that cannot be read is logged and left out, so drift shows no figure rather than a wrong
    /// one).
    pub async fn load(&self, blobs: &BlobStore, models: &[SignedModel]) -> Baselines {
        let mut out = Baselines::default();
        for m in models {
            let expected = if let Some(inline) = &m.meta.baseline {
                Some(Arc::new(inline.expected_shares()))
            } else if let Some(file) = &m.meta.files.baseline {
                self.read(blobs, &file.sha256, file.length).await
            } else {
                None
            };
            if let Some(expected) = expected {
                out.0.insert(
                    (m.meta.model.to_string(), m.meta.version.to_string()),
                    expected,
                );
            }
        }
        out
    }

    async fn read(&self, blobs: &BlobStore, sha256: &str, length: u64) -> Option<Arc<Expected>> {
        if let Some(known) = self.by_file.lock().ok()?.get(sha256) {
            return Some(known.clone());
        }
        match read_baseline(blobs, sha256, length).await {
            Ok(baseline) => {
                let expected = Arc::new(baseline.expected_shares());
                if let Ok(mut cache) = self.by_file.lock() {
                    cache.insert(sha256.to_owned(), expected.clone());
                }
                Some(expected)
            }
            Err(detail) => {
                tracing::warn!(sha256, %detail, "cannot read a release's baseline: its fleet input drift is not judged");
                None
            }
        }
    }
}

async fn read_baseline(blobs: &BlobStore, sha256: &str, length: u64) -> Result<Baseline, String> {
    if length > MAX_BASELINE_BYTES {
        return Err(format!(
            "{length} bytes, above the {MAX_BASELINE_BYTES} read"
        ));
    }
    let chunks: Vec<bytes::Bytes> = blobs
        .read(sha256, 0..length)
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let bytes = chunks.concat();
    let actual = hex::encode(digest::digest(&digest::SHA256, &bytes));
    if actual != sha256 {
        return Err(format!(
            "the stored file hashes to {actual}, not the signed {sha256}: restore it from the release"
        ));
    }
    let baseline: Baseline = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    baseline.validate().map_err(|e| e.to_string())?;
    Ok(baseline)
}
